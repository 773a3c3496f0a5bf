"""selective_scan(mode="native"): the C++ kernel's build, its numerics beyond the shared
float64 tests (tests/test_ops_scan.py runs every mode), and the fall-back of "auto"."""

import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lvm_jax.ops import native_scan
from lvm_jax.ops import scan as scan_lib
from lvm_jax.ops.scan import selective_scan

from tests.test_ops_scan import ARG_NAMES, make_inputs, reference_forward, relative_error

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def float32_inputs(batch, length, channels, state, seed=0):
  return {k: jnp.asarray(v, jnp.float32)
          for k, v in make_inputs(batch, length, channels, state, seed).items()}


def test_the_kernel_builds_here_and_passes_its_self_check():
  assert native_scan.unavailable_reason() is None
  assert native_scan.self_check() is None


def test_a_second_build_reuses_the_cached_library():
  first = native_scan.build()
  stamp = first.stat().st_mtime_ns
  assert native_scan.build() == first
  assert first.stat().st_mtime_ns == stamp


def test_the_cache_key_follows_the_source(tmp_path, monkeypatch):
  source = tmp_path / "native_scan.cc"
  source.write_text(native_scan.SOURCE.read_text())
  monkeypatch.setattr(native_scan, "SOURCE", source)
  same = native_scan.library_path(native_scan.compiler())
  source.write_text(native_scan.SOURCE.read_text() + "\n// changed\n")
  assert native_scan.library_path(native_scan.compiler()) != same


def test_loading_the_kernel_leaves_denormals_alone():
  """GCC's -ffast-math shared libraries switch the whole process to flush denormals;
  this one is linked without it, and the kernel restores the flags it sets."""
  inputs = float32_inputs(2, 5, 4, 3)
  jax.block_until_ready(selective_scan(*(inputs[k] for k in ARG_NAMES[:6]), mode="native"))
  tiny = np.array([1e-39], np.float32)
  assert (tiny * np.float32(1.0))[0] == np.float32(1e-39)


def test_worker_threads_split_the_channels_without_changing_the_result(monkeypatch):
  """y is per channel, so it is bitwise the same; dB and dC add per-thread parts."""
  inputs = float32_inputs(3, 6, 7, 5, seed=3)
  g = jnp.asarray(np.random.default_rng(2).normal(size=(3, 6, 7)), jnp.float32)

  def run():
    def loss(*args):
      y = selective_scan(*args[:6], h0=args[6], mode="native")
      return jnp.sum(y * g), y
    return jax.jit(jax.grad(loss, argnums=tuple(range(7)), has_aux=True))(
        *(inputs[k] for k in ARG_NAMES))

  results = {}
  for threads in ("1", "3", "16"):  # 16 > 7 channels: capped at one channel each
    monkeypatch.setenv(native_scan.THREADS_ENV, threads)
    results[threads] = run()
  (grads_1, y_1) = results["1"]
  for threads in ("3", "16"):
    grads, y = results[threads]
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_1))
    for name, a, b in zip(ARG_NAMES, grads, grads_1):
      assert relative_error(a, np.asarray(b, np.float64)) < 1e-6, (threads, name)


def test_bad_thread_count_is_refused(monkeypatch):
  monkeypatch.setenv(native_scan.THREADS_ENV, "0")
  with pytest.raises(ValueError, match=r"\$LVM_JAX_NATIVE_THREADS must be >= 1, got 0"):
    native_scan.threads()


def test_a_nan_input_spreads_as_it_does_in_the_xla_modes():
  """A diverged model must show as NaN where mode "unrolled" shows it (the fast exp keeps NaN)."""
  inputs = float32_inputs(2, 5, 4, 3)
  g = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 4)), jnp.float32)

  def outputs(args, mode):
    def loss(*xs):
      y = selective_scan(*xs[:6], h0=xs[6], mode=mode)
      return jnp.sum(y * g), y
    grads, y = jax.grad(loss, argnums=tuple(range(7)), has_aux=True)(*args)
    return [np.isnan(np.asarray(x)) for x in (y,) + grads]

  for name in ("u", "delta", "A", "B", "C", "h0"):
    args = dict(inputs)
    args[name] = args[name].at[(0,) * args[name].ndim].set(jnp.nan)
    args = [args[k] for k in ARG_NAMES]
    native, unrolled = outputs(args, "native"), outputs(args, "unrolled")
    assert native[0].any(), name  # y
    for what, a, b in zip(("y",) + ARG_NAMES, native, unrolled):
      np.testing.assert_array_equal(a, b, err_msg=f"NaN in {name}: where d{what} is NaN")


def test_decays_that_underflow_give_zero_as_the_xla_modes_do():
  """exp(delta * A) below float32's smallest normal is 0 (XLA:CPU flushes denormals too)."""
  inputs = float32_inputs(2, 4, 3, 5, seed=4)
  inputs["A"] = inputs["A"].at[:, 0].set(-200.0).at[:, 1].set(-87.5).at[:, 2].set(-0.01)
  args = [inputs[k] for k in ARG_NAMES[:6]]
  expected, _ = reference_forward(*(np.asarray(x, np.float64) for x in args),
                                  np.asarray(inputs["h0"], np.float64) * 0)
  got = selective_scan(*args, mode="native")
  assert relative_error(got, expected) < 1e-5


