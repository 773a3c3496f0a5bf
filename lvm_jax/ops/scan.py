"""The selective-scan state-space recurrence of Mamba-1, as pure JAX functions.

For every batch row b, channel d and state n:

    h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) * B_t      (ZOH for A, Euler for B)
    y_t = sum_n h_t * C_t + D * u_t

`selective_scan` is the one public entry point; `mode` picks how the time
recurrence is evaluated. All modes compute the same function (tests hold them
to 1e-5 of a float64 NumPy loop, forward and gradients) and differ only in
speed and memory:

- "sequential": `lax.scan` over time carrying h [batch, D, N]. The
  discretisation happens inside the step, so the forward never holds a
  [batch, L, D, N] tensor, and a hand-written backward (a reverse scan that
  recomputes states chunk by chunk from states saved every `chunk_size`
  steps) keeps forward+backward memory at O(batch * D * N * (L / chunk + chunk)).
  One small step per time position: latency-bound on accelerators, but lean
  and compiled once whatever L is.
- "associative": `lax.associative_scan` over L. O(log L) depth, so it wins on
  GPUs at long L, but it materialises a and b as [batch, L, D, N] and does
  ~2x the arithmetic. jax-metal cannot compile it.
- "chunked": `lax.scan` over chunks of `chunk_size` positions, an associative
  scan inside each chunk, the state carried across chunks, and each chunk
  rematerialised in the backward pass (`jax.checkpoint`). Memory of the
  forward+backward is O(batch * D * N * (L / chunk_size + chunk_size)) instead
  of O(batch * L * D * N).
- "unrolled": a Python loop over time, so the compiled program is straight-line
  code with no while loop, with the same hand-written backward (recomputing
  all L states at once). For short contexts (the reference's L=5) it lets
  XLA fuse everything, and it is the safe choice on jax-metal, which cannot
  compile `associative_scan` and is reported to crash in long while loops.
- "pallas": one fused Pallas kernel that keeps the state on chip (Triton on
  GPU, the Pallas interpreter elsewhere); see pallas_scan.py. `chunk_size`
  there is the number of positions unrolled per chunk (default 16 on GPU).
- "native": a C++ kernel for the CPU, bound through XLA's FFI: each channel
  and batch row's whole time loop, forward or backward with the states
  recomputed, fused in one loop over the state (native_scan.py, which builds
  it at first use with the machine's C++ compiler). CPU only.
- "auto": `resolve_scan_type(mode, L, platform)` below. On a GPU it picks
  "pallas", on CPU "native", each only after the kernel passed a one-time
  self-check against "sequential" (`kernel_check`, run at the first
  resolution, i.e. when the model is first traced); if it fails (on CPU: no
  compiler, say), one warning says why and "auto" keeps to the XLA modes.

On CPU every mode walks the batch in cache-sized tiles (`batch_tile`).

Every mode accumulates in float32 whatever the input dtype; `y` is returned
in the dtype of `u`, the final state in float32 (it is an accumulator: handing
it back rounded would break exact continuation).
"""

from __future__ import annotations

import concurrent.futures
import enum
import functools
from typing import Optional

import jax
import jax.numpy as jnp
from absl import logging

from lvm_jax import backend
from lvm_jax.ops.recurrences import (DEFAULT_CHUNK_SIZE, batch_tile, fused_recurrence,
                                     over_batch_tiles, scan_associative, scan_chunked)

class ScanType(str, enum.Enum):
  """How the time recurrence is evaluated; the module docstring says when each wins."""
  AUTO = "auto"
  SEQUENTIAL = "sequential"
  ASSOCIATIVE = "associative"
  CHUNKED = "chunked"
  UNROLLED = "unrolled"
  PALLAS = "pallas"
  NATIVE = "native"


MODES = tuple(scan_type.value for scan_type in ScanType)
CONCRETE_MODES = tuple(m for m in MODES if m != ScanType.AUTO.value)
# The modes XLA compiles for every platform; "pallas" runs in its (slow) interpreter off GPU
# and "native" only on CPU.
XLA_MODES = tuple(m for m in CONCRETE_MODES if m not in ("pallas", "native"))
# The fused kernels "auto" picks after their self-check: platform -> mode.
GPU_PLATFORMS = ("gpu", "cuda", "rocm")
KERNEL_MODES = {"cpu": "native", **{gpu: "pallas" for gpu in GPU_PLATFORMS}}
# Straight-line code up to this length; beyond it the unrolled backward keeps all
# L states live and loses to "sequential" (benchmarks/results/x86_64-2cpu/scan_bench.json,
# train_bench.json vs train_bench_sequential.json).
UNROLL_MAX_LENGTH = 8
# jax-metal is reported to crash in long while loops: unroll further there.
METAL_UNROLL_MAX_LENGTH = 16
# Modes that need lax.associative_scan, which jax-metal cannot compile.
_NEEDS_ASSOCIATIVE = (ScanType.ASSOCIATIVE, ScanType.CHUNKED)


