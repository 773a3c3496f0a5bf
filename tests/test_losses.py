"""losses: InfoNCE against a direct computation, duplicate masking, finite AR at zero vectors."""

import jax
import jax.numpy as jnp
import numpy as np

from lvm_jax import losses


def test_info_nce_matches_a_direct_computation_and_masks_duplicates():
  rng = np.random.default_rng(0)
  queries, keys = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
  ids = np.array([7, 8, 7, 9, 10])
  loss, masked = losses.info_nce(jnp.asarray(queries), jnp.asarray(keys), jnp.array([0, 1, 2]),
                                 jnp.asarray(ids[:3]), jnp.asarray(ids), 0.07)
  logits = queries @ keys.T / 0.07
  expected = []
  for i, positive in enumerate([0, 1, 2]):
    keep = [j for j in range(5) if j == positive or ids[j] != ids[i]]
    expected.append(np.log(np.sum(np.exp(logits[i, keep]))) - logits[i, positive])
  np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(masked, [1, 0, 1])


def test_ar_loss_and_zero_vectors_stay_finite():
  pred = jnp.array([[1.0, 0.0], [0.0, 0.0]])
  target = jnp.array([[0.0, 1.0], [1.0, 0.0]])
  np.testing.assert_allclose(losses.ar_cosine_loss(pred, target), [1.0, 1.0])
  grad = jax.grad(lambda p: jnp.sum(losses.ar_cosine_loss(p, target)))(pred)
  assert bool(jnp.all(jnp.isfinite(grad)))
