"""selective_scan: every mode against a float64 NumPy loop, forward and backward."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from lvm_jax.ops import scan as scan_lib
from lvm_jax.ops.scan import selective_scan

CONCRETE_MODES = scan_lib.CONCRETE_MODES
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "h0")

# (batch, L, D, N, chunk_size): L=1, L=5, L not a multiple of the chunk, N=1, batch=1.
SHAPES = [
    (2, 1, 3, 4, 4),
    (3, 5, 6, 8, 2),
    (2, 11, 5, 3, 4),
    (1, 7, 4, 1, 3),
    (1, 16, 8, 16, 16),
]


def make_inputs(batch, length, channels, state, seed=0):
  rng = np.random.default_rng(seed)
  return dict(
      u=rng.normal(size=(batch, length, channels)),
      delta=rng.uniform(0.05, 0.6, size=(batch, length, channels)),
      A=-np.exp(rng.normal(scale=0.5, size=(channels, state))),
      B=rng.normal(size=(batch, length, state)),
      C=rng.normal(size=(batch, length, state)),
      D=rng.normal(size=(channels,)),
      h0=rng.normal(size=(batch, channels, state)),
  )


def reference_forward(u, delta, A, B, C, D, h0):
  """Plain float64 loop of the recurrence; returns y and every state."""
  length = u.shape[1]
  states = [h0]
  ys = []
  for t in range(length):
    decay = np.exp(delta[:, t, :, None] * A)
    h = decay * states[-1] + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
    states.append(h)
    ys.append(np.einsum("bdn,bn->bd", h, C[:, t]) + D * u[:, t])
  return np.stack(ys, 1), states


def reference_gradients(inputs, y_cotangent):
  """Hand-derived reverse pass of reference_forward for loss = sum(y * y_cotangent)."""
  u, delta, A, B, C, D, h0 = (inputs[k] for k in ARG_NAMES)
  _, states = reference_forward(u, delta, A, B, C, D, h0)
  g = y_cotangent
  grads = {k: np.zeros_like(v) for k, v in inputs.items()}
  grads["D"] = np.einsum("bld,bld->d", g, u)
  grads["u"] += g * D
  dh_next = np.zeros_like(h0)
  next_decay = np.zeros_like(h0)
  for t in reversed(range(u.shape[1])):
    h_prev, h = states[t], states[t + 1]
    decay = np.exp(delta[:, t, :, None] * A)
    dh = g[:, t, :, None] * C[:, t, None, :] + next_decay * dh_next
    grads["C"][:, t] = np.einsum("bd,bdn->bn", g[:, t], h)
    d_decay = dh * h_prev
    grads["A"] += np.einsum("bdn,bd->dn", d_decay * decay, delta[:, t])
    grads["delta"][:, t] = (np.einsum("bdn,dn->bd", d_decay * decay, A)
                            + np.einsum("bdn,bn->bd", dh, B[:, t]) * u[:, t])
    grads["u"][:, t] += np.einsum("bdn,bn->bd", dh, B[:, t]) * delta[:, t]
    grads["B"][:, t] = np.einsum("bdn,bd->bn", dh, delta[:, t] * u[:, t])
    dh_next, next_decay = dh, decay
  grads["h0"] = next_decay * dh_next
  return grads


def relative_error(actual, expected):
  actual = np.asarray(actual, np.float64)
  return np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30)


def test_reference_gradients_match_finite_differences():
  inputs = make_inputs(2, 4, 3, 2, seed=3)
  g = np.random.default_rng(4).normal(size=(2, 4, 3))
  grads = reference_gradients(inputs, g)
  eps = 1e-6
  for name in ARG_NAMES:
    flat_index = np.unravel_index(1 % inputs[name].size, inputs[name].shape)
    plus = {k: v.copy() for k, v in inputs.items()}
    minus = {k: v.copy() for k, v in inputs.items()}
    plus[name][flat_index] += eps
    minus[name][flat_index] -= eps
    numeric = (np.sum(reference_forward(**plus)[0] * g)
               - np.sum(reference_forward(**minus)[0] * g)) / (2 * eps)
    assert abs(numeric - grads[name][flat_index]) < 1e-6 * max(1.0, abs(numeric)), name


@pytest.fixture(params=["untiled", "tile2"])
def batch_tiling(request, monkeypatch):
  """Runs a test with the whole batch at once (accelerators) and in tiles of 2 (CPU rule)."""
  if request.param == "untiled":
    monkeypatch.setattr(scan_lib, "batch_tile", lambda batch, *_: batch)
  else:
    monkeypatch.setattr(scan_lib, "batch_tile", lambda batch, *_: 2)
  return request.param


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}_L{}_D{}_N{}_c{}".format(*s))
@pytest.mark.parametrize("mode", CONCRETE_MODES + ("auto",))
def test_forward_and_gradients_match_float64_reference(mode, shape, batch_tiling):
  batch, length, channels, state, chunk = shape
  inputs = make_inputs(batch, length, channels, state, seed=sum(shape))
  g = np.random.default_rng(1).normal(size=(batch, length, channels))
  expected_y, _ = reference_forward(**inputs)
  expected_grads = reference_gradients(inputs, g)

  def loss(*args):
    y = selective_scan(*args[:6], h0=args[6], mode=mode, chunk_size=chunk)
    return jnp.sum(y * g), y

  args = [jnp.asarray(inputs[k], jnp.float32) for k in ARG_NAMES]
  grads, y = jax.jit(jax.grad(loss, argnums=tuple(range(7)), has_aux=True))(*args)
  assert y.dtype == jnp.float32
  assert relative_error(y, expected_y) < 1e-5
  for name, grad in zip(ARG_NAMES, grads):
    assert relative_error(grad, expected_grads[name]) < 1e-5, name


@pytest.mark.parametrize("mode", CONCRETE_MODES)
def test_bfloat16_inputs_accumulate_in_float32(mode):
  inputs = make_inputs(2, 9, 4, 6, seed=7)
  expected_y, _ = reference_forward(**inputs)
  args = {k: jnp.asarray(v, jnp.bfloat16) for k, v in inputs.items()}
  y = selective_scan(**{k: args[k] for k in ("u", "delta", "A", "B", "C", "D")},
                     h0=args["h0"], mode=mode, chunk_size=4)
  assert y.dtype == jnp.bfloat16
  # Inputs rounded to bf16 (8 bits of mantissa) bound the agreement, not the scan.
  assert relative_error(y, expected_y) < 3e-2
  grads = jax.grad(lambda u: jnp.sum(selective_scan(
      u, args["delta"], args["A"], args["B"], args["C"], args["D"], mode=mode,
      chunk_size=4).astype(jnp.float32)))(args["u"])
  assert grads.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("mode", CONCRETE_MODES)
def test_final_state_continues_the_sequence_exactly(mode, batch_tiling):
  inputs = make_inputs(2, 12, 5, 4, seed=11)
  args = {k: jnp.asarray(v, jnp.float32) for k, v in inputs.items()}
  split = 7
  head = {k: args[k][:, :split] for k in ("u", "delta", "B", "C")}
  tail = {k: args[k][:, split:] for k in ("u", "delta", "B", "C")}
  full_y, full_state = selective_scan(
      args["u"], args["delta"], args["A"], args["B"], args["C"], args["D"],
      h0=args["h0"], mode=mode, chunk_size=3, return_state=True)
  head_y, head_state = selective_scan(
      head["u"], head["delta"], args["A"], head["B"], head["C"], args["D"],
      h0=args["h0"], mode=mode, chunk_size=3, return_state=True)
  tail_y, tail_state = selective_scan(
      tail["u"], tail["delta"], args["A"], tail["B"], tail["C"], args["D"],
      h0=head_state, mode=mode, chunk_size=3, return_state=True)
  assert head_state.dtype == jnp.float32
  np.testing.assert_allclose(np.concatenate([head_y, tail_y], 1), full_y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(tail_state, full_state, rtol=1e-5, atol=1e-5)


def test_without_d_and_h0_starts_from_zero_state():
  inputs = make_inputs(2, 6, 3, 2, seed=5)
  inputs["h0"] = np.zeros_like(inputs["h0"])
  inputs["D"] = np.zeros_like(inputs["D"])
  expected_y, _ = reference_forward(**inputs)
  y = selective_scan(*(jnp.asarray(inputs[k], jnp.float32) for k in ("u", "delta", "A", "B", "C")),
                     mode="sequential")
  assert relative_error(y, expected_y) < 1e-5


def test_unknown_mode_and_bad_shapes_raise_clear_errors():
  inputs = {k: jnp.asarray(v, jnp.float32) for k, v in make_inputs(1, 4, 3, 2).items()}
  with pytest.raises(ValueError, match=r"unknown mode 'fast'; choose one of \('auto'"):
    selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], mode="fast")
  with pytest.raises(ValueError, match=r"B has shape \(1, 3, 2\), expected \(1, 4, 2\)"):
    selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"][:, :3], inputs["C"])
  with pytest.raises(ValueError, match="chunk_size must be >= 1"):
    selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
                   mode="chunked", chunk_size=0)


def test_cpu_batch_tile_keeps_the_state_cache_sized():
  assert scan_lib.batch_tile(256, 1536, 128, "cpu") == 2
  assert scan_lib.batch_tile(256, 1536, 128, "gpu") == 256
  assert scan_lib.batch_tile(3, 4, 2, "cpu") == 3


@pytest.fixture
def self_check_calls(monkeypatch):
  """Both kernels' self-checks replaced by ones that pass and record their calls; cache cleared."""
  from lvm_jax.ops import native_scan, pallas_scan  # pylint: disable=g-import-not-at-top
  calls = []
  monkeypatch.setattr(pallas_scan, "self_check", lambda: calls.append("pallas"))
  monkeypatch.setattr(native_scan, "self_check", lambda: calls.append("native"))
  scan_lib._kernel_self_check.cache_clear()
  yield calls
  scan_lib._kernel_self_check.cache_clear()


