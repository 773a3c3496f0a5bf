"""baselines: the simple predictors, a least-squares fit that recovers a planted map, the report."""

import numpy as np
import pytest

from lvm_jax.retrieval import baselines
from lvm_jax.data.payload import Payload


def unit_rows(rng, count, dim):
  vectors = rng.normal(size=(count, dim)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_simple_predictors():
  contexts = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  np.testing.assert_array_equal(baselines.copy_last(contexts), contexts[:, -1])
  np.testing.assert_array_equal(baselines.mean_of_context(contexts), contexts[:, 1])


def test_linear_predictor_recovers_a_planted_low_rank_map():
  rng = np.random.default_rng(1)
  basis, _ = np.linalg.qr(rng.normal(size=(32, 4)))
  latents = rng.normal(size=(2000, 3, 4))
  mixing = rng.normal(size=(3 * 4, 4)) / 3
  contexts = latents @ basis.T
  targets = (latents.reshape(2000, -1) @ mixing) @ basis.T
  predictor = baselines.fit_linear_predictor(contexts, targets, rank=4, ridge=1e-9)
  np.testing.assert_allclose(predictor.predict(contexts[:50]), targets[:50], atol=1e-5)


def test_nearest_train_neighbour_returns_the_memorised_target():
  rng = np.random.default_rng(2)
  train_contexts = rng.normal(size=(20, 3, 8)).astype(np.float32)
  train_targets = rng.normal(size=(20, 8)).astype(np.float32)
  out = baselines.nearest_train_neighbour(train_contexts, train_targets, train_contexts[[4, 9]])
  np.testing.assert_array_equal(out, train_targets[[4, 9]])


def test_report_scores_a_perfect_predictor_and_formats_a_table():
  rng = np.random.default_rng(3)
  vectors = unit_rows(rng, 60, 8)
  payload = Payload(vectors, np.repeat([0, 1], 30), np.tile(np.arange(30), 2), np.arange(60))
  windows = np.arange(6)[None, :] + np.array([0, 5, 30, 40])[:, None]
  scores = baselines.score_predictions(vectors[windows[:, -1]], windows, vectors)
  assert scores == {"cosine": scores["cosine"], "r1": 1.0, "r5": 1.0, "r1_excl": 1.0,
                    "r5_excl": 1.0}
  np.testing.assert_allclose(scores["cosine"], 1.0, atol=1e-6)
  report = baselines.baseline_report(payload, windows[:3], windows[3:])
  assert set(report) == {"copy_last", "mean_of_context", "recency", "linear", "nearest_train",
                         "linear_on_train", "_sizes"}
  assert report["recency"]["decay"] in baselines.RECENCY_DECAYS
  table = baselines.format_report(report)
  assert table.splitlines()[0] == "| predictor | cosine | r1 | r5 | r1_excl | r5_excl |"
  assert "| copy_last |" in table and "_sizes" not in table


def test_recency_spans_copy_last_to_the_mean():
  contexts = np.random.default_rng(4).normal(size=(3, 4, 5)).astype(np.float32)
  np.testing.assert_allclose(baselines.recency(contexts, 0.0), contexts[:, -1], atol=1e-6)
  np.testing.assert_allclose(baselines.recency(contexts, 1.0), contexts.mean(axis=1), atol=1e-6)
  expected = (contexts * (0.5 ** np.arange(3, -1, -1))[None, :, None]).sum(1) / 1.875
  np.testing.assert_allclose(baselines.recency(contexts, 0.5), expected, atol=1e-6)


def planted_recency_windows(decay, count=1500, length=4, dim=48, seed=5):
  """Windows whose target is the decay-weighted context average plus noise."""
  rng = np.random.default_rng(seed)
  contexts = unit_rows(rng, count * length, dim).reshape(count, length, dim)
  targets = baselines.recency(contexts, decay) + 0.2 * rng.normal(size=(count, dim))
  return contexts, targets.astype(np.float32), np.arange(count) * (length + 1) + length


@pytest.mark.parametrize("planted", [0.0, 0.6, 1.0])
def test_fitted_decay_finds_a_planted_decay(planted):
  contexts, targets, ids = planted_recency_windows(planted)
  decay, scores = baselines.fit_recency_decay(contexts, targets, ids)
  assert abs(decay - planted) <= 0.1 + 1e-9 and set(scores) == set(baselines.RECENCY_DECAYS)
  assert scores[decay] == max(scores.values())


def test_fit_baselines_gives_the_fitted_rows():
  contexts, targets, ids = planted_recency_windows(0.6)
  fitted = baselines.fit_baselines(contexts, targets, ids, source="train")
  assert fitted.decay == 0.6 and set(fitted.predictors()) == set(baselines.FITTED_ROWS)
  assert fitted.predictors()["recency"](contexts[:2]).shape == (2, 48)
  assert fitted.describe()["recency"]["train_windows"] == 1500


def test_one_scoreboard_names_the_rows_every_judge_shows():
  """Issue 33: validation, the retrieval report, this CLI, compare_eval and learning_curve take
  their baseline rows from baseline_predictors and judge margins against BASELINE_ROWS."""
  from lvm_jax.retrieval import margin  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  contexts = rng.normal(size=(40, 3, 8)).astype(np.float32)
  targets, ids = rng.normal(size=(40, 8)).astype(np.float32), np.arange(40)
  fitted = baselines.fit_baselines(contexts, targets, ids, rank=4)
  rows = baselines.baseline_predictors(fitted)
  assert tuple(rows) == baselines.BASELINE_ROWS == margin.BASELINE_ROWS
  assert tuple(baselines.baseline_predictors()) == ("copy_last", "mean_of_context")
  for name, predict in rows.items():  # every row: [n, L, dim] -> [n, dim] float32
    assert predict(contexts).shape == (40, 8) and predict(contexts).dtype == np.float32, name
  np.testing.assert_array_equal(rows["recency"](contexts),
                                baselines.recency(contexts, fitted.decay))
  table = {"recency": {}, "linear": {}}
  baselines.stamp_decay(table, fitted)
  assert table == {"recency": {"decay": fitted.decay}, "linear": {}}
  interval = {"margin": 0.1, "low": -0.2, "high": 0.3}
  assert margin.margin_fields("r5_excl", interval) == {
      "r5_excl_margin": 0.1, "r5_excl_margin_low": -0.2, "r5_excl_margin_high": 0.3}
