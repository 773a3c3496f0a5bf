"""Several processes, one run: start-up, barriers, work done once, and failures that end fast.

A launcher sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID;
`backend.initialize` then calls `initialize` here before anything touches a
device. Every wait between processes is bounded, so a dead or unreachable
process ends the others with an error that names it instead of a hang. The
bounds, in seconds, come from the environment (a launcher or test sets them):

  LVM_JAX_INIT_TIMEOUT_S       reaching the coordinator (process 0) at start   default 300
  LVM_JAX_HEARTBEAT_TIMEOUT_S  silence after which a process counts as dead    default 100
  LVM_JAX_BARRIER_TIMEOUT_S    waiting for the others at a barrier, for work     default: in
                               done once by process 0, or for a checkpoint's     proportion to
                               commit                                            the work, >= 300

Work done once (`on_process_zero`) that fails on process 0 is posted to the
coordination service's key-value store, so the others stop at once with
process 0's error instead of waiting out the barrier. Decisions that end the
run (early stopping, a non-finite loss) are process 0's, broadcast (`agree`),
so every process stops at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import os
import time
import traceback
import zlib
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

from absl import logging

from lvm_jax import cli
from lvm_jax.distributed.peer_watchdog import (TIMEOUT_ENV, MultihostError, PeerWatchdog,
                                   coordination_client, unreachable, wait_for_coordinator)
from lvm_jax.cli import EXIT_ENVIRONMENT, USER_ERRORS, UserFacingError

DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
DEFAULT_TIMEOUTS = {"init": 300, "heartbeat": 100, "barrier": 300}
# Unless LVM_JAX_BARRIER_TIMEOUT_S is set, a wait for work of an expected duration gives up
# after this many times that duration (and never before DEFAULT_TIMEOUTS["barrier"]): ample
# for a slow or loaded host, and a stuck process 0 still ends the run in proportion.
BARRIER_SLACK = 10
# Exit status of a process that stops because the run across processes failed (an
# environment fault: cli.EXIT_ENVIRONMENT).
EXIT_MULTIHOST_FAILURE = EXIT_ENVIRONMENT
# jax < 0.10: how long process 0's coordination service outlives a process 0 that ended
# without `bye` (killed, or an error exit). The others' watchdogs speak within a second or
# two; after this, JAX's own poll ends any process still up. It also holds the port that long.
SERVICE_GRACE_S = 10
# How often a process waiting for process 0's work looks at the key-value store.
_POLL_S = 0.25
# Words in XLA / Gloo / coordination-service errors that mean another process is gone or stuck.
_PEER_FAILURE_MARKERS = ("gloo", "heartbeat", "barrier", "coordination", "deadline_exceeded",
                         "unavailable", "connection reset", "connection refused",
                         "distributed service", "task is set to error")

T = TypeVar("T")
_BARRIER_USES: Dict[str, int] = {}


@dataclasses.dataclass(frozen=True)
class Timeouts:
  init: int
  heartbeat: int
  barrier: int


def timeouts() -> Timeouts:
  """The bounds from LVM_JAX_*_TIMEOUT_S, else the defaults; whole seconds >= 1."""
  values = {}
  for name, variable in TIMEOUT_ENV.items():
    text = os.environ.get(variable, "").strip()
    if not text:
      values[name] = DEFAULT_TIMEOUTS[name]
      continue
    try:
      values[name] = int(text)
    except ValueError:
      values[name] = 0
    if values[name] < 1:
      raise MultihostError(f"environment {variable}={text!r} is not a whole number of seconds "
                           f">= 1. Fix: set it to e.g. {DEFAULT_TIMEOUTS[name]}, or unset it.")
  return Timeouts(**values)


def barrier_timeout(expected_s: float = 0.0) -> int:
  """Seconds to wait for work expected to take `expected_s` on one host.

  LVM_JAX_BARRIER_TIMEOUT_S when set; else BARRIER_SLACK x expected_s, at least
  the default (300 s).
  """
  if os.environ.get(TIMEOUT_ENV["barrier"], "").strip():
    return timeouts().barrier
  return max(DEFAULT_TIMEOUTS["barrier"], int(math.ceil(BARRIER_SLACK * expected_s)))


def requested() -> bool:
  """Whether the launcher asked for a multi-process run (all three JAX_* variables set)."""
  return all(os.environ.get(variable) for variable in DISTRIBUTED_ENV)


def process_index() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index()


def is_process_0() -> bool:
  """The one process-0 test: process 0 writes the files every process would write alike,
  holds the workdir lock and shows progress."""
  return process_index() == 0


def process_count() -> int:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def is_multiprocess() -> bool:
  return process_count() > 1


def _where() -> str:
  return f"process {process_index()} of {process_count()}"


def initialize() -> None:
  """jax.distributed.initialize from the JAX_* variables, bounded, with CPU collectives on.

  Call after the platform is chosen and before any computation. jax 0.5.0's
  public initialize takes no heartbeat setting, so there the same call goes
  through its State.initialize, which does (interval x missed beats), and process
  0 runs the coordination service in a child process
  (_initialize_with_a_separate_service).
  """
  import jax  # pylint: disable=g-import-not-at-top
  address = os.environ["JAX_COORDINATOR_ADDRESS"]
  try:
    num_processes, process_id = (int(os.environ[v]) for v in DISTRIBUTED_ENV[1:])
  except ValueError as error:
    raise MultihostError(f"JAX_NUM_PROCESSES={os.environ['JAX_NUM_PROCESSES']!r} and "
                         f"JAX_PROCESS_ID={os.environ['JAX_PROCESS_ID']!r} must be integers. Fix: "
                         "set them as launch/multihost_gpu.sh does.") from error
  if not 0 <= process_id < num_processes:
    raise MultihostError(f"JAX_PROCESS_ID={process_id} is not in 0..{num_processes - 1} "
                         f"(JAX_NUM_PROCESSES={num_processes}). Fix: give every process its own "
                         "id in that range.")
  bounds = timeouts()
  # Cross-process collectives on CPU (jax 0.5.0 has none by default; newer JAX defaults to gloo).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  arguments = dict(coordinator_address=address, num_processes=num_processes,
                   process_id=process_id, initialization_timeout=bounds.init)
  public = inspect.signature(jax.distributed.initialize).parameters
  if "heartbeat_timeout_seconds" in public:
    start = functools.partial(jax.distributed.initialize,
                              heartbeat_timeout_seconds=bounds.heartbeat)
  else:
    interval = max(1, min(10, bounds.heartbeat // 5))
    beats = max(2, -(-bounds.heartbeat // interval))
    start = functools.partial(_initialize_with_a_separate_service,
                              heartbeat_interval=interval, missing_heartbeats=beats,
                              grace_s=SERVICE_GRACE_S)
  # JAX aborts the process (no Python error) when the coordinator stays out of reach, so
  # first wait for its port here, where the message can say what to check.
  waited = wait_for_coordinator(address, process_id, num_processes, bounds.init)
  if process_id == 0:
    _WATCHDOG.reserve(num_processes)
  arguments["initialization_timeout"] = max(bounds.init - int(waited), 10)
  logging.info("Process %d of %d: connecting to the coordinator at %s (timeout %d s, heartbeat "
               "timeout %d s). If JAX stops this process with DEADLINE_EXCEEDED, check that every "
               "process has the same JAX_NUM_PROCESSES and its own JAX_PROCESS_ID.", process_id,
               num_processes, address, arguments["initialization_timeout"], bounds.heartbeat)
  try:
    start(**arguments)
  except Exception as error:  # XLA raises its own runtime error types, differing by version
    raise unreachable(address, process_id, num_processes, bounds.init,
                       _first_line(error)) from error
  _WATCHDOG.start(process_id, num_processes, address, bounds.init)


def _initialize_with_a_separate_service(*, coordinator_address: str, num_processes: int,
                                        process_id: int, initialization_timeout: int,
                                        heartbeat_interval: int, missing_heartbeats: int,
                                        grace_s: int) -> None:
  """jax < 0.10: jax.distributed's State.initialize (which takes the heartbeat settings),
  with process 0's coordination service in a child process (lvm_jax/distributed/coordination_service.py),
  so that a killed process 0 does not take the service down before the others' watchdogs
  have said so."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  from lvm_jax.distributed import coordination_service  # pylint: disable=g-import-not-at-top
  arguments = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                   process_id=process_id, initialization_timeout=initialization_timeout,
                   service_heartbeat_interval_seconds=heartbeat_interval,
                   service_max_missing_heartbeats=missing_heartbeats,
                   client_heartbeat_interval_seconds=heartbeat_interval,
                   client_max_missing_heartbeats=missing_heartbeats)
  if process_id != 0:
    distributed.global_state.initialize(**arguments)
    return
  bind = os.environ.get("JAX_COORDINATOR_BIND_ADDRESS",
                        "[::]:" + coordinator_address.rsplit(":", 1)[1])
  service = coordination_service.start(bind, num_processes, heartbeat_interval,
                                       missing_heartbeats, grace_s)
  extension = distributed.xla_extension
  in_process = extension.get_distributed_runtime_service
  # State.initialize starts the service itself on process 0; hand it the child's handle.
  extension.get_distributed_runtime_service = lambda *args, **kwargs: service
  try:
    distributed.global_state.initialize(**arguments)
  except BaseException:
    service.shutdown()
    raise
  finally:
    extension.get_distributed_runtime_service = in_process


