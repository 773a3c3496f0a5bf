"""The Mamba-1 mixer block: the real selective SSM, not a simplified stand-in."""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvm_jax.ops.scan import selective_scan

DT_MIN, DT_MAX, DT_FLOOR = 1e-3, 1e-1, 1e-4


def dt_bias_init(key, shape, dtype=jnp.float32):
  """Bias whose softplus is log-uniform in [DT_MIN, DT_MAX] (floored), as in Mamba.

  The step sizes then start spread over two decades, so some channels remember
  far back and some react fast.
  """
  log_dt = jax.random.uniform(key, shape, jnp.float32, math.log(DT_MIN), math.log(DT_MAX))
  dt = jnp.maximum(jnp.exp(log_dt), DT_FLOOR)
  inverse_softplus = dt + jnp.log(-jnp.expm1(-dt))
  return inverse_softplus.astype(dtype)


def a_log_init(key, shape, dtype=jnp.float32):
  """log(1..N) for every channel: A = -exp(A_log) = -(1..N), the S4D-real init."""
  del key
  channels, state = shape
  return jnp.broadcast_to(jnp.log(jnp.arange(1, state + 1, dtype=jnp.float32)),
                          (channels, state)).astype(dtype)


def causal_depthwise_conv(x, kernel, bias):
  """x: [batch, L, C]; kernel: [width, C]. Output t sees inputs t-width+1 .. t only."""
  width = kernel.shape[0]
  length = x.shape[1]
  padded = jnp.pad(x, ((0, 0), (width - 1, 0), (0, 0)))
  out = bias
  for k in range(width):
    out = out + padded[:, k:k + length] * kernel[k]
  return out


class MambaFields(nn.Module):
  """The fields both Mamba blocks share, with one set of defaults: MambaBlock here and the
  reference's lnsp_blocks.LnspMambaBlock."""
  d_model: int
  d_state: int
  d_conv: int = 4
  expand: int = 2
  dropout_rate: float = 0.0
  scan_mode: str = "auto"
  scan_chunk_size: Optional[int] = None
  dtype: Any = jnp.float32


class MambaBlock(MambaFields):
  """Pre-norm residual Mamba-1 mixer: [batch, L, d_model] -> [batch, L, d_model]."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    d_inner = self.expand * self.d_model
    dt_rank = math.ceil(self.d_model / 16)
    dense = lambda features, name, bias=False, **kw: nn.Dense(
        features, use_bias=bias, dtype=self.dtype, param_dtype=jnp.float32, name=name, **kw)

    hidden = nn.RMSNorm(dtype=self.dtype, param_dtype=jnp.float32, name="norm")(x)
    xz = dense(2 * d_inner, "in_proj")(hidden)
    inner, gate = jnp.split(xz, 2, axis=-1)

    # Each depthwise filter sees d_conv inputs: PyTorch's Conv1d bound 1/sqrt(fan_in).
    conv_init = symmetric_uniform(self.d_conv ** -0.5)
    conv_kernel = self.param("conv_kernel", conv_init, (self.d_conv, d_inner), jnp.float32)
    conv_bias = self.param("conv_bias", conv_init, (d_inner,), jnp.float32)
    inner = nn.silu(causal_depthwise_conv(inner, conv_kernel.astype(self.dtype),
                                          conv_bias.astype(self.dtype)))

    projected = dense(dt_rank + 2 * self.d_state, "x_proj")(inner)
    dt_low_rank, B, C = jnp.split(projected, [dt_rank, dt_rank + self.d_state], axis=-1)
    dt = dense(d_inner, "dt_proj", bias=True,
               kernel_init=symmetric_uniform(dt_rank ** -0.5),
               bias_init=dt_bias_init)(dt_low_rank)
    # Discretisation in float32: softplus and exp(delta * A) lose too much in bf16.
    delta = jax.nn.softplus(dt.astype(jnp.float32))

    A_log = self.param("A_log", a_log_init, (d_inner, self.d_state), jnp.float32)
    D = self.param("D", nn.initializers.ones, (d_inner,), jnp.float32)
    y = selective_scan(inner, delta, -jnp.exp(A_log), B, C, D, mode=self.scan_mode,
                       chunk_size=self.scan_chunk_size)
    y = y * nn.silu(gate)
    out = dense(self.d_model, "out_proj")(y)
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return x + out.astype(x.dtype)  # the residual stream stays float32


def symmetric_uniform(bound):
  """Initializer drawing uniformly from [-bound, bound]."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init
