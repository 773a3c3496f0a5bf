"""selective_scan(mode="pallas"): the fused kernel, run by the Pallas interpreter on CPU.

Held to the float64 NumPy loop of test_ops_scan.py (forward and every
gradient), to mode="sequential", and checked to lower to Triton for a GPU.
"""

import functools
import logging

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from lvm_jax.ops import pallas_scan
from lvm_jax.ops import scan as scan_lib
from lvm_jax.ops.scan import selective_scan
# The float64 reference lives with the other modes' tests (tests/ is on sys.path under pytest).
from test_ops_scan import ARG_NAMES, make_inputs, reference_forward, reference_gradients, \
    relative_error

# (batch, L, D, N, chunk_size): L 1 and 5 are one unrolled chunk (as on GPU); L 64 with
# chunk 5 pads time to 13 chunks (and D 5, N 3 pad to powers of two); L 1024 is 256 chunks of
# the chunk loop. Chunks are short because the interpreter's compile time grows fast with the
# unrolled length.
SHAPES = [
    (2, 1, 3, 4, None),
    (3, 5, 6, 8, 8),
    (2, 64, 5, 3, 5),
    (2, 1024, 2, 4, 4),
]


def use_small_tiles(monkeypatch):
  """Many small programs: batch and channels split over the grid, and each backward program
  walking two batch tiles, as on GPU."""
  monkeypatch.setattr(pallas_scan, "choose_config", functools.partial(
      pallas_scan.choose_config, batch_tile=1, channel_tile=2, backward_rows=2))


@pytest.fixture(params=["default_tiles", "small_tiles"])
def tiling(request, monkeypatch):
  """Runs a test with the interpreter's tiles (one program) and with many small programs."""
  if request.param == "small_tiles":
    use_small_tiles(monkeypatch)
  return request.param


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_L{}_D{}_N{}_c{}".format(*s))
def test_forward_and_gradients_match_float64_reference(shape, tiling):
  batch, length, channels, state, chunk = shape
  inputs = make_inputs(batch, length, channels, state, seed=sum(shape[:4]))
  g = np.random.default_rng(1).normal(size=(batch, length, channels))
  expected_y, _ = reference_forward(**inputs)
  expected_grads = reference_gradients(inputs, g)

  def loss(*args):
    y = selective_scan(*args[:6], h0=args[6], mode="pallas", chunk_size=chunk)
    return jnp.sum(y * g), y

  args = [jnp.asarray(inputs[k], jnp.float32) for k in ARG_NAMES]
  grads, y = jax.jit(jax.grad(loss, argnums=tuple(range(7)), has_aux=True))(*args)
  assert y.dtype == jnp.float32
  assert relative_error(y, expected_y) < 1e-5
  for name, grad in zip(ARG_NAMES, grads):
    assert relative_error(grad, expected_grads[name]) < 1e-5, name


def test_matches_sequential_mode_with_final_state_and_its_gradient(monkeypatch):
  """Same y, final state and gradients, also when the loss reads the final state."""
  use_small_tiles(monkeypatch)
  batch, length, channels, state = 3, 13, 5, 6
  inputs = make_inputs(batch, length, channels, state, seed=21)
  rng = np.random.default_rng(2)
  g_y = rng.normal(size=(batch, length, channels))
  g_h = rng.normal(size=(batch, channels, state))
  args = [jnp.asarray(inputs[k], jnp.float32) for k in ARG_NAMES]

  def run(mode):
    def loss(*args):
      y, h = selective_scan(*args[:6], h0=args[6], mode=mode, chunk_size=4, return_state=True)
      return jnp.sum(y * g_y) + jnp.sum(h * g_h), (y, h)
    return jax.jit(jax.grad(loss, argnums=tuple(range(7)), has_aux=True))(*args)

  grads, (y, h) = run("pallas")
  expected_grads, (expected_y, expected_h) = run("sequential")
  assert h.dtype == jnp.float32
  np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(h, expected_h, rtol=1e-5, atol=1e-5)
  for name, grad, expected in zip(ARG_NAMES, grads, expected_grads):
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5, err_msg=name)


def test_bfloat16_inputs_accumulate_in_float32():
  inputs = make_inputs(2, 9, 4, 6, seed=7)
  expected_y, _ = reference_forward(**inputs)
  args = {k: jnp.asarray(v, jnp.bfloat16) for k, v in inputs.items()}
  y = selective_scan(**{k: args[k] for k in ("u", "delta", "A", "B", "C", "D")},
                     h0=args["h0"], mode="pallas", chunk_size=4)
  assert y.dtype == jnp.bfloat16
  assert relative_error(y, expected_y) < 3e-2  # bf16 rounding of the inputs bounds it


