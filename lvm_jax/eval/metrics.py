"""Retrieval metrics from ranked payload rows: R@k, Contain@K, Eff@5, MRR.

Contain@K asks whether the true row is among the K candidates the index
returned; R@k whether it is in the top k of the final ranking (after any
reranker). Eff@5 = R@5 / Contain@50: how much of what the index found the
ranking puts in front.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

RECALL_AT = (1, 5, 10, 20)
CONTAIN_AT = (20, 50)


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


def row_cosines(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
  """[n] cosine of each row pair (both sides normalised; a zero row gives 0)."""
  norms = np.linalg.norm(predictions, axis=1) * np.linalg.norm(targets, axis=1)
  dots = np.sum(predictions * targets, axis=1)
  return np.where(norms > 0, dots / np.maximum(norms, 1e-30), 0.0)


def mean_cosine(predictions: np.ndarray, targets: np.ndarray) -> float:
  return float(np.mean(row_cosines(predictions, targets)))
