"""The update: accumulation equals one big batch; devices x micro-batches equal; losses."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax import models as models_lib
from lvm_jax import checkpoint, losses
from lvm_jax.config_base import base_config
from lvm_jax.train import step as step_lib

DIM, LENGTH = 16, 5


def small_config(negatives="accum", positions="last", accum_steps=4, batch_size=8):
  config = base_config()
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.model.dropout = 0.0
  config.augment.article_dropout = 0.0
  config.augment.span_corruption = 0.0
  config.head.hidden_dim, config.head.out_dim = 16, 8
  config.loss.negatives, config.loss.positions = negatives, positions
  config.train.accum_steps, config.train.batch_size = accum_steps, batch_size
  config.train.warmup_steps = 1
  return config


def make_batch(num_devices, accum_steps, micro_batch, seed=0, duplicate=False):
  rng = np.random.default_rng(seed)
  shape = (num_devices, accum_steps, micro_batch)
  vectors = rng.normal(size=shape + (LENGTH + 1, DIM)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
  target_ids = rng.permutation(10_000)[:np.prod(shape)].reshape(shape).astype(np.int64) * 100
  if duplicate:  # the same target chunk twice in the step
    target_ids.flat[-1] = target_ids.flat[0]
    vectors.reshape(-1, LENGTH + 1, DIM)[-1, -1] = vectors.reshape(-1, LENGTH + 1, DIM)[0, -1]
  return {"contexts": vectors[..., :LENGTH, :], "targets": vectors[..., LENGTH, :],
          "target_ids": target_ids}


def reshape_step(batch, num_devices, accum_steps):
  """The same sequences laid out as [num_devices, accum_steps, micro, ...]."""
  total = batch["targets"].shape[0] * batch["targets"].shape[1] * batch["targets"].shape[2]
  micro = total // (num_devices * accum_steps)
  return {k: v.reshape((num_devices, accum_steps, micro) + v.shape[3:]) for k, v in batch.items()}


def build(config):
  predictor = models_lib.predictor_from_config(config, DIM)
  return step_lib.create_train_state(config, predictor, jax.random.PRNGKey(0), DIM, total_steps=10)


def gradients(config, batch):
  state = build(config)
  fn = jax.vmap(functools.partial(step_lib.accumulated_gradients, config=config),
                axis_name=step_lib.AXIS, in_axes=(None, 0, None))
  grads, sums, count = jax.jit(fn)(state, batch, jax.random.PRNGKey(1))
  return jax.tree_util.tree_map(lambda g: g[0], grads), sums


@pytest.mark.parametrize("positions", ["last", "all"])
def test_accumulated_gradients_equal_one_big_batch(positions):
  batch = make_batch(1, 4, 8, duplicate=True)
  accumulated, sums = gradients(small_config("accum", positions, accum_steps=4, batch_size=8), batch)
  big, big_sums = gradients(small_config("accum", positions, accum_steps=1, batch_size=32),
                            reshape_step(batch, 1, 1))
  for a, b in zip(jax.tree_util.tree_leaves(accumulated), jax.tree_util.tree_leaves(big)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)
  assert float(sums["masked_negatives"][0]) == float(big_sums["masked_negatives"][0]) > 0


def test_micro_negatives_differ_from_accum():
  batch = make_batch(1, 4, 8)
  micro, _ = gradients(small_config("micro"), batch)
  accum, _ = gradients(small_config("accum"), batch)
  leaves = zip(jax.tree_util.tree_leaves(micro), jax.tree_util.tree_leaves(accum))
  assert any(not np.allclose(a, b, rtol=1e-3) for a, b in leaves)


def test_micro_negatives_match_a_micro_batch_alone():
  """"micro" is what the reference did: each micro-batch its own pool of negatives."""
  batch = make_batch(1, 2, 8)
  grads, _ = gradients(small_config("micro", accum_steps=2), batch)
  first = {k: v[:, :1] for k, v in batch.items()}
  second = {k: v[:, 1:] for k, v in batch.items()}
  g1, _ = gradients(small_config("micro", accum_steps=1), first)
  g2, _ = gradients(small_config("micro", accum_steps=1), second)
  for g, a, b in zip(*(jax.tree_util.tree_leaves(t) for t in (grads, g1, g2))):
    np.testing.assert_allclose(g, (a + b) / 2, rtol=2e-4, atol=1e-6)


def test_prediction_targets_all_positions():
  contexts = jnp.arange(2 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 1)
  targets = jnp.array([[10.0], [20.0]])
  vectors, ids = step_lib.prediction_targets(contexts, targets, jnp.array([50, 80]), "all")
  np.testing.assert_array_equal(vectors[..., 0], [[1, 2, 10], [4, 5, 20]])
  np.testing.assert_array_equal(ids, [[48, 49, 50], [78, 79, 80]])


DEVICE_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    sys.path.insert(0, {tests_dir!r})
    import jax, numpy as np
    import test_train_step as t
    from lvm_jax.train import step as step_lib
    from lvm_jax.train import parallel
    from lvm_jax.train.parallel import DataParallel
    assert jax.local_device_count() == 4, jax.devices()
    def run(num_devices, accum_steps):
      config = t.small_config("global", accum_steps=accum_steps, batch_size=4)
      state = t.build(config)
      data_parallel = DataParallel.create("mesh", devices=jax.devices()[:num_devices])
      step = step_lib.make_parallel_train_step(config, data_parallel)
      state = data_parallel.replicate(state)
      for i in range(3):
        batch = t.reshape_step(t.make_batch(1, 8, 4, seed=i), num_devices, accum_steps)
        state, metrics = step(state, data_parallel.place_batch(batch), jax.random.PRNGKey(0))
      return data_parallel.to_host(state.params), parallel.first(metrics)
    one, m1 = run(1, 8)
    four, m4 = run(4, 2)
    diffs = [float(np.max(np.abs(a - b))) for a, b in
             zip(jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(four))]
    print("MAXDIFF", max(diffs), "LOSS", m1["loss"], m4["loss"])
""")


