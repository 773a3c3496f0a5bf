"""One workdir, one writer: an OS file lock held for the whole run.

flock is released by the kernel when its process dies, so a run killed with
kill -9 never blocks the next one; the holder's pid and host are written into
the lock file only to name it in the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Iterator

from lvm_jax.cli import UserFacingError
from lvm_jax.workdir import Workdir


class WorkdirLockedError(UserFacingError):
  """Another run holds the workdir."""


@contextlib.contextmanager
def hold(workdir: Workdir) -> Iterator[None]:
  """Holds workdir.lock for the block; raises WorkdirLockedError at once if another run has it."""
  try:
    os.makedirs(workdir.root, exist_ok=True)
    handle = open(workdir.lock, "a+")
  except OSError as error:
    raise UserFacingError(f"{workdir.root}: cannot write the workdir ({error.strerror}). Fix: "
                          "pass a --workdir you can write to, or fix its permissions.") from error
  try:
    try:
      fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or "an unknown process"
      raise WorkdirLockedError(
          f"{workdir.root}: another run is writing this workdir ({holder}). Fix: wait for it to "
          "finish or stop it, or pass another --workdir.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on host {socket.gethostname()}")
    handle.flush()
    yield
  finally:
    handle.close()  # closing releases the lock


def is_held(workdir: Workdir) -> bool:
  """Whether a run holds the workdir now (read-only check; takes nothing)."""
  if not os.path.exists(workdir.lock):
    return False
  with open(workdir.lock) as handle:
    try:
      fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
  return False