_WATCHDOG = PeerWatchdog()


def finish() -> None:
  """Call when this process's work ended normally: the others then take its exit calmly."""
  _WATCHDOG.leave("bye")


def barrier(name: str) -> None:
  """Waits until every process reaches barrier `name` (at most LVM_JAX_BARRIER_TIMEOUT_S).

  Uses the coordination service, not a collective, so a long wait (process 0
  generating data) never trips a collective library's own connect timeout.
  """
  if not is_multiprocess():
    return
  from orbax.checkpoint import multihost as orbax_multihost  # pylint: disable=g-import-not-at-top
  seconds = timeouts().barrier
  key = _key(name)
  try:
    orbax_multihost.get_barrier_sync_fn()(key=key, timeout_ms=seconds * 1000)
  except Exception as error:  # XLA raises its own runtime error types, differing by version
    raise MultihostError(
        f"{_where()} waited at barrier {name!r} for the other processes and gave up "
        f"({_first_line(error)}). Check the other processes' logs for an earlier error; a "
        f"process that died, was killed or is stuck stops them all. Raise "
        f"{TIMEOUT_ENV['barrier']} (now {seconds} s) if one of them is only slow.") from error


def _key(name: str) -> str:
  """A key (or barrier id) that serves once; every process uses names in the same order."""
  _BARRIER_USES[name] = _BARRIER_USES.get(name, 0) + 1
  return f"lvm_jax.{name.replace(' ', '_')}.{_BARRIER_USES[name]}"


