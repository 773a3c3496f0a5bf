"""The retrieval judge: the report and its gates, from predictions of the eval set.

RetrievalJudge is built once from an eval set, a payload and an index
(evaluators.retrieval loads them from its settings), then `report(predict_fn)`
as often as wanted: the offline CLI and the training loop reach it through the
same evaluators.retrieval `run(params)`. Its parts live by job: search.py (the
search and its candidate views), rerank.py (the heuristic rerankers' rows),
learned_rerank.py (the second stage), baselines.py + margin.py (the scoreboard),
eval_inputs.py (options, gates, input checks). Every report holds two views of the same search:
  all   every payload row is a candidate (what the reference measured);
  excl  the window's own context chunks are dropped from its candidates. The
        true next chunk is never one of them, so this is the honest view of
        open retrieval: a predictor close to its input otherwise retrieves
        its own context first.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Dict, Optional

import numpy as np
from absl import logging

from lvm_jax.data.eval_sets import EvalSet, read_eval_set
from lvm_jax.data.payload import Payload, payload_rows_for_keys
from lvm_jax.models.predict_fns import predict_in_batches
from lvm_jax.retrieval import baselines
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import margin as margin_lib
from lvm_jax.retrieval import metrics as metrics_lib
from lvm_jax.retrieval import learned_rerank, rerank, search
from lvm_jax.retrieval.eval_inputs import VIEWS, EvalOptions, check_alignment, check_provenance

# Report metric -> the flat scalar name `run` returns (suffix "_excl" for the excl view).
SCALAR_NAMES = {"R@1": "r1", "R@5": "r5", "R@10": "r10", "R@20": "r20", "Contain@20": "contain20",
                "Contain@50": "contain50", "Eff@5": "eff5", "MRR": "mrr"}


def scalars(result: Dict[str, Any], row: str = "model") -> Dict[str, float]:
  """A report's `row` as flat scalars for logging: r5, contain50, ..., and *_excl for the
  context-excluded view, cosine, plus latency and index recall when measured."""
  out = {}
  for view, suffix in (("all", ""), ("excl", "_excl")):
    values = result["views"][view][row]
    out.update({name + suffix: values[key] for key, name in SCALAR_NAMES.items()})
  out["cosine"] = result["views"]["all"][row]["mean_cosine"]
  if "latency_p95_ms" in result["latency"]:
    out["latency_p95_ms"] = result["latency"]["latency_p95_ms"]
  out.update({key.replace("@", ""): value for key, value in result["index_recall"].items()})
  return out


def margin_scalars(margins: Dict[str, Dict[str, Dict]]) -> Dict[str, float]:
  """{view: {metric: interval}} -> flat r5_margin, r5_margin_low, r5_margin_high, r5_excl_margin..."""
  out = {}
  for view, suffix in (("all", ""), ("excl", "_excl")):
    for metric, interval in margins[view].items():
      out.update(margin_lib.margin_fields(SCALAR_NAMES[metric] + suffix, interval))
  return out


def report_scalars(result: Dict[str, Any]) -> Dict[str, float]:
  """The model's metrics as flat scalars (r5, contain50, r5_excl, contain50_excl, cosine, ...),
  and the margins over the best baseline (r5_excl_margin, r5_excl_margin_low, ...)."""
  return {**scalars(result), **margin_scalars(result["margin"])}


class RetrievalJudge:
  """`report(predict_fn)` judges predictions of the eval set's next chunks against the payload.

  predict_fn maps contexts [batch, L, dim] to predictions [batch, dim] (numpy or jax);
  it is always called with `options.batch_size` contexts (the last batch zero-padded),
  so a jitted function compiles once. The baselines' rows do not depend on it and
  are computed on the first run only: oracle, copy_last, mean_of_context, and, when
  `fitted` (baselines.FittedBaselines, fitted on train windows) is given, recency and
  linear. The report's "margin" is the model minus the best of them per metric, with a
  paired bootstrap interval (retrieval.margin).
  """

  def __init__(self, eval_set: EvalSet, payload: Payload, index: Any,
               options: EvalOptions, fitted: Optional[baselines.FittedBaselines] = None):
    self.fitted = fitted
    options.validate(payload.num_rows)
    self.options = options
    self.provenance_mismatches = check_provenance(eval_set, payload,
                                                  options.allow_provenance_mismatch)
    count = eval_set.num_sequences if options.limit is None else min(options.limit,
                                                                     eval_set.num_sequences)
    if options.limit is not None and options.limit > eval_set.num_sequences:
      logging.info("limit %d exceeds the %d sequences of %s: evaluating all of them",
                   options.limit, eval_set.num_sequences, eval_set.source)
    self.contexts = eval_set.contexts[:count]
    self.targets = eval_set.targets[:count]
    self.truth_keys = eval_set.truth_keys[:count]
    self.truth_rows = payload_rows_for_keys(payload, self.truth_keys,
                                                    source=eval_set.source)
    self.alignment = check_alignment(
        dataclasses.replace(eval_set, targets=self.targets), payload, self.truth_rows)
    self.payload = payload
    self.index = index
    ivf_cells = index_lib.ivf_cells(index)
    if options.nprobe is not None:
      if ivf_cells is not None and options.nprobe > ivf_cells:
        logging.warning("nprobe %d exceeds the index's %d IVF cells: scanning all %d (exact).",
                        options.nprobe, ivf_cells, ivf_cells)
      index_lib.set_nprobe(index, options.nprobe)
    self._baseline_views: Optional[Dict[str, Dict[str, Dict]]] = None
    self._baseline_hits: Dict[str, Dict[str, Dict[str, np.ndarray]]] = {v: {} for v in VIEWS}
    self._payload_direction: Optional[np.ndarray] = None

  # -------------------------------------------------------------------------- predictions

  def predict(self, predict_fn: Callable) -> np.ndarray:
    """predict_fn over the contexts in fixed-size batches -> [n, dim] float32."""
    predictions = predict_in_batches(predict_fn, self.contexts, self.options.batch_size)
    if predictions.shape != self.targets.shape:
      raise ValueError(f"predict_fn returned predictions of shape {predictions.shape} for "
                       f"{len(self.contexts)} contexts; expected {self.targets.shape} "
                       "([batch, dim], the last position's prediction).")
    return predictions

  # -------------------------------------------------------------------------- search

  def _candidates(self, queries: np.ndarray, k: Optional[int] = None) -> Dict[str, tuple]:
    """{view: (scores [n, k], rows [n, k], batched qps)} from one search of k + L rows
    (k: options.k unless given)."""
    k, context_length = k or self.options.k, self.contexts.shape[1]
    depth = min(k + context_length, self.payload.num_rows)
    scores, rows, qps = search.search(self.index, queries, depth)
    return {view: pair + (qps,) for view, pair in
            search.candidate_views(scores, rows, self.truth_rows, context_length, k).items()}

  def _reranked_candidates(self, queries: np.ndarray, reranker) -> Dict[str, tuple]:
    """As _candidates, each view's shortlist of reranker.depth rows reordered by the learned
    reranker (retrieval.learned_rerank) and cut to options.k."""
    k = self.options.k
    if reranker.depth < k:
      raise ValueError(f"the reranker's depth {reranker.depth} is below k = {k}: it must "
                       "reorder at least the k candidates scored; refit it with a larger "
                       "--depth.")
    if self._payload_direction is None:
      self._payload_direction = learned_rerank.payload_direction(self.payload.vectors)
    out = {}
    for view, (scores, rows, qps) in self._candidates(queries, k=reranker.depth).items():
      scores, rows = reranker.rerank(rows, scores, self.contexts, self.payload.vectors,
                                     self._payload_direction)
      out[view] = (scores[:, :k], rows[:, :k], qps)
    return out

  def _row(self, name: str, queries: np.ndarray, candidates: tuple, ranked=None) -> Dict:
    _, rows, qps = candidates
    return {"name": name,
            **metrics_lib.retrieval_metrics(rows, rows if ranked is None else ranked,
                                            self.truth_rows),
            "mean_cosine": metrics_lib.mean_cosine(queries, self.targets), "batched_qps": qps}

  def _hits(self, candidates: tuple, ranked=None) -> Dict[str, np.ndarray]:
    """Per-query 0/1 hits [n] of the margin's metrics (the same rules as retrieval_metrics)."""
    rows = candidates[1]
    contain = metrics_lib.truth_positions(rows, self.truth_rows)
    rank = metrics_lib.truth_positions(rows if ranked is None else ranked, self.truth_rows)
    return {"R@1": rank < 1, "R@5": rank < 5, "Contain@50": contain < 50}

  def _baseline_rows(self) -> Dict[str, Dict[str, Dict]]:
    """oracle, copy_last, mean_of_context (and recency, linear when fitted) rows per view
    (computed once)."""
    if self._baseline_views is None:
      queries = {"oracle": self.targets,
                 **{name: predict(self.contexts) for name, predict in
                    baselines.baseline_predictors(self.fitted).items()}}
      views = {view: {} for view in VIEWS}
      for name, query in queries.items():
        query = metrics_lib.unit_rows(query)
        for view, candidates in self._candidates(query).items():
          views[view][name] = self._row(name, query, candidates)
          self._baseline_hits[view][name] = self._hits(candidates)
      for view in VIEWS:
        baselines.stamp_decay(views[view], self.fitted)
      misses = self._duplicate_misses()
      for view in VIEWS:
        views[view]["oracle"]["exact_duplicate_misses"] = misses
      self._baseline_views = views
    return self._baseline_views

  # -------------------------------------------------------------------------- runs

  def report(self, predict_fn: Callable, reranker=None) -> Dict[str, Any]:
    """Everything the CLI prints and writes: rows per view, latency, gates, checks.

    reranker: a learned_rerank.LinearReranker; the "model" row (and its margins) is then
    the predictor with that second stage, the system as deployed."""
    options = self.options
    logging.info("Predicting %d sequences", len(self.contexts))
    start = time.perf_counter()
    predictions = self.predict(predict_fn)
    inference_ms = (time.perf_counter() - start) * 1e3 / len(self.contexts)
    # Unit queries, as the reference searched: ranking by inner product is unchanged, and the
    # rerankers' weights then mean the same thing for every query.
    queries = metrics_lib.unit_rows(predictions)
    logging.info("Searching %d queries (k=%d, %s)", len(queries), options.k,
                 index_lib.search_knobs(self.index) or "exact")
    fixed = self._baseline_rows()
    model_candidates = (self._candidates(queries) if reranker is None
                        else self._reranked_candidates(queries, reranker))
    views, margins = {}, {}
    for view in VIEWS:
      rows = {name: dict(row) for name, row in fixed[view].items()}
      rows["model"] = self._row("model", queries, model_candidates[view])
      margins[view] = margin_lib.margin_over_baselines(
          {**self._baseline_hits[view], "model": self._hits(model_candidates[view])},
          fitted_for=baselines.fitted_for(self.fitted))
      scores, candidates, _ = model_candidates[view]
      for name, ranked in rerank.heuristic_rows(options, self.payload, self.truth_keys, scores,
                                                candidates, queries,
                                                self.contexts[:, -1]).items():
        rows[name] = self._row(name, queries, model_candidates[view], ranked=ranked)
        rows[name]["uses_article_identity"] = any(a in name for a in rerank.ARTICLE_RERANKERS)
      views[view] = rows

    latency = {}
    if options.latency_queries:
      latency_queries = queries[:options.latency_queries]
      logging.info("Timing %d single-threaded queries", len(latency_queries))
      latency = search.latency_summary(search.per_query_latency_ms(self.index, latency_queries,
                                                                   options.k))
    recall = self._index_recall(queries) if options.index_recall else {}
    gate_row = views[options.gate_view].get(options.gate_row)
    if gate_row is None:
      raise ValueError(f"--gate-row {options.gate_row!r} is not a report row; rows: "
                       f"{list(views[options.gate_view])}")
    if gate_row.get("uses_article_identity") and not options.gate_article_rerankers:
      raise ValueError(f"--gate-row {options.gate_row!r} uses the query's article identity "
                       "(continuation within a known article); pass --gate-article-rerankers "
                       "to gate on it anyway.")
    gated = {**gate_row, **latency}
    return {"views": views, "rows": views[options.gate_view], "gate_view": options.gate_view,
            "gated_row": options.gate_row, "gated": gated, "latency": latency,
            "gate_results": options.gates.check(gated), "index_recall": recall,
            "inference_ms_per_sequence": inference_ms, "alignment": self.alignment,
            "provenance_mismatches": self.provenance_mismatches,
            "n_samples": int(len(predictions)), "predictions": predictions, "margin": margins,
            "fitted_baselines": None if self.fitted is None else self.fitted.describe()}

  def run(self, predict_fn: Callable, reranker=None) -> Dict[str, float]:
    """report(...) as flat scalars (report_scalars)."""
    return report_scalars(self.report(predict_fn, reranker=reranker))

  def baseline_scalars(self) -> Dict[str, Dict[str, float]]:
    """{oracle | copy_last | mean_of_context [| recency | linear]: flat scalars}, the numbers a
    model must beat (recency's carries its decay)."""
    views = self._baseline_rows()
    out = {}
    for name in views["all"]:
      out[name] = {SCALAR_NAMES[key] + suffix: views[view][name][key]
                   for view, suffix in (("all", ""), ("excl", "_excl")) for key in SCALAR_NAMES}
      out[name]["cosine"] = views["all"][name]["mean_cosine"]
      if "decay" in views["all"][name]:
        out[name]["decay"] = views["all"][name]["decay"]
    return out

  def _duplicate_misses(self) -> int:
    """Oracle queries whose top hit is another row holding exactly the true vector."""
    _, rows, _ = search.search(self.index, self.targets, 1)
    top = rows[:, 0]
    missed = top != self.truth_rows
    same_vector = np.all(self.payload.vectors[np.maximum(top, 0)] ==
                         self.payload.vectors[self.truth_rows], axis=1)
    return int(np.sum(missed & same_vector))

  def _index_recall(self, queries: np.ndarray) -> Dict[str, float]:
    """Overlap of this index's top-K with exact (Flat) top-K for the model's queries."""
    k = self.options.k
    if index_lib.index_kind(self.index) == "flat":
      return {f"recall@{k}_vs_flat": 1.0}
    exact = index_lib.build_index(self.payload.vectors, kind="flat")
    _, exact_rows, _ = search.search(exact, queries, k)
    _, approximate_rows, _ = search.search(self.index, queries, k)
    return {f"recall@{k}_vs_flat": search.index_recall(approximate_rows, exact_rows)}


def load_eval_set(path: str, payload: Payload) -> EvalSet:
  """read_eval_set checked against this payload's dimension (a damaged archive, CRC error
  or truncation, is named by the reader)."""
  return read_eval_set(path, expected_dim=payload.vector_dim,
                       expected_source=f"the payload {payload.source}")

