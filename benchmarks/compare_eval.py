"""Checkpoints beside copy-last, mean-of-context, recency and linear, on the same queries.

  python -m benchmarks.compare_eval --train data/sets/train_rows.npz --payload data/payload \
      --eval data/sets/eval.npz --faiss data/sets/payload.faiss \
      --checkpoint recipe=runs/realtext --checkpoint reference=runs/reference \
      --out runs/compare_eval.json

`python -m lvm_jax.eval` judges one checkpoint; this script scores several
through the same retrieval.judge.RetrievalJudge, the same index and the same queries, in
both views (all candidates, and the window's own context chunks excluded), so
one table holds them all: the baselines (copy-last, mean-of-context, and,
fitted on --train, recency with its decay and linear), then each checkpoint,
each with its margin over the best baseline per metric and the paired
bootstrap 95 % interval. --recency_decays adds untrained rows at given decays
(the skip path's base). --eval takes the eval NPZ, or a compact set such as
val_rows.npz: choose recipes on val, report on eval. A checkpoint whose workdir
holds a reranker.json (python -m lvm_jax.eval.fit_reranker) gets a second row,
NAME+rerank: the predictor with that learned second stage.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags, logging

from lvm_jax import atomic, backend, cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only as a script: importing this module (learning_curve, tests) defines no flags."""
  flags.DEFINE_string("train", None, "train set (compact *_rows.npz or full) the recency decay "
                      "and the linear predictor are fitted on", required=True)
  flags.DEFINE_string("payload", None, "payload directory (the corpus searched)", required=True)
  flags.DEFINE_string("train_payload", None, "payload the --train rows index, when it is not "
                      "--payload (scoring a held-out package on its own payload); default --payload")
  flags.DEFINE_string("eval", None, "eval NPZ, or a compact set (val_rows.npz) to score",
                      required=True)
  flags.DEFINE_string("faiss", None, "FAISS index of the payload; exact (flat) search when absent")
  flags.DEFINE_multi_string("checkpoint", [], "NAME=WORKDIR of a trained model; repeatable")
  flags.DEFINE_integer("nprobe", 64, "IVF cells scanned a query")
  flags.DEFINE_integer("linear_rank", 32, "principal directions of the linear predictor")
  flags.DEFINE_list("recency_decays", [], "add an untrained row per decay: the recency-weighted "
                    "context average that model.residual starts from")
  flags.DEFINE_string("out", None, "write the JSON report here")
  flags.DEFINE_integer("limit", 0, "score the first N eval windows (whole articles of the "
                       "split's shuffled order, as lvm_jax.eval --limit); 0: all")


COLUMNS = ("R@1", "R@5", "Contain@50", "MRR", "mean_cosine")
RERANK_SUFFIX = "rerank"  # row NAME+rerank: checkpoint NAME with its workdir's reranker.json


def fit_baselines(train_path: str, payload, rank: int):
  """recency (decay fitted) and linear, fitted on the train windows."""
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import baselines  # pylint: disable=g-import-not-at-top
  train_set = read_sequence_set(train_path, payload=payload)
  logging.info("Fitting recency and linear on %d train windows", train_set.num_sequences)
  return baselines.fit_baselines_on_set(train_set, rank=rank)


def recency_predictor(decay: float):
  """The skip path's base alone (a model.residual model before training)."""
  from lvm_jax.models.model import recency_average  # pylint: disable=g-import-not-at-top
  return lambda c: np.asarray(recency_average(c, decay))[:, -1]


def model_predictor(workdir: str):
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predict_fns  # pylint: disable=g-import-not-at-top
  loaded = checkpoint.load(workdir)
  return predict_fns.predict_with(loaded.model.apply, loaded.params)


