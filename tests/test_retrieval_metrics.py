"""Retrieval metrics, hand-computed on toy rankings; exact ranks against a brute-force sort."""

import numpy as np
import pytest

from lvm_jax.retrieval import metrics, search


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


def unit_rows(rng, count, dim):
  vectors = rng.normal(size=(count, dim)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_ranks_match_a_brute_force_sort():
  rng = np.random.default_rng(0)
  payload = unit_rows(rng, 300, 16)
  predictions = unit_rows(rng, 1100, 16)  # more than one scoring block
  targets = rng.integers(0, 300, 1100)
  ranks = metrics.exact_ranks(predictions, targets, payload)
  scores = predictions @ payload.T
  expected = np.array([np.sum(s > s[t]) for s, t in zip(scores, targets)])
  np.testing.assert_array_equal(ranks, expected)


def test_excluded_rows_do_not_compete():
  payload = np.eye(4, dtype=np.float32)
  prediction = np.array([[1.0, 0.9, 0.8, 0.0]], np.float32)
  assert metrics.exact_ranks(prediction, np.array([2]), payload)[0] == 2
  assert metrics.exact_ranks(prediction, np.array([2]), payload,
                             exclude_rows=np.array([[0, 1]]))[0] == 0


@pytest.mark.parametrize("block", [1, 7, 1024])
def test_rank_metrics_is_the_training_proxy_for_any_block(block):
  """R@k of each prediction's own target among all targets, and the mean cosine."""
  rng = np.random.default_rng(4)
  targets = unit_rows(rng, 40, 8)
  predictions = targets + 0.6 * rng.normal(size=targets.shape).astype(np.float32)
  out = metrics.rank_metrics(predictions, targets, ks=(1, 5), block=block)
  scores = predictions @ targets.T
  ranks = np.array([np.sum(row > row[i]) for i, row in enumerate(scores)])
  assert out["r1"] == pytest.approx(np.mean(ranks < 1))
  assert out["r5"] == pytest.approx(np.mean(ranks < 5))
  cosines = np.sum(predictions * targets, 1) / np.linalg.norm(predictions, axis=1)
  assert out["cosine"] == pytest.approx(float(np.mean(cosines)), rel=1e-5)
  assert set(out) == {"cosine", "r1", "r5"}


def test_rank_metrics_accepts_jax_arrays_and_counts_ties_for_the_prediction():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  targets = np.eye(3, dtype=np.float32)
  predictions = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
  out = metrics.rank_metrics(jnp.asarray(predictions), jnp.asarray(targets), ks=(1,))
  assert out["r1"] == 1.0  # row 0 ties its own target with target 1: the tie is a hit
  with pytest.raises(ValueError, match=r"must both be \[N, dim\]"):
    metrics.rank_metrics(predictions[:2], targets)
