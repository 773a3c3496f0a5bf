"""The model and its contrastive projection head as one Flax module, one parameter tree.

params = {"model": <LatentVectorModel>, "head": <ProjectionHead>}, so the
train state's `apply_fn` is this module's `apply`: `apply(v, contexts, train=...)`
predicts, `apply(v, vectors, method=LatentVectorPredictor.project)` projects.
"""

from __future__ import annotations

import flax.linen as nn
import ml_collections

from lvm_jax.models.projection import create_head
from lvm_jax.models.variants import create_model, resolve_sizes

NOT_MODEL_SIZES = ("name", "matmul_precision", "residual_decay_fitted")  # config.model fields that are not create_model's


class LatentVectorPredictor(nn.Module):
  """model: contexts [batch, L, dim] -> unit predictions [batch, L, dim]; head: [..., dim] -> [..., out]."""
  model: nn.Module
  head: nn.Module

  def __call__(self, context_vectors, *, train: bool = False):
    return self.model(context_vectors, train=train)

  def project(self, vectors):
    return self.head(vectors)

  def initialize(self, context_vectors):
    """Touches both halves, so `init(..., method=initialize)` creates every parameter."""
    return self.project(self(context_vectors)[:, -1])


def _overrides(config: ml_collections.ConfigDict) -> dict:
  """config.model's sizes and options that differ from the variant's (None: its default)."""
  return {k: v for k, v in config.model.to_dict().items()
          if k not in NOT_MODEL_SIZES and v is not None}


def model_sizes(config: ml_collections.ConfigDict) -> dict:
  """Every size of the model `config.model` describes, the variant's defaults filled in."""
  return resolve_sizes(config.model.name, **_overrides(config))


def model_from_config(config: ml_collections.ConfigDict, vector_dim: int):
  """The model that `config.model` describes, for vectors of `vector_dim`."""
  return create_model(config.model.name, **{**_overrides(config), "vector_dim": vector_dim})


def predictor_from_config(config: ml_collections.ConfigDict,
                          vector_dim: int) -> LatentVectorPredictor:
  """The model and projection head that `config` describes, as one module."""
  return LatentVectorPredictor(model=model_from_config(config, vector_dim),
                               head=create_head(config.head))
