"""The state of a training run: `python -m lvm_jax.status WORKDIR`.

Prints the epoch, the best metrics beside the validation baselines (copy-last,
mean-of-context, and recency with its fitted decay and linear, both fitted on the
train windows), the model's margin over the best baseline with its 95 % paired
bootstrap interval, the smoke gate, sequences/s, the ETA and the checkpoints, and
writes WORKDIR/plots/history.png (loss parts; val cosine and val R@5 with the
baselines drawn as lines; the R@5 excl. margin with its interval). Reads only
what training wrote; safe while it runs.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from absl import app, flags

from lvm_jax import cli
from lvm_jax.data import file_io
from lvm_jax.distributed import workdir_lock
from lvm_jax.train import hooks
from lvm_jax.workdir import Workdir

LOSS_PARTS = ("train_loss", "train_infonce", "train_ar_cosine", "val_loss")
SHOWN_METRICS = ("val_cosine", "val_r5", "val_r5_excl", "val_r50_excl")
PLOTTED_METRICS = (("val_cosine", "cosine"), ("val_r5", "r5"), ("val_r5_excl", "r5_excl"))
MARGIN_METRICS = ("r1", "r5", "r50", "r1_excl", "r5_excl", "r50_excl")
PLOTTED_MARGIN = "val_r5_excl_margin"
# One per row of baselines.BASELINE_ROWS (copy-last, mean, three recency rows, linear).
BASELINE_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))


def best_baseline(baselines: Dict[str, Dict], metric: str) -> Optional[str]:
  """The baseline row with the highest value of `metric` among those that compete on it (a
  recency row only on the metrics it was fitted for): the margin's reference."""
  from lvm_jax.retrieval import margin  # pylint: disable=g-import-not-at-top
  fitted_for = {name: values["fitted_for"] for name, values in baselines.items()
                if "fitted_for" in values}
  scored = {name: values[metric] for name, values in baselines.items()
            if metric in values and margin.competes(name, metric, fitted_for)}
  return max(scored, key=scored.get) if scored else None


def margin_lines(entry: Dict, baselines: Dict[str, Dict]) -> List[str]:
  """The entry's margins over the best baseline, one line per metric that has one."""
  lines = []
  for metric in MARGIN_METRICS:
    name = f"val_{metric}_margin"
    if name not in entry:
      continue
    low, high = entry.get(name + "_low", float("nan")), entry.get(name + "_high", float("nan"))
    verdict = " (includes 0)" if low <= 0.0 <= high else ""
    lines.append(f"  {metric:<10} {entry[name]:+.4f} [{low:+.4f}, {high:+.4f}] vs "
                 f"{best_baseline(baselines, metric)}{verdict}")
  return lines


def _read_json(path: str, default):
  """The file's JSON object, `default` when it is absent; a damaged file is one error naming it."""
  if not os.path.exists(path):
    return default
  return file_io.read_json_object(path, "Fix: restore it, or rerun the training command, which "
                                  "rewrites it.", error=cli.UserFacingError)


def read_run(workdir: Workdir) -> Dict:
  """config, history, baselines and checkpoint steps of a workdir; raises if it is not one."""
  if not os.path.isdir(workdir.root):
    raise cli.UserFacingError(f"{workdir.root}: does not exist. Fix: pass the --workdir of a run.")
  if not workdir.is_training_workdir():
    raise cli.UserFacingError(f"{workdir.root}: no config.json, so no run has started here. Fix: "
                              "pass the --workdir given to python -m lvm_jax.main.")
  steps = []
  if os.path.isdir(workdir.checkpoints):
    steps = sorted(int(name) for name in os.listdir(workdir.checkpoints) if name.isdigit())
  config, baselines = _read_json(workdir.config, {}), _read_json(workdir.baselines, {})
  _check_shapes(workdir, config, baselines)
  return {"config": config, "history": hooks.History(workdir).entries, "baselines": baselines,
          "checkpoint_steps": steps, "running": workdir_lock.is_held(workdir)}


# config.train fields status reads, and their JSON types.
TRAIN_FIELDS = {"num_epochs": int, "early_stopping_patience": int, "smoke_gate_epoch": int,
                "best_metric": str, "best_mode": str}


def _check_shapes(workdir: Workdir, config: Dict, baselines: Dict) -> None:
  """Raises naming the file when config.json or the baselines are not what training writes."""
  fix = "Fix: restore it, or rerun the training command, which rewrites it."
  train = config.get("train", {})
  if not isinstance(train, dict) or not isinstance(config.get("model", {}), dict) or any(
      name in train and not isinstance(train[name], kind) for name, kind in TRAIN_FIELDS.items()):
    raise cli.UserFacingError(f"{workdir.config}: its train or model fields are not what "
                              f"training writes ({', '.join(TRAIN_FIELDS)}). {fix}")
  def metric_row(row) -> bool:  # numbers, and a recency row's list of metrics it was fitted for
    return isinstance(row, dict) and all(
        isinstance(value, list) and all(isinstance(m, str) for m in value)
        if name == "fitted_for" else isinstance(value, (int, float))
        for name, value in row.items())
  if not all(metric_row(row) for row in baselines.values()):
    raise cli.UserFacingError(f"{workdir.baselines}: is not {{baseline: {{metric: number}}}}. "
                              f"{fix}")


