"""Payload -> article-disjoint train / val / eval windows and manifest.

  python -m lvm_jax.corpus.build --payload DATA/payload --out DATA \
      [--context_length 5] [--min_article_chunks 10] [--split_ratios 0.8,0.1,0.1] \
      [--seed 0] [--forms full,compact]
  python -m lvm_jax.eval.build_index --payload DATA/payload --out DATA/payload.faiss

The FAISS index over the payload is retrieval's (the second command, or built
on first use by the evaluators: retrieval.index.choose_index_kind).

A window is `context_length` consecutive chunks of one article followed by
the next chunk as target; a gap in chunk_index ends a run. Only articles with
at least `min_article_chunks` chunks contribute. Articles, not windows, are
split: the reference split windows at random, so val shared articles with
train and its val cosine (0.57) said nothing about unseen articles (0.22).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from absl import app, flags, logging

from lvm_jax import atomic, cli
from lvm_jax.data.errors import data_error
from lvm_jax.data.eval_sets import EvalSet, write_eval_set
from lvm_jax.data.file_io import FORMAT_VERSION
from lvm_jax.corpus.legacy import convert_reference_payload
from lvm_jax.data.payload import Payload, payload_fingerprint, read_payload, write_payload
from lvm_jax.data.sequences import SequenceSet, write_sequence_set

DEFAULT_CONTEXT_LENGTH = 5
DEFAULT_MIN_ARTICLE_CHUNKS = 10
SPLITS = ("train", "val", "eval")
DEFAULT_SPLIT_RATIOS = (0.8, 0.1, 0.1)  # train, val, eval
FORMS = ("full", "compact")
MANIFEST_FILE = "manifest.json"


def output_file(split: str, form: str) -> str:
  """train.npz / train_rows.npz, ...: the one naming rule for the sets a build writes."""
  return f"{split}.npz" if form == "full" else f"{split}_rows.npz"


def window_rows(article_index: np.ndarray, chunk_index: np.ndarray, *,
                context_length: int = DEFAULT_CONTEXT_LENGTH,
                min_article_chunks: int = DEFAULT_MIN_ARTICLE_CHUNKS) -> np.ndarray:
  """Sorted payload keys [M] -> windows [N, L+1] int32 of payload rows (last = target).

  Windows never cross an article or a gap in chunk_index; articles with fewer
  than `min_article_chunks` rows give none. Rows are ordered by first row.
  """
  if context_length < 1:
    raise ValueError(f"context_length={context_length} must be >= 1 (--context_length).")
  num_rows = article_index.shape[0]
  span = context_length + 1
  if num_rows < span:
    return np.zeros((0, span), np.int32)
  follows = (article_index[1:] == article_index[:-1]) & (chunk_index[1:] == chunk_index[:-1] + 1)
  links_before = np.concatenate([[0], np.cumsum(follows, dtype=np.int64)])  # [M]
  starts = np.arange(num_rows - context_length, dtype=np.int64)
  unbroken = links_before[starts + context_length] - links_before[starts] == context_length
  _, counts = np.unique(article_index, return_counts=True)
  chunks_in_article = np.repeat(counts, counts)  # [M], rows are grouped by article
  long_enough = chunks_in_article[starts] >= min_article_chunks
  starts = starts[unbroken & long_enough]
  if num_rows >= np.iinfo(np.int32).max:
    raise ValueError(f"{num_rows} payload rows do not fit int32 row indices.")
  return (starts[:, None] + np.arange(span)[None, :]).astype(np.int32)


def split_articles(article_ids: np.ndarray, ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS,
                   seed: int = 0) -> Dict[str, np.ndarray]:
  """Unique article ids -> {"train", "val", "eval": sorted ids}, disjoint, sizes by ratio.

  Sizes use largest remainders so they sum to the number of articles; a split
  with a positive ratio always gets at least one article (or this raises).
  """
  ratios = np.asarray(ratios, np.float64)
  if ratios.shape != (len(SPLITS),) or (ratios < 0).any() or ratios.sum() <= 0:
    raise ValueError(f"split ratios {ratios.tolist()} must be {len(SPLITS)} non-negative "
                     "numbers (train, val, eval) with a positive sum (--split_ratios).")
  ratios = ratios / ratios.sum()
  article_ids = np.unique(article_ids)
  count = article_ids.shape[0]
  wanted = ratios * count
  sizes = np.floor(wanted).astype(np.int64)
  for index in np.argsort(-(wanted - sizes), kind="stable")[:count - sizes.sum()]:
    sizes[index] += 1
  for index in np.flatnonzero((ratios > 0) & (sizes == 0)):  # take one from the largest split
    donor = int(np.argmax(sizes))
    if sizes[donor] <= 1:
      raise ValueError(f"{count} articles cannot fill splits with ratios {ratios.tolist()}; "
                       "use a larger payload or set the empty splits' ratios to 0.")
    sizes[donor] -= 1
    sizes[index] += 1
  shuffled = np.random.default_rng(seed).permutation(article_ids)
  bounds = np.concatenate([[0], np.cumsum(sizes)])
  return {name: np.sort(shuffled[bounds[i]:bounds[i + 1]]) for i, name in enumerate(SPLITS)}


def build_splits(payload: Payload, *, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 min_article_chunks: int = DEFAULT_MIN_ARTICLE_CHUNKS,
                 split_ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS, seed: int = 0
                 ) -> Tuple[Dict[str, SequenceSet], Dict]:
  """Compact SequenceSets per split (empty splits left out) and the manifest's split record."""
  rows = window_rows(payload.article_index, payload.chunk_index, context_length=context_length,
                     min_article_chunks=min_article_chunks)
  if rows.shape[0] == 0:
    raise data_error(payload.source, "article_index/chunk_index", "gives no window of "
                     f"{context_length} consecutive chunks plus a target in any article with >= "
                     f"{min_article_chunks} chunks", "lower --context_length or "
                     "--min_article_chunks, or use a payload with longer articles")
  window_articles = payload.article_index[rows[:, 0]]
  # The split is drawn over the articles long enough to count, not over those that give
  # a window at this context length: builds at different context lengths then put each
  # article in the same split, so one's train never holds another's val or eval.
  ids, counts = np.unique(payload.article_index, return_counts=True)
  splits = split_articles(ids[counts >= min_article_chunks], split_ratios, seed)
  all_articles = np.unique(payload.article_index)
  record = {"context_length": context_length, "min_article_chunks": min_article_chunks,
            "split_ratios": dict(zip(SPLITS, map(float, split_ratios))), "seed": seed,
            "num_articles": int(all_articles.shape[0]),
            "articles_without_windows": int(all_articles.shape[0] -
                                            np.unique(window_articles).shape[0]),
            "splits": {}}
  sets = {}
  for name, articles in splits.items():
    split_rows = rows[np.isin(window_articles, articles)]
    articles = np.intersect1d(articles, window_articles)  # those that give a window
    record["splits"][name] = {"num_articles": int(articles.shape[0]),
                              "num_sequences": int(split_rows.shape[0]),
                              "articles": [int(a) for a in articles]}
    if split_rows.shape[0] == 0:
      continue
    target_rows = split_rows[:, -1]
    keys = np.stack([payload.article_index[target_rows], payload.chunk_index[target_rows]], 1)
    provenance = dict(payload.provenance, split=name, context_length=context_length,
                      payload_fingerprint=payload_fingerprint(payload),
                      payload_path=os.path.abspath(payload.source),
                      payload_created_at=payload.provenance.get("created_at"))
    provenance.pop("created_at", None)  # the writer stamps the set's own time
    sets[name] = SequenceSet(truth_keys=keys, provenance=provenance, payload_rows=split_rows,
                             payload=payload, source=f"<{name} split of {payload.source}>")
  logging.info("Windows of %d+1 over %s: %s; %d of %d articles give no window.", context_length,
               payload.source, ", ".join(f"{n} {s.num_sequences} sequences / "
                                         f"{record['splits'][n]['num_articles']} articles"
                                         for n, s in sets.items()),
               record["articles_without_windows"], record["num_articles"])
  return sets, record


