"""The update, as pure functions: optimizer, state, accumulated gradients, train_step.

One update = `accum_steps` micro-batches per device, scanned with summed
float32 gradients, averaged across devices (`lax.pmean` over the mesh's data axis), then one
optax step (clip by global norm -> AdamW with a warm-up-cosine schedule).
"""

from __future__ import annotations

import functools
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state
from jax import lax

from lvm_jax.config_base import Negatives, Positions
from lvm_jax import losses
from lvm_jax.train import augment
from lvm_jax.models import LatentVectorPredictor, weight_decay_mask
# predict and project live with the evaluators' PredictFns; the step calls them by these names.
from lvm_jax.models.predict_fns import predict, project  # noqa: F401
from lvm_jax.train.parallel import AXIS, DataParallel

METRIC_SUMS = ("loss", "infonce", "ar_loss", "cosine", "masked_negatives")


class TrainState(train_state.TrainState):
  """params = {"model": ..., "head": ...}; apply_fn = LatentVectorPredictor.apply."""


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int):
  """Linear warm-up to the peak, then cosine decay to final_lr_fraction of it."""
  peak = config.train.learning_rate
  warmup = min(config.train.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=peak * config.train.final_lr_fraction)


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int, params):
  return optax.chain(
      optax.clip_by_global_norm(config.train.clip_norm),
      optax.adamw(learning_rate_schedule(config, total_steps),
                  weight_decay=config.train.weight_decay, mask=weight_decay_mask(params)))


def create_train_state(config: ml_collections.ConfigDict, predictor: LatentVectorPredictor,
                       rng: jax.Array, vector_dim: int, total_steps: int) -> TrainState:
  dummy = jnp.zeros((1, config.data.context_length, vector_dim), jnp.float32)
  # Jitted: one compiled program (and one persistent-cache entry) instead of hundreds of
  # op-by-op dispatches, each compiled at first use; the same values (tests/test_train_step.py).
  init = jax.jit(functools.partial(predictor.init, method=LatentVectorPredictor.initialize))
  params = init(rng, dummy)["params"]
  return TrainState.create(apply_fn=predictor.apply, params=params,
                           tx=create_optimizer(config, total_steps, params))


def prediction_targets(contexts, targets, target_ids, positions: str):
  """What each prediction is scored against.

  Args:
    contexts: [..., L, dim]; targets: [..., dim]; target_ids: [...].
    positions: "last" (only the final output predicts `targets`) or "all"
      (output t predicts context t + 1, the last one the target).

  Returns:
    next_vectors [..., P, dim] and next_ids [..., P], P = 1 or L. Windows run
    over consecutive chunks and ids grow by one per chunk (payload rows, or
    packed (article, chunk) keys), so position t's next chunk has id
    target_id - (L - 1 - t).
  """
  if positions == Positions.LAST:
    return targets[..., None, :], target_ids[..., None]
  length = contexts.shape[-2]
  next_vectors = jnp.concatenate([contexts[..., 1:, :], targets[..., None, :]], axis=-2)
  offsets = jnp.arange(length - 1, -1, -1, dtype=target_ids.dtype)
  return next_vectors, target_ids[..., None] - offsets


def negative_pool(negatives: str, index, per_micro: int, micro, step, step_offset, extras):
  """What micro-batch `index`'s queries score against, and where each one's positive sits.

  micro, step: (keys, vectors, ids) of this micro-batch and of the whole step (every
  device's for "global", this device's first query then at `step_offset`); keys or vectors
  are None when their InfoNCE term is off. "micro" scores against the micro-batch only
  (the reference); "accum" and "global" against the whole step. extras (context negatives,
  per micro-batch for "micro", of the step otherwise) are appended after the positives, so
  the positive indices hold. Returns (keys, vectors, ids, positive [per_micro]).
  """
  if negatives == Negatives.MICRO:
    (keys, vectors, ids), positive = micro, jnp.arange(per_micro)
  else:
    (keys, vectors, ids), positive = step, step_offset + index * per_micro + jnp.arange(per_micro)
  if extras is not None:
    extra_keys, extra_vectors, extra_ids = extras
    keys = None if keys is None else jnp.concatenate([keys, extra_keys])
    vectors = None if vectors is None else jnp.concatenate([vectors, extra_vectors])
    ids = jnp.concatenate([ids, extra_ids.astype(ids.dtype)])
  return keys, vectors, ids, positive


