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
from lvm_jax.retrieval import baselines
from lvm_jax.data.sequences import SequenceSet
from lvm_jax.train import step as step_lib

PROXY_KS = (1, 5, 50)


def dataset_batches(dataset: SequenceSet, batch_size: int) -> Iterator[Tuple[np.ndarray, ...]]:
  for start in range(0, dataset.num_sequences, batch_size):
    yield dataset.batch(np.arange(start, min(start + batch_size, dataset.num_sequences)))


@functools.partial(jax.jit, static_argnames=("context_length",))
def _ranks_of_true_targets(predictions, own_targets, own_ids, all_targets, all_ids, *,
                           context_length: int):
  """Rank of each prediction's own target among all targets (0 = nearest), in two views.

  Ids grow by one per chunk within an article, so candidate j is one of query
  i's own context chunks exactly when own_ids[i] - all_ids[j] is in 1..L.
  """
  true_score = jnp.sum(predictions * own_targets, axis=-1)
  # The own target scores the same as true_score up to rounding: never count it as better.
  better = (predictions @ all_targets.T > true_score[:, None]) & (
      all_ids[None, :] != own_ids[:, None])
  offset = own_ids[:, None] - all_ids[None, :]
  is_context = (offset >= 1) & (offset <= context_length)
  return jnp.sum(better, axis=-1), jnp.sum(better & ~is_context, axis=-1)


def retrieval_proxy(predictions: np.ndarray, targets: np.ndarray, target_ids: np.ndarray, *,
                    context_length: int, block: int) -> Dict[str, float]:
  """Mean cosine, and R@k of each prediction among all the set's targets, both views."""
  all_targets, all_ids = jnp.asarray(targets), jnp.asarray(target_ids)
  ranks = [_ranks_of_true_targets(predictions[s:s + block], targets[s:s + block],
                                  target_ids[s:s + block], all_targets, all_ids,
                                  context_length=context_length)
           for s in range(0, len(targets), block)]
  ranks_all = np.concatenate([np.asarray(r[0]) for r in ranks])
  ranks_excl = np.concatenate([np.asarray(r[1]) for r in ranks])
  cosine = np.asarray(losses.cosine_similarity(jnp.asarray(predictions), all_targets))
  metrics = {"cosine": float(np.mean(cosine))}
  for k in PROXY_KS:
    metrics[f"r{k}"] = float(np.mean(ranks_all < k))
    metrics[f"r{k}_excl"] = float(np.mean(ranks_excl < k))
  return metrics


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
    return retrieval_proxy(predictions, targets, target_ids,
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
