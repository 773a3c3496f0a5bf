"""augment: the reference's rates (statistically), the exact regime, determinism, jit, no-ops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax.train import augment

BATCH, LENGTH, DIM = 4000, 5, 3
augment_jit = jax.jit(augment.augment_contexts)  # one compile per shape; eager dispatch is slow


def distinct_contexts(batch=BATCH, length=LENGTH, dim=DIM):
  """Every (sample, position) holds a vector that names it: [b, l] -> (b + 1, l + 1, 7)."""
  samples = np.arange(batch, dtype=np.float32)[:, None, None] + 1
  positions = np.arange(length, dtype=np.float32)[None, :, None] + 1
  values = np.concatenate([np.broadcast_to(samples, (batch, length, 1)),
                           np.broadcast_to(positions, (batch, length, 1)),
                           np.full((batch, length, dim - 2), 7.0, np.float32)], axis=2)
  return jnp.asarray(values)


@pytest.fixture(scope="module")
def augmented():
  contexts = distinct_contexts()
  key = jax.random.PRNGKey(42)
  out = augment_jit(key, contexts)
  draw = augment.draw_augmentation(key, BATCH, LENGTH)
  return np.asarray(contexts), np.asarray(out), draw


def binomial_bound(p, n, sigmas=5.0):
  return sigmas * np.sqrt(p * (1 - p) / n)


def test_article_dropout_rate_and_count_of_zeroed_positions(augmented):
  _, out, _ = augmented
  zeroed = np.all(out == 0, axis=2)  # [B, L]
  dropped = zeroed.any(axis=1)
  assert abs(dropped.mean() - 0.2) < binomial_bound(0.2, BATCH)
  counts = zeroed[dropped].sum(axis=1)
  # Zeroed positions are a suffix of length k, k uniform in [1, min(3, L-1)] = [1, 3].
  for row in zeroed[dropped]:
    k = row.sum()
    assert row[LENGTH - k:].all() and not row[:LENGTH - k].any()
  assert set(np.unique(counts)) == {1, 2, 3}
  for k in (1, 2, 3):
    assert abs((counts == k).mean() - 1 / 3) < binomial_bound(1 / 3, counts.size)
  assert not zeroed[:, 0].any()  # the first position always survives


def test_span_corruption_rate_position_and_donor(augmented):
  contexts, out, draw = augmented
  kept = ~np.all(out == 0, axis=2)
  changed = kept & np.any(out != contexts, axis=2)  # replaced and not later zeroed
  corrupted = np.asarray(draw.corrupted)
  assert corrupted.sum(axis=1).max() == 1
  assert abs(corrupted.any(axis=1).mean() - 0.1) < binomial_bound(0.1, BATCH)
  assert not corrupted[:, -1].any()  # positions [0, L-2] only
  positions = np.argmax(corrupted[corrupted.any(axis=1)], axis=1)
  for position in range(LENGTH - 1):
    assert abs((positions == position).mean() - 0.25) < binomial_bound(0.25, positions.size)
  np.testing.assert_array_equal(changed, corrupted & kept)
  rows, cols = np.nonzero(changed)
  donors = out[rows, cols, 0] - 1  # the sample the vector came from
  assert (donors != rows).all()
  np.testing.assert_array_equal(out[rows, cols, 1] - 1, cols)  # same position of the donor
  np.testing.assert_array_equal(donors, np.asarray(draw.donor)[rows])


def test_donors_are_uniform_over_the_other_samples():
  draw = augment.draw_augmentation(jax.random.PRNGKey(1), 4, LENGTH, span_corruption_p=1.0)
  keys = jax.random.split(jax.random.PRNGKey(2), 600)
  donors = np.asarray(jax.vmap(lambda key: augment.draw_augmentation(
      key, 4, LENGTH, span_corruption_p=1.0).donor)(keys))
  assert draw.donor.shape == (4,)
  for sample in range(4):
    frequencies = np.bincount(donors[:, sample], minlength=4) / donors.shape[0]
    assert frequencies[sample] == 0
    others = np.delete(frequencies, sample)
    assert np.all(np.abs(others - 1 / 3) < binomial_bound(1 / 3, donors.shape[0]))


def test_deterministic_per_key_and_different_across_keys():
  contexts = distinct_contexts(256)
  first = augment.augment_contexts(jax.random.PRNGKey(3), contexts)  # eager == jit
  again = augment_jit(jax.random.PRNGKey(3), contexts)
  other = augment_jit(jax.random.PRNGKey(4), contexts)
  np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
  assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_zero_probabilities_are_the_identity():
  contexts = distinct_contexts(64)
  out = augment_jit(jax.random.PRNGKey(0), contexts, article_dropout_p=0.0,
                                 span_corruption_p=0.0)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(contexts))


def test_probabilities_can_be_traced_under_jit():
  contexts = distinct_contexts(512)
  run = jax.jit(lambda key, c, p, q: augment.augment_contexts(
      key, c, article_dropout_p=p, span_corruption_p=q))
  out = np.asarray(run(jax.random.PRNGKey(0), contexts, 1.0, 0.0))
  assert np.all(out[:, -1] == 0) and not np.any(np.all(out[:, 0] == 0, axis=1))


def test_short_contexts_and_single_sample_batches():
  single = distinct_contexts(1, 1)  # L = 1: nothing can be dropped or corrupted
  out = augment_jit(jax.random.PRNGKey(0), single, article_dropout_p=1.0,
                                 span_corruption_p=1.0)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(single))
  pairs = distinct_contexts(300, 2)  # L = 2: drop exactly the last one
  out = np.asarray(augment_jit(jax.random.PRNGKey(0), pairs, article_dropout_p=1.0,
                                            span_corruption_p=0.0))
  assert np.all(out[:, 1] == 0) and np.all(out[:, 0] != 0)
  lone = distinct_contexts(1, 5)  # one sample: no donor, no corruption
  out = augment_jit(jax.random.PRNGKey(0), lone, article_dropout_p=0.0,
                                 span_corruption_p=1.0)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(lone))


def test_dtype_and_shape_are_kept():
  contexts = distinct_contexts(8).astype(jnp.bfloat16)
  out = augment_jit(jax.random.PRNGKey(0), contexts)
  assert out.shape == contexts.shape and out.dtype == jnp.bfloat16
