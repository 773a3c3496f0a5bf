"""Learning curves: the recipe's margin over the best untrained predictor against training data.

  python -m benchmarks.learning_curve --root CORPUS --config configs/s_realtext.py:cpu \
      --fractions 0.1,0.3,1 --workdir runs/curve [--config.train.num_epochs=3 ...] \
      [--in_domain_limit 8000]

CORPUS is a `benchmarks.doc_corpus` root: payload/ and sets/ (train_rows, val_rows,
eval.npz: article-disjoint splits of the training packages), and, when present,
heldout_payload/ and heldout_sets/eval.npz (a whole package never trained on).
For each fraction the recipe trains on that share of the train *articles* (a
seeded draw; the smaller draws are subsets of the larger), choosing its
checkpoint on val as usual. Each checkpoint is then scored beside copy-last,
mean, recency (decay fitted on the same train share) and linear on both eval
sets, context excluded and not, through benchmarks.compare_eval. The curves
plot the model minus the best baseline (R@5 and Contain@50, context excluded)
with the paired bootstrap 95 % interval against training windows: the question
is whether the margin grows with data and whether it crosses zero.

Writes learning_curve.json and learning_curve.png under --out (default
benchmarks/results/<machine>/).
"""

from __future__ import annotations

import glob
import os
import time
from typing import Dict, List

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from lvm_jax import atomic, backend, cli

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only as a script: importing this module (tests, other benchmarks) defines no flags."""
  config_flags.DEFINE_config_file("config", "configs/s_realtext.py:cpu", "The recipe to train.")
  flags.DEFINE_string("root", None, "benchmarks.doc_corpus root (payload/, sets/, heldout_*)",
                      required=True)
  flags.DEFINE_list("fractions", ["0.1", "0.3", "1"], "shares of the train articles")
  flags.DEFINE_string("workdir", None, "where each fraction's run goes (resumable)",
                      required=True)
  flags.DEFINE_string("out", None, "results folder (default benchmarks/results/<machine>)")
  flags.DEFINE_string("name", "learning_curve", "file name stem of the JSON and PNG")
  flags.DEFINE_integer("seed", 0, "seed of the article draw")
  flags.DEFINE_integer("in_domain_limit", 0, "score the first N in-domain eval windows "
                       "(compare_eval --limit; a 500k-chunk corpus costs minutes per 10k "
                       "queries); 0: all. Held-out sources are always scored whole")

METRICS = (("R@5", "R@5"), ("Contain@50", "Contain@50"))


def article_subset(train, fraction: float, seed: int):
  """The windows of the first ceil(fraction * n) articles of a seeded permutation."""
  articles = train.article_ids()
  order = np.random.default_rng(seed).permutation(articles)
  keep = order[:max(1, int(np.ceil(fraction * len(articles))))]
  rows = np.isin(train.truth_keys[:, 0], keep)
  return rows, len(keep), len(articles)


def write_subset(train_path: str, payload, fraction: float, seed: int, out_path: str) -> Dict:
  """Writes the fraction's compact train set; returns its counts."""
  from lvm_jax.data.sequences import SequenceSet, read_sequence_set, write_sequence_set  # pylint: disable=g-import-not-at-top
  train = read_sequence_set(train_path, payload=payload)
  rows, kept, total = article_subset(train, fraction, seed)
  if not train.is_compact:
    raise ValueError(f"{train_path}: the learning curve needs the compact form (*_rows.npz).")
  subset = SequenceSet(truth_keys=train.truth_keys[rows], payload_rows=train.payload_rows[rows],
                       payload=payload, source=out_path,
                       provenance=dict(train.provenance, subset_fraction=fraction,
                                       subset_seed=seed))
  if not os.path.exists(out_path):
    write_sequence_set(out_path, subset)
  return {"fraction": fraction, "articles": kept, "of_articles": total,
          "windows": int(rows.sum())}


def eval_sets(root: str) -> Dict[str, Dict[str, str]]:
  sets = {"in_domain": {"payload": os.path.join(root, "payload"),
                        "eval": os.path.join(root, "sets", "eval.npz")}}
  heldout = os.path.join(root, "heldout_sets", "eval.npz")
  if os.path.exists(heldout):
    sets["held_out_package"] = {"payload": os.path.join(root, "heldout_payload"), "eval": heldout}
  # Issue 30's corpus: one eval set per held-out source, ROOT/heldout/<source>/{payload,sets}.
  for source_dir in sorted(glob.glob(os.path.join(root, "heldout", "*"))):
    if os.path.exists(os.path.join(source_dir, "sets", "eval.npz")):
      sets[f"held_out/{os.path.basename(source_dir)}"] = {
          "payload": os.path.join(source_dir, "payload"),
          "eval": os.path.join(source_dir, "sets", "eval.npz")}
  return sets


