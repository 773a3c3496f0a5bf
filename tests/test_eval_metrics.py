"""Retrieval metrics, hand-computed on toy rankings."""

import numpy as np
import pytest

from lvm_jax.eval import metrics, search


def test_metrics_on_a_hand_computed_case():
  # Truth 7 at position 0, 3, absent, 30 of the candidates (K = 50).
  candidates = np.arange(4 * 50).reshape(4, 50) + 1000
  truths = np.array([7, 8, 9, 10])
  candidates[0, 0], candidates[1, 3], candidates[3, 30] = 7, 8, 10
  out = metrics.retrieval_metrics(candidates, candidates, truths)
  assert out["R@1"] == 0.25 and out["R@5"] == 0.5 and out["R@10"] == 0.5 and out["R@20"] == 0.5
  assert out["Contain@20"] == 0.5 and out["Contain@50"] == 0.75
  assert out["Eff@5"] == pytest.approx(0.5 / 0.75)
  assert out["MRR"] == pytest.approx((1 + 1 / 4 + 0 + 1 / 31) / 4)


def test_reranked_order_changes_recall_but_not_containment():
  candidates = np.array([[5, 6, 7, 8] + list(range(100, 146))])
  reranked = np.array([[7, 5, 6, 8] + list(range(100, 146))])
  before = metrics.retrieval_metrics(candidates, candidates, np.array([7]))
  after = metrics.retrieval_metrics(candidates, reranked, np.array([7]))
  assert before["R@1"] == 0.0 and after["R@1"] == 1.0
  assert before["Contain@50"] == after["Contain@50"] == 1.0


def test_cosines_and_latency_summary_and_recall():
  np.testing.assert_allclose(metrics.row_cosines(np.array([[1.0, 0], [0, 0]]),
                                                 np.array([[1.0, 1.0], [1.0, 0]])),
                             [np.sqrt(0.5), 0.0])
  summary = search.latency_summary(np.arange(1, 101, dtype=float))
  assert summary["latency_p50_ms"] == pytest.approx(50.5) and summary["latency_mean_ms"] == 50.5
  assert summary["latency_p95_ms"] == pytest.approx(95.05)
  assert search.index_recall(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5
