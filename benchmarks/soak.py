"""Kill soak: SIGKILL a training run N times at seeded moments; it must end as if never killed.

  python -m benchmarks.soak --kills 30 --seed 0 --workdir /tmp/soak

Runs `python -m lvm_jax.main` on the tiny config (shrunk further, with the
in-loop retrieval evaluation every epoch) once uninterrupted, then again in a
second workdir where it is SIGKILLed `--kills` times and rerun after each kill.
Each kill is drawn from the seed: at a random moment after the start, or just
as a checkpoint save or a history write begins (polled every few ms), so kills
land in start-up, compiling, training, the retrieval evaluation, history
writes and checkpoint saves. The last rerun is left to finish. The final
parameters and optimizer state must equal the uninterrupted run's bit for bit,
and so must history.json (timings aside). Writes a JSON record to --out
(default benchmarks/results/<machine>/soak_kills<N>_seed<S>.json); exits 1
if the states differ.
"""

from __future__ import annotations

import glob
import importlib.metadata
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from absl import app, flags
from lvm_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# tests/conftest.py tiny_config as flags, plus the in-loop retrieval evaluation every epoch.
SOAK_FLAGS = (
    "--config=configs/s_contrastive.py:tiny", "--backend=cpu",
    "--config.data.synthetic.num_articles=80", "--config.data.synthetic.dim=32",
    "--config.model.d_model=16", "--config.model.n_layers=1", "--config.model.d_state=4",
    "--config.head.hidden_dim=32", "--config.head.out_dim=16", "--config.train.batch_size=16",
    "--config.train.accum_steps=2", "--config.train.early_stopping_patience=0",
    "--config.data.prefetch=0", "--config.evals.retrieval.every_epochs=1")
# History fields that measure time, not training: they differ between any two runs.
TIMING_FIELDS = ("time", "sequences_per_s")
KILL_KINDS = ("random", "save", "history")
POLL_S = 0.002



def _environment(cache_dir: str) -> Dict[str, str]:
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAX_", "LVM_JAX_")) and k != "XLA_FLAGS"}
  env.update(PYTHONPATH=os.pathsep.join([REPO] + [p for p in [env.get("PYTHONPATH")] if p]),
             JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
             # Reruns skip most compiling (lvm_jax.backend turns the cache off where jax < 0.10).
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def _start(workdir: str, epochs: int, env: Dict[str, str], log_path: str) -> subprocess.Popen:
  with open(log_path, "ab") as log:
    return subprocess.Popen(
        [sys.executable, "-m", "lvm_jax.main", f"--workdir={workdir}", *SOAK_FLAGS,
         f"--config.train.num_epochs={epochs}"], cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)


def _kill(process: subprocess.Popen) -> None:
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  process.wait()


def writes_in_progress(workdir: str, stale: frozenset = frozenset()) -> List[str]:
  """What the run is writing now: checkpoint steps not yet committed, and temporary files of
  write-then-rename (history.json, baselines, config); not the `stale` ones, left by a kill."""
  found = []
  checkpoints = os.path.join(workdir, "checkpoints")
  if os.path.isdir(checkpoints):
    found += [f"checkpoint {name}" for name in os.listdir(checkpoints) if "tmp" in name]
  found += [f"file {os.path.basename(path)}"
            for path in glob.glob(os.path.join(workdir, "*.tmp*"))]
  return [entry for entry in found if entry not in stale]


def _history_stamp(workdir: str) -> Optional[float]:
  path = os.path.join(workdir, "history.json")
  return os.stat(path).st_mtime_ns if os.path.exists(path) else None


def _wait_for_event(process: subprocess.Popen, workdir: str, kind: str, deadline: float,
                    stale: frozenset) -> bool:
  """Polls until a save (kind "save") or a history write (kind "history") begins."""
  stamp = _history_stamp(workdir)
  while time.monotonic() < deadline and process.poll() is None:
    writing = writes_in_progress(workdir, stale)
    if kind == "save" and any(w.startswith("checkpoint") for w in writing):
      return True
    if kind == "history" and (_history_stamp(workdir) != stamp or
                              any("history" in w for w in writing)):
      return True
    time.sleep(POLL_S)
  return False


def _finish(process: subprocess.Popen, timeout: float, log_path: str) -> None:
  try:
    code = process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    _kill(process)
    code = None
  if code != 0:
    with open(log_path, errors="replace") as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f"the run in {log_path} ended with {code}:\n{tail}")


