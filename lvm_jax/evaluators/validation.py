"""config.evals.<name>.type = "validation": the validation set, every epoch by default.

`ValidationEvaluator` gives the losses, the cosine and a cheap retrieval proxy
(the rank of each prediction's own target among all validation targets) in
two views: all candidates, and the window's own context chunks excluded (a
predictor close to its input otherwise finds them first; the true next chunk
is never one of them). `baselines()` scores copy-last-context, mean-of-context
and, fitted on the train windows, recency (its decay) and linear on the same
set, so every number stands beside theirs; `run` adds the margin over the best
of them per metric with its paired bootstrap interval (r5_excl_margin,
r5_excl_margin_low, ..._high; in history as val_r5_excl_margin under the base
config's entry name `val`), which train.best_metric and the smoke gate can judge.
"""

from __future__ import annotations

import functools
from typing import Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lvm_jax import losses
from lvm_jax.evaluators import base
from lvm_jax.retrieval import baselines, metrics
from lvm_jax.retrieval import margin as margin_lib
from lvm_jax.data.sequences import SequenceSet

PROXY_KS = (1, 5, 50)
PROXY_VIEWS = (("", False), ("_excl", True))  # (suffix, context excluded)


def dataset_batches(dataset: SequenceSet, batch_size: int) -> Iterator[Tuple[np.ndarray, ...]]:
  for start in range(0, dataset.num_sequences, batch_size):
    yield dataset.batch(np.arange(start, min(start + batch_size, dataset.num_sequences)))


def _eval_sums(params, contexts, targets, target_ids, *, predict_fns, temperature):
  """Validation sums of one batch, without augmentation or dropout; negatives in-batch."""
  predictions = predict_fns.predict(params, contexts)
  ar = losses.ar_cosine_loss(predictions, targets)
  queries = predict_fns.project(params, predictions)
  keys = predict_fns.project(params, targets)
  infonce, _ = losses.info_nce(queries, keys, jnp.arange(targets.shape[0]), target_ids, target_ids,
                               temperature)
  return predictions, {"infonce": jnp.sum(infonce), "ar_loss": jnp.sum(ar)}


def proxy_hits(ranks: np.ndarray, ranks_excl: np.ndarray) -> Dict[str, np.ndarray]:
  """Per-window 0/1 hits {r1, r5, r50, r1_excl, ...} of the validation proxy's ranks."""
  return {f"r{k}{suffix}": (ranks_excl if excluded else ranks) < k
          for suffix, excluded in PROXY_VIEWS for k in PROXY_KS}


