"""A fused Pallas kernel for the selective scan (`selective_scan(..., mode="pallas")`).

The unfused modes in scan.py read and write the whole [batch, D, N] state
through device memory at every time step. Here each program of the grid owns a
(batch tile, channel tile) block of the state and keeps it on chip, in float32,
for the whole time loop: device memory sees the [batch, L, D] and
[batch, L, N] inputs and outputs, and a [batch, D, N] state only where one is
asked for (h0 given, return_state, chunk starts for a long backward pass).

Time is walked in chunks of `chunk_size` positions, unrolled inside the kernel.
A short sequence (L <= chunk_size, the reference's L 5) is a single unrolled
chunk. A longer one is a `lax.fori_loop` over chunks; the forward pass under
differentiation writes the state at the start of every chunk
([batch, L / chunk, D, N]) and nothing else, and the backward kernel walks the
chunks in reverse, recomputing the chunk's states from its start state before
running the reverse recurrence through them. Gradients that sum over a tiled
axis are written per program and summed outside: dA [D, N] per batch group,
dB and dC [batch, L, N] per channel tile. D (the skip term) stays outside the
kernel, in scan.py, as plain `D * u`.

On GPU the kernel is lowered by Pallas' Triton backend (portable across the
jax 0.5 and the current stacks). Everywhere else it runs the same kernel with
`interpret=True`, so tests and machines without a GPU compute exactly what the
GPU would, only slowly.

Triton needs every in-kernel value to have power-of-two dimensions: the state
size N, the channel tile and the batch tile are powers of two, and inputs are
zero-padded up to them (a zero delta gives decay 1 and drive 0, so padded
positions, channels and rows leave everything else unchanged).
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lvm_jax.ops import kernel_check, pallas_kernels

# Positions unrolled per chunk (and the spacing of saved states) when the
# caller gives no chunk_size. Longer chunks hold more recomputed states on
# chip in the backward pass. The interpreter's compile time grows quickly with
# the unrolled length, so it walks shorter chunks by default.
DEFAULT_CHUNK_SIZE = 16
INTERPRET_CHUNK_SIZE = 4
# Float32 elements of state one program holds: [batch_tile, channel_tile, N].
# On GPU it has to live in registers next to the backward's temporaries; under
# the interpreter, fewer and larger programs are faster.
GPU_STATE_ELEMENTS = 2048
INTERPRET_STATE_ELEMENTS = 1 << 16
# Batch rows one backward program walks (in batch tiles) so that dA is summed
# on chip over them: the dA partials are [batch / rows, D, N], not per example.
GPU_BACKWARD_ROWS = 32
GPU_NUM_WARPS = 4
# The start-up self-check (`self_check`): shapes small enough to compile and run in about a
# second that still reach every path of the kernels. Batch 3, D 5 and N 6 are padded to powers
# of two; L 9 in chunks of 4 runs the chunk loop with saved starts and a padded last chunk,
# reading h0 and writing the final state; L 5 without either is the reference's training shape.
# (batch, L, D, N, chunk_size or None for the default, with h0 and final state)
SELF_CHECK_CASES = ((3, 9, 5, 6, 4, True), (3, 5, 5, 6, None, False))
# Largest |kernel - sequential| / max |sequential| of any output or gradient that passes.
SELF_CHECK_TOLERANCE = 1e-4


class KernelConfig(NamedTuple):
  """Static choices of one pallas_call pair (hashable: a custom_vjp nondiff argument)."""
  chunk: int  # positions unrolled per chunk
  num_chunks: int
  batch_tile: int  # rows of state per program (power of two)
  channel_tile: int  # channels of state per program (power of two)
  backward_rows: int  # rows per backward program, a multiple of batch_tile
  interpret: bool
  initial_state: bool = True  # read h0 (else start from zeros) and return its gradient
  final_state: bool = True  # write the final state (and read its cotangent backward)


def _next_power_of_2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


def _triton_compiler_params():
  """Triton's compiler parameters: named TritonCompilerParams in jax 0.5, CompilerParams later.

  Passing them also selects the Triton backend on jax versions whose default
  GPU backend for pallas_call is Mosaic GPU.
  """
  from jax.experimental.pallas import triton as pl_triton  # pylint: disable=g-import-not-at-top
  params_class = getattr(pl_triton, "CompilerParams", None) or pl_triton.TritonCompilerParams
  return params_class(num_warps=GPU_NUM_WARPS, num_stages=1)


def _call(kernel, out_shape, grid, in_specs, out_specs, interpret):
  """pl.pallas_call with the one backend-dependent argument set in one place."""
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=grid, in_specs=in_specs, out_specs=out_specs,
      interpret=interpret, compiler_params=None if interpret else _triton_compiler_params())


def default_interpret(backend: Optional[str] = None) -> bool:
  """Interpret everywhere but on GPU (Pallas' Triton backend needs a CUDA or ROCm GPU)."""
  return (backend or jax.default_backend()).lower() not in ("gpu", "cuda", "rocm")


def choose_config(batch: int, length: int, channels: int, state_size: int, *,
                  chunk_size: Optional[int] = None, batch_tile: Optional[int] = None,
                  channel_tile: Optional[int] = None, backward_rows: Optional[int] = None,
                  interpret: Optional[bool] = None) -> KernelConfig:
  """Tiles and chunking for a [batch, L, D] x N scan; any argument given overrides its default."""
  interpret = default_interpret() if interpret is None else bool(interpret)
  if chunk_size is None:
    chunk_size = INTERPRET_CHUNK_SIZE if interpret else DEFAULT_CHUNK_SIZE
  chunk = int(chunk_size)
  if chunk < 1:
    raise ValueError(f"pallas_scan: chunk_size must be >= 1, got {chunk}.")
  chunk = min(chunk, length)
  budget = INTERPRET_STATE_ELEMENTS if interpret else GPU_STATE_ELEMENTS
  padded_state = _next_power_of_2(state_size)
  if channel_tile is None:
    channel_tile = min(_next_power_of_2(channels), max(1, budget // padded_state))
  if batch_tile is None:
    batch_tile = min(_next_power_of_2(batch), max(1, budget // (channel_tile * padded_state)))
  for name, value in (("batch_tile", batch_tile), ("channel_tile", channel_tile)):
    if value < 1 or value != _next_power_of_2(value):
      raise ValueError(f"pallas_scan: {name} must be a power of two (Triton block shapes), "
                       f"got {value}.")
  if backward_rows is None:
    tiles = -(-batch // batch_tile)
    backward_rows = batch_tile * (tiles if interpret else
                                  max(1, min(tiles, GPU_BACKWARD_ROWS // batch_tile)))
  if backward_rows < batch_tile or backward_rows % batch_tile:
    raise ValueError(f"pallas_scan: backward_rows must be a multiple of batch_tile "
                     f"{batch_tile}, got {backward_rows}.")
  return KernelConfig(chunk=chunk, num_chunks=-(-length // chunk), batch_tile=batch_tile,
                      channel_tile=channel_tile, backward_rows=backward_rows,
                      interpret=interpret)


class _Specs(NamedTuple):
  """Block specs of one grid whose programs own `rows` rows and a channel tile."""
  seq: pl.BlockSpec  # [rows, L, tile] of a [batch, L, D] array
  proj: pl.BlockSpec  # [rows, L, N] of a [batch, L, N] array
  state: pl.BlockSpec  # [rows, tile, N] of a [batch, D, N] array
  matrix: pl.BlockSpec  # [tile, N] of a [D, N] array
  starts: pl.BlockSpec  # [rows, chunks, tile, N] of a [batch, chunks, D, N] array


def _specs(rows, length, state_size, config):
  tile = config.channel_tile
  return _Specs(
      seq=pl.BlockSpec((rows, length, tile), lambda i, j: (i, 0, j)),
      proj=pl.BlockSpec((rows, length, state_size), lambda i, j: (i, 0, 0)),
      state=pl.BlockSpec((rows, tile, state_size), lambda i, j: (i, j, 0)),
      matrix=pl.BlockSpec((tile, state_size), lambda i, j: (j, 0)),
      starts=pl.BlockSpec((rows, config.num_chunks, tile, state_size),
                          lambda i, j: (i, 0, j, 0)))


def _forward_call(u, delta, A, B, C, h0, config, save_starts):
  """Returns y, the final state (or None) and the chunk start states (or None)."""
  batch, length, channels = u.shape
  state_size = A.shape[1]
  specs = _specs(config.batch_tile, length, state_size, config)
  f32 = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  state_shape = (batch, channels, state_size)
  inputs = [u, delta, A, B, C] + ([h0] if config.initial_state else [])
  in_specs = [specs.seq, specs.seq, specs.matrix, specs.proj, specs.proj]
  in_specs += [specs.state] if config.initial_state else []
  out_shape, out_specs = [f32(u.shape)], [specs.seq]
  if config.final_state:
    out_shape.append(f32(state_shape))
    out_specs.append(specs.state)
  if save_starts:
    out_shape.append(f32((batch, config.num_chunks, channels, state_size)))
    out_specs.append(specs.starts)
  grid = (batch // config.batch_tile, channels // config.channel_tile)
  kernel = functools.partial(pallas_kernels.forward_kernel, config=config, save_starts=save_starts)
  outputs = list(_call(kernel, out_shape, grid, in_specs, out_specs, config.interpret)(*inputs))
  y = outputs.pop(0)
  h = outputs.pop(0) if config.final_state else None
  starts = outputs.pop(0) if save_starts else None
  return y, h, starts


def _backward_call(u, delta, A, B, C, starts, g_y, g_h, config):
  """Returns the gradients of u, delta, A, B, C and h0 (None without an initial state)."""
  batch, length, channels = u.shape
  state_size = A.shape[1]
  rows, tile = config.backward_rows, config.channel_tile
  specs = _specs(rows, length, state_size, config)
  f32 = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  inputs = [u, delta, A, B, C] + ([starts] if starts is not None else []) + [g_y]
  inputs += [g_h] if config.final_state else []
  in_specs = [specs.seq, specs.seq, specs.matrix, specs.proj, specs.proj]
  in_specs += ([specs.starts] if starts is not None else []) + [specs.seq]
  in_specs += [specs.state] if config.final_state else []
  partial_proj_shape = (channels // tile, batch, length, state_size)
  partial_proj_spec = pl.BlockSpec((1, rows, length, state_size), lambda i, j: (j, i, 0, 0))
  out_shape = [f32(u.shape), f32(u.shape), f32((batch // rows, channels, state_size)),
               f32(partial_proj_shape), f32(partial_proj_shape)]
  out_specs = [specs.seq, specs.seq, pl.BlockSpec((1, tile, state_size), lambda i, j: (i, j, 0)),
               partial_proj_spec, partial_proj_spec]
  if config.initial_state:
    out_shape.append(f32((batch, channels, state_size)))
    out_specs.append(specs.state)
  grid = (batch // rows, channels // tile)
  kernel = functools.partial(pallas_kernels.backward_kernel, config=config,
                             has_starts=starts is not None)
  outputs = _call(kernel, out_shape, grid, in_specs, out_specs, config.interpret)(*inputs)
  du, ddelta, dA_parts, dB_parts, dC_parts = outputs[:5]
  dh0 = outputs[5] if config.initial_state else None
  return du, ddelta, dA_parts.sum(0), dB_parts.sum(0), dC_parts.sum(0), dh0


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _fused_scan(u, delta, A, B, C, h0, config):
  """The kernel on padded float32 inputs: y [batch, L, D] and the final state (or None).

  h0 is None when config.initial_state is False (the state starts at zero and
  is never read); the final state is None when config.final_state is False
  (never written). At the reference shape the state is ~25x larger than u, so
  skipping it saves most of the kernel's memory traffic.
  """
  y, h, _ = _forward_call(u, delta, A, B, C, h0, config, save_starts=False)
  return y, h


def _fused_scan_forward(u, delta, A, B, C, h0, config):
  # A single chunk starts at h0 (or zero): there is nothing to save.
  save_starts = config.num_chunks > 1
  y, h, starts = _forward_call(u, delta, A, B, C, h0, config, save_starts=save_starts)
  if not save_starts and config.initial_state:
    starts = h0[:, None]
  return (y, h), (u, delta, A, B, C, starts)


def _fused_scan_backward(config, residuals, cotangents):
  u, delta, A, B, C, starts = residuals
  g_y, g_h = cotangents
  return _backward_call(u, delta, A, B, C, starts, g_y, g_h, config)


_fused_scan.defvjp(_fused_scan_forward, _fused_scan_backward)


def pallas_recurrence(u, delta, A, B, C, h0=None, *, return_state=True, chunk_size=None,
                      batch_tile=None, channel_tile=None, backward_rows=None, interpret=None):
  """The selective scan without the D skip term, as one fused kernel (and one for its gradient).

  Args:
    u, delta: [batch, L, D]; A: [D, N]; B, C: [batch, L, N].
    h0: initial state [batch, D, N], or None to start from zeros without
      reading a state.
    return_state: also compute the final state; False saves writing it (and
      reading its cotangent in the backward pass).
    chunk_size: positions unrolled per chunk and spacing of the states saved
      for the backward pass (default DEFAULT_CHUNK_SIZE on GPU,
      INTERPRET_CHUNK_SIZE under the interpreter); L <= chunk_size is fully
      unrolled and saves nothing.
    batch_tile, channel_tile: state rows and channels per program, powers of
      two (defaults from choose_config).
    backward_rows: rows per backward program (a multiple of batch_tile).
    interpret: run the Pallas interpreter (default: everywhere but on GPU).

  Returns:
    y [batch, L, D] float32, and the final state [batch, D, N] float32 when
    return_state.
  """
  batch, length, channels = u.shape
  state_size = A.shape[1]
  config = choose_config(batch, length, channels, state_size, chunk_size=chunk_size,
                         batch_tile=batch_tile, channel_tile=channel_tile,
                         backward_rows=backward_rows, interpret=interpret)
  config = config._replace(initial_state=h0 is not None, final_state=bool(return_state))
  rows = max(config.batch_tile, config.backward_rows)
  padded_batch = -(-batch // rows) * rows
  padded_length = config.num_chunks * config.chunk
  padded_channels = -(-channels // config.channel_tile) * config.channel_tile
  padded_state = _next_power_of_2(state_size)

  def pad(x, shape):
    x = jnp.asarray(x, jnp.float32)
    if tuple(x.shape) == shape:
      return x
    return jnp.pad(x, [(0, want - have) for have, want in zip(x.shape, shape)])

  y, h = _fused_scan(
      pad(u, (padded_batch, padded_length, padded_channels)),
      pad(delta, (padded_batch, padded_length, padded_channels)),
      pad(A, (padded_channels, padded_state)),
      pad(B, (padded_batch, padded_length, padded_state)),
      pad(C, (padded_batch, padded_length, padded_state)),
      None if h0 is None else pad(h0, (padded_batch, padded_channels, padded_state)), config)
  y = y[:batch, :length, :channels]
  return (y, h[:batch, :channels, :state_size]) if return_state else y


def self_check(interpret: Optional[bool] = None) -> Optional[str]:
  """Runs the kernel pair against mode "sequential" at SELF_CHECK_CASES: None, or why it failed
  (kernel_check.compare_with_sequential)."""
  def kernel(u, delta, A, B, C, h0, return_state, chunk):
    return pallas_recurrence(u, delta, A, B, C, h0, return_state=return_state, chunk_size=chunk,
                             interpret=interpret)
  return kernel_check.compare_with_sequential(kernel, SELF_CHECK_CASES, SELF_CHECK_TOLERANCE)