def write_sets(out_dir: str, sets: Mapping[str, SequenceSet],
               forms: Sequence[str] = FORMS) -> Dict[str, str]:
  """Writes each split in each form; returns {key: path}.

  eval is always written in full form too, as an EvalSet (eval tools read that
  form, and at a tenth of the articles it is small).
  """
  unknown = set(forms) - set(FORMS)
  if unknown or not forms:
    raise ValueError(f"forms {list(forms)} must be a non-empty subset of {FORMS} (--forms).")
  paths = {}
  for name, sequence_set in sets.items():
    if "compact" in forms:
      path = os.path.join(out_dir, output_file(name, "compact"))
      paths[f"{name}_rows"] = write_sequence_set(path, sequence_set)
    if "full" in forms or name == "eval":
      path = os.path.join(out_dir, output_file(name, "full"))
      full = sequence_set.materialized()
      if name == "eval":
        write_eval_set(path, EvalSet(full.context_sequences, full.target_vectors,
                                             full.truth_keys, full.provenance))
      else:
        write_sequence_set(path, full)
      paths[name] = path
      del full
  return paths


def build_dataset(payload, out_dir: str, *, context_length: int = DEFAULT_CONTEXT_LENGTH,
                  min_article_chunks: int = DEFAULT_MIN_ARTICLE_CHUNKS,
                  split_ratios: Sequence[float] = DEFAULT_SPLIT_RATIOS, seed: int = 0,
                  forms: Sequence[str] = FORMS, extra_manifest: Optional[Dict] = None
                  ) -> Dict[str, str]:
  """Payload (a Payload or its directory) -> sets and manifest in `out_dir`.

  Returns {"train", "train_rows", "val", ..., "manifest", "payload": path}. The
  FAISS index over the payload is retrieval's: python -m lvm_jax.eval.build_index.
  """
  if not isinstance(payload, Payload):
    payload = read_payload(payload)
  if not os.path.isdir(payload.source):
    raise ValueError(f"build_dataset: the payload ({payload.source}) must be written first "
                     "(write_payload): the compact sets and the manifest refer to its "
                     "directory.")
  os.makedirs(out_dir, exist_ok=True)
  sets, record = build_splits(payload, context_length=context_length,
                              min_article_chunks=min_article_chunks, split_ratios=split_ratios,
                              seed=seed)
  paths = write_sets(out_dir, sets, forms)
  manifest = {"format_version": FORMAT_VERSION,
              "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              "payload": {"path": os.path.abspath(payload.source),
                          "fingerprint": payload_fingerprint(payload),
                          "num_rows": payload.num_rows, "vector_dim": payload.vector_dim,
                          "provenance": payload.provenance},
              **record, "files": {key: os.path.basename(path) for key, path in paths.items()}}
  manifest.update(extra_manifest or {})
  manifest_path = os.path.join(out_dir, MANIFEST_FILE)
  atomic.write_json(manifest_path, manifest, indent=1)
  paths["manifest"] = manifest_path
  paths["payload"] = payload.source
  return paths


