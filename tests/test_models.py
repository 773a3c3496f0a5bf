"""The model family: shapes, unit norm, causality, dropout, determinism, masks, errors."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax.models import (VARIANTS, count_parameters, create_model, l2_normalize,
                            weight_decay_mask)
from lvm_jax.models import __main__ as models_cli
from lvm_jax.models.attention import local_causal_mask
from lvm_jax.models.mamba import DT_FLOOR, DT_MAX, DT_MIN, causal_depthwise_conv

VECTOR_DIM = 24
# Small sizes of every variant so the suite stays fast; layouts keep their shape.
SMALL = {
    "mamba_s": dict(n_layers=2, d_model=16, d_state=4),
    "mamba_hybrid_local": dict(n_layers=4, d_model=16, d_state=4, num_heads=2, window=3),
    "mamba_xl": dict(n_layers=2, d_model=16, d_state=6),
    "mamba_sandwich": dict(n_attention_front=1, n_layers=1, n_attention_back=1, d_model=16,
                           d_state=4, num_heads=2, window=3),
    "mamba_gr": dict(n_layers=2, d_model=16, d_state=4, gru_hidden=8),
}


def small_model(name, **extra):
  return create_model(name, vector_dim=VECTOR_DIM, **dict(SMALL[name], **extra))


def contexts(batch=3, length=7, seed=0):
  x = np.random.default_rng(seed).normal(size=(batch, length, VECTOR_DIM)).astype(np.float32)
  return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True))


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def built(request):
  model = small_model(request.param)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), contexts())["params"]
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
  return request.param, model, params, apply


def test_shape_and_unit_norm(built):
  _, _, params, apply = built
  out = apply(params, contexts())
  assert out.shape == (3, 7, VECTOR_DIM) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


def test_causal_every_variant(built):
  """Changing the input at position t leaves the outputs before t unchanged."""
  _, _, params, apply = built
  x = contexts(length=9)
  base = apply(params, x)
  for t in (0, 4, 8):
    changed = x.at[:, t].set(contexts(length=9, seed=t + 1)[:, t])
    out = apply(params, changed)
    np.testing.assert_array_equal(out[:, :t], base[:, :t])
    assert not np.allclose(out[:, t], base[:, t])


def test_gru_state_handoff_sees_the_whole_window():
  """The reference's handoff makes early outputs see later inputs; only the last is valid."""
  model = small_model("mamba_gr", gru_state_handoff=True)
  assert not model.is_causal and small_model("mamba_gr").is_causal
  x = contexts(length=6)
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  base = model.apply({"params": params}, x)
  changed = model.apply({"params": params}, x.at[:, 5].set(contexts(length=6, seed=9)[:, 5]))
  assert not np.allclose(changed[:, 0], base[:, 0])


def test_dropout_only_in_training_and_deterministic_per_key(built):
  name, model, params, _ = built
  model = small_model(name, dropout=0.5)
  x = contexts()
  run = lambda key, train: model.apply({"params": params}, x, train=train, rngs={"dropout": key})
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(run(key, False), run(jax.random.PRNGKey(4), False))
  np.testing.assert_array_equal(run(key, True), run(key, True))
  assert not np.allclose(run(key, True), run(key, False))
  assert not np.allclose(run(key, True), run(jax.random.PRNGKey(4), True))


def test_init_is_deterministic_per_key():
  model = small_model("mamba_s")
  first = model.init(jax.random.PRNGKey(1), contexts())
  second = model.init(jax.random.PRNGKey(1), contexts())
  other = model.init(jax.random.PRNGKey(2), contexts())
  jax.tree_util.tree_map(np.testing.assert_array_equal, first, second)
  assert not np.allclose(first["params"]["input_proj"]["kernel"],
                         other["params"]["input_proj"]["kernel"])


def test_layouts_match_the_reference():
  assert create_model("mamba_s").blocks == ("mamba",) * 8
  hybrid = create_model("mamba_h").blocks
  assert len(hybrid) == 12 and [i for i, b in enumerate(hybrid) if b == "attention"] == [3, 7, 11]
  assert create_model("mamba_xl").blocks == ("mamba",) * 16
  assert create_model("mamba_sandwich").blocks == (("attention",) * 2 + ("mamba",) * 8
                                                   + ("attention",) * 2)
  assert create_model("mamba_gr").blocks == ("mamba", "gru") * 10
  sizes = create_model("mamba_xl")
  assert (sizes.d_model, sizes.d_state, sizes.vector_dim) == (384, 192, 768)