@pytest.mark.slow
@pytest.mark.stack
def test_four_devices_equal_one_device_with_global_negatives(tmp_path):
  """1 device x 8 micro-batches and 4 devices x 2 reach the same parameters after 3 steps."""
  script = tmp_path / "devices.py"
  script.write_text(DEVICE_SCRIPT.format(tests_dir=os.path.dirname(__file__)))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [l for l in result.stdout.splitlines() if l.startswith("MAXDIFF")][0].split()
  max_diff, loss_one, loss_four = float(line[1]), float(line[3]), float(line[4])
  # Three AdamW steps at lr 1e-3 move parameters by ~3e-3; float32 reduction order
  # differs between the layouts, so allow 1e-5 absolute.
  assert max_diff < 1e-5, line
  np.testing.assert_allclose(loss_one, loss_four, rtol=1e-5)


def test_mesh_and_vmap_layouts_take_the_same_step():
  """The Metal path (vmap on one device) and the mesh compute the same update."""
  from lvm_jax.train import parallel  # pylint: disable=g-import-not-at-top
  config = small_config("global", accum_steps=2, batch_size=4)
  batch = make_batch(1, 2, 4)
  results = []
  for mode in ("mesh", "vmap"):
    data_parallel = parallel.DataParallel.create(mode, devices=jax.local_devices()[:1])
    step = step_lib.make_parallel_train_step(config, data_parallel)
    state, metrics = step(data_parallel.replicate(build(config)), data_parallel.place_batch(batch),
                          jax.random.PRNGKey(0))
    results.append((data_parallel.to_host(state.params), parallel.first(metrics)))
  (mesh_params, mesh_metrics), (vmap_params, vmap_metrics) = results
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         mesh_params, vmap_params)
  assert mesh_metrics["loss"] == pytest.approx(vmap_metrics["loss"], rel=1e-6)


