"""The reference system's own blocks, in Flax, math as the reference wrote it.

The reference (TrentCarter/lnsp-phase-4, app/lvm/mamba/blocks.py) trained its
checkpoints with a simplified SSM, not the Mamba-1 mixer of `mamba.py`: no C
projection (the state is summed), a full-rank dt projection d_inner -> d_inner,
an input term B_t * x_t without delta, and an x_proj whose first half is
computed but never used. To import those checkpoints and get the same
predictions, these blocks copy that math, its initialisation and PyTorch's
parameter layout (submodule names match the PyTorch attribute names, so the
import mapping in `lnsp_import.py` is a renaming plus transposes).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lvm_jax.models.mamba import MambaFields, causal_depthwise_conv, symmetric_uniform
from lvm_jax.ops.scan import DEFAULT_CHUNK_SIZE, resolve_scan_type

RMS_EPSILON = 1e-6  # the reference's RMSNorm default
A_LOG_MEAN, A_LOG_STD = -4.0, 1.0  # the reference's A_log init: normal(-4, 1)
DT_BIAS_INIT = 1.0  # the reference's dt_proj bias: constant 1
NORMALIZE_EPSILON = 1e-12  # torch.nn.functional.normalize's default


def torch_uniform(fan_in: int):
  """PyTorch's default nn.Linear / nn.Conv1d init, weight and bias: U(-1/sqrt(fan_in), +)."""
  return symmetric_uniform(1.0 / math.sqrt(fan_in))


def torch_dense(features: int, fan_in: int, use_bias: bool, dtype, name: str, **kw) -> nn.Dense:
  """nn.Dense initialised as PyTorch's nn.Linear(fan_in, features)."""
  kw.setdefault("bias_init", torch_uniform(fan_in))
  return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=torch_uniform(fan_in), name=name, **kw)


def torch_normalize(x, axis=-1):
  """x / max(|x|, 1e-12) in float32, as F.normalize; the gradient at x = 0 is 0, not NaN."""
  x = x.astype(jnp.float32)
  squared = jnp.sum(x * x, axis=axis, keepdims=True)
  positive = squared > 0.0
  norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)
  return x / jnp.maximum(norm, NORMALIZE_EPSILON)


class LnspRMSNorm(nn.Module):
  """weight * x / sqrt(mean(x^2) + eps), in float32: [..., d] -> [..., d]."""
  epsilon: float = RMS_EPSILON

  @nn.compact
  def __call__(self, x):
    weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    rms = jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.epsilon)
    return (weight * (x32 / rms)).astype(x.dtype)


class LnspLinearParams(nn.Module):
  """The kernel [in, out] and bias [out] of a PyTorch nn.Linear, for use inside a lax.scan."""
  in_features: int
  out_features: int

  @nn.compact
  def __call__(self):
    init = torch_uniform(self.in_features)
    kernel = self.param("kernel", init, (self.in_features, self.out_features), jnp.float32)
    bias = self.param("bias", init, (self.out_features,), jnp.float32)
    return kernel, bias


class LnspDepthwiseConv(nn.Module):
  """The reference's Conv1d(groups=C, padding=width-1)[:L]: causal, [batch, L, C] -> same."""
  width: int

  @nn.compact
  def __call__(self, x):
    init = torch_uniform(self.width)  # fan_in of a depthwise filter = width
    kernel = self.param("kernel", init, (self.width, x.shape[-1]), jnp.float32)
    bias = self.param("bias", init, (x.shape[-1],), jnp.float32)
    return causal_depthwise_conv(x, kernel.astype(x.dtype), bias.astype(x.dtype))


