"""The data files: payload, train/val sequence sets (full and compact), eval sets.

Field names follow the reference system so files interchange:
  payload      this project's safe layout, a directory:
                 vectors.npy [M, dim] float32, article_index.npy [M] int64,
                 chunk_index.npy [M] int64, ids.npy [M] int64,
                 texts.jsonl (optional, one JSON string per row, UTF-8),
                 provenance.json (embedder_id, norm, metric, created_at, source_hash...).
               Rows sorted by (article_index, chunk_index); FAISS ids are row numbers.
               The reference's own payload (a pickled dict saved with np.save) is read
               only behind trust_pickle=True and converted by convert_reference_payload.
  train/val    NPZ, full form: context_sequences [N, L, dim] float32, target_vectors
               [N, dim], truth_keys [N, 2] (article_index, chunk_index of the target),
               provenance (JSON string in a 1-element array), optional scalars
               context_length, num_sequences, vector_dim. Older files say
               sequences / targets.
               NPZ, compact form: payload_rows [N, L+1] int32 (last column = target),
               truth_keys, provenance (with the payload's fingerprint), same scalars;
               vectors are gathered from the payload per batch.
  eval         NPZ: contexts [N, L, dim], targets [N, dim], truth_keys [N, 2], provenance.

Readers validate everything (validate.py) and raise DataFormatError naming the
file, the field and the fix; writers produce exactly what readers accept.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from absl import logging

from lvm_jax.data import validate
from lvm_jax.data.errors import DataFormatError, data_error
from lvm_jax.progress import ProgressBar

__all__ = [
    "DataFormatError", "Payload", "SequenceSet", "EvalSet", "pack_keys", "payload_rows_for_keys",
    "payload_fingerprint", "window_target_ids", "sort_payload", "read_payload", "write_payload",
    "read_reference_payload", "convert_reference_payload", "read_sequence_set",
    "write_sequence_set", "read_eval_set", "write_eval_set", "make_provenance",
]

FORMAT_VERSION = 1
PAYLOAD_FILES = {"vectors": "vectors.npy", "article_index": "article_index.npy",
                 "chunk_index": "chunk_index.npy", "ids": "ids.npy"}
TEXTS_FILE = "texts.jsonl"
PROVENANCE_FILE = "provenance.json"
KEY_STRIDE = validate.MAX_CHUNK_INDEX  # packed key = article_index * KEY_STRIDE + chunk_index
BUILD_HINT = "python -m lvm_jax.data.build"

# Field names in the NPZ files, the reference's first, then older aliases.
CONTEXT_FIELDS = ("context_sequences", "sequences")
TARGET_FIELDS = ("target_vectors", "targets")
EVAL_CONTEXT_FIELDS = ("contexts",)
EVAL_TARGET_FIELDS = ("targets",)
COMPACT_FIELD = "payload_rows"
CONFIG_SOURCE = "config"  # expectations passed to the readers come from config.data by default


def make_provenance(**fields: Any) -> Dict[str, Any]:
  """The provenance record every writer stores; unknown extra fields are kept."""
  record = {"embedder_id": "unknown", "norm": "l2", "metric": "inner_product",
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source_hash": "", "format_version": FORMAT_VERSION}
  record.update(fields)
  return record


def pack_keys(article_index: np.ndarray, chunk_index: np.ndarray) -> np.ndarray:
  """(article, chunk) -> one int64 per key, ordered like (article, chunk); consecutive chunks of
  an article get consecutive values, which the loss relies on for its position offsets."""
  return np.asarray(article_index, np.int64) * KEY_STRIDE + np.asarray(chunk_index, np.int64)


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


# ----------------------------------------------------------------------------- payload


@dataclasses.dataclass
class Payload:
  """The corpus every retrieval searches. Row r is FAISS id r.

  vectors [M, dim] float32 unit-norm; article_index, chunk_index, ids [M] int64;
  texts: M strings or None; provenance: JSON-able dict; source: where it was read.
  """
  vectors: np.ndarray
  article_index: np.ndarray
  chunk_index: np.ndarray
  ids: np.ndarray
  texts: Optional[List[str]] = None
  provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)
  source: str = "<payload in memory>"

  @property
  def num_rows(self) -> int:
    return int(self.vectors.shape[0])

  @property
  def vector_dim(self) -> int:
    return int(self.vectors.shape[1])

  @property
  def nbytes(self) -> int:
    return int(self.vectors.nbytes + self.article_index.nbytes + self.chunk_index.nbytes +
               self.ids.nbytes)

  def packed_keys(self) -> np.ndarray:
    """[M] int64, ascending (rows are sorted); cached because lookups reuse it."""
    cached = getattr(self, "_packed_keys", None)
    if cached is None or cached.shape[0] != self.num_rows:
      cached = self._packed_keys = pack_keys(self.article_index, self.chunk_index)
    return cached

  def rows_for_keys(self, truth_keys: np.ndarray, *, source: str = "<keys>",
                    field: str = "truth_keys") -> np.ndarray:
    return payload_rows_for_keys(self, truth_keys, source=source, field=field)


def payload_rows_for_keys(payload: Payload, truth_keys: np.ndarray, *, source: str = "<keys>",
                          field: str = "truth_keys") -> np.ndarray:
  """truth_keys [N, 2] (article_index, chunk_index) -> payload rows [N] int64.

  Raises DataFormatError listing the first absent keys; `source` names the file
  the keys came from.
  """
  keys = np.asarray(truth_keys)
  if keys.ndim != 2 or keys.shape[1] != 2:
    raise data_error(source, field, f"has shape {tuple(keys.shape)}, expected [N, 2] "
                     "(article_index, chunk_index)", "store the target keys as an [N, 2] array")
  if keys.shape[0] and (keys.min(axis=0) < 0).any():
    raise data_error(source, field, "has negative keys", "use the payload's article and chunk "
                     "numbers")
  wanted = pack_keys(keys[:, 0], keys[:, 1])
  available = payload.packed_keys()
  rows = np.searchsorted(available, wanted)
  rows_clipped = np.minimum(rows, max(available.shape[0] - 1, 0))
  found = (rows < available.shape[0]) & (available[rows_clipped] == wanted)
  if not found.all():
    missing = keys[~found]
    examples = ", ".join(f"({int(a)}, {int(c)})" for a, c in missing[:5])
    raise data_error(source, field, f"{missing.shape[0]} of {keys.shape[0]} keys are absent from "
                     f"the payload {payload.source} (first: {examples})", "pass the payload "
                     f"these sequences were built from, or rebuild them from this payload "
                     f"({BUILD_HINT})")
  return rows.astype(np.int64)


def payload_fingerprint(payload: Payload) -> str:
  """Hash of shape and keys: ties a compact set to the payload whose rows it indexes."""
  digest = hashlib.sha256()
  digest.update(f"{payload.num_rows}x{payload.vector_dim}".encode())
  digest.update(np.ascontiguousarray(payload.article_index, np.int64).tobytes())
  digest.update(np.ascontiguousarray(payload.chunk_index, np.int64).tobytes())
  return digest.hexdigest()[:32]


def sort_payload(payload: Payload) -> Payload:
  """Rows reordered by (article_index, chunk_index): the order every reader requires."""
  order = np.lexsort((payload.chunk_index, payload.article_index))
  texts = None if payload.texts is None else [payload.texts[i] for i in order]
  return dataclasses.replace(payload, vectors=payload.vectors[order],
                             article_index=payload.article_index[order],
                             chunk_index=payload.chunk_index[order], ids=payload.ids[order],
                             texts=texts)


def _check_payload_arrays(payload: Payload, path, *, normalize: bool,
                          expected_dim: Optional[int] = None, check_values: bool = True) -> None:
  validate.check_ndim(payload.vectors, 2, path=path, field="vectors", layout="[M, dim]")
  validate.check_float(payload.vectors, path=path, field="vectors")
  for field in ("article_index", "chunk_index", "ids"):
    array = getattr(payload, field)
    validate.check_ndim(array, 1, path=path, field=field, layout="[M]")
    validate.check_integer(array, path=path, field=field)
  counts = {"vectors": payload.vectors.shape[0], "article_index": payload.article_index.shape[0],
            "chunk_index": payload.chunk_index.shape[0], "ids": payload.ids.shape[0]}
  if payload.texts is not None:
    counts["texts"] = len(payload.texts)
  validate.check_same_count(counts, path=path)
  validate.check_not_empty(payload.vectors, path=path, field="vectors")
  validate.check_dim(payload.vector_dim, expected_dim, path=path, field="vectors",
                     expected_from="config.data.vector_dim",
                     fix="set config.data.vector_dim to 0 (take it from the data) or to the "
                     "payload's dimension, or use a payload from the expected embedder")
  validate.check_sorted_unique_keys(payload.article_index, payload.chunk_index, path=path)
  validate.check_unique(payload.ids, path=path, field="ids")
  if check_values:
    validate.check_finite(payload.vectors, path=path, field="vectors")
    payload.vectors = validate.check_unit_norm(payload.vectors, path=path, field="vectors",
                                               normalize=normalize)


def write_payload(path: str, payload: Payload) -> str:
  """Writes the directory layout above (creating `path`); returns `path`.

  The payload must already be valid (sorted, unit-norm, finite): writers never fix data.
  """
  _check_payload_arrays(payload, path, normalize=False)
  os.makedirs(path, exist_ok=True)
  arrays = {"vectors": np.ascontiguousarray(payload.vectors, np.float32),
            "article_index": np.asarray(payload.article_index, np.int64),
            "chunk_index": np.asarray(payload.chunk_index, np.int64),
            "ids": np.asarray(payload.ids, np.int64)}
  for field, name in PAYLOAD_FILES.items():
    _atomic_save_npy(os.path.join(path, name), arrays[field])
  texts_path = os.path.join(path, TEXTS_FILE)
  if payload.texts is not None:
    with open(texts_path + ".tmp", "w", encoding="utf-8") as f:
      for text in payload.texts:
        f.write(json.dumps(text, ensure_ascii=False) + "\n")
    os.replace(texts_path + ".tmp", texts_path)
  elif os.path.exists(texts_path):
    os.remove(texts_path)
  provenance = make_provenance(**payload.provenance)
  provenance.update(num_rows=payload.num_rows, vector_dim=payload.vector_dim)
  _atomic_write_text(os.path.join(path, PROVENANCE_FILE), json.dumps(provenance, indent=2))
  return path


def read_payload(path: str, *, expected_dim: Optional[int] = None, normalize: bool = False,
                 load_texts: bool = True) -> Payload:
  """Reads and validates a payload directory written by write_payload.

  normalize: re-normalise non-unit vectors once (logged) instead of raising.
  """
  path = str(path)
  if os.path.isfile(path) and path.endswith(".npy"):
    raise data_error(path, "(file)", "is a single .npy file, the reference's pickled payload "
                     "format, not this project's payload directory", "convert it once with "
                     "python -m lvm_jax.data.convert --src " + path + " --dst PAYLOAD_DIR "
                     "--trust_pickle (only for files you trust: loading runs pickle)")
  if not os.path.isdir(path):
    raise data_error(path, "(directory)", "does not exist or is not a directory",
                     "pass the payload directory written by write_payload / lvm_jax.data.convert")
  arrays = {}
  for field, name in PAYLOAD_FILES.items():
    arrays[field] = _load_npy(os.path.join(path, name), field, directory=path)
  texts = _read_texts(os.path.join(path, TEXTS_FILE)) if load_texts else None
  provenance_path = os.path.join(path, PROVENANCE_FILE)
  provenance = {}
  if os.path.exists(provenance_path):
    provenance = _parse_provenance_text(_read_text(provenance_path), provenance_path)
  else:
    logging.warning("%s: no %s; provenance unknown (write the payload with write_payload).",
                    path, PROVENANCE_FILE)
  payload = Payload(vectors=arrays["vectors"], article_index=arrays["article_index"],
                    chunk_index=arrays["chunk_index"], ids=arrays["ids"], texts=texts,
                    provenance=provenance, source=path)
  if payload.vectors.dtype != np.float32:
    raise data_error(os.path.join(path, PAYLOAD_FILES["vectors"]), "vectors",
                     f"has dtype {payload.vectors.dtype}, expected float32",
                     "rewrite the payload with write_payload")
  _check_payload_arrays(payload, path, normalize=normalize, expected_dim=expected_dim)
  payload.article_index = payload.article_index.astype(np.int64, copy=False)
  payload.chunk_index = payload.chunk_index.astype(np.int64, copy=False)
  payload.ids = payload.ids.astype(np.int64, copy=False)
  return payload


def read_reference_payload(path: str, *, trust_pickle: bool = False,
                           normalize: bool = False) -> Payload:
  """Reads the reference's `np.save`d dict {payload_id: (text, meta, vec)}.

  Loading it runs pickle, which can execute code: refused unless trust_pickle=True.
  meta must hold article_index and chunk_index; payload_id must be an integer.
  Rows come back sorted by (article, chunk).
  """
  if not trust_pickle:
    raise data_error(path, "(file)", "is a pickled object (the reference's payload format); "
                     "loading it would run pickle, which can execute arbitrary code",
                     "if you trust the file, pass trust_pickle=True (CLI: --trust_pickle) to "
                     "convert it once into this project's safe format "
                     "(python -m lvm_jax.data.convert)")
  _require_file(path, "(file)")
  try:
    loaded = np.load(path, allow_pickle=True)
  except Exception as error:  # numpy raises several types for non-.npy input
    raise data_error(path, "(file)", f"cannot be read as a .npy file ({error})",
                     "pass the reference payload saved with np.save") from error
  if isinstance(loaded, np.ndarray) and loaded.dtype == object and loaded.shape == ():
    loaded = loaded.item()
  if not isinstance(loaded, dict):
    raise data_error(path, "(file)", f"holds a {type(loaded).__name__}, expected a dict "
                     "{payload_id: (text, meta, vec)}", "pass the reference's payload file")
  if not loaded:
    raise data_error(path, "(file)", "holds an empty dict", "pass a non-empty payload")
  num_rows = len(loaded)
  first = next(iter(loaded.values()))
  dim = _reference_entry(path, next(iter(loaded)), first)[2].shape[0]
  vectors = np.empty((num_rows, dim), np.float32)
  article_index = np.empty(num_rows, np.int64)
  chunk_index = np.empty(num_rows, np.int64)
  ids = np.empty(num_rows, np.int64)
  texts = []
  progress_every = 10_000
  bar = ProgressBar(num_rows, f"reading {os.path.basename(path)}", unit="rows") \
      if num_rows > 10 * progress_every else None
  for row, (payload_id, entry) in enumerate(loaded.items()):
    if bar and (row + 1) % progress_every == 0:
      bar.update(progress_every)
    text, meta, vec = _reference_entry(path, payload_id, entry)
    if vec.shape != (dim,):
      raise data_error(path, f"[{payload_id!r}].vec", f"has shape {vec.shape}, but the first "
                       f"entry has ({dim},)", "re-embed so every vector has the same dimension")
    vectors[row] = vec
    article_index[row] = meta["article_index"]
    chunk_index[row] = meta["chunk_index"]
    ids[row] = payload_id
    texts.append(text)
  if bar:
    bar.close()
  with open(path, "rb") as f:
    source_hash = _sha256_of_stream(f)
  payload = Payload(vectors, article_index, chunk_index, ids, texts,
                    provenance=make_provenance(source=os.path.abspath(path),
                                               source_hash=source_hash,
                                               source_format="reference pickled dict"),
                    source=path)
  payload = sort_payload(payload)
  _check_payload_arrays(payload, path, normalize=normalize)
  return payload


def convert_reference_payload(src: str, dst: str, *, trust_pickle: bool,
                              embedder_id: str = "unknown", normalize: bool = False) -> Payload:
  """Reference pickled payload `src` -> this project's payload directory `dst`; returns it."""
  payload = read_reference_payload(src, trust_pickle=trust_pickle, normalize=normalize)
  payload.provenance["embedder_id"] = embedder_id
  write_payload(dst, payload)
  logging.info("Converted %s -> %s: %d rows x %d dims, %d articles", src, dst, payload.num_rows,
               payload.vector_dim, np.unique(payload.article_index).size)
  return payload


