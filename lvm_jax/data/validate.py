"""Checks on loaded arrays: each raises a DataFormatError naming file, field, problem and fix.

Bad input is never repaired silently: the only repair offered is re-normalising
non-unit vectors, and only when the caller asks (`normalize=True`), with a
logged warning. Checks over [M, dim] arrays run in row blocks so that a 500k x
768 payload is checked without a second full-size temporary.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional

import numpy as np
from absl import logging

from lvm_jax.data.errors import data_error

BLOCK_ROWS = 1 << 13  # rows per block for checks over large arrays (~50 MB of float64 at 768-d)
UNIT_NORM_TOLERANCE = 1e-3  # |norm - 1| above this counts as not unit-norm
TARGET_MIN_COSINE = 0.999  # a target must match its payload vector at least this well
MAX_CHUNK_INDEX = 1 << 20  # chunk_index must stay below this (packed ids, see payload.pack_keys)


def row_blocks(num_rows: int, block_rows: int = BLOCK_ROWS) -> Iterator[slice]:
  for start in range(0, num_rows, block_rows):
    yield slice(start, min(start + block_rows, num_rows))


def check_ndim(array: np.ndarray, ndim: int, *, path, field: str, layout: str) -> None:
  """layout: the expected shape in words, e.g. "[N, L, dim]"."""
  if array.ndim != ndim:
    raise data_error(path, field, f"has shape {tuple(array.shape)} ({array.ndim}-D) but must be "
                     f"{ndim}-D {layout}",
                     f"rewrite the file with {field} shaped {layout}")


def check_not_empty(array: np.ndarray, *, path, field: str) -> None:
  if array.shape[0] == 0 or array.size == 0:
    raise data_error(path, field, f"is empty (shape {tuple(array.shape)})",
                     "rebuild the file from a non-empty payload (python -m lvm_jax.corpus.build)")


def check_float(array: np.ndarray, *, path, field: str) -> None:
  if array.dtype.kind != "f":
    raise data_error(path, field, f"has dtype {array.dtype}, expected floating point (float32)",
                     f"store {field} as float32")


def check_integer(array: np.ndarray, *, path, field: str) -> None:
  if array.dtype.kind not in "iu":
    raise data_error(path, field, f"has dtype {array.dtype}, expected integers",
                     f"store {field} as int64")


def check_same_count(counts: Dict[str, int], *, path) -> int:
  """All fields must have the same number of rows; nothing is truncated to the shortest."""
  values = set(counts.values())
  if len(values) != 1:
    listed = ", ".join(f"{name}={count}" for name, count in counts.items())
    raise data_error(path, "/".join(counts), f"row counts differ ({listed}); nothing is "
                     "truncated to the shortest", "rebuild the file so every field has one row "
                     "per sequence (python -m lvm_jax.corpus.build)")
  return values.pop()


def check_dim(actual: int, expected: Optional[int], *, path, field: str, expected_from: str,
              fix: str) -> None:
  """expected_from: where the expectation comes from ("the payload <path>", "config.data...")."""
  if expected is not None and expected > 0 and actual != expected:
    raise data_error(path, field, f"has vector dimension {actual} but {expected_from} has "
                     f"{expected}", fix)


def check_context_length(actual: int, expected: Optional[int], *, path, field: str,
                         expected_from: str) -> None:
  """expected_from: "config.data.context_length", or the file the expectation came from."""
  if expected is not None and expected > 0 and actual != expected:
    if expected_from.startswith("config."):
      fix = (f"set {expected_from}={actual}, or rebuild the file with --context_length={expected} "
             "(python -m lvm_jax.corpus.build)")
    else:  # another file (the train set): only rebuilding both from one payload fixes it
      fix = (f"use sets built together: rebuild this file with --context_length={expected}, or "
             "build train, val and eval in one run of python -m lvm_jax.corpus.build")
    raise data_error(path, field, f"has context length {actual} but {expected_from} asks for "
                     f"{expected}", fix)


def check_stored_scalar(stored, actual: int, *, path, field: str) -> None:
  """Optional scalars (num_sequences, vector_dim, context_length) must agree with the arrays."""
  if stored is not None and int(stored) != actual:
    raise data_error(path, field, f"says {int(stored)} but the arrays hold {actual}",
                     "rebuild the file; the scalar and the arrays were written from different data")


def check_finite(array: np.ndarray, *, path, field: str) -> None:
  """No NaN or Inf anywhere; reports how many rows are affected and the first one."""
  rows = array.reshape(array.shape[0], -1)
  bad_rows = 0
  first_bad = None
  for block in row_blocks(rows.shape[0]):
    finite = np.isfinite(rows[block]).all(axis=1)
    if not finite.all():
      if first_bad is None:
        first_bad = block.start + int(np.argmin(finite))
      bad_rows += int((~finite).sum())
  if bad_rows:
    raise data_error(path, field, f"has NaN or Inf in {bad_rows} of {rows.shape[0]} rows "
                     f"(first: row {first_bad})",
                     "re-embed or drop those rows at the source and rebuild the file")


def vector_norms(vectors: np.ndarray) -> np.ndarray:
  """[..., dim] -> norms [rows] in float64, computed block by block."""
  rows = vectors.reshape(-1, vectors.shape[-1])
  norms = np.empty(rows.shape[0], np.float64)
  for block in row_blocks(rows.shape[0]):
    part = rows[block].astype(np.float64)
    norms[block] = np.sqrt(np.einsum("ij,ij->i", part, part))
  return norms


def norm_statistics(norms: np.ndarray, tolerance: float = UNIT_NORM_TOLERANCE) -> Dict[str, float]:
  off = np.abs(norms - 1.0) > tolerance
  return {"min": float(norms.min()), "max": float(norms.max()), "mean": float(norms.mean()),
          "rows_off": int(off.sum()), "rows": int(norms.size)}


def check_unit_norm(vectors: np.ndarray, *, path, field: str, normalize: bool,
                    tolerance: float = UNIT_NORM_TOLERANCE) -> np.ndarray:
  """Returns `vectors`; raises on non-unit rows unless normalize=True, then rescales in place once.

  Zero rows cannot be normalised and always raise.
  """
  norms = vector_norms(vectors)
  stats = norm_statistics(norms, tolerance)
  if stats["rows_off"] == 0:
    return vectors
  summary = (f"{stats['rows_off']} of {stats['rows']} vectors are not unit-norm (|norm - 1| > "
             f"{tolerance:g}; norms min {stats['min']:.4g}, max {stats['max']:.4g}, mean "
             f"{stats['mean']:.4g})")
  if not normalize:
    raise data_error(path, field, summary, "re-embed with normalisation, or opt in to "
                     "re-normalising once on load (normalize=True / config.data.normalize=True)")
  if stats["min"] == 0.0:
    raise data_error(path, field, summary + "; some are all-zero and have no direction",
                     "drop or re-embed the zero vectors at the source and rebuild the file")
  logging.warning("%s: field '%s': %s; re-normalising them as asked (normalize=True).", path,
                  field, summary)
  rows = vectors.reshape(-1, vectors.shape[-1])
  if not rows.flags.writeable:
    rows = vectors = np.array(vectors)
    rows = rows.reshape(-1, vectors.shape[-1])
  for block in row_blocks(rows.shape[0]):
    rows[block] /= norms[block, None].astype(rows.dtype)
  return vectors


def check_sorted_unique_keys(article_index: np.ndarray, chunk_index: np.ndarray, *, path) -> None:
  """Payload rows must be sorted by (article, chunk) with no key twice: FAISS ids are row numbers."""
  if (article_index < 0).any() or (chunk_index < 0).any():
    raise data_error(path, "article_index/chunk_index", "has negative values",
                     "use non-negative article and chunk numbers")
  if chunk_index.size and int(chunk_index.max()) >= MAX_CHUNK_INDEX:
    raise data_error(path, "chunk_index", f"has value {int(chunk_index.max())}, at or above the "
                     f"limit {MAX_CHUNK_INDEX}", "split very long articles into several articles")
  same_article = article_index[1:] == article_index[:-1]
  ordered = (article_index[1:] > article_index[:-1]) | (same_article &
                                                        (chunk_index[1:] > chunk_index[:-1]))
  if not ordered.all():
    row = int(np.argmin(ordered)) + 1
    duplicate = bool(same_article[row - 1] and chunk_index[row] == chunk_index[row - 1])
    problem = (f"row {row} repeats key (article {int(article_index[row])}, chunk "
               f"{int(chunk_index[row])})" if duplicate else
               f"rows are not sorted by (article_index, chunk_index): row {row} "
               f"(article {int(article_index[row])}, chunk {int(chunk_index[row])}) comes after "
               f"(article {int(article_index[row - 1])}, chunk {int(chunk_index[row - 1])})")
    fix = ("remove duplicate chunks at the source" if duplicate else
           "sort the payload with lvm_jax.data.payload.sort_payload before writing it")
    raise data_error(path, "article_index/chunk_index", problem, fix)


def check_unique(values: np.ndarray, *, path, field: str) -> None:
  ordered = np.sort(values)
  repeats = ordered[1:] == ordered[:-1]
  if repeats.any():
    raise data_error(path, field, f"has {int(repeats.sum())} repeated values (e.g. "
                     f"{int(ordered[1:][repeats][0])})", f"give every row a distinct {field}")


def check_rows_in_range(rows: np.ndarray, num_rows: int, *, path, field: str,
                        payload_path) -> None:
  low, high = int(rows.min()), int(rows.max())
  if low < 0 or high >= num_rows:
    raise data_error(path, field, f"has payload rows from {low} to {high} but the payload "
                     f"{payload_path} has {num_rows} rows", "pass the payload this file was "
                     "built from, or rebuild the file (python -m lvm_jax.corpus.build)")


def check_windows_consecutive(rows: np.ndarray, article_index: np.ndarray,
                              chunk_index: np.ndarray, *, path, field: str) -> None:
  """rows [N, L+1]: each window must be consecutive chunks of one article."""
  for block in row_blocks(rows.shape[0]):
    window = rows[block]
    articles, chunks = article_index[window], chunk_index[window]
    good = ((articles == articles[:, :1]).all(axis=1) &
            (np.diff(chunks, axis=1) == 1).all(axis=1))
    if not good.all():
      bad = block.start + int(np.argmin(good))
      raise data_error(path, field, f"row {bad} is not a run of consecutive chunks of one "
                       f"article (payload rows {rows[bad].tolist()})",
                       "rebuild the file from its payload (python -m lvm_jax.corpus.build)")


def check_targets_match(targets: np.ndarray, payload_vectors: np.ndarray, rows: np.ndarray, *,
                        path, field: str, payload_path,
                        min_cosine: float = TARGET_MIN_COSINE) -> None:
  """targets [N, dim] vs payload_vectors[rows]: cosine must be >= min_cosine for every row."""
  worst, worst_row, bad = 1.0, -1, 0
  for block in row_blocks(targets.shape[0]):
    a = targets[block].astype(np.float64)
    b = payload_vectors[rows[block]].astype(np.float64)
    denominator = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
    cosine = np.einsum("ij,ij->i", a, b) / np.maximum(denominator, 1e-30)
    bad += int((cosine < min_cosine).sum())
    if cosine.size and cosine.min() < worst:
      worst, worst_row = float(cosine.min()), block.start + int(np.argmin(cosine))
  if bad:
    raise data_error(path, field, f"{bad} of {targets.shape[0]} targets do not match their "
                     f"payload vector in {payload_path} (cosine < {min_cosine}; worst {worst:.4f} "
                     f"at row {worst_row})", "use the payload the file was built from, or rebuild "
                     "the file from this payload (python -m lvm_jax.corpus.build)")

