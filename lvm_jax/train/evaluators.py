"""Evaluators run every epoch on the validation set (big_vision style: `run(params)`).

`ValidationEvaluator` gives the losses, the cosine and a cheap retrieval proxy
(the rank of each prediction's own target among all validation targets) in
two views: all candidates, and the window's own context chunks excluded (a
predictor close to its input otherwise finds them first; the true next chunk
is never one of them). `baselines()` scores copy-last-context and
mean-of-context on the same set, so every number stands beside theirs.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Iterator, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lvm_jax import losses
from lvm_jax.retrieval import baselines, metrics
from lvm_jax.data.sequences import SequenceSet
from lvm_jax.train import step as step_lib

PROXY_KS = (1, 5, 50)


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


class ValidationEvaluator:
  """val_loss, val_infonce, val_ar, val_cosine and val_r{1,5,50}[_excl] of a parameter tree."""

  def __init__(self, dataset: SequenceSet, config: ml_collections.ConfigDict, apply_fn: Callable):
    self.dataset = dataset
    self.config = config
    self._eval_sums = jax.jit(functools.partial(_eval_sums, apply_fn=apply_fn,
                                                temperature=config.loss.temperature))
    self._targets = None

  def _all_targets(self) -> Tuple[np.ndarray, np.ndarray]:
    if self._targets is None:
      batches = list(dataset_batches(self.dataset, self.config.eval.batch_size))
      self._targets = (np.concatenate([np.asarray(b[1], np.float32) for b in batches]),
                       np.concatenate([np.asarray(b[2]) for b in batches]))
    return self._targets

  def _proxy(self, predictions: np.ndarray) -> Dict[str, float]:
    targets, target_ids = self._all_targets()
    return metrics.rank_metrics(predictions, targets, ks=PROXY_KS, target_ids=target_ids,
                                context_length=self.dataset.context_length,
                                block=self.config.eval.batch_size)

  def run(self, params) -> Dict[str, float]:
    sums = {"infonce": 0.0, "ar_loss": 0.0}
    predictions = []
    for contexts, targets, target_ids in dataset_batches(self.dataset, self.config.eval.batch_size):
      batch_predictions, batch_sums = self._eval_sums(params, contexts, targets, target_ids)
      for name in sums:
        sums[name] += float(batch_sums[name])
      predictions.append(np.asarray(batch_predictions))
    proxy = self._proxy(np.concatenate(predictions))
    count = self.dataset.num_sequences
    infonce, ar = sums["infonce"] / count, sums["ar_loss"] / count
    loss = losses.combined_loss(infonce, ar, self.config.loss.contrastive_weight,
                                self.config.loss.ar_weight)
    return {"val_loss": loss, "val_infonce": infonce, "val_ar": ar,
            **{f"val_{name}": value for name, value in proxy.items()}}

  def baselines(self) -> Dict[str, Dict[str, float]]:
    """The same cosine and R@k for copy-last-context and mean-of-context predictors."""
    predictors = {"copy_last": baselines.copy_last, "mean_of_context": baselines.mean_of_context}
    predictions = {name: [] for name in predictors}
    for contexts, _, _ in dataset_batches(self.dataset, self.config.eval.batch_size):
      for name, predict in predictors.items():
        predictions[name].append(np.asarray(predict(contexts), np.float32))
    return {name: self._proxy(np.concatenate(p)) for name, p in predictions.items()}


class RetrievalEvaluation:
  """config.evals.retrieval in the loop: FAISS retrieval of the eval set, both views.

  The evaluator (eval set, payload, index) loads on first use, and FAISS is imported only
  then, so a run without it never loads FAISS. Metrics come back as retrieval_<name>.
  """

  def __init__(self, config: ml_collections.ConfigDict, apply_fn: Callable, *, eval_path: str,
               payload_path: str):
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
          batch_size=self.batch_size)
    return self._evaluator

  def run(self, params) -> Dict[str, float]:
    scores = self.evaluator().run(lambda contexts: self._predict(params, contexts))
    return {f"retrieval_{name}": value for name, value in scores.items()}

  def baselines(self) -> Dict[str, Dict[str, float]]:
    return self.evaluator().baseline_scalars()
