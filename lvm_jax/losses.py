"""Training losses as pure functions of arrays: AR cosine, InfoNCE, their combination."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lvm_jax.models.model import l2_normalize

# A masked logit: finite, so logsumexp and its gradient stay finite.
MASKED_LOGIT = -1e9


def cosine_similarity(predictions, targets):
  """Row-wise cosine [...] of [..., dim] arrays, in float32, finite at zero vectors."""
  return jnp.sum(l2_normalize(predictions) * l2_normalize(targets), axis=-1)


def ar_cosine_loss(predictions, targets):
  """1 - cosine per row: the reference's autoregressive loss before the mean."""
  return 1.0 - cosine_similarity(predictions, targets)


def info_nce(queries, keys, positive_index, query_ids, key_ids, temperature):
  """InfoNCE of each query against all keys, one of which is its positive.

  Args:
    queries: [n, k] projections of predictions (gradient flows here).
    keys: [m, k] projections of targets (the caller stops their gradient).
    positive_index: [n] int, the row of `keys` that is query i's positive.
    query_ids: [n] ids of each query's true target chunk.
    key_ids: [m] ids of each key's chunk. A key with the same id as the
      query's positive, other than the positive itself, is the same chunk seen
      twice in the batch: it is masked instead of counted as a negative.
    temperature: softmax temperature (0.07 in the reference).

  Returns:
    per-query loss [n] (float32, log-sum-exp form) and per-query count of
    masked duplicate keys [n].
  """
  logits = jnp.einsum("nk,mk->nm", queries.astype(jnp.float32),
                      keys.astype(jnp.float32)) / temperature
  is_positive = jnp.arange(keys.shape[0])[None, :] == positive_index[:, None]
  duplicate = (key_ids[None, :] == query_ids[:, None]) & ~is_positive
  logits = jnp.where(duplicate, MASKED_LOGIT, logits)
  positive_logit = jnp.take_along_axis(logits, positive_index[:, None], axis=1)[:, 0]
  loss = jax.nn.logsumexp(logits, axis=1) - positive_logit
  return loss, jnp.sum(duplicate, axis=1)


def bank_info_nce(predictions, positives, query_ids, window_start_ids, bank, bank_ids,
                  temperature, own_vectors=None, own_ids=None):
  """InfoNCE of each prediction against its next vector and a bank of corpus rows.

  The bank is a sample of the payload (the corpus FAISS searches), so its hard
  negatives are the chunks retrieval confuses with the truth. Bank rows from
  the query's own window, its context and the positive itself (ids in
  [window_start_id, query_id]), are masked: the context-excluded view never
  ranks them.

  Args:
    predictions: [n, dim] unit predictions (gradient flows here).
    positives: [n, dim] the true next vectors.
    query_ids, window_start_ids: [n] payload rows of the positive and of the
      window's first context chunk.
    bank: [m, dim] payload rows; bank_ids: [m] their row numbers.
    temperature: softmax temperature.
    own_vectors, own_ids: optional [n, E, dim] and [n, E], rows each query
      scores against on its own (its window's context chunks): they are the
      candidates the all-candidates view ranks first for a prediction near its
      input. A row whose id is the query's own (the positive) is masked.

  Returns:
    per-query loss [n] and per-query count of masked bank rows [n].
  """
  predictions = predictions.astype(jnp.float32)
  positive_logit = jnp.sum(predictions * positives.astype(jnp.float32), axis=-1) / temperature
  logits = jnp.einsum("nd,md->nm", predictions, bank.astype(jnp.float32)) / temperature
  own = ((bank_ids[None, :] >= window_start_ids[:, None]) &
         (bank_ids[None, :] <= query_ids[:, None]))
  logits = jnp.where(own, MASKED_LOGIT, logits)
  every = [positive_logit[:, None], logits]
  if own_vectors is not None:
    own_logits = jnp.einsum("nd,ned->ne", predictions, own_vectors.astype(jnp.float32)) / temperature
    every.append(jnp.where(own_ids == query_ids[:, None], MASKED_LOGIT, own_logits))
  every = jnp.concatenate(every, axis=1)
  return jax.nn.logsumexp(every, axis=1) - positive_logit, jnp.sum(own, axis=1)


def context_negatives(contexts, target_ids, positions: str):
  """The context vectors of a batch as extra InfoNCE keys, with their chunk ids.

  Args:
    contexts: [..., L, dim]; target_ids: [...], ids that grow by one per chunk.
    positions: "last" takes every context position; "all" only position 0, as
      positions 1..L-1 are already keys there (the next vectors of 0..L-2).

  Returns:
    vectors [..., E, dim] and ids [..., E], E = L or 1; context position t of a
    window has id target_id - (L - t).
  """
  length = contexts.shape[-2]
  target_ids = jnp.asarray(target_ids)
  offsets = jnp.arange(length, 0, -1, dtype=target_ids.dtype)
  ids = target_ids[..., None] - offsets
  if positions == "all":
    return contexts[..., :1, :], ids[..., :1]
  return contexts, ids


def combined_loss(infonce, ar, contrastive_weight, ar_weight):
  """λ_con · InfoNCE + λ_ar · AR (0.7 / 0.3 in the reference)."""
  return contrastive_weight * infonce + ar_weight * ar
