"""Searching the index: batched candidates and their two views (all; the window's own context
excluded), single-threaded per-query latency, index recall.

FAISS is imported only where its thread control is needed.
"""

from __future__ import annotations

import time
from typing import Dict, Tuple

import numpy as np


def search(index: faiss.Index, queries: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray, float]:
  """Top-k (scores, rows) for queries [n, dim], and the batched throughput in queries/s."""
  queries = np.ascontiguousarray(queries, np.float32)
  start = time.perf_counter()
  scores, rows = index.search(queries, k)
  elapsed = time.perf_counter() - start
  return scores, rows, len(queries) / max(elapsed, 1e-12)


def per_query_latency_ms(index: faiss.Index, queries: np.ndarray, k: int) -> np.ndarray:
  """One query at a time on one thread, as the reference measured: [n] milliseconds."""
  import faiss  # pylint: disable=g-import-not-at-top
  queries = np.ascontiguousarray(queries, np.float32)
  threads = faiss.omp_get_max_threads()
  faiss.omp_set_num_threads(1)
  try:
    index.search(queries[:1], k)  # warm-up: first-touch of the lists
    latencies = np.empty(len(queries))
    for i in range(len(queries)):
      start = time.perf_counter()
      index.search(queries[i:i + 1], k)
      latencies[i] = (time.perf_counter() - start) * 1e3
  finally:
    faiss.omp_set_num_threads(threads)
  return latencies


def per_query_wall_and_cpu_ms(index: faiss.Index, queries: np.ndarray,
                              k: int) -> Tuple[np.ndarray, np.ndarray]:
  """As per_query_latency_ms, and each query's CPU time on its thread: [n], [n] ms.

  On one OpenMP thread FAISS searches on the calling thread, so its CPU time is the
  query's own work: on a shared machine the wall clock adds the time other processes
  held the core, the CPU time does not (cache contention still shows in both).
  """
  import faiss  # pylint: disable=g-import-not-at-top
  queries = np.ascontiguousarray(queries, np.float32)
  threads = faiss.omp_get_max_threads()
  faiss.omp_set_num_threads(1)
  try:
    index.search(queries[:1], k)
    wall, cpu = np.empty(len(queries)), np.empty(len(queries))
    for i in range(len(queries)):
      start, start_cpu = time.perf_counter(), time.thread_time()
      index.search(queries[i:i + 1], k)
      cpu[i] = (time.thread_time() - start_cpu) * 1e3
      wall[i] = (time.perf_counter() - start) * 1e3
  finally:
    faiss.omp_set_num_threads(threads)
  return wall, cpu


def latency_summary(latencies_ms: np.ndarray) -> Dict[str, float]:
  return {"latency_mean_ms": float(np.mean(latencies_ms)),
          "latency_p50_ms": float(np.percentile(latencies_ms, 50)),
          "latency_p95_ms": float(np.percentile(latencies_ms, 95)),
          "latency_p99_ms": float(np.percentile(latencies_ms, 99))}


def index_recall(approximate_rows: np.ndarray, exact_rows: np.ndarray) -> float:
  """Mean overlap of the approximate top-K with the exact top-K (|A ∩ E| / K)."""
  k = exact_rows.shape[1]
  overlap = [len(np.intersect1d(a[a >= 0], e)) for a, e in zip(approximate_rows, exact_rows)]
  return float(np.mean(overlap) / k)


def context_rows(truth_rows: np.ndarray, context_length: int) -> np.ndarray:
  """Windows run over consecutive chunks, so the context rows precede the target row."""
  return truth_rows[:, None] - np.arange(context_length, 0, -1)[None, :]


def candidate_views(scores: np.ndarray, rows: np.ndarray, truth_rows: np.ndarray,
                    context_length: int, k: int) -> Dict[str, tuple]:
  """{view: (scores [n, k], rows [n, k])} of one search of k + L rows: "all" its first k,
  "excl" its first k once the window's own context rows are dropped (order kept)."""
  own = (rows[:, :, None] == context_rows(truth_rows, context_length)[:, None, :]).any(-1)
  keep = np.argsort(own, axis=1, kind="stable")[:, :k]  # non-context rows first, in order
  return {"all": (scores[:, :k], rows[:, :k]),
          "excl": tuple(np.take_along_axis(a, keep, axis=1) for a in (scores, rows))}
