"""The reference's context augmentation, as pure jittable functions of a PRNG key.

Two corruptions teach the model not to lean on any single context position:
  article dropout (p = 0.2): per sample, with probability p, zero the last k
    context positions, k uniform in [1, min(3, L - 1)] (at least one survives);
  span corruption (p = 0.1): per sample, with probability p, replace one
    position, uniform in [0, L - 2] (never the last), with the vector at the same
    position of another sample of the batch. The reference drew the donor from
    the whole data set; drawing it from the batch keeps this on device and is
    equivalent for a shuffled batch.
Targets are never touched; callers apply this only in training, never at eval.
Only elementwise ops, comparisons, a gather on the batch axis and `where`
are used, so it jits on jax 0.5.0 and Apple's jax-metal too.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

MAX_DROPPED_POSITIONS = 3  # article dropout zeroes at most this many trailing positions


class AugmentationDraw(NamedTuple):
  """What one key decides for a batch of B windows of length L.

  zeroed [B, L] bool: positions set to zero by article dropout.
  corrupted [B, L] bool: positions replaced by the donor's vector (at most one per row).
  donor [B] int32: the batch row whose vector a corrupted position receives.
  """
  zeroed: jax.Array
  corrupted: jax.Array
  donor: jax.Array


def draw_augmentation(key: jax.Array, batch_size: int, context_length: int, *,
                      article_dropout_p=0.2, span_corruption_p=0.1) -> AugmentationDraw:
  """The random decisions only; shapes are static, probabilities may be traced."""
  dropout_key, count_key, corrupt_key, position_key, donor_key = jax.random.split(key, 5)
  positions = jnp.arange(context_length)[None, :]  # [1, L]
  max_dropped = min(MAX_DROPPED_POSITIONS, context_length - 1)
  if max_dropped >= 1:
    drops = jax.random.uniform(dropout_key, (batch_size,)) < article_dropout_p
    dropped_count = jax.random.randint(count_key, (batch_size,), 1, max_dropped + 1)
    zeroed = drops[:, None] & (positions >= context_length - dropped_count[:, None])
  else:  # L = 1: nothing may be dropped, the single position must survive
    zeroed = jnp.zeros((batch_size, context_length), bool)
  if context_length >= 2 and batch_size >= 2:
    corrupts = jax.random.uniform(corrupt_key, (batch_size,)) < span_corruption_p
    position = jax.random.randint(position_key, (batch_size,), 0, context_length - 1)
    corrupted = corrupts[:, None] & (positions == position[:, None])
    # Uniform over the other B - 1 rows: draw from [0, B-2], skip over oneself.
    donor = jax.random.randint(donor_key, (batch_size,), 0, batch_size - 1)
    donor = donor + (donor >= jnp.arange(batch_size)).astype(donor.dtype)
  else:  # no position before the last, or no other sample to borrow from
    corrupted = jnp.zeros((batch_size, context_length), bool)
    donor = jnp.arange(batch_size)
  return AugmentationDraw(zeroed, corrupted, donor.astype(jnp.int32))


def apply_augmentation(contexts: jax.Array, draw: AugmentationDraw) -> jax.Array:
  """contexts [B, L, dim] -> [B, L, dim]: corruption (from the clean batch), then dropout."""
  donor_contexts = jnp.take(contexts, draw.donor, axis=0)  # [B, L, dim]
  augmented = jnp.where(draw.corrupted[..., None], donor_contexts, contexts)
  return jnp.where(draw.zeroed[..., None], jnp.zeros_like(augmented), augmented)


def augment_contexts(key: jax.Array, contexts: jax.Array, *, article_dropout_p=0.2,
                     span_corruption_p=0.1) -> jax.Array:
  """contexts [B, L, dim] -> augmented [B, L, dim]; deterministic per key; jittable."""
  batch_size, context_length = contexts.shape[0], contexts.shape[1]
  draw = draw_augmentation(key, batch_size, context_length, article_dropout_p=article_dropout_p,
                           span_corruption_p=span_corruption_p)
  return apply_augmentation(contexts, draw)
