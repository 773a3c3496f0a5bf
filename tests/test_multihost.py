"""Two processes on localhost train as one run (jax.distributed with Gloo CPU collectives).

Each run is `python -m lvm_jax.main` on the tiny config, started the way
launch/multihost_cpu.sh starts it: one process per JAX_PROCESS_ID, a free port,
bounded LVM_JAX_*_TIMEOUT_S. Every process runs in its own process group under
a wall-clock bound, and the group is SIGKILLed on any failure (JAX catches
SIGTERM for preemption, so only SIGKILL ends it at once).

What is checked, in the order the runs happen (runs are shared by the tests):
  the synthetic default: process 0 generates the corpus and writes the shared
    files, the other waits and reuses it; 2 epochs train;
  the final parameters equal one process with two devices (same global batch);
  pre-built data: both processes killed after the first checkpoint, a damaged
    newer step added; the rerun skips that step, resumes from the first and ends
    with the same parameters;
  one process killed: the other stops with a clear error within the timeout,
    and a rerun resumes;
  no coordinator: a clear error within the start-up timeout.
"""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import multihost_probe  # tests/multihost_probe.py
import numpy as np
import pytest

from lvm_jax import checkpoint
from lvm_jax.distributed import peer_watchdog
from lvm_jax.corpus import build
from lvm_jax.workdir import Workdir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/conftest.py tiny_config as flags of lvm_jax.main.
TINY_FLAGS = (
    "--config=configs/s_contrastive.py:tiny", "--backend=cpu",
    "--config.data.synthetic.num_articles=80", "--config.data.synthetic.dim=32",
    "--config.model.d_model=16", "--config.model.n_layers=1", "--config.model.d_state=4",
    "--config.head.hidden_dim=32", "--config.head.out_dim=16", "--config.train.batch_size=16",
    "--config.train.accum_steps=2", "--config.train.num_epochs=2",
    "--config.train.early_stopping_patience=10", "--config.data.prefetch=0",
    "--config.loss.negatives=global")  # global: InfoNCE negatives gathered across processes
# Generous for a shared 2-core machine, but bounded: a hang fails the test instead of CI.
RUN_TIMEOUT_S = 600
TIMEOUTS_ENV = {"LVM_JAX_INIT_TIMEOUT_S": "120", "LVM_JAX_HEARTBEAT_TIMEOUT_S": "30",
                "LVM_JAX_BARRIER_TIMEOUT_S": "300"}
# After a process is killed, the other must have stopped within this (heartbeat + slack).
STOP_AFTER_KILL_S = 120
# A probe survivor must have stopped within this after its peer was killed.
PROBE_STOP_AFTER_KILL_S = 10
PARAMETER_TOLERANCE = 1e-5  # as tests/test_train_step.py's four-devices-equal-one test


# The module's runs are shared by its tests (module fixtures): one pytest-xdist worker runs them.
pytestmark = pytest.mark.xdist_group("multihost")

_STARTED = []  # every Popen of this module, killed at teardown if still running
_CACHE_ENV = {}


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _kill(process) -> None:
  if process.poll() is None:
    try:
      os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    process.wait(timeout=30)


@pytest.fixture(scope="module", autouse=True)
def kill_leftovers_and_share_compilations(tmp_path_factory):
  """Every run shares one persistent compilation cache, on both stacks, as users run: later
  runs skip most compiling. On jax 0.5.0 a CPU program loaded from the cache with donated
  inputs corrupts memory (NaN, crashes); lvm_jax.backend.donate_argnums does not donate
  there, and the warm-cache test below is the regression test."""
  _CACHE_ENV.update(JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  yield
  for process in _STARTED:
    _kill(process)
  _CACHE_ENV.clear()


def _environment(**extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "LVM_JAX_")) and k != "XLA_FLAGS"}
  env.update(PYTHONPATH=os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p]),
             JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **TIMEOUTS_ENV, **_CACHE_ENV)
  env.update(extra)
  return env


