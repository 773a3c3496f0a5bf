"""checkpoint: retention (latest N + best), fallback past damaged steps, load's errors."""

import glob
import os
import shutil

import jax
import numpy as np
import pytest

from lvm_jax import checkpoint, train
from lvm_jax.workdir import Workdir

from conftest import tiny_config


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(Workdir(workdir).checkpoints) if d.isdigit())


def _damage(step_dir, how):
  """Damages one step directory the ways a crash, a full disk or a bad copy would."""
  data_files = [f for f in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
                if os.path.isfile(f) and "/d/" in f]
  if how == "truncate":
    for path in data_files:
      with open(path, "r+b") as f:
        f.truncate(max(os.path.getsize(path) // 2, 1))
  elif how == "delete":
    for path in data_files:
      os.remove(path)
  elif how == "corrupt":
    for path in data_files:
      size = os.path.getsize(path)
      with open(path, "r+b") as f:
        f.write(np.random.default_rng(0).bytes(size))
  elif how == "no_manifest":
    for path in glob.glob(os.path.join(step_dir, "**", "manifest.ocdbt"), recursive=True) + \
        glob.glob(os.path.join(step_dir, "**", "_METADATA"), recursive=True):
      os.remove(path)


def test_keeps_the_best_and_the_newest_steps(finished_run):
  workdir, summary = finished_run
  steps = _steps(workdir)
  history = summary["history"]
  best = max(history, key=lambda h: h["val_cosine"])["step"]
  assert steps == sorted({h["step"] for h in history[-2:]} | {best})


@pytest.mark.parametrize("how", ["truncate", "delete", "corrupt", "no_manifest"])
def test_load_falls_back_past_a_damaged_step(finished_run_copy, how, caplog):
  workdir, summary = finished_run_copy
  steps = _steps(workdir)
  assert len(steps) == 2
  best = checkpoint.load(workdir)
  _damage(os.path.join(Workdir(workdir).checkpoints, str(best.step)), how)
  loaded = checkpoint.load(workdir)
  other = [s for s in steps if s != best.step][0]
  assert loaded.step == other
  assert f"step {best.step}" in caplog.text and "cannot be restored" in caplog.text


def test_resume_falls_back_to_the_previous_step_and_redoes_the_epoch(finished_run_copy):
  workdir, summary = finished_run_copy
  newest = _steps(workdir)[-1]
  _damage(os.path.join(Workdir(workdir).checkpoints, str(newest)), "truncate")
  resumed = train.train_and_evaluate(tiny_config(), workdir)
  assert [h["epoch"] for h in resumed["history"]] == [1, 2]
  # The redone epoch 2 starts from the same epoch-1 state and data order.
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed["final_state"].params,
                         summary["final_state"].params)


def test_nothing_restorable_is_one_clear_error(finished_run_copy):
  workdir, _ = finished_run_copy
  for step in _steps(workdir):
    _damage(os.path.join(Workdir(workdir).checkpoints, str(step)), "delete")
  with pytest.raises(checkpoint.CheckpointError, match=r"no checkpoint step can be restored.*"
                                                       r"Fix: move that directory aside"):
    checkpoint.load(workdir)


def test_load_errors_name_the_problem(tmp_path, finished_run):
  with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
    checkpoint.load(str(tmp_path / "missing"))
  with pytest.raises(checkpoint.CheckpointError, match="not a training workdir"):
    checkpoint.load(str(tmp_path))
  workdir, _ = finished_run
  copy = tmp_path / "no_config"
  shutil.copytree(workdir, copy)
  os.remove(copy / "config.json")
  with pytest.raises(checkpoint.CheckpointError, match="no config.json"):
    checkpoint.load(str(copy))


@pytest.mark.parametrize("level, message, shown", [
    ("WARNING", "Given directory is read only=/run/checkpoints", False),
    ("WARNING", "CheckpointManagerOptions.read_only=True, setting save_interval_steps=0.", False),
    ("WARNING", "a checkpoint step could not be read", True),
    ("INFO", "Saving checkpoint at step 3", False)])
def test_orbax_keeps_its_warnings_but_not_the_read_only_ones(level, message, shown):
  import logging as python_logging  # pylint: disable=g-import-not-at-top
  record = python_logging.LogRecord("absl", getattr(python_logging, level),
                                    "/site-packages/orbax/checkpoint/manager.py", 1, message,
                                    None, None)
  assert checkpoint._QuietOrbax().filter(record) is shown  # pylint: disable=protected-access
