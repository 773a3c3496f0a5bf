"""Each reranker moves candidates the way it says, on constructed cases."""

import numpy as np

from lvm_jax.retrieval import rerank

ROWS = np.array([[0, 1, 2, 3]])
SCORES = np.array([[0.9, 0.89, 0.5, 0.4]])


def test_mmr_pushes_a_near_duplicate_down():
  vectors = np.array([[1.0, 0, 0], [1.0, 0.01, 0], [0, 1.0, 0], [0, 0, 1.0]])
  assert rerank.mmr(ROWS, SCORES, vectors, lam=1.0).tolist() == [[0, 1, 2, 3]]
  assert rerank.mmr(ROWS, SCORES, vectors, lam=0.5).tolist()[0][:2] == [0, 2]


def test_same_article_bias_lifts_the_query_article():
  articles = np.array([5, 5, 9, 5])
  ranked = rerank.same_article(ROWS, SCORES, articles, np.array([9]), weight=0.5)
  assert ranked.tolist() == [[2, 0, 1, 3]]
  assert rerank.same_article(ROWS, SCORES, articles, np.array([9]), 0.0).tolist() == ROWS.tolist()


def test_next_gap_favours_the_chunk_right_after_the_context():
  articles = np.array([1, 1, 1, 2])
  chunks = np.array([3, 8, 5, 5])  # last context chunk is 4: row 2 is the next chunk
  ranked = rerank.next_gap(ROWS, SCORES, articles, chunks, np.array([1]), np.array([4]), 1.0)
  assert ranked.tolist()[0][0] == 2
  assert ranked.tolist()[0].index(0) > ranked.tolist()[0].index(1)  # chunk 3 is before: no bonus


def test_directional_bonus_prefers_the_predicted_step():
  last = np.array([[1.0, 0.0]])
  prediction = np.array([[1.0, 1.0]]) / np.sqrt(2)
  vectors = np.array([[1.0, -0.2], [0.8, 0.6], [0.6, 0.8], [-1.0, 0]])
  scores = np.array([[0.9, 0.89, 0.88, 0.1]])
  ranked = rerank.directional(ROWS, scores, vectors, last, prediction, weight=1.0)
  # Row 0 moves against the predicted step (down), row 3 along a part of it.
  assert ranked.tolist()[0][0] in (1, 2) and ranked.tolist()[0][-1] == 0
