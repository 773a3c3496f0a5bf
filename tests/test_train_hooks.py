"""hooks: early stopping replayed from history, the smoke gate, history truncation, and the one
metrics sink (TensorBoard and history.json under one naming rule)."""

import pytest

from lvm_jax.train import hooks
from lvm_jax.workdir import Workdir


def test_early_stopping_replays_history_and_counts_epochs_without_gain(tmp_path):
  history = hooks.History(Workdir(tmp_path))
  for epoch, value in enumerate([0.3, 0.5, 0.4, 0.45], 1):
    history.append({"epoch": epoch, "step": epoch * 10, "val_cosine": value})
  stopper = hooks.early_stopping_from(history, "val_cosine", "max", patience=3)
  assert stopper.patience_count == 2 and not stopper.should_stop
  stopper = hooks.update_early_stopping(stopper, 0.49, "max")
  assert stopper.should_stop  # three epochs in a row without a gain
  never = hooks.early_stopping_from(history, "val_cosine", "max", patience=0)
  for _ in range(10):
    never = hooks.update_early_stopping(never, 0.0, "max")
  assert not never.should_stop
  reread = hooks.History(Workdir(tmp_path))
  reread.truncate_to(20)
  assert [e["epoch"] for e in reread.entries] == [1, 2]
  assert reread.best("val_cosine") == 0.5


def test_smoke_gate_reports_at_its_epoch_only():
  gate = hooks.SmokeGate(epoch=2, minimum=0.5, metric="val_cosine")
  assert gate.check(1, {"val_cosine": 0.9}) is None
  assert gate.check(2, {"val_cosine": 0.49}) is False
  assert gate.passed is False


def test_smoke_gate_judges_the_margin_over_the_best_baseline_by_default():
  gate = hooks.SmokeGate(epoch=2, minimum=0.0)
  behind = {"val_cosine": 0.9, "val_r5_excl_margin": -0.01, "val_r5_excl_margin_low": -0.03,
            "val_r5_excl_margin_high": 0.01}
  assert gate.check(2, behind) is False  # a high cosine does not pass it
  assert gate.check(2, {**behind, "val_r5_excl_margin": 0.02}) is True


def test_processes_with_different_metrics_stop_at_process_zeros_epoch(tmp_path):
  """Two processes (tests/multihost_probe.py stop): process 1's val_cosine stalls earlier, so
  alone it would stop at epoch 5; process 0 decides, and both stop at its epoch 7."""
  import multihost_probe  # pylint: disable=g-import-not-at-top  (tests/ is on sys.path)
  processes = multihost_probe.start_pair("stop", str(tmp_path / "stop"))
  try:
    codes = [process.wait(timeout=300) for process in processes]
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  logs = [multihost_probe.log_of(process) for process in processes]
  assert codes == [0, 0], logs
  assert "stopped at epoch 7; alone it would stop at epoch 7" in logs[0], logs[0]
  assert "stopped at epoch 7; alone it would stop at epoch 5" in logs[1], logs[1]
  assert "early stopping is True here and False on process 0" in logs[1]


def test_writer_feeds_tensorboard_and_history_under_one_naming_rule(tmp_path):
  from event_files import read_scalars  # pylint: disable=g-import-not-at-top  (tests/)
  workdir = Workdir(tmp_path)
  history = hooks.History(workdir)
  writer = hooks.MetricWriter(workdir, history)
  assert writer.write(5, {"train_step/loss": 0.5}) == {}  # per step: TensorBoard only
  entry = writer.write(10, {"train/loss": 0.25, "val/r5_excl": 0.125, "lr": 1e-3}, epoch=1)
  writer.close()
  assert entry == {"epoch": 1, "step": 10, "train_loss": 0.25, "val_r5_excl": 0.125, "lr": 1e-3}
  assert hooks.History(workdir).entries == [entry]
  scalars = read_scalars(workdir.tensorboard)
  assert scalars["train_step/loss"] == {5: 0.5}
  for tag in ("train/loss", "val/r5_excl", "lr"):
    assert scalars[tag] == {10: pytest.approx(entry[hooks.history_key(tag)])}
  with pytest.raises(ValueError, match="share the history key 'val_r5'"):
    writer.write(11, {"val/r5": 1.0, "val_r5": 2.0}, epoch=2)


def test_history_best_entry_is_what_status_reads():
  history = hooks.History.of([{"epoch": 1, "step": 1, "m": 0.2}, {"epoch": 2, "step": 2, "m": 0.1},
                              {"epoch": 3, "step": 3}])
  assert history.best_entry("m")["epoch"] == 1 and history.best_entry("m", "min")["epoch"] == 2
  assert history.best_entry("absent") is None and history.at_epoch(3) == {"epoch": 3, "step": 3}
  with pytest.raises(ValueError, match="read-only"):
    history.append({"epoch": 4, "step": 4})


def _entries(values):
  return [{"epoch": epoch, "step": epoch * 10, "val_cosine": value}
          for epoch, value in enumerate(values, 1)]


TRAIN = {"best_metric": "val_cosine", "best_mode": "max", "early_stopping_patience": 2,
         "num_epochs": 10}


def test_how_it_ended_names_early_stopping_its_patience_and_the_best_epoch():
  assert hooks.how_it_ended(_entries([0.1, 0.3, 0.2, 0.25]), TRAIN) == (
      "early stopping at epoch 4 of 10: val_cosine did not improve for 2 epochs "
      "(train.early_stopping_patience=2); best val_cosine 0.3000 at epoch 2")


def test_how_it_ended_tells_a_full_run_from_an_interrupted_one():
  assert hooks.how_it_ended(_entries([0.1] + [0.2] * 9), TRAIN) == (
      "all 10 epochs ran; best val_cosine 0.2000 at epoch 2")
  # One epoch without a gain is within the patience: the run was stopped from outside.
  assert hooks.how_it_ended(_entries([0.1, 0.3, 0.2]), TRAIN) is None
  assert hooks.how_it_ended(_entries([0.1, 0.3, 0.2, 0.25]),
                            {**TRAIN, "early_stopping_patience": 0}) is None


def test_epoch_line_is_short_and_points_to_the_full_record():
  entry = {"epoch": 3, "step": 30, "train_loss": 3.21749, "val_cosine": 0.5, "val_r1": 0.1,
           "val_r5_excl": 0.688, "val_r5_excl_margin": -0.01647,
           "val_r5_excl_margin_low": -0.04119, "val_r5_excl_margin_high": 0.005489,
           "lr": 0.002, "time": 1.149}
  assert hooks.epoch_line(entry) == (
      "epoch 3: train_loss=3.2175 val_cosine=0.5000 val_r5_excl=0.6880 "
      "val_r5_excl_margin=-0.0165 [-0.0412, +0.0055] (1.1 s; 5 more metrics in history.json "
      "and TensorBoard)")