def final_state(workdir: str):
  """(step, state tree) of the newest checkpoint: params and optimizer state as saved."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, "checkpoints")
  steps = sorted(int(name) for name in os.listdir(directory) if name.isdigit())
  with ocp.StandardCheckpointer() as checkpointer:
    return steps[-1], checkpointer.restore(os.path.join(directory, str(steps[-1]), "default"))


def history_without_timings(workdir: str) -> List[Dict]:
  with open(os.path.join(workdir, "history.json")) as f:
    return [{k: v for k, v in entry.items() if k not in TIMING_FIELDS} for entry in json.load(f)]


def states_equal(tree_a, tree_b) -> bool:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  leaves_a, structure_a = jax.tree_util.tree_flatten(tree_a)
  leaves_b, structure_b = jax.tree_util.tree_flatten(tree_b)
  return structure_a == structure_b and all(
      np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(np.asarray(a), np.asarray(b))
      for a, b in zip(leaves_a, leaves_b))


def soak(kills: int, seed: int, root: str, epochs: int = 60,
         run_timeout_s: float = 900) -> Dict:
  """Runs the soak in `root`; returns the record (see the module docstring)."""
  os.makedirs(root, exist_ok=True)
  env = _environment(os.path.join(root, "jax_cache"))
  reference, killed = os.path.join(root, "reference"), os.path.join(root, "killed")
  started = time.monotonic()
  log_path = os.path.join(root, "reference.log")
  process = _start(reference, epochs, env, log_path)
  first_epoch_s = None  # start-up, compiling and one epoch: what a run from scratch does first
  while process.poll() is None and first_epoch_s is None:
    if _history_stamp(reference) is not None:
      first_epoch_s = time.monotonic() - started
    time.sleep(POLL_S)
  _finish(process, run_timeout_s, log_path)
  reference_s = time.monotonic() - started
  first_epoch_s = first_epoch_s or reference_s / 2

  rng = random.Random(seed)
  log_path = os.path.join(root, "killed.log")
  record_kills = []
  scale_s = min(first_epoch_s, reference_s / 2)
  for number in range(1, kills + 1):
    kind = rng.choice(KILL_KINDS)
    # "random": anywhere within the time a run takes to its first history write (start-up
    # and compiling included). Else: after such a wait, at the next save or history write,
    # plus 0-50 ms. The first kill waits for the first history write itself, so at least
    # one kill lands however fast a rerun from a warm compilation cache is; its time then
    # scales the later waits.
    wait = 0.0 if number == 1 else rng.uniform(0.0, scale_s)
    after_event = rng.uniform(0.0, 0.05)
    if number == 1:
      kind = "history"
    stale = frozenset(writes_in_progress(killed))
    process = _start(killed, epochs, env, log_path)
    launched = time.monotonic()
    while process.poll() is None and time.monotonic() < launched + wait:
      time.sleep(POLL_S)
    landed = True
    if kind != "random":
      landed = _wait_for_event(process, killed, kind, launched + run_timeout_s, stale)
      if number == 1 and landed:
        scale_s = time.monotonic() - launched
      time.sleep(after_event)
    if process.poll() is not None:  # finished before the kill: the soak ran out of run
      _finish(process, 0, log_path)
      record_kills.append({"kill": number, "kind": kind, "landed": False})
      break
    writing = writes_in_progress(killed, stale)
    _kill(process)
    record_kills.append({"kill": number, "kind": kind, "landed": landed,
                         "after_s": round(time.monotonic() - launched, 3), "writing": writing})
  resumed_at = time.monotonic()
  _finish(_start(killed, epochs, env, log_path), run_timeout_s, log_path)
  last_run_s = time.monotonic() - resumed_at

  reference_step, reference_state = final_state(reference)
  killed_step, killed_state = final_state(killed)
  landed = [k for k in record_kills if k["landed"]]
  during_save = [k for k in landed if any(w.startswith("checkpoint") for w in k["writing"])]
  during_file = [k for k in landed if any(w.startswith("file") for w in k["writing"])]
  return {
      "kills_asked": kills, "seed": seed, "epochs": epochs, "flags": list(SOAK_FLAGS),
      "jax_version": importlib.metadata.version("jax"),
      "kills_landed": len(landed), "kills_during_checkpoint_save": len(during_save),
      "kills_during_file_write": len(during_file),
      "final_step": {"reference": reference_step, "killed": killed_step},
      "state_bitwise_equal": reference_step == killed_step and
                             states_equal(reference_state, killed_state),
      "history_equal": history_without_timings(reference) == history_without_timings(killed),
      "history_fields_ignored": list(TIMING_FIELDS),
      "reference_run_s": round(reference_s, 1), "reference_first_epoch_s": round(first_epoch_s, 1),
      "last_run_s": round(last_run_s, 1),
      "load_average_at_end": list(os.getloadavg()), "kills": record_kills,
  }


def define_flags() -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_integer("kills", 30, "How many times to SIGKILL the run.")
  flags.DEFINE_integer("seed", 0, "Seed of the kill moments and kinds.")
  flags.DEFINE_string("workdir", None, "Scratch directory (two run directories and logs).")
  flags.DEFINE_integer("epochs", 60, "Epochs of the run: each landed kill costs up to one or "
                       "two epochs of progress, so N kills need about 2N.")
  flags.DEFINE_string("out", None, "Result JSON; default benchmarks/results/<machine>/"
                      "soak_kills<N>_seed<S>.json.")
  flags.DEFINE_integer("run_timeout_s", 900, "Bound on any one run.")


def main(argv):
  del argv
  if not flags.FLAGS.workdir:
    raise app.UsageError("--workdir is required (a scratch directory).")
  result = soak(flags.FLAGS.kills, flags.FLAGS.seed, flags.FLAGS.workdir, flags.FLAGS.epochs,
                flags.FLAGS.run_timeout_s)
  out = flags.FLAGS.out
  if not out:
    from benchmarks import common  # pylint: disable=g-import-not-at-top
    out = os.path.join(common.results_dir(), f"soak_kills{result['kills_asked']}_seed"
                       f"{result['seed']}.json")
  sys.path.insert(0, REPO)
  from lvm_jax import atomic  # pylint: disable=g-import-not-at-top
  atomic.write_json(out, result)
  print(json.dumps({k: v for k, v in result.items() if k != "kills"}, indent=1))
  print(f"wrote {out}")
  return 0 if result["state_bitwise_equal"] and result["history_equal"] else 1


if __name__ == "__main__":
  define_flags()
  cli.run(main)
