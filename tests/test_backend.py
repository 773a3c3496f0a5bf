"""The backend toggle, each case in a fresh process (JAX picks its backend once)."""

import os
import subprocess
import sys

import pytest

from lvm_jax import backend


def run_python(code):
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        timeout=300)


def test_cpu_backend_is_applied_and_devices_logged():
  result = run_python(
      "from absl import logging; logging.set_verbosity('info'); logging.use_absl_handler()\n"
      "from lvm_jax import backend\nprint('PLATFORM', backend.initialize('cpu'))\n"
      "import os; print('ENV', os.environ['JAX_PLATFORMS'])")
  assert result.returncode == 0, result.stderr
  assert "PLATFORM cpu" in result.stdout and "ENV cpu" in result.stdout
  assert "local device(s)" in result.stderr and "CpuDevice" in result.stderr


def test_auto_leaves_out_the_libtpu_line_and_keeps_jaxs_others():
  result = run_python(
      "from absl import logging; logging.set_verbosity('info'); logging.use_absl_handler()\n"
      "from lvm_jax import backend\nbackend.initialize('auto')\n"
      "import logging as py_logging; bridge = py_logging.getLogger('jax._src.xla_bridge')\n"
      "bridge.info(\"Unable to initialize backend 'tpu': Failed to open libtpu.so\")\n"
      "bridge.info('another bridge line')")
  assert result.returncode == 0, result.stderr
  assert "libtpu" not in result.stderr
  assert "another bridge line" in result.stderr and "local device(s)" in result.stderr


def test_missing_gpu_fails_with_a_clear_message():
  result = run_python("from lvm_jax import backend\nbackend.initialize('gpu')")
  assert result.returncode != 0
  assert "BackendError: backend 'gpu' was asked for but JAX" in result.stderr
  assert 'pip install -U "jax[cuda12]"' in result.stderr


def test_missing_metal_fails_with_a_clear_message():
  result = run_python("from lvm_jax import backend\nbackend.initialize('metal')")
  assert result.returncode != 0
  assert "BackendError: backend 'metal' was asked for but JAX" in result.stderr
  assert 'pip install -e ".[metal]"' in result.stderr


def test_unknown_backend_names_the_choices():
  with pytest.raises(backend.BackendError,
                     match=r"backend 'tpu9' is not one of \('auto', 'cpu', 'gpu', 'metal'\)"):
    backend.configure("tpu9")


def test_metal_detection():
  assert backend.is_metal("METAL") and not backend.is_metal("cpu")


def test_apple_plugin_preference_and_platform_names(monkeypatch):
  installed = set()

  def version(name):
    if name not in installed:
      raise backend.importlib.metadata.PackageNotFoundError(name)
    return "1"

  monkeypatch.setattr(backend.importlib.metadata, "version", version)
  assert backend.installed_apple_plugin()[0] == "jax-metal"  # none: jax-metal's hint path
  installed.add("jax-metal")
  assert backend.installed_apple_plugin()[1] == "METAL"
  installed.add("jax-mps")
  assert backend.installed_apple_plugin()[1] == "mps"
  assert backend.is_metal("mps") and backend.is_metal("METAL")


@pytest.mark.parametrize("version, cache_dir, platform, expected", [
    ((0, 5), "cache", "cpu", ()),         # jax 0.5.0 runs cached donated programs wrongly
    ((0, 5), "", "cpu", (0,)),            # no persistent cache: nothing is loaded, donate
    ((0, 5), "cache", "gpu", (0,)),       # only the CPU client is affected
    ((0, 10), "cache", "cpu", (0,)),      # fixed by jax 0.10
])
def test_donation_is_dropped_only_where_a_cached_program_breaks(version, cache_dir, platform,
                                                                 expected, monkeypatch, tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(backend, "_jax_version", lambda: version)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  previous = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(tmp_path / cache_dir) if cache_dir else None)
  try:
    assert backend.donate_argnums((0,), platform) == expected
  finally:
    jax.config.update("jax_compilation_cache_dir", previous)
