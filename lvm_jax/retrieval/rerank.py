"""Rerankers of the index's candidates (the reference left them as stubs).

Each takes candidates rows [n, K] and scores [n, K] (inner products with the
query) and returns the candidates reordered [n, K]. `same_article` and
`next_gap` use the query's article identity: that is continuation within a
known article, a different and easier task than open retrieval.
"""

from __future__ import annotations

import numpy as np

ARTICLE_RERANKERS = ("same_article", "next_gap")


def _reorder(rows: np.ndarray, adjusted_scores: np.ndarray) -> np.ndarray:
  order = np.argsort(-adjusted_scores, axis=1, kind="stable")
  return np.take_along_axis(rows, order, axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norms, 1e-12)


def mmr(rows, scores, payload_vectors, lam: float) -> np.ndarray:
  """Maximal marginal relevance: greedily pick argmax lam·score − (1−lam)·max sim to picked."""
  vectors = _unit(payload_vectors[np.maximum(rows, 0)])  # [n, K, dim]
  similarity = np.einsum("nkd,njd->nkj", vectors, vectors)
  n, k = rows.shape
  picked = np.zeros((n, k), bool)
  redundancy = np.full((n, k), -np.inf)
  order = np.empty((n, k), np.int64)
  for position in range(k):
    penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
    value = np.where(picked, -np.inf, lam * scores - (1.0 - lam) * penalty)
    choice = np.argmax(value, axis=1)
    order[:, position] = choice
    picked[np.arange(n), choice] = True
    redundancy = np.maximum(redundancy, similarity[np.arange(n), choice])
  return np.take_along_axis(rows, order, axis=1)


def same_article(rows, scores, payload_article_index, query_articles, weight: float) -> np.ndarray:
  """+weight for candidates from the query's own article."""
  same = payload_article_index[np.maximum(rows, 0)] == query_articles[:, None]
  return _reorder(rows, scores + weight * same)


def next_gap(rows, scores, payload_article_index, payload_chunk_index, query_articles,
             last_chunks, weight: float) -> np.ndarray:
  """+weight/gap for candidates of the query's article at chunk last + gap, gap >= 1."""
  safe = np.maximum(rows, 0)
  gap = payload_chunk_index[safe] - last_chunks[:, None]
  after = (payload_article_index[safe] == query_articles[:, None]) & (gap >= 1)
  return _reorder(rows, scores + np.where(after, weight / np.maximum(gap, 1), 0.0))


def directional(rows, scores, payload_vectors, last_context, predictions, weight: float):
  """+weight·cos(candidate − last context, prediction − last context): the predicted step."""
  step = _unit(predictions - last_context)[:, None, :]
  moves = _unit(payload_vectors[np.maximum(rows, 0)] - last_context[:, None, :])
  return _reorder(rows, scores + weight * np.sum(moves * step, axis=-1))


def heuristic_rows(options, payload, truth_keys: np.ndarray, scores: np.ndarray,
                   candidates: np.ndarray, predictions: np.ndarray,
                   last_context: np.ndarray) -> dict:
  """{row name: reordered candidates [n, K]} of each reranker the options turn on (not None):
  mmr_lambda, w_same_article, w_next_gap, w_directional; truth_keys [n, 2] (article, chunk)."""
  o, p = options, payload
  articles, last_chunks = truth_keys[:, 0], truth_keys[:, 1] - 1
  out = {}
  if o.mmr_lambda is not None:
    out[f"model+mmr(λ={o.mmr_lambda})"] = mmr(candidates, scores, p.vectors, o.mmr_lambda)
  if o.w_same_article is not None:
    out[f"model+same_article(w={o.w_same_article})"] = same_article(
        candidates, scores, p.article_index, articles, o.w_same_article)
  if o.w_next_gap is not None:
    out[f"model+next_gap(w={o.w_next_gap})"] = next_gap(
        candidates, scores, p.article_index, p.chunk_index, articles, last_chunks, o.w_next_gap)
  if o.w_directional is not None:
    out[f"model+directional(w={o.w_directional})"] = directional(
        candidates, scores, p.vectors, last_context, predictions, o.w_directional)
  return out
