"""One process of a two-process probe, run by tests/test_multihost.py and test_train_hooks.py.

  python tests/multihost_probe.py SCENARIO   (JAX_COORDINATOR_ADDRESS etc. set by the test)

Scenarios, each through the same lvm_jax code that `lvm_jax.main` runs:
  stop         per-process validation metrics that differ; prints the epoch each stops at
  shared_work  process 0's shared work fails; the other must stop at once with its error
  busy         cross-process steps until killed (the peer-death tests)
  step         a train-step-like program across the processes; prints what it computed
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


def start_pair(scenario: str, log_prefix: str, **env_extra: str):
  """Both processes of `scenario`, each in its own session, output to <log_prefix>.<id>.log."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "LVM_JAX_")) and k != "XLA_FLAGS"}
  env.update(PYTHONPATH=os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p]),
             JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", JAX_NUM_PROCESSES="2",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", **TIMEOUTS_ENV, **env_extra)
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
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top
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
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top

  def work():
    time.sleep(2)  # the other process is waiting by then
    print(f"failing at {time.time():.3f}", flush=True)
    raise ValueError("the shared corpus could not be written: disk says no")
  multihost.on_process_zero("synthetic corpus", work)
  print("went on", flush=True)


def step() -> None:
  """A train-step-like program across the processes (jit of shard_map: all_gather of float
  and int rows, pmean of a gradient tree, psum), five steps, its parameters donated as
  lvm_jax donates the train state; prints what it computed. On jax 0.5.0 this program,
  loaded from a warm persistent compilation cache with its parameters donated, corrupts
  memory or gives inf (docs/multihost.md); backend.donate_argnums keeps it exact."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from lvm_jax import backend  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import parallel  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.array(jax.devices()), ("batch",))
  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec("batch"))
  rng = np.random.default_rng(0)
  shapes = {"embed": (32, 16), "mix": (32, 32), "bias": (16,), "scale": (7,)}
  params = {name: jax.device_put(rng.standard_normal(shape).astype(np.float32), replicated)
            for name, shape in shapes.items()}
  index = jax.process_index()
  rows = jax.make_array_from_process_local_data(
      split, rng.standard_normal((1, 32, 16)).astype(np.float32) + index)
  keys = jax.make_array_from_process_local_data(
      split, np.arange(32, dtype=np.int32).reshape(1, 32) + 32 * index)

  def loss(p, x, everyone, all_keys):
    hidden = jnp.tanh(x[0] @ p["embed"].T @ p["mix"] @ p["embed"]) + p["bias"]
    logits = hidden @ everyone.reshape(-1, 16).T
    logits = jnp.where((all_keys.reshape(-1)[None, :] % 3) == 0, -1e9, logits)
    decay = sum(jnp.sum(v ** 2) for v in p.values()) * 1e-4
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1)) + decay

  def per_device(p, x, k):
    everyone = lax.all_gather(x, "batch", tiled=True)
    all_keys = lax.all_gather(k, "batch", tiled=True)
    value, grads = jax.value_and_grad(loss)(p, x, everyone, all_keys)
    grads = lax.pmean(grads, "batch")
    p = jax.tree_util.tree_map(lambda a, b: a - 0.01 * b, p, grads)
    return p, {"loss": lax.pmean(value, "batch"), "count": lax.psum(jnp.sum(k >= 0), "batch")}

  train_step = jax.jit(parallel._shard_map(  # pylint: disable=protected-access
      per_device, mesh, in_specs=(PartitionSpec(), PartitionSpec("batch"), PartitionSpec("batch")),
      out_specs=(PartitionSpec(), PartitionSpec())),
      donate_argnums=backend.donate_argnums((0,)))
  for _ in range(5):
    params, metrics = train_step(params, rows, keys)
  print(f"cache {jax.config.jax_enable_compilation_cache} loss "
        f"{float(metrics['loss'].addressable_data(0)):.9g} count "
        f"{int(metrics['count'].addressable_data(0))} mix "
        f"{float(np.sum(params['mix'].addressable_data(0))):.9g}", flush=True)


def busy() -> None:
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  print("up", flush=True)
  while True:
    multihost_utils.process_allgather(np.arange(4.0))
    time.sleep(0.01)


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  from lvm_jax import backend  # pylint: disable=g-import-not-at-top
  from lvm_jax.distributed import multihost  # pylint: disable=g-import-not-at-top
  backend.initialize("cpu")
  with multihost.failures_end_the_process():
    {"stop": stop, "shared_work": shared_work, "busy": busy, "step": step}[sys.argv[1]]()
  multihost.finish()
