"""The model and its contrastive projection head as one Flax module, one parameter tree.

params = {"model": <LatentVectorModel>, "head": <ProjectionHead>}, so the
train state's `apply_fn` is this module's `apply`: `apply(v, contexts, train=...)`
predicts, `apply(v, vectors, method=LatentVectorPredictor.project)` projects.
"""

from __future__ import annotations

import flax.linen as nn


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
