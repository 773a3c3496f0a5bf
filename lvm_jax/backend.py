"""Chooses CPU / GPU / Apple Metal before JAX starts: the only module that knows platforms."""

from __future__ import annotations

import os
from typing import Optional

from absl import logging

from lvm_jax import multihost
from lvm_jax.cli import UserFacingError

# config.backend value -> JAX_PLATFORMS value (None: let JAX pick its best).
PLATFORMS = {"auto": None, "cpu": "cpu", "gpu": "cuda", "metal": "METAL"}
# What jax.default_backend() reports for each choice.
_REPORTED = {"cpu": "cpu", "gpu": "gpu", "metal": "metal"}
_INSTALL_HINT = {
    "gpu": 'install a CUDA build of JAX (pip install -U "jax[cuda12]") on a machine with an NVIDIA GPU',
    "metal": 'install the Metal stack on an Apple-silicon Mac (pip install -e ".[metal]")',
    "cpu": "check JAX_PLATFORMS in the environment",
}


class BackendError(UserFacingError, RuntimeError):
  """The requested backend is not available."""


def configure(name: str) -> None:
  """Restricts JAX to backend `name` (auto, cpu, gpu, metal). Call before any JAX computation."""
  if name not in PLATFORMS:
    raise BackendError(f"backend {name!r} is not one of {tuple(PLATFORMS)} "
                       "(config field `backend` or flag --backend).")
  platform = PLATFORMS[name]
  if platform is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  os.environ["JAX_PLATFORMS"] = platform
  jax.config.update("jax_platforms", platform)


def initialize(name: str) -> str:
  """Configures `name`, starts multi-host JAX when the launcher asked, checks and logs devices.

  Returns the platform JAX runs on ("cpu", "gpu", "metal").
  """
  configure(name)
  import jax  # pylint: disable=g-import-not-at-top
  if multihost.requested():
    multihost.initialize()  # bounded timeouts, CPU collectives; see lvm_jax/multihost.py
  try:
    platform = jax.default_backend().lower()
  except (RuntimeError, AssertionError, ValueError) as error:
    # JAX raises RuntimeError, or a bare AssertionError when no plugin for the platform exists.
    reason = f"{type(error).__name__}: {error}" if str(error) else "no plugin for it is installed"
    raise BackendError(f"backend {name!r} was asked for but JAX could not start it ({reason}). "
                       f"To fix: {_INSTALL_HINT.get(name, 'use --backend=auto')}.") from error
  if name != "auto" and platform != _REPORTED[name]:
    raise BackendError(f"backend {name!r} was asked for but JAX runs on {platform!r} "
                       f"(devices: {jax.devices()}). To fix: "
                       f"{_INSTALL_HINT[name]}, or pass --backend=auto.")
  logging.info("JAX %s on %s: process %d/%d, %d local device(s) of %d: %s", jax.__version__,
               platform, jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.local_devices())
  return platform


def current_platform(platform: Optional[str] = None) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (platform or jax.default_backend()).lower()


def is_metal(platform: Optional[str] = None) -> bool:
  """Metal (jax-metal) lacks associative_scan, host callbacks and multi-device pmap."""
  return current_platform(platform) == "metal"


def uses_pmap(parallel: str, platform: Optional[str] = None) -> bool:
  """config.train.parallel -> pmap over local devices, or vmap under jit on one device.

  "auto" is pmap everywhere except Metal, whose one device has no pmap.
  """
  return {"auto": not is_metal(platform), "pmap": True, "vmap": False}[parallel]
