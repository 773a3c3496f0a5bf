"""Orbax checkpoints: the latest (for resume) and the best by val_cosine, plus `load`.

Layout under <workdir>/checkpoints: `latest/<step>` keeps one, `best/<step>`
keeps the one with the highest val_cosine. The evaluation module imports only
`load` from training.
"""

from __future__ import annotations

import dataclasses
import json
import logging as python_logging
import os
from typing import Any, Dict, Optional

import flax
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from lvm_jax.models import create_model

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
BEST_METRIC = "val_cosine"


class _QuietOrbax(python_logging.Filter):
  def filter(self, record):
    return record.levelno >= python_logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logs() -> None:
  """Drops Orbax's INFO chatter (dozens of lines a checkpoint); its warnings still show."""
  for handler in (logging.get_absl_handler(), *python_logging.getLogger().handlers):
    handler.addFilter(_QuietOrbax())
  python_logging.getLogger("absl").addFilter(_QuietOrbax())


class CheckpointError(RuntimeError):
  """A checkpoint or its workdir is missing or unreadable."""


class Checkpointer:
  """Saves the training state asynchronously into <workdir>/checkpoints/{latest,best}."""

  def __init__(self, workdir: str):
    root = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.latest = ocp.CheckpointManager(
        os.path.join(root, "latest"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda metrics: metrics[BEST_METRIC],
            best_mode="max"))

  def save(self, state, metrics: Dict[str, float]) -> None:
    """`state` unreplicated; saves it as latest, and as best when it beats the best."""
    step = int(state.step)
    tree = flax.serialization.to_state_dict(state)
    self.latest.save(step, args=ocp.args.StandardSave(tree))
    self.best.save(step, args=ocp.args.StandardSave(tree),
                   metrics={BEST_METRIC: float(metrics[BEST_METRIC])})

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def restore_latest(self, state_template):
    """Restores the latest checkpoint into the structure of `state_template`."""
    self.wait_until_finished()
    step = self.latest.latest_step()
    target = flax.serialization.to_state_dict(state_template)
    restored = self.latest.restore(step, args=ocp.args.StandardRestore(target))
    return flax.serialization.from_state_dict(state_template, restored)

  def wait_until_finished(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
    f.write(config.to_json(indent=2))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no {CONFIG_FILE} beside the checkpoints; pass the training "
                          "workdir (the directory given to --workdir).")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def model_from_config(config: ml_collections.ConfigDict, vector_dim: int):
  """The model that `config.model` describes, for vectors of `vector_dim`."""
  overrides = {k: v for k, v in config.model.to_dict().items() if k != "name"}
  return create_model(config.model.name, vector_dim=vector_dim, **overrides)


@dataclasses.dataclass
class LoadedModel:
  model: Any  # a LatentVectorModel: apply({"params": params}, contexts, train=False)
  params: Any
  config: ml_collections.ConfigDict
  step: int
  path: str
  workdir: str


def _locate(path: str):
  """(workdir, manager directory, step or None) for a workdir, checkpoints dir or step dir."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_DIR)):
    root = os.path.join(path, CHECKPOINT_DIR)
    for kind in ("best", "latest"):
      directory = os.path.join(root, kind)
      if os.path.isdir(directory) and any(d.isdigit() for d in os.listdir(directory)):
        return path, directory, None
    raise CheckpointError(f"{root}: no checkpoint has been written yet; train first.")
  parent, leaf = os.path.split(path)
  if leaf.isdigit():
    return os.path.dirname(os.path.dirname(parent)), parent, int(leaf)
  if leaf in ("best", "latest"):
    return os.path.dirname(parent), path, None
  if leaf == CHECKPOINT_DIR:
    return _locate(parent)
  raise CheckpointError(f"{path}: not a training workdir, checkpoints directory or checkpoint "
                        "step directory; pass the directory given to --workdir.")


def load(path: str) -> LoadedModel:
  """Model, parameters and config from a workdir (its best checkpoint) or a checkpoint dir."""
  workdir, directory, step = _locate(path)
  config = read_config(workdir)
  manager = ocp.CheckpointManager(directory)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"{directory}: holds no checkpoint step.")
  restored = manager.restore(step, args=ocp.args.StandardRestore())
  params = jax.tree_util.tree_map(np.asarray, restored["params"])
  vector_dim = int(np.asarray(params["model"]["output_head"]["kernel"]).shape[-1])
  model = model_from_config(config, vector_dim)
  logging.info("Loaded %s step %d (%s)", directory, step, config.model.name)
  return LoadedModel(model=model, params=params["model"], config=config, step=int(step),
                     path=os.path.join(directory, str(step)), workdir=workdir)
