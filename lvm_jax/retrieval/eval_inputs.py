"""What a retrieval evaluation is asked (EvalOptions; GATES, the reference's gates, and Gates,
a run's thresholds) and the checks its inputs pass before anything is predicted: provenance
against the payload, truth alignment.

The offline CLI and the training loop build the same EvalOptions; RetrievalJudge
(judge.py) runs them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
from absl import logging

from lvm_jax.data import provenance as provenance_lib
from lvm_jax.data.errors import data_error
from lvm_jax.data.eval_sets import EvalSet
from lvm_jax.data.payload import Payload, payload_rows_for_keys
from lvm_jax.retrieval import metrics as metrics_lib

VIEWS = ("all", "excl")
VIEW_TITLES = {"all": "all candidates", "excl": "context excluded"}
ALIGNMENT_MEAN, ALIGNMENT_P5 = 0.98, 0.95
ALIGNMENT_SAMPLE = 10_000
GATE_K = 50  # the gates read Contain@50, so at least this many candidates


@dataclasses.dataclass(frozen=True)
class Gate:
  """One of the reference's gates: the row metric it judges, the knob that sets its threshold
  (config.evals.retrieval.<knob> and the CLI's --<knob>), and the reference's threshold."""
  metric: str
  knob: str
  default: float
  at_most: bool = False  # passes at or below its threshold (latency); the rest at or above
  unit: str = "fraction"  # of the threshold; an "ms" gate is judged only when timing ran
  name: str = ""  # the reference tool's name in its gate lines ("" = the metric)
  title: str = ""  # the subject of the flag's help ("" = the name)

  @property
  def label(self) -> str:
    return self.name or self.metric

  def passes(self, value: float, threshold: float) -> bool:
    return value <= threshold if self.at_most else value >= threshold


# The reference's four gates, in its order: the one table the thresholds, check(), the
# config knobs, the CLI flags, the report and the reference tool's lines are read from.
GATES = (
    Gate("Contain@50", "gate_contain50", 0.60),
    Gate("Eff@5", "gate_eff5", 0.68),
    Gate("R@5", "gate_r5", 0.40),
    Gate("latency_p95_ms", "gate_p95", 1.45, at_most=True, unit="ms", name="P95",
         title="P95 per-query latency"),
)
GATED_METRICS = tuple(gate.metric for gate in GATES)


@dataclasses.dataclass
class Gates:
  """A run's thresholds, metric -> threshold; GATES' defaults where its knobs say nothing."""
  thresholds: Dict[str, float] = dataclasses.field(
      default_factory=lambda: {gate.metric: gate.default for gate in GATES})

  @classmethod
  def from_knobs(cls, knobs: Mapping[str, Any]) -> Gates:
    """The gate_* knobs of config.evals.retrieval or the CLI; absent or None: the default."""
    return cls({gate.metric: gate.default if knobs.get(gate.knob) is None else knobs[gate.knob]
                for gate in GATES})

  def check(self, row: Dict[str, float]) -> Dict[str, bool]:
    """Each gate's verdict; a timed gate (latency) only when latency was measured."""
    return {gate.metric: gate.passes(row[gate.metric], self.thresholds[gate.metric])
            for gate in GATES if gate.unit != "ms" or gate.metric in row}


@dataclasses.dataclass
class EvalOptions:
  """What a run computes. Rerankers are off when None; latency is skipped at 0 queries."""
  k: int = 50
  nprobe: Optional[int] = None  # None: the index's own (set when built: index.KIND_NPROBE)
  limit: Optional[int] = None  # None: every sequence
  latency_queries: int = 1000
  gate_view: str = "all"
  mmr_lambda: Optional[float] = None
  w_same_article: Optional[float] = None
  w_next_gap: Optional[float] = None
  w_directional: Optional[float] = None
  gate_row: str = "model"
  gate_article_rerankers: bool = False
  allow_provenance_mismatch: bool = False
  gates: Gates = dataclasses.field(default_factory=Gates)
  batch_size: int = 1024  # contexts a predict_fn call; the last batch is zero-padded to it
  index_recall: bool = True  # compare the model's top-K with an exact search (costs a Flat scan)

  def validate(self, num_rows: int) -> None:
    """Raises ValueError naming the option (and its CLI flag) and the allowed range."""
    if not isinstance(self.k, (int, np.integer)) or self.k < GATE_K:
      raise ValueError(f"k (--k) = {self.k}: must be at least {GATE_K}, because Contain@50 and "
                       "Eff@5 (both gated) need 50 candidates; use --k 50 (the reference's K).")
    if self.k > num_rows:
      raise ValueError(f"k (--k) = {self.k} exceeds the payload's {num_rows} rows; use --k "
                       f"{num_rows} or less (searching for more rows than exist distorts the "
                       "latency figure).")
    if self.nprobe is not None and self.nprobe < 1:
      raise ValueError(f"nprobe (--nprobe) = {self.nprobe}: must be at least 1 (IVF cells "
                       "scanned a query; the reference used 64).")
    if self.limit is not None and self.limit < 1:
      raise ValueError(f"limit (--limit) = {self.limit}: must be at least 1 (or 0 on the CLI "
                       "for every sequence).")
    if self.latency_queries < 0:
      raise ValueError(f"latency_queries (--latency-queries) = {self.latency_queries}: must be "
                       "0 (skip timing) or more.")
    if self.batch_size < 1:
      raise ValueError(f"batch_size = {self.batch_size}: must be at least 1.")
    if self.gate_view not in VIEWS:
      raise ValueError(f"gate_view {self.gate_view!r} is not one of {VIEWS}.")
    if self.mmr_lambda is not None and not 0.0 <= self.mmr_lambda <= 1.0:
      raise ValueError(f"mmr_lambda (--rerank-mmr) = {self.mmr_lambda}: must be in [0, 1].")


def check_provenance(eval_set: EvalSet, payload: Payload, allow: bool) -> List[str]:
  """embedder_id / norm / metric must agree once spelled canonically (the reference's `l2_once`
  and `ip` equal `l2` and `inner_product`); returns the mismatches (raises unless allowed).
  A field one side does not record cannot be checked: that is a warning, not a refusal."""
  mismatched, unverified = provenance_lib.compare(eval_set.provenance, payload.provenance)
  mismatches = [f"{field}: eval set {eval_set.provenance.get(field)!r} vs payload "
                f"{payload.provenance.get(field)!r}" for field in mismatched]
  if mismatches and not allow:
    raise data_error(eval_set.source, "provenance", "disagrees with the payload "
                     f"{payload.source} ({'; '.join(mismatches)}): its vectors may come from "
                     "another embedder or metric", "use the payload the eval set was built "
                     "from, or pass --allow-provenance-mismatch if you know they agree")
  for mismatch in mismatches:
    logging.warning("Provenance mismatch allowed by the user: %s", mismatch)
  for field in unverified:
    logging.warning("Provenance field %r is not recorded by the eval set (%r) or the payload "
                    "(%r): not checked.", field, eval_set.provenance.get(field),
                    payload.provenance.get(field))
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
