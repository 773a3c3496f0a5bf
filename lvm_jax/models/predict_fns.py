"""A model's prediction functions, built once from its apply_fn, for everything that judges it.

Evaluators take a `PredictFns` as big_vision's take a predict_fn: the training loop, the eval
CLI, fit_reranker and predict all build it here from a model's `apply`, so none of them sees a
TrainState, and the last-position prediction is written once. Below train/ and evaluators/,
so both may import it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np

from lvm_jax.models.predictor import LatentVectorPredictor


def predict(state_or_apply_fn, params, contexts, *, train: bool = False, rngs=None):
  """[batch, L, dim] -> [batch, L, dim] unit predictions (a TrainState or its apply_fn)."""
  apply_fn = getattr(state_or_apply_fn, "apply_fn", state_or_apply_fn)
  return apply_fn({"params": params}, contexts, train=train, rngs=rngs)


def project(state_or_apply_fn, params, vectors):
  """[..., dim] -> [..., head out] unit projections (the InfoNCE space; a predictor's head)."""
  apply_fn = getattr(state_or_apply_fn, "apply_fn", state_or_apply_fn)
  return apply_fn({"params": params}, vectors, method=LatentVectorPredictor.project)


@dataclasses.dataclass(frozen=True)
class PredictFns:
  """predict(params, contexts [batch, L, dim]) -> [batch, dim], the last position's prediction
  (the query); project(params, vectors [..., dim]) -> [..., head out], for a predictor with a
  head (a bare model's apply has none: calling it raises). Both jitted; nesting them inside
  another jit inlines them."""
  predict: Callable
  project: Callable


def from_apply_fn(apply_fn: Callable) -> PredictFns:
  """The jitted functions of a model's `apply` (a TrainState's apply_fn or a loaded model's)."""
  return PredictFns(
      predict=jax.jit(lambda params, contexts: predict(apply_fn, params, contexts)[:, -1]),
      project=jax.jit(lambda params, vectors: project(apply_fn, params, vectors)))


def bind(predict_fn: Callable, params) -> Callable:
  """contexts -> predictions with `params` fixed: what retrieval's report and the CLIs call."""
  return lambda contexts: predict_fn(params, contexts)


def predict_with(apply_fn: Callable, params) -> Callable:
  """contexts -> [batch, dim] last-position predictions of a loaded model (the CLIs' one line)."""
  return bind(from_apply_fn(apply_fn).predict, params)


def predict_in_batches(predict_fn: Callable, contexts: np.ndarray, size: int) -> np.ndarray:
  """predict_fn over contexts in batches of exactly `size` (the last zero-padded, so a jitted
  function compiles once) -> [n, ...] float32."""
  out = []
  for start in range(0, len(contexts), size):
    batch = contexts[start:start + size]
    if len(batch) < size:
      batch = np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:],
                                              batch.dtype)])
    out.append(np.asarray(predict_fn(batch), np.float32)[:min(size, len(contexts) - start)])
  return np.concatenate(out)
