"""The payload: the corpus every retrieval searches, as a safe directory.

  vectors.npy [M, dim] float32 unit-norm, article_index.npy / chunk_index.npy /
  ids.npy [M] int64, texts.jsonl (optional, one JSON string per row, UTF-8),
  provenance.json (embedder_id, norm, metric, created_at, source_hash...).
Rows are sorted by (article_index, chunk_index); FAISS ids are row numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
from absl import logging

from lvm_jax import atomic
from lvm_jax.data import file_io, validate
from lvm_jax.data.errors import data_error

PAYLOAD_FILES = {"vectors": "vectors.npy", "article_index": "article_index.npy",
                 "chunk_index": "chunk_index.npy", "ids": "ids.npy"}
TEXTS_FILE = "texts.jsonl"
PROVENANCE_FILE = "provenance.json"
KEY_STRIDE = validate.MAX_CHUNK_INDEX  # packed key = article_index * KEY_STRIDE + chunk_index


def pack_keys(article_index: np.ndarray, chunk_index: np.ndarray) -> np.ndarray:
  """(article, chunk) -> one int64 per key, ordered like (article, chunk); consecutive chunks of
  an article get consecutive values, which the loss relies on for its position offsets."""
  return np.asarray(article_index, np.int64) * KEY_STRIDE + np.asarray(chunk_index, np.int64)



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
                     f"({file_io.BUILD_HINT})")
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


def check_payload_arrays(payload: Payload, path, *, normalize: bool,
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


def write_payload(path: str, payload: Payload, *, vectors_written: bool = False) -> str:
  """Writes the directory layout above (creating `path`); returns `path`.

  The payload must already be valid (sorted, unit-norm, finite): writers never fix data.
  vectors_written: PATH/vectors.npy was already written (and its values checked) piece by
  piece, and payload.vectors is that file memory-mapped; it is neither reread nor rewritten,
  so a payload larger than memory can be finished (corpus.ingest does this).
  """
  check_payload_arrays(payload, path, normalize=False, check_values=not vectors_written)
  os.makedirs(path, exist_ok=True)
  arrays = {"vectors": None if vectors_written else
            np.ascontiguousarray(payload.vectors, np.float32),
            "article_index": np.asarray(payload.article_index, np.int64),
            "chunk_index": np.asarray(payload.chunk_index, np.int64),
            "ids": np.asarray(payload.ids, np.int64)}
  for field, name in PAYLOAD_FILES.items():
    if arrays[field] is not None:
      atomic.save_npy(os.path.join(path, name), arrays[field])
  texts_path = os.path.join(path, TEXTS_FILE)
  if payload.texts is not None:
    with atomic.atomic_open(texts_path, "w") as f:
      for text in payload.texts:
        f.write(json.dumps(text, ensure_ascii=False) + "\n")
  elif os.path.exists(texts_path):
    os.remove(texts_path)
  provenance = file_io.make_provenance(**payload.provenance)
  provenance.update(num_rows=payload.num_rows, vector_dim=payload.vector_dim)
  atomic.write_text(os.path.join(path, PROVENANCE_FILE), json.dumps(provenance, indent=2))
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
                     "python -m lvm_jax.corpus.legacy --src " + path + " --dst PAYLOAD_DIR "
                     "--trust_pickle (only for files you trust: loading runs pickle)")
  if not os.path.isdir(path):
    raise data_error(path, "(directory)", "does not exist or is not a directory",
                     "pass the payload directory written by write_payload / lvm_jax.corpus.legacy")
  arrays = {}
  for field, name in PAYLOAD_FILES.items():
    arrays[field] = file_io.load_npy(os.path.join(path, name), field, directory=path)
  texts = _read_texts(os.path.join(path, TEXTS_FILE)) if load_texts else None
  provenance_path = os.path.join(path, PROVENANCE_FILE)
  provenance = {}
  if os.path.exists(provenance_path):
    provenance = file_io.parse_provenance_text(file_io.read_text(provenance_path), provenance_path)
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
  check_payload_arrays(payload, path, normalize=normalize, expected_dim=expected_dim)
  payload.article_index = payload.article_index.astype(np.int64, copy=False)
  payload.chunk_index = payload.chunk_index.astype(np.int64, copy=False)
  payload.ids = payload.ids.astype(np.int64, copy=False)
  return payload



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

