"""What the loop does at the end of an epoch besides training: record, write, stop, gate.

Each hook owns one file or one decision; only process 0 writes shared files.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

from absl import logging
from flax.training import early_stopping

from lvm_jax import atomic, multihost
from lvm_jax.workdir import Workdir


class History:
  """history.json: one entry per epoch, rewritten atomically after each."""

  def __init__(self, workdir: Workdir):
    self.path = workdir.history
    self.entries: List[Dict] = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.entries = json.load(f)

  def truncate_to(self, step: int) -> None:
    """Forgets epochs after `step` (a resume from an earlier checkpoint redoes them)."""
    self.entries = [entry for entry in self.entries if entry["step"] <= step]

  def append(self, entry: Dict) -> None:
    self.entries.append(entry)
    if multihost.is_process_0():
      atomic.write_json(self.path, self.entries)

  def best(self, metric: str, mode: str = "max") -> float:
    values = [entry[metric] for entry in self.entries if metric in entry]
    if not values:
      return -math.inf if mode == "max" else math.inf
    return max(values) if mode == "max" else min(values)


class MetricWriter:
  """TensorBoard scalars through tensorboardX (process 0 only)."""

  def __init__(self, workdir: Workdir):
    self._writer = None
    if multihost.is_process_0():
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._writer = SummaryWriter(workdir.tensorboard)

  def scalars(self, prefix: str, values: Dict[str, float], step: int) -> None:
    if self._writer is None:
      return
    for name, value in values.items():
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        self._writer.add_scalar(f"{prefix}/{name}", float(value), step)

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


NEVER = 2**62  # a patience no run reaches


def early_stopping_from(history: History, metric: str, mode: str,
                        patience: int) -> early_stopping.EarlyStopping:
  """flax's EarlyStopping (which minimises), replayed over the epochs already run.

  `patience` epochs in a row without a gain stop the run, as in the reference (flax
  stops when its count exceeds its patience, hence patience - 1); 0 never stops.
  """
  flax_patience = patience - 1 if patience > 0 else NEVER
  stopper = early_stopping.EarlyStopping(patience=flax_patience, min_delta=0.0)
  for entry in history.entries:
    if metric in entry:
      stopper = stopper.update(_minimised(entry[metric], mode))
  return stopper


def should_stop(stopper: early_stopping.EarlyStopping) -> bool:
  """Process 0's early-stopping decision, on every process: all stop at the same epoch even
  where their metrics differ (a process that stopped alone would leave the rest waiting)."""
  return multihost.agree(bool(stopper.should_stop), "early stopping")


def update_early_stopping(stopper: early_stopping.EarlyStopping, value: float,
                          mode: str) -> early_stopping.EarlyStopping:
  return stopper.update(_minimised(value, mode))


def _minimised(value: float, mode: str) -> float:
  return -value if mode == "max" else value


class SmokeGate:
  """An epoch-N gate (the reference's was val_cosine >= 0.50 at epoch 2; the default config's
  is val_r5_excl_margin >= 0: not behind the best baseline), reported PASSED / MISSED."""

  def __init__(self, epoch: int, minimum: float, metric: str = "val_r5_excl_margin"):
    self.epoch, self.minimum, self.metric = epoch, minimum, metric
    self.passed: Optional[bool] = None

  def check(self, epoch: int, metrics: Dict[str, float]) -> Optional[bool]:
    if epoch != self.epoch or self.metric not in metrics:
      return None
    self.passed = metrics[self.metric] >= self.minimum
    interval = ""
    if self.metric + "_low" in metrics:
      interval = (f", 95% interval [{metrics[self.metric + '_low']:+.4f}, "
                  f"{metrics[self.metric + '_high']:+.4f}]")
    logging.info("Epoch-%d smoke gate %s >= %.2f: %s (%.4f%s)", epoch, self.metric, self.minimum,
                 "PASSED" if self.passed else "MISSED", metrics[self.metric], interval)
    return self.passed


def write_baselines(path: str, baselines: Dict[str, Dict[str, float]]) -> None:
  if multihost.is_process_0():
    atomic.write_json(path, baselines)