def test_vmap_runs_the_kernel_per_example():
  """Two batches stacked on a new leading axis: vmap gives each batch's own scan."""
  first, second = float32_inputs(4, 5, 3, 4, seed=5), float32_inputs(4, 5, 3, 4, seed=6)
  per_sequence = ("u", "delta", "B", "C")
  stacked = [jnp.stack([first[k], second[k]]) for k in per_sequence]
  scan = lambda u, delta, B, C: selective_scan(u, delta, first["A"], B, C, first["D"],
                                               mode="native")
  batched = jax.vmap(scan)(*stacked)
  for i, inputs in enumerate((first, second)):
    np.testing.assert_array_equal(np.asarray(batched[i]),
                                  np.asarray(scan(*(inputs[k] for k in per_sequence))))


@pytest.fixture
def fresh_kernel_state():
  """Forgets the loaded kernel and the self-check outcome, before and after."""
  scan_lib._kernel_self_check.cache_clear()
  native_scan._load.cache_clear()
  yield
  scan_lib._kernel_self_check.cache_clear()
  native_scan._load.cache_clear()


def test_without_a_compiler_auto_falls_back_with_one_warning_and_native_says_why(
    monkeypatch, tmp_path, caplog, fresh_kernel_state):
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
  monkeypatch.setenv(native_scan.CACHE_ENV, str(tmp_path / "cache"))
  with caplog.at_level(logging.WARNING):
    assert scan_lib.resolve_scan_type("auto", 5, "cpu") is scan_lib.ScanType.UNROLLED
    assert scan_lib.resolve_scan_type("auto", 64, "cpu") is scan_lib.ScanType.SEQUENTIAL
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1, warnings
  assert "native kernel failed its self-check on cpu (no C++ compiler" in warnings[0]
  assert "uses the XLA modes instead" in warnings[0]
  inputs = float32_inputs(2, 5, 4, 3)
  with pytest.raises(native_scan.NativeScanUnavailable,
                     match=r"mode='native'\) cannot run: no C\+\+ compiler .*no-such-compiler"):
    selective_scan(*(inputs[k] for k in ARG_NAMES[:6]), mode="native")


def test_a_failed_build_is_reported_with_the_compiler_error(monkeypatch, tmp_path):
  broken = tmp_path / "native_scan.cc"
  broken.write_text("this is not C++\n")
  monkeypatch.setattr(native_scan, "SOURCE", broken)
  monkeypatch.setenv(native_scan.CACHE_ENV, str(tmp_path / "cache"))
  with pytest.raises(native_scan.NativeScanUnavailable,
                     match=r"building native_scan.cc failed \(exit 1\): .*error"):
    native_scan.build()
  assert not list((tmp_path / "cache").rglob("*.so"))  # nothing half-built left in the cache


def test_a_kernel_that_disagrees_fails_its_self_check_and_auto_falls_back(
    monkeypatch, caplog, fresh_kernel_state):
  """An injected 1e-3 error: the check names it, "auto" keeps to the XLA modes, and the
  recorded pass of the real kernel is not consulted."""
  real = native_scan.native_recurrence

  def off_kernel(*args, **kwargs):
    out = real(*args, **kwargs)
    return (out[0] * 1.001, out[1]) if isinstance(out, tuple) else out * 1.001

  monkeypatch.setattr(native_scan, "native_recurrence", off_kernel)
  monkeypatch.setattr(native_scan, "PASSED_MARKER", "no-such-marker-for-this-test")
  with caplog.at_level(logging.WARNING):
    assert scan_lib.resolve_scan_type("auto", 5, "cpu") is scan_lib.ScanType.UNROLLED
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "y differs from mode 'sequential' by 1.0e-03" in warnings[0]
  marker = native_scan._loaded_path().parent / "no-such-marker-for-this-test"
  assert not marker.exists()  # a failure is never recorded as a pass


def test_a_model_step_under_shard_map_on_four_devices_matches_unrolled():
  """The kernel runs per device inside the data-parallel step (jit of shard_map)."""
  script = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from lvm_jax.ops.scan import selective_scan
from lvm_jax.train.parallel import _shard_map
from tests.test_ops_scan import make_inputs, ARG_NAMES
args = [jnp.asarray(v, jnp.float32) for k, v in make_inputs(8, 5, 6, 4).items() if k != "h0"]
mesh = Mesh(np.array(jax.devices()), ("data",))
def loss(mode):
  def per_device(u, delta, A, B, C, D):
    return jax.lax.psum(jnp.sum(jnp.sin(selective_scan(u, delta, A, B, C, D, mode=mode))), "data")
  specs = (P("data"), P("data"), P(), P("data"), P("data"), P())
  return jax.jit(jax.grad(_shard_map(per_device, mesh, specs, P()), argnums=(0, 2, 3)))(*args)
native, unrolled = loss("native"), loss("unrolled")
assert len(jax.devices()) == 4
print(max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in zip(native, unrolled)))
"""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, check=False, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  assert float(result.stdout.strip().splitlines()[-1]) < 1e-5