def _reference_entry(path, payload_id, entry) -> Tuple[str, Dict[str, Any], np.ndarray]:
  field = f"[{payload_id!r}]"
  if not isinstance(entry, (tuple, list)) or len(entry) != 3:
    raise data_error(path, field, "is not a (text, meta, vec) triple",
                     "pass the reference's payload dict {payload_id: (text, meta, vec)}")
  text, meta, vec = entry
  if not isinstance(payload_id, (int, np.integer)):
    raise data_error(path, field, f"payload_id {payload_id!r} is not an integer",
                     "re-key the dict with integer payload ids")
  if not isinstance(meta, dict) or "article_index" not in meta or "chunk_index" not in meta:
    raise data_error(path, field + ".meta", "lacks article_index or chunk_index",
                     "store meta['article_index'] and meta['chunk_index'] for every chunk")
  return ("" if text is None else str(text)), meta, np.asarray(vec, np.float32).reshape(-1)


# ----------------------------------------------------------------------------- sequence sets


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
  provenance = make_provenance(**sequence_set.provenance)
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
  _atomic_savez(path, truth_keys=keys, provenance=_provenance_array(provenance), **arrays,
                **scalars)
  return path


def read_sequence_set(path: str, *, payload: Optional[Payload] = None,
                      expected_dim: Optional[int] = None,
                      expected_context_length: Optional[int] = None,
                      expected_source: str = CONFIG_SOURCE,
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
  expected = _Expected(expected_dim, expected_context_length, expected_source)
  with _open_npz(path) as npz:
    if COMPACT_FIELD in npz.files:
      return _read_compact(path, npz, payload, expected)
    contexts_field = _first_present(npz, CONTEXT_FIELDS, path)
    targets_field = _first_present(npz, TARGET_FIELDS, path)
    windows = _read_windows(path, npz, contexts_field, targets_field, payload=payload,
                            expected=expected, normalize=normalize, check_targets=check_targets)
  contexts, targets, keys, provenance, target_ids = windows
  return SequenceSet(truth_keys=keys, provenance=provenance, context_sequences=contexts,
                     target_vectors=targets, payload=payload, target_ids=target_ids, source=path)


def _read_compact(path, npz, payload, expected: "_Expected") -> SequenceSet:
  if payload is None:
    raise data_error(path, COMPACT_FIELD, "is the compact form (payload row indices) and needs "
                     "the payload it indexes", "pass the payload (config.data.payload_path, "
                     "--payload, or read_sequence_set(..., payload=read_payload(DIR)))")
  rows = _load_field(npz, COMPACT_FIELD, path)
  validate.check_ndim(rows, 2, path=path, field=COMPACT_FIELD, layout="[N, L+1]")
  validate.check_integer(rows, path=path, field=COMPACT_FIELD)
  keys = _load_field(npz, "truth_keys", path)
  validate.check_ndim(keys, 2, path=path, field="truth_keys", layout="[N, 2]")
  provenance = _read_npz_provenance(npz, path)
  count = validate.check_same_count({COMPACT_FIELD: rows.shape[0], "truth_keys": keys.shape[0]},
                                    path=path)
  validate.check_not_empty(rows, path=path, field=COMPACT_FIELD)
  if rows.shape[1] < 2:
    raise data_error(path, COMPACT_FIELD, f"has {rows.shape[1]} columns; needs L context rows "
                     "and 1 target row", f"rebuild the file ({BUILD_HINT})")
  stored_fingerprint = provenance.get("payload_fingerprint")
  actual_fingerprint = payload_fingerprint(payload)
  if stored_fingerprint and stored_fingerprint != actual_fingerprint:
    raise data_error(path, "provenance.payload_fingerprint", f"is {stored_fingerprint} but the "
                     f"payload {payload.source} has {actual_fingerprint}: the rows index a "
                     f"different payload (built from {provenance.get('payload_path', '?')})",
                     "pass the payload the file was built from, or rebuild the file from this "
                     f"payload ({BUILD_HINT})")
  context_length = rows.shape[1] - 1
  _check_scalars(npz, path, count, context_length, payload.vector_dim)
  expected.check(path, COMPACT_FIELD, context_length, payload.vector_dim)
  validate.check_rows_in_range(rows, payload.num_rows, path=path, field=COMPACT_FIELD,
                               payload_path=payload.source)
  validate.check_windows_consecutive(rows, payload.article_index, payload.chunk_index, path=path,
                                     field=COMPACT_FIELD)
  target_rows = rows[:, -1]
  if not (np.array_equal(payload.article_index[target_rows], keys[:, 0]) and
          np.array_equal(payload.chunk_index[target_rows], keys[:, 1])):
    raise data_error(path, "truth_keys", "do not match the payload keys of the target rows "
                     f"(last column of {COMPACT_FIELD})", f"rebuild the file ({BUILD_HINT})")
  return SequenceSet(truth_keys=keys.astype(np.int64, copy=False), provenance=provenance,
                     payload_rows=rows.astype(np.int32, copy=False), payload=payload, source=path)


# ----------------------------------------------------------------------------- eval sets


@dataclasses.dataclass
class EvalSet:
  """Held-out windows for retrieval: contexts [N, L, dim], targets [N, dim], truth_keys [N, 2]."""
  contexts: np.ndarray
  targets: np.ndarray
  truth_keys: np.ndarray
  provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)
  source: str = "<eval set in memory>"

  @property
  def num_sequences(self) -> int:
    return int(self.truth_keys.shape[0])

  @property
  def context_length(self) -> int:
    return int(self.contexts.shape[1])

  @property
  def vector_dim(self) -> int:
    return int(self.contexts.shape[2])

  def target_rows(self, payload: Payload) -> np.ndarray:
    """[N] payload rows (= FAISS ids) of the targets; raises if a key is absent."""
    return payload_rows_for_keys(payload, self.truth_keys, source=self.source)


