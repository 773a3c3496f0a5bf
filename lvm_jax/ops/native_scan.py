"""The selective scan as a native CPU kernel (`selective_scan(..., mode="native")`).

XLA:CPU runs the scan's backward as many small dots and one memory pass per
reduction; native_scan.cc does each (channel, batch row) pair's whole time loop
in one fused loop instead (docs/benchmarks.md has the figures). It is bound
through XLA's FFI, so it runs inside jitted, sharded and differentiated code.

Nothing is downloaded or prebuilt: the first use in a process compiles
native_scan.cc with the machine's C++ compiler ($CXX, else g++) against the
FFI headers of the installed jaxlib, into a cache keyed by the source, the
compiler, the flags, jaxlib and the CPU, so later processes load it at once.
The cache is $LVM_JAX_NATIVE_CACHE, else $XDG_CACHE_HOME/lvm_jax/native, else
~/.cache/lvm_jax/native. `unavailable_reason()` says why the kernel cannot be
used (no compiler, a failed build); "auto" then keeps to the XLA modes, with one
warning.

No -ffast-math: GCC links a -ffast-math shared library with code that switches
the whole process to flush denormals when it is loaded. The kernel has its own
vectorisable exp instead, and flushes denormals only inside its own threads.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lvm_jax.ops import kernel_check

SOURCE = pathlib.Path(__file__).with_name("native_scan.cc")
FORWARD_TARGET = "lvm_jax_scan_forward"
BACKWARD_TARGET = "lvm_jax_scan_backward"
COMPILE_FLAGS = ("-std=c++17", "-O3", "-march=native", "-ffp-contract=fast", "-fno-trapping-math",
                 "-fno-math-errno", "-fopenmp-simd", "-fPIC", "-w")
LINK_FLAGS = ("-shared",)
BUILD_TIMEOUT_S = 300
CACHE_ENV = "LVM_JAX_NATIVE_CACHE"
THREADS_ENV = "LVM_JAX_NATIVE_THREADS"


class NativeScanUnavailable(RuntimeError):
  """mode="native" was asked for, and the kernel could not be built or loaded."""


def cache_dir() -> pathlib.Path:
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "lvm_jax" / "native"


def compiler() -> str:
  return os.environ.get("CXX") or "g++"


def _cpu_signature() -> str:
  """-march=native code runs only on CPUs like this one: the cache key holds its flags."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
      flags = next((line for line in cpuinfo if line.startswith("flags")), "")
  except OSError:
    flags = ""
  return f"{platform.machine()} {platform.processor()} {flags.strip()}"


def _compiler_version(cxx: str) -> str:
  result = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60,
                          check=True)
  return result.stdout.strip()


def library_path(cxx: str) -> pathlib.Path:
  """Where the built library for this source, compiler, jaxlib and CPU lives."""
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), _compiler_version(cxx).encode(), " ".join(
      COMPILE_FLAGS + LINK_FLAGS).encode(), jax.__version__.encode(),
               importlib.metadata.version("jaxlib").encode(),
               str(jax.ffi.include_dir()).encode(), _cpu_signature().encode()):
    key.update(part)
    key.update(b"\0")
  return cache_dir() / key.hexdigest()[:20] / "liblvm_jax_scan.so"


def build(cxx: Optional[str] = None) -> pathlib.Path:
  """Compiles native_scan.cc into the cache unless it is there; returns the library's path.

  Safe to run from several processes at once: each builds in a directory of its
  own and renames the result into place. Raises NativeScanUnavailable saying why.
  """
  cxx = cxx or compiler()
  if shutil.which(cxx) is None:
    raise NativeScanUnavailable(f"no C++ compiler {cxx!r} on PATH (set $CXX, or install g++)")
  try:
    target = library_path(cxx)
  except (OSError, subprocess.SubprocessError) as error:
    raise NativeScanUnavailable(f"{cxx} --version failed: {error}") from None
  if target.exists():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  logging.info("selective_scan: compiling the native CPU kernel with %s into %s (once).",
               cxx, target.parent)
  with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as scratch:
    objects = os.path.join(scratch, "native_scan.o")
    library = os.path.join(scratch, target.name)
    for command in ([cxx, *COMPILE_FLAGS, f"-I{jax.ffi.include_dir()}", "-c", str(SOURCE),
                     "-o", objects], [cxx, objects, "-o", library, *LINK_FLAGS]):
      try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S, check=False)
      except (OSError, subprocess.TimeoutExpired) as error:
        raise NativeScanUnavailable(f"{command[0]} failed to run: {error}") from None
      if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        detail = next((line for line in lines if "error" in line), lines[-1])[:300]
        raise NativeScanUnavailable(
            f"building {SOURCE.name} failed (exit {result.returncode}): {detail}")
    os.replace(library, target)
  return target


