"""Train/val sequence sets: windows of L context vectors and the next one, as NPZ.

  full form    context_sequences [N, L, dim] float32, target_vectors [N, dim],
               truth_keys [N, 2] (article_index, chunk_index of the target),
               provenance (JSON string in a 1-element array), optional scalars
               context_length, num_sequences, vector_dim. Older files say
               sequences / targets.
  compact form payload_rows [N, L+1] int32 (last column = target), truth_keys,
               provenance (with the payload's fingerprint), same scalars;
               vectors are gathered from the payload per batch.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np

from lvm_jax import atomic
from lvm_jax.data import file_io, validate
from lvm_jax.data.errors import data_error
from lvm_jax.data.payload import Payload, payload_fingerprint, payload_rows_for_keys

# Field names in the NPZ files, the reference's first, then older aliases.
CONTEXT_FIELDS = ("context_sequences", "sequences")
TARGET_FIELDS = ("target_vectors", "targets")
COMPACT_FIELD = "payload_rows"


def window_target_ids(truth_keys: np.ndarray, context_length: int) -> np.ndarray:
  """truth_keys [N, 2] -> ids [N] int64 numbered as if the windows' chunks were payload rows.

  Each article gets a contiguous block covering its windows' chunks (first
  context to last target), so ids grow by one per chunk, different chunks never
  share an id, and the values stay below N * (L + 1): they survive JAX's
  default int32 on device, which packed keys (pack_keys) would overflow.
  """
  keys = np.asarray(truth_keys, np.int64)
  if keys.shape[0] == 0:
    return np.zeros(0, np.int64)
  articles, inverse = np.unique(keys[:, 0], return_inverse=True)
  inverse = inverse.reshape(-1)
  first = np.full(articles.shape[0], np.iinfo(np.int64).max)
  last = np.full(articles.shape[0], np.iinfo(np.int64).min)
  np.minimum.at(first, inverse, keys[:, 1] - context_length)
  np.maximum.at(last, inverse, keys[:, 1])
  starts = np.concatenate([[0], np.cumsum(last - first + 1)[:-1]])
  return starts[inverse] + keys[:, 1] - first[inverse]


@dataclasses.dataclass
class SequenceSet:
  """Training windows in either form, behind one interface (`batch`).

  Full form: context_sequences [N, L, dim] float32 and target_vectors [N, dim].
  Compact form: payload_rows [N, L+1] int32 (last column = target) + payload;
  vectors are gathered per batch, so memory is the payload plus 4(L+1) bytes a
  sequence. truth_keys [N, 2] int64 (article, chunk of the target) in both.
  target_ids [N] int64: payload rows of the targets when a payload is attached,
  window_target_ids otherwise; in both, consecutive chunks of an article have
  consecutive ids (the loss derives context positions' ids from them) and the
  values fit int32.
  """
  truth_keys: np.ndarray
  provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)
  context_sequences: Optional[np.ndarray] = None
  target_vectors: Optional[np.ndarray] = None
  payload_rows: Optional[np.ndarray] = None
  payload: Optional[Payload] = None
  target_ids: Optional[np.ndarray] = None
  source: str = "<sequences in memory>"

  def __post_init__(self):
    if self.payload_rows is None and self.context_sequences is None:
      raise ValueError("SequenceSet needs context_sequences/target_vectors (full form) or "
                       "payload_rows + payload (compact form).")
    if self.payload_rows is not None and self.payload is None:
      raise ValueError("SequenceSet: the compact form (payload_rows) needs its payload.")
    if self.target_ids is None:
      if self.payload_rows is not None:
        self.target_ids = self.payload_rows[:, -1].astype(np.int64)
      elif self.payload is not None:
        self.target_ids = payload_rows_for_keys(self.payload, self.truth_keys, source=self.source)
      else:
        self.target_ids = window_target_ids(self.truth_keys, self.context_length)

  @property
  def is_compact(self) -> bool:
    return self.payload_rows is not None

  @property
  def num_sequences(self) -> int:
    return int(self.truth_keys.shape[0])

  @property
  def context_length(self) -> int:
    if self.is_compact:
      return int(self.payload_rows.shape[1] - 1)
    return int(self.context_sequences.shape[1])

  @property
  def vector_dim(self) -> int:
    return self.payload.vector_dim if self.is_compact else int(self.context_sequences.shape[2])

  def batch(self, indices) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """indices [n] -> contexts [n, L, dim] float32, targets [n, dim] float32, target_ids [n] int64."""
    indices = np.asarray(indices, np.int64)
    if self.is_compact:
      rows = self.payload_rows[indices]
      vectors = self.payload.vectors
      return vectors[rows[:, :-1]], vectors[rows[:, -1]], self.target_ids[indices]
    return (np.asarray(self.context_sequences[indices], np.float32),
            np.asarray(self.target_vectors[indices], np.float32), self.target_ids[indices])

  def materialized(self) -> "SequenceSet":
    """The full form of this set (a copy of every vector; 4·L·dim bytes a sequence)."""
    if not self.is_compact:
      return self
    contexts, targets, _ = self.batch(np.arange(self.num_sequences))
    return SequenceSet(truth_keys=self.truth_keys, provenance=dict(self.provenance),
                       context_sequences=contexts, target_vectors=targets,
                       target_ids=self.target_ids, payload=self.payload, source=self.source)

  def article_ids(self) -> np.ndarray:
    return np.unique(self.truth_keys[:, 0])


def write_sequence_set(path: str, sequence_set: SequenceSet) -> str:
  """Writes the set in its own form (full or compact) as an uncompressed NPZ; returns `path`."""
  provenance = file_io.make_provenance(**sequence_set.provenance)
  scalars = {"context_length": np.int64(sequence_set.context_length),
             "num_sequences": np.int64(sequence_set.num_sequences),
             "vector_dim": np.int64(sequence_set.vector_dim)}
  keys = np.asarray(sequence_set.truth_keys, np.int64)
  if sequence_set.is_compact:
    provenance["payload_fingerprint"] = payload_fingerprint(sequence_set.payload)
    provenance.setdefault("payload_path", os.path.abspath(sequence_set.payload.source))
    if sequence_set.payload.num_rows >= np.iinfo(np.int32).max:
      raise data_error(path, COMPACT_FIELD, f"cannot index {sequence_set.payload.num_rows} "
                       "payload rows with int32", "write the full form instead")
    arrays = {COMPACT_FIELD: np.asarray(sequence_set.payload_rows, np.int32)}
  else:
    arrays = {CONTEXT_FIELDS[0]: np.asarray(sequence_set.context_sequences, np.float32),
              TARGET_FIELDS[0]: np.asarray(sequence_set.target_vectors, np.float32)}
  atomic.savez(path, truth_keys=keys, provenance=file_io.provenance_array(provenance), **arrays,
                **scalars)
  return path


def read_sequence_set(path: str, *, payload: Optional[Payload] = None,
                      expected_dim: Optional[int] = None,
                      expected_context_length: Optional[int] = None,
                      expected_source: str = file_io.CONFIG_SOURCE,
                      normalize: bool = False, check_targets: bool = True) -> SequenceSet:
  """Reads and validates a train/val NPZ in either form.

  payload: required for the compact form; for the full form, when given, the
  truth keys must exist in it and every target must match its payload vector.
  expected_dim / expected_context_length: None or 0 accept any value.
  expected_source: where those expectations come from, for the messages: the
  config (default), or e.g. "the train set /data/train.npz" when checking val.
  normalize: re-normalise non-unit vectors once (logged) instead of raising.
  """
  path = str(path)
  expected = file_io.Expected(expected_dim, expected_context_length, expected_source)
  with file_io.open_npz(path) as npz:
    if COMPACT_FIELD in npz.files:
      return _read_compact(path, npz, payload, expected)
    contexts_field = file_io.first_present(npz, CONTEXT_FIELDS, path)
    targets_field = file_io.first_present(npz, TARGET_FIELDS, path)
    windows = read_windows(path, npz, contexts_field, targets_field, payload=payload,
                            expected=expected, normalize=normalize, check_targets=check_targets)
  contexts, targets, keys, provenance, target_ids = windows
  return SequenceSet(truth_keys=keys, provenance=provenance, context_sequences=contexts,
                     target_vectors=targets, payload=payload, target_ids=target_ids, source=path)


def _read_compact(path, npz, payload, expected: "file_io.Expected") -> SequenceSet:
  if payload is None:
    raise data_error(path, COMPACT_FIELD, "is the compact form (payload row indices) and needs "
                     "the payload it indexes", "pass the payload (config.data.payload_path, "
                     "--payload, or read_sequence_set(..., payload=read_payload(DIR)))")
  rows = file_io.load_field(npz, COMPACT_FIELD, path)
  validate.check_ndim(rows, 2, path=path, field=COMPACT_FIELD, layout="[N, L+1]")
  validate.check_integer(rows, path=path, field=COMPACT_FIELD)
  keys = file_io.load_field(npz, "truth_keys", path)
  validate.check_ndim(keys, 2, path=path, field="truth_keys", layout="[N, 2]")
  validate.check_integer(keys, path=path, field="truth_keys")
  provenance = file_io.read_npz_provenance(npz, path)
  count = validate.check_same_count({COMPACT_FIELD: rows.shape[0], "truth_keys": keys.shape[0]},
                                    path=path)
  validate.check_not_empty(rows, path=path, field=COMPACT_FIELD)
  if rows.shape[1] < 2:
    raise data_error(path, COMPACT_FIELD, f"has {rows.shape[1]} columns; needs L context rows "
                     "and 1 target row", f"rebuild the file ({file_io.BUILD_HINT})")
  stored_fingerprint = provenance.get("payload_fingerprint")
  actual_fingerprint = payload_fingerprint(payload)
  if stored_fingerprint and stored_fingerprint != actual_fingerprint:
    raise data_error(path, "provenance.payload_fingerprint", f"is {stored_fingerprint} but the "
                     f"payload {payload.source} has {actual_fingerprint}: the rows index a "
                     f"different payload (built from {provenance.get('payload_path', '?')})",
                     "pass the payload the file was built from, or rebuild the file from this "
                     f"payload ({file_io.BUILD_HINT})")
  context_length = rows.shape[1] - 1
  file_io.check_scalars(npz, path, count, context_length, payload.vector_dim)
  expected.check(path, COMPACT_FIELD, context_length, payload.vector_dim)
  validate.check_rows_in_range(rows, payload.num_rows, path=path, field=COMPACT_FIELD,
                               payload_path=payload.source)
  validate.check_windows_consecutive(rows, payload.article_index, payload.chunk_index, path=path,
                                     field=COMPACT_FIELD)
  target_rows = rows[:, -1]
  if not (np.array_equal(payload.article_index[target_rows], keys[:, 0]) and
          np.array_equal(payload.chunk_index[target_rows], keys[:, 1])):
    raise data_error(path, "truth_keys", "do not match the payload keys of the target rows "
                     f"(last column of {COMPACT_FIELD})", f"rebuild the file ({file_io.BUILD_HINT})")
  return SequenceSet(truth_keys=keys.astype(np.int64, copy=False), provenance=provenance,
                     payload_rows=rows.astype(np.int32, copy=False), payload=payload, source=path)



def read_windows(path, npz, contexts_field, targets_field, *, payload, expected: file_io.Expected,
                  normalize, check_targets):
  """Validated (contexts, targets, truth_keys, provenance, target_ids-or-None) of a full NPZ."""
  contexts = file_io.load_field(npz, contexts_field, path)
  targets = file_io.load_field(npz, targets_field, path)
  keys = file_io.load_field(npz, "truth_keys", path)
  provenance = file_io.read_npz_provenance(npz, path)
  validate.check_ndim(contexts, 3, path=path, field=contexts_field, layout="[N, L, dim]")
  validate.check_ndim(targets, 2, path=path, field=targets_field, layout="[N, dim]")
  validate.check_ndim(keys, 2, path=path, field="truth_keys",
                      layout="[N, 2] (article_index, chunk_index)")
  if keys.shape[1] != 2:
    raise data_error(path, "truth_keys", f"has shape {tuple(keys.shape)}, expected [N, 2] "
                     "(article_index, chunk_index)", f"rebuild the file ({file_io.BUILD_HINT})")
  validate.check_float(contexts, path=path, field=contexts_field)
  validate.check_float(targets, path=path, field=targets_field)
  validate.check_integer(keys, path=path, field="truth_keys")
  count = validate.check_same_count({contexts_field: contexts.shape[0],
                                     targets_field: targets.shape[0],
                                     "truth_keys": keys.shape[0]}, path=path)
  validate.check_not_empty(contexts, path=path, field=contexts_field)
  dim = contexts.shape[2]
  if targets.shape[1] != dim:
    raise data_error(path, targets_field, f"has vector dimension {targets.shape[1]} but "
                     f"{contexts_field} has {dim}", f"rebuild the file ({file_io.BUILD_HINT})")
  file_io.check_scalars(npz, path, count, contexts.shape[1], dim)
  expected.check(path, contexts_field, contexts.shape[1], dim)
  target_ids = None
  if payload is not None:
    validate.check_dim(dim, payload.vector_dim, path=path, field=contexts_field,
                       expected_from=f"the payload {payload.source}",
                       fix="use the payload and sequence files from the same embedder")
  validate.check_finite(contexts, path=path, field=contexts_field)
  validate.check_finite(targets, path=path, field=targets_field)
  contexts = np.asarray(contexts, np.float32)
  targets = np.asarray(targets, np.float32)
  contexts = validate.check_unit_norm(contexts, path=path, field=contexts_field,
                                      normalize=normalize)
  targets = validate.check_unit_norm(targets, path=path, field=targets_field, normalize=normalize)
  keys = keys.astype(np.int64, copy=False)
  if payload is not None:
    target_ids = payload_rows_for_keys(payload, keys, source=path)
    if check_targets:
      validate.check_targets_match(targets, payload.vectors, target_ids, path=path,
                                   field=targets_field, payload_path=payload.source)
  return contexts, targets, keys, provenance, target_ids