def write_eval_set(path: str, eval_set: EvalSet) -> str:
  provenance = make_provenance(**eval_set.provenance)
  _atomic_savez(path, contexts=np.asarray(eval_set.contexts, np.float32),
                targets=np.asarray(eval_set.targets, np.float32),
                truth_keys=np.asarray(eval_set.truth_keys, np.int64),
                provenance=_provenance_array(provenance),
                context_length=np.int64(eval_set.context_length),
                num_sequences=np.int64(eval_set.num_sequences),
                vector_dim=np.int64(eval_set.vector_dim))
  return path


def read_eval_set(path: str, *, payload: Optional[Payload] = None,
                  expected_dim: Optional[int] = None,
                  expected_context_length: Optional[int] = None,
                  expected_source: str = CONFIG_SOURCE, normalize: bool = False) -> EvalSet:
  """Reads and validates an eval NPZ; with a payload, keys must exist and targets match."""
  path = str(path)
  expected = _Expected(expected_dim, expected_context_length, expected_source)
  with _open_npz(path) as npz:
    contexts_field = _first_present(npz, EVAL_CONTEXT_FIELDS, path)
    targets_field = _first_present(npz, EVAL_TARGET_FIELDS, path)
    contexts, targets, keys, provenance, _ = _read_windows(
        path, npz, contexts_field, targets_field, payload=payload, expected=expected,
        normalize=normalize, check_targets=True)
  return EvalSet(contexts=contexts, targets=targets, truth_keys=keys, provenance=provenance,
                 source=path)


