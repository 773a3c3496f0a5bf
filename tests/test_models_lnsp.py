"""The lnsp_* models against the reference's PyTorch outputs (fixtures; no torch needed).

The fixtures come from tests/fixtures/make_lnsp_fixtures.py (its docstring says how).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax.models import count_parameters, create_model, model_names
from lvm_jax.models.lnsp import LNSP_VARIANTS, LnspProjectionHead
from lvm_jax.models.lnsp_blocks import LnspMLPBlock, lnsp_ssm_scan
from lvm_jax.models.lnsp_import import (StateDictMismatch, params_to_state_dict,
                                        state_dict_to_params)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOLERANCE = 1e-5


def load_fixture(name):
  with np.load(os.path.join(FIXTURES, f"{name}.npz")) as f:
    state = {str(k): f[f"state/{k}"].astype(np.float32) for k in f["state_names"]}
    return (f["inputs"].astype(np.float32), f["outputs"], json.loads(str(f["kwargs"])), state)


def lnsp_overrides(variant, kwargs):
  """The reference constructor's kwargs as create_model overrides (the importer's mapping)."""
  overrides = dict(d_model=kwargs["d_model"], d_state=kwargs["d_state"],
                   d_conv=kwargs["conv_sz"], expand=kwargs["expand"], dropout=kwargs["dropout"])
  if variant == "mamba_sandwich":
    overrides.update(n_layers=kwargs["n_layers_mamba"],
                     n_attention_front=kwargs["n_layers_local"] // 2,
                     n_attention_back=kwargs["n_layers_local"] // 2)
  else:
    overrides["n_layers"] = kwargs["n_layers"]
  for ours, theirs in (("window", "local_attn_win"), ("attention_every", "local_attn_every"),
                       ("num_heads", "n_heads"), ("gru_hidden", "gru_hidden")):
    if theirs in kwargs:
      overrides[ours] = kwargs[theirs]
  return overrides


def shapes_of(model, inputs):
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), inputs)["params"]


@pytest.mark.parametrize("variant", [name[len("lnsp_"):] for name in LNSP_VARIANTS])
def test_forward_matches_the_reference(variant):
  inputs, outputs, kwargs, state = load_fixture(f"lnsp_{variant}")
  model = create_model(f"lnsp_{variant}", **lnsp_overrides(variant, kwargs))
  params = state_dict_to_params(state, shapes_of(model, inputs), source=variant)
  predictions = np.asarray(model.apply({"params": params}, inputs, train=False))
  assert predictions.shape == outputs.shape == (2, 5, 768)
  diff = float(np.max(np.abs(predictions - outputs)))
  assert diff <= TOLERANCE, f"{variant}: max abs diff {diff:.3g}"


def test_mlp_block_matches_the_reference():
  inputs, outputs, kwargs, state = load_fixture("lnsp_mlp_block")
  block = LnspMLPBlock(kwargs["d_model"], kwargs["expand"], kwargs["dropout"])
  params = state_dict_to_params(state, shapes_of(block, inputs))
  assert np.max(np.abs(np.asarray(block.apply({"params": params}, inputs)) - outputs)) <= TOLERANCE


def test_projection_head_matches_the_reference_trainers():
  inputs, outputs, kwargs, state = load_fixture("lnsp_projection_head")
  head = LnspProjectionHead(kwargs["hidden_dim"], kwargs["out_dim"])
  params = state_dict_to_params(state, shapes_of(head, inputs))
  assert np.max(np.abs(np.asarray(head.apply({"params": params}, inputs)) - outputs)) <= TOLERANCE


def test_parameter_counts_equal_pytorch_at_reference_defaults():
  with open(os.path.join(FIXTURES, "lnsp_param_counts.json")) as f:
    torch_counts = json.load(f)["counts"]
  dummy = jax.ShapeDtypeStruct((1, 5, 768), jnp.float32)
  for variant in ("mamba_s", "mamba_hybrid_local", "mamba_xl", "mamba_sandwich", "mamba_gr"):
    assert count_parameters(shapes_of(create_model(f"lnsp_{variant}"), dummy)) == \
        torch_counts[variant], variant
  head = shapes_of(LnspProjectionHead(512, 256), jax.ShapeDtypeStruct((1, 768), jnp.float32))
  assert count_parameters(head) == torch_counts["projection_head"]


def test_registered_beside_the_native_variants():
  assert set(LNSP_VARIANTS) <= set(model_names())
  causal = {name: create_model(name).is_causal for name in LNSP_VARIANTS}
  assert causal == {"lnsp_mamba_s": True, "lnsp_mamba_xl": True, "lnsp_mamba_gr": False,
                    "lnsp_mamba_hybrid_local": False, "lnsp_mamba_sandwich": False}
  with pytest.raises(ValueError, match="unknown option"):
    create_model("lnsp_mamba_s", gru_hidden=4)


@pytest.mark.parametrize("variant", ["mamba_s", "mamba_gr"])
def test_causality_is_what_is_causal_says(variant):
  """Changing the last input moves earlier outputs exactly when the model is not causal."""
  inputs, _, kwargs, state = load_fixture(f"lnsp_{variant}")
  model = create_model(f"lnsp_{variant}", **lnsp_overrides(variant, kwargs))
  params = state_dict_to_params(state, shapes_of(model, inputs))
  changed = inputs.copy()
  changed[:, -1] = -changed[:, -1]
  apply = lambda x: np.asarray(model.apply({"params": params}, x))
  moved = np.max(np.abs(apply(inputs)[:, :-1] - apply(changed)[:, :-1]))
  assert (moved == 0.0) == model.is_causal


def test_scan_modes_agree():
  rng = np.random.default_rng(0)
  x, dt = rng.normal(size=(2, 11, 6)), np.log1p(np.exp(rng.normal(size=(2, 11, 6))))
  A, B = -np.exp(rng.normal(-1, 1, size=(6, 3))), rng.normal(size=(2, 11, 3))
  h, expected = np.zeros((2, 6, 3)), []
  for t in range(11):  # the recurrence in float64 NumPy
    h = np.exp(A * dt[:, t, :, None]) * h + B[:, t, None, :] * x[:, t, :, None]
    expected.append(h.sum(-1))
  expected = np.stack(expected, 1)
  for mode in ("sequential", "unrolled", "associative", "chunked", "auto"):
    y = lnsp_ssm_scan(*(jnp.asarray(a, jnp.float32) for a in (x, dt, A, B)), mode=mode,
                      chunk_size=4)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-5, err_msg=mode)


def test_dropout_is_live_only_in_training():
  inputs, _, kwargs, state = load_fixture("lnsp_mamba_s")
  model = create_model("lnsp_mamba_s", **dict(lnsp_overrides("mamba_s", kwargs), dropout=0.5))
  params = state_dict_to_params(state, shapes_of(model, inputs))
  evaluate = model.apply({"params": params}, inputs, train=False)
  trained = model.apply({"params": params}, inputs, train=True,
                        rngs={"dropout": jax.random.PRNGKey(1)})
  assert float(jnp.max(jnp.abs(evaluate - trained))) > 1e-3


def test_mapping_round_trips_and_names_every_problem():
  inputs, _, kwargs, state = load_fixture("lnsp_mamba_gr")
  model = create_model("lnsp_mamba_gr", **lnsp_overrides("mamba_gr", kwargs))
  template = shapes_of(model, inputs)
  params = state_dict_to_params(state, template)
  back = params_to_state_dict(params)
  assert set(back) == set(state)
  for name in state:
    np.testing.assert_array_equal(back[name], state[name])
  broken = dict(state)
  del broken["gru_gates.1.new_gate.bias"]
  broken["extra.weight"] = np.zeros(3, np.float32)
  broken["layers.0.D"] = np.zeros(3, np.float32)  # unmapped too: gr has mamba_layers
  broken["input_proj.weight"] = np.zeros((4, 768), np.float32)
  with pytest.raises(StateDictMismatch) as error:
    state_dict_to_params(broken, template, source="best.pt")
  message = str(error.value)
  assert "missing (the model needs them): gru_gates.1.new_gate.bias" in message
  assert "unmapped (the model has no such parameter): extra.weight, layers.0.D" in message
  assert "wrong shape: input_proj.weight: shape (4, 768) in the file, (8, 768) expected" in message


def test_head_kind_selects_the_head():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import ProjectionHead, create_head  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict({"kind": "lnsp", "hidden_dim": 16, "out_dim": 8})
  assert isinstance(create_head(config), LnspProjectionHead)
  del config["kind"]
  assert isinstance(create_head(config), ProjectionHead)
  config.kind = "mlp"
  with pytest.raises(ValueError, match=r"head.kind='mlp' is not one of \('native', 'lnsp'\)"):
    create_head(config)


def test_the_skip_path_is_refused_for_the_reference_models():
  create_model("lnsp_mamba_s", vector_dim=8, d_model=8, n_layers=1, d_state=4, residual=False)
  with pytest.raises(ValueError, match="the skip path is part of this project's blocks"):
    create_model("lnsp_mamba_s", vector_dim=8, d_model=8, n_layers=1, d_state=4, residual=True)
