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
  [batch, L, D, N] tensor. One small step per time position: latency-bound
  on accelerators, but lean and compiled once whatever L is.
- "associative": `lax.associative_scan` over L. O(log L) depth, so it wins on
  GPUs at long L, but it materialises a and b as [batch, L, D, N] and does
  ~2x the arithmetic. jax-metal cannot compile it.
- "chunked": `lax.scan` over chunks of `chunk_size` positions, an associative
  scan inside each chunk, the state carried across chunks, and each chunk
  rematerialised in the backward pass (`jax.checkpoint`). Memory of the
  forward+backward is O(batch * D * N * (L / chunk_size + chunk_size)) instead
  of O(batch * L * D * N).
- "unrolled": a Python loop over time, so the compiled program is straight-line
  code with no while loop. For short contexts (the reference's L=5) it lets
  XLA fuse everything, and it is the safe choice on jax-metal, which cannot
  compile `associative_scan` and is reported to crash in long while loops.
- "auto": `auto_mode(L, backend)` below.

Every mode accumulates in float32 whatever the input dtype; `y` is returned
in the dtype of `u`, the final state in float32 (it is an accumulator: handing
it back rounded would break exact continuation).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

MODES = ("auto", "sequential", "associative", "chunked", "unrolled")

# Contexts up to this length are unrolled by "auto": straight-line code for a
# handful of steps beats any loop or tree (the reference trains at L=5).
AUTO_UNROLL_MAX_LENGTH = 16
DEFAULT_CHUNK_SIZE = 64


def auto_mode(length: int, backend: Optional[str] = None) -> str:
  """The mode that "auto" uses for a sequence of `length` on `backend`.

  Rule (see benchmarks/scan_bench.py for the measurements behind it):
  - L <= AUTO_UNROLL_MAX_LENGTH: "unrolled" on every backend.
  - Apple GPUs (jax-metal): "sequential" beyond that (no associative_scan).
  - CPU: "sequential" (no parallel hardware to feed; no [B, L, D, N] tensor).
  - GPU/TPU: "chunked" (parallel inside a chunk, bounded memory across).
  """
  backend = (backend or jax.default_backend()).lower()
  if length <= AUTO_UNROLL_MAX_LENGTH:
    return "unrolled"
  if backend in ("metal", "cpu"):
    return "sequential"
  return "chunked"


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


def _step(h, u_t, delta_t, B_t, C_t, A):
  """One time step. h: [batch, D, N]; u_t, delta_t: [batch, D]; B_t, C_t: [batch, N]."""
  decay = jnp.exp(delta_t[:, :, None] * A)
  h = decay * h + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
  y_t = jnp.einsum("bdn,bn->bd", h, C_t)
  return h, y_t


def _scan_sequential(u, delta, A, B, C, h):
  def body(h, inputs):
    return _step(h, *inputs, A)

  time_major = [jnp.swapaxes(x, 0, 1) for x in (u, delta, B, C)]
  h, ys = lax.scan(body, h, time_major)
  return jnp.swapaxes(ys, 0, 1), h


def _scan_unrolled(u, delta, A, B, C, h):
  ys = []
  for t in range(u.shape[1]):
    h, y_t = _step(h, u[:, t], delta[:, t], B[:, t], C[:, t], A)
    ys.append(y_t)
  return jnp.stack(ys, axis=1), h


def _combine(left, right):
  """Composes two affine maps h -> a*h + b; `left` acts first."""
  a_left, b_left = left
  a_right, b_right = right
  return a_left * a_right, a_right * b_left + b_right


def _scan_associative(u, delta, A, B, C, h):
  """Associative scan over axis 1; materialises [batch, L, D, N]."""
  decay = jnp.exp(delta[..., None] * A)
  drive = (delta * u)[..., None] * B[:, :, None, :]
  drive = drive.at[:, 0].add(decay[:, 0] * h)  # fold the initial state in
  _, states = lax.associative_scan(_combine, (decay, drive), axis=1)
  ys = jnp.einsum("bldn,bln->bld", states, C)
  return ys, states[:, -1]


def _scan_chunked(u, delta, A, B, C, h, chunk_size):
  batch, length, channels = u.shape
  num_chunks = -(-length // chunk_size)
  pad = num_chunks * chunk_size - length
  if pad:
    # delta = 0 gives decay exp(0) = 1 and drive 0: padded steps leave h alone.
    pad_time = lambda x: jnp.pad(x, ((0, 0), (0, pad), (0, 0)))
    u, delta, B, C = map(pad_time, (u, delta, B, C))

  def to_chunks(x):  # [batch, L, F] -> [chunks, batch, chunk, F]
    x = x.reshape(batch, num_chunks, chunk_size, x.shape[-1])
    return jnp.swapaxes(x, 0, 1)

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def body(h, chunk):
    return _swap(_scan_associative(*chunk[:2], A, *chunk[2:], h))

  h, ys = lax.scan(body, h, [to_chunks(x) for x in (u, delta, B, C)])
  ys = jnp.swapaxes(ys, 0, 1).reshape(batch, num_chunks * chunk_size, channels)
  return ys[:, :length], h


def _swap(pair):
  ys, h = pair
  return h, ys


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
    mode: one of MODES; see the module docstring for when each wins.
    chunk_size: positions per chunk for mode="chunked" (default 64).
    return_state: also return the final state [batch, D, N] (float32).

  Returns:
    y [batch, L, D] in u's dtype, and the final state when return_state.
  """
  if mode not in MODES:
    raise ValueError(f"selective_scan: unknown mode {mode!r}; choose one of {MODES}.")
  _check_shapes(u, delta, A, B, C, D, h0)
  out_dtype = u.dtype
  batch, length, channels = u.shape
  state_size = A.shape[1]
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  u32, delta32, A32, B32, C32, D32 = map(f32, (u, delta, A, B, C, D))
  if h0 is None:
    h = jnp.zeros((batch, channels, state_size), jnp.float32)
  else:
    h = f32(h0)

  if mode == "auto":
    mode = auto_mode(length)
  if mode == "sequential":
    ys, h = _scan_sequential(u32, delta32, A32, B32, C32, h)
  elif mode == "unrolled":
    ys, h = _scan_unrolled(u32, delta32, A32, B32, C32, h)
  elif mode == "associative":
    ys, h = _scan_associative(u32, delta32, A32, B32, C32, h)
  else:
    chunk_size = DEFAULT_CHUNK_SIZE if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
      raise ValueError(f"selective_scan: chunk_size must be >= 1, got {chunk_size}.")
    ys, h = _scan_chunked(u32, delta32, A32, B32, C32, h, min(chunk_size, length))

  if D32 is not None:
    ys = ys + D32 * u32
  ys = ys.astype(out_dtype)
  return (ys, h) if return_state else ys
