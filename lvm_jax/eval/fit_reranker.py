"""Fit the learned shortlist reranker of a trained run on held-out windows.

  python -m lvm_jax.eval.fit_reranker --checkpoint RUN/realtext_tiny

--payload and --windows default to the run's own payload and val windows (its
config's data paths, or the synthetic corpus in its data/).

It predicts every window's next vector, searches the payload exactly for a
shortlist of --depth rows, and fits a linear scorer of vector features
(retrieval.learned_rerank) by a softmax over each shortlist. Use windows the
model did not train on (val), never the eval windows you report.

Before writing, it checks itself: it fits on the windows of a share of the
articles and prints R@5 and Contain@50 of the other articles' windows with and
without the reranker, in both views (all candidates; the window's own context
excluded). It then refits on every window and writes <workdir>/reranker.json,
which `python -m lvm_jax.eval` and `benchmarks.compare_eval` use.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app, flags, logging

from lvm_jax import backend, cli

CHECK_SEED = 0
DEFAULT_DECAY = 0.6  # the recency feature's decay when the run's config records none


def define_flags() -> None:
  cli.define_checkpoint_flag()
  flags.DEFINE_string("payload", None, "Payload directory the windows index; default: the "
                      "run's config.data.payload_path, or its synthetic corpus's.")
  flags.DEFINE_string("windows", None, "Windows to fit on (val_rows.npz or an eval-format NPZ): "
                      "never the ones you report; default: the run's config.data.val_path, or its "
                      "synthetic corpus's val_rows.npz.")
  flags.DEFINE_integer("depth", 100, "Shortlist rows reordered (at least the eval's k, 50).")
  flags.DEFINE_float("check_share", 0.5, "Share of articles held out for the self-check "
                     "(0 skips it).")
  flags.DEFINE_string("out", None, "Where to write; default <checkpoint>/reranker.json.")


def shortlists(predictions: np.ndarray, payload_vectors: np.ndarray, contexts: np.ndarray,
               truth_rows: np.ndarray, depth: int):
  """{view: (scores, rows)} of an exact search, cut into the evaluator's views."""
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import metrics, search  # pylint: disable=g-import-not-at-top
  length = contexts.shape[1]
  scores, rows, _ = search.search(index_lib.build_index(payload_vectors, kind="flat"),
                                  metrics.unit_rows(predictions), depth + length)
  return search.candidate_views(scores, rows, truth_rows, length, depth)


def hit_rates(rows: np.ndarray, truth_rows: np.ndarray):
  """(R@5, Contain@50) of ranked rows."""
  from lvm_jax.retrieval import metrics  # pylint: disable=g-import-not-at-top
  position = metrics.truth_positions(rows, truth_rows)
  return float(np.mean(position < 5)), float(np.mean(position < 50))


def fit_and_check(predictions, contexts, truth_rows, articles, payload_vectors, *, depth: int,
                  decay: float, check_share: float, fitted_on=None):
  """(reranker fitted on every window, {view: check figures}); both views' shortlists train it."""
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  direction = learned_rerank.payload_direction(payload_vectors)
  views = shortlists(predictions, payload_vectors, contexts, truth_rows, depth)
  features = {view: learned_rerank.candidate_features(rows, scores, contexts, payload_vectors,
                                                      direction, decay)
              for view, (scores, rows) in views.items()}
  labels = {view: learned_rerank.labels_for(rows, truth_rows) for view, (_, rows) in views.items()}

  def fit(mask):
    return learned_rerank.fit(np.concatenate([features[v][mask] for v in views]),
                              np.concatenate([labels[v][mask] for v in views]),
                              depth=depth, decay=decay, fitted_on=fitted_on)

  check = {}
  if check_share > 0:
    unique = np.unique(articles)
    held = np.random.default_rng(CHECK_SEED).choice(
        unique, max(1, int(round(check_share * len(unique)))), replace=False)
    is_held = np.isin(articles, held)
    if is_held.all() or not is_held.any():
      raise ValueError(f"--check_share {check_share}: leaves no articles on one side "
                       f"({len(unique)} articles); use a share in (0, 1) or 0 to skip the check.")
    partial = fit(~is_held)
    for view, (scores, rows) in views.items():
      _, reranked = partial.rerank(rows[is_held], scores[is_held], contexts[is_held],
                                   payload_vectors, direction)
      before = hit_rates(rows[is_held], truth_rows[is_held])
      after = hit_rates(reranked, truth_rows[is_held])
      check[view] = {"windows": int(is_held.sum()), "R@5": before[0], "Contain@50": before[1],
                     "R@5 reranked": after[0], "Contain@50 reranked": after[1]}
  return fit(np.ones(len(truth_rows), bool)), check