def test_mamba_block_parameters_follow_mamba_1():
  model = create_model("mamba_s", vector_dim=VECTOR_DIM, n_layers=1, d_model=32, d_state=5)
  params = model.init(jax.random.PRNGKey(0), contexts())["params"]
  block = params["block_00_mamba"]
  d_inner, dt_rank = 64, math.ceil(32 / 16)
  assert block["in_proj"]["kernel"].shape == (32, 2 * d_inner) and "bias" not in block["in_proj"]
  assert block["conv_kernel"].shape == (4, d_inner) and block["conv_bias"].shape == (d_inner,)
  assert block["x_proj"]["kernel"].shape == (d_inner, dt_rank + 2 * 5)
  assert block["dt_proj"]["kernel"].shape == (dt_rank, d_inner)
  assert block["out_proj"]["kernel"].shape == (d_inner, 32) and "bias" not in block["out_proj"]
  np.testing.assert_allclose(block["A_log"], np.log(np.tile(np.arange(1, 6), (d_inner, 1))), rtol=1e-6)
  np.testing.assert_array_equal(block["D"], np.ones(d_inner))
  dt = np.asarray(jax.nn.softplus(block["dt_proj"]["bias"]))
  assert dt.min() >= max(DT_MIN, DT_FLOOR) * 0.999 and dt.max() <= DT_MAX * 1.001
  assert "bias" not in params["output_head"]


def test_causal_depthwise_conv_matches_a_direct_sum():
  rng = np.random.default_rng(0)
  x, kernel, bias = rng.normal(size=(2, 6, 3)), rng.normal(size=(4, 3)), rng.normal(size=3)
  out = np.asarray(causal_depthwise_conv(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias)))
  for t in range(6):
    expected = bias + sum(x[:, t - 3 + k] * kernel[k] for k in range(4) if t - 3 + k >= 0)
    np.testing.assert_allclose(out[:, t], expected, rtol=1e-5)


def test_local_causal_mask():
  mask = np.asarray(local_causal_mask(5, 2))
  expected = np.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0],
                       [0, 0, 0, 1, 1]], bool)
  np.testing.assert_array_equal(mask, expected)


def test_alignment_head_and_bfloat16_compute():
  model = small_model("mamba_s", alignment_head=True, dtype="bfloat16")
  params = model.init(jax.random.PRNGKey(0), contexts())["params"]
  assert "alignment_head" in params
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(params))
  out = model.apply({"params": params}, contexts())
  np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


def test_weight_decay_mask_excludes_a_log_d_biases_and_norms():
  model = small_model("mamba_gr")
  params = model.init(jax.random.PRNGKey(0), contexts())["params"]
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): value for path, value in
          jax.tree_util.tree_flatten_with_path(weight_decay_mask(params))[0]}
  decayed = {k for k, v in flat.items() if v}
  assert "block_00_mamba/in_proj/kernel" in decayed
  assert "block_00_mamba/conv_kernel" in decayed
  assert "block_01_gru/hidden_kernel" in decayed
  for path in ("block_00_mamba/A_log", "block_00_mamba/D", "block_00_mamba/dt_proj/bias",
               "block_00_mamba/norm/scale", "block_00_mamba/conv_bias", "input_proj/bias",
               "final_norm/scale", "block_01_gru/hidden_bias"):
    assert flat[path] is False or flat[path] == False, path  # noqa: E712


def test_l2_normalize_is_finite_at_zero_with_zero_gradient():
  zero = jnp.zeros((2, 4))
  np.testing.assert_array_equal(l2_normalize(zero), zero)
  grad = jax.grad(lambda x: jnp.sum(l2_normalize(x)[:, 0]))(zero)
  np.testing.assert_array_equal(grad, np.zeros((2, 4)))
  x = jnp.array([[3.0, 4.0]])
  np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8]], rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda v: l2_normalize(v)[0, 0])(x), [[0.64 / 5, -0.48 / 5]],
                             rtol=1e-5)


def test_zeroed_last_positions_give_bounded_gradients():
  """Article dropout's zero inputs must not blow up the gradient (a real failure at init)."""
  model = small_model("mamba_s")
  x = contexts().at[:, -2:].set(0.0)
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x)[:, -1] * x[:, 0]))(params)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads)) < 1e3


def test_create_model_errors_list_valid_choices():
  with pytest.raises(ValueError, match="unknown model 'mamba_q'; Did you mean mamba_s\\? valid "
                                       "names: mamba_s, mamba_hybrid_local, mamba_xl, "
                                       "mamba_sandwich, mamba_gr, mamba_h"):
    create_model("mamba_q")
  with pytest.raises(ValueError, match=r"unknown option\(s\) \['window'\]; valid options: "):
    create_model("mamba_s", window=4)
  with pytest.raises(ValueError, match="d_model must be an integer >= 1, got 0"):
    create_model("mamba_s", d_model=0)
  with pytest.raises(ValueError, match="d_model=30 is not divisible by num_heads=4"):
    create_model("mamba_h", d_model=30)
  with pytest.raises(ValueError, match="dtype 'float16' is not one of"):
    create_model("mamba_s", dtype="float16")


