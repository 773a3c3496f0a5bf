"""evaluators: the retrieval proxy's two views, against a direct count."""

import numpy as np

from lvm_jax.train import evaluators


def test_proxy_excludes_exactly_the_windows_own_context_chunks():
  rng = np.random.default_rng(0)
  dim, length = 8, 3
  targets = rng.normal(size=(12, dim)).astype(np.float32)
  targets /= np.linalg.norm(targets, axis=1, keepdims=True)
  ids = np.arange(100, 112)  # one article, consecutive chunks
  # Each predicts (close to) the previous chunk; row 0 its own target.
  predictions = targets[np.maximum(np.arange(12) - 1, 0)] + 0.05 * rng.normal(size=(12, dim))
  predictions = (predictions / np.linalg.norm(predictions, axis=1, keepdims=True)).astype(np.float32)
  metrics = evaluators.retrieval_proxy(predictions, targets, ids, context_length=length, block=5)
  scores = predictions @ targets.T
  true = np.sum(predictions * targets, axis=1)
  better = (scores > true[:, None]) & ~np.eye(12, dtype=bool)
  is_context = (ids[:, None] - ids[None, :] >= 1) & (ids[:, None] - ids[None, :] <= length)
  for k in evaluators.PROXY_KS:
    assert metrics[f"r{k}"] == np.mean(better.sum(1) < k)
    assert metrics[f"r{k}_excl"] == np.mean((better & ~is_context).sum(1) < k)
  # Predicting the previous chunk finds that context chunk first: excluding it helps.
  assert metrics["r1"] <= 1 / 12 < metrics["r1_excl"]
