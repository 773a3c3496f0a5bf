"""Chooses CPU / GPU / Apple Metal before JAX starts: the only module that knows platforms.

Apple GPUs have two JAX plugins: jax-metal (Apple's, jax 0.5.0 only, unmaintained;
platform "METAL") and jax-mps (maintained, current jax; platform "mps").
`--backend=metal` uses whichever is installed, jax-mps first.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging as python_logging
import os
from typing import Optional, Tuple

from absl import logging

from lvm_jax.distributed import multihost
from lvm_jax.cli import UserFacingError

# config.backend value -> JAX_PLATFORMS value (None: let JAX pick its best; "metal": see
# APPLE_PLUGINS).
PLATFORMS = {"auto": None, "cpu": "cpu", "gpu": "cuda", "metal": "METAL"}
# Apple GPU plugins in order of preference: (distribution, JAX_PLATFORMS value, reported platform).
APPLE_PLUGINS = (("jax-mps", "mps", "mps"), ("jax-metal", "METAL", "metal"))
# What jax.default_backend() reports for each choice.
_REPORTED = {"cpu": ("cpu",), "gpu": ("gpu",), "metal": ("metal", "mps")}
_INSTALL_HINT = {
    "gpu": 'install a CUDA build of JAX (pip install -U "jax[cuda12]") on a machine with an NVIDIA GPU',
    "metal": 'install a Metal plugin on an Apple-silicon Mac: pip install -e ".[mps]" (jax-mps, '
             'current jax) or pip install -e ".[metal]" (jax-metal 0.1.1 with jax 0.5.0)',
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
  if name == "metal":
    platform = installed_apple_plugin()[1]
  if platform is None:
    return
  import jax  # pylint: disable=g-import-not-at-top
  os.environ["JAX_PLATFORMS"] = platform
  jax.config.update("jax_platforms", platform)


class _NoLibtpuLine(python_logging.Filter):
  """JAX logs "Unable to initialize backend 'tpu' ... libtpu.so" at every start on a machine
  without a TPU: it tried one platform of several, and the line after it names the one used."""

  def filter(self, record):
    return "libtpu" not in record.getMessage()


def initialize(name: str) -> str:
  """Configures `name`, starts multi-host JAX when the launcher asked, checks and logs devices.

  Returns the platform JAX runs on ("cpu", "gpu", "metal").
  """
  python_logging.getLogger("jax._src.xla_bridge").addFilter(_NoLibtpuLine())
  configure(name)
  import jax  # pylint: disable=g-import-not-at-top
  if multihost.requested():
    multihost.initialize()  # bounded timeouts, CPU collectives; see distributed/multihost.py
  try:
    platform = jax.default_backend().lower()
  except (RuntimeError, AssertionError, ValueError) as error:
    # JAX raises RuntimeError, or a bare AssertionError when no plugin for the platform exists.
    reason = f"{type(error).__name__}: {error}" if str(error) else "no plugin for it is installed"
    raise BackendError(f"backend {name!r} was asked for but JAX could not start it ({reason}). "
                       f"To fix: {_INSTALL_HINT.get(name, 'use --backend=auto')}.") from error
  if name != "auto" and platform not in _REPORTED[name]:
    raise BackendError(f"backend {name!r} was asked for but JAX runs on {platform!r} "
                       f"(devices: {jax.devices()}). To fix: "
                       f"{_INSTALL_HINT[name]}, or pass --backend=auto.")
  logging.info("JAX %s on %s: process %d/%d, %d local device(s) of %d: %s", jax.__version__,
               platform, jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.local_devices())
  return platform


def installed_apple_plugin():
  """(distribution, JAX_PLATFORMS value, platform) of the installed Apple GPU plugin; jax-metal's
  spelling when none is (JAX then fails with the install hint)."""
  for plugin in APPLE_PLUGINS:
    try:
      importlib.metadata.version(plugin[0])
      return plugin
    except importlib.metadata.PackageNotFoundError:
      continue
  return APPLE_PLUGINS[-1]


def current_platform(platform: Optional[str] = None) -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (platform or jax.default_backend()).lower()


def is_metal(platform: Optional[str] = None) -> bool:
  """Apple GPUs (jax-metal, jax-mps): one device, no associative_scan in jax-metal."""
  return current_platform(platform) in _REPORTED["metal"]


# The first jax release verified to run a CPU program with donated inputs correctly when
# it was loaded from the persistent compilation cache; jax 0.5.0 does not (docs/multihost.md).
CACHE_SAFE_JAX = (0, 10)


def _jax_version() -> tuple:
  import jax  # pylint: disable=g-import-not-at-top
  return tuple(int(part) for part in jax.__version__.split(".")[:2])


def compilation_cache_in_use() -> bool:
  """Whether compiled programs may be loaded from a persistent cache (it is on and has a dir)."""
  import jax  # pylint: disable=g-import-not-at-top
  return bool(jax.config.jax_enable_compilation_cache and
              (jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")))


def donate_argnums(argnums: Tuple[int, ...], platform: Optional[str] = None) -> Tuple[int, ...]:
  """`argnums` for jax.jit, or () where donating them breaks a cached program.

  jax 0.5.0's CPU client runs a program with donated (aliased) inputs wrongly when
  it loads it from the persistent compilation cache: glibc heap corruption, inf or
  NaN where it does not crash. The same program without donation, or compiled
  afresh, is exact. So on CPU with jax < 0.10 and the cache in use, the state is
  not donated: the cache stays on, at the cost of one extra copy of the state in
  memory. Everywhere else the arguments are donated.
  """
  if (current_platform(platform) == "cpu" and _jax_version() < CACHE_SAFE_JAX
      and compilation_cache_in_use()):
    _log_donation_off_once()
    return ()
  return tuple(argnums)


@functools.lru_cache(maxsize=None)
def _log_donation_off_once() -> None:
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("jax %s on CPU with the persistent compilation cache: the train state is not "
               "donated (jax < %s runs cached programs with donated inputs wrongly; see "
               "docs/multihost.md).", jax.__version__, ".".join(map(str, CACHE_SAFE_JAX)))
