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

  @property
  def baselines(self) -> str:
    """Copy-last and mean-of-context metrics on the validation set."""
    return self._path("val_baselines.json")

  @property
  def retrieval_baselines(self) -> str:
    """Copy-last, mean-of-context and oracle rows of the in-loop retrieval evaluation."""
    return self._path("retrieval_baselines.json")

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