_DONE = "done"
_FAILED = "failed: "


def on_process_zero(name: str, work: Callable[[], T], expected_s: float = 0.0) -> Optional[T]:
  """Runs `work` on process 0 while the others wait for it, then they read its files.

  Process 0 posts the outcome under a key of the coordination service: the others go on
  when it reads done, and stop within a second with process 0's error when it failed.
  They wait at most `barrier_timeout(expected_s)`. Returns work's result on process 0
  and None on the others.
  """
  if not is_multiprocess():
    return work()
  key = _key(name)
  if is_process_0():
    try:
      result = work()
    except BaseException as error:
      _WATCHDOG.failing = True
      coordination_client().key_value_set(key, _FAILED + _first_line(error))
      raise
    coordination_client().key_value_set(key, _DONE)
    return result
  seconds = barrier_timeout(expected_s)
  outcome = _wait_for_key(key, seconds, name)
  if outcome.startswith(_FAILED):
    raise MultihostError(
        f"{_where()} stopped: process 0 failed at {name!r} ({outcome[len(_FAILED):]}). Fix "
        "what process 0's own error line says, then rerun every process.")
  return None


def _wait_for_key(key: str, seconds: int, name: str) -> str:
  """The value of `key` once set; MultihostError after `seconds` or when the service fails."""
  deadline = time.monotonic() + seconds
  while True:
    try:
      return str(coordination_client().blocking_key_value_get(key, int(_POLL_S * 1000)))
    except Exception as error:  # XLA raises its own runtime error types, differing by version
      if "deadline" not in str(error).lower() or time.monotonic() > deadline:
        raise MultihostError(
            f"{_where()} waited for process 0 to finish {name!r} and gave up "
            f"({_first_line(error)}). Check process 0's log for an earlier error; raise "
            f"{TIMEOUT_ENV['barrier']} (now {seconds} s) if it is only slow.") from error