def unroll_max_length(platform: Optional[str] = None) -> int:
  """Longest sequence whose time loop is unrolled (the Mamba scan and the GRU share it)."""
  return METAL_UNROLL_MAX_LENGTH if backend.is_metal(_platform(platform)) else UNROLL_MAX_LENGTH


def resolve_scan_type(mode, length: int, platform: Optional[str] = None, *,
                      allow_kernels: bool = True) -> ScanType:
  """The one place that turns a requested mode, a length and a platform into the mode run.

  - "auto" on GPU: "pallas", the fused kernel (Triton) that keeps the state on
    chip; on CPU: "native", the C++ kernel; each only if it passed its
    self-check (`kernel_self_check_failure`); else as below.
  - "auto", L <= 8 (16 on Metal): "unrolled" (the reference trains at L 5).
  - "auto" beyond that: "sequential" on CPU and Metal, "chunked" on TPU and GPU
    (parallel inside a chunk, bounded memory across chunks).
  - On Metal, "associative" and "chunked" fall back to "auto" with a warning:
    jax-metal cannot compile lax.associative_scan.
  - allow_kernels=False (a caller whose recurrence the kernels do not compute):
    "pallas", "native" and "auto" resolve to the XLA modes, and no self-check runs.
  - "native" off CPU is an error: the kernel is built for the host CPU only.
  """
  try:
    scan_type = ScanType(mode)
  except ValueError:
    raise ValueError(f"selective_scan: unknown mode {mode!r}; choose one of {MODES}.") from None
  platform = _platform(platform)
  if backend.is_metal(platform) and scan_type in _NEEDS_ASSOCIATIVE:
    logging.warning("scan mode %r needs lax.associative_scan, which jax-metal cannot compile; "
                    "using 'auto' on Metal.", scan_type.value)
    scan_type = ScanType.AUTO
  if scan_type in (ScanType.PALLAS, ScanType.NATIVE) and not allow_kernels:
    scan_type = ScanType.AUTO
  if scan_type is ScanType.NATIVE and platform != "cpu":
    raise ValueError(f"selective_scan: mode 'native' is a CPU kernel; this runs on {platform!r}. "
                     "Use mode='auto'.")
  if scan_type is not ScanType.AUTO:
    return scan_type
  if (allow_kernels and platform in KERNEL_MODES and
      kernel_self_check_failure(platform) is None):
    return ScanType(KERNEL_MODES[platform])
  return _xla_auto(length, platform)



def _xla_auto(length: int, platform: str) -> ScanType:
  """What "auto" runs when the Pallas kernel is not used."""
  if length <= unroll_max_length(platform):
    return ScanType.UNROLLED
  if platform == "cpu" or backend.is_metal(platform):
    return ScanType.SEQUENTIAL
  return ScanType.CHUNKED


@functools.lru_cache(maxsize=None)
def _kernel_self_check(platform: str) -> Optional[str]:
  """The self-check of the kernel "auto" would pick on `platform`, once per process and platform;
  the outcome is logged once."""
  mode = KERNEL_MODES[platform]
  if mode == "pallas":
    from lvm_jax.ops import pallas_scan as kernel  # pylint: disable=g-import-not-at-top
  else:
    from lvm_jax.ops import native_scan as kernel  # pylint: disable=g-import-not-at-top
  # In a thread of its own: the first resolution happens while a model is being traced,
  # and JAX's trace state is per thread, so the check runs (and compares) concrete arrays.
  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
    failure = executor.submit(kernel.self_check).result()
  if failure is None:
    logging.info("selective_scan: the %s kernel passed its self-check on %s; 'auto' uses it.",
                 mode, platform)
  else:
    logging.warning("selective_scan: the %s kernel failed its self-check on %s (%s); 'auto' "
                    "uses the XLA modes instead (unrolled up to L %d, else %s).", mode, platform,
                    failure, unroll_max_length(platform), _xla_auto(1 << 30, platform).value)
  return failure


