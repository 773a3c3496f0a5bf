"""Checkpoints beside copy-last, mean-of-context and the linear predictor, on the same queries.

  python -m benchmarks.compare_eval --train data/sets/train_rows.npz --payload data/payload \
      --eval data/sets/eval.npz --faiss data/sets/payload.faiss \
      --checkpoint recipe=runs/realtext --checkpoint reference=runs/reference \
      --out runs/compare_eval.json

`python -m lvm_jax.eval` judges one checkpoint and prints copy-last and mean
rows; the linear predictor (lvm_jax.retrieval.baselines, fit on the train windows)
needs the train set, which the eval CLI never reads. This script scores every
predictor through the same RetrievalEvaluator, the same index and the same
queries, in both views (all candidates, and the window's own context chunks
excluded), so one table holds them all. --recency_decays adds the skip path's
untrained base, to show what training adds to it. --eval takes the eval NPZ, or a
compact set such as val_rows.npz: choose recipes on val, report on eval.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags, logging

from lvm_jax import atomic, backend, cli

FLAGS = flags.FLAGS
flags.DEFINE_string("train", None, "train set (compact *_rows.npz or full) the linear predictor "
                    "is fit on", required=True)
flags.DEFINE_string("payload", None, "payload directory (the corpus searched)", required=True)
flags.DEFINE_string("eval", None, "eval NPZ, or a compact set (val_rows.npz) to score",
                    required=True)
flags.DEFINE_string("faiss", None, "FAISS index of the payload; exact (flat) search when absent")
flags.DEFINE_multi_string("checkpoint", [], "NAME=WORKDIR of a trained model; repeatable")
flags.DEFINE_integer("nprobe", 64, "IVF cells scanned a query")
flags.DEFINE_integer("linear_rank", 32, "principal directions of the linear predictor")
flags.DEFINE_list("recency_decays", [], "add an untrained row per decay: the recency-weighted "
                  "context average that model.residual starts from")
flags.DEFINE_string("out", None, "write the JSON report here")

COLUMNS = ("R@1", "R@5", "Contain@50", "MRR", "mean_cosine")


def read_queries(path: str, payload):
  """An EvalSet from an eval NPZ, or from any sequence set (val_rows.npz) over `payload`."""
  from lvm_jax.data.eval_sets import EvalSet, read_eval_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  with np.load(path, allow_pickle=False) as npz:
    is_eval_set = "contexts" in npz.files
  if is_eval_set:
    return read_eval_set(path, expected_dim=payload.vector_dim)
  windows = read_sequence_set(path, payload=payload)
  contexts, targets, _ = windows.batch(np.arange(windows.num_sequences))
  provenance = dict(payload.provenance)
  provenance.update(windows.provenance)
  return EvalSet(contexts=contexts, targets=targets, truth_keys=windows.truth_keys,
                         provenance=provenance, source=path)


def linear_predictor(train_path: str, payload, rank: int):
  """lvm_jax.retrieval.baselines' linear predictor fit on every train window."""
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import baselines  # pylint: disable=g-import-not-at-top
  train_set = read_sequence_set(train_path, payload=payload)
  contexts, targets, _ = train_set.batch(np.arange(train_set.num_sequences))
  logging.info("Fitting the linear predictor on %d train windows", train_set.num_sequences)
  fitted = baselines.fit_linear_predictor(contexts, targets, rank=rank)
  return lambda c: fitted.predict(c).astype(np.float32)


def recency_predictor(decay: float):
  """The skip path's base alone (a model.residual model before training)."""
  from lvm_jax.models.model import recency_average  # pylint: disable=g-import-not-at-top
  return lambda c: np.asarray(recency_average(c, decay))[:, -1]


def model_predictor(workdir: str):
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval.__main__ import make_predict_fn  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.evaluator import EvalOptions  # pylint: disable=g-import-not-at-top
  return make_predict_fn(checkpoint.load(workdir), EvalOptions().batch_size)


def compare(eval_set, payload, index, predictors, nprobe: int):
  """{view: {row name: metrics}} for the views "all" and "excl" (context excluded)."""
  from lvm_jax.retrieval.evaluator import VIEWS, EvalOptions, RetrievalEvaluator  # pylint: disable=g-import-not-at-top
  options = EvalOptions(nprobe=nprobe, latency_queries=0, index_recall=False)
  evaluator = RetrievalEvaluator(eval_set, payload, index, options)
  report = {view: {} for view in VIEWS}
  for name, predict in predictors.items():
    views = evaluator.report(predict)["views"]
    for view in VIEWS:
      if not report[view]:
        report[view].update({b: views[view][b] for b in ("copy_last", "mean_of_context")})
      report[view][name] = views[view]["model"]
  return report


def markdown(report) -> str:
  header = ("| predictor | " + " | ".join(COLUMNS) + " | "
            + " | ".join(f"{c} excl." for c in COLUMNS) + " |")
  lines = [header, "|---" * (2 * len(COLUMNS) + 1) + "|"]
  for name in report["all"]:
    cells = [f"{report[view][name][c]:.3f}" for view in ("all", "excl")
             for c in COLUMNS]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv) -> None:
  del argv
  backend.initialize("cpu")
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  payload = read_payload(FLAGS.payload, load_texts=False)
  eval_set = read_queries(FLAGS.eval, payload)
  index = (index_lib.read_index(FLAGS.faiss, payload.vectors) if FLAGS.faiss
           else index_lib.build_index(payload.vectors, kind="flat"))
  predictors = {"linear": linear_predictor(FLAGS.train, payload, FLAGS.linear_rank)}
  for decay in FLAGS.recency_decays:
    predictors[f"recency_average({float(decay):g})"] = recency_predictor(float(decay))
  for spec in FLAGS.checkpoint:
    name, sep, workdir = spec.partition("=")
    if not sep or not name or not workdir:
      raise app.UsageError(f"--checkpoint {spec!r}: give NAME=WORKDIR, e.g. recipe=runs/realtext.")
    predictors[name] = model_predictor(workdir)
  report = compare(eval_set, payload, index, predictors, FLAGS.nprobe)
  report["_sizes"] = {"queries": eval_set.num_sequences, "payload_rows": payload.num_rows,
                      "eval": FLAGS.eval, "faiss": FLAGS.faiss or "flat (exact)"}
  print(markdown(report))
  if FLAGS.out:
    atomic.write_json(FLAGS.out, report, indent=1)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  cli.run(main)
