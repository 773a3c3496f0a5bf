"""Evaluators run every epoch on the validation set (big_vision style: `run(params)`).

`ValidationEvaluator` gives the losses, the cosine and a cheap retrieval proxy
(the rank of each prediction's own target among all validation targets) in
two views: all candidates, and the window's own context chunks excluded (a
predictor close to its input otherwise finds them first; the true next chunk
is never one of them). `baselines()` scores copy-last-context, mean-of-context
and, fitted on the train windows, recency (its decay) and linear on the same
set, so every number stands beside theirs; `run` adds the margin over the best
of them per metric with its paired bootstrap interval (val_r5_excl_margin,
val_r5_excl_margin_low, ..._high), which train.best_metric and the smoke gate
can judge.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lvm_jax import losses
from lvm_jax.retrieval import baselines, metrics
from lvm_jax.retrieval import margin as margin_lib
from lvm_jax.data.sequences import SequenceSet
from lvm_jax.train import step as step_lib

PROXY_KS = (1, 5, 50)
PROXY_VIEWS = (("", False), ("_excl", True))  # (suffix, context excluded)


def dataset_batches(dataset: SequenceSet, batch_size: int) -> Iterator[Tuple[np.ndarray, ...]]:
  for start in range(0, dataset.num_sequences, batch_size):
    yield dataset.batch(np.arange(start, min(start + batch_size, dataset.num_sequences)))


def _eval_sums(params, contexts, targets, target_ids, *, apply_fn, temperature):
  """Validation sums of one batch, without augmentation or dropout; negatives in-batch."""
  predictions = step_lib.predict(apply_fn, params, contexts)[:, -1]
  ar = losses.ar_cosine_loss(predictions, targets)
  queries = step_lib.project(apply_fn, params, predictions)
  keys = step_lib.project(apply_fn, params, targets)
  infonce, _ = losses.info_nce(queries, keys, jnp.arange(targets.shape[0]), target_ids, target_ids,
                               temperature)
  return predictions, {"infonce": jnp.sum(infonce), "ar_loss": jnp.sum(ar)}


def proxy_hits(ranks: np.ndarray, ranks_excl: np.ndarray) -> Dict[str, np.ndarray]:
  """Per-window 0/1 hits {r1, r5, r50, r1_excl, ...} of the validation proxy's ranks."""
  return {f"r{k}{suffix}": (ranks_excl if excluded else ranks) < k
          for suffix, excluded in PROXY_VIEWS for k in PROXY_KS}


