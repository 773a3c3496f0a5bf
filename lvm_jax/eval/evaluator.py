"""The retrieval judge: checks, predictions, search, baselines, rerankers, latency, gates."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional

import faiss
import numpy as np
from absl import logging

from lvm_jax.data import baselines as data_baselines
from lvm_jax.data.eval_sets import EvalSet
from lvm_jax.data.payload import Payload, payload_rows_for_keys
from lvm_jax.data import index as index_lib
from lvm_jax.data.errors import data_error
from lvm_jax.data.file_io import provenance_mismatches
from lvm_jax.eval import metrics as metrics_lib
from lvm_jax.eval import rerank, search

ALIGNMENT_MEAN, ALIGNMENT_P5 = 0.98, 0.95
ALIGNMENT_SAMPLE = 10_000
GATED_METRICS = ("Contain@50", "Eff@5", "R@5", "latency_p95_ms")


@dataclasses.dataclass
class Gates:
  contain50: float = 0.60
  eff5: float = 0.68
  r5: float = 0.40
  p95_ms: float = 1.45

  def check(self, row: Dict[str, float]) -> Dict[str, bool]:
    return {"Contain@50": row["Contain@50"] >= self.contain50, "Eff@5": row["Eff@5"] >= self.eff5,
            "R@5": row["R@5"] >= self.r5, "latency_p95_ms": row["latency_p95_ms"] <= self.p95_ms}


@dataclasses.dataclass
class EvalOptions:
  k: int = 50
  nprobe: int = 64
  limit: Optional[int] = None
  latency_queries: int = 1000
  exclude_context: bool = False  # drop the window's own context rows from the candidates
  mmr_lambda: Optional[float] = None
  w_same_article: Optional[float] = None
  w_next_gap: Optional[float] = None
  w_directional: Optional[float] = None
  gate_row: str = "model"
  gate_article_rerankers: bool = False
  allow_provenance_mismatch: bool = False
  gates: Gates = dataclasses.field(default_factory=Gates)


def check_provenance(eval_set: EvalSet, payload: Payload, allow: bool) -> List[str]:
  """embedder_id / norm / metric must agree; returns the mismatches (raises unless allowed)."""
  mismatches = [f"{field}: eval set {ours!r} vs payload {theirs!r}" for field, (ours, theirs)
                in provenance_mismatches(eval_set.provenance, payload.provenance).items()]
  if mismatches and not allow:
    raise data_error(eval_set.source, "provenance", "disagrees with the payload "
                     f"{payload.source} ({'; '.join(mismatches)}): its vectors may come from "
                     "another embedder or metric", "use the payload the eval set was built "
                     "from, or pass --allow-provenance-mismatch if you know they agree")
  for mismatch in mismatches:
    logging.warning("Provenance mismatch allowed by the user: %s", mismatch)
  return mismatches


def check_alignment(eval_set: EvalSet, payload: Payload,
                    truth_rows: np.ndarray) -> Dict[str, float]:
  """Targets must be their payload vectors: mean cosine ≥ 0.98 and 5th percentile ≥ 0.95."""
  count = len(truth_rows)
  sample = np.arange(count) if count <= ALIGNMENT_SAMPLE else np.sort(
      np.random.default_rng(0).choice(count, ALIGNMENT_SAMPLE, replace=False))
  cosines = metrics_lib.row_cosines(eval_set.targets[sample], payload.vectors[truth_rows[sample]])
  stats = {"alignment_mean": float(np.mean(cosines)),
           "alignment_p5": float(np.percentile(cosines, 5))}
  if stats["alignment_mean"] < ALIGNMENT_MEAN or stats["alignment_p5"] < ALIGNMENT_P5:
    worst = sample[np.argsort(cosines)[:5]]
    raise data_error(eval_set.source, "targets", f"do not match their payload vectors: mean "
                     f"cosine {stats['alignment_mean']:.4f} (need >= {ALIGNMENT_MEAN}), 5th "
                     f"percentile {stats['alignment_p5']:.4f} (need >= {ALIGNMENT_P5}); worst "
                     f"rows {worst.tolist()} with cosines "
                     f"{[round(float(c), 4) for c in np.sort(cosines)[:5]]}", "evaluate against "
                     "the payload the eval set was built from (truth keys index that payload)")
  return stats


def _context_rows(truth_rows: np.ndarray, context_length: int) -> np.ndarray:
  """Windows run over consecutive chunks, so the context rows precede the target row."""
  return truth_rows[:, None] - np.arange(context_length, 0, -1)[None, :]


class RetrievalEvaluator:
  """`run(predict_fn)` judges predictions of the eval set's next chunks against the payload."""

  def __init__(self, eval_set: EvalSet, payload: Payload, index: faiss.Index,
               options: EvalOptions):
    self.options = options
    self.provenance_mismatches = check_provenance(eval_set, payload,
                                                  options.allow_provenance_mismatch)
    count = eval_set.num_sequences if options.limit is None else min(options.limit,
                                                                     eval_set.num_sequences)
    if count < 1:
      raise ValueError(f"{eval_set.source}: no sequences to evaluate (limit={options.limit}).")
    self.contexts = eval_set.contexts[:count]
    self.targets = eval_set.targets[:count]
    self.truth_keys = eval_set.truth_keys[:count]
    self.truth_rows = payload_rows_for_keys(payload, self.truth_keys,
                                                    source=eval_set.source)
    self.alignment = check_alignment(
        dataclasses.replace(eval_set, targets=self.targets), payload, self.truth_rows)
    self.payload = payload
    self.index = index
    index_lib.set_nprobe(index, options.nprobe)

  def _candidates(self, queries: np.ndarray):
    """Top-K rows and scores, minus the window's own context rows when asked."""
    k = self.options.k
    extra = self.contexts.shape[1] if self.options.exclude_context else 0
    scores, rows, qps = search.search(self.index, queries, k + extra)
    if extra:
      own = (rows[:, :, None] == _context_rows(self.truth_rows, extra)[:, None, :]).any(-1)
      keep = np.argsort(own, axis=1, kind="stable")[:, :k]  # non-context rows first, in order
      rows, scores = (np.take_along_axis(a, keep, axis=1) for a in (rows, scores))
    return scores, rows, qps

  def _row(self, name: str, queries: np.ndarray, ranked=None, candidates=None) -> Dict:
    scores, rows, qps = candidates if candidates is not None else self._candidates(queries)
    ranked_rows = rows if ranked is None else ranked
    row = {"name": name, **metrics_lib.retrieval_metrics(rows, ranked_rows, self.truth_rows),
           "mean_cosine": metrics_lib.mean_cosine(queries, self.targets), "batched_qps": qps}
    return row

  def run(self, predict_fn: Callable[[np.ndarray], np.ndarray]) -> Dict:
    options = self.options
    logging.info("Predicting %d sequences", len(self.contexts))
    start = time.perf_counter()
    predictions = np.asarray(predict_fn(self.contexts), np.float32)
    inference_ms = (time.perf_counter() - start) * 1e3 / len(self.contexts)
    last_context = self.contexts[:, -1]
    queries = {"oracle": self.targets,
               "copy_last": data_baselines.copy_last(self.contexts),
               "mean_of_context": data_baselines.mean_of_context(self.contexts),
               "model": predictions}
    logging.info("Searching %d queries x %d predictors (k=%d, nprobe=%d)", len(predictions),
                 len(queries), options.k, options.nprobe)
    rows = {name: self._row(name, q) for name, q in queries.items() if name != "model"}
    model_candidates = self._candidates(predictions)
    rows["model"] = self._row("model", predictions, candidates=model_candidates)
    rows["oracle"]["exact_duplicate_misses"] = self._duplicate_misses()
    scores, candidates, _ = model_candidates
    reranked = self._reranked(scores, candidates, predictions, last_context)
    for name, ranked in reranked.items():
      rows[name] = self._row(name, predictions, ranked=ranked, candidates=model_candidates)
      rows[name]["uses_article_identity"] = any(a in name for a in rerank.ARTICLE_RERANKERS)

    latency_queries = predictions[:options.latency_queries]
    logging.info("Timing %d single-threaded queries", len(latency_queries))
    latency = search.latency_summary(search.per_query_latency_ms(self.index, latency_queries,
                                                                 options.k))
    recall = self._index_recall(predictions)
    gate_row = rows.get(options.gate_row)
    if gate_row is None:
      raise ValueError(f"--gate-row {options.gate_row!r} is not a report row; rows: {list(rows)}")
    if gate_row.get("uses_article_identity") and not options.gate_article_rerankers:
      raise ValueError(f"--gate-row {options.gate_row!r} uses the query's article identity "
                       "(continuation within a known article); pass --gate-article-rerankers "
                       "to gate on it anyway.")
    gated = {**gate_row, **latency}
    gate_results = options.gates.check(gated)
    return {"rows": rows, "gated_row": options.gate_row, "gated": gated, "latency": latency,
            "gate_results": gate_results, "index_recall": recall,
            "inference_ms_per_sequence": inference_ms, "alignment": self.alignment,
            "provenance_mismatches": self.provenance_mismatches,
            "n_samples": int(len(predictions)), "predictions": predictions}

  def _reranked(self, scores, candidates, predictions, last_context) -> Dict[str, np.ndarray]:
    o, p = self.options, self.payload
    articles, last_chunks = self.truth_keys[:, 0], self.truth_keys[:, 1] - 1
    out = {}
    if o.mmr_lambda is not None:
      out[f"model+mmr(λ={o.mmr_lambda})"] = rerank.mmr(candidates, scores, p.vectors, o.mmr_lambda)
    if o.w_same_article is not None:
      out[f"model+same_article(w={o.w_same_article})"] = rerank.same_article(
          candidates, scores, p.article_index, articles, o.w_same_article)
    if o.w_next_gap is not None:
      out[f"model+next_gap(w={o.w_next_gap})"] = rerank.next_gap(
          candidates, scores, p.article_index, p.chunk_index, articles, last_chunks, o.w_next_gap)
    if o.w_directional is not None:
      out[f"model+directional(w={o.w_directional})"] = rerank.directional(
          candidates, scores, p.vectors, last_context, predictions, o.w_directional)
    return out

  def _duplicate_misses(self) -> int:
    """Oracle queries whose top hit is another row holding exactly the true vector."""
    _, rows, _ = search.search(self.index, self.targets, 1)
    top = rows[:, 0]
    missed = top != self.truth_rows
    same_vector = np.all(self.payload.vectors[np.maximum(top, 0)] ==
                         self.payload.vectors[self.truth_rows], axis=1)
    return int(np.sum(missed & same_vector))

  def _index_recall(self, predictions: np.ndarray) -> Dict[str, float]:
    """Overlap of this index's top-K with exact (Flat) top-K for the model's queries."""
    k = self.options.k
    if index_lib.index_kind(self.index) == "flat":
      return {f"recall@{k}_vs_flat": 1.0}
    exact = faiss.IndexFlatIP(self.payload.vector_dim)
    exact.add(np.ascontiguousarray(self.payload.vectors, np.float32))
    _, exact_rows, _ = search.search(exact, predictions, k)
    _, approximate_rows, _ = search.search(self.index, predictions, k)
    return {f"recall@{k}_vs_flat": search.index_recall(approximate_rows, exact_rows)}
