"""Orbax checkpoints of the training state, and `load` for evaluation and tools.

One CheckpointManager under <workdir>/checkpoints/<step> keeps the newest
`keep_latest` steps (resume) and the best step by `best_metric` (evaluation),
through Orbax preservation policies. Restoring walks back from the newest
step past any that cannot be read (a truncated or deleted file, a missing
manifest), says which and why, and uses the newest good one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging as python_logging
import os
import shutil
import sys
from typing import Any, Dict, Iterable, Optional

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers

from lvm_jax import atomic, cli
from lvm_jax.distributed import multihost
from lvm_jax.cli import UserFacingError
from lvm_jax import config_base
from lvm_jax.config_base import BestMode
from lvm_jax.data import file_io
from lvm_jax.models import model_from_config
from lvm_jax.workdir import Workdir

DEFAULT_BEST_METRIC = config_base.BEST_METRIC


# Orbax warnings that every read-only load gives (eval, predict, status): this module asks for
# read_only, so they report what it asked for, not a problem.
HARMLESS_ORBAX_WARNINGS = ("Given directory is read only", "read_only=True, setting")


class _QuietOrbax(python_logging.Filter):
  def filter(self, record):
    if "/orbax/" not in record.pathname:
      return True
    return (record.levelno >= python_logging.WARNING and
            not any(text in record.getMessage() for text in HARMLESS_ORBAX_WARNINGS))


def quiet_orbax_logs() -> None:
  """Drops Orbax's INFO chatter (dozens of lines a checkpoint) and the warnings of a read-only
  load (HARMLESS_ORBAX_WARNINGS); its other warnings still show."""
  for handler in (logging.get_absl_handler(), *python_logging.getLogger().handlers):
    handler.addFilter(_QuietOrbax())
  python_logging.getLogger("absl").addFilter(_QuietOrbax())


class CheckpointError(UserFacingError, RuntimeError):
  """A checkpoint or its workdir is missing or unreadable."""


def _manager(directory: str, *, keep_latest: int, best_metric: str, best_mode: str,
             read_only: bool = False) -> ocp.CheckpointManager:
  reverse = best_mode == BestMode.MIN
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep_latest),
      checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[best_metric],
                                reverse=reverse, n=1, keep_checkpoints_without_metrics=False)])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=None if read_only else policy, create=not read_only,
      best_fn=lambda metrics: metrics[best_metric], best_mode=best_mode, read_only=read_only,
      async_options=ocp.AsyncOptions(timeout_secs=multihost.timeouts().barrier))
  return ocp.CheckpointManager(directory, options=options)


def _restore_first_good(manager: ocp.CheckpointManager, steps: Iterable[int], directory: str,
                        restore_args) -> tuple:
  """(step, restored tree) of the first step in `steps` that restores; logs every bad one."""
  failures = []
  # Before the first read: a damaged step's abandoned reads can report while its error is still
  # on its way up (seen under load), before an except clause could install the filters.
  _quiet_abandoned_reads()
  for step in steps:
    try:
      return step, manager.restore(step, args=restore_args)
    except Exception as error:  # Orbax raises many types for damaged steps
      reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
      failures.append(f"step {step} ({reason})")
      logging.warning("Checkpoint step %d in %s cannot be restored (%s); trying an earlier one.",
                      step, directory, reason)
  raise CheckpointError(
      f"{directory}: no checkpoint step can be restored: {'; '.join(failures) or 'none saved'}. "
      "Fix: move that directory aside to start afresh, or restore it from a backup.")


def _is_abandoned_read(unraisable) -> bool:
  """A read of a damaged step that Orbax abandoned: TensorStore finishes it after Orbax's event
  loop closed, and reports the RuntimeError as unraisable."""
  return (unraisable.exc_type is RuntimeError and
          str(unraisable.exc_value) == "Event loop is closed")


class _NoAbandonedReads(python_logging.Filter):
  """Drops asyncio's "Task exception was never retrieved" for Orbax's own tasks only."""

  def filter(self, record):
    message = record.getMessage()
    return not (message.startswith("Task exception was never retrieved") and "orbax" in message)


@functools.lru_cache(maxsize=None)
def _quiet_abandoned_reads() -> None:
  """After a step fails to restore, its other reads end later, each printing a traceback
  (newer Orbax; the failure itself is logged once, by _restore_first_good). Drops those, once
  per process, leaving every other unraisable exception and asyncio message as it was. Called
  before restoring, as the reads may report before the failed restore raises."""
  previous = sys.unraisablehook

  def unraisablehook(unraisable):
    if not _is_abandoned_read(unraisable):
      previous(unraisable)

  sys.unraisablehook = unraisablehook
  python_logging.getLogger("asyncio").addFilter(_NoAbandonedReads())


def _write_fault(error: BaseException) -> Optional[OSError]:
  """The OSError of a full disk or I/O error behind `error` (its causes, or TensorStore's text)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in cli.ENVIRONMENT_ERRNOS:
      return error
    for number in cli.ENVIRONMENT_ERRNOS:
      if os.strerror(number) in str(error):
        return OSError(number, os.strerror(number))
    error = error.__cause__ or error.__context__
  return None


class Checkpointer:
  """Saves the training state asynchronously into one Orbax manager; restores with fallback."""

  def __init__(self, directory: str, *, keep_latest: int = 2,
               best_metric: str = DEFAULT_BEST_METRIC, best_mode: str = "max"):
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    self._saving: Optional[int] = None  # the step of the newest save, maybe still running
    self.manager = _manager(self.directory, keep_latest=keep_latest, best_metric=best_metric,
                            best_mode=best_mode)

  def save(self, state, metrics: Dict[str, float]) -> None:
    """`state` unreplicated. Epochs without the best metric are kept as latest only.

    A full disk raises cli.EnvironmentFault naming the step; Orbax writes into a
    temporary directory and renames it when complete, so earlier steps stay good.
    """
    tree = flax.serialization.to_state_dict(state)
    best = {self.best_metric: float(metrics[self.best_metric])} \
        if self.best_metric in metrics else None
    step = int(state.step)
    with self._write_faults_named(step):
      self.manager.save(step, args=ocp.args.StandardSave(tree), metrics=best)
    self._saving = step

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def restore_latest(self, state_template):
    """The newest restorable step into the structure of `state_template`; None if none saved."""
    self.wait_until_finished()
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    target = flax.serialization.to_state_dict(state_template)
    step, restored = _restore_first_good(self.manager, steps, self.directory,
                                         ocp.args.StandardRestore(target))
    if step != steps[0]:
      logging.warning("Resuming from step %d instead of the newest step %d, which is damaged.",
                      step, steps[0])
      self._set_aside([s for s in steps if s > step])
    multihost.assert_same_on_every_process(restored, f"training state after restoring step {step} "
                                           f"of {self.directory}")
    return flax.serialization.from_state_dict(state_template, restored)

  def _set_aside(self, damaged_steps) -> None:
    """Renames damaged steps to <step>.damaged (kept for inspection) so they can be redone.

    Process 0 renames once every process has finished reading; all reload after.
    """
    multihost.barrier("checkpoint restored")
    if multihost.is_process_0():
      for step in damaged_steps:
        path = os.path.join(self.directory, str(step))
        if os.path.isdir(path):
          aside = f"{path}.damaged"
          if os.path.exists(aside):
            shutil.rmtree(aside)
          os.rename(path, aside)
          logging.warning("Moved the damaged step %s aside to %s.", path, aside)
    multihost.barrier("damaged steps set aside")
    self.manager.reload()

  def wait_until_finished(self) -> None:
    with self._write_faults_named(self._saving):
      self.manager.wait_until_finished()

  @contextlib.contextmanager
  def _write_faults_named(self, step: Optional[int]):
    """Orbax's (often wrapped, often asynchronous) write errors as one line naming the step."""
    try:
      yield
    except Exception as error:  # Orbax and TensorStore wrap OSError in their own types
      fault = _write_fault(error)
      if fault is None:
        raise
      path = os.path.join(self.directory, str(step) if step is not None else "")
      raise cli.write_failed(path, fault) from error

  def close(self) -> None:
    self.manager.close()


def write_config(workdir: Workdir, config: ml_collections.ConfigDict) -> None:
  atomic.write_text(workdir.config, config.to_json(indent=2))


def read_config(workdir: Workdir) -> ml_collections.ConfigDict:
  if not os.path.exists(workdir.config):
    raise CheckpointError(f"{workdir.config}: no config.json beside the checkpoints; pass the "
                          "training workdir (the directory given to --workdir).")
  fix = ("Fix: restore config.json from a backup, or rerun training into a new --workdir; it is "
         "the resolved config the model is rebuilt from.")
  value = file_io.read_json_object(workdir.config, fix, error=CheckpointError,
                                   expected="the config object.")
  for group in ("model", "train", "data"):
    if group in value and not isinstance(value[group], dict):
      raise CheckpointError(f"{workdir.config}: field {group!r} is {value[group]!r}, expected an "
                            f"object of config.{group}'s fields. {fix}")
  if not isinstance(value.get("model", {}).get("name"), str):
    raise CheckpointError(f"{workdir.config}: field 'model.name' is missing or not a string, so "
                          f"the model cannot be rebuilt. {fix}")
  return ml_collections.ConfigDict(value)


@dataclasses.dataclass
class LoadedModel:
  model: Any  # a LatentVectorModel: apply({"params": params}, contexts, train=False)
  params: Any
  config: ml_collections.ConfigDict
  step: int
  path: str
  workdir: str


def _locate(path: str):
  """(workdir, checkpoints directory, step or None) for a workdir, checkpoints dir or step dir."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: does not exist. Fix: pass the directory given to --workdir "
                          "of a training run (or one of its checkpoint step directories).")
  workdir = Workdir(path)
  if os.path.isdir(workdir.checkpoints):
    return workdir, workdir.checkpoints, None
  parent, leaf = os.path.split(path)
  if leaf.isdigit():
    return Workdir(os.path.dirname(parent)), parent, int(leaf)
  raise CheckpointError(f"{path}: not a training workdir (no checkpoints/ in it) nor a checkpoint "
                        "step directory. Fix: pass the directory given to --workdir.")


def load(path: str) -> LoadedModel:
  """Model, parameters and config from a workdir (its best step, else the newest good one)."""
  workdir, directory, step = _locate(path)
  config = read_config(workdir)
  best_metric, best_mode = config_base.best_metric_of(config)
  manager = _manager(directory, keep_latest=1, best_metric=best_metric, best_mode=best_mode,
                     read_only=True)
  if step is None:
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise CheckpointError(f"{directory}: no checkpoint has been written yet. Fix: train first.")
    best = manager.best_step()
    steps = ([best] if best is not None else []) + [s for s in steps if s != best]
  else:
    steps = [step]
  step, restored = _restore_first_good(manager, steps, directory, ocp.args.StandardRestore())
  params = jax.tree_util.tree_map(np.asarray, restored["params"])
  vector_dim = int(config.get("data", {}).get("vector_dim", 0)) or \
      int(np.asarray(params["model"]["output_head"]["kernel"]).shape[-1])
  model = model_from_config(config, vector_dim)
  logging.info("Loaded %s step %d (%s)", directory, step, config.model.name)
  return LoadedModel(model=model, params=params["model"], config=config, step=int(step),
                     path=os.path.join(directory, str(step)), workdir=workdir.root)


def write_state(workdir: Workdir, config: ml_collections.ConfigDict, state,
                metrics: Dict[str, float]) -> None:
  """config.json and one checkpoint of `state` (kept as latest and best), for a state made
  outside the loop (the reference import); waits until it is on disk."""
  write_config(workdir, config)
  best_metric, best_mode = config_base.best_metric_of(config)
  saver = Checkpointer(workdir.checkpoints, best_metric=best_metric, best_mode=best_mode)
  try:
    saver.save(state, metrics)
  finally:
    saver.wait_until_finished()
    saver.close()