# ----------------------------------------------------------------------------- shared readers


@dataclasses.dataclass(frozen=True)
class _Expected:
  """What the caller expects of a set's shape, and where that expectation comes from."""
  dim: Optional[int]
  context_length: Optional[int]
  source: str

  def check(self, path, field: str, context_length: int, dim: int) -> None:
    from_config = self.source == CONFIG_SOURCE
    validate.check_context_length(
        context_length, self.context_length, path=path, field=field,
        expected_from="config.data.context_length" if from_config else self.source)
    validate.check_dim(
        dim, self.dim, path=path, field=field,
        expected_from="config.data.vector_dim" if from_config else self.source,
        fix=("set config.data.vector_dim to 0 (take it from the data) or to the file's "
             "dimension, or use files from the expected embedder") if from_config else
        f"use sets built from one payload and embedder ({BUILD_HINT} writes them together)")


def _read_windows(path, npz, contexts_field, targets_field, *, payload, expected: _Expected,
                  normalize, check_targets):
  """Validated (contexts, targets, truth_keys, provenance, target_ids-or-None) of a full NPZ."""
  contexts = _load_field(npz, contexts_field, path)
  targets = _load_field(npz, targets_field, path)
  keys = _load_field(npz, "truth_keys", path)
  provenance = _read_npz_provenance(npz, path)
  validate.check_ndim(contexts, 3, path=path, field=contexts_field, layout="[N, L, dim]")
  validate.check_ndim(targets, 2, path=path, field=targets_field, layout="[N, dim]")
  validate.check_ndim(keys, 2, path=path, field="truth_keys",
                      layout="[N, 2] (article_index, chunk_index)")
  if keys.shape[1] != 2:
    raise data_error(path, "truth_keys", f"has shape {tuple(keys.shape)}, expected [N, 2] "
                     "(article_index, chunk_index)", f"rebuild the file ({BUILD_HINT})")
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
                     f"{contexts_field} has {dim}", f"rebuild the file ({BUILD_HINT})")
  _check_scalars(npz, path, count, contexts.shape[1], dim)
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


