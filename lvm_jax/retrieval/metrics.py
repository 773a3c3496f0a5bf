"""The one ranking implementation: R@k, Contain@K, Eff@5, MRR, exact ranks, cosines (numpy only).

Two ways a truth is ranked:
  from candidates   the K rows an index returned (`retrieval_metrics`): Contain@K
                    asks whether the truth is among them, R@k whether the final
                    ranking (after any reranker) puts it in the top k, and
                    Eff@5 = R@5 / Contain@50 is how much of what the index
                    found the ranking puts in front;
  exactly           by counting the rows that score above the truth
                    (`exact_ranks`): the training loop's proxy (`rank_metrics`:
                    each prediction's own target among all the set's targets)
                    and the baselines' numbers over a whole payload.
Ties count in the prediction's favour. Importing this module never loads FAISS or JAX.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

RECALL_AT = (1, 5, 10, 20)
CONTAIN_AT = (20, 50)
SCORE_BLOCK = 512  # queries scored against all candidates at once: [block, M] floats


def truth_positions(ranked_rows: np.ndarray, truth_rows: np.ndarray) -> np.ndarray:
  """[n, K] ranked rows, [n] truths -> [n] 0-based position of the truth, K when absent."""
  hits = ranked_rows == truth_rows[:, None]
  return np.where(hits.any(axis=1), hits.argmax(axis=1), ranked_rows.shape[1])


def retrieval_metrics(candidate_rows: np.ndarray, ranked_rows: np.ndarray,
                      truth_rows: np.ndarray) -> Dict[str, float]:
  """candidate_rows: [n, K] in index order; ranked_rows: [n, K'] final order; truth_rows [n]."""
  contain = truth_positions(candidate_rows, truth_rows)
  rank = truth_positions(ranked_rows, truth_rows)
  metrics = {f"R@{k}": float(np.mean(rank < k)) for k in RECALL_AT}
  for k in CONTAIN_AT:
    metrics[f"Contain@{k}"] = float(np.mean(contain < k)) if k <= candidate_rows.shape[1] else None
  contain50 = metrics.get("Contain@50")
  metrics["Eff@5"] = metrics["R@5"] / contain50 if contain50 else 0.0
  metrics["MRR"] = float(np.mean(np.where(rank < ranked_rows.shape[1], 1.0 / (rank + 1), 0.0)))
  return metrics


def exact_ranks(queries: np.ndarray, true_rows: np.ndarray, candidates: np.ndarray, *,
                exclude_rows: Optional[np.ndarray] = None,
                block: int = SCORE_BLOCK) -> np.ndarray:
  """0-based rank [n] of candidates[true_rows[i]] among all candidates [M, dim] for query i.

  queries [n, dim]; exclude_rows [n, E]: rows (e.g. the window's own context) that
  do not compete. Computed `block` queries at a time, so memory is [block, M].
  """
  queries = np.asarray(queries, np.float32)
  candidates = np.asarray(candidates, np.float32)
  if block < 1:
    raise ValueError(f"block={block} must be at least 1.")
  ranks = np.empty(queries.shape[0], np.int64)
  for start in range(0, queries.shape[0], block):
    rows = slice(start, min(start + block, queries.shape[0]))
    scores = queries[rows] @ candidates.T  # [b, M]
    true = scores[np.arange(scores.shape[0]), true_rows[rows]]
    if exclude_rows is not None:
      np.put_along_axis(scores, exclude_rows[rows], -np.inf, axis=1)
    ranks[rows] = np.sum(scores > true[:, None], axis=1)
  return ranks


def recall_from_ranks(ranks: np.ndarray, ks: Sequence[int], suffix: str = "") -> Dict[str, float]:
  """{"r{k}{suffix}": share of ranks below k}."""
  return {f"r{k}{suffix}": float(np.mean(ranks < k)) for k in ks}


def proxy_ranks(predictions, targets, *, target_ids=None, context_length: Optional[int] = None,
                query_indices=None, block: int = 1024):
  """0-based rank [q] of each prediction's own target among all the set's targets, and the
  same with each window's own context chunks excluded (None without target_ids).

  predictions [q, dim] are for the windows query_indices [q] (default: every window, q = N);
  targets [N, dim]; target_ids [N] as in rank_metrics.
  """
  predictions = np.asarray(predictions, np.float32)
  targets = np.asarray(targets, np.float32)
  truth = (np.arange(len(targets)) if query_indices is None
           else np.asarray(query_indices, np.int64))
  if (predictions.ndim != 2 or targets.ndim != 2 or predictions.shape[1] != targets.shape[1]
      or len(truth) != len(predictions)):
    raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must both be "
                     f"[N, dim], one prediction per window of query_indices ({len(truth)}).")
  if target_ids is None:
    return exact_ranks(predictions, truth, targets, block=block), None
  ids = np.asarray(target_ids, np.int64)
  ranks, ranks_excl = np.empty(len(truth), np.int64), np.empty(len(truth), np.int64)
  for start in range(0, len(truth), block):
    rows = slice(start, min(start + block, len(truth)))
    scores = predictions[rows] @ targets.T  # [b, N]
    true = scores[np.arange(scores.shape[0]), truth[rows]]
    better = scores > true[:, None]
    offset = ids[truth[rows], None] - ids[None, :]
    is_context = (offset >= 1) & (offset <= context_length)
    ranks[rows] = better.sum(axis=1)
    ranks_excl[rows] = (better & ~is_context).sum(axis=1)
  return ranks, ranks_excl


def rank_metrics(predictions, targets, *, ks: Sequence[int] = (1, 5), target_ids=None,
                 context_length: Optional[int] = None, block: int = 1024) -> Dict[str, float]:
  """The in-training validation proxy: mean cosine, and R@k of each prediction's own target
  among all the set's targets.

  predictions, targets: [N, dim] (numpy or jax); row i of targets is prediction i's truth.
  target_ids [N] and context_length: also the view with each window's own context chunks
  excluded ("r{k}_excl"). Ids grow by one per chunk within an article, so target j is one
  of window i's context chunks exactly when target_ids[i] - target_ids[j] is in 1..L.
  Returns {"cosine", "r1", "r5", ...[, "r1_excl", ...]}.
  """
  predictions = np.asarray(predictions, np.float32)
  targets = np.asarray(targets, np.float32)
  if predictions.shape != targets.shape or predictions.ndim != 2:
    raise ValueError(f"predictions {predictions.shape} and targets {targets.shape} must both be "
                     "[N, dim].")
  result = {"cosine": mean_cosine(predictions, targets)}
  ranks, ranks_excl = proxy_ranks(predictions, targets, target_ids=target_ids,
                                  context_length=context_length, block=block)
  result.update(recall_from_ranks(ranks, ks))
  if ranks_excl is not None:
    result.update(recall_from_ranks(ranks_excl, ks, "_excl"))
  return result


def unit_rows(vectors: np.ndarray) -> np.ndarray:
  """Rows scaled to unit norm; zero rows stay zero."""
  vectors = np.asarray(vectors, np.float32)
  norms = np.linalg.norm(vectors, axis=1, keepdims=True)
  return vectors / np.where(norms > 0, norms, 1.0)


def row_cosines(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """[n] cosine of each row pair (both sides normalised; a zero row gives 0)."""
  norms = np.linalg.norm(predictions, axis=1) * np.linalg.norm(targets, axis=1)
  dots = np.sum(predictions * targets, axis=1)
  return np.where(norms > 0, dots / np.maximum(norms, 1e-30), 0.0)


def mean_cosine(predictions: np.ndarray, targets: np.ndarray) -> float:
  return float(np.mean(row_cosines(predictions, targets)))
