"""Shared by the benchmarks: timing medians, hardware probes, result files, plots."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

RESULTS_ROOT = os.path.join(os.path.dirname(__file__), "results")


def define_out_dir(flag_values: flags.FlagValues) -> None:
  """--out_dir, every benchmark's results root (files go to <out_dir>/<machine>/)."""
  flags.DEFINE_string("out_dir", RESULTS_ROOT, "Results root; files go to <out_dir>/<machine>/.",
                      flag_values=flag_values)
  dashed_aliases(flag_values, "out_dir")


def dashed_aliases(flag_values: flags.FlagValues, *names: str) -> None:
  """Underscore is the one spelling (as in lvm_jax's CLIs); the former dashed spellings
  (--out-dir, --payload-rows, ...) of `names` stay as aliases."""
  for name in names:
    flags.DEFINE_alias(name.replace("_", "-"), name, flag_values=flag_values)


def machine_name() -> str:
  """Folder name under results/: the accelerator if there is one, else the CPU."""
  device = jax.devices()[0]
  if device.platform != "cpu":
    return device.device_kind.replace(" ", "_")
  return f"{platform.machine()}-{os.cpu_count()}cpu"


def results_dir(root: Optional[str] = None) -> str:
  path = os.path.join(root or RESULTS_ROOT, machine_name())
  os.makedirs(path, exist_ok=True)
  return path


def time_compiled(fn: Callable, *args, repeats: int = 5) -> Dict[str, float]:
  """Compiles jitted `fn` (timed apart), then the median of `repeats` timed calls."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  memory = compiled.memory_analysis()
  temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
  return {"median_s": statistics.median(times), "min_s": min(times), "compile_s": compile_s,
          "temp_bytes": temp, "repeats": repeats}


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
  """float32 matmul FLOP/s measured in this process: the achievable compute peak."""
  a = jnp.ones((size, size), jnp.float32)
  result = time_compiled(jax.jit(lambda x, y: x @ y), a, a, repeats=repeats)
  return 2 * size ** 3 / result["median_s"]


def copy_bandwidth(num_bytes: int = 256 * 1024 * 1024, repeats: int = 5) -> float:
  """Bytes/s of reading and writing a large float32 array (x + 1): the memory peak."""
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  result = time_compiled(jax.jit(lambda v: v + 1.0), x, repeats=repeats)
  return 2 * num_bytes / result["median_s"]


def write_json(name: str, report: Dict, root: Optional[str] = None) -> str:
  path = os.path.join(results_dir(root), f"{name}.json")
  report = dict(report, machine=machine_name(), jax_version=jax.__version__,
                backend=jax.default_backend())
  with open(path, "w") as f:
    json.dump(report, f, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
  return path


def pyplot():
  """matplotlib.pyplot on the Agg backend, or None (it is the optional `bench` extra)."""
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    return plt
  except ImportError:
    print("matplotlib not installed (pip install -e '.[bench]'): no plot")
    return None


def print_table(rows, columns) -> None:
  print(" | ".join(f"{c:>12}" for c in columns))
  for row in rows:
    cells = []
    for c in columns:
      value = row.get(c)
      cells.append(f"{value:>12.4g}" if isinstance(value, float) else f"{str(value):>12}")
    print(" | ".join(cells))
