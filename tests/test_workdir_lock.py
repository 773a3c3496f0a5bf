"""workdir_lock: a second run fails at once naming the holder; a killed holder blocks nothing."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from lvm_jax.distributed import workdir_lock
from lvm_jax.workdir import Workdir

HOLDER = textwrap.dedent("""
    import sys, time
    from lvm_jax.distributed import workdir_lock
    from lvm_jax.workdir import Workdir
    with workdir_lock.hold(Workdir(sys.argv[1])):
      print("held", flush=True)
      time.sleep(600)
""")


def _start_holder(workdir):
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], stdout=subprocess.PIPE,
                            text=True)
  assert holder.stdout.readline().strip() == "held"
  return holder


def test_second_writer_fails_naming_pid_and_host(tmp_path):
  assert not workdir_lock.is_held(Workdir(tmp_path))
  holder = _start_holder(tmp_path)
  try:
    assert workdir_lock.is_held(Workdir(tmp_path))
    with pytest.raises(workdir_lock.WorkdirLockedError) as raised:
      with workdir_lock.hold(Workdir(tmp_path)):
        pass
    assert f"pid {holder.pid} on host {socket.gethostname()}" in str(raised.value)
    assert "Fix: wait for it to finish or stop it, or pass another --workdir" in str(raised.value)
  finally:
    holder.kill()
    holder.wait()


def test_lock_of_a_killed_run_does_not_block(tmp_path):
  holder = _start_holder(tmp_path)
  os.kill(holder.pid, signal.SIGKILL)
  holder.wait()
  with workdir_lock.hold(Workdir(tmp_path)):
    with open(Workdir(tmp_path).lock) as f:
      assert f.read() == f"pid {os.getpid()} on host {socket.gethostname()}"


def test_unwritable_workdir_is_one_clear_error(tmp_path):
  if os.geteuid() == 0:
    target = "/proc/lvm_jax_cannot_write_here"  # root writes anywhere else
  else:
    os.chmod(tmp_path, 0o500)
    target = str(tmp_path / "run")
  with pytest.raises(workdir_lock.UserFacingError, match="cannot write the workdir"):
    with workdir_lock.hold(Workdir(target)):
      pass