@pytest.mark.parametrize("length,return_state", [(5, True), (21, False)])
def test_without_h0_starts_from_zero_and_skips_the_state(length, return_state):
  """h0=None never reads a state, return_state=False never writes one; same results."""
  inputs = make_inputs(2, length, 3, 4, seed=length)
  inputs["h0"] = np.zeros_like(inputs["h0"])
  g = np.random.default_rng(3).normal(size=(2, length, 3))
  expected_y, states = reference_forward(**inputs)
  expected_grads = reference_gradients(inputs, g)
  names = ARG_NAMES[:6]

  def loss(*args):
    out = selective_scan(*args, mode="pallas", chunk_size=8 if length <= 8 else 4,
                         return_state=return_state)
    y = out[0] if return_state else out
    return jnp.sum(y * g), out

  args = [jnp.asarray(inputs[k], jnp.float32) for k in names]
  grads, out = jax.jit(jax.grad(loss, argnums=tuple(range(6)), has_aux=True))(*args)
  if return_state:
    out, state = out
    assert relative_error(state, states[-1]) < 1e-5
  assert relative_error(out, expected_y) < 1e-5
  for name, grad in zip(names, grads):
    assert relative_error(grad, expected_grads[name]) < 1e-5, name


@pytest.mark.parametrize("length,with_states", [(5, False), (100, True)])
def test_lowers_to_triton_for_a_gpu(length, with_states):
  """The kernel pair lowers through Pallas' Triton backend (no GPU needed to lower).

  This catches what Triton cannot express (non-power-of-two values,
  unsupported primitives); it does not compile PTX or run anything.
  """
  batch, channels, state = 4, 48, 16
  shapes = [(batch, length, channels), (batch, length, channels), (channels, state),
            (batch, length, state), (batch, length, state), (batch, channels, state)]
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes]

  def loss(*args):
    if with_states:  # h0 read, final state written, chunk loop
      y, h = pallas_scan.pallas_recurrence(*args, interpret=False)
      return jnp.sum(y ** 2) + jnp.sum(h ** 2)
    y = pallas_scan.pallas_recurrence(*args[:5], return_state=False, interpret=False)
    return jnp.sum(y ** 2)

  grad_fn = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(6 if with_states else 5))))
  text = grad_fn.trace(*args[:6 if with_states else 5]).lower(
      lowering_platforms=("cuda",)).as_text()
  assert text.count("xla.gpu.triton") == 2  # the forward kernel and the backward kernel


def test_default_tiles_sum_da_over_many_rows_on_gpu():
  """At the reference shape a backward program owns 32 rows, so dA has batch/32 partials."""
  config = pallas_scan.choose_config(256, 5, 1536, 128, interpret=False)
  assert (config.chunk, config.num_chunks) == (5, 1)  # L 5: one chunk, fully unrolled
  assert config.batch_tile * config.channel_tile * 128 <= pallas_scan.GPU_STATE_ELEMENTS
  assert config.backward_rows == 32
  long = pallas_scan.choose_config(8, 1000, 64, 16, interpret=False)
  assert (long.chunk, long.num_chunks) == (16, 63)


def test_bad_tiles_raise_clear_errors():
  with pytest.raises(ValueError, match="channel_tile must be a power of two"):
    pallas_scan.choose_config(2, 5, 6, 4, channel_tile=3)
  with pytest.raises(ValueError, match="backward_rows must be a multiple of batch_tile 2"):
    pallas_scan.choose_config(4, 5, 6, 4, batch_tile=2, backward_rows=3)
  with pytest.raises(ValueError, match="chunk_size must be >= 1"):
    pallas_scan.choose_config(4, 5, 6, 4, chunk_size=0)


def test_self_check_passes_for_the_kernel():
  assert pallas_scan.self_check(interpret=True) is None


@pytest.fixture
def fresh_self_check():
  scan_lib._kernel_self_check.cache_clear()
  yield
  scan_lib._kernel_self_check.cache_clear()


def test_auto_on_gpu_falls_back_with_one_warning_when_the_self_check_fails(
    monkeypatch, caplog, fresh_self_check):
  """A kernel off by 1e-3 fails the check: "auto" keeps to the XLA modes and says why, once."""
  real_kernel = pallas_scan.pallas_recurrence

  def off_kernel(*args, **kwargs):
    out = real_kernel(*args, **kwargs)
    return (out[0] * 1.001, out[1]) if isinstance(out, tuple) else out * 1.001

  monkeypatch.setattr(pallas_scan, "pallas_recurrence", off_kernel)
  resolved = []

  @jax.jit
  def traced(x):  # the first resolution happens while a model is traced
    resolved.append(scan_lib.resolve_scan_type("auto", 5, "gpu"))
    return x

  with caplog.at_level(logging.WARNING):
    traced(1.0)
    resolved.append(scan_lib.resolve_scan_type("auto", 1024, "gpu"))
  assert resolved == [scan_lib.ScanType.UNROLLED, scan_lib.ScanType.CHUNKED]
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "self-check" in warnings[0], warnings
  assert "y differs from mode 'sequential' by 1.0e-03" in warnings[0]
  # The Pallas kernel's failure is a GPU matter: on CPU "auto" still picks the native kernel.
  assert scan_lib.resolve_scan_type("auto", 5, "cpu") is scan_lib.ScanType.NATIVE