def start(workdir, *flags, process_id=None, port=None, num_processes=2, devices=1, tag="run",
          **env_extra):
  """One `python -m lvm_jax.main` in its own process group, output to <workdir>.<tag>.<id>.log."""
  env = _environment(**env_extra)
  if process_id is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES=str(num_processes),
               JAX_PROCESS_ID=str(process_id))
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  log_path = f"{workdir}.{tag}.{'single' if process_id is None else process_id}.log"
  with open(log_path, "wb") as log:
    process = subprocess.Popen([sys.executable, "-m", "lvm_jax.main", f"--workdir={workdir}",
                                *TINY_FLAGS, *flags], cwd=REPO, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
  process.log_path = log_path
  _STARTED.append(process)
  return process


def start_pair(workdir, *flags, tag="run"):
  port = free_port()
  return [start(workdir, *flags, process_id=index, port=port, tag=tag) for index in range(2)]


def log_of(process) -> str:
  with open(process.log_path, errors="replace") as f:
    return f.read()


def finish(processes, timeout=RUN_TIMEOUT_S):
  """Waits for all; on a timeout or a failure kills the rest and fails with their logs."""
  deadline = time.monotonic() + timeout
  try:
    for process in processes:
      process.wait(timeout=max(deadline - time.monotonic(), 1))
  except subprocess.TimeoutExpired:
    pass
  codes = [process.poll() for process in processes]
  for process in processes:
    _kill(process)
  if codes != [0] * len(processes):
    tails = "\n".join(f"--- {p.log_path} (exit {c}):\n{log_of(p)[-3000:]}"
                      for p, c in zip(processes, codes))
    pytest.fail(f"runs ended with {codes} (None: still running after {timeout} s):\n{tails}")


def committed_steps(workdir):
  """Checkpoint steps whose Orbax directory is finalised (renamed from its temporary name)."""
  directory = Workdir(workdir).checkpoints
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) \
      if os.path.isdir(directory) else []


