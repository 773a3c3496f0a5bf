"""The latent-vector model: context vectors in, next-vector predictions out."""

from __future__ import annotations

import enum
from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lvm_jax.models.attention import LocalAttentionBlock
from lvm_jax.models.gru import GRUGate
from lvm_jax.models.mamba import MambaBlock



def recency_average(context_vectors, decay: float):
  """[..., L, dim] -> [..., L, dim]: position t is sum_{s<=t} decay^(t-s) x_s / sum decay^(t-s).

  Causal. decay 0 gives each vector itself (copy-last at the last position), 1
  the mean so far. On real text the next chunk shares the article's topic (the
  mean) and the current paragraph's subject (the last chunk): a blend of the two
  retrieves it better than either.
  """
  lag = np.arange(context_vectors.shape[-2])[:, None] - np.arange(context_vectors.shape[-2])
  weights = np.where(lag >= 0, np.power(float(decay), np.maximum(lag, 0)), 0.0)  # [L, L]
  weights /= weights.sum(axis=1, keepdims=True)
  return jnp.einsum("ts,...sd->...td", weights.astype(np.float32),
                    context_vectors.astype(jnp.float32))


class ResidualMixing(str, enum.Enum):
  """How the skip path averages the context (config.model.residual_mixing)."""
  FIXED = "fixed"      # recency_average with residual_decay, the same for every window
  LEARNED = "learned"  # per window and position: weights over lags read from the hidden state


RESIDUAL_MIXINGS = tuple(kind.value for kind in ResidualMixing)


def mix_by_lag(context_vectors, lag_logits):
  """Causal weighted average: position t is sum_{s<=t} softmax_s(lag_logits[t, t-s]) x_s.

  context_vectors [..., L, dim]; lag_logits [..., L, K], one logit per lag 0..K-1;
  lags of K or more share the last logit (an old chunk weighs like the oldest one named).
  """
  length, max_lag = context_vectors.shape[-2], lag_logits.shape[-1]
  lag = np.arange(length)[:, None] - np.arange(length)[None, :]  # [t, s]
  which = np.clip(lag, 0, max_lag - 1)[..., None] == np.arange(max_lag)  # [t, s, K] one-hot
  logits = jnp.einsum("...tk,tsk->...ts", lag_logits.astype(jnp.float32), which.astype(np.float32))
  logits = jnp.where(lag >= 0, logits, -jnp.inf)
  weights = jax.nn.softmax(logits, axis=-1)
  return jnp.einsum("...ts,...sd->...td", weights, context_vectors.astype(jnp.float32))


def recency_lag_logits(decay: float, max_lag: int) -> np.ndarray:
  """Logits whose softmax over lags is recency_average's weights: lag * log(decay)."""
  return np.arange(max_lag, dtype=np.float32) * np.float32(np.log(max(float(decay), 1e-4)))


class BlockKind(str, enum.Enum):
  """The blocks a variant stacks; each is causal over the window."""
  MAMBA = "mamba"
  ATTENTION = "attention"
  GRU = "gru"


BLOCK_KINDS = tuple(kind.value for kind in BlockKind)
NORM_EPSILON = 1e-6


def l2_normalize(x, axis=-1, epsilon=NORM_EPSILON):
  """x / |x| in float32; vectors shorter than epsilon map to zero, with zero gradient.

  Article dropout zeroes the last context positions, and a zero input gives an
  exactly zero prediction while the input projection's bias is still zero
  (Mamba gates each position by its own input). x / max(|x|, eps) would pass a
  gradient of 1/eps there, which compounds through the projection head to
  overflow; below epsilon the direction is undefined, so no gradient flows.
  """
  x = x.astype(jnp.float32)
  squared = jnp.sum(x * x, axis=axis, keepdims=True)
  long_enough = squared > epsilon * epsilon
  safe_squared = jnp.where(long_enough, squared, 1.0)  # keeps rsqrt and its gradient finite
  return jnp.where(long_enough, x * jax.lax.rsqrt(safe_squared), 0.0)


class LatentFields(nn.Module):
  """The fields both model families share (LatentVectorModel here and the reference's
  lnsp.LnspLatentVectorModel), with their one set of defaults; `from_sizes` fills them from a
  variant's resolved sizes (variants.resolve_sizes)."""
  vector_dim: int
  d_model: int
  blocks: Sequence[Any]  # block kinds, or (submodule name, kind) for the lnsp_* models
  d_state: int = 128
  d_conv: int = 4
  expand: int = 2
  dropout_rate: float = 0.0
  num_heads: int = 4
  window: int = 8
  gru_hidden: int = 256
  alignment_head: bool = False
  alignment_alpha: float = 0.25
  scan_mode: str = "auto"
  scan_chunk_size: Optional[int] = None
  dtype: Any = jnp.float32

  @classmethod
  def from_sizes(cls, sizes: Dict[str, Any], blocks: Sequence[Any], dtype: Any, **fields):
    """The model of resolved `sizes`; sizes a variant leaves out keep the defaults above, and
    `fields` sets a family's own fields."""
    return cls(
        vector_dim=sizes["vector_dim"], d_model=sizes["d_model"], blocks=blocks,
        d_state=sizes["d_state"], d_conv=sizes["d_conv"], expand=sizes["expand"],
        dropout_rate=float(sizes["dropout"]), num_heads=sizes.get("num_heads", cls.num_heads),
        window=sizes.get("window", cls.window), gru_hidden=sizes.get("gru_hidden", cls.gru_hidden),
        alignment_head=bool(sizes["alignment_head"]),
        alignment_alpha=float(sizes["alignment_alpha"]), scan_mode=sizes["scan_mode"],
        scan_chunk_size=sizes["scan_chunk_size"], dtype=dtype, **fields)