def test_auto_rule(self_check_calls):
  assert scan_lib.resolve_scan_type("auto", 1024, "tpu") is scan_lib.ScanType.CHUNKED
  assert scan_lib.resolve_scan_type("auto", 16, "metal") is scan_lib.ScanType.UNROLLED
  assert scan_lib.resolve_scan_type("auto", 1024, "metal") is scan_lib.ScanType.SEQUENTIAL
  assert not self_check_calls  # off CPU and GPU, "auto" never looks at a kernel
  for length in (5, 16, 1024):
    assert scan_lib.resolve_scan_type("auto", length, "cpu") is scan_lib.ScanType.NATIVE
  assert self_check_calls == ["native"]  # once per process
  assert scan_lib.resolve_scan_type("auto", 5, "gpu") is scan_lib.ScanType.PALLAS
  assert scan_lib.resolve_scan_type("auto", 1024, "gpu") is scan_lib.ScanType.PALLAS
  assert self_check_calls == ["native", "pallas"]
  # A recurrence the kernels do not compute (lnsp_blocks) neither runs a check nor gets one.
  assert scan_lib.resolve_scan_type("auto", 5, "gpu", allow_kernels=False) is \
      scan_lib.ScanType.UNROLLED
  assert scan_lib.resolve_scan_type("pallas", 1024, "gpu", allow_kernels=False) is \
      scan_lib.ScanType.CHUNKED
  assert scan_lib.resolve_scan_type("native", 16, "cpu", allow_kernels=False) is \
      scan_lib.ScanType.SEQUENTIAL