def wait_for_checkpoint(processes, workdir, timeout=RUN_TIMEOUT_S):
  """Returns the first committed step, while the processes still run."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    steps = committed_steps(workdir)
    if steps:
      return steps[0]
    if any(process.poll() is not None for process in processes):
      break
    time.sleep(0.05)
  for process in processes:
    _kill(process)
  pytest.fail(f"no checkpoint in {workdir} while all processes ran: "
              + "\n".join(log_of(p)[-3000:] for p in processes))


def final_params(workdir):
  step = committed_steps(workdir)[-1]
  return step, checkpoint.load(os.path.join(Workdir(workdir).checkpoints, str(step))).params


def max_difference(params_a, params_b) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  leaves_a, leaves_b = jax.tree_util.tree_leaves(params_a), jax.tree_util.tree_leaves(params_b)
  assert len(leaves_a) == len(leaves_b)
  return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(leaves_a, leaves_b))


def history(workdir):
  with open(Workdir(workdir).history) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
  """Two processes, 2 epochs on the embedded synthetic default."""
  workdir = str(tmp_path_factory.mktemp("multihost") / "synthetic")
  processes = start_pair(workdir)
  finish(processes)
  return workdir, processes


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """One process with two CPU devices: the same global batch, device layout and data order."""
  workdir = str(tmp_path_factory.mktemp("multihost") / "single")
  finish([start(workdir, devices=2)])
  return workdir


@pytest.fixture(scope="module")
def prebuilt_flags(synthetic_run):
  """Flags that point at the corpus the synthetic run generated, as pre-built data."""
  data = Workdir(synthetic_run[0]).data
  files = build.read_manifest(data)["files"]
  return (f"--config.data.train_path={os.path.join(data, files['train_rows'])}",
          f"--config.data.val_path={os.path.join(data, files['val_rows'])}",
          f"--config.data.payload_path={os.path.join(data, 'payload')}")


@pytest.mark.slow
@pytest.mark.stack
def test_synthetic_default_is_generated_once_and_trains_two_epochs(synthetic_run):
  workdir, (first, second) = synthetic_run
  paths = Workdir(workdir)
  assert [entry["epoch"] for entry in history(workdir)] == [1, 2]
  assert "Generating a synthetic corpus" in log_of(first)
  assert "Generating a synthetic corpus" not in log_of(second)
  assert "Reusing the synthetic corpus" in log_of(second)
  assert not glob.glob(os.path.join(paths.data, "**", "*.tmp*"), recursive=True)
  for shared in (paths.config, paths.history, paths.baselines):
    assert os.path.isfile(shared), shared
  # TensorBoard events from process 0 only: one writer, one event file.
  assert len(glob.glob(os.path.join(paths.tensorboard, "events.out.tfevents.*"))) == 1
  assert "process 1/2" in log_of(second)


@pytest.mark.slow
@pytest.mark.stack
def test_two_processes_equal_one_process_with_the_same_global_batch(synthetic_run,
                                                                    reference_run):
  multi_step, multi = final_params(synthetic_run[0])
  single_step, single = final_params(reference_run)
  assert multi_step == single_step
  assert max_difference(multi, single) < PARAMETER_TOLERANCE
  multi_history, single_history = history(synthetic_run[0]), history(reference_run)
  np.testing.assert_allclose([e["train_loss"] for e in multi_history],
                             [e["train_loss"] for e in single_history], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.stack
def test_killing_both_processes_then_rerunning_resumes_on_prebuilt_data(
    tmp_path, prebuilt_flags, reference_run):
  workdir = str(tmp_path / "prebuilt")
  processes = start_pair(workdir, *prebuilt_flags)
  first_step = wait_for_checkpoint(processes, workdir)
  for process in processes:
    _kill(process)
  assert committed_steps(workdir)[-1] == first_step, "the run ended before it could be killed"
  # And a newer step with truncated files: every process must skip it, and process 0 moves
  # it aside while the other waits (tests/test_checkpoint.py checks this for one process).
  damaged = os.path.join(Workdir(workdir).checkpoints, str(first_step + 3))
  shutil.copytree(os.path.join(Workdir(workdir).checkpoints, str(first_step)), damaged)
  for path in glob.glob(os.path.join(damaged, "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(max(os.path.getsize(path) // 2, 1))
  rerun = start_pair(workdir, *prebuilt_flags, tag="rerun")
  finish(rerun)
  for process in rerun:
    assert f"Resumed from step {first_step}" in log_of(process)
  assert os.path.isdir(f"{damaged}.damaged") and not os.path.exists(damaged)
  assert [entry["epoch"] for entry in history(workdir)] == [1, 2]
  _, resumed = final_params(workdir)
  _, single = final_params(reference_run)
  assert max_difference(resumed, single) < PARAMETER_TOLERANCE


def last_line(text: str) -> str:
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else ""


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.parametrize("killed", [1, 0])
def test_killing_one_process_stops_the_other_with_a_clear_error(tmp_path, prebuilt_flags,
                                                                 reference_run, killed):
  """The survivor stops with our error (exit 3, its last line) within the bound, and a rerun
  resumes."""
  workdir = str(tmp_path / "prebuilt")
  processes = start_pair(workdir, *prebuilt_flags)
  first_step = wait_for_checkpoint(processes, workdir)
  _kill(processes[killed])
  survivor = processes[1 - killed]
  killed_at = time.monotonic()
  try:
    code = survivor.wait(timeout=STOP_AFTER_KILL_S)
  except subprocess.TimeoutExpired:
    _kill(survivor)
    pytest.fail(f"process {1 - killed} still ran {STOP_AFTER_KILL_S} s after process {killed} "
                f"was killed:\n{log_of(survivor)[-3000:]}")
  stopped_after = time.monotonic() - killed_at
  text = log_of(survivor)
  assert code != 0, text[-3000:]
  if committed_steps(workdir)[-1] != first_step:
    pytest.skip("the run finished its last step before the kill landed")
  assert code == 3, text[-3000:]
  assert last_line(text).startswith(f"error: process {1 - killed} of 2 lost contact with the "
                                    "other processes"), text[-3000:]
  assert "check the other processes' logs" in text.lower()
  assert stopped_after < STOP_AFTER_KILL_S
  if killed == 0:
    return  # resuming after one process was killed is checked once, below
  rerun = start_pair(workdir, *prebuilt_flags, tag="rerun")
  finish(rerun)
  assert f"Resumed from step {first_step}" in log_of(rerun[1])
  _, resumed = final_params(workdir)
  _, single = final_params(reference_run)
  assert max_difference(resumed, single) < PARAMETER_TOLERANCE


@pytest.mark.slow
@pytest.mark.stack
def test_unreachable_coordinator_is_a_clear_error_within_the_timeout(tmp_path):
  """Process 1 alone: nobody listens on the port, so start-up gives up after its timeout."""
  workdir = str(tmp_path / "alone")
  started = time.monotonic()
  process = start(workdir, process_id=1, port=free_port(), LVM_JAX_INIT_TIMEOUT_S="5")
  try:
    code = process.wait(timeout=RUN_TIMEOUT_S)
  finally:
    _kill(process)
  text = log_of(process)
  assert code == 2, text[-3000:]
  assert "error: process 1 of 2 could not reach the coordinator at 127.0.0.1:" in text, text
  assert "LVM_JAX_INIT_TIMEOUT_S" in text
  assert time.monotonic() - started < RUN_TIMEOUT_S


@pytest.mark.slow
@pytest.mark.stack
@pytest.mark.parametrize("killed", [0, 1])
def test_a_killed_peer_ends_the_other_with_our_line_at_once(tmp_path, killed):
  """Two probes exchange collectives; one is SIGKILLed. The other ends with exit 3 and our
  line as its last (the watchdog connection drops before JAX's coordination service
  notices), within PROBE_STOP_AFTER_KILL_S."""
  processes = multihost_probe.start_pair("busy", str(tmp_path / "busy"))
  try:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not all("up" in multihost_probe.log_of(p).split() for p in processes):
      assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
          [multihost_probe.log_of(p)[-2000:] for p in processes]
      time.sleep(0.1)
    _kill(processes[killed])
    killed_at = time.monotonic()
    survivor = processes[1 - killed]
    code = survivor.wait(timeout=PROBE_STOP_AFTER_KILL_S)
    stopped_after = time.monotonic() - killed_at
  finally:
    for process in processes:
      _kill(process)
  text = multihost_probe.log_of(survivor)
  assert code == 3, text[-3000:]
  # Whichever notices first, the watchdog's dropped socket or the failed collective, the
  # line is ours and the last one (JAX's later log lines go nowhere).
  assert last_line(text).startswith(f"error: process {1 - killed} of 2 lost contact with the "
                                    "other processes ("), text[-3000:]
  assert stopped_after < PROBE_STOP_AFTER_KILL_S


@pytest.mark.slow
@pytest.mark.stack
def test_a_failure_in_process_zeros_shared_work_stops_the_other_within_10_s(tmp_path):
  """Process 0's shared work raises after 2 s; the other, waiting for it, stops with exit 3
  and a line naming process 0's error, long before any barrier timeout."""
  processes = multihost_probe.start_pair("shared_work", str(tmp_path / "shared"))
  ended = [None, None]
  deadline = time.monotonic() + RUN_TIMEOUT_S
  try:
    while None in ended and time.monotonic() < deadline:
      for index, process in enumerate(processes):
        if ended[index] is None and process.poll() is not None:
          ended[index] = time.time()
      time.sleep(0.05)
  finally:
    for process in processes:
      _kill(process)
  first, second = (multihost_probe.log_of(p) for p in processes)
  assert None not in ended, (first[-2000:], second[-2000:])
  failed_at = float(first.split("failing at ")[1].split()[0])
  assert processes[0].returncode == 2, first[-2000:]  # its own error: bad input
  assert last_line(first) == ("error: process 0 of 2: the shared corpus could not be written: "
                              "disk says no")
  assert processes[1].returncode == 3, second[-2000:]
  # Through the key-value entry, or process 0's watchdog message if that comes first.
  line = last_line(second)
  assert line.startswith("error: process 1 of 2 stopped") and "process 0 failed" in line, line
  assert "the shared corpus could not be written: disk says no" in line, line
  assert ended[1] - failed_at < 10


