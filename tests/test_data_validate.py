"""validate: each check's exact message (file, field, problem, fix) and its block-wise behaviour."""

import numpy as np
import pytest

from lvm_jax.data import validate
from lvm_jax.data.errors import DataFormatError, data_error

PATH = "/data/train.npz"


def unit_rows(count, dim=4, seed=0):
  vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_data_error_wording_and_attributes():
  error = data_error(PATH, "targets", "is bad", "do this")
  assert isinstance(error, ValueError)
  assert str(error) == "/data/train.npz: field 'targets': is bad. Fix: do this"
  assert (error.path, error.field, error.problem, error.fix) == (PATH, "targets", "is bad",
                                                                 "do this")
  assert isinstance(DataFormatError("plain message"), ValueError)


def test_check_ndim():
  with pytest.raises(DataFormatError, match=r"^/data/train.npz: field 'x': has shape \(2, 3\) "
                     r"\(2-D\) but must be 3-D \[N, L, dim\]\. Fix: rewrite the file with x "
                     r"shaped \[N, L, dim\]$"):
    validate.check_ndim(np.zeros((2, 3)), 3, path=PATH, field="x", layout="[N, L, dim]")
  validate.check_ndim(np.zeros((2, 3, 4)), 3, path=PATH, field="x", layout="[N, L, dim]")


def test_check_dtype_kinds():
  with pytest.raises(DataFormatError, match="field 'v': has dtype int64, expected floating"):
    validate.check_float(np.zeros(3, np.int64), path=PATH, field="v")
  with pytest.raises(DataFormatError, match="field 'k': has dtype float32, expected integers"):
    validate.check_integer(np.zeros(3, np.float32), path=PATH, field="k")


def test_check_dim_and_context_length_ignore_unset_expectations():
  validate.check_dim(8, None, path=PATH, field="v", expected_from="x", fix="y")
  validate.check_dim(8, 0, path=PATH, field="v", expected_from="x", fix="y")
  validate.check_context_length(5, None, path=PATH, field="c", expected_from="cfg")
  with pytest.raises(DataFormatError) as error:
    validate.check_dim(8, 768, path=PATH, field="v", expected_from="the payload /p",
                       fix="use one embedder")
  assert str(error.value) == ("/data/train.npz: field 'v': has vector dimension 8 but the payload "
                              "/p has 768. Fix: use one embedder")


def test_check_finite_counts_rows_across_blocks():
  array = np.ones((2 * validate.BLOCK_ROWS + 5, 2), np.float32)
  array[2, 1] = np.nan
  array[validate.BLOCK_ROWS + 9, 0] = -np.inf
  array[-1] = np.nan
  with pytest.raises(DataFormatError) as error:
    validate.check_finite(array, path=PATH, field="v")
  assert f"has NaN or Inf in 3 of {array.shape[0]} rows (first: row 2)" in str(error.value)
  validate.check_finite(np.ones((3, 2, 2)), path=PATH, field="v")


def test_row_blocks_cover_every_row_once():
  covered = np.concatenate([np.arange(b.start, b.stop) for b in validate.row_blocks(10, 3)])
  np.testing.assert_array_equal(covered, np.arange(10))