def lnsp_ssm_scan(x, dt, A, B, *, mode: str = "auto", chunk_size: Optional[int] = None):
  """The reference's recurrence, summed over the state:

      h_t = exp(A * dt_t) * h_{t-1} + B_t * x_t,    y_t = sum_n h_t

  Args:
    x, dt: [batch, L, d_inner]; A: [d_inner, N]; B: [batch, L, N].
    mode: as in `lvm_jax.ops.scan` ("auto" picks by length and backend):
      "sequential" (lax.scan), "unrolled" (the same, fully unrolled: no while
      loop), "associative" (lax.associative_scan, [batch, L, d_inner, N] live),
      "chunked" (associative inside chunks of `chunk_size`, rematerialised).

  Returns:
    y [batch, L, d_inner] in float32 (the D * x skip is added by the caller).
  """
  x, dt, A, B = (a.astype(jnp.float32) for a in (x, dt, A, B))
  length = x.shape[1]
  # The fused kernel computes Mamba-1's recurrence, not this one.
  mode = resolve_scan_type(mode, length, allow_kernels=False).value

  if mode in ("sequential", "unrolled"):
    def step(h, inputs):
      x_t, dt_t, B_t = inputs  # [batch, d_inner], [batch, d_inner], [batch, N]
      h = jnp.exp(A[None] * dt_t[..., None]) * h + B_t[:, None, :] * x_t[..., None]
      return h, jnp.sum(h, axis=-1)

    h0 = jnp.zeros(x.shape[:1] + A.shape, jnp.float32)
    inputs = tuple(jnp.swapaxes(a, 0, 1) for a in (x, dt, B))
    _, ys = lax.scan(step, h0, inputs, unroll=length if mode == "unrolled" else 1)
    return jnp.swapaxes(ys, 0, 1)

  def combine(left, right):
    return left[0] * right[0], right[0] * left[1] + right[1]

  def decay_and_input(x_c, dt_c, B_c):  # [batch, l, d_inner, N] each
    return jnp.exp(A * dt_c[..., None]), B_c[:, :, None, :] * x_c[..., None]

  if mode == "associative":
    _, h = lax.associative_scan(combine, decay_and_input(x, dt, B), axis=1)
    return jnp.sum(h, axis=-1)

  chunk = min(chunk_size or DEFAULT_CHUNK_SIZE, length)
  pad = -length % chunk
  # Padding at the end (decay 1, input 0) cannot change the earlier outputs.
  x_p, dt_p, B_p = (jnp.pad(a, ((0, 0), (0, pad), (0, 0))) for a in (x, dt, B))
  n_chunks = (length + pad) // chunk
  as_chunks = lambda a: jnp.swapaxes(a.reshape(a.shape[0], n_chunks, chunk, a.shape[-1]), 0, 1)

  @jax.checkpoint
  def chunk_step(h, inputs):
    decay, drive = decay_and_input(*inputs)
    decay_cum, h_local = lax.associative_scan(combine, (decay, drive), axis=1)
    h_chunk = decay_cum * h[:, None] + h_local
    return h_chunk[:, -1], jnp.sum(h_chunk, axis=-1)

  h0 = jnp.zeros(x.shape[:1] + A.shape, jnp.float32)
  _, ys = lax.scan(chunk_step, h0, tuple(as_chunks(a) for a in (x_p, dt_p, B_p)))
  ys = jnp.swapaxes(ys, 0, 1).reshape(x.shape[0], n_chunks * chunk, -1)
  return ys[:, :length]


class LnspMambaBlock(MambaFields):
  """The reference's MambaBlock, pre-norm residual: [batch, L, d_model] -> same."""

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    d_inner = self.expand * self.d_model
    hidden = LnspRMSNorm(name="norm")(x)
    inner, res = jnp.split(
        torch_dense(2 * d_inner, self.d_model, False, self.dtype, "in_proj")(hidden), 2, axis=-1)
    inner = nn.silu(LnspDepthwiseConv(self.d_conv, name="conv1d")(inner))
    # The first half of x_proj (named delta in the reference) is never used.
    B = torch_dense(2 * self.d_state, d_inner, False, self.dtype, "x_proj")(inner)[
        ..., self.d_state:]
    dt = torch_dense(d_inner, d_inner, True, self.dtype, "dt_proj",
                     bias_init=nn.initializers.constant(DT_BIAS_INIT))(inner)
    # Discretisation and the recurrence in float32.
    dt = jax.nn.softplus(dt.astype(jnp.float32))
    A_log = self.param("A_log", lambda key, shape: A_LOG_MEAN + A_LOG_STD * jax.random.normal(
        key, shape, jnp.float32), (d_inner, self.d_state))
    D = self.param("D", nn.initializers.ones, (d_inner,), jnp.float32)
    y = lnsp_ssm_scan(inner, dt, -jnp.exp(A_log), B, mode=self.scan_mode,
                      chunk_size=self.scan_chunk_size)
    y = (y + D * inner.astype(jnp.float32)).astype(self.dtype) * nn.silu(res)
    out = torch_dense(self.d_model, d_inner, False, self.dtype, "out_proj")(y)
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return out + x


