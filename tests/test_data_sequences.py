"""sequences: full and compact sequence sets, the reference's layouts, and every reader error."""

import json

import numpy as np
import pytest

from data_helpers import (DIM, assert_message, full_set_arrays, make_payload, save_npz, unit_rows,
                          windows_of)
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.payload import read_payload, write_payload
from lvm_jax.data.sequences import (SequenceSet, read_sequence_set, window_target_ids,
                                    write_sequence_set)

# ----------------------------------------------------------------------------- round trips


def test_full_sequence_set_round_trip_and_batch(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0, 1, 12])
  original = SequenceSet(truth_keys=keys, context_sequences=payload.vectors[rows[:, :-1]],
                         target_vectors=payload.vectors[rows[:, -1]], provenance={"a": 1})
  path = write_sequence_set(str(tmp_path / "train.npz"), original)
  with np.load(path) as npz:
    assert sorted(npz.files) == ["context_length", "context_sequences", "num_sequences",
                                 "provenance", "target_vectors", "truth_keys", "vector_dim"]
    assert npz["provenance"].shape == (1,) and json.loads(npz["provenance"][0])["a"] == 1
  read = read_sequence_set(path, expected_dim=DIM, expected_context_length=5)
  assert (read.num_sequences, read.context_length, read.vector_dim) == (3, 5, DIM)
  assert not read.is_compact
  contexts, targets, ids = read.batch(np.array([2, 0]))
  np.testing.assert_array_equal(contexts, payload.vectors[rows[[2, 0], :-1]])
  np.testing.assert_array_equal(targets, payload.vectors[rows[[2, 0], -1]])
  assert ids.dtype == np.int64 and contexts.dtype == targets.dtype == np.float32
  # With the payload attached, target ids are the payload rows of the targets.
  with_payload = read_sequence_set(path, payload=payload)
  np.testing.assert_array_equal(with_payload.target_ids, rows[:, -1])


def test_compact_set_round_trip_gathers_the_same_batches_as_the_full_form(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0, 3, 12, 30])
  compact = SequenceSet(truth_keys=keys, payload_rows=rows, payload=payload)
  path = write_sequence_set(str(tmp_path / "train_rows.npz"), compact)
  read = read_sequence_set(path, payload=payload, expected_context_length=5)
  assert read.is_compact and read.payload_rows.dtype == np.int32
  assert (read.num_sequences, read.context_length, read.vector_dim) == (4, 5, DIM)
  full = read.materialized()
  indices = np.array([3, 1, 1, 0])
  for compact_part, full_part in zip(read.batch(indices), full.batch(indices)):
    np.testing.assert_array_equal(compact_part, full_part)
  np.testing.assert_array_equal(read.batch(indices)[2], rows[indices, -1])