def fit_for_run(checkpoint_path: str, *, payload_path=None, windows_path=None, depth: int = 100,
                check_share: float = 0.5, out=None):
  """Fits and writes the run's reranker (JAX already initialised) -> (reranker, {view: check
  figures}, path written); the paths default as this CLI's flags say."""
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predict_fns  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.eval_inputs import EvalOptions  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import synthetic  # pylint: disable=g-import-not-at-top
  from lvm_jax.workdir import Workdir  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  if depth < 50:
    raise ValueError(f"--depth {depth}: must be at least 50, the k of Contain@50.")
  loaded = checkpoint.load(checkpoint_path)
  data = loaded.config.get("data", {})
  payload_path = payload_path or data.get("payload_path")
  windows_path = windows_path or data.get("val_path")
  generated = synthetic.corpus_paths(Workdir(loaded.workdir).data) if loaded.workdir else None
  if generated and not data.get("train_path"):  # the run trained on its synthetic corpus
    payload_path = payload_path or generated["payload"]
    windows_path = windows_path or generated.get("val_rows") or generated.get("val")
  if not payload_path or not windows_path:
    raise ValueError(f"{checkpoint_path}: its config names no data.payload_path / data.val_path "
                     "and it holds no synthetic corpus in data/. Fix: pass --payload (the "
                     "payload the model was trained on) and --windows (its val_rows.npz).")
  payload = read_payload(payload_path, load_texts=False)
  windows = read_queries(windows_path, payload)
  if windows.vector_dim != loaded.model.vector_dim:
    raise ValueError(f"{windows_path}: vectors are {windows.vector_dim}-d but the checkpoint "
                     f"predicts {loaded.model.vector_dim}-d ones; use the run's own data.")
  batch_size = EvalOptions().batch_size
  logging.info("Predicting %d windows of %s", windows.num_sequences, windows_path)
  predict = predict_fns.predict_with(loaded.model.apply, loaded.params)
  predictions = predict_fns.predict_in_batches(predict, windows.contexts, batch_size)
  decay = float(loaded.config.model.get("residual_decay", DEFAULT_DECAY))
  reranker, check = fit_and_check(
      predictions, windows.contexts, windows.target_rows(payload), windows.truth_keys[:, 0],
      np.asarray(payload.vectors, np.float32), depth=depth, decay=decay,
      check_share=check_share, fitted_on={"windows": windows_path})
  reranker.fitted_on["check"] = check
  out = out or os.path.join(loaded.workdir or checkpoint_path, learned_rerank.FILE_NAME)
  learned_rerank.save(out, reranker)
  return reranker, check, out


def check_lines(check):
  """The self-check's figures, one line a view."""
  return [f"check ({view}, {figures['windows']} windows of held-out articles): R@5 "
          f"{figures['R@5']:.4f} -> {figures['R@5 reranked']:.4f}, Contain@50 "
          f"{figures['Contain@50']:.4f} -> {figures['Contain@50 reranked']:.4f}"
          for view, figures in check.items()]


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not f.checkpoint:
    raise app.UsageError("--checkpoint is required: the training workdir (the --workdir given "
                         "to python -m lvm_jax.main). Fix: pass --checkpoint RUN/realtext_tiny.")
  backend.initialize("cpu")
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  reranker, check, out = fit_for_run(f.checkpoint, payload_path=f.payload,
                                     windows_path=f.windows, depth=f.depth,
                                     check_share=f.check_share, out=f.out)
  for line in check_lines(check):
    print(line)
  print(learned_rerank.describe(reranker))
  print(f"wrote {out}")


if __name__ == "__main__":
  define_flags()
  cli.run(cli.exits_cleanly_on_user_errors(main))
