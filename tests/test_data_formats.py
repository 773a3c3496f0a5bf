"""formats: round trips through the writers, the reference's files, and every reader error."""

import json
import os

import numpy as np
import pytest

from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.eval_sets import EvalSet, read_eval_set, write_eval_set
from lvm_jax.data.legacy import convert_reference_payload, read_reference_payload
from lvm_jax.data.payload import Payload, payload_rows_for_keys, read_payload, sort_payload, write_payload
from lvm_jax.data.sequences import SequenceSet, read_sequence_set, window_target_ids, write_sequence_set

DIM = 8


def unit_rows(rng, count, dim=DIM):
  vectors = rng.normal(size=(count, dim)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_payload(articles=4, chunks=12, seed=0, texts=True):
  rng = np.random.default_rng(seed)
  count = articles * chunks
  article_index = np.repeat(np.arange(articles) * 10 + 3, chunks)
  chunk_index = np.tile(np.arange(chunks), articles)
  return Payload(vectors=unit_rows(rng, count), article_index=article_index,
                 chunk_index=chunk_index, ids=np.arange(count) * 7 + 100,
                 texts=[f"chunk {i}\nline two, ünïcode" for i in range(count)] if texts else None,
                 provenance={"embedder_id": "test-embedder"})


def windows_of(payload, starts, context_length=5):
  rows = (np.asarray(starts)[:, None] + np.arange(context_length + 1)).astype(np.int32)
  keys = np.stack([payload.article_index[rows[:, -1]], payload.chunk_index[rows[:, -1]]], 1)
  return rows, keys


@pytest.fixture
def payload_dir(tmp_path):
  return write_payload(str(tmp_path / "payload"), make_payload())


def full_set_arrays(payload, starts=(0, 1, 2, 12, 13)):
  rows, keys = windows_of(payload, starts)
  return {"context_sequences": payload.vectors[rows[:, :-1]],
          "target_vectors": payload.vectors[rows[:, -1]], "truth_keys": keys,
          "provenance": np.array([json.dumps({"embedder_id": "test-embedder"})])}


def save_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def assert_message(error, *parts):
  message = str(error.value)
  for part in parts:
    assert part in message, f"{part!r} not in {message!r}"


# ----------------------------------------------------------------------------- round trips


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


def test_reads_reference_shaped_npz_with_only_the_required_fields(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  path = save_npz(tmp_path / "ref_train.npz", **arrays, context_length=np.int64(5),
                  num_sequences=np.int64(5), vector_dim=np.int64(DIM))
  read = read_sequence_set(path, payload=payload)
  np.testing.assert_array_equal(read.context_sequences, arrays["context_sequences"])
  rows, keys = windows_of(payload, [0, 5])
  eval_path = save_npz(tmp_path / "ref_eval.npz", contexts=payload.vectors[rows[:, :-1]],
                       targets=payload.vectors[rows[:, -1]], truth_keys=keys,
                       provenance=np.array(['{"embedder_id": "gtr-t5"}']))
  assert read_eval_set(eval_path).provenance["embedder_id"] == "gtr-t5"


def test_reads_older_files_that_say_sequences_and_targets(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  arrays = full_set_arrays(payload)
  path = save_npz(tmp_path / "old.npz", sequences=arrays["context_sequences"],
                  targets=arrays["target_vectors"], truth_keys=arrays["truth_keys"],
                  provenance=arrays["provenance"])
  read = read_sequence_set(path, payload=payload)
  np.testing.assert_array_equal(read.target_vectors, arrays["target_vectors"])


def write_reference_payload(path, payload, order=None):
  """The reference's layout: np.save of {payload_id: (text, meta, vec)}, in any row order."""
  order = np.arange(payload.num_rows) if order is None else order
  entries = {int(payload.ids[r]): (payload.texts[r],
                                   {"article_index": int(payload.article_index[r]),
                                    "chunk_index": int(payload.chunk_index[r]), "extra": "x"},
                                   payload.vectors[r]) for r in order}
  np.save(path, entries, allow_pickle=True)
  return str(path)


def test_reference_pickled_payload_is_refused_without_trust_pickle(tmp_path):
  path = write_reference_payload(tmp_path / "ref.npy", make_payload())
  with pytest.raises(DataFormatError) as error:
    read_reference_payload(path)
  assert_message(error, path, "pickle", "trust_pickle=True")
  with pytest.raises(DataFormatError) as error:
    convert_reference_payload(path, str(tmp_path / "out"), trust_pickle=False)
  assert_message(error, "trust_pickle=True")
  assert not os.path.exists(tmp_path / "out")
  with pytest.raises(DataFormatError) as error:  # read_payload points at the converter
    read_payload(path)
  assert_message(error, path, "lvm_jax.data.convert", "--trust_pickle")


def test_reference_payload_converts_sorted_to_the_safe_format(tmp_path):
  original = make_payload()
  shuffled = np.random.default_rng(1).permutation(original.num_rows)
  path = write_reference_payload(tmp_path / "ref.npy", original, shuffled)
  converted = convert_reference_payload(path, str(tmp_path / "safe"), trust_pickle=True,
                                                embedder_id="gtr-t5-base")
  read = read_payload(str(tmp_path / "safe"))
  np.testing.assert_array_equal(read.vectors, original.vectors)
  np.testing.assert_array_equal(read.ids, original.ids)
  assert read.texts == original.texts
  assert read.provenance["embedder_id"] == "gtr-t5-base"
  assert len(read.provenance["source_hash"]) == 64
  assert converted.num_rows == original.num_rows
  assert sorted(os.listdir(tmp_path / "safe")) == [  # plain arrays and text only, no pickle
      "article_index.npy", "chunk_index.npy", "ids.npy", "provenance.json", "texts.jsonl",
      "vectors.npy"]


def test_reference_payload_entries_are_checked(tmp_path):
  bad = {1: ("t", {"article_index": 0}, np.ones(4, np.float32) / 2)}
  path = str(tmp_path / "bad.npy")
  np.save(path, bad, allow_pickle=True)
  with pytest.raises(DataFormatError) as error:
    read_reference_payload(path, trust_pickle=True)
  assert_message(error, path, "[1].meta", "chunk_index")


def test_payload_rows_for_keys_maps_and_names_absent_keys(payload_dir):
  payload = read_payload(payload_dir)
  keys = np.array([[13, 4], [3, 0], [33, 11]])
  np.testing.assert_array_equal(payload_rows_for_keys(payload, keys), [16, 0, 47])
  with pytest.raises(DataFormatError) as error:
    payload_rows_for_keys(payload, np.array([[3, 1], [3, 99], [4, 0]]), source="x.npz")
  assert_message(error, "x.npz", "truth_keys", "2 of 3 keys are absent", "(3, 99), (4, 0)",
                 payload_dir, "Fix:")


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
                 "Fix:", "lvm_jax.data.build")
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


def test_nan_in_payload(tmp_path):
  payload = make_payload()
  path = write_payload(str(tmp_path / "p"), payload)
  vectors = np.load(os.path.join(path, "vectors.npy"))
  vectors[7, 0] = np.nan
  np.save(os.path.join(path, "vectors.npy"), vectors)
  with pytest.raises(DataFormatError) as error:
    read_payload(path)
  assert_message(error, path, "'vectors'", "NaN or Inf", "row 7", "Fix:")


def test_empty_file(tmp_path):
  path = tmp_path / "empty.npz"
  path.write_bytes(b"")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "empty file (0 bytes)", "Fix: rewrite it")


def test_file_with_zero_sequences(tmp_path):
  path = save_npz(tmp_path / "t.npz", context_sequences=np.zeros((0, 5, DIM), np.float32),
                  target_vectors=np.zeros((0, DIM), np.float32),
                  truth_keys=np.zeros((0, 2), np.int64))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'context_sequences'", "is empty", "Fix: rebuild the file")


def test_missing_file(tmp_path):
  path = str(tmp_path / "nope.npz")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "does not exist", "Fix:")


def test_not_an_npz(tmp_path):
  path = tmp_path / "text.npz"
  path.write_text("hello")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "not a readable NPZ", "Fix:")


def test_object_arrays_are_not_unpickled(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["provenance"] = np.array([{"embedder_id": "x"}], dtype=object)
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'provenance'", "without pickle", "Fix: store plain numeric arrays")


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
                 "lvm_jax.data.sort_payload")
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


def test_eval_set_missing_key(tmp_path, payload_dir):
  payload = read_payload(payload_dir)
  rows, keys = windows_of(payload, [0])
  path = save_npz(tmp_path / "e.npz", contexts=payload.vectors[rows[:, :-1]], truth_keys=keys)
  with pytest.raises(DataFormatError) as error:
    read_eval_set(path)
  assert_message(error, path, "'targets'", "is missing", "Fix:")
