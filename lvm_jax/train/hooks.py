"""What the loop does at the end of an epoch besides training: record, write, stop, gate.

Each hook owns one file or one decision; only process 0 writes shared files.
MetricWriter is the one metrics sink: TensorBoard, history.json and the log line.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Dict, List, Optional

from absl import logging

from lvm_jax import atomic, config_base
from lvm_jax.distributed import multihost
from lvm_jax.workdir import Workdir

# The metrics of the per-epoch log line; every metric goes to history.json and TensorBoard.
EPOCH_LINE_METRICS = ("train_loss", "val_cosine", "val_r5_excl", "val_r5_excl_margin")


def read_history(path: str) -> List[Dict]:
  """history.json's entries; raises ValueError naming the file and the fix when it is not a list
  of epoch entries (training writes it whole, so damage came from outside)."""
  fix = ("Fix: restore it from a backup, or delete it: rerunning the training command rewrites "
         "it from the epochs after the latest checkpoint.")
  try:
    with open(path, encoding="utf-8") as f:
      entries = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as error:
    raise ValueError(f"{path}: is not valid JSON ({error}). {fix}") from error
  if not isinstance(entries, list) or not all(
      isinstance(entry, dict) and isinstance(entry.get("epoch"), int) and
      isinstance(entry.get("step"), int) and
      all(isinstance(value, (int, float)) for value in entry.values()) for entry in entries):
    raise ValueError(f"{path}: is not a list of epoch entries (objects of numbers with an "
                     f"integer epoch and step). {fix}")
  return entries


class History:
  """history.json: one entry per epoch, rewritten atomically after each."""

  def __init__(self, workdir: Optional[Workdir], entries: Optional[List[Dict]] = None):
    self.path = workdir.history if workdir is not None else None
    self.entries: List[Dict] = list(entries or [])
    if entries is None and self.path and os.path.exists(self.path):
      self.entries = read_history(self.path)

  @classmethod
  def of(cls, entries: List[Dict]) -> "History":
    """A read-only History of entries already read (status reads them once)."""
    return cls(None, entries)

  def truncate_to(self, step: int) -> None:
    """Forgets epochs after `step` (a resume from an earlier checkpoint redoes them)."""
    self.entries = [entry for entry in self.entries if entry["step"] <= step]

  def append(self, entry: Dict) -> None:
    if self.path is None:
      raise ValueError("History.of(...) is read-only: construct it from a Workdir to append.")
    self.entries.append(entry)
    if multihost.is_process_0():
      atomic.write_json(self.path, self.entries)

  def best_entry(self, metric: str, mode: str = "max") -> Optional[Dict]:
    """The first entry with the best `metric` (None when no entry has it)."""
    scored = [entry for entry in self.entries if metric in entry]
    if not scored:
      return None
    return (max if mode == "max" else min)(scored, key=lambda entry: entry[metric])

  def best(self, metric: str, mode: str = "max") -> float:
    entry = self.best_entry(metric, mode)
    if entry is None:
      return -math.inf if mode == "max" else math.inf
    return entry[metric]

  def at_epoch(self, epoch: int) -> Optional[Dict]:
    return next((entry for entry in self.entries if entry["epoch"] == epoch), None)


def history_key(tag: str) -> str:
  """The naming rule: TensorBoard tag `val/r5_excl` is history key `val_r5_excl`."""
  return tag.replace("/", "_")


class MetricWriter:
  """The one metrics sink: `write(step, {tag: value}, epoch=...)`.

  Naming rule: a metric is measured once, as a tag `<prefix>/<key>` (prefix: the
  config.evals entry's name, `train` for the epoch's training means, `train_step`
  for the per-step ones); TensorBoard shows the tag, and history.json and the log
  line use `history_key(tag)`, the tag with every '/' replaced by '_'
  (`val/r5_excl` <-> `val_r5_excl`, `retrieval/contain50_excl` <->
  `retrieval_contain50_excl`). A tag without a prefix (`lr`, `time`) is its own key.
  A write with `epoch` goes to all three sinks (history gets one entry: epoch, step
  and the metrics); one without goes to TensorBoard only (per-step values, which
  the progress bar also shows). TensorBoard is written through tensorboardX, on
  process 0 only.
  """

  def __init__(self, workdir: Workdir, history: History):
    self.history = history
    self._writer = None
    if multihost.is_process_0():
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(workdir.tensorboard)

  def write(self, step: int, metrics: Dict[str, float], epoch: Optional[int] = None) -> Dict:
    """Writes the numeric values; returns the history entry (empty without `epoch`)."""
    scalars = {tag: float(value) for tag, value in metrics.items()
               if isinstance(value, numbers.Real) and not isinstance(value, bool)}
    keys = {}
    for tag in scalars:
      key = history_key(tag)
      if key in keys or key in ("epoch", "step"):
        raise ValueError(f"metrics {keys.get(key, key)!r} and {tag!r} share the history key "
                         f"{key!r}: rename one (config.evals entry names and metric keys).")
      keys[key] = tag
    if self._writer is not None:
      for tag, value in scalars.items():
        self._writer.add_scalar(tag, value, step)
    if epoch is None:
      return {}
    entry = {"epoch": epoch, "step": step, **{history_key(t): v for t, v in scalars.items()}}
    self.history.append(entry)
    logging.info("%s", epoch_line(entry))
    self.flush()
    return entry

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def epoch_line(entry: Dict) -> str:
  """A few metrics of an epoch (the margin with its interval), for the log; the rest are
  counted and left to history.json and TensorBoard."""
  shown = []
  for key in EPOCH_LINE_METRICS:
    if key in entry:
      interval = (f" [{entry[key + '_low']:+.4f}, {entry[key + '_high']:+.4f}]"
                  if key + "_low" in entry and key + "_high" in entry else "")
      shown.append(f"{key}={entry[key]:.4f}{interval}")
  hidden = len(entry) - 2 - len(shown)
  return (f"epoch {entry['epoch']}: {' '.join(shown)} ({entry.get('time', float('nan')):.1f} s; "
          f"{hidden} more metrics in history.json and TensorBoard)")


NEVER = 2**62  # a patience no run reaches


def early_stopping_from(history: History, metric: str, mode: str, patience: int):
  """flax's EarlyStopping (which minimises), replayed over the epochs already run.

  `patience` epochs in a row without a gain stop the run, as in the reference (flax
  stops when its count exceeds its patience, hence patience - 1); 0 never stops.
  """
  from flax.training import early_stopping  # pylint: disable=g-import-not-at-top  (status: no JAX)
  flax_patience = patience - 1 if patience > 0 else NEVER
  stopper = early_stopping.EarlyStopping(patience=flax_patience, min_delta=0.0)
  for entry in history.entries:
    if metric in entry:
      stopper = stopper.update(_minimised(entry[metric], mode))
  return stopper


def should_stop(stopper) -> bool:
  """Process 0's early-stopping decision, on every process: all stop at the same epoch even
  where their metrics differ (a process that stopped alone would leave the rest waiting)."""
  return multihost.agree(bool(stopper.should_stop), "early stopping")


def update_early_stopping(stopper, value: float, mode: str):
  return stopper.update(_minimised(value, mode))


def _minimised(value: float, mode: str) -> float:
  return -value if mode == "max" else value


def how_it_ended(entries: List[Dict], train) -> Optional[str]:
  """Why a run that no longer runs ended, from its history and config.train (a dict or
  ConfigDict): early stopping (the epoch, the patience, the best metric and its epoch) or every
  epoch run; None when neither (it was interrupted: rerunning resumes it). The loop's last line
  and `status` both say this."""
  metric, mode = config_base.best_metric_of({"train": train})
  patience, num_epochs = train.get("early_stopping_patience", 0), train.get("num_epochs")
  history = History.of(entries)
  best = history.best_entry(metric, mode)
  best_text = (f"best {metric} {best[metric]:.4f} at epoch {best['epoch']}" if best else
               f"no {metric} recorded")
  if not entries or not num_epochs:
    return None
  if len(entries) >= num_epochs:
    return f"all {num_epochs} epochs ran; {best_text}"
  if early_stopping_from(history, metric, mode, patience).should_stop:
    return (f"early stopping at epoch {entries[-1]['epoch']} of {num_epochs}: {metric} did not "
            f"improve for {patience} epochs (train.early_stopping_patience={patience}); "
            f"{best_text}")
  return None


SMOKE_GATE_NOTE = ("a progress check, not a failure: training goes on and the best checkpoint "
                   "is kept; train.smoke_gate_epoch=0 turns it off")


class SmokeGate:
  """An epoch-N gate (the reference's was val_cosine >= 0.50 at epoch 2; the default config's
  is val_r5_excl_margin >= 0: not behind the best baseline), reported PASSED / MISSED."""

  def __init__(self, epoch: int, minimum: float, metric: str = "val_r5_excl_margin"):
    self.epoch, self.minimum, self.metric = epoch, minimum, metric
    self.passed: Optional[bool] = None

  def passes(self, metrics: Dict[str, float]) -> Optional[bool]:
    """The verdict on one epoch's metrics; None when the metric was not recorded."""
    if self.metric not in metrics:
      return None
    return metrics[self.metric] >= self.minimum

  def check(self, epoch: int, metrics: Dict[str, float]) -> Optional[bool]:
    """At the gate's epoch, judges and logs PASSED / MISSED; otherwise None."""
    if epoch != self.epoch or self.passes(metrics) is None:
      return None
    self.passed = self.passes(metrics)
    interval = ""
    if self.metric + "_low" in metrics:
      interval = (f", 95% interval [{metrics[self.metric + '_low']:+.4f}, "
                  f"{metrics[self.metric + '_high']:+.4f}]")
    logging.info("Epoch-%d smoke gate %s >= %.2f: %s (%.4f%s)%s", epoch, self.metric,
                 self.minimum, "PASSED" if self.passed else "MISSED", metrics[self.metric],
                 interval, "" if self.passed else f"; {SMOKE_GATE_NOTE}")
    return self.passed


def write_baselines(path: str, baselines: Dict[str, Dict[str, float]]) -> None:
  if multihost.is_process_0():
    atomic.write_json(path, baselines)
