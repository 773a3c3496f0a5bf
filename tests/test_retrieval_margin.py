"""margin: the paired bootstrap on cases whose interval is known, and the best-baseline choice."""

import numpy as np
import pytest

from lvm_jax.retrieval import margin


def test_identical_predictors_give_an_interval_of_zero():
  hits = np.random.default_rng(0).random(500) < 0.3
  interval = margin.paired_bootstrap(hits, hits.copy())
  assert interval == {"margin": 0.0, "low": 0.0, "high": 0.0}


def test_equally_good_but_different_predictors_give_an_interval_containing_zero():
  rng = np.random.default_rng(1)
  model, baseline = rng.random(2000) < 0.4, rng.random(2000) < 0.4
  interval = margin.paired_bootstrap(model, baseline)
  assert interval["low"] < 0.0 < interval["high"]
  assert interval["low"] <= interval["margin"] <= interval["high"]


def test_a_predictor_winning_every_query_gives_an_interval_above_zero():
  model, baseline = np.ones(300, bool), np.zeros(300, bool)
  assert margin.paired_bootstrap(model, baseline) == {"margin": 1.0, "low": 1.0, "high": 1.0}
  # Winning on a fifth of the queries and never losing: still strictly above 0.
  rng = np.random.default_rng(2)
  baseline = rng.random(1000) < 0.3
  model = baseline | (rng.random(1000) < 0.2)
  interval = margin.paired_bootstrap(model, baseline)
  assert 0.0 < interval["low"] < interval["margin"] < interval["high"]


def test_the_pairing_narrows_the_interval_of_correlated_predictors():
  """Resampling both on the same queries cancels what they share."""
  rng = np.random.default_rng(3)
  baseline = rng.random(1000) < 0.5
  model = baseline.copy()
  model[:20] = True  # differs on a few queries only
  paired = margin.paired_bootstrap(model, baseline)
  assert paired["high"] - paired["low"] < 0.03
  assert paired == margin.paired_bootstrap(model, baseline)  # fixed seed


def test_margin_is_taken_against_the_best_baseline_per_metric():
  n = 400
  ones, zeros = np.ones(n, bool), np.zeros(n, bool)
  half = np.arange(n) % 2 == 0
  hits = {"copy_last": {"R@1": half, "R@5": zeros, "Contain@50": zeros},
          "linear": {"R@1": zeros, "R@5": half, "Contain@50": ones},
          "model": {"R@1": half, "R@5": ones, "Contain@50": ones},
          "oracle": {"R@1": ones, "R@5": ones, "Contain@50": ones}}
  result = margin.margin_over_baselines(hits, fitted_for={})
  assert [result[m]["baseline"] for m in margin.MARGIN_METRICS] == ["copy_last", "linear",
                                                                    "linear"]
  assert result["R@1"]["includes_zero"] and result["Contain@50"]["includes_zero"]
  assert result["R@5"]["margin"] == pytest.approx(0.5) and not result["R@5"]["includes_zero"]
  line = margin.format_margin(result)
  assert "R@5 +0.5000" in line and "(includes 0)" in line
  with pytest.raises(ValueError, match="margin needs the row"):
    margin.margin_over_baselines({"model": hits["model"]}, fitted_for={})


def test_a_recency_row_competes_only_on_the_metrics_its_decay_was_fitted_for():
  """Issue 30: in-loop validation's names (r5_excl, r50, ...) map to the fitted metrics; a
  metric no decay was fitted for is judged against Contain@50's row."""
  fitted_for = {"recency": ("Contain@50",), "recency_r5": ("R@5", "R@1")}
  assert [margin.fitted_metric(m) for m in ("r1", "r5_excl", "r50", "r50_excl", "R@10")] == [
      "R@1", "R@5", "Contain@50", "Contain@50", "R@10"]
  for metric, expected in (("R@5", ["copy_last", "recency_r5"]),
                           ("r1_excl", ["copy_last", "recency_r5"]),
                           ("r50", ["copy_last", "recency"]),
                           ("R@10", ["copy_last", "recency"])):
    assert [row for row in ("copy_last", "recency", "recency_r5")
            if margin.competes(row, metric, fitted_for)] == expected, metric
  n = 200
  ones, zeros = np.ones(n, bool), np.zeros(n, bool)
  hits = {"copy_last": {"R@5": zeros}, "recency": {"R@5": ones},
          "recency_r5": {"R@5": np.arange(n) % 2 == 0}, "model": {"R@5": ones}}
  result = margin.margin_over_baselines(hits, fitted_for=fitted_for, metrics=("R@5",))
  # recency scores more R@5 here, but its decay was fitted for Contain@50, not R@5.
  assert result["R@5"]["baseline"] == "recency_r5"
  assert result["R@5"]["margin"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="no baseline row competes on R@5"):
    margin.margin_over_baselines({"recency": hits["recency"], "model": hits["model"]},
                                 fitted_for=fitted_for, metrics=("R@5",))
