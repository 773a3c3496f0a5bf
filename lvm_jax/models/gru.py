"""GRU gate over the sequence, whose final hidden state seeds the next layer's GRU."""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lvm_jax.ops.scan import unroll_max_length



def gru_sequence(input_gates, hidden_kernel, hidden_bias, initial_hidden):
  """Runs the GRU recurrence.

  Args:
    input_gates: x_t @ W_input + b_input, precomputed for all t: [batch, L, 3, H]
      (reset, update, candidate).
    hidden_kernel: [H, 3, H]; hidden_bias: [3, H].
    initial_hidden: [batch, H].

  Returns:
    outputs [batch, L, H] and the final hidden state [batch, H].
  """
  def step(hidden, gates_t):
    hidden_gates = jnp.einsum("bh,hgk->bgk", hidden, hidden_kernel) + hidden_bias
    reset = jax.nn.sigmoid(gates_t[:, 0] + hidden_gates[:, 0])
    update = jax.nn.sigmoid(gates_t[:, 1] + hidden_gates[:, 1])
    candidate = jnp.tanh(gates_t[:, 2] + reset * hidden_gates[:, 2])
    hidden = (1.0 - update) * candidate + update * hidden
    return hidden, hidden

  length = input_gates.shape[1]
  unroll = length if length <= unroll_max_length() else 1  # no while loop for jax-metal
  final, outputs = lax.scan(step, initial_hidden, jnp.swapaxes(input_gates, 0, 1), unroll=unroll)
  return jnp.swapaxes(outputs, 0, 1), final


class GRUGate(nn.Module):
  """x + proj(GRU(norm(x))): [batch, L, d_model] -> same, plus the final hidden [batch, H]."""
  d_model: int
  hidden_size: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, initial_hidden: Optional[jax.Array] = None, *, train: bool = False):
    batch = x.shape[0]
    hidden = nn.RMSNorm(dtype=self.dtype, param_dtype=jnp.float32, name="norm")(x)
    input_gates = nn.DenseGeneral((3, self.hidden_size), dtype=self.dtype,
                                  param_dtype=jnp.float32, name="input_proj")(hidden)
    hidden_kernel = self.param("hidden_kernel", nn.initializers.orthogonal(column_axis=-1),
                               (self.hidden_size, 3, self.hidden_size), jnp.float32)
    hidden_bias = self.param("hidden_bias", nn.initializers.zeros,
                             (3, self.hidden_size), jnp.float32)
    if initial_hidden is None:
      initial_hidden = jnp.zeros((batch, self.hidden_size), jnp.float32)
    # The recurrence runs in float32: a bf16 hidden state drifts over time.
    outputs, final_hidden = gru_sequence(input_gates.astype(jnp.float32), hidden_kernel,
                                         hidden_bias, initial_hidden.astype(jnp.float32))
    out = nn.Dense(self.d_model, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                   name="out_proj")(outputs.astype(self.dtype))
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return x + out.astype(x.dtype), final_hidden  # the residual stream stays float32
