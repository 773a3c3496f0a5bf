"""Every path in a run directory, named once.

Training writes them, `lvm_jax.status` and `lvm_jax.eval` read them; nothing
else spells a file name of the run directory.
"""

from __future__ import annotations

import dataclasses
import os


@dataclasses.dataclass(frozen=True)
class Workdir:
  """A training run directory (the --workdir of `python -m lvm_jax.main`)."""
  root: str

  def __post_init__(self):
    object.__setattr__(self, "root", os.path.abspath(os.fspath(self.root)))

  def _path(self, *parts: str) -> str:
    return os.path.join(self.root, *parts)

  @property
  def config(self) -> str:
    """The resolved config; `checkpoint.load` rebuilds the model from it."""
    return self._path("config.json")

  @property
  def history(self) -> str:
    """One entry per epoch (train and validation metrics)."""
    return self._path("history.json")

  def evaluator_baselines(self, name: str) -> str:
    """The baselines of the config.evals entry `name` (rows a model must beat)."""
    return self._path(f"{name}_baselines.json")

  @property
  def baselines(self) -> str:
    """Copy-last, mean-of-context, recency and linear on the validation set (entry `val`)."""
    return self.evaluator_baselines("val")

  @property
  def checkpoints(self) -> str:
    return self._path("checkpoints")

  @property
  def tensorboard(self) -> str:
    return self._path("tensorboard")

  @property
  def data(self) -> str:
    """The synthetic corpus, generated here when no data paths are configured."""
    return self._path("data")

  @property
  def plots(self) -> str:
    return self._path("plots")

  @property
  def history_plot(self) -> str:
    return self._path("plots", "history.png")

  @property
  def lock(self) -> str:
    """Held (flock) by the one run writing here."""
    return self._path(".lock")

  def is_training_workdir(self) -> bool:
    return os.path.isfile(self.config)