def margin_point(report: Dict, name: str, metric: str) -> Dict[str, float]:
  """The model's margin over the best baseline on `metric`, context excluded."""
  return report["margin"][name]["excl"][metric]


def plot(result: Dict, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
  for axis, (metric, label) in zip(axes, METRICS):
    for view, points in result["curves"].items():
      x = [p["windows"] for p in points]
      y = [p[metric]["margin"] for p in points]
      low = [p[metric]["margin"] - p[metric]["low"] for p in points]
      high = [p[metric]["high"] - p[metric]["margin"] for p in points]
      axis.errorbar(x, y, yerr=[low, high], marker="o", capsize=4, label=view)
    axis.axhline(0.0, color="gray", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlabel("training windows")
    axis.set_ylabel(f"model - best baseline, {label} excl. (95 % CI)")
    axis.legend()
  figure.suptitle(result["config"])
  figure.tight_layout()
  figure.savefig(path, dpi=100)


def run(config, root: str, fractions: List[float], workdir: str, seed: int,
        in_domain_limit: int = 0) -> Dict:
  from benchmarks import compare_eval  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.train.loop import train_and_evaluate  # pylint: disable=g-import-not-at-top
  payload_path = os.path.join(root, "payload")
  payload = read_payload(payload_path, load_texts=False)
  train_path = os.path.join(root, "sets", "train_rows.npz")
  points = []
  for fraction in sorted(fractions):
    run_dir = os.path.join(workdir, f"fraction_{fraction:g}")
    os.makedirs(run_dir, exist_ok=True)
    subset_path = os.path.join(run_dir, "train_rows.npz")
    counts = write_subset(train_path, payload, fraction, seed, subset_path)
    logging.info("fraction %g: %d of %d articles, %d windows", fraction, counts["articles"],
                 counts["of_articles"], counts["windows"])
    run_config = config.copy_and_resolve_references()
    run_config.data.train_path = subset_path
    run_config.data.val_path = os.path.join(root, "sets", "val_rows.npz")
    run_config.data.payload_path = payload_path
    started = time.perf_counter()
    summary = train_and_evaluate(run_config, os.path.join(run_dir, "run"))
    counts["train_s"] = time.perf_counter() - started
    counts["epochs"] = len(summary["history"])
    counts["best"] = {summary["best_metric"]: summary["best"]}
    counts["reports"] = {}
    for view, paths in eval_sets(root).items():
      report = compare_eval.run_comparison(
          train=subset_path, train_payload_path=payload_path, payload_path=paths["payload"],
          eval_path=paths["eval"], checkpoints=[("model", os.path.join(run_dir, "run"))],
          limit=(in_domain_limit or None) if view == "in_domain" else None)
      counts["reports"][view] = report
    points.append(counts)
  curves = {}
  for view in eval_sets(root):
    curves[view] = [dict({metric: margin_point(p["reports"][view], "model", metric)
                          for metric, _ in METRICS}, windows=p["windows"],
                         fraction=p["fraction"]) for p in points]
  return {"points": points, "curves": curves}


def main(argv) -> None:
  del argv
  backend.initialize("cpu")
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  fractions = [float(f) for f in FLAGS.fractions]
  if not fractions or any(not 0 < f <= 1 for f in fractions):
    raise app.UsageError(f"--fractions {FLAGS.fractions}: give shares in (0, 1].")
  result = run(FLAGS.config, FLAGS.root, fractions, FLAGS.workdir, FLAGS.seed,
               FLAGS.in_domain_limit)
  result["config"] = FLAGS["config"].config_filename if hasattr(FLAGS["config"],
                                                                "config_filename") else "config"
  result["load_average"] = os.getloadavg()
  out = FLAGS.out or common.results_dir()
  os.makedirs(out, exist_ok=True)
  json_path = os.path.join(out, f"{FLAGS.name}.json")
  atomic.write_json(json_path, result, indent=1)
  plot(result, os.path.join(out, f"{FLAGS.name}.png"))
  for view, points in result["curves"].items():
    for p in points:
      print(f"{view:17s} {p['windows']:7d} windows: " + "  ".join(
          f"{m} {p[m]['margin']:+.4f} [{p[m]['low']:+.4f}, {p[m]['high']:+.4f}]"
          for m, _ in METRICS))
  print(f"wrote {json_path}")


if __name__ == "__main__":
  define_flags()
  cli.run(main)