def test_negative_pool_places_each_positive_and_appends_extras_after_them():
  keys, ids = jnp.arange(12.0).reshape(6, 2), jnp.arange(6)
  micro = (keys[2:4], None, ids[2:4])
  step = (keys, None, ids)
  extras = (jnp.full((1, 2), -1.0), None, jnp.array([99]))
  pool, vectors, pool_ids, positive = step_lib.negative_pool("accum", 1, 2, micro, step, 0, extras)
  assert vectors is None and pool.shape == (7, 2)
  np.testing.assert_array_equal(pool_ids, [0, 1, 2, 3, 4, 5, 99])
  np.testing.assert_array_equal(pool[positive], keys[2:4])  # micro-batch 1's own targets
  pool, _, pool_ids, positive = step_lib.negative_pool("micro", 1, 2, micro, step, 0, None)
  np.testing.assert_array_equal(pool_ids, [2, 3])
  np.testing.assert_array_equal(positive, [0, 1])
  _, _, _, positive = step_lib.negative_pool("global", 1, 2, micro, step, 2, None)
  np.testing.assert_array_equal(positive, [4, 5])  # after the devices before this one


def test_head_infonce_is_not_computed_when_its_weight_is_0(monkeypatch):
  config = small_config()
  config.loss.contrastive_weight = 0.0
  config.loss.vector_infonce_weight = 1.0
  projected = []
  real_project = step_lib.project
  monkeypatch.setattr(step_lib, "project", lambda *a: projected.append(1) or real_project(*a))
  accumulated, sums = gradients(config, make_batch(1, 4, 8, duplicate=True))
  assert not projected and "infonce" not in sums and float(sums["vector_infonce"][0]) > 0
  assert float(sums["masked_negatives"][0]) > 0  # the duplicate, masked in the vector InfoNCE
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(accumulated))