@pytest.mark.slow
@pytest.mark.stack
def test_a_warm_compilation_cache_computes_what_a_cold_one_does(tmp_path):
  """The jax 0.5.0 NaN: a two-process step with donated parameters, loaded from the
  persistent cache, corrupted memory (crash or inf). One cold run, then warm runs from the
  same cache: all use the cache and compute the same values, on both stacks (on jax < 0.10,
  backend.donate_argnums keeps the cached program from donating). With the parameters
  donated, 7 of 12 warm runs crashed on jax 0.5.0, so five warm runs all passing would
  happen by chance under the old behaviour about once in 80 times (0.42 ** 5)."""
  cache = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  printed = []
  for run in ("cold", "warm1", "warm2", "warm3", "warm4", "warm5"):
    processes = multihost_probe.start_pair("step", str(tmp_path / run), **cache)
    try:
      codes = [process.wait(timeout=RUN_TIMEOUT_S) for process in processes]
    finally:
      for process in processes:
        _kill(process)
    logs = [multihost_probe.log_of(process) for process in processes]
    assert codes == [0, 0], [log[-2000:] for log in logs]
    printed += [[line for line in log.splitlines() if line.startswith("cache ")][-1]
                for log in logs]
  assert len(set(printed)) == 1, printed
  assert printed[0].startswith("cache True loss "), printed
  assert "inf" not in printed[0] and "nan" not in printed[0]
  assert os.listdir(tmp_path / "cache"), "the cache stayed empty"


