"""train_and_evaluate on the tiny config: outputs, resume equality, NaN stop, errors."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax import checkpoint, losses, train
from lvm_jax.evaluators import validation
from lvm_jax.train import step as step_lib
from lvm_jax.data.errors import DataFormatError
from conftest import tiny_config


def test_writes_history_config_checkpoints_and_tensorboard(finished_run):
  workdir, summary = finished_run
  with open(os.path.join(workdir, "history.json")) as f:
    history = json.load(f)
  assert [h["epoch"] for h in history] == [1, 2]
  for key in ("epoch", "train_loss", "train_infonce", "train_ar_cosine", "val_loss", "val_cosine",
              "val_infonce", "val_ar", "val_r1", "val_r5", "val_r50", "val_r1_excl", "val_r5_excl",
              "val_r50_excl", "lr", "time", "sequences_per_s"):
    assert key in history[0] and np.isfinite(history[0][key]), key
  assert history[1]["step"] == 2 * history[0]["step"]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["d_model"] == 16
  steps = sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints"))
                 if name.isdigit())
  best_step = max(history, key=lambda h: h["val_cosine"])["step"]
  assert steps == sorted({h["step"] for h in history[-2:]} | {best_step})
  with open(os.path.join(workdir, "val_baselines.json")) as f:
    baselines = json.load(f)
  # One recency row per distinct decay fitted (issue 30): always Contain@50's, "recency".
  assert {"copy_last", "mean_of_context", "recency", "linear"} <= set(baselines)
  assert set(baselines) <= {"copy_last", "mean_of_context", "recency", "recency_r5",
                            "recency_r1", "linear"}
  assert "Contain@50" in baselines["recency"]["fitted_for"]
  assert {"cosine", "r5", "r5_excl", "r50_excl"} <= set(baselines["copy_last"])
  assert 0.0 <= baselines["recency"]["decay"] <= 1.0
  # The margin over the best baseline: the model's value minus the best baseline's, among the
  # rows that compete on the metric (a recency row on those its decay was fitted for).
  from lvm_jax.retrieval import margin  # pylint: disable=g-import-not-at-top
  fitted_for = {row: values["fitted_for"] for row, values in baselines.items()
                if "fitted_for" in values}
  for name in ("r1", "r5", "r50", "r1_excl", "r5_excl", "r50_excl"):
    best_baseline = max(values[name] for row, values in baselines.items()
                        if margin.competes(row, name, fitted_for))
    entry = history[0]
    assert entry[f"val_{name}_margin"] == pytest.approx(entry[f"val_{name}"] - best_baseline)
    assert entry[f"val_{name}_margin_low"] <= entry[f"val_{name}_margin"] <= entry[
        f"val_{name}_margin_high"]
  assert any(name.startswith("events.out.tfevents")
             for name in os.listdir(os.path.join(workdir, "tensorboard")))
  assert summary["best_val_cosine"] == max(h["val_cosine"] for h in history)


def test_loader_returns_the_best_parameters(finished_run):
  workdir, summary = finished_run
  loaded = checkpoint.load(workdir)
  best_step = max(summary["history"], key=lambda h: h["val_cosine"])["step"]
  assert loaded.step == best_step
  contexts = np.zeros((2, 5, 32), np.float32)
  contexts[:, :, 0] = 1.0
  out = loaded.model.apply({"params": loaded.params}, contexts, train=False)
  assert out.shape == (2, 5, 32)
  # The set-up this check needs, asserted rather than assumed: the tiny run improves every
  # epoch, so its best step is its last and the final state holds the best parameters.
  assert best_step == summary["history"][-1]["step"], summary["history"]
  final = summary["final_state"].params["model"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, final)


def test_killed_after_first_epoch_then_rerun_equals_uninterrupted(finished_run, tmp_path,
                                                                  monkeypatch):
  _, uninterrupted = finished_run
  workdir = str(tmp_path / "resumed")
  real_run = validation.ValidationEvaluator.run
  calls = []

  def run_then_die(self, params):
    if len(calls) == 1:  # the second epoch's evaluation: the run is "killed"
      raise KeyboardInterrupt
    calls.append(1)
    return real_run(self, params)

  monkeypatch.setattr(validation.ValidationEvaluator, "run", run_then_die)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(tiny_config(), workdir)
  monkeypatch.setattr(validation.ValidationEvaluator, "run", real_run)
  resumed = train.train_and_evaluate(tiny_config(), workdir)
  assert [h["epoch"] for h in resumed["history"]] == [1, 2]
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed["final_state"].params,
                         uninterrupted["final_state"].params)


@pytest.mark.slow
def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(finished_run, tmp_path,
                                                                           monkeypatch):
  workdir = str(tmp_path / "nan")
  config = tiny_config(num_epochs=1)
  train.train_and_evaluate(config, workdir)
  saved = checkpoint.load(workdir)
  config = tiny_config(num_epochs=2)
  real_loss = losses.combined_loss
  monkeypatch.setattr(losses, "combined_loss", lambda *args: real_loss(*args) * jnp.nan)
  with pytest.raises(train.NonFiniteLossError, match=r"at step \d+; stopped"):
    train.train_and_evaluate(config, workdir)
  again = checkpoint.load(workdir)
  assert again.step == saved.step
  jax.tree_util.tree_map(np.testing.assert_array_equal, again.params, saved.params)


def test_bad_config_values_fail_before_training(tmp_path):
  config = tiny_config()
  config.loss.negatives = "everything"
  with pytest.raises(ValueError, match=r"loss.negatives='everything' is not one of \('micro', "
                                       r"'accum', 'global'\)"):
    train.train_and_evaluate(config, str(tmp_path))


def test_missing_or_mismatched_data_is_reported_before_compiling(finished_run, tmp_path,
                                                                  monkeypatch):
  workdir, _ = finished_run
  compiled = []
  monkeypatch.setattr(step_lib, "make_parallel_train_step", lambda *a, **k: compiled.append(1))
  config = tiny_config()
  config.data.train_path = str(tmp_path / "missing.npz")
  config.data.val_path = os.path.join(workdir, "data", "val_rows.npz")
  config.data.payload_path = os.path.join(workdir, "data", "payload")
  with pytest.raises(DataFormatError, match=r"missing\.npz: field .*does not exist"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  config.data.train_path = os.path.join(workdir, "data", "train_rows.npz")
  config.data.vector_dim = 48  # the files hold 32-d vectors
  with pytest.raises(DataFormatError, match="48"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not compiled


# Mixed precision: stated tolerance against the float32 run of the same config and data.
BF16_TOLERANCE = {"val_cosine": 0.02, "val_r5": 0.05, "val_r5_excl": 0.05}


@pytest.mark.slow
def test_bfloat16_matmuls_train_to_the_float32_metrics(finished_run, tmp_path):
  workdir, float32 = finished_run
  config = tiny_config()
  config.model.dtype = "bfloat16"
  config.data.train_path = os.path.join(workdir, "data", "train_rows.npz")
  config.data.val_path = os.path.join(workdir, "data", "val_rows.npz")
  config.data.payload_path = os.path.join(workdir, "data", "payload")
  bfloat16 = train.train_and_evaluate(config, str(tmp_path / "bf16"))
  last32, last16 = float32["history"][-1], bfloat16["history"][-1]
  for metric, tolerance in BF16_TOLERANCE.items():
    assert abs(last16[metric] - last32[metric]) <= tolerance, (metric, last16[metric],
                                                               last32[metric])
  assert all(leaf.dtype == np.float32
             for leaf in jax.tree_util.tree_leaves(bfloat16["final_state"].params))


@pytest.mark.slow
def test_retrieval_evaluation_in_the_loop_picks_the_best_checkpoint(finished_run, tmp_path):
  """config.evals.retrieval runs the FAISS evaluation each epoch; best_metric may be its metric,
  here the margin over the best baseline (copy-last, mean, recency, linear)."""
  workdir, _ = finished_run
  config = tiny_config()
  config.data.synthetic.num_articles = 80  # the finished run's corpus, reused below
  config.evals.retrieval.every_epochs = 1
  config.train.best_metric = "retrieval_contain50_excl_margin"
  run = str(tmp_path / "retrieval")
  shutil.copytree(os.path.join(workdir, "data"), os.path.join(run, "data"))
  summary = train.train_and_evaluate(config, run)
  history = summary["history"]
  for entry in history:
    for name in ("retrieval_contain50_excl", "retrieval_r5_excl", "retrieval_contain50",
                 "retrieval_r5"):
      assert 0.0 <= entry[name] <= 1.0, name
    assert (entry["retrieval_contain50_excl_margin_low"] <= entry["retrieval_contain50_excl_margin"]
            <= entry["retrieval_contain50_excl_margin_high"])
  with open(os.path.join(run, "retrieval_baselines.json")) as f:
    reference = json.load(f)
  assert {"copy_last", "mean_of_context", "recency", "linear"} <= set(reference)
  best_baseline = max(reference[name]["contain50_excl"]
                      for name in ("copy_last", "mean_of_context", "recency", "linear"))
  assert history[0]["retrieval_contain50_excl_margin"] == pytest.approx(
      history[0]["retrieval_contain50_excl"] - best_baseline)
  best = max(history, key=lambda h: h["retrieval_contain50_excl_margin"])
  assert checkpoint.load(run).step == best["step"]
  assert summary["best_metric"] == "retrieval_contain50_excl_margin"


@pytest.mark.slow
def test_init_from_starts_the_model_from_a_trained_run(finished_run, tmp_path):
  """Fine-tuning: the model starts from the trained run's best parameters (a rate of 1e-12
  keeps them to 1e-9), and other sizes are refused by name."""
  workdir, _ = finished_run
  config = tiny_config(num_epochs=1)
  config.train.init_from = workdir
  config.train.learning_rate = 1e-12
  summary = train.train_and_evaluate(config, str(tmp_path / "finetune"))
  pretrained = checkpoint.load(workdir).params
  tuned = summary["final_state"].params
  for a, b in zip(jax.tree_util.tree_leaves(pretrained), jax.tree_util.tree_leaves(tuned["model"])):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
  config.model.d_model = 24
  with pytest.raises(checkpoint.CheckpointError, match="does not match this config's"):
    train.train_and_evaluate(config, str(tmp_path / "other_sizes"))


def test_fitted_decay_makes_the_untrained_model_the_recency_row():
  """residual_decay_fitted: the skip path takes the recency baseline's fitted decay, so an
  untrained model predicts exactly what the recency row does."""
  from lvm_jax import models as models_lib
  from lvm_jax.retrieval import baselines
  from lvm_jax.train import loop
  rng = np.random.default_rng(0)
  contexts = rng.normal(size=(64, 5, 8)).astype(np.float32)
  contexts /= np.linalg.norm(contexts, axis=-1, keepdims=True)
  fitted = baselines.FittedBaselines(decays={"Contain@50": 0.7, "R@5": 0.3, "R@1": 0.3},
                                     decay_scores={}, linear=None, train_windows=0)
  config = tiny_config()
  config.model.residual, config.model.residual_mixing = True, "learned"
  config.model.residual_decay_fitted = True
  loop.resolve_fitted_decay(config, fitted)
  assert config.model.residual_decay == 0.7
  predictor = models_lib.predictor_from_config(config, 8)
  variables = predictor.init(jax.random.PRNGKey(0), contexts, method=predictor.initialize)
  recency_row = fitted.predictors()["recency"](contexts)
  recency_row /= np.linalg.norm(recency_row, axis=-1, keepdims=True)
  np.testing.assert_allclose(predictor.apply(variables, contexts)[:, -1], recency_row, atol=1e-6)
  config.model.residual_decay_fitted, config.model.residual_decay = False, 0.2
  loop.resolve_fitted_decay(config, fitted)
  assert config.model.residual_decay == 0.2