def agree(value: T, what: str) -> T:
  """Process 0's `value` (a bool or int) on every process: one decision that all act on.

  A tiny collective; call it at the same point on every process.
  """
  if not is_multiprocess():
    return value
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  decided = multihost_utils.broadcast_one_to_all(np.asarray(value, np.int64))
  decided = type(value)(np.asarray(decided).item())
  if decided != value:
    logging.warning("%s: %s is %r here and %r on process 0; process 0 decides.", _where(), what,
                    value, decided)
  return decided


def assert_same_on_every_process(tree: Any, what: str) -> None:
  """Raises MultihostError unless every process holds the same bytes in `tree` (host arrays).

  One CRC per process is compared, not the arrays, so the check costs one tiny collective.
  """
  if not is_multiprocess():
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  checksum = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    checksum = zlib.crc32(np.ascontiguousarray(np.asarray(leaf)).tobytes(), checksum)
  checksums = np.asarray(multihost_utils.process_allgather(np.asarray([checksum], np.uint32)))
  if len(set(checksums.reshape(-1).tolist())) > 1:
    raise MultihostError(
        f"{_where()}: the processes hold different {what} (checksums by process: "
        f"{checksums.reshape(-1).tolist()}). Check that every process reads the same workdir "
        "on a filesystem all hosts see (WORKDIR in launch/multihost_gpu.sh), and the same data "
        "files.")


def explain(error: BaseException) -> Optional[MultihostError]:
  """A MultihostError naming this process for an error that means another process failed."""
  if isinstance(error, MultihostError):
    return error
  if isinstance(error, UserFacingError) or not is_multiprocess():
    return None
  text = f"{type(error).__name__} {error}".lower()
  if not any(marker in text for marker in _PEER_FAILURE_MARKERS):
    return None
  seconds = timeouts()
  return MultihostError(
      f"{_where()} lost contact with the other processes ({_first_line(error)}). Most likely "
      "another process died or was killed: check the other processes' logs for an earlier "
      "error and that they all still run; across hosts, check the network between them. "
      f"Rerun every process to resume from the last checkpoint (timeouts: "
      f"{TIMEOUT_ENV['heartbeat']}={seconds.heartbeat} s, "
      f"{TIMEOUT_ENV['barrier']}={seconds.barrier} s).")


@contextlib.contextmanager
def failures_end_the_process(verbose: bool = False) -> Iterator[None]:
  """In a multi-process run, an error prints `error: process i of n: ...` and exits at once.

  Exiting normally would enter JAX's shutdown barrier, which waits for the
  processes that are gone; single-process runs re-raise unchanged.
  """
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    try:
      multi = is_multiprocess()
    except Exception:  # pylint: disable=broad-except  (JAX itself failed to start)
      multi = False
    if not multi:
      raise
    explained = explain(error)
    if explained is not None:
      message, status = str(explained), EXIT_MULTIHOST_FAILURE
    else:
      message = f"{_where()}: {cli.message(error)}"
      status = cli.exit_status(error) if isinstance(error, USER_ERRORS) else 1
    if verbose or status == 1:
      traceback.print_exc()
    _WATCHDOG.leave(f"failed {message}")
    cli.exit_with_last_words(message, status)


def _first_line(error: BaseException) -> str:
  lines = [line for line in str(error).splitlines() if line.strip()]
  return f"{type(error).__name__}: {lines[0][:300] if lines else ''}"
