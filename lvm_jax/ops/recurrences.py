"""The recurrences behind selective_scan's XLA modes, on float32 arrays.

`sequential` and `unrolled` share a fused forward and a hand-written backward
that recomputes states instead of storing them; `associative` and `chunked` use
lax.associative_scan. On CPU every mode walks the batch in cache-sized tiles
(batch_tile). selective_scan (scan.py) checks shapes and picks the mode; these
functions take h [batch, D, N] and return (ys [batch, L, D], final h).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

DEFAULT_CHUNK_SIZE = 64  # positions a chunk (mode "chunked", and the fused loop's recompute)


def _step(h, u_t, delta_t, B_t, C_t, A):
  """One time step. h: [batch, D, N]; u_t, delta_t: [batch, D]; B_t, C_t: [batch, N]."""
  decay = jnp.exp(delta_t[:, :, None] * A)
  h = decay * h + (delta_t * u_t)[:, :, None] * B_t[:, None, :]
  y_t = jnp.einsum("bdn,bn->bd", h, C_t)
  return h, y_t


# On CPU, the scan is bound by memory traffic of its [batch, D, N] state; walking
# the batch in tiles whose state fits in cache is faster and much leaner
# (benchmarks/results/x86_64-2cpu/scan_bench.json).
CPU_TILE_STATE_BYTES = 2 * 1024 * 1024


def batch_tile(batch: int, channels: int, state_size: int, backend: Optional[str] = None) -> int:
  """Batch rows processed together: all of them on accelerators, a cache-sized tile on CPU."""
  backend = (backend or jax.default_backend()).lower()
  if backend != "cpu":
    return batch
  return int(max(1, min(batch, CPU_TILE_STATE_BYTES // (channels * state_size * 4))))


def over_batch_tiles(recurrence, tile, u, delta, A, B, C, h):
  """recurrence(u, delta, A, B, C, h) -> (ys, h_final), run over batch tiles of `tile` rows."""
  batch = u.shape[0]
  if tile >= batch:
    return recurrence(u, delta, A, B, C, h)
  num_tiles = -(-batch // tile)
  pad = num_tiles * tile - batch

  def to_tiles(x):  # zero rows pad the batch; they are dropped again below
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape((num_tiles, tile) + x.shape[1:])

  ys, h = lax.map(lambda xs: recurrence(xs[0], xs[1], A, xs[2], xs[3], xs[4]),
                  [to_tiles(x) for x in (u, delta, B, C, h)])
  untile = lambda x: x.reshape((num_tiles * tile,) + x.shape[2:])[:batch]
  return untile(ys), untile(h)


def _time_major(*arrays):
  return [jnp.swapaxes(x, 0, 1) for x in arrays]


def _forward_unrolled(u, delta, A, B, C, h):
  """Python loop over time: returns y [batch, L, D], the final h, and every h_t (time-major)."""
  ys, states = [], []
  for t in range(u.shape[1]):
    h, y_t = _step(h, u[:, t], delta[:, t], B[:, t], C[:, t], A)
    ys.append(y_t)
    states.append(h)
  return jnp.stack(ys, axis=1), h, states


def _backward_step(dh_later, g_t, u_t, delta_t, B_t, C_t, h_before, h_t, A):
  """Reverse of one step. dh_later = decay_{t+1} * dL/dh_{t+1}; returns its value for t-1.

  h_t = decay_t * h_before + delta_t u_t B_t and y_t = <h_t, C_t> give, with
  dh = dL/dh_t, the gradients below; decay_t is recomputed, never stored.
  """
  decay = jnp.exp(delta_t[:, :, None] * A)
  dh = dh_later + g_t[:, :, None] * C_t[:, None, :]
  d_log_decay = dh * h_before * decay  # dL/d(delta_t * A), elementwise
  dh_dot_B = jnp.einsum("bdn,bn->bd", dh, B_t)
  grads = {
      "u": dh_dot_B * delta_t,
      "delta": jnp.einsum("bdn,dn->bd", d_log_decay, A) + dh_dot_B * u_t,
      "B": jnp.einsum("bdn,bd->bn", dh, delta_t * u_t),
      "C": jnp.einsum("bd,bdn->bn", g_t, h_t),
      "A": jnp.einsum("bdn,bd->dn", d_log_decay, delta_t),
  }
  return decay * dh, grads


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def fused_recurrence(u, delta, A, B, C, h0, unrolled, chunk_size):
  """The time loop with a hand-written reverse pass that recomputes states.

  Autodiff of the loop keeps decay, drive and h for every step (~5 tensors of
  [batch, D, N] per step, 5 GB for one block at the reference shape); this
  keeps nothing in the forward, and the backward recomputes the states: all L
  of them when unrolled (short L), else one chunk at a time from states saved
  every `chunk_size` steps, so memory is O(batch * D * N * (L / chunk + chunk)).
  """
  if unrolled:
    ys, h, _ = _forward_unrolled(u, delta, A, B, C, h0)
    return ys, h
  h, ys = lax.scan(lambda h, x: _step(h, *x, A), h0, _time_major(u, delta, B, C))
  return jnp.swapaxes(ys, 0, 1), h


def _fused_forward(u, delta, A, B, C, h0, unrolled, chunk_size):
  out = fused_recurrence(u, delta, A, B, C, h0, unrolled, chunk_size)
  return out, (u, delta, A, B, C, h0)


def _fused_backward(unrolled, chunk_size, residuals, cotangents):
  u, delta, A, B, C, h0 = residuals
  g_y, g_h = cotangents
  if unrolled:
    _, _, states = _forward_unrolled(u, delta, A, B, C, h0)
    befores = [h0] + states[:-1]
    dh_later, dA = g_h, jnp.zeros_like(A)
    per_step = []
    for t in reversed(range(u.shape[1])):
      dh_later, grads = _backward_step(dh_later, g_y[:, t], u[:, t], delta[:, t], B[:, t],
                                       C[:, t], befores[t], states[t], A)
      dA = dA + grads.pop("A")
      per_step.append(grads)
    per_step.reverse()
    stacked = {k: jnp.stack([g[k] for g in per_step], axis=1) for k in per_step[0]}
    return stacked["u"], stacked["delta"], dA, stacked["B"], stacked["C"], dh_later
  return _chunked_recompute_backward(u, delta, A, B, C, h0, g_y, g_h, chunk_size)


def _chunked_recompute_backward(u, delta, A, B, C, h0, g_y, g_h, chunk_size):
  """Reverse pass over chunks: recompute a chunk's states from its saved start state."""
  batch, length, channels = u.shape
  chunk = max(1, min(chunk_size, length))
  num_chunks = -(-length // chunk)
  pad = num_chunks * chunk - length
  # Padded steps have delta = 0 (decay 1, drive 0) and g = 0: they change nothing.
  padded = [jnp.pad(x, ((0, 0), (0, pad), (0, 0))) for x in (u, delta, B, C, g_y)]
  # [chunks, chunk, batch, F]: time-major inside each chunk.
  chunks = [jnp.swapaxes(x, 0, 1).reshape((num_chunks, chunk) + x.shape[:1] + x.shape[2:])
            for x in padded]

  def advance(h, x):
    h, _ = _step(h, *x, A)
    return h, h

  def chunk_start(h, xs):
    h_end, _ = lax.scan(advance, h, xs[:4])
    return h_end, h

  _, starts = lax.scan(chunk_start, h0, chunks)  # state before each chunk [chunks, b, D, N]

  def reverse_chunk(carry, xs):
    dh_later, dA = carry
    h_start, chunk_u, chunk_delta, chunk_B, chunk_C, chunk_g = xs
    _, states = lax.scan(advance, h_start, (chunk_u, chunk_delta, chunk_B, chunk_C))
    befores = jnp.concatenate([h_start[None], states[:-1]], axis=0)

    def reverse_step(carry, x):
      dh_later, dA = carry
      dh_later, grads = _backward_step(dh_later, *x, A)
      return (dh_later, dA + grads.pop("A")), grads

    (dh_later, dA), grads = lax.scan(
        reverse_step, (dh_later, dA),
        (chunk_g, chunk_u, chunk_delta, chunk_B, chunk_C, befores, states), reverse=True)
    return (dh_later, dA), grads

  (dh0, dA), grads = lax.scan(reverse_chunk, (g_h, jnp.zeros_like(A)),
                              (starts, *chunks[:4], chunks[4]), reverse=True)
  unchunk = lambda x: jnp.swapaxes(x.reshape((num_chunks * chunk,) + x.shape[2:]), 0, 1)[:, :length]
  return (unchunk(grads["u"]), unchunk(grads["delta"]), dA, unchunk(grads["B"]),
          unchunk(grads["C"]), dh0)


fused_recurrence.defvjp(_fused_forward, _fused_backward)


def _combine(left, right):
  """Composes two affine maps h -> a*h + b; `left` acts first."""
  a_left, b_left = left
  a_right, b_right = right
  return a_left * a_right, a_right * b_left + b_right


def scan_associative(u, delta, A, B, C, h):
  """Associative scan over axis 1; materialises [batch, L, D, N]."""
  decay = jnp.exp(delta[..., None] * A)
  drive = (delta * u)[..., None] * B[:, :, None, :]
  drive = drive.at[:, 0].add(decay[:, 0] * h)  # fold the initial state in
  _, states = lax.associative_scan(_combine, (decay, drive), axis=1)
  ys = jnp.einsum("bldn,bln->bld", states, C)
  return ys, states[:, -1]


def scan_chunked(u, delta, A, B, C, h, chunk_size):
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
    return _swap(scan_associative(*chunk[:2], A, *chunk[2:], h))

  h, ys = lax.scan(body, h, [to_chunks(x) for x in (u, delta, B, C)])
  ys = jnp.swapaxes(ys, 0, 1).reshape(batch, num_chunks * chunk_size, channels)
  return ys[:, :length], h


def _swap(pair):
  ys, h = pair
  return h, ys