def kernel_self_check_failure(platform: Optional[str] = None) -> Optional[str]:
  """None if the kernel "auto" picks on `platform` (KERNEL_MODES) passed its one-time
  self-check, else why not.

  One check covers every length: it runs both a short and a longer sequence.
  """
  return _kernel_self_check(_platform(platform))


def _platform(platform: Optional[str]) -> str:
  return (platform or jax.default_backend()).lower()


def _check_shapes(u, delta, A, B, C, D, h0):
  """Raises a ValueError naming the argument whose shape disagrees."""
  if u.ndim != 3:
    raise ValueError(f"selective_scan: u must be [batch, L, D], got shape {u.shape}.")
  batch, length, channels = u.shape
  expected = {
      "delta": (delta, (batch, length, channels)),
      "A": (A, (channels, A.shape[-1] if A.ndim == 2 else -1)),
      "B": (B, (batch, length, A.shape[-1] if A.ndim == 2 else -1)),
      "C": (C, (batch, length, A.shape[-1] if A.ndim == 2 else -1)),
  }
  if D is not None:
    expected["D"] = (D, (channels,))
  if h0 is not None:
    expected["h0"] = (h0, (batch, channels, A.shape[-1] if A.ndim == 2 else -1))
  for name, (array, shape) in expected.items():
    if tuple(array.shape) != shape:
      raise ValueError(
          f"selective_scan: {name} has shape {tuple(array.shape)}, expected {shape} "
          f"(u is [batch={batch}, L={length}, D={channels}], A is [D, N]).")


def selective_scan(u, delta, A, B, C, D=None, *, h0=None, mode="auto",
                   chunk_size=None, return_state=False):
  """Runs the Mamba-1 selective scan.

  Args:
    u: inputs [batch, L, D].
    delta: step sizes [batch, L, D], already positive (softplus + dt bias
      applied by the caller).
    A: state matrix [D, N], negative for a decaying state.
    B: input projections [batch, L, N].
    C: output projections [batch, L, N].
    D: optional skip connection [D].
    h0: optional initial state [batch, D, N]; zeros when None.
    mode: a ScanType or its name (MODES); see the module docstring for when each wins.
    chunk_size: positions per chunk for mode="chunked" (default 64).
    return_state: also return the final state [batch, D, N] (float32).

  Returns:
    y [batch, L, D] in u's dtype, and the final state when return_state.
  """
  scan_type = resolve_scan_type(mode, u.shape[1])
  _check_shapes(u, delta, A, B, C, D, h0)
  out_dtype = u.dtype
  batch, length, channels = u.shape
  state_size = A.shape[1]
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  u32, delta32, A32, B32, C32, D32 = map(f32, (u, delta, A, B, C, D))
  h0_32 = f32(h0)

  if scan_type in (ScanType.NATIVE, ScanType.PALLAS):
    # Imported only when asked for; the kernels neither read a None h0 nor write an unused state.
    if scan_type is ScanType.NATIVE:
      from lvm_jax.ops import native_scan  # pylint: disable=g-import-not-at-top
      out = native_scan.native_recurrence(u32, delta32, A32, B32, C32, h0_32,
                                          return_state=return_state)
    else:
      from lvm_jax.ops import pallas_scan  # pylint: disable=g-import-not-at-top
      out = pallas_scan.pallas_recurrence(u32, delta32, A32, B32, C32, h0_32,
                                          return_state=return_state, chunk_size=chunk_size)
    ys, h = out if return_state else (out, None)
  else:
    chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
      raise ValueError(f"selective_scan: chunk_size must be >= 1, got {chunk_size}.")
    if scan_type in (ScanType.SEQUENTIAL, ScanType.UNROLLED):
      recurrence = functools.partial(fused_recurrence, unrolled=scan_type is ScanType.UNROLLED,
                                     chunk_size=chunk_size)
    elif scan_type is ScanType.ASSOCIATIVE:
      recurrence = scan_associative
    else:
      recurrence = functools.partial(scan_chunked, chunk_size=min(chunk_size, length))
    if h0_32 is None:
      h0_32 = jnp.zeros((batch, channels, state_size), jnp.float32)
    tile = batch_tile(batch, channels, state_size)
    ys, h = over_batch_tiles(recurrence, tile, u32, delta32, A32, B32, C32, h0_32)

  if D32 is not None:
    ys = ys + D32 * u32
  ys = ys.astype(out_dtype)
  return (ys, h) if return_state else ys
