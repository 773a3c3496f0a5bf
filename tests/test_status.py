"""status: the report beside the baselines, the plot, and its errors."""

import os
import subprocess
import sys

from lvm_jax import status
from lvm_jax.workdir import Workdir


def test_report_shows_best_metrics_beside_baselines_and_writes_the_plot(finished_run_copy):
  workdir, summary = finished_run_copy
  run = status.read_run(Workdir(workdir))
  lines = status.summarize(run)
  text = "\n".join(lines)
  assert text.startswith("model mamba_s: epoch 2 of 2")
  best = max(summary["history"], key=lambda h: h["val_cosine"])
  assert f"best epoch {best['epoch']} by val_cosine" in text
  model_row = next(l for l in lines if l.startswith("  model "))
  assert f"{best['val_cosine']:.4f}" in model_row
  copy_row = next(l for l in lines if l.startswith("  copy_last "))
  assert f"{summary['baselines']['copy_last']['cosine']:.4f}" in copy_row
  assert "smoke gate val_r5_excl_margin >= 0.00 at epoch 2: " in text
  decay = summary["baselines"]["recency"]["decay"]
  assert any(l.startswith(f"  recency ({decay:g}) ") for l in lines)
  assert any(l.startswith("  linear ") for l in lines)
  margin = next(l for l in lines if l.startswith("  r5_excl "))
  assert margin.startswith(f"  r5_excl    {best['val_r5_excl_margin']:+.4f} "
                           f"[{best['val_r5_excl_margin_low']:+.4f}, ")
  assert margin.split(" vs ")[1].split(" ")[0] == status.best_baseline(summary["baselines"],
                                                                         "r5_excl")
  assert "finished" in text
  path = status.plot_history(run, Workdir(workdir).history_plot)
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cli_runs_and_fails_cleanly(finished_run_copy, tmp_path):
  workdir, _ = finished_run_copy
  ok = subprocess.run([sys.executable, "-m", "lvm_jax.status", workdir], capture_output=True,
                      text=True, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert "plot: " in ok.stdout and os.path.exists(Workdir(workdir).history_plot)
  bad = subprocess.run([sys.executable, "-m", "lvm_jax.status", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2
  assert bad.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'none'}: does not exist. Fix: pass the --workdir of a run.")


def _run_of(values, num_epochs, patience):
  history = [{"epoch": epoch, "step": epoch * 10, "val_cosine": value, "time": 1.0}
             for epoch, value in enumerate(values, 1)]
  return {"config": {"model": {"name": "mamba_s"},
                     "train": {"num_epochs": num_epochs, "early_stopping_patience": patience}},
          "history": history, "baselines": {}, "checkpoint_steps": [10], "running": False}


def test_status_says_why_a_stopped_run_ended():
  early = status.summarize(_run_of([0.1, 0.3, 0.2, 0.25], num_epochs=20, patience=2))
  assert ("finished: early stopping at epoch 4 of 20: val_cosine did not improve for 2 epochs "
          "(train.early_stopping_patience=2); best val_cosine 0.3000 at epoch 2") in early
  interrupted = status.summarize(_run_of([0.1, 0.3, 0.2], num_epochs=20, patience=2))
  assert ("not running: interrupted after 3 of 20 epochs; rerun the same command to resume"
          in interrupted)
