"""payload: the safe payload directory's round trip, key lookup, and every reader/writer error."""

import os

import numpy as np
import pytest

from data_helpers import DIM, assert_message, make_payload
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.payload import payload_rows_for_keys, read_payload, write_payload


def test_payload_round_trip_keeps_every_field(payload_dir):
  original = make_payload()
  payload = read_payload(payload_dir)
  np.testing.assert_array_equal(payload.vectors, original.vectors)
  for field in ("article_index", "chunk_index", "ids"):
    np.testing.assert_array_equal(getattr(payload, field), getattr(original, field))
    assert getattr(payload, field).dtype == np.int64
  assert payload.vectors.dtype == np.float32
  assert payload.texts == original.texts
  for key in ("embedder_id", "norm", "metric", "created_at", "source_hash"):
    assert key in payload.provenance
  assert payload.provenance["embedder_id"] == "test-embedder"
  assert payload.provenance["num_rows"] == 48 and payload.provenance["vector_dim"] == DIM


def test_payload_without_texts_round_trips(tmp_path):
  path = write_payload(str(tmp_path / "p"), make_payload(texts=False))
  assert read_payload(path).texts is None


def test_payload_rows_for_keys_maps_and_names_absent_keys(payload_dir):
  payload = read_payload(payload_dir)
  keys = np.array([[13, 4], [3, 0], [33, 11]])
  np.testing.assert_array_equal(payload_rows_for_keys(payload, keys), [16, 0, 47])
  with pytest.raises(DataFormatError) as error:
    payload_rows_for_keys(payload, np.array([[3, 1], [3, 99], [4, 0]]), source="x.npz")
  assert_message(error, "x.npz", "truth_keys", "2 of 3 keys are absent", "(3, 99), (4, 0)",
                 payload_dir, "Fix:")


def test_nan_in_payload(tmp_path):
  payload = make_payload()
  path = write_payload(str(tmp_path / "p"), payload)
  vectors = np.load(os.path.join(path, "vectors.npy"))
  vectors[7, 0] = np.nan
  np.save(os.path.join(path, "vectors.npy"), vectors)
  with pytest.raises(DataFormatError) as error:
    read_payload(path)
  assert_message(error, path, "'vectors'", "NaN or Inf", "row 7", "Fix:")


def test_payload_missing_file_and_unsorted_and_duplicate_rows(tmp_path):
  path = write_payload(str(tmp_path / "p"), make_payload())
  os.remove(os.path.join(path, "ids.npy"))
  with pytest.raises(DataFormatError) as error:
    read_payload(path)
  assert_message(error, path, "'ids'", "ids.npy is missing", "Fix:")
  unsorted = make_payload()
  unsorted.chunk_index = unsorted.chunk_index[::-1].copy()
  with pytest.raises(DataFormatError) as error:
    write_payload(str(tmp_path / "u"), unsorted)
  assert_message(error, "not sorted by (article_index, chunk_index)", "Fix: sort the payload with "
                 "lvm_jax.data.payload.sort_payload")
  duplicated = make_payload()
  duplicated.chunk_index[5] = 4
  with pytest.raises(DataFormatError) as error:
    write_payload(str(tmp_path / "d"), duplicated)
  assert_message(error, "row 5 repeats key (article 3, chunk 4)", "Fix: remove duplicate chunks")


def test_payload_text_count_mismatch(tmp_path):
  payload = make_payload()
  payload.texts = payload.texts[:-1]
  with pytest.raises(DataFormatError) as error:
    write_payload(str(tmp_path / "p"), payload)
  assert_message(error, "texts=47", "vectors=48", "nothing is truncated")


def test_payload_dimension_mismatch_with_config(payload_dir):
  with pytest.raises(DataFormatError) as error:
    read_payload(payload_dir, expected_dim=768)
  assert_message(error, payload_dir, "'vectors'", "dimension 8", "config.data.vector_dim has 768",
                 "Fix:")

