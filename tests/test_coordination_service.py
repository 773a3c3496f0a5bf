"""The coordination service in a child process (jax < 0.10): it serves, ends at once on a
normal shutdown, and outlives a killed process 0 by its grace only."""

import os
import socket
import subprocess
import sys
import time

import jax
import pytest

from lvm_jax.distributed import coordination_service

pytestmark = pytest.mark.skipif(
    tuple(int(part) for part in jax.__version__.split(".")[:2]) >= (0, 10),
    reason="only jax < 0.10 runs the service in a child process (multihost.initialize)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def accepts(port: int) -> bool:
  try:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
      return True
  except OSError:
    return False


def gone(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  with open(f"/proc/{pid}/stat") as stat:  # a zombie not yet reaped has ended too
    return stat.read().split(")")[-1].split()[0] == "Z"


def test_a_normal_shutdown_ends_the_service_at_once():
  port = free_port()
  service = coordination_service.start(f"[::]:{port}", 2, heartbeat_interval_s=1,
                                       max_missing_heartbeats=5, grace_s=60)
  assert accepts(port)
  started = time.monotonic()
  service.shutdown()
  assert service.process.returncode == 0
  assert time.monotonic() - started < 10  # not the 60 s grace


def test_the_service_outlives_a_killed_process_0_by_its_grace():
  port = free_port()
  grace_s = 4
  # The child inherits the parent's stderr: not a pipe the test reads to its end.
  parent = subprocess.Popen(
      [sys.executable, "-c",
       "import os, signal\n"
       "from lvm_jax.distributed import coordination_service\n"
       f"service = coordination_service.start('[::]:{port}', 2, 1, 5, {grace_s})\n"
       "print(service.process.pid, flush=True)\n"
       "os.kill(os.getpid(), signal.SIGKILL)\n"],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO))
  child = int(parent.stdout.readline())
  assert parent.wait(timeout=120) == -9
  killed_at = time.monotonic()
  assert accepts(port) and not gone(child)  # serving on after process 0 died
  while not gone(child) and time.monotonic() - killed_at < grace_s + 20:
    time.sleep(0.2)
  assert gone(child)
  assert grace_s - 1 < time.monotonic() - killed_at < grace_s + 20