def _check_scalars(npz, path, count: int, context_length: int, dim: int) -> None:
  for field, actual in (("num_sequences", count), ("context_length", context_length),
                        ("vector_dim", dim)):
    if field in npz.files:
      stored = _load_field(npz, field, path)
      if stored.size != 1:
        raise data_error(path, field, f"has shape {tuple(stored.shape)}, expected a scalar",
                         f"rebuild the file ({BUILD_HINT})")
      validate.check_stored_scalar(stored.reshape(-1)[0], actual, path=path, field=field)


def _first_present(npz, names, path) -> str:
  for name in names:
    if name in npz.files:
      return name
  also = f" (or the older name {', '.join(names[1:])})" if len(names) > 1 else ""
  raise data_error(path, names[0], f"is missing{also}; the file has {sorted(npz.files)}",
                   f"pass a file written by this project or the reference ({BUILD_HINT})")


def _load_field(npz, field: str, path) -> np.ndarray:
  if field not in npz.files:
    raise data_error(path, field, f"is missing; the file has {sorted(npz.files)}",
                     f"rebuild the file ({BUILD_HINT})")
  try:
    return npz[field]
  except ValueError as error:  # object arrays need pickle, which we never run here
    raise data_error(path, field, f"cannot be loaded without pickle ({error})",
                     "store plain numeric arrays (and provenance as a JSON string)") from error


