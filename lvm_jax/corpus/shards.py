"""An ingest's embedding shards: embedded (or reused) one at a time, then concatenated.

The ingest's chunk list is fixed by its plan; its vectors are written as shards of
--shard_size chunks under OUT/.ingest, each replaced atomically, so a killed run loses at
most one shard. The last step streams them into OUT/vectors.npy one at a time, so a corpus
larger than memory still finishes.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from lvm_jax import atomic
from lvm_jax.data import validate
from lvm_jax.data.errors import data_error
from lvm_jax.data.payload import PAYLOAD_FILES, PROVENANCE_FILE, TEXTS_FILE, read_payload

WORK_DIR = ".ingest"  # inside OUT: the plan and the embedding shards

# One shard's chunks -> [n, dim] float32 unit rows. The encoder batches them itself: given
# the whole shard, sentence-transformers groups chunks of similar length, padding less.
Encoder = Callable[[List[str]], np.ndarray]


def shard_path(out: str, shard: int) -> str:
  return os.path.join(out, WORK_DIR, f"shard_{shard:05d}.npy")


def remove_shards(work_dir: str) -> None:
  """Shards and half-written shard temporaries (a kill during a save leaves one)."""
  for name in os.listdir(work_dir):
    if name.startswith("shard_"):
      os.remove(os.path.join(work_dir, name))


def load_shard(out: str, shard: int) -> np.ndarray:
  return np.load(shard_path(out, shard), allow_pickle=False)


def write_vectors(out: str, num_shards: int, num_rows: int) -> np.ndarray:
  """Shards -> OUT/vectors.npy, one shard in memory at a time; returns the file memory-mapped.

  The bytes equal np.save of the shards' concatenation, but a corpus larger than memory
  still finishes: only the header needs the total, and the rows are appended in order.
  """
  work_dir = os.path.join(out, WORK_DIR)
  first = load_shard(out, 0)
  header = np.lib.format.header_data_from_array_1_0(first)
  header["shape"] = (num_rows,) + first.shape[1:]
  written = 0
  with atomic.atomic_open(os.path.join(out, PAYLOAD_FILES["vectors"]), "wb") as f:
    np.lib.format.write_array_header_1_0(f, header)
    for shard in range(num_shards):
      vectors = first if shard == 0 else load_shard(out, shard)  # [shard_size, dim]
      first = None  # the first shard is not kept alive past its turn
      if vectors.dtype != np.float32 or vectors.shape[1:] != tuple(header["shape"][1:]):
        raise data_error(shard_path(out, shard), "vectors", f"has dtype {vectors.dtype} and "
                         f"shape {vectors.shape}, unlike shard 0", "rerun with --overwrite")
      validate.check_finite(vectors, path=shard_path(out, shard), field="vectors")
      validate.check_unit_norm(vectors, path=shard_path(out, shard), field="vectors",
                               normalize=False)
      written += vectors.shape[0]
      f.write(np.ascontiguousarray(vectors).tobytes())
      del vectors
    if written != num_rows:
      raise data_error(work_dir, "shards", f"hold {written} vectors for {num_rows} chunks",
                       "rerun with --overwrite to start the ingest afresh")
  return np.load(os.path.join(out, PAYLOAD_FILES["vectors"]), mmap_mode="r")


def load_reusable(payload_dirs: Sequence[str], embedder_id: str) -> Dict[str, np.ndarray]:
  """{chunk text: its vector [dim]} from payloads embedded by `embedder_id` (--reuse).

  Another model's vectors live in another space, so a payload of another embedder (or of
  none recorded) is refused rather than mixed in. A text in several payloads keeps the first.
  """
  reusable, dim = {}, None
  for path in payload_dirs:
    payload = read_payload(path)
    found = payload.provenance.get("embedder_id")
    if found != embedder_id:
      raise data_error(os.path.join(path, PROVENANCE_FILE), "embedder_id", f"is {found!r}, but "
                       f"this ingest embeds with {embedder_id!r}; vectors of another model "
                       "cannot be mixed in", "pass --reuse payloads made with the same "
                       "--model (and --embedder_id), or drop them")
    if payload.texts is None:
      raise data_error(path, TEXTS_FILE, "is missing, so its vectors cannot be matched to "
                       "chunks by text", "pass a payload written by lvm_jax.corpus.ingest")
    if dim is not None and payload.vectors.shape[1] != dim:
      raise data_error(path, "vectors", f"are {payload.vectors.shape[1]}-d, unlike the "
                       f"{dim}-d of {payload_dirs[0]}", "pass payloads of one model")
    dim = payload.vectors.shape[1]
    for text, vector in zip(payload.texts, payload.vectors):
      reusable.setdefault(text, vector)
  return reusable


def embed_shard(shard_texts: List[str], reusable: Dict[str, np.ndarray],
                 encoder: Callable[[], Encoder], shard_path: str) -> Tuple[np.ndarray, int]:
  """(one shard's vectors, how many were encoded): reused where the text was embedded before,
  the rest encoded."""
  new = [i for i, text in enumerate(shard_texts) if text not in reusable]
  encoded = encoder()([shard_texts[i] for i in new]) if new else None  # [len(new), dim]
  if len(new) == len(shard_texts):
    return encoded, len(new)
  dim = next(iter(reusable.values())).shape[0]
  if encoded is not None and encoded.shape[1] != dim:
    raise data_error(shard_path, "vectors", f"the model embeds to {encoded.shape[1]} "
                     f"dimensions but the --reuse payloads hold {dim}", "pass --reuse "
                     "payloads made with the same --model")
  vectors = np.empty((len(shard_texts), dim), np.float32)
  for i, text in enumerate(shard_texts):
    if text in reusable:
      vectors[i] = reusable[text]
  if new:
    vectors[new] = encoded
  return vectors, len(new)


def embed_missing_shards(out: str, texts: List[str], shard_size: int,
                          make_encoder: Callable[[], Encoder],
                          reusable: Optional[Dict[str, np.ndarray]] = None):
  """Embeds and saves every shard not on disk yet; returns (chunks embedded, chunks reused,
  seconds).

  The encoder is made only when a chunk needs it, so finishing a finished run, or one whose
  every chunk is reused, needs no model.
  """
  num_shards = -(-len(texts) // shard_size)
  missing = [s for s in range(num_shards) if not os.path.exists(shard_path(out, s))]
  if not missing:
    return 0, 0, 0.0
  reusable = reusable or {}
  encoders = []

  def encoder() -> Encoder:
    if not encoders:
      encoders.append(make_encoder())
    return encoders[0]

  bar = tqdm(total=sum(len(texts[s * shard_size:(s + 1) * shard_size]) for s in missing),
             desc=f"embed {len(missing)}/{num_shards} shards", unit="chunks", mininterval=1.0)
  start, embedded, reused = time.perf_counter(), 0, 0
  for shard in missing:
    shard_texts = texts[shard * shard_size:(shard + 1) * shard_size]
    vectors, encoded = embed_shard(shard_texts, reusable, encoder, shard_path(out, shard))
    atomic.save_npy(shard_path(out, shard), vectors)
    embedded += encoded
    reused += len(shard_texts) - encoded
    bar.update(len(shard_texts))
  bar.close()
  return embedded, reused, time.perf_counter() - start
