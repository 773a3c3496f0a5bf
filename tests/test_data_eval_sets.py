"""eval_sets: the eval NPZ's round trip, the reference's eval layout, and its reader errors."""

import numpy as np
import pytest

from data_helpers import DIM, assert_message, save_npz, windows_of
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.eval_sets import EvalSet, read_eval_set, write_eval_set
from lvm_jax.data.payload import read_payload


def test_eval_set_round_trip(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0, 5])
  path = write_eval_set(str(tmp_path / "eval.npz"), EvalSet(
      payload.vectors[rows[:, :-1]], payload.vectors[rows[:, -1]], keys, {"split": "eval"}))
  read = read_eval_set(path, payload=payload)
  np.testing.assert_array_equal(read.truth_keys, keys)
  assert read.provenance["split"] == "eval"
  assert (read.num_sequences, read.context_length, read.vector_dim) == (2, 5, DIM)
  np.testing.assert_array_equal(read.target_rows(payload), rows[:, -1])


def test_eval_set_missing_key(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0])
  path = save_npz(tmp_path / "e.npz", contexts=payload.vectors[rows[:, :-1]], truth_keys=keys)
  with pytest.raises(DataFormatError) as error:
    read_eval_set(path)
  assert_message(error, path, "'targets'", "is missing", "Fix:")


def test_reads_reference_shaped_eval_npz_with_only_the_required_fields(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0, 5])
  eval_path = save_npz(tmp_path / "ref_eval.npz", contexts=payload.vectors[rows[:, :-1]],
                       targets=payload.vectors[rows[:, -1]], truth_keys=keys,
                       provenance=np.array(['{"embedder_id": "gtr-t5"}']))
  assert read_eval_set(eval_path).provenance["embedder_id"] == "gtr-t5"
