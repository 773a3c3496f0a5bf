"""config.evals.<name>.type = "retrieval": FAISS retrieval of the eval set, both views.

The same evaluator runs in the loop and in `python -m lvm_jax.eval`, through the same
`run(params)`: flat scalars (the loop's settings skip latency timing, exact-search
recall and the rerankers); the CLI builds it from the checkpoint's
config.evals.retrieval plus its flags, iterates `run(params)` and prints the full
report that run left in `last_report`. Its knobs:

  every_epochs   0 turns it off in the loop
  eval_path, payload_path, index_path   default: the run's eval set and payload; an
                 index is built when none is given
  index_kind, nlist   what is built: "auto" is retrieval.index.choose_index_kind
  nprobe, limit  IVF cells a query (None: the index's own); eval windows (0: all)
  gate_contain50, gate_eff5, gate_r5, gate_p95   None: the defaults of
                 retrieval.eval_inputs.GATES, the one place they are stated
  reranker_path  a learned_rerank file: the model row is the predictor plus that stage
  batch_size     contexts a predict call (default: config.eval.batch_size)
and any other EvalOptions field (k, latency_queries, mmr_lambda, ...) by name.
The eval set, payload and index load on first use, and FAISS is imported only
then, so a run without this evaluator never loads FAISS.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from absl import logging

from lvm_jax.evaluators import base
from lvm_jax.retrieval import baselines as baselines_lib
from lvm_jax.retrieval.eval_inputs import EvalOptions, Gates
from lvm_jax.models import predict_fns as predict_fns_lib

# What the loop leaves out of every epoch's run unless the settings ask: timing and the Flat scan.
LOOP_OPTIONS = {"latency_queries": 0, "index_recall": False}
OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(EvalOptions) if f.name != "gates")


def options_from(settings: Mapping[str, Any], batch_size: int) -> EvalOptions:
  """EvalOptions of the settings (limit 0 is every window), LOOP_OPTIONS unless they say."""
  values = {**LOOP_OPTIONS, **{name: settings[name] for name in OPTION_FIELDS if name in settings}}
  values["limit"] = values.get("limit") or None
  values["batch_size"] = values.get("batch_size") or batch_size
  return EvalOptions(**values, gates=Gates.from_knobs(settings))


class RetrievalEvaluation(base.Evaluator):
  """Metrics as flat scalars (r5, contain50, r5_excl, contain50_excl, ..., and the margins
  over the best baseline, contain50_excl_margin[_low|_high], ...)."""

  def __init__(self, predict_fns, settings: Mapping[str, Any], context: base.Context):
    super().__init__(predict_fns, settings, context)
    self.eval_path = settings.get("eval_path") or context.eval_path
    self.payload_path = settings.get("payload_path") or context.payload_path
    self.index_path = settings.get("index_path") or None
    self.last_report: Optional[Dict[str, Any]] = None  # the full report of the latest run
    self._inputs = None
    self._evaluator = None
    self._reranker = None

  def inputs(self) -> Tuple[Any, Any]:
    """(payload, eval set), read once; the eval set checked against the payload's dimension."""
    if self._inputs is None:
      if not self.eval_path or not self.payload_path:
        raise ValueError("config.evals.retrieval is on but has no eval set or payload: set "
                         "config.evals.retrieval.eval_path and payload_path (the synthetic "
                         "default provides both).")
      from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
      from lvm_jax.retrieval import judge  # pylint: disable=g-import-not-at-top
      payload = read_payload(self.payload_path, load_texts=False)
      self._inputs = payload, judge.load_eval_set(self.eval_path, payload)
    return self._inputs

  def evaluator(self):
    """The retrieval.judge.RetrievalJudge (built once): options validated before an index is built."""
    if self._evaluator is None:
      from lvm_jax.retrieval import judge  # pylint: disable=g-import-not-at-top
      from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
      payload, eval_set = self.inputs()
      options = options_from(self.settings, self.context.config.eval.batch_size)
      options.validate(payload.num_rows)
      if self.index_path:
        index = index_lib.read_index(self.index_path, payload.vectors)
      else:
        kind = index_lib.resolve_kind(self.settings.get("index_kind") or index_lib.AUTO,
                                      payload.num_rows)
        logging.info("No index given: building %s over %d payload rows", kind, payload.num_rows)
        index = index_lib.build_index(payload.vectors, kind=kind, nlist=self.settings.get("nlist"))
      fitted = self.context.fitted
      if fitted is not None and not isinstance(fitted, baselines_lib.FittedBaselines):
        fitted = fitted(payload)  # fitted on train windows that index this payload
      self._evaluator = judge.RetrievalJudge(eval_set, payload, index, options, fitted=fitted)
    return self._evaluator

  def reranker(self):
    """The learned second stage of settings.reranker_path (loaded once), or None."""
    path = self.settings.get("reranker_path")
    if path and self._reranker is None:
      from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
      self._reranker = learned_rerank.load(path)
      logging.info("Using %s from %s", learned_rerank.describe(self._reranker), path)
    return self._reranker

  def run(self, params) -> Iterator[Tuple[str, float]]:
    from lvm_jax.retrieval import judge  # pylint: disable=g-import-not-at-top
    self.last_report = self.evaluator().report(
        predict_fns_lib.bind(self.predict_fns.predict, params), reranker=self.reranker())
    yield from judge.report_scalars(self.last_report).items()

  def baselines(self) -> Dict[str, Dict[str, float]]:
    reference = self.evaluator().baseline_scalars()
    logging.info("Retrieval baselines on %s (Contain@50 / R@5, context excluded): %s",
                 self.eval_path, ", ".join(f"{name} {m['contain50_excl']:.4f} / "
                                           f"{m['r5_excl']:.4f}" for name, m in reference.items()))
    return reference


Evaluator = RetrievalEvaluation
