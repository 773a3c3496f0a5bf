"""The model's margin over the best baseline, with a paired bootstrap interval (numpy only).

A margin of 0.01 at 2,000 queries is noise; the interval says so. For each
metric (a per-query 0/1 hit: R@1, R@5, Contain@50) the best baseline row is
the one with the highest point value among the baselines.BASELINE_ROWS present that
compete on that metric (a recency row competes only on the metrics its decay was
fitted for on train windows: baselines.fitted_for); the margin
is model minus it, and its 95 % interval comes from resampling the queries
with replacement, both predictors on the same resampled queries (paired), with
a fixed seed, so the same inputs always give the same interval.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from lvm_jax.retrieval.baselines import BASELINE_ROWS

MARGIN_METRICS = ("R@1", "R@5", "Contain@50")
RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0
RESAMPLE_BLOCK = 100  # resamples drawn at once: memory [block, n]


def paired_bootstrap(model_hits: np.ndarray, baseline_hits: np.ndarray, *,
                     resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                     seed: int = SEED) -> Dict[str, float]:
  """Mean of model - baseline over queries [n] and its percentile interval.

  Both arrays are per-query scores (0/1 hits) of the same queries; each resample
  draws n query indices with replacement and applies them to both.
  Returns {"margin", "low", "high"}.
  """
  model_hits = np.asarray(model_hits, np.float64)
  baseline_hits = np.asarray(baseline_hits, np.float64)
  if model_hits.shape != baseline_hits.shape or model_hits.ndim != 1 or not model_hits.size:
    raise ValueError(f"per-query hits must be two equal, non-empty [n] arrays; got "
                     f"{model_hits.shape} and {baseline_hits.shape}.")
  differences = model_hits - baseline_hits
  count = differences.shape[0]
  rng = np.random.default_rng(seed)
  means = np.empty(resamples)
  for start in range(0, resamples, RESAMPLE_BLOCK):
    size = min(RESAMPLE_BLOCK, resamples - start)
    means[start:start + size] = differences[rng.integers(0, count, (size, count))].mean(axis=1)
  tail = (1.0 - confidence) / 2 * 100
  low, high = np.percentile(means, [tail, 100 - tail])
  return {"margin": float(differences.mean()), "low": float(low), "high": float(high)}


# In-loop validation's names (r1, r5_excl, r50, ...) -> the fitted metric they measure.
PROXY_METRICS = {"r1": "R@1", "r5": "R@5", "r50": "Contain@50"}


def fitted_metric(metric: str) -> str:
  """The metric of baselines.FIT_KS that `metric` measures ("r5_excl" -> "R@5")."""
  base = metric[:-len("_excl")] if metric.endswith("_excl") else metric
  return PROXY_METRICS.get(base, base)


def competes(row: str, metric: str, fitted_for: Mapping[str, Sequence[str]]) -> bool:
  """Whether `row` is a baseline for `metric`: a row fitted for some metrics only competes
  on those (a metric no row was fitted for takes Contain@50's, the "recency" row)."""
  if row not in fitted_for:
    return True
  target = fitted_metric(metric)
  if not any(target in metrics for metrics in fitted_for.values()):
    target = "Contain@50"
  return target in fitted_for[row]


def margin_over_baselines(hits: Mapping[str, Mapping[str, np.ndarray]], *,
                          fitted_for: Mapping[str, Sequence[str]],
                          model_row: str = "model",
                          baseline_rows: Sequence[str] = BASELINE_ROWS,
                          metrics: Sequence[str] = MARGIN_METRICS,
                          resamples: int = RESAMPLES, seed: int = SEED) -> Dict[str, Dict]:
  """hits {row: {metric: [n] 0/1}} -> {metric: {"baseline", "margin", "low", "high",
  "includes_zero"}}: the model against the best present baseline row on each metric, among
  the rows that compete on it (fitted_for: baselines.fitted_for, {} when nothing is fitted)."""
  present = [name for name in baseline_rows if name in hits]
  if model_row not in hits or not present:
    raise ValueError(f"margin needs the row {model_row!r} and one of {list(baseline_rows)}; "
                     f"rows given: {sorted(hits)}.")
  out = {}
  for metric in metrics:
    eligible = [name for name in present if competes(name, metric, fitted_for)]
    if not eligible:
      raise ValueError(f"no baseline row competes on {metric}: rows {present}, fitted for "
                       f"{dict(fitted_for)}.")
    best = max(eligible, key=lambda name: float(np.mean(hits[name][metric])))
    interval = paired_bootstrap(hits[model_row][metric], hits[best][metric],
                                resamples=resamples, seed=seed)
    out[metric] = {"baseline": best, **interval,
                   "includes_zero": bool(interval["low"] <= 0.0 <= interval["high"])}
  return out


def margin_fields(name: str, interval: Mapping[str, float]) -> Dict[str, float]:
  """One margin as flat scalars: {name}_margin, {name}_margin_low, {name}_margin_high."""
  return {f"{name}_margin": interval["margin"], f"{name}_margin_low": interval["low"],
          f"{name}_margin_high": interval["high"]}


def format_margin(margin: Mapping[str, Mapping], label: Optional[str] = None) -> str:
  """One line: 'margin over the best baseline (95% CI): R@5 +0.012 [-0.004, +0.028] vs linear'."""
  parts = []
  for metric, m in margin.items():
    verdict = " (includes 0)" if m["includes_zero"] else ""
    parts.append(f"{metric} {m['margin']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}] vs "
                 f"{m['baseline']}{verdict}")
  prefix = f"margin{' ' + label if label else ''} over the best baseline " \
           f"({CONFIDENCE:.0%} paired bootstrap, {RESAMPLES} resamples): "
  return prefix + "; ".join(parts)


def compact(margin: Mapping[str, Mapping]) -> str:
  """The margins for the [EVAL-margin-*] lines: 'R@5=+0.012[-0.004,+0.028]/linear ...'
  (model minus the best baseline, named after the slash; 95 % interval in brackets)."""
  return " ".join(f"{metric}={m['margin']:+.3f}[{m['low']:+.3f},{m['high']:+.3f}]/"
                              f"{m['baseline']}" for metric, m in margin.items())