@functools.lru_cache(maxsize=None)
def _load() -> Tuple[Optional[pathlib.Path], Optional[str]]:
  """Builds (if needed), loads and registers the kernel once per process: (its path, None) or
  (None, why not)."""
  try:
    path = build()
    library = ctypes.CDLL(str(path))
    for target, symbol in ((FORWARD_TARGET, "LvmJaxScanForward"),
                           (BACKWARD_TARGET, "LvmJaxScanBackward")):
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                  platform="cpu")
  except (NativeScanUnavailable, OSError, AttributeError) as error:
    return None, str(error)
  return path, None


def _loaded_path() -> pathlib.Path:
  return _load()[0]


def unavailable_reason() -> Optional[str]:
  """None if the native kernel is built and registered, else why it is not."""
  return _load()[1]


def threads() -> int:
  """Worker threads a kernel call uses: $LVM_JAX_NATIVE_THREADS, else this process's CPUs."""
  if os.environ.get(THREADS_ENV):
    value = int(os.environ[THREADS_ENV])
    if value < 1:
      raise ValueError(f"${THREADS_ENV} must be >= 1, got {value}.")
    return value
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def _require_loaded():
  reason = unavailable_reason()
  if reason is not None:
    raise NativeScanUnavailable(
        f"selective_scan(mode='native') cannot run: {reason}. Use mode='auto', which falls "
        "back to the XLA modes.")


# (batch, L, D, N, chunk, with state): L 5 and 9, threads sharing channels unevenly, N not a
# multiple of the vector width.
SELF_CHECK_CASES = ((3, 9, 7, 6, None, True), (3, 5, 5, 20, None, False))
SELF_CHECK_TOLERANCE = 1e-4
PASSED_MARKER = "self_check_passed"  # a file beside the library: its self-check passed


def self_check() -> Optional[str]:
  """None if the kernel builds and matches mode "sequential" (kernel_check), else why not.

  A pass is recorded beside the library: the library's cache key holds everything
  the check depends on (source, compiler, flags, jaxlib, CPU), so later processes
  skip the two seconds of compiling the comparison.
  """
  reason = unavailable_reason()
  if reason is not None:
    return reason
  marker = _loaded_path().parent / PASSED_MARKER
  if marker.exists():
    return None
  def kernel(u, delta, A, B, C, h0, return_state, _):
    return native_recurrence(u, delta, A, B, C, h0, return_state=return_state)
  failure = kernel_check.compare_with_sequential(kernel, SELF_CHECK_CASES, SELF_CHECK_TOLERANCE)
  if failure is None:
    try:
      marker.touch()
    except OSError:  # a read-only cache still works; the check just runs again next time
      pass
  return failure


def _empty():
  return jnp.zeros((0,), jnp.float32)


def _forward(u, delta, A, B, C, h0, return_state):
  batch, _, channels = u.shape
  state = A.shape[1]
  shapes = (jax.ShapeDtypeStruct(u.shape, jnp.float32),
            jax.ShapeDtypeStruct((batch, channels, state) if return_state else (0,),
                                 jnp.float32))
  call = jax.ffi.ffi_call(FORWARD_TARGET, shapes, vmap_method="sequential")
  return call(u, delta, A, B, C, h0, threads=np.int64(threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scan(u, delta, A, B, C, h0, return_state):
  return _forward(u, delta, A, B, C, h0, return_state)


def _scan_fwd(u, delta, A, B, C, h0, return_state):
  return _forward(u, delta, A, B, C, h0, return_state), (u, delta, A, B, C, h0)


def _scan_bwd(return_state, residuals, cotangents):
  u, delta, A, B, C, h0 = residuals
  g_y, g_h = cotangents
  g_h = g_h if return_state else _empty()
  shapes = tuple(jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (u, delta, A, B, C, h0))
  call = jax.ffi.ffi_call(BACKWARD_TARGET, shapes, vmap_method="sequential")
  return tuple(call(u, delta, A, B, C, h0, jnp.asarray(g_y, jnp.float32),
                    jnp.asarray(g_h, jnp.float32), threads=np.int64(threads())))


_scan.defvjp(_scan_fwd, _scan_bwd)


def native_recurrence(u, delta, A, B, C, h0=None, *, return_state=False):
  """float32 u, delta [batch, L, D], A [D, N], B, C [batch, L, N], h0 [batch, D, N] or None
  -> y [batch, L, D] (no D * u term), and the final state when return_state.

  Differentiable in every argument; raises NativeScanUnavailable if the kernel
  cannot be built here.
  """
  _require_loaded()
  y, h = _scan(u, delta, A, B, C, _empty() if h0 is None else h0, return_state)
  return (y, h) if return_state else y