class ValidationEvaluator(base.Evaluator):
  """loss, infonce, ar, cosine, r{1,5,50}[_excl] and their margins over the best baseline
  (r{k}[_excl]_margin[_low|_high]) of a parameter tree on context.val.

  context.fitted: recency and linear fitted on the train windows
  (baselines.FittedBaselines); without it the baselines are copy-last and
  mean-of-context only.
  """

  def __init__(self, predict_fns, settings: ml_collections.ConfigDict, context: base.Context):
    super().__init__(predict_fns, settings, context)
    config = context.config
    self.dataset: SequenceSet = context.val
    self.batch_size = config.eval.batch_size
    self.loss_config = config.loss
    self.fitted: Optional[baselines.FittedBaselines] = context.fitted
    self._eval_sums = jax.jit(functools.partial(_eval_sums, predict_fns=predict_fns,
                                                temperature=config.loss.temperature))
    self._targets = None
    self._baseline_hits: Optional[Dict[str, Dict[str, np.ndarray]]] = None
    self._baseline_metrics: Optional[Dict[str, Dict[str, float]]] = None
    self._baseline_note = ""

  def _all_targets(self) -> Tuple[np.ndarray, np.ndarray]:
    if self._targets is None:
      batches = list(dataset_batches(self.dataset, self.batch_size))
      self._targets = (np.concatenate([np.asarray(b[1], np.float32) for b in batches]),
                       np.concatenate([np.asarray(b[2]) for b in batches]))
    return self._targets

  def _proxy(self, predictions: np.ndarray) -> Tuple[Dict[str, float], Dict[str, np.ndarray]]:
    """The proxy's means (cosine, r1, ..., r50_excl) and per-window hits."""
    targets, target_ids = self._all_targets()
    ranks, ranks_excl = metrics.proxy_ranks(predictions, targets, target_ids=target_ids,
                                            context_length=self.dataset.context_length,
                                            block=self.batch_size)
    hits = proxy_hits(ranks, ranks_excl)
    means = {"cosine": metrics.mean_cosine(predictions, targets),
             **{name: float(np.mean(hit)) for name, hit in hits.items()}}
    return means, hits

  def run(self, params) -> Iterator[Tuple[str, float]]:
    sums = {"infonce": 0.0, "ar_loss": 0.0}
    predictions = []
    for contexts, targets, target_ids in dataset_batches(self.dataset, self.batch_size):
      batch_predictions, batch_sums = self._eval_sums(params, contexts, targets, target_ids)
      for name in sums:
        sums[name] += float(batch_sums[name])
      predictions.append(np.asarray(batch_predictions))
    proxy, hits = self._proxy(np.concatenate(predictions))
    count = self.dataset.num_sequences
    infonce, ar = sums["infonce"] / count, sums["ar_loss"] / count
    loss = losses.combined_loss(infonce, ar, self.loss_config.contrastive_weight,
                                self.loss_config.ar_weight)
    self.baselines()
    margins = margin_lib.margin_over_baselines({**self._baseline_hits, "model": hits},
                                               metrics=tuple(hits),
                                               fitted_for=baselines.fitted_for(self.fitted))
    out = {"loss": float(loss), "infonce": infonce, "ar": ar, **proxy}
    for name, interval in margins.items():
      out.update(margin_lib.margin_fields(name, interval))
    # Debug only: the epoch's log line (hooks.epoch_line) shows the essentials, history.json all.
    logging.debug("validation: cosine %.4f R@5 %.4f R@5 excl. %.4f beside baselines: %s",
                  out["cosine"], out["r5"], out["r5_excl"], self._baseline_note)
    logging.debug("validation: margin over the best baseline, R@5 excl. %+.4f [%+.4f, %+.4f], "
                  "R@50 excl. %+.4f [%+.4f, %+.4f] (95%% paired bootstrap)",
                  *(out[f"{name}_excl_margin{part}"] for name in ("r5", "r50")
                    for part in ("", "_low", "_high")))
    yield from out.items()

  def baselines(self) -> Dict[str, Dict[str, float]]:
    """The same cosine and R@k for copy-last-context, mean-of-context and, when fitted,
    recency (with its decay) and linear (computed once)."""
    if self._baseline_metrics is None:
      predictors = baselines.baseline_predictors(self.fitted)
      predictions = {name: [] for name in predictors}
      for contexts, _, _ in dataset_batches(self.dataset, self.batch_size):
        for name, predict in predictors.items():
          predictions[name].append(predict(np.asarray(contexts)))
      self._baseline_metrics, self._baseline_hits = {}, {}
      for name, parts in predictions.items():
        self._baseline_metrics[name], self._baseline_hits[name] = self._proxy(
            np.concatenate(parts))
      baselines.stamp_decay(self._baseline_metrics, self.fitted)
      self._baseline_note = ", ".join(
          f"{name}{' (decay %g)' % m['decay'] if 'decay' in m else ''} {m['cosine']:.4f} / R@5 "
          f"{m['r5']:.4f} / R@5 excl. {m['r5_excl']:.4f}"
          for name, m in self._baseline_metrics.items())
      logging.info("Validation baselines (cosine / R@5 / R@5 context excluded): %s",
                   self._baseline_note)
    return self._baseline_metrics


Evaluator = ValidationEvaluator