def accumulated_gradients(state: TrainState, batch: Dict[str, jax.Array], rng: jax.Array, *,
                          config: ml_collections.ConfigDict):
  """Gradient of the mean loss over this device's [accum_steps, micro_batch, ...] batch.

  Because the target branch has stop-gradient, the target projections of the
  whole step are computed once up front and every micro-batch scores against
  them ("accum"), or against all devices' ("global"): the summed micro-batch
  gradients then equal the gradient of one batch of the whole step. The head's
  InfoNCE is not computed when its weight is 0, the vector InfoNCE when its is.
  """
  contexts, targets, target_ids = batch["contexts"], batch["targets"], batch["target_ids"]
  accum_steps, micro_batch = contexts.shape[:2]
  negatives, temperature = config.loss.negatives, config.loss.temperature
  use_head = config.loss.contrastive_weight > 0
  use_vectors = config.loss.vector_infonce_weight > 0
  use_bank = config.loss.bank_infonce_weight > 0
  if use_bank and "bank_vectors" not in batch:
    raise ValueError("config.loss.bank_infonce_weight > 0 but the batch has no bank_vectors: "
                     "the pipeline draws them when config.loss.bank_negatives != 0.")
  device_index = lax.axis_index(AXIS)
  gather = ((lambda x: lax.all_gather(x, AXIS, tiled=True)) if negatives == Negatives.GLOBAL
            else (lambda x: x))

  next_vectors, next_ids = prediction_targets(contexts, targets, target_ids, config.loss.positions)
  per_micro = next_vectors.shape[2] * micro_batch  # queries per micro-batch
  queries_per_device = accum_steps * per_micro
  key_ids = next_ids.reshape(accum_steps, per_micro)
  keys = step_keys = step_vectors = None
  if use_head:
    keys = lax.stop_gradient(project(state, state.params, next_vectors))
    keys = keys.reshape(accum_steps, per_micro, -1)
    step_keys = gather(keys.reshape(-1, keys.shape[-1]))
  if use_vectors:
    step_vectors = gather(next_vectors.reshape(-1, next_vectors.shape[-1]).astype(jnp.float32))
  step_pool = (step_keys, step_vectors, gather(key_ids.reshape(-1)))
  step_offset = device_index * queries_per_device if negatives == Negatives.GLOBAL else 0
  extras, step_extras = None, None  # context negatives: (keys, vectors, ids) per micro-batch
  if config.loss.context_negatives:
    extra_vectors, extra_ids = losses.context_negatives(contexts, target_ids, config.loss.positions)
    extra_vectors = extra_vectors.reshape(accum_steps, -1, extra_vectors.shape[-1])
    extra_keys = lax.stop_gradient(project(state, state.params, extra_vectors)) if use_head else None
    extras = (extra_keys, extra_vectors.astype(jnp.float32) if use_vectors else None,
              extra_ids.reshape(accum_steps, -1))
    step_extras = tuple(None if a is None else a.reshape((-1,) + a.shape[2:]) for a in extras)
  metric_names = (METRIC_SUMS if use_head else tuple(k for k in METRIC_SUMS if k != "infonce")) \
      + (("vector_infonce",) if use_vectors else ()) + (("bank_infonce",) if use_bank else ())
  context_length = contexts.shape[-2]

  def micro_step(carry, inputs):
    grad_sum, metric_sum = carry
    micro_contexts, micro_next, micro_ids, micro_keys, micro_key_ids, index, micro_extras = inputs
    window_contexts = micro_contexts  # the payload rows themselves, before augmentation
    micro_rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
        rng, state.step), device_index), index)
    augment_rng, dropout_rng = jax.random.split(micro_rng)
    micro_contexts = augment.augment_contexts(
        augment_rng, micro_contexts, article_dropout_p=config.augment.article_dropout,
        span_corruption_p=config.augment.span_corruption)
    micro_vectors = micro_next.reshape(per_micro, -1).astype(jnp.float32) if use_vectors else None
    pool, vector_pool, pool_ids, positive = negative_pool(
        negatives, index, per_micro, (micro_keys, micro_vectors, micro_key_ids), step_pool,
        step_offset, micro_extras if negatives == Negatives.MICRO else step_extras)

    def loss_fn(params):
      predictions = predict(state, params, micro_contexts, train=True,
                            rngs={"dropout": dropout_rng})
      if config.loss.positions == Positions.LAST:
        predictions = predictions[:, -1:]
      ar = losses.ar_cosine_loss(predictions, micro_next)
      query_ids = micro_ids.reshape(-1)
      sums = {"ar_loss": jnp.sum(ar), "cosine": jnp.sum(1.0 - ar[:, -1]) * per_micro / micro_batch,
              "masked_negatives": jnp.float32(0)}
      if use_head:
        queries = project(state, params, predictions).reshape(per_micro, -1)
        infonce, masked = losses.info_nce(queries, pool, positive, query_ids, pool_ids, temperature)
        sums["infonce"], sums["masked_negatives"] = jnp.sum(infonce), jnp.sum(masked).astype(
            jnp.float32)
      # Sums over the step's queries, not micro-batch means: the scan then adds up
      # to exactly the gradient of the mean over one big batch.
      loss = losses.combined_loss(sums.get("infonce", 0.0), sums["ar_loss"],
                                  config.loss.contrastive_weight if use_head else 0.0,
                                  config.loss.ar_weight) / queries_per_device
      if use_vectors:  # InfoNCE in the space FAISS searches: predictions vs raw next vectors
        vector_infonce, masked = losses.info_nce(predictions.reshape(per_micro, -1), vector_pool,
                                                 positive, query_ids, pool_ids,
                                                 config.loss.vector_temperature)
        sums["vector_infonce"] = jnp.sum(vector_infonce)
        if not use_head:  # the same pool ids, so the same negatives are masked
          sums["masked_negatives"] = jnp.sum(masked).astype(jnp.float32)
        loss = loss + config.loss.vector_infonce_weight * sums["vector_infonce"] / queries_per_device
      if use_bank:  # against corpus rows: the negatives retrieval itself meets
        window_starts = jnp.repeat(micro_ids[:, -1] - context_length, micro_ids.shape[1])
        own_vectors = own_ids = None
        if config.loss.get("bank_context_negatives", False):  # each query also ranks its context
          own_vectors = jnp.repeat(window_contexts, micro_ids.shape[1], axis=0)
          own_ids = window_starts[:, None] + jnp.arange(context_length, dtype=window_starts.dtype)
        bank_loss, _ = losses.bank_info_nce(
            predictions.reshape(per_micro, -1), micro_next.reshape(per_micro, -1), query_ids,
            window_starts, batch["bank_vectors"], batch["bank_ids"], config.loss.vector_temperature,
            own_vectors, own_ids)
        sums["bank_infonce"] = jnp.sum(bank_loss)
        loss = loss + config.loss.bank_infonce_weight * sums["bank_infonce"] / queries_per_device
      sums["loss"] = loss * queries_per_device
      return loss, sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    grad_sum = jax.tree_util.tree_map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
    metric_sum = jax.tree_util.tree_map(jnp.add, metric_sum, sums)
    return (grad_sum, metric_sum), None

  zero_grads = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
  zero_metrics = {k: jnp.float32(0) for k in metric_names}
  inputs = (contexts, next_vectors, next_ids, keys, key_ids, jnp.arange(accum_steps), extras)
  (grads, sums), _ = lax.scan(micro_step, (zero_grads, zero_metrics), inputs)
  return grads, sums, queries_per_device


def train_step(state: TrainState, batch: Dict[str, jax.Array], rng: jax.Array, *,
               config: ml_collections.ConfigDict):
  """One update: accumulated gradients, averaged over devices, one optimizer step."""
  grads, sums, queries_per_device = accumulated_gradients(state, batch, rng, config=config)
  grads = lax.pmean(grads, AXIS)
  metrics = {k: v / queries_per_device for k, v in sums.items() if k != "masked_negatives"}
  metrics = lax.pmean(metrics, AXIS)
  metrics["masked_negatives"] = lax.psum(sums["masked_negatives"], AXIS)
  metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
  return state.apply_gradients(grads=grads), metrics


def make_parallel_train_step(config: ml_collections.ConfigDict, data_parallel: DataParallel):
  """The step over every device (jit over the mesh, or vmap on Metal); the state is donated."""
  return data_parallel.compile_step(functools.partial(train_step, config=config))