class ValidationEvaluator:
  """val_loss, val_infonce, val_ar, val_cosine, val_r{1,5,50}[_excl] and their margins over the
  best baseline (val_r{k}[_excl]_margin[_low|_high]) of a parameter tree.

  fitted: recency and linear fitted on the train windows (baselines.FittedBaselines); without
  it the baselines are copy-last and mean-of-context only.
  """

  def __init__(self, dataset: SequenceSet, config: ml_collections.ConfigDict, apply_fn: Callable,
               fitted: Optional[baselines.FittedBaselines] = None):
    self.dataset = dataset
    self.config = config
    self.fitted = fitted
    self._eval_sums = jax.jit(functools.partial(_eval_sums, apply_fn=apply_fn,
                                                temperature=config.loss.temperature))
    self._targets = None
    self._baseline_hits: Optional[Dict[str, Dict[str, np.ndarray]]] = None
    self._baseline_metrics: Optional[Dict[str, Dict[str, float]]] = None

  def _all_targets(self) -> Tuple[np.ndarray, np.ndarray]:
    if self._targets is None:
      batches = list(dataset_batches(self.dataset, self.config.eval.batch_size))
      self._targets = (np.concatenate([np.asarray(b[1], np.float32) for b in batches]),
                       np.concatenate([np.asarray(b[2]) for b in batches]))
    return self._targets

  def _proxy(self, predictions: np.ndarray) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """The proxy's means (cosine, r1, ..., r50_excl) and per-window hits."""
    targets, target_ids = self._all_targets()
    ranks, ranks_excl = metrics.proxy_ranks(predictions, targets, target_ids=target_ids,
                                            context_length=self.dataset.context_length,
                                            block=self.config.eval.batch_size)
    hits = proxy_hits(ranks, ranks_excl)
    means = {"cosine": metrics.mean_cosine(predictions, targets),
             **{name: float(np.mean(hit)) for name, hit in hits.items()}}
    return means, hits

  def run(self, params) -> Dict[str, float]:
    sums = {"infonce": 0.0, "ar_loss": 0.0}
    predictions = []
    for contexts, targets, target_ids in dataset_batches(self.dataset, self.config.eval.batch_size):
      batch_predictions, batch_sums = self._eval_sums(params, contexts, targets, target_ids)
      for name in sums:
        sums[name] += float(batch_sums[name])
      predictions.append(np.asarray(batch_predictions))
    proxy, hits = self._proxy(np.concatenate(predictions))
    count = self.dataset.num_sequences
    infonce, ar = sums["infonce"] / count, sums["ar_loss"] / count
    loss = losses.combined_loss(infonce, ar, self.config.loss.contrastive_weight,
                                self.config.loss.ar_weight)
    self.baselines()
    margins = margin_lib.margin_over_baselines({**self._baseline_hits, "model": hits},
                                               metrics=tuple(hits))
    out = {"val_loss": loss, "val_infonce": infonce, "val_ar": ar,
           **{f"val_{name}": value for name, value in proxy.items()}}
    for name, interval in margins.items():
      out.update({f"val_{name}_margin": interval["margin"],
                  f"val_{name}_margin_low": interval["low"],
                  f"val_{name}_margin_high": interval["high"]})
    return out

  def baselines(self) -> Dict[str, Dict[str, float]]:
    """The same cosine and R@k for copy-last-context, mean-of-context and, when fitted,
    recency (with its decay) and linear (computed once)."""
    if self._baseline_metrics is None:
      predictors = {"copy_last": baselines.copy_last,
                    "mean_of_context": baselines.mean_of_context}
      if self.fitted is not None:
        predictors.update(self.fitted.predictors())
      predictions = {name: [] for name in predictors}
      for contexts, _, _ in dataset_batches(self.dataset, self.config.eval.batch_size):
        for name, predict in predictors.items():
          predictions[name].append(np.asarray(predict(np.asarray(contexts)), np.float32))
      self._baseline_metrics, self._baseline_hits = {}, {}
      for name, parts in predictions.items():
        self._baseline_metrics[name], self._baseline_hits[name] = self._proxy(
            np.concatenate(parts))
      if self.fitted is not None:
        self._baseline_metrics["recency"]["decay"] = self.fitted.decay
    return self._baseline_metrics


class RetrievalEvaluation:
  """config.evals.retrieval in the loop: FAISS retrieval of the eval set, both views.

  The evaluator (eval set, payload, index) loads on first use, and FAISS is imported only
  then, so a run without it never loads FAISS. Metrics come back as retrieval_<name>.
  """

  def __init__(self, config: ml_collections.ConfigDict, apply_fn: Callable, *, eval_path: str,
               payload_path: str, fitted: Optional[baselines.FittedBaselines] = None):
    self.fitted = fitted
    self.settings = config.evals.retrieval
    self.eval_path = self.settings.eval_path or eval_path
    self.payload_path = self.settings.payload_path or payload_path
    self.batch_size = config.eval.batch_size
    self._predict = jax.jit(lambda params, contexts: step_lib.predict(apply_fn, params,
                                                                      contexts)[:, -1])
    self._evaluator = None

  @property
  def enabled(self) -> bool:
    return self.settings.every_epochs > 0

  def due(self, epoch: int) -> bool:
    return self.enabled and epoch % self.settings.every_epochs == 0

  def evaluator(self):
    if self._evaluator is None:
      if not self.eval_path or not self.payload_path:
        raise ValueError("config.evals.retrieval is on but has no eval set or payload: set "
                         "config.evals.retrieval.eval_path and payload_path (the synthetic "
                         "default provides both).")
      from lvm_jax.retrieval import evaluator  # pylint: disable=g-import-not-at-top
      self._evaluator = evaluator.make_retrieval_evaluator(
          self.eval_path, self.payload_path, self.settings.index_path or None,
          nprobe=self.settings.nprobe, limit=self.settings.limit or None,
          batch_size=self.batch_size, fitted=self.fitted)
    return self._evaluator

  def run(self, params) -> Dict[str, float]:
    scores = self.evaluator().run(lambda contexts: self._predict(params, contexts))
    return {f"retrieval_{name}": value for name, value in scores.items()}

  def baselines(self) -> Dict[str, Dict[str, float]]:
    return self.evaluator().baseline_scalars()
