"""The network side of a multi-process run, below multihost.py: reaching the coordinator
(or finding its port taken), JAX's coordination client, and the peer watchdog, a TCP
connection between process 0 and each other process so that a dead peer is reported in
this project's words, not JAX's (multihost.initialize starts it)."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Dict

from lvm_jax.cli import EXIT_ENVIRONMENT, UserFacingError, exit_with_last_words

TIMEOUT_ENV = {"init": "LVM_JAX_INIT_TIMEOUT_S", "heartbeat": "LVM_JAX_HEARTBEAT_TIMEOUT_S",
               "barrier": "LVM_JAX_BARRIER_TIMEOUT_S"}


class MultihostError(UserFacingError, RuntimeError):
  """A process of a multi-process run cannot reach, or lost, the others."""


def coordination_client():
  """JAX's coordination-service client (its key-value store) of this process."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


def unreachable(address: str, process_id: int, num_processes: int, seconds: int,
                 reason: str) -> MultihostError:
  role = "start the coordinator on" if process_id == 0 else "reach the coordinator at"
  within = f" within {seconds} s" if seconds else ""
  return MultihostError(
      f"process {process_id} of {num_processes} could not {role} {address}{within} "
      f"({reason}). Check: every process was started with the same JAX_COORDINATOR_ADDRESS "
      "and JAX_NUM_PROCESSES and its own JAX_PROCESS_ID; process 0 runs and its port is free "
      f"and reachable from this host (firewall, host name); raise {TIMEOUT_ENV['init']} if the "
      "processes start far apart.")


def wait_for_coordinator(address: str, process_id: int, num_processes: int,
                          seconds: int) -> float:
  """Process 0: its port is free. Others: it accepts connections within `seconds`.

  Returns the seconds spent waiting.
  """
  host, _, port_text = address.rpartition(":")
  host = host.strip("[]")
  try:
    port = int(port_text)
  except ValueError:
    raise MultihostError(f"JAX_COORDINATOR_ADDRESS={address!r} is not host:port. Fix: set it to "
                         "process 0's host and a free port, e.g. host0:12345.") from None
  if process_id == 0:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
      probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
      try:
        probe.bind(("", port))
      except OSError as error:
        raise unreachable(address, process_id, num_processes, 0,
                           f"port {port} is taken: {error.strerror}") from error
    return 0.0
  started = time.monotonic()
  last_error = "no answer"
  while time.monotonic() - started < seconds:
    try:
      with socket.create_connection((host, port), timeout=2):
        return time.monotonic() - started
    except OSError as error:
      last_error = error.strerror or type(error).__name__
      time.sleep(0.5)
  raise unreachable(address, process_id, num_processes, seconds,
                     f"the port did not accept a connection: {last_error}")


class PeerWatchdog:
  """A TCP connection between process 0 and each other process, watched by a thread.

  JAX notices a dead peer only through its coordination service, and then ends
  the process from C++ with its own message (a Python callback cannot replace
  it: jaxlib cannot pass the status to Python). The kernel closes a dead
  process's sockets at once, so the reader here sees the loss first and prints
  this project's line. A process that ends on purpose says so first: `bye` (a
  normal end) or `failed <its error line>`, which the others repeat.
  """

  def __init__(self):
    self.peers: Dict[int, socket.socket] = {}
    self.lock = threading.Lock()
    self.leaving = False
    self.failing = False  # this process is failing: its own error line comes, not a peer's
    self.low_fds: list = []

  def reserve(self, num_processes: int) -> None:
    """Process 0, before JAX opens its sockets: the lowest free descriptors, for the
    watchdog's. At exit the kernel closes descriptors in increasing order, so a killed
    process 0's watchdog connections drop before the coordination service's do."""
    self.low_fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(num_processes - 1)]

  def start(self, process_id: int, num_processes: int, address: str, seconds: int) -> None:
    self.process_id, self.num_processes = process_id, num_processes
    key = "lvm_jax.watchdog"
    if process_id == 0:
      server = socket.create_server(("", 0))
      host = address.rpartition(":")[0].strip("[]")
      coordination_client().key_value_set(key, f"{host}:{server.getsockname()[1]}")
      threading.Thread(target=self._accept, args=(server, num_processes - 1), daemon=True,
                       name="lvm_jax-watchdog-accept").start()
    else:
      host, _, port = str(coordination_client().blocking_key_value_get(key, seconds * 1000)).rpartition(":")
      peer = socket.create_connection((host, int(port)), timeout=seconds)
      peer.settimeout(None)
      peer.sendall(f"{process_id}\n".encode())
      self._watch(0, peer)

  def _accept(self, server: socket.socket, count: int) -> None:
    for _ in range(count):
      peer, _ = server.accept()
      if self.low_fds:
        low = self.low_fds.pop(0)
        os.dup2(peer.fileno(), low)
        peer.close()
        peer = socket.socket(fileno=low)
      index = b""
      while not index.endswith(b"\n"):
        byte = peer.recv(1)
        if not byte:
          break
        index += byte
      self._watch(int(index or b"-1"), peer)
    server.close()

  def _watch(self, index: int, peer: socket.socket) -> None:
    with self.lock:
      self.peers[index] = peer
    threading.Thread(target=self._read, args=(index, peer), daemon=True,
                     name=f"lvm_jax-watchdog-{index}").start()

  def _read(self, index: int, peer: socket.socket) -> None:
    said = b""
    while True:
      try:
        chunk = peer.recv(4096)
      except OSError:
        chunk = b""
      if not chunk:
        break
      said += chunk
    words = said.decode(errors="replace").strip()
    if words.startswith("bye") or self.leaving or self.failing:
      return
    if words.startswith("failed "):
      message = (f"process {self.process_id} of {self.num_processes} stopped because process "
                 f"{index} failed: {words[len('failed '):]}")
    else:
      message = (f"process {self.process_id} of {self.num_processes} lost contact with the other "
                 f"processes (process {index} ended without a word: killed, out of memory or "
                 "crashed). Check the other processes' logs for an earlier error and that they "
                 "all still run; rerun every process to resume from the last checkpoint.")
    self.leave(f"failed {message}")
    exit_with_last_words(message, EXIT_ENVIRONMENT)

  def leave(self, words: str) -> None:
    """Tells every peer why this process ends (`bye` or `failed ...`), once."""
    with self.lock:
      if self.leaving:
        return
      self.leaving = True
      peers = list(self.peers.values())
    for peer in peers:
      try:
        peer.sendall(words.replace("\n", " ").encode() + b"\n")
        peer.shutdown(socket.SHUT_WR)
      except OSError:
        pass