def compare(eval_set, payload, index, predictors, nprobe: int, fitted=None, limit=None):
  """{view: {row name: metrics}} for the views "all" and "excl" (context excluded), and
  {"margin": {row name: {view: {metric: interval}}}} for every predictor given
  (predictors: {name: predict_fn, or (predict_fn, learned reranker)})."""
  from lvm_jax.retrieval import baselines  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.eval_inputs import VIEWS, EvalOptions  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.judge import RetrievalJudge  # pylint: disable=g-import-not-at-top
  options = EvalOptions(nprobe=nprobe, latency_queries=0, index_recall=False, limit=limit)
  evaluator = RetrievalJudge(eval_set, payload, index, options, fitted=fitted)
  report = {view: {} for view in VIEWS}
  report["margin"] = {}
  for name, predictor in predictors.items():
    predict, reranker = predictor if isinstance(predictor, tuple) else (predictor, None)
    result = evaluator.report(predict, reranker=reranker)
    for view in VIEWS:
      if not report[view]:
        report[view].update({b: result["views"][view][b] for b in baselines.BASELINE_ROWS
                             if b in result["views"][view]})
      report[view][name] = result["views"][view]["model"]
    report["margin"][name] = result["margin"]
  report["fitted_baselines"] = None if fitted is None else fitted.describe()
  return report


def markdown(report) -> str:
  from lvm_jax.retrieval import baselines  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import margin as margin_lib  # pylint: disable=g-import-not-at-top
  header = ("| predictor | " + " | ".join(COLUMNS) + " | "
            + " | ".join(f"{c} excl." for c in COLUMNS) + " |")
  lines = [header, "|---" * (2 * len(COLUMNS) + 1) + "|"]
  for name, row in report["all"].items():
    label = baselines.row_label(name, row)
    cells = [f"{report[view][name][c]:.3f}" for view in ("all", "excl")
             for c in COLUMNS]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  for name, views in report["margin"].items():
    for view, margin in views.items():
      lines.append(f"{name}: " + margin_lib.format_margin(margin, label=f"({view})"))
  return "\n".join(lines)


def run_comparison(*, train: str, payload_path: str, eval_path: str, faiss_path=None,
                   checkpoints=(), nprobe: int = 64, linear_rank: int = 32, recency_decays=(),
                   train_payload_path=None, limit=None):
  """The report main() prints and writes; checkpoints: [(name, workdir)].

  train_payload_path: the payload the train rows index when it is not the one
  searched (an eval on a held-out package's own payload); default payload_path.
  limit: score the first `limit` eval windows (as lvm_jax.eval --limit), None: all. Exact
  search of a 500k-chunk corpus costs minutes per predictor for every 10k queries.
  """
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  payload = read_payload(payload_path, load_texts=False)
  eval_set = read_queries(eval_path, payload)
  index = (index_lib.read_index(faiss_path, payload.vectors) if faiss_path
           else index_lib.build_index(payload.vectors, kind="flat"))
  train_payload = (payload if train_payload_path in (None, payload_path)
                   else read_payload(train_payload_path, load_texts=False))
  fitted = fit_baselines(train, train_payload, linear_rank)
  predictors = {f"recency_average({float(decay):g})": recency_predictor(float(decay))
                for decay in recency_decays}
  for name, workdir in checkpoints:
    predictors[name] = model_predictor(workdir)
    reranker_path = os.path.join(workdir, learned_rerank.FILE_NAME)
    if os.path.exists(reranker_path):  # the run's second stage: a row with it too
      predictors[f"{name}+{RERANK_SUFFIX}"] = (predictors[name], learned_rerank.load(reranker_path))
  report = compare(eval_set, payload, index, predictors, nprobe, fitted=fitted, limit=limit)
  queries = eval_set.num_sequences if limit is None else min(limit, eval_set.num_sequences)
  report["_sizes"] = {"queries": queries, "eval_windows": eval_set.num_sequences,
                      "payload_rows": payload.num_rows,
                      "eval": eval_path, "faiss": faiss_path or "flat (exact)"}
  return report


def main(argv) -> None:
  del argv
  backend.initialize("cpu")
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  checkpoints = []
  for spec in FLAGS.checkpoint:
    name, sep, workdir = spec.partition("=")
    if not sep or not name or not workdir:
      raise app.UsageError(f"--checkpoint {spec!r}: give NAME=WORKDIR, e.g. recipe=runs/realtext.")
    checkpoints.append((name, workdir))
  report = run_comparison(train=FLAGS.train, payload_path=FLAGS.payload, eval_path=FLAGS.eval,
                          faiss_path=FLAGS.faiss, checkpoints=checkpoints, nprobe=FLAGS.nprobe,
                          linear_rank=FLAGS.linear_rank, recency_decays=FLAGS.recency_decays,
                          train_payload_path=FLAGS.train_payload, limit=FLAGS.limit or None)
  print(markdown(report))
  if FLAGS.out:
    atomic.write_json(FLAGS.out, report, indent=1)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
