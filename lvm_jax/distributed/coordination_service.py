"""JAX's coordination service in a process of its own, for jax < 0.10.

  python -m lvm_jax.distributed.coordination_service --bind=[::]:PORT --num_processes=N \
      --heartbeat_interval_s=I --max_missing_heartbeats=B --grace_s=G

On jax 0.5.0, process 0 hosts the coordination service. When process 0 is killed,
the service dies with it, and JAX's C++ error poll in every other process ends that
process at once, with JAX's message (exit 134). It wins the race against our
watchdog's clear line 9 times in 10 (docs/multihost.md). Here process 0 starts the
service in a child process, in a session of its own, so that a kill of process 0
(or of its process group) leaves the service up. The others' watchdogs then see
process 0's sockets drop and speak first.

The child holds the read end of a pipe whose write end only process 0 holds. EOF
means process 0 ended: the service stays up `grace_s` seconds more (long enough for
the others to notice and say why), then the child exits. A normal end says `bye`
first (ServiceProcess.shutdown, called by jax.distributed.shutdown at exit), and the
child then shuts the service down as JAX shuts down its own, and exits.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from absl import app, flags

from lvm_jax import cli

READY = "serving"
# How long process 0 waits for the child to serve before it gives up.
START_TIMEOUT_S = 60


class ServiceProcess:
  """The handle jax.distributed keeps as its `service`: shutdown() ends the child."""

  def __init__(self, process: subprocess.Popen):
    self.process = process

  def shutdown(self) -> None:
    if self.process.stdin is None or self.process.stdin.closed:
      return
    try:
      self.process.stdin.write(b"bye\n")
      self.process.stdin.close()
    except OSError:
      pass
    try:
      self.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.process.kill()


def start(bind_address: str, num_processes: int, heartbeat_interval_s: int,
          max_missing_heartbeats: int, grace_s: int) -> ServiceProcess:
  """Starts the service in a child process and returns once it serves."""
  command = [sys.executable, "-m", "lvm_jax.distributed.coordination_service", f"--bind={bind_address}",
             f"--num_processes={num_processes}", f"--heartbeat_interval_s={heartbeat_interval_s}",
             f"--max_missing_heartbeats={max_missing_heartbeats}", f"--grace_s={grace_s}"]
  process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             start_new_session=True)
  # select bounds the wait: a child that hangs before its first line never blocks readline.
  ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
  line = process.stdout.readline() if ready else b""
  if line.strip() == READY.encode():
    process.stdout.close()
    return ServiceProcess(process)
  process.kill()
  raise RuntimeError(f"the coordination service at {bind_address} did not start within "
                     f"{START_TIMEOUT_S} s (exit code {process.poll()}, last line {line!r})")


def serve(bind_address: str, num_processes: int, heartbeat_interval_s: int,
          max_missing_heartbeats: int, grace_s: int) -> None:
  """Serves until process 0 ends (EOF on stdin), then `grace_s` more unless it said bye."""
  from jax._src.lib import xla_extension  # pylint: disable=g-import-not-at-top
  service = xla_extension.get_distributed_runtime_service(
      bind_address, num_processes, heartbeat_interval=heartbeat_interval_s,
      max_missing_heartbeats=max_missing_heartbeats)
  print(READY, flush=True)
  said = sys.stdin.buffer.read()  # blocks until process 0 closes the pipe or dies
  if b"bye" in said:
    # Every client has passed jax.distributed.shutdown's barrier, as when JAX stops its own
    # service: shut down the same way. An abrupt exit resets the sockets of clients still
    # polling for errors, and JAX aborts such a client (2 runs in 30 under load).
    service.shutdown()
  else:
    time.sleep(grace_s)
  # os._exit skips the destructor, which after a death could wait on clients that are gone.
  os._exit(0)  # pylint: disable=protected-access


def define_flags() -> None:
  flags.DEFINE_string("bind", None, "Address to serve on, e.g. [::]:12345 (required).")
  flags.DEFINE_integer("num_processes", None, "Processes of the job (required).")
  flags.DEFINE_integer("heartbeat_interval_s", 10, "Seconds between heartbeats.")
  flags.DEFINE_integer("max_missing_heartbeats", 10, "Missed heartbeats before a process "
                       "counts as dead.")
  flags.DEFINE_integer("grace_s", 30, "Seconds to keep serving after process 0 died.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.bind or not flags.FLAGS.num_processes:
    raise app.UsageError("--bind and --num_processes are required (multihost.initialize "
                         "passes them; this is not meant to be run by hand).")
  serve(flags.FLAGS.bind, flags.FLAGS.num_processes, flags.FLAGS.heartbeat_interval_s,
        flags.FLAGS.max_missing_heartbeats, flags.FLAGS.grace_s)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
