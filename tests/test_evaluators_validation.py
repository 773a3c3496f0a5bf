"""evaluators.validation: the validation proxy's two views, against a direct count."""

import numpy as np

from lvm_jax.retrieval import metrics
from lvm_jax.evaluators import validation


def test_proxy_excludes_exactly_the_windows_own_context_chunks():
  rng = np.random.default_rng(0)
  dim, length, count = 8, 3, 12
  targets = rng.normal(size=(count, dim)).astype(np.float32)
  targets /= np.linalg.norm(targets, axis=1, keepdims=True)
  ids = np.arange(100, 100 + count)  # one article, consecutive chunks
  # Each predicts (close to) the previous chunk; row 0 its own target.
  predictions = targets[np.maximum(np.arange(count) - 1, 0)] + 0.05 * rng.normal(size=(count, dim))
  predictions = (predictions / np.linalg.norm(predictions, axis=1, keepdims=True)).astype(np.float32)
  out = metrics.rank_metrics(predictions, targets, ks=validation.PROXY_KS, target_ids=ids,
                             context_length=length, block=5)
  scores = predictions @ targets.T
  better = scores > np.diag(scores)[:, None]
  is_context = (ids[:, None] - ids[None, :] >= 1) & (ids[:, None] - ids[None, :] <= length)
  for k in validation.PROXY_KS:
    assert out[f"r{k}"] == np.mean(better.sum(1) < k)
    assert out[f"r{k}_excl"] == np.mean((better & ~is_context).sum(1) < k)
  # Predicting the previous chunk finds that context chunk first: excluding it helps.
  assert out["r1"] <= 1 / count < out["r1_excl"]