def test_reads_reference_shaped_npz_with_only_the_required_fields(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  path = save_npz(tmp_path / "ref_train.npz", **arrays, context_length=np.int64(5),
                  num_sequences=np.int64(5), vector_dim=np.int64(DIM))
  read = read_sequence_set(path, payload=payload)
  np.testing.assert_array_equal(read.context_sequences, arrays["context_sequences"])


def test_reads_older_files_that_say_sequences_and_targets(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  path = save_npz(tmp_path / "old.npz", sequences=arrays["context_sequences"],
                  targets=arrays["target_vectors"], truth_keys=arrays["truth_keys"],
                  provenance=arrays["provenance"])
  read = read_sequence_set(path, payload=payload)
  np.testing.assert_array_equal(read.target_vectors, arrays["target_vectors"])


def test_window_target_ids_grow_by_one_per_chunk_and_never_collide():
  rng = np.random.default_rng(0)
  articles = rng.integers(0, 10**9, 40)
  keys = np.array([[a, c] for a in articles for c in rng.choice(500, 8, replace=False) + 5])
  ids = window_target_ids(keys, 5)
  assert ids.max() < keys.shape[0] * 6 * 100 and ids.max() < 2**31
  implied = {}  # every (article, chunk) a window touches -> its id
  for (article, chunk), target_id in zip(keys, ids):
    for offset in range(6):
      key = (article, chunk - offset)
      assert implied.setdefault(key, target_id - offset) == target_id - offset
  assert len(set(implied.values())) == len(implied)


# ----------------------------------------------------------------------------- reader errors


def test_missing_key_names_file_field_and_fix(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  del arrays["target_vectors"]
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'target_vectors'", "is missing", "older name targets",
                 "Fix:", "lvm_jax.corpus.build")
  assert error.value.field == "target_vectors"


def test_missing_truth_keys(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  del arrays["truth_keys"]
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'truth_keys'", "is missing", "Fix:")


def test_wrong_ndim(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["context_sequences"] = arrays["context_sequences"].reshape(5, -1)
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'context_sequences'", "(5, 40)", "must be 3-D [N, L, dim]",
                 "Fix: rewrite the file with context_sequences shaped [N, L, dim]")


def test_dimension_mismatch_with_config(tmp_path, payload_dir):
  path = save_npz(tmp_path / "t.npz", **full_set_arrays(read_payload(payload_dir)))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path, expected_dim=768)
  assert_message(error, path, "'context_sequences'", "dimension 8", "config.data.vector_dim has 768",
                 "Fix: set config.data.vector_dim")


def test_dimension_mismatch_between_train_and_val_files(tmp_path, payload_dir):
  other = make_payload()
  other.vectors = unit_rows(np.random.default_rng(3), other.num_rows, 6)
  val_path = save_npz(tmp_path / "val.npz", **full_set_arrays(other))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(val_path, expected_dim=8, expected_context_length=5,
                              expected_source="the train set /data/train.npz")
  assert_message(error, val_path, "'context_sequences'", "dimension 6",
                 "but the train set /data/train.npz has 8",
                 "Fix: use sets built from one payload and embedder")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(val_path, expected_context_length=4,
                              expected_source="the train set /data/train.npz")
  assert_message(error, val_path, "context length 5 but the train set /data/train.npz asks for 4")


def test_dimension_mismatch_with_payload(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  other = make_payload()
  other.vectors = unit_rows(np.random.default_rng(3), other.num_rows, 6)
  arrays = full_set_arrays(other)
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path, payload=payload)
  assert_message(error, path, "dimension 6", f"the payload {payload_dir} has 8",
                 "Fix: use the payload and sequence files from the same embedder")


def test_dimension_mismatch_between_contexts_and_targets(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["target_vectors"] = unit_rows(np.random.default_rng(0), 5, 6)
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'target_vectors'", "dimension 6", "context_sequences has 8", "Fix:")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_inf(tmp_path, payload_dir, bad_value):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["context_sequences"][3, 2, 1] = bad_value
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'context_sequences'", "NaN or Inf in 1 of 5 rows",
                 "(first: row 3)", "Fix: re-embed or drop those rows")


def test_file_with_zero_sequences(tmp_path):
  path = save_npz(tmp_path / "t.npz", context_sequences=np.zeros((0, 5, DIM), np.float32),
                  target_vectors=np.zeros((0, DIM), np.float32),
                  truth_keys=np.zeros((0, 2), np.int64))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'context_sequences'", "is empty", "Fix: rebuild the file")


def test_context_length_mismatch(tmp_path, payload_dir):
  path = save_npz(tmp_path / "t.npz", **full_set_arrays(read_payload(payload_dir)))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path, expected_context_length=8)
  assert_message(error, path, "context length 5", "config.data.context_length asks for 8",
                 "Fix: set config.data.context_length=5", "--context_length=8")


def test_stored_scalar_disagreeing_with_arrays(tmp_path, payload_dir):
  path = save_npz(tmp_path / "t.npz", **full_set_arrays(read_payload(payload_dir)),
                  num_sequences=np.int64(7))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'num_sequences'", "says 7 but the arrays hold 5", "Fix:")


def test_row_counts_that_differ_are_not_truncated(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["truth_keys"] = arrays["truth_keys"][:4]
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "row counts differ", "truth_keys=4", "context_sequences=5",
                 "nothing is truncated", "Fix:")


def test_truth_keys_absent_from_payload(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  arrays["truth_keys"][1] = [999, 5]
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path, payload=payload)
  assert_message(error, path, "'truth_keys'", "1 of 5 keys are absent", "(999, 5)", payload_dir,
                 "Fix: pass the payload these sequences were built from")


def test_targets_that_do_not_match_their_payload_vector(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  arrays["target_vectors"][2] = payload.vectors[40]
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path, payload=payload)
  assert_message(error, path, "'target_vectors'", "1 of 5 targets do not match", "cosine < 0.999",
                 "at row 2", payload_dir, "Fix: use the payload the file was built from")


def test_non_unit_norms_report_statistics_and_fail(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["target_vectors"][[0, 4]] *= np.array([[2.0], [0.5]], np.float32)
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'target_vectors'", "2 of 5 vectors are not unit-norm",
                 "min 0.5", "max 2", "mean 1.1",
                 "Fix: re-embed with normalisation, or opt in", "config.data.normalize=True")


def test_non_unit_norms_are_normalised_once_with_a_warning_when_asked(tmp_path, payload_dir,
                                                                      caplog):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  arrays["target_vectors"][0] *= 3.0
  path = save_npz(tmp_path / "t.npz", **arrays)
  with caplog.at_level("WARNING"):
    read = read_sequence_set(path, payload=payload, normalize=True)
  np.testing.assert_allclose(np.linalg.norm(read.target_vectors, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(read.target_vectors[0], payload.vectors[5], atol=1e-6)
  assert "re-normalising" in caplog.text and "1 of 5 vectors" in caplog.text


def test_compact_form_without_payload(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0])
  path = write_sequence_set(str(tmp_path / "c.npz"), SequenceSet(
      truth_keys=keys, payload_rows=rows, payload=payload))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'payload_rows'", "needs the payload",
                 "Fix: pass the payload (config.data.payload_path")


def test_compact_form_with_a_different_payload(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0])
  path = write_sequence_set(str(tmp_path / "c.npz"), SequenceSet(
      truth_keys=keys, payload_rows=rows, payload=payload))
  other = write_payload(str(tmp_path / "other"), make_payload(articles=5))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path, payload=read_payload(other))
  assert_message(error, path, "payload_fingerprint", "index a different payload", payload_dir,
                 "Fix: pass the payload the file was built from")


def test_compact_rows_out_of_range_or_not_consecutive(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0, 1])
  for name, bad_rows, expected in (
      ("range", rows + np.array([[0] * 6, [0, 0, 0, 0, 0, 60]]), "payload rows from 0 to 66"),
      ("gap", np.array([[0, 1, 2, 3, 5, 6], [1, 2, 3, 4, 5, 6]]), "row 0 is not a run")):
    path = save_npz(tmp_path / f"{name}.npz", payload_rows=bad_rows.astype(np.int32),
                    truth_keys=keys)
    with pytest.raises(DataFormatError) as error:
      read_sequence_set(path, payload=payload)
    assert_message(error, path, "'payload_rows'", expected, "Fix:")