class LatentVectorModel(LatentFields):
  """Maps [batch, L, vector_dim] context vectors to [batch, L, vector_dim] unit predictions.

  Output t predicts the vector at position t + 1. Every block is causal, so
  output t depends only on inputs 0..t and training can use every position;
  the one exception is `gru_state_handoff` (the reference's mamba_gr, where
  each GRU starts from the previous GRU's *final* state, which has seen the
  whole window): then only the last position is a valid prediction.

  residual: output t is a recency-weighted average of context vectors 0..t
  (`recency_average` with residual_decay; 0 is context vector t alone) plus a
  learned correction, then normalised. The correction's last layer starts at
  zero, so an untrained model is that average (copy-last at decay 0: copying the
  input is a strong baseline on real text), and training only has to learn what
  moves the prediction away from its input.
  """

  @property
  def is_causal(self) -> bool:
    return not (self.gru_state_handoff and BlockKind.GRU in self.blocks)
  gru_state_handoff: bool = False
  residual: bool = False
  residual_decay: float = 0.0
  residual_mixing: str = "fixed"
  residual_max_lag: int = 16

  @nn.compact
  def __call__(self, context_vectors, *, train: bool = False):
    # Matmuls run in `dtype` (bf16 for mixed precision); parameters, the residual
    # stream, the scan state and everything after the output head stay float32.
    x = nn.Dense(self.d_model, dtype=self.dtype, param_dtype=jnp.float32,
                 name="input_proj")(context_vectors.astype(self.dtype)).astype(jnp.float32)
    gru_hidden = None
    for index, kind_name in enumerate(self.blocks):
      kind = _block_kind(kind_name)
      name = f"block_{index:02d}_{kind.value}"
      if kind is BlockKind.MAMBA:
        x = MambaBlock(self.d_model, self.d_state, self.d_conv, self.expand, self.dropout_rate,
                       self.scan_mode, self.scan_chunk_size, self.dtype, name=name)(x, train=train)
      elif kind is BlockKind.ATTENTION:
        x = LocalAttentionBlock(self.d_model, self.num_heads, self.window, self.dropout_rate,
                                self.dtype, name=name)(x, train=train)
      else:
        x, final_hidden = GRUGate(self.d_model, self.gru_hidden, self.dropout_rate, self.dtype,
                                  name=name)(x, gru_hidden, train=train)
        if self.gru_state_handoff:
          gru_hidden = final_hidden
    x = nn.RMSNorm(dtype=self.dtype, param_dtype=jnp.float32, name="final_norm")(x)
    kernel_init = nn.initializers.zeros if self.residual else nn.linear.default_kernel_init
    out = nn.Dense(self.vector_dim, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                   kernel_init=kernel_init, name="output_head")(x)
    if self.alignment_head:
      aligned = nn.Dense(self.vector_dim, use_bias=False, dtype=self.dtype,
                         param_dtype=jnp.float32, name="alignment_head")(out)
      out = (1.0 - self.alignment_alpha) * out + self.alignment_alpha * aligned
    if self.residual:
      out = self._skip_base(context_vectors, x) + out.astype(jnp.float32)
    return l2_normalize(out)


  def _skip_base(self, context_vectors, hidden):
    """The average the correction is added to: fixed recency, or weights learned per window.

    learned: a zero-initialised map from the hidden state to logits over lags,
    with recency_average's logits as its bias, so an untrained model is still the
    fixed-decay average and training moves each window's weights from there.
    """
    if ResidualMixing(self.residual_mixing) is ResidualMixing.FIXED:
      return recency_average(context_vectors, self.residual_decay)
    prior = recency_lag_logits(self.residual_decay, self.residual_max_lag)
    lag_logits = nn.Dense(self.residual_max_lag, dtype=jnp.float32, param_dtype=jnp.float32,
                          kernel_init=nn.initializers.zeros,
                          bias_init=lambda *_: jnp.asarray(prior), name="skip_mixing")(
                              hidden.astype(jnp.float32))
    return mix_by_lag(context_vectors, lag_logits)


def _block_kind(name) -> BlockKind:
  try:
    return BlockKind(name)
  except ValueError:
    raise ValueError(f"LatentVectorModel: unknown block kind {name!r}; choose from "
                     f"{BLOCK_KINDS}.") from None


def weight_decay_mask(params):
  """True where AdamW should decay: matrices and filters (leaf names ending in "kernel").

  Excluded, as in Mamba: A_log, D, every bias (the dt bias included) and every norm scale.
  """
  def decays(path, _):
    name = str(getattr(path[-1], "key", path[-1]))
    return name.endswith("kernel")

  return jax.tree_util.tree_map_with_path(decays, params)


def count_parameters(params) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
