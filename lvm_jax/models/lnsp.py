"""The reference's five models (`lnsp_*`), built from its own blocks (lnsp_blocks.py).

TrentCarter/lnsp-phase-4, app/lvm/mamba/mamba.py: input_proj (Linear with bias,
vector_dim -> d_model), the variant's layers, output_head (Linear without bias,
d_model -> vector_dim), an optional alignment head, then F.normalize. Flax
submodule names follow the PyTorch attribute paths ("layers.3" -> "layers_3"),
so a reference state dict maps onto these parameters by name
(`lnsp_import.py`).

All positions are returned, [batch, L, vector_dim], as the reference does; its
trainer scores only the last one. Only lnsp_mamba_s and lnsp_mamba_xl are
causal: the reference's local attention looks window // 2 positions ahead,
and mamba_gr seeds each GRU with the previous GRU's final state, which has
seen the whole window. `is_causal` says which, and the training step then
refuses loss.positions = "all".
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lvm_jax.models.model import BlockKind, LatentFields
from lvm_jax.models.lnsp_blocks import (LnspGRUGate, LnspLocalAttention, LnspMambaBlock,
                                        torch_dense, torch_normalize)

LNSP_PREFIX = "lnsp_"
LAYER_NORM_EPSILON = 1e-5  # torch.nn.LayerNorm's default, used by the reference's head


class LnspLatentVectorModel(LatentFields):
  """[batch, L, vector_dim] context vectors -> [batch, L, vector_dim] unit predictions.

  blocks: (submodule name, kind) in order, kind a BlockKind; the fields are LatentFields'.
  """

  @property
  def is_causal(self) -> bool:
    """False when some output t depends on inputs after t (then only the last is valid)."""
    kinds = [kind for _, kind in self.blocks]
    looks_ahead = BlockKind.ATTENTION in kinds and self.window // 2 > 0
    return not looks_ahead and kinds.count(BlockKind.GRU) <= 1

  @nn.compact
  def __call__(self, context_vectors, *, train: bool = False):
    x = torch_dense(self.d_model, self.vector_dim, True, self.dtype, "input_proj")(
        context_vectors.astype(self.dtype))
    gru_hidden = None
    for name, kind in self.blocks:
      if kind == BlockKind.MAMBA:
        x = LnspMambaBlock(self.d_model, self.d_state, self.d_conv, self.expand,
                           self.dropout_rate, self.scan_mode, self.scan_chunk_size, self.dtype,
                           name=name)(x, train=train)
      elif kind == BlockKind.ATTENTION:
        x = LnspLocalAttention(self.d_model, self.num_heads, self.window, self.dropout_rate,
                               self.dtype, name=name)(x, train=train)
      elif kind == BlockKind.GRU:
        x, gru_hidden = LnspGRUGate(self.d_model, self.gru_hidden, name=name)(x, gru_hidden)
      else:
        raise ValueError(f"LnspLatentVectorModel: unknown block kind {kind!r} in {name}; "
                         "choose from mamba, attention, gru.")
    out = torch_dense(self.vector_dim, self.d_model, False, self.dtype, "output_head")(x)
    if self.alignment_head:
      aligned = torch_dense(self.vector_dim, self.vector_dim, False, self.dtype,
                            "alignment_head")(out)
      out = (1.0 - self.alignment_alpha) * out + self.alignment_alpha * aligned
    return torch_normalize(out)


class LnspProjectionHead(nn.Module):
  """The reference trainer's head: Linear+bias, exact GELU, LayerNorm(eps 1e-5), Linear, normalize.

  [..., dim] -> [..., out_dim]. Differs from ProjectionHead in the GELU (erf,
  not tanh), the LayerNorm epsilon, PyTorch's init and the final normalisation;
  submodules are named after the reference's nn.Sequential indices.
  """
  hidden_dim: int = 512
  out_dim: int = 256

  @nn.compact
  def __call__(self, vectors):
    x = vectors.astype(jnp.float32)
    x = torch_dense(self.hidden_dim, x.shape[-1], True, jnp.float32, "mlp_0")(x)
    x = jax.nn.gelu(x, approximate=False)
    x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, use_fast_variance=False, name="mlp_2")(x)
    x = torch_dense(self.out_dim, self.hidden_dim, False, jnp.float32, "mlp_3")(x)
    return torch_normalize(x)


@dataclasses.dataclass(frozen=True)
class LnspVariant:
  """Reference defaults (its model constructors' defaults) and the block layout they give."""
  defaults: Dict[str, Any]
  layout: Callable[[Dict[str, Any]], Tuple[Tuple[str, str], ...]]


def _hybrid_layout(s):
  return tuple((f"layers_{i}", BlockKind.ATTENTION if (i + 1) % s["attention_every"] == 0 else BlockKind.MAMBA)
               for i in range(s["n_layers"]))


def _sandwich_layout(s):
  return (tuple((f"front_layers_{i}", BlockKind.ATTENTION) for i in range(s["n_attention_front"]))
          + tuple((f"trunk_layers_{i}", BlockKind.MAMBA) for i in range(s["n_layers"]))
          + tuple((f"back_layers_{i}", BlockKind.ATTENTION) for i in range(s["n_attention_back"])))


def _gr_layout(s):
  return tuple(block for i in range(s["n_layers"])
               for block in ((f"mamba_layers_{i}", BlockKind.MAMBA), (f"gru_gates_{i}", BlockKind.GRU)))


def _mamba_layout(s):
  return tuple((f"layers_{i}", BlockKind.MAMBA) for i in range(s["n_layers"]))


_COMMON = dict(vector_dim=768, d_conv=4, expand=2, dropout=0.05, alignment_head=False,
               alignment_alpha=0.25, scan_mode="auto", scan_chunk_size=None, dtype="float32",
               residual=False, residual_decay=0.0, residual_mixing="fixed",
               residual_max_lag=16)  # the skip path: off, and only off (below)

LNSP_VARIANTS: Dict[str, LnspVariant] = {
    "lnsp_mamba_s": LnspVariant(dict(_COMMON, n_layers=8, d_model=256, d_state=128),
                                _mamba_layout),
    "lnsp_mamba_hybrid_local": LnspVariant(
        dict(_COMMON, n_layers=12, d_model=320, d_state=128, window=8, num_heads=4,
             attention_every=4), _hybrid_layout),
    "lnsp_mamba_xl": LnspVariant(dict(_COMMON, n_layers=16, d_model=384, d_state=192),
                                 _mamba_layout),
    # n_layers: the Mamba trunk (the reference's n_layers_mamba); its n_layers_local is
    # n_attention_front + n_attention_back, split evenly.
    "lnsp_mamba_sandwich": LnspVariant(
        dict(_COMMON, n_attention_front=2, n_layers=8, n_attention_back=2, d_model=320,
             d_state=160, window=8, num_heads=4), _sandwich_layout),
    "lnsp_mamba_gr": LnspVariant(dict(_COMMON, n_layers=10, d_model=288, d_state=144,
                                      gru_hidden=256), _gr_layout),
}


def build_lnsp_model(name: str, sizes: Dict[str, Any], dtype) -> LnspLatentVectorModel:
  """The model for checked `sizes` (variants.resolve_sizes) of variant `name`."""
  if sizes["residual"] or sizes["residual_decay"] or sizes["residual_mixing"] != "fixed":
    raise ValueError(f"create_model({name!r}): residual={sizes['residual']!r}, residual_decay="
                     f"{sizes['residual_decay']!r}: the skip path is part of this project's blocks; "
                     "the lnsp_* models reproduce the reference's as written. Fix: set "
                     "model.residual=False and model.residual_decay=0, or use a native model.")
  return LnspLatentVectorModel.from_sizes(sizes, LNSP_VARIANTS[name].layout(sizes), dtype)