def test_check_unit_norm_statistics_and_opt_in_normalisation(caplog):
  vectors = unit_rows(6)
  vectors[1] *= 2.0
  vectors[4] *= 0.25
  with pytest.raises(DataFormatError) as error:
    validate.check_unit_norm(vectors.copy(), path=PATH, field="v", normalize=False)
  message = str(error.value)
  assert "2 of 6 vectors are not unit-norm (|norm - 1| > 0.001; norms min 0.25, max 2, mean " \
         "1.042)" in message
  assert "Fix: re-embed with normalisation, or opt in to re-normalising once on load" in message
  with caplog.at_level("WARNING"):
    fixed = validate.check_unit_norm(vectors.copy(), path=PATH, field="v", normalize=True)
  np.testing.assert_allclose(np.linalg.norm(fixed, axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(fixed[1], vectors[1] / 2.0, atol=1e-6)
  assert "re-normalising them as asked" in caplog.text


def test_zero_vectors_cannot_be_normalised():
  vectors = unit_rows(3)
  vectors[0] = 0.0
  with pytest.raises(DataFormatError, match="all-zero and have no direction"):
    validate.check_unit_norm(vectors, path=PATH, field="v", normalize=True)


def test_unit_norm_accepts_float32_rounding():
  validate.check_unit_norm(unit_rows(1000, 768), path=PATH, field="v", normalize=False)


def test_check_same_count_never_truncates():
  assert validate.check_same_count({"a": 3, "b": 3}, path=PATH) == 3
  with pytest.raises(DataFormatError) as error:
    validate.check_same_count({"a": 3, "b": 2}, path=PATH)
  assert "field 'a/b': row counts differ (a=3, b=2); nothing is truncated" in str(error.value)


def test_check_sorted_unique_keys():
  validate.check_sorted_unique_keys(np.array([0, 0, 1, 5]), np.array([0, 2, 0, 0]), path=PATH)
  with pytest.raises(DataFormatError, match=r"row 2 \(article 0, chunk 1\) comes after "
                     r"\(article 1, chunk 0\)"):
    validate.check_sorted_unique_keys(np.array([0, 1, 0]), np.array([0, 0, 1]), path=PATH)
  with pytest.raises(DataFormatError, match="row 1 repeats key"):
    validate.check_sorted_unique_keys(np.array([0, 0]), np.array([3, 3]), path=PATH)
  with pytest.raises(DataFormatError, match="has negative values"):
    validate.check_sorted_unique_keys(np.array([-1, 0]), np.array([0, 0]), path=PATH)
  with pytest.raises(DataFormatError, match="at or above the limit"):
    validate.check_sorted_unique_keys(np.array([0]), np.array([validate.MAX_CHUNK_INDEX]),
                                      path=PATH)


def test_check_unique_ids():
  with pytest.raises(DataFormatError, match=r"field 'ids': has 1 repeated values \(e.g. 7\)"):
    validate.check_unique(np.array([7, 1, 7]), path=PATH, field="ids")


def test_check_targets_match_reports_the_worst_row():
  payload = unit_rows(5)
  targets = payload[[0, 1, 2]].copy()
  targets[1] = payload[4]
  validate.check_targets_match(payload[[0, 1]], payload, np.array([0, 1]), path=PATH,
                               field="t", payload_path="/p")
  with pytest.raises(DataFormatError) as error:
    validate.check_targets_match(targets, payload, np.array([0, 1, 2]), path=PATH, field="t",
                                 payload_path="/p")
  assert "1 of 3 targets do not match their payload vector in /p (cosine < 0.999; worst" in \
      str(error.value)
  assert "at row 1)" in str(error.value)


def test_check_windows_consecutive_and_rows_in_range():
  articles = np.array([0, 0, 0, 1, 1, 1])
  chunks = np.array([0, 1, 2, 0, 1, 3])
  validate.check_windows_consecutive(np.array([[0, 1, 2], [3, 4, 4]])[:1], articles, chunks,
                                     path=PATH, field="r")
  with pytest.raises(DataFormatError, match=r"row 0 is not a run of consecutive chunks of one "
                     r"article \(payload rows \[1, 2, 3\]\)"):
    validate.check_windows_consecutive(np.array([[1, 2, 3]]), articles, chunks, path=PATH,
                                       field="r")
  with pytest.raises(DataFormatError, match="row 0 is not a run"):
    validate.check_windows_consecutive(np.array([[3, 4, 5]]), articles, chunks, path=PATH,
                                       field="r")
  with pytest.raises(DataFormatError, match="payload rows from 0 to 6 but the payload /p has 6"):
    validate.check_rows_in_range(np.array([[0, 6]]), 6, path=PATH, field="r", payload_path="/p")


def test_check_stored_scalar():
  validate.check_stored_scalar(None, 5, path=PATH, field="num_sequences")
  validate.check_stored_scalar(np.int64(5), 5, path=PATH, field="num_sequences")
  with pytest.raises(DataFormatError, match="says 4 but the arrays hold 5"):
    validate.check_stored_scalar(np.int64(4), 5, path=PATH, field="num_sequences")

