"""The real-text recipe's parts: the skip path, context negatives, InfoNCE in the vector space."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax import models as models_lib
from lvm_jax import checkpoint, losses
from lvm_jax.config_base import base_config
from lvm_jax.models import create_model
from lvm_jax.models.model import recency_average
from lvm_jax.train import parallel
from lvm_jax.train import step as step_lib

DIM, LENGTH = 16, 5


def unit_rows(rng, shape):
  vectors = rng.normal(size=shape + (DIM,)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def recipe_config(accum_steps, batch_size, positions="last"):
  config = base_config()
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.model.dropout = 0.0
  config.model.residual = True
  config.augment.article_dropout = 0.0
  config.augment.span_corruption = 0.0
  config.head.hidden_dim, config.head.out_dim = 16, 8
  config.loss.positions = positions
  config.loss.vector_infonce_weight = 1.0
  config.loss.context_negatives = True
  config.train.accum_steps, config.train.batch_size = accum_steps, batch_size
  config.train.warmup_steps = 1
  return config


def overlapping_batch(accum_steps, micro_batch, seed=0):
  """Windows of 6 consecutive chunks of one stream: neighbours share chunks, as in an article."""
  rng = np.random.default_rng(seed)
  count = accum_steps * micro_batch
  stream = unit_rows(rng, (count + LENGTH,))
  starts = rng.permutation(count)
  rows = starts[:, None] + np.arange(LENGTH + 1)[None, :]
  shape = (1, accum_steps, micro_batch)
  return {"contexts": stream[rows[:, :LENGTH]].reshape(shape + (LENGTH, DIM)),
          "targets": stream[rows[:, LENGTH]].reshape(shape + (DIM,)),
          "target_ids": rows[:, LENGTH].reshape(shape).astype(np.int64)}


def gradients(config, batch):
  predictor = models_lib.predictor_from_config(config, DIM)
  state = step_lib.create_train_state(config, predictor, jax.random.PRNGKey(0), DIM, total_steps=10)
  # The residual's output layer starts at zero, which would hide the model: move every
  # parameter off its initial value first (seeded), as an update would, without compiling one.
  leaves, treedef = jax.tree_util.tree_flatten(state.params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  moved = [leaf + 0.05 * jax.random.normal(key, leaf.shape, leaf.dtype)
           for leaf, key in zip(leaves, keys)]
  state = state.replace(params=jax.tree_util.tree_unflatten(treedef, moved))
  fn = jax.vmap(functools.partial(step_lib.accumulated_gradients, config=config),
                axis_name=parallel.AXIS, in_axes=(None, 0, None))
  grads, sums, _ = jax.jit(fn)(state, batch, jax.random.PRNGKey(1))
  return jax.tree_util.tree_map(lambda g: g[0], grads), {k: float(v[0]) for k, v in sums.items()}


def test_residual_model_starts_as_copy_last_at_every_position():
  model = create_model("mamba_s", vector_dim=DIM, d_model=16, n_layers=2, d_state=4,
                       residual=True)
  contexts = unit_rows(np.random.default_rng(0), (3, LENGTH))
  params = model.init(jax.random.PRNGKey(0), contexts)["params"]
  np.testing.assert_allclose(model.apply({"params": params}, contexts), contexts, atol=1e-6)
  plain = create_model("mamba_s", vector_dim=DIM, d_model=16, n_layers=2, d_state=4)
  assert not np.allclose(plain.apply({"params": params}, contexts), contexts, atol=1e-2)


def test_recency_average_spans_copy_last_to_the_running_mean_and_is_causal():
  contexts = unit_rows(np.random.default_rng(0), (2, LENGTH))
  np.testing.assert_allclose(recency_average(contexts, 0.0), contexts, atol=1e-6)
  running_mean = np.cumsum(contexts, axis=1) / np.arange(1, LENGTH + 1)[None, :, None]
  np.testing.assert_allclose(recency_average(contexts, 1.0), running_mean, atol=1e-6)
  weights = 0.5 ** np.arange(LENGTH - 1, -1, -1.0)
  np.testing.assert_allclose(recency_average(contexts, 0.5)[:, -1],
                             np.einsum("l,nld->nd", weights / weights.sum(), contexts), atol=1e-6)
  changed = contexts.copy()
  changed[:, 3] = 0.0  # a later position must not change earlier outputs
  np.testing.assert_allclose(recency_average(changed, 0.5)[:, :3],
                             recency_average(contexts, 0.5)[:, :3], atol=1e-6)


def test_residual_model_with_decay_starts_as_the_recency_average():
  model = create_model("mamba_s", vector_dim=DIM, d_model=16, n_layers=1, d_state=4,
                       residual=True, residual_decay=0.3)
  contexts = unit_rows(np.random.default_rng(1), (3, LENGTH))
  params = model.init(jax.random.PRNGKey(0), contexts)["params"]
  average = np.asarray(recency_average(contexts, 0.3))
  np.testing.assert_allclose(model.apply({"params": params}, contexts),
                             average / np.linalg.norm(average, axis=-1, keepdims=True), atol=1e-6)


def test_context_negatives_number_each_position_as_its_chunk():
  contexts = np.arange(2 * LENGTH * 3, dtype=np.float32).reshape(2, LENGTH, 3)
  target_ids = np.array([100, 200])
  vectors, ids = losses.context_negatives(contexts, target_ids, "last")
  np.testing.assert_array_equal(ids, [[95, 96, 97, 98, 99], [195, 196, 197, 198, 199]])
  np.testing.assert_array_equal(vectors, contexts)
  # With every position scored, contexts 1..L-1 are already keys (as next vectors): only 0 joins.
  vectors, ids = losses.context_negatives(contexts, target_ids, "all")
  np.testing.assert_array_equal(ids, [[95], [195]])
  np.testing.assert_array_equal(vectors, contexts[:, :1])


@pytest.mark.parametrize("positions", ["last", "all"])
def test_recipe_gradients_accumulate_to_one_big_batch(positions):
  """Context negatives and vector InfoNCE keep the step's pool whole: summed micro-batch
  gradients equal one big batch's, and a chunk that is both a context and a target is masked."""
  batch = overlapping_batch(4, 8)
  accumulated, sums = gradients(recipe_config(4, 8, positions), batch)
  big_batch = {k: v.reshape((1, 1, 32) + v.shape[3:]) for k, v in batch.items()}
  big, big_sums = gradients(recipe_config(1, 32, positions), big_batch)
  for a, b in zip(jax.tree_util.tree_leaves(accumulated), jax.tree_util.tree_leaves(big)):
    np.testing.assert_allclose(a, b, rtol=5e-4, atol=1e-6)
  assert sums["masked_negatives"] == big_sums["masked_negatives"] > 0
  assert sums["vector_infonce"] > 0


def test_context_negatives_raise_the_loss_of_copying_the_input():
  """A prediction equal to the last context vector must lose to its own context: with the
  window's chunks among the negatives, copying the input costs more than without them."""
  rng = np.random.default_rng(0)
  contexts, targets = unit_rows(rng, (8, LENGTH)), unit_rows(rng, (8,))
  target_ids = np.arange(8) * 100
  copy_last = jnp.asarray(contexts[:, -1])
  without, _ = losses.info_nce(copy_last, targets, jnp.arange(8), target_ids, target_ids, 0.05)
  extra, extra_ids = losses.context_negatives(contexts, target_ids, "last")
  pool = jnp.concatenate([targets, extra.reshape(-1, DIM)])
  pool_ids = jnp.concatenate([target_ids, extra_ids.reshape(-1)])
  with_context, _ = losses.info_nce(copy_last, pool, jnp.arange(8), target_ids, pool_ids, 0.05)
  # The own last context scores 1/τ = 20 against a positive well below it.
  assert np.all(np.asarray(with_context) > np.asarray(without) + 1.0)
