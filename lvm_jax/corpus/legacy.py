"""The reference's pickled payload (`np.save`d dict {payload_id: (text, meta, vec)}): read,
and converted once into this project's safe payload directory.

  python -m lvm_jax.corpus.legacy --src reference_payload.npy --dst PAYLOAD_DIR --trust_pickle \
      [--embedder_id gtr-t5-base | --provenance_from reference_train.npz] [--normalize]

Reading it runs pickle (arbitrary code), so only behind --trust_pickle, for files
you trust. Everything after this step reads plain arrays.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
from absl import flags, logging
from tqdm import tqdm

from lvm_jax import cli
from lvm_jax.data import file_io
from lvm_jax.data.errors import data_error
from lvm_jax.data.payload import Payload, check_payload_arrays, sort_payload, write_payload

LARGE_PAYLOAD_ROWS = 100_000  # a progress bar from this size on


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
                     "(python -m lvm_jax.corpus.legacy)")
  file_io.require_file(path, "(file)", missing_fix="pass the reference's payload .npy (--src)")
  with open(path, "rb") as f:
    if f.read(len(file_io.NPY_MAGIC)) != file_io.NPY_MAGIC:
      raise data_error(path, "(file)", "is not a .npy file (the reference saves its payload with "
                       f"np.save): it holds {file_io.describe_content(path)}",
                       "pass the reference's payload .npy (--src)")
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
  entries = tqdm(loaded.items(), total=num_rows, desc=f"reading {os.path.basename(path)}",
                 unit="rows", disable=num_rows < LARGE_PAYLOAD_ROWS)
  for row, (payload_id, entry) in enumerate(entries):
    text, meta, vec = _reference_entry(path, payload_id, entry)
    if vec.shape != (dim,):
      raise data_error(path, f"[{payload_id!r}].vec", f"has shape {vec.shape}, but the first "
                       f"entry has ({dim},)", "re-embed so every vector has the same dimension")
    vectors[row] = vec
    article_index[row] = meta["article_index"]
    chunk_index[row] = meta["chunk_index"]
    ids[row] = payload_id
    texts.append(text)
  with open(path, "rb") as f:
    source_hash = file_io.sha256_of_stream(f)
  payload = Payload(vectors, article_index, chunk_index, ids, texts,
                    provenance=file_io.make_provenance(source=os.path.abspath(path),
                                               source_hash=source_hash,
                                               source_format="reference pickled dict"),
                    source=path)
  payload = sort_payload(payload)
  check_payload_arrays(payload, path, normalize=normalize)
  return payload


def convert_reference_payload(src: str, dst: str, *, trust_pickle: bool,
                              embedder_id: Optional[str] = None, normalize: bool = False,
                              provenance_from: Optional[str] = None) -> Payload:
  """Reference pickled payload `src` -> this project's payload directory `dst`; returns it.

  The pickled payload records no provenance; the NPZ files the reference built from it
  do (its tools/build_payload_aligned_training.py writes embedder_id, norm "l2_once",
  metric "ip"). `provenance_from` names one of them: its fields are carried over, so the
  converted payload and the reference's own sets agree. `embedder_id` overrides.
  """
  payload = read_reference_payload(src, trust_pickle=trust_pickle, normalize=normalize)
  if provenance_from:
    with file_io.open_npz(provenance_from) as npz:
      carried = file_io.read_npz_provenance(npz, provenance_from)
    payload.provenance.update({k: v for k, v in carried.items() if k not in ("created_at",)})
    payload.provenance["provenance_from"] = os.path.abspath(provenance_from)
  if embedder_id:
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


def define_flags() -> None:
  flags.DEFINE_string("src", None, "The reference's pickled payload (.npy).", required=True)
  flags.DEFINE_string("dst", None, "Output payload directory.", required=True)
  flags.DEFINE_bool("trust_pickle", False, "Allow unpickling --src (it can run code).")
  flags.DEFINE_string("embedder_id", None, "Recorded in the provenance, e.g. gtr-t5-base "
                      "(default: from --provenance_from, else 'unknown').")
  flags.DEFINE_string("provenance_from", None, "An NPZ the reference built from this payload "
                      "(train/val/eval): its provenance (embedder_id, norm, metric, ...) is "
                      "carried over.")
  flags.DEFINE_bool("normalize", False, "Re-normalise non-unit vectors (logged) instead of "
                    "failing.")


@cli.exits_cleanly_on_user_errors
def main(argv) -> None:
  del argv
  args = flags.FLAGS
  payload = convert_reference_payload(args.src, args.dst, trust_pickle=args.trust_pickle,
                                      embedder_id=args.embedder_id, normalize=args.normalize,
                                      provenance_from=args.provenance_from)
  print(json.dumps({"payload": args.dst, "rows": payload.num_rows, "dim": payload.vector_dim}))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