def test_barrier_timeout_grows_with_the_work(monkeypatch):
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import synthetic  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("LVM_JAX_BARRIER_TIMEOUT_S", raising=False)
  small = multihost.barrier_timeout(synthetic.expected_seconds(num_articles=80, dim=32))
  large = multihost.barrier_timeout(synthetic.expected_seconds(num_articles=200_000, dim=768))
  assert small == multihost.DEFAULT_TIMEOUTS["barrier"]
  assert large > 10 * small
  monkeypatch.setenv("LVM_JAX_BARRIER_TIMEOUT_S", "42")
  assert multihost.barrier_timeout(1e6) == 42


# --- lvm_jax.distributed.multihost's pieces, in this process (no second process needed) ---


def test_timeouts_come_from_the_environment_and_bad_values_name_the_variable(monkeypatch):
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top
  for variable in multihost.TIMEOUT_ENV.values():
    monkeypatch.delenv(variable, raising=False)
  assert multihost.timeouts() == multihost.Timeouts(**multihost.DEFAULT_TIMEOUTS)
  monkeypatch.setenv("LVM_JAX_HEARTBEAT_TIMEOUT_S", "7")
  assert multihost.timeouts().heartbeat == 7
  for bad in ("0", "ten", "-3"):
    monkeypatch.setenv("LVM_JAX_BARRIER_TIMEOUT_S", bad)
    with pytest.raises(multihost.MultihostError, match="LVM_JAX_BARRIER_TIMEOUT_S"):
      multihost.timeouts()


def test_coordinator_checks_before_jax_starts():
  """Process 0 finds its port taken; process 1 finds nobody listening: both say so at once."""
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(multihost.MultihostError, match=f"process 0 of 2 could not start the "
                       f"coordinator on 127.0.0.1:{port} \\(port {port} is taken"):
      peer_watchdog.wait_for_coordinator(f"127.0.0.1:{port}", 0, 2, 5)
    assert peer_watchdog.wait_for_coordinator(f"127.0.0.1:{port}", 1, 2, 5) < 5
  started = time.monotonic()
  with pytest.raises(multihost.MultihostError, match="process 1 of 2 could not reach the "
                     "coordinator at 127.0.0.1:.* within 1 s"):
    peer_watchdog.wait_for_coordinator(f"127.0.0.1:{free_port()}", 1, 2, 1)
  assert time.monotonic() - started < 10
  with pytest.raises(multihost.MultihostError, match="is not host:port"):
    peer_watchdog.wait_for_coordinator("host0", 1, 2, 1)


def test_single_process_is_untouched():
  """One process: barriers return at once, errors are not rewritten, the check passes."""
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top
  assert not multihost.is_multiprocess()
  multihost.barrier("nothing to wait for")
  assert multihost.on_process_zero("work", lambda: 41 + 1) == 42
  assert multihost.explain(RuntimeError("Gloo all-reduce failed")) is None
  multihost.assert_same_on_every_process({"a": np.arange(3)}, "anything")
  with pytest.raises(ZeroDivisionError):
    with multihost.failures_end_the_process():
      raise ZeroDivisionError()