def _read_npz_provenance(npz, path) -> Dict[str, Any]:
  if "provenance" not in npz.files:
    logging.warning("%s: no 'provenance' field; where these vectors came from is unknown.", path)
    return {}
  array = _load_field(npz, "provenance", path)
  if array.dtype.kind not in "US" or array.size != 1:
    raise data_error(path, "provenance", f"has dtype {array.dtype} and shape "
                     f"{tuple(array.shape)}, expected a JSON string in a 1-element array",
                     "store np.array([json.dumps(provenance)])")
  text = array.reshape(-1)[0]
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  return _parse_provenance_text(text, path)


def _parse_provenance_text(text: str, path) -> Dict[str, Any]:
  try:
    parsed = json.loads(text)
  except json.JSONDecodeError as error:
    raise data_error(path, "provenance", f"is not valid JSON ({error})",
                     "store provenance as json.dumps(dict)") from error
  if not isinstance(parsed, dict):
    raise data_error(path, "provenance", f"is JSON {type(parsed).__name__}, expected an object",
                     "store provenance as json.dumps(dict)")
  return parsed


def _provenance_array(provenance: Dict[str, Any]) -> np.ndarray:
  return np.array([json.dumps(provenance, sort_keys=True)])


def _require_file(path, field: str) -> None:
  if not os.path.exists(path):
    raise data_error(path, field, "does not exist", "check the path (see the data flags / "
                     "config.data.*_path), or build the files with " + BUILD_HINT)
  if os.path.getsize(path) == 0:
    raise data_error(path, field, "is an empty file (0 bytes)", "rewrite it; the writer was "
                     "probably interrupted")


