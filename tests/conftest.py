"""Shared fixtures: the tiny training config, one finished tiny run per session, and an
untrained workdir for the evaluation tests.

A finished run takes a compile and two short epochs; the loop, checkpoint,
status and eval tests all read the same one instead of training their own.
"""

import logging as std_logging
import os
import shutil
import tempfile

import pytest

# One persistent compilation cache per test run, shared by every process the run starts
# (pytest-xdist workers and the CLIs' subprocesses inherit the variable): a program that
# another test or process already compiled at the same shapes is loaded, not compiled again.
# Set before anything imports JAX; a cache the caller names is used as it is, and kept.
_RUN_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
  _RUN_CACHE = tempfile.mkdtemp(prefix="lvm_jax_test_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _RUN_CACHE

from lvm_jax.config_base import base_config, shrink_to_tiny  # pylint: disable=g-import-not-at-top,wrong-import-position


if os.environ.get("LVM_JAX_TEST_PROFILE"):  # where the suite's time goes (docs/testing.md)
  import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position

  _COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                     "/jax/core/compile/jaxpr_to_mlir_module_duration",
                     "/jax/core/compile/backend_compile_duration")
  _PROFILE = {"compile_s": 0.0, "processes": 0}
  _popen_init = subprocess.Popen.__init__

  def _counting_popen_init(self, *args, **kwargs):
    _PROFILE["processes"] += 1
    _popen_init(self, *args, **kwargs)

  subprocess.Popen.__init__ = _counting_popen_init

  def _on_duration(event, seconds, **unused):
    if event in _COMPILE_EVENTS:
      _PROFILE["compile_s"] += seconds

  import jax.monitoring  # pylint: disable=g-import-not-at-top,wrong-import-position
  jax.monitoring.register_event_duration_secs_listener(_on_duration)

  @pytest.fixture(autouse=True)
  def _record_compile_time_and_processes(record_property):
    """In-process JAX compile seconds and processes started, as JUnit properties that
    benchmarks.suite_durations sums; the listener sees this process only, not the ones a
    test starts."""
    yield
    # Since the previous test ended: a session fixture's set-up counts to the test that
    # needed it first, as in the JUnit time.
    record_property("compile_s", round(_PROFILE["compile_s"], 3))
    record_property("processes", _PROFILE["processes"])
    _PROFILE["compile_s"], _PROFILE["processes"] = 0.0, 0


@pytest.fixture(autouse=True)
def _logging_state_is_each_tests_own():
  """A CLI run in-process (absl's app.run) installs absl's handler on the root logger and sets
  the absl logger's level from --verbosity; put both back, so that a later test's caplog and
  capsys see what they would alone, whatever ran before it on the same worker."""
  absl_logger = std_logging.getLogger("absl")
  levels = (absl_logger.level, std_logging.root.level)
  handlers = list(std_logging.root.handlers)
  yield
  absl_logger.setLevel(levels[0])
  std_logging.root.setLevel(levels[1])
  std_logging.root.handlers[:] = handlers


def pytest_unconfigure(config):
  """The run's own cache goes with the run; xdist workers inherit the controller's variable,
  so only the controller made one."""
  del config
  if _RUN_CACHE:
    shutil.rmtree(_RUN_CACHE, ignore_errors=True)


def tiny_config(num_epochs=2):
  config = shrink_to_tiny(base_config())
  config.data.synthetic.num_articles = 80
  config.data.synthetic.dim = 32
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.head.hidden_dim, config.head.out_dim = 32, 16
  config.train.batch_size, config.train.accum_steps = 16, 2
  config.train.num_epochs = num_epochs
  config.train.early_stopping_patience = 10
  config.data.prefetch = 0
  return config


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
  from lvm_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("run"))
  return workdir, train.train_and_evaluate(tiny_config(), workdir)


@pytest.fixture
def finished_run_copy(finished_run, tmp_path):
  """A private copy of the finished run's workdir, free to damage or extend."""
  workdir, summary = finished_run
  copy = str(tmp_path / "run_copy")
  shutil.copytree(workdir, copy)
  if os.path.exists(os.path.join(copy, ".lock")):
    os.remove(os.path.join(copy, ".lock"))
  return copy, summary


@pytest.fixture(scope="session")
def eval_workdir(tmp_path_factory):
  """A workdir as training leaves it: synthetic data (32-d), config.json, an untrained
  checkpoint, history.json with val_cosine 0.25."""
  import jax  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import synthetic  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import hooks, step  # pylint: disable=g-import-not-at-top
  from lvm_jax.workdir import Workdir  # pylint: disable=g-import-not-at-top

  workdir = Workdir(str(tmp_path_factory.mktemp("evalrun")))
  config = base_config()
  config.data.synthetic.num_articles, config.data.synthetic.dim = 80, 32
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.head.hidden_dim, config.head.out_dim = 16, 8
  synthetic.generate_synthetic_corpus(workdir.data, **config.data.synthetic)
  config.data.vector_dim = 32
  checkpoint.write_config(workdir, config)
  from lvm_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  predictor = models_lib.predictor_from_config(config, 32)
  state = step.create_train_state(config, predictor, jax.random.PRNGKey(0), 32, 10)
  saver = checkpoint.Checkpointer(workdir.checkpoints)
  saver.save(state, {"val_cosine": 0.25})
  saver.wait_until_finished()
  saver.close()
  hooks.History(workdir).append({"epoch": 1, "step": 0, "val_cosine": 0.25})
  return workdir.root


# ----------------------------------------------------------------------------- data tests
# The helpers themselves are plain functions in tests/data_helpers.py.


@pytest.fixture
def payload_dir(tmp_path):
  """A valid payload directory (data_helpers.make_payload: 4 articles x 12 chunks, 8-d)."""
  from data_helpers import make_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import write_payload  # pylint: disable=g-import-not-at-top
  return write_payload(str(tmp_path / "payload"), make_payload())
