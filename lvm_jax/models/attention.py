"""Causal sliding-window multi-head attention block."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def local_causal_mask(length: int, window: int):
  """[L, L] bool: query i attends to keys j with i - window < j <= i (self included)."""
  query = jnp.arange(length)[:, None]
  key = jnp.arange(length)[None, :]
  return (key <= query) & (key > query - window)


class LocalAttentionBlock(nn.Module):
  """Pre-norm residual attention over the last `window` positions: [batch, L, d_model]."""
  d_model: int
  num_heads: int
  window: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    batch, length, _ = x.shape
    head_dim = self.d_model // self.num_heads
    hidden = nn.RMSNorm(dtype=self.dtype, param_dtype=jnp.float32, name="norm")(x)
    qkv = nn.DenseGeneral((3, self.num_heads, head_dim), dtype=self.dtype,
                          param_dtype=jnp.float32, name="qkv_proj")(hidden)
    query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [batch, L, heads, head_dim]
    # Scores and softmax in float32: bf16 logits saturate the exponent.
    scores = jnp.einsum("bqhd,bkhd->bhqk", query.astype(jnp.float32),
                        key.astype(jnp.float32)) / jnp.sqrt(jnp.float32(head_dim))
    scores = jnp.where(local_causal_mask(length, self.window), scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    attended = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
    out = nn.DenseGeneral(self.d_model, axis=(-2, -1), dtype=self.dtype,
                          param_dtype=jnp.float32, name="out_proj")(attended)
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return x + out.astype(x.dtype)  # the residual stream stays float32