class _NpzHandle:
  """np.load's NpzFile as a context manager with readable errors for bad archives."""

  def __init__(self, path):
    self.npz = np.load(path, allow_pickle=False)

  def __enter__(self):
    return self.npz

  def __exit__(self, *exc):
    self.npz.close()


def _open_npz(path):
  _require_file(path, "(file)")
  try:
    handle = _NpzHandle(path)
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
    raise data_error(path, "(file)", f"is not a readable NPZ archive ({error})",
                     "pass an .npz written by np.savez or this project's writers") from error
  if not hasattr(handle.npz, "files"):
    raise data_error(path, "(file)", "is a single .npy array, not an NPZ archive of named fields",
                     f"pass an .npz ({BUILD_HINT})")
  return handle


def _load_npy(path, field, *, directory) -> np.ndarray:
  if not os.path.exists(path):
    raise data_error(directory, field, f"file {os.path.basename(path)} is missing",
                     "rewrite the payload with write_payload or lvm_jax.data.convert")
  _require_file(path, field)
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as error:
    raise data_error(path, field, f"cannot be read as a plain .npy array ({error})",
                     "rewrite the payload with write_payload") from error


def _read_texts(path) -> Optional[List[str]]:
  if not os.path.exists(path):
    return None
  texts = []
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, 1):
      try:
        texts.append(json.loads(line))
      except json.JSONDecodeError as error:
        raise data_error(path, "texts", f"line {line_number} is not a JSON string ({error})",
                         "rewrite the payload with write_payload") from error
  return texts


def _read_text(path) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def _atomic_write_text(path, text: str) -> None:
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


def _atomic_save_npy(path, array: np.ndarray) -> None:
  with open(path + ".tmp", "wb") as f:
    np.save(f, array, allow_pickle=False)
  os.replace(path + ".tmp", path)


def _atomic_savez(path, **arrays) -> None:
  """np.savez through a temporary file, so readers never see half an archive."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    np.savez(f, **arrays)
  os.replace(path + ".tmp", path)


def _sha256_of_stream(stream, block_bytes: int = 1 << 22) -> str:
  digest = hashlib.sha256()
  for block in iter(lambda: stream.read(block_bytes), b""):
    digest.update(block)
  return digest.hexdigest()