def symmetric_window_mask(length: int, window: int):
  """[L, L] bool: query i sees keys j with |i - j| <= window // 2, the future included."""
  query = jnp.arange(length)[:, None]
  key = jnp.arange(length)[None, :]
  return jnp.abs(query - key) <= window // 2


class LnspLocalAttention(nn.Module):
  """The reference's LocalAttention: pre-norm residual, a symmetric window (not causal)."""
  d_model: int
  num_heads: int = 4
  window: int = 8
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    batch, length, _ = x.shape
    head_dim = self.d_model // self.num_heads
    hidden = LnspRMSNorm(name="norm")(x)
    qkv = torch_dense(3 * self.d_model, self.d_model, False, self.dtype, "qkv")(hidden)
    query, key, value = (a.reshape(batch, length, self.num_heads, head_dim)
                         for a in jnp.split(qkv, 3, axis=-1))
    scores = jnp.einsum("bqhd,bkhd->bhqk", query.astype(jnp.float32),
                        key.astype(jnp.float32)) / math.sqrt(head_dim)
    scores = jnp.where(symmetric_window_mask(length, self.window), scores,
                       jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value).reshape(batch, length, self.d_model)
    out = torch_dense(self.d_model, self.d_model, False, self.dtype, "out_proj")(attended)
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return out + x


class LnspGRUGate(nn.Module):
  """The reference's GRUGate: no norm, no residual; returns out_proj(h_t) for every t.

  [batch, L, d_model] and an optional initial hidden [batch, H] -> [batch, L, d_model]
  and the final hidden [batch, H]. The recurrence runs in float32.
  """
  d_model: int
  hidden_size: int

  @nn.compact
  def __call__(self, x, initial_hidden: Optional[jax.Array] = None):
    fan_in = self.d_model + self.hidden_size
    reset = LnspLinearParams(fan_in, self.hidden_size, name="reset_gate")()
    update = LnspLinearParams(fan_in, self.hidden_size, name="update_gate")()
    new = LnspLinearParams(fan_in, self.hidden_size, name="new_gate")()
    if initial_hidden is None:
      initial_hidden = jnp.zeros((x.shape[0], self.hidden_size), jnp.float32)

    def step(h, x_t):
      combined = jnp.concatenate([x_t, h], axis=-1)
      r = jax.nn.sigmoid(combined @ reset[0] + reset[1])
      z = jax.nn.sigmoid(combined @ update[0] + update[1])
      candidate = jnp.tanh(jnp.concatenate([x_t, r * h], axis=-1) @ new[0] + new[1])
      h = (1.0 - z) * h + z * candidate
      return h, h

    length = x.shape[1]
    final, hiddens = lax.scan(step, initial_hidden.astype(jnp.float32),
                              jnp.swapaxes(x.astype(jnp.float32), 0, 1),
                              unroll=length if length <= 16 else 1)
    out = torch_dense(self.d_model, self.hidden_size, True, x.dtype, "out_proj")(
        jnp.swapaxes(hiddens, 0, 1).astype(x.dtype))
    return out, final


class LnspMLPBlock(nn.Module):
  """The reference's MLPBlock (unused by its five models): x + fc2(silu(fc1(norm(x))))."""
  d_model: int
  expand: int = 2
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    d_inner = self.d_model * self.expand
    hidden = LnspRMSNorm(name="norm")(x)
    hidden = nn.silu(torch_dense(d_inner, self.d_model, True, self.dtype, "fc1")(hidden))
    out = torch_dense(self.d_model, d_inner, True, self.dtype, "fc2")(hidden)
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return out + x
