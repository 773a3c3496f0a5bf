"""How much of the model's forward+backward is the selective scan: an ablation in one run.

  python -m benchmarks.scan_share                 # mamba_s at d_model 768, micro-batch 256, L 5
  python -m benchmarks.scan_share --batch=8 --d_model=64

Times jit(grad(model)) with the real scan, then with the scan replaced by its
skip term (y = D * u), in the same process. Writes results/<machine>/scan_share.json.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import common
from lvm_jax import cli
from lvm_jax.models import create_model
from lvm_jax.models import mamba

# The model shape, as (flag name, run() argument, default, help); the report's "shape" keys.
SHAPE_FLAGS = (
    ("batch", "batch", 256, "Micro-batch."),
    ("length", "length", 5, "Context length L."),
    ("vector_dim", "vector_dim", 768, "Input vector dimension."),
    ("d_model", "d_model", 768, "Model width."),
    ("n_layers", "n_layers", 8, "Blocks."),
    ("d_state", "d_state", 128, "Scan state size N."),
)


def model_fwd_bwd_seconds(*, batch: int, length: int, vector_dim: int, d_model: int,
                          n_layers: int, d_state: int, repeats: int) -> float:
  """Median seconds of jit(grad(sum of the mamba_s outputs)) on [batch, length, vector_dim]."""
  model = create_model("mamba_s", vector_dim=vector_dim, d_model=d_model, n_layers=n_layers,
                       d_state=d_state, dropout=0.0)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, length, vector_dim))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply({"params": p}, x))))
  jax.block_until_ready(grad(params, x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(grad(params, x))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def run(*, repeats: int, out_dir: str, **shape) -> Dict:
  """Times the model with and without the scan (`shape`: the SHAPE_FLAGS arguments), writes JSON."""
  with_scan = model_fwd_bwd_seconds(repeats=repeats, **shape)
  real_scan = mamba.selective_scan
  mamba.selective_scan = lambda u, delta, A, B, C, D, **kw: u * D + 0.0 * delta
  try:
    without_scan = model_fwd_bwd_seconds(repeats=repeats, **shape)
  finally:
    mamba.selective_scan = real_scan
  report = {"shape": dict(shape, repeats=repeats), "with_scan_s": with_scan,
            "scan_replaced_by_skip_s": without_scan,
            "scan_share": (with_scan - without_scan) / with_scan}
  print(f"model fwd+bwd: {with_scan:.2f} s with the scan, {without_scan:.2f} s without: the scan "
        f"is {100 * report['scan_share']:.0f} % of it")
  if report["scan_share"] <= 0:
    print("the scan costs less than the timing noise at this size: raise --repeats or the shape")
  print("wrote", common.write_json("scan_share", report, out_dir))
  return report


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  for flag_name, _, default, help_text in SHAPE_FLAGS:
    flags.DEFINE_integer(flag_name, default, help_text, flag_values=flag_values)
  flags.DEFINE_integer("repeats", 3, "Timed runs after compiling; the median is reported.",
                       flag_values=flag_values)
  common.define_out_dir(flag_values)
  common.dashed_aliases(flag_values, "vector_dim", "d_model", "n_layers", "d_state")


def settings(flag_values: flags.FlagValues = flags.FLAGS) -> Dict:
  """The keyword arguments of run() that the parsed flags ask for."""
  shape = {argument: flag_values[flag_name].value for flag_name, argument, _, _ in SHAPE_FLAGS}
  return dict(shape, repeats=flag_values.repeats, out_dir=flag_values.out_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run(**settings())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