def test_bank_term_is_the_mean_bank_infonce_of_the_step_with_the_window_masked():
  """With only the bank term on, the accumulated gradient is that of the mean of
  losses.bank_info_nce over the step's windows, each window's own rows masked."""
  config = small_config(accum_steps=2, batch_size=4)
  config.loss.contrastive_weight = config.loss.ar_weight = 0.0
  config.loss.bank_infonce_weight, config.loss.bank_negatives = 1.0, -1
  batch = make_batch(1, 2, 4, seed=3)
  rng = np.random.default_rng(4)
  bank = rng.normal(size=(1, 30, DIM)).astype(np.float32)
  bank /= np.linalg.norm(bank, axis=-1, keepdims=True)
  bank_ids = np.sort(rng.choice(1_000_000, 30, replace=False))[None].astype(np.int64)
  # Two bank rows sit inside the first window (its context and its target): masked.
  first = batch["target_ids"][0, 0, 0]
  bank_ids[0, :2] = [first - 3, first]
  bank[0, 0] = batch["contexts"][0, 0, 0, 2]
  batch.update(bank_vectors=bank, bank_ids=bank_ids)
  grads, sums = gradients(config, batch)

  state = build(config)
  flat = {k: v.reshape((-1,) + v.shape[3:]) for k, v in batch.items() if not k.startswith("bank")}

  def direct(params):
    predictions = step_lib.predict(state, params, flat["contexts"])[:, -1]
    loss, masked = losses.bank_info_nce(predictions, flat["targets"], flat["target_ids"],
                                        flat["target_ids"] - LENGTH, bank[0], bank_ids[0],
                                        config.loss.vector_temperature)
    return jnp.mean(loss), masked

  (expected_loss, masked), expected = jax.value_and_grad(direct, has_aux=True)(state.params)
  assert int(masked[0]) == 2 and int(masked.sum()) == 2
  np.testing.assert_allclose(sums["bank_infonce"][0] / 8, expected_loss, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_bank_context_negatives_add_each_windows_own_context_to_its_bank_term():
  """loss.bank_context_negatives: the gradient is that of the mean bank InfoNCE with
  each window's own context rows as extra negatives of that window only."""
  config = small_config(accum_steps=2, batch_size=4)
  config.loss.contrastive_weight = config.loss.ar_weight = 0.0
  config.loss.bank_infonce_weight, config.loss.bank_negatives = 1.0, -1
  config.loss.bank_context_negatives = True
  batch = make_batch(1, 2, 4, seed=5)
  rng = np.random.default_rng(6)
  bank = rng.normal(size=(1, 30, DIM)).astype(np.float32)
  bank /= np.linalg.norm(bank, axis=-1, keepdims=True)
  bank_ids = np.sort(rng.choice(1_000_000, 30, replace=False))[None].astype(np.int64)
  batch.update(bank_vectors=bank, bank_ids=bank_ids)
  grads, sums = gradients(config, batch)

  state = build(config)
  flat = {k: v.reshape((-1,) + v.shape[3:]) for k, v in batch.items() if not k.startswith("bank")}
  starts = flat["target_ids"] - LENGTH
  own_ids = starts[:, None] + np.arange(LENGTH)

  def direct(params, with_context):
    predictions = step_lib.predict(state, params, flat["contexts"])[:, -1]
    loss, _ = losses.bank_info_nce(predictions, flat["targets"], flat["target_ids"], starts,
                                   bank[0], bank_ids[0], config.loss.vector_temperature,
                                   flat["contexts"] if with_context else None,
                                   own_ids if with_context else None)
    return jnp.mean(loss)

  expected_loss, expected = jax.value_and_grad(direct)(state.params, True)
  assert float(expected_loss) > float(direct(state.params, False))  # the context adds negatives
  np.testing.assert_allclose(sums["bank_infonce"][0] / 8, expected_loss, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_bank_info_nce_scores_own_rows_per_query_and_masks_the_positive():
  """Own rows count only for their own query; one with the positive's id scores nothing."""
  rng = np.random.default_rng(1)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  predictions, positives = unit(rng.normal(size=(2, 8))), unit(rng.normal(size=(2, 8)))
  bank, bank_ids = unit(rng.normal(size=(5, 8))), np.array([10, 20, 30, 40, 50])
  ids = np.array([100, 200])
  alone, _ = losses.bank_info_nce(predictions, positives, ids, ids - 5, bank, bank_ids, 0.1)
  far = unit(rng.normal(size=(2, 8)))
  own = np.stack([np.stack([predictions[0], far[0]]),  # the prediction itself: the hardest row
                  np.stack([predictions[1], far[1]])])
  own_ids = np.array([[99, 98], [200, 197]])  # query 1's close row is its positive: masked
  loss, _ = losses.bank_info_nce(predictions, positives, ids, ids - 5, bank, bank_ids, 0.1,
                                 own, own_ids)
  assert float(loss[0]) > float(alone[0]) + 2  # the close row is a hard negative
  assert 0 < float(loss[1] - alone[1]) < 2  # only the far row counts


def test_bank_info_nce_ignores_the_windows_own_rows():
  """A bank row of the window's own context scores nothing, however close it is."""
  rng = np.random.default_rng(0)
  predictions = rng.normal(size=(2, 8)).astype(np.float32)
  positives = rng.normal(size=(2, 8)).astype(np.float32)
  bank = rng.normal(size=(5, 8)).astype(np.float32)
  ids = np.array([100, 200])
  bank_ids = np.array([10, 20, 30, 40, 50])
  alone, _ = losses.bank_info_nce(predictions, positives, ids, ids - 5, bank, bank_ids, 0.1)
  own = np.concatenate([bank, predictions[:1] * 10])  # row 98: inside window 0 (95..100)
  with_own, masked = losses.bank_info_nce(predictions, positives, ids, ids - 5, own,
                                          np.append(bank_ids, 98), 0.1)
  np.testing.assert_allclose(with_own, alone, rtol=1e-6)
  assert masked.tolist() == [1, 0]


@pytest.mark.slow
def test_jitted_initialisation_equals_the_op_by_op_one():
  """create_train_state jits the model's init (one compile instead of hundreds of op-by-op
  ones); the parameters are bit for bit those of the eager init, skip path included."""
  config = small_config()
  config.model.residual, config.model.residual_mixing = True, "learned"
  predictor = models_lib.predictor_from_config(config, DIM)
  state = build(config)
  dummy = jnp.zeros((1, config.data.context_length, DIM), jnp.float32)
  eager = predictor.init(jax.random.PRNGKey(0), dummy,
                         method=models_lib.LatentVectorPredictor.initialize)["params"]
  assert jax.tree_util.tree_structure(eager) == jax.tree_util.tree_structure(state.params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, eager)