def summarize(run: Dict) -> List[str]:
  """The status report as lines of text."""
  config, history, baselines = run["config"], run["history"], run["baselines"]
  train = config.get("train", {})
  num_epochs = train.get("num_epochs")
  metric, mode = train.get("best_metric", "val_cosine"), train.get("best_mode", "max")
  lines = [f"model {config.get('model', {}).get('name', '?')}: epoch {len(history)} of "
           f"{num_epochs}, step {history[-1]['step'] if history else 0}"]
  if not history:
    return lines + ["no epoch has finished yet"]
  recorded = hooks.History.of(history)
  best = recorded.best_entry(metric, mode) or history[-1]
  lines.append(f"best epoch {best['epoch']} by {metric}:")
  lines.append(f"  {'predictor':<18}" + "".join(f"{name:>14}" for name in SHOWN_METRICS))
  lines.append(f"  {'model':<18}" + "".join(f"{best.get(name, float('nan')):>14.4f}"
                                           for name in SHOWN_METRICS))
  for name, values in baselines.items():
    label = f"{name} ({values['decay']:g})" if "decay" in values else name
    lines.append(f"  {label:<18}" + "".join(
        f"{values.get(m[len('val_'):], float('nan')):>14.4f}" for m in SHOWN_METRICS))
  margins = margin_lines(best, baselines)
  if margins:
    lines.append("margin over the best baseline (95% paired bootstrap over val windows):")
    lines.extend(margins)
  gate_epoch = train.get("smoke_gate_epoch", 0)
  if gate_epoch:
    # Runs from before the margin gate recorded smoke_gate_val_cosine.
    gate = hooks.SmokeGate(gate_epoch, train.get("smoke_gate_minimum",
                                                 train.get("smoke_gate_val_cosine", 0.0)),
                           train.get("smoke_gate_metric", "val_cosine"))
    entry = recorded.at_epoch(gate_epoch)
    passed = None if entry is None else gate.passes(entry)
    if passed is None:
      verdict = "not reached" if entry is None else f"{gate.metric} not recorded"
    else:
      verdict = (f"PASSED ({entry[gate.metric]:.4f})" if passed else
                 f"MISSED ({entry[gate.metric]:.4f}; {hooks.SMOKE_GATE_NOTE})")
    lines.append(f"smoke gate {gate.metric} >= {gate.minimum:.2f} at epoch {gate_epoch}: {verdict}")
  last = history[-1]
  lines.append(f"speed {last.get('sequences_per_s', float('nan')):.1f} sequences/s, "
               f"{last.get('time', float('nan')):.1f} s per epoch (last epoch)")
  ended = hooks.how_it_ended(history, train)
  if run.get("running", True) and num_epochs and len(history) < num_epochs:
    mean_time = sum(h.get("time", 0.0) for h in history) / len(history)
    lines.append(f"running: ETA {(num_epochs - len(history)) * mean_time / 60:.1f} min for "
                 f"{num_epochs - len(history)} more epoch(s), unless early stopping ends it")
  elif ended:
    lines.append(f"finished: {ended}")
  else:
    lines.append(f"not running: interrupted after {len(history)} of {num_epochs} epochs; rerun "
                 "the same command to resume")
  steps = run["checkpoint_steps"]
  lines.append(f"checkpoints: steps {steps}" if steps else "checkpoints: none yet")
  return lines


def plot_history(run: Dict, path: str) -> Optional[str]:
  """Writes the history plot; returns its path, or None when there is nothing to plot."""
  history, baselines = run["history"], run["baselines"]
  if not history:
    return None
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise cli.UserFacingError("plotting needs matplotlib. Fix: pip install -e '.[plots]'.") from error
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  epochs = [h["epoch"] for h in history]
  figure, axes = pyplot.subplots(1, 2 + len(PLOTTED_METRICS), figsize=(20, 4))
  for part in LOSS_PARTS:
    if any(part in h for h in history):
      axes[0].plot(epochs, [h.get(part, float("nan")) for h in history], marker=".", label=part)
  axes[0].set_title("loss parts")
  for axis, (metric, baseline_key) in zip(axes[1:], PLOTTED_METRICS):
    axis.plot(epochs, [h.get(metric, float("nan")) for h in history], marker=".", label="model")
    for (name, values), style in zip(baselines.items(), BASELINE_STYLES):
      if baseline_key in values:
        axis.axhline(values[baseline_key], linestyle=style, color="gray", label=name)
    axis.set_title(metric)
  axis = axes[-1]
  nan = float("nan")
  axis.plot(epochs, [h.get(PLOTTED_MARGIN, nan) for h in history], marker=".", label="margin")
  axis.fill_between(epochs, [h.get(PLOTTED_MARGIN + "_low", nan) for h in history],
                    [h.get(PLOTTED_MARGIN + "_high", nan) for h in history], alpha=0.3,
                    label="95% interval")
  axis.axhline(0.0, color="gray", linestyle="--")
  axis.set_title(f"{PLOTTED_MARGIN} (vs best baseline)")
  for axis in axes:
    axis.set_xlabel("epoch")
    axis.legend(fontsize=8)
  figure.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  figure.savefig(path, dpi=80)
  pyplot.close(figure)
  return path


@cli.exits_cleanly_on_user_errors
def main(argv) -> None:
  if len(argv) != 2:
    raise app.UsageError(f"python -m lvm_jax.status takes one argument, the run's WORKDIR (the "
                         f"--workdir given to python -m lvm_jax.main), not {len(argv) - 1}. Fix: "
                         "python -m lvm_jax.status RUN/realtext_tiny.")
  workdir = Workdir(argv[1])
  run = read_run(workdir)
  print("\n".join(summarize(run)))
  plotted = plot_history(run, workdir.history_plot)
  if plotted:
    print(f"plot: {plotted}")


if __name__ == "__main__":
  cli.run(main)