def test_parameter_counts():
  table = {(name, tuple(sorted(o.items()))): count for name, o, count in models_cli.parameter_table()}
  # Real Mamba-1 blocks at the reference's training size (its simplified block had 53.2 M).
  assert table[("mamba_s", (("d_model", 768), ("d_state", 128), ("n_layers", 8)))] == 35_483_136
  assert table[("mamba_s", ())] == 5_274_112
  model = small_model("mamba_s")
  params = model.init(jax.random.PRNGKey(0), contexts())["params"]
  assert count_parameters(params) == models_cli.parameter_count(
      "mamba_s", vector_dim=VECTOR_DIM, **SMALL["mamba_s"])


def test_bfloat16_matmuls_keep_the_residual_stream_float32():
  model = small_model("mamba_hybrid_local", dtype="bfloat16")
  params = model.init(jax.random.PRNGKey(0), contexts())["params"]
  _, state = model.apply({"params": params}, contexts(), capture_intermediates=True,
                         mutable=["intermediates"])
  outputs = {"/".join(path): value[0] for path, value in
             flax.traverse_util.flatten_dict(state["intermediates"], sep=None).items()
             if path[-1] == "__call__"}
  blocks = {k: v for k, v in outputs.items() if k.count("/") == 1 and k.startswith("block_")}
  projections = {k: v for k, v in outputs.items() if k.endswith("in_proj/__call__")}
  assert blocks and projections
  assert all(v.dtype == jnp.float32 for v in blocks.values()), {k: v.dtype for k, v in blocks.items()}
  assert all(v.dtype == jnp.bfloat16 for v in projections.values())
  assert outputs["__call__"].dtype == jnp.float32


def test_mix_by_lag_with_recency_logits_is_the_recency_average():
  """With a logit per lag of the whole window, the learned mixing starts exactly where
  the fixed one is; lags beyond the last logit share it."""
  from lvm_jax.models.model import mix_by_lag, recency_average, recency_lag_logits
  x = np.random.RandomState(0).randn(3, 7, 5).astype(np.float32)
  for decay in (0.2, 0.5, 1.0):
    logits = np.broadcast_to(recency_lag_logits(decay, 7), (3, 7, 7))
    np.testing.assert_allclose(mix_by_lag(x, logits), recency_average(x, decay), atol=1e-6)
  # Two logits: lag 0 gets weight e^0, every older chunk e^-inf -> copy-last
  copy = mix_by_lag(x, np.broadcast_to(np.array([0.0, -1e9], np.float32), (3, 7, 2)))
  np.testing.assert_allclose(copy, x, atol=1e-6)
  # Causal: changing chunk 4 leaves positions 0..3 as they were.
  logits = np.random.RandomState(1).randn(3, 7, 4).astype(np.float32)
  changed = x.copy()
  changed[:, 4] += 1.0
  np.testing.assert_array_equal(mix_by_lag(x, logits)[:, :4], mix_by_lag(changed, logits)[:, :4])


def test_learned_skip_mixing_starts_at_the_fixed_average_and_learns():
  """An untrained residual_mixing="learned" model predicts the fixed-decay average, and
  the mixing weights receive a gradient."""
  from lvm_jax.models.model import recency_average
  model = create_model("mamba_s", vector_dim=16, d_model=16, n_layers=1, d_state=4,
                       residual=True, residual_decay=0.3, residual_mixing="learned",
                       residual_max_lag=8)
  x = np.random.RandomState(0).randn(2, 5, 16).astype(np.float32)
  variables = model.init(jax.random.PRNGKey(0), x)
  expected = l2_normalize(recency_average(x, 0.3))
  np.testing.assert_allclose(model.apply(variables, x), expected, atol=1e-6)
  grads = jax.grad(lambda p: model.apply({"params": p}, x)[:, -1, 0].sum())(variables["params"])
  assert float(jnp.abs(grads["skip_mixing"]["kernel"]).max()) > 0


def test_residual_mixing_is_checked():
  with pytest.raises(ValueError, match="residual_mixing 'mean' is not one of"):
    create_model("mamba_s", residual_mixing="mean")
  with pytest.raises(ValueError, match="the skip path is part of this project's blocks"):
    create_model("lnsp_mamba_s", residual_mixing="learned")
