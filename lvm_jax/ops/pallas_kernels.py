"""The Pallas kernels of the fused selective scan: forward and backward, one grid program per
(batch tile, channel tile) with its float32 state held on chip (see pallas_scan.py for the
layout, the padding and the calls that launch them)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl


def _decay(delta_t, A):
  """exp(delta_t * A): [rows, channels] x [channels, N] -> [rows, channels, N]."""
  return jnp.exp(delta_t[:, :, None] * A[None, :, :])


def _advance(h, u_t, delta_t, B_t, A):
  """h_t from h_{t-1}; h: [rows, channels, N], u_t, delta_t: [rows, channels], B_t: [rows, N]."""
  return _decay(delta_t, A) * h + (delta_t * u_t)[:, :, None] * B_t[:, None, :]


def forward_kernel(*refs, config, save_starts):
  """One program: the time loop for [rows, L, channels], its state held on chip.

  refs: u, delta [rows, L, channels], A [channels, N], B, C [rows, L, N], then
  h0 [rows, channels, N] if config.initial_state; outputs y [rows, L, channels],
  the final state if config.final_state, and, if save_starts, the state before
  every chunk [rows, chunks, channels, N] for the backward pass.
  """
  refs = list(refs)
  u_ref, delta_ref, A_ref, B_ref, C_ref = refs[:5]
  h0_ref = refs.pop(5) if config.initial_state else None
  y_ref = refs[5]
  h_ref = refs.pop(6) if config.final_state else None
  starts_ref = refs[6] if save_starts else None
  A = A_ref[...]

  def run_chunk(c, h):
    if starts_ref is not None:
      starts_ref[:, c, :, :] = h
    for s in range(config.chunk):
      t = c * config.chunk + s
      h = _advance(h, u_ref[:, t, :], delta_ref[:, t, :], B_ref[:, t, :], A)
      y_ref[:, t, :] = jnp.sum(h * C_ref[:, t, :][:, None, :], axis=2)
    return h

  if h0_ref is not None:
    h = h0_ref[...]
  else:
    h = jnp.zeros((config.batch_tile,) + A.shape, jnp.float32)
  h = run_chunk(0, h) if config.num_chunks == 1 else lax.fori_loop(
      0, config.num_chunks, run_chunk, h)
  if h_ref is not None:
    h_ref[...] = h


def backward_kernel(*refs, config, has_starts):
  """One program: the reverse recurrence for `backward_rows` rows and one channel tile.

  refs: u, delta, A, B, C as in the forward, the chunk start states if
  has_starts (else the only chunk starts from zeros), g_y [rows, L, channels],
  g_h [rows, channels, N] if config.final_state; outputs du, ddelta, this
  program's dA [1, channels, N], this channel tile's dB and dC
  [1, rows, L, N], and dh0 if config.initial_state. The rows are walked batch
  tile by batch tile so dA is summed on chip over all of them.
  """
  refs = list(refs)
  u_ref, delta_ref, A_ref, B_ref, C_ref = refs[:5]
  starts_ref = refs.pop(5) if has_starts else None
  g_y_ref = refs[5]
  g_h_ref = refs.pop(6) if config.final_state else None
  du_ref, ddelta_ref, dA_ref, dB_ref, dC_ref = refs[6:11]
  dh0_ref = refs[11] if config.initial_state else None
  A = A_ref[...]
  rows = config.batch_tile
  zero_state = jnp.zeros((rows,) + A.shape, jnp.float32)

  def reverse_rows(r, dA):
    row = pl.ds(r * rows, rows) if config.backward_rows > rows else slice(None)

    def reverse_chunk(k, carry):
      dh, dA = carry
      c = config.num_chunks - 1 - k
      # The chunk's inputs ([rows, channels] and [rows, N] per step) are loaded once and
      # its states recomputed from the saved start: states[s] is h before step s.
      steps = [c * config.chunk + s for s in range(config.chunk)]
      us = [u_ref[row, t, :] for t in steps]
      deltas = [delta_ref[row, t, :] for t in steps]
      Bs = [B_ref[row, t, :] for t in steps]
      states = [starts_ref[row, c, :, :] if starts_ref is not None else zero_state]
      for s in range(config.chunk):
        states.append(_advance(states[-1], us[s], deltas[s], Bs[s], A))
      for s in reversed(range(config.chunk)):
        t = steps[s]
        u_t, delta_t, B_t = us[s], deltas[s], Bs[s]
        C_t, g_t = C_ref[row, t, :], g_y_ref[row, t, :]
        decay = _decay(delta_t, A)
        dh = dh + g_t[:, :, None] * C_t[:, None, :]  # dL/dh_t
        d_log_decay = dh * states[s] * decay  # dL/d(delta_t * A), elementwise
        dh_dot_B = jnp.sum(dh * B_t[:, None, :], axis=2)
        du_ref[row, t, :] = dh_dot_B * delta_t
        ddelta_ref[row, t, :] = jnp.sum(d_log_decay * A[None, :, :], axis=2) + dh_dot_B * u_t
        dB_ref[0, row, t, :] = jnp.sum(dh * (delta_t * u_t)[:, :, None], axis=1)
        dC_ref[0, row, t, :] = jnp.sum(g_t[:, :, None] * states[s + 1], axis=1)
        dA = dA + jnp.sum(d_log_decay * delta_t[:, :, None], axis=0)
        dh = decay * dh  # dL/dh_{t-1} through h_t
      return dh, dA

    carry = (g_h_ref[row, :, :] if g_h_ref is not None else zero_state, dA)
    dh, dA = reverse_chunk(0, carry) if config.num_chunks == 1 else lax.fori_loop(
        0, config.num_chunks, reverse_chunk, carry)
    if dh0_ref is not None:
      dh0_ref[row, :, :] = dh
    return dA

  groups = config.backward_rows // rows
  dA = jnp.zeros(A.shape, jnp.float32)
  dA = reverse_rows(0, dA) if groups == 1 else lax.fori_loop(0, groups, reverse_rows, dA)
  dA_ref[0, :, :] = dA
