"""One process of a two-process probe, run by tests/test_multihost.py and test_train_hooks.py.

  python tests/multihost_probe.py SCENARIO   (JAX_COORDINATOR_ADDRESS etc. set by the test)

Scenarios, each through the same lvm_jax code that `lvm_jax.main` runs:
  stop         per-process validation metrics that differ; prints the epoch each stops at
  shared_work  process 0's shared work fails; the other must stop at once with its error
  busy         cross-process steps until killed (the peer-death tests)
"""

import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Short bounds: the probes do no real work, and a hang must fail fast.
TIMEOUTS_ENV = {"LVM_JAX_INIT_TIMEOUT_S": "60", "LVM_JAX_HEARTBEAT_TIMEOUT_S": "10",
                "LVM_JAX_BARRIER_TIMEOUT_S": "60"}


def start_pair(scenario: str, log_prefix: str):
  """Both processes of `scenario`, each in its own session, output to <log_prefix>.<id>.log."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "LVM_JAX_")) and k != "XLA_FLAGS"}
  env.update(PYTHONPATH=os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p]),
             JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", JAX_NUM_PROCESSES="2",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", **TIMEOUTS_ENV)
  processes = []
  for index in range(2):
    log_path = f"{log_prefix}.{index}.log"
    with open(log_path, "wb") as log:
      process = subprocess.Popen([sys.executable, os.path.abspath(__file__), scenario], cwd=REPO,
                                 env={**env, "JAX_PROCESS_ID": str(index)}, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    process.log_path = log_path
    processes.append(process)
  return processes


def log_of(process) -> str:
  with open(process.log_path, errors="replace") as f:
    return f.read()

# val_cosine by epoch: process 1's stalls from epoch 2 on, process 0's only from epoch 4.
METRICS = {0: [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4], 1: [0.1, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]}
PATIENCE = 2


def stop() -> None:
  from lvm_jax import multihost  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import hooks  # pylint: disable=g-import-not-at-top
  from flax.training import early_stopping  # pylint: disable=g-import-not-at-top
  stopper = hooks.early_stopping_from(_NoHistory(), "val_cosine", "max", PATIENCE)
  alone = early_stopping.EarlyStopping(patience=PATIENCE - 1, min_delta=0.0)
  epoch, alone_epoch = None, None
  for epoch, value in enumerate(METRICS[multihost.process_index()], start=1):
    if alone_epoch is None and alone.should_stop:
      alone_epoch = epoch
    if hooks.should_stop(stopper):
      break
    stopper = hooks.update_early_stopping(stopper, value, "max")
    alone = alone.update(-value)
  print(f"stopped at epoch {epoch}; alone it would stop at epoch {alone_epoch}", flush=True)


class _NoHistory:
  entries = []


def shared_work() -> None:
  from lvm_jax import multihost  # pylint: disable=g-import-not-at-top

  def work():
    time.sleep(2)  # the other process is waiting by then
    print(f"failing at {time.time():.3f}", flush=True)
    raise ValueError("the shared corpus could not be written: disk says no")
  multihost.on_process_zero("synthetic corpus", work)
  print("went on", flush=True)


def busy() -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  print("up", flush=True)
  while True:
    multihost_utils.process_allgather(np.arange(4.0))
    time.sleep(0.01)


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  from lvm_jax import backend, multihost  # pylint: disable=g-import-not-at-top
  backend.initialize("cpu")
  with multihost.failures_end_the_process():
    {"stop": stop, "shared_work": shared_work, "busy": busy}[sys.argv[1]]()
  multihost.finish()