def test_xla_auto_rule_when_no_kernel_is_used(monkeypatch):
  """Without a kernel (its check failed), "auto" picks by length and platform."""
  monkeypatch.setattr(scan_lib, "kernel_self_check_failure", lambda platform=None: "no kernel")
  assert scan_lib.resolve_scan_type("auto", 5, "cpu") is scan_lib.ScanType.UNROLLED
  assert scan_lib.resolve_scan_type("auto", 8, "cpu") is scan_lib.ScanType.UNROLLED
  assert scan_lib.resolve_scan_type("auto", 16, "cpu") is scan_lib.ScanType.SEQUENTIAL
  assert scan_lib.resolve_scan_type("auto", 1024, "cpu") is scan_lib.ScanType.SEQUENTIAL
  assert scan_lib.resolve_scan_type("auto", 5, "gpu") is scan_lib.ScanType.UNROLLED
  assert scan_lib.resolve_scan_type("auto", 1024, "gpu") is scan_lib.ScanType.CHUNKED


def test_native_mode_off_cpu_is_an_error():
  with pytest.raises(ValueError, match="mode 'native' is a CPU kernel; this runs on 'gpu'"):
    scan_lib.resolve_scan_type("native", 5, "gpu")


def test_chunked_and_sequential_backward_do_not_store_every_state():
  """Their gradient keeps O(L/chunk) states, not O(L) of them."""
  batch, length, channels, state = 1, 512, 8, 16
  inputs = make_inputs(batch, length, channels, state)
  args = [jnp.asarray(inputs[k], jnp.float32) for k in ("u", "delta", "A", "B", "C")]

  def temp_bytes(mode):  # batch 1: one tile, so the measure is the mode's own
    fn = jax.jit(jax.grad(lambda u: jnp.sum(selective_scan(u, *args[1:], mode=mode, chunk_size=32))))
    return fn.lower(args[0]).compile().memory_analysis().temp_size_in_bytes

  all_states_bytes = batch * length * channels * state * 4
  assert temp_bytes("chunked") < all_states_bytes / 2
  assert temp_bytes("sequential") < all_states_bytes / 2  # recomputes states chunk by chunk
  assert temp_bytes("associative") >= all_states_bytes