def read_manifest(path: str) -> Dict:
  """The manifest of a data directory (or its file path)."""
  if os.path.isdir(path):
    path = os.path.join(path, MANIFEST_FILE)
  if not os.path.exists(path):
    raise data_error(path, "(file)", "does not exist", "build the data directory with "
                     "python -m lvm_jax.corpus.build (or lvm_jax.corpus.synthetic)")
  with open(path) as f:
    return json.load(f)


def payload_path_of(data_dir: str, manifest: Dict) -> str:
  """The payload a data directory was built from: as recorded, else DATA_DIR/payload if moved."""
  recorded = manifest["payload"]["path"]
  if os.path.isdir(recorded):
    return recorded
  beside = os.path.join(data_dir, "payload")
  if os.path.isdir(beside):
    return beside
  raise data_error(os.path.join(data_dir, MANIFEST_FILE), "payload.path", f"names {recorded}, "
                   "which does not exist (nor does DATA_DIR/payload)", "pass the payload "
                   "explicitly (config.data.payload_path / --payload), or rebuild the directory")


def parse_ratios(text: str) -> Tuple[float, float, float]:
  parts = [p for p in text.replace(" ", "").split(",") if p]
  if len(parts) != len(SPLITS):
    raise ValueError(f"--split_ratios={text!r}: give three numbers train,val,eval "
                     "(e.g. 0.8,0.1,0.1).")
  try:
    ratios = tuple(float(p) for p in parts)
  except ValueError:
    raise ValueError(f"--split_ratios={text!r}: give three numbers train,val,eval "
                     "(e.g. 0.8,0.1,0.1).") from None
  for split, ratio in zip(SPLITS, ratios):
    if not ratio > 0:
      raise ValueError(f"--split_ratios={text!r}: the {split} share is {ratio}; every split needs "
                       "a share > 0 (training needs val, and eval needs unseen articles), e.g. "
                       "0.8,0.1,0.1.")
  return ratios


def define_flags() -> None:
  flags.DEFINE_string("payload", None, "Payload directory, or the reference's pickled .npy "
                      "(then --trust_pickle).")
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_integer("context_length", DEFAULT_CONTEXT_LENGTH, "Context chunks per window.")
  flags.DEFINE_integer("min_article_chunks", DEFAULT_MIN_ARTICLE_CHUNKS,
                       "Articles with fewer chunks give no windows.")
  flags.DEFINE_string("split_ratios", ",".join(map(str, DEFAULT_SPLIT_RATIOS)),
                      "train,val,eval shares of the articles.")
  flags.DEFINE_integer("seed", 0, "Seed of the article split.")
  flags.DEFINE_list("forms", list(FORMS), "Which forms to write: full, compact.")
  flags.DEFINE_bool("trust_pickle", False, "Allow reading the reference's pickled payload.")
  flags.DEFINE_bool("normalize", False, "Re-normalise non-unit payload vectors (logged).")


@cli.exits_cleanly_on_user_errors
def main(argv) -> None:
  del argv
  args = flags.FLAGS
  if not args.payload or not args.out:
    raise app.UsageError("--payload and --out are required.")
  payload_path = args.payload
  if os.path.isfile(payload_path) and payload_path.endswith(".npy"):
    converted = os.path.join(args.out, "payload")
    convert_reference_payload(payload_path, converted, trust_pickle=args.trust_pickle,
                                      normalize=args.normalize)
    payload_path = converted
  payload = read_payload(payload_path, normalize=args.normalize)
  paths = build_dataset(payload, args.out, context_length=args.context_length,
                        min_article_chunks=args.min_article_chunks,
                        split_ratios=parse_ratios(args.split_ratios), seed=args.seed,
                        forms=args.forms)
  print(json.dumps(paths, indent=1))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
