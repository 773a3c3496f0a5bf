"""The contrastive projection head: vector_dim -> hidden -> out, unit norm."""

from __future__ import annotations

import enum

import flax.linen as nn
import jax.numpy as jnp

from lvm_jax.models.lnsp import LnspProjectionHead
from lvm_jax.models.model import l2_normalize

class HeadKind(str, enum.Enum):
  """config.head.kind: this project's head, or the reference trainer's (for imports)."""
  NATIVE = "native"
  LNSP = "lnsp"


HEAD_KINDS = tuple(k.value for k in HeadKind)


class ProjectionHead(nn.Module):
  """Linear+bias, GELU, LayerNorm, Linear without bias, L2-normalise: [..., dim] -> [..., out]."""
  hidden_dim: int = 512
  out_dim: int = 256

  @nn.compact
  def __call__(self, vectors):
    x = nn.Dense(self.hidden_dim, param_dtype=jnp.float32, name="hidden")(vectors.astype(jnp.float32))
    x = nn.gelu(x)
    x = nn.LayerNorm(name="norm")(x)
    x = nn.Dense(self.out_dim, use_bias=False, param_dtype=jnp.float32, name="out")(x)
    return l2_normalize(x)


def create_head(head_config):
  """The head config.head describes: kind "native" (this project's) or "lnsp" (the reference
  trainer's, which imported reference checkpoints need). Configs without `kind` are native."""
  kind = head_config.get("kind", "native")
  if kind == HeadKind.LNSP:
    return LnspProjectionHead(head_config.hidden_dim, head_config.out_dim)
  if kind == HeadKind.NATIVE:
    return ProjectionHead(head_config.hidden_dim, head_config.out_dim)
  raise ValueError(f"config field head.kind={kind!r} is not one of {HEAD_KINDS}.")
