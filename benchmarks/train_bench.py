"""Train-step throughput: the jitted update against the PyTorch loop implementation.

  python -m benchmarks.train_bench                                  # s_contrastive, full size
  python -m benchmarks.train_bench --config=configs/s_contrastive.py:tiny --notorch
  python -m benchmarks.train_bench --config.model.scan_mode=sequential --name=train_bench_sequential

Any config field can be overridden as `--config.FIELD=VALUE`; the micro-batch
and accumulation are `--config.train.batch_size` and `--config.train.accum_steps`
(they replace the former --micro-batch / --accum-steps). `--no-torch` is still
accepted for `--notorch`.

Measures sequences/s of one optimizer step (median of --steps after compiling)
at the config's micro-batch x accumulation, the analytic model FLOPs per
sequence and the achieved fraction of the matmul peak measured in this process.
With torch installed (the `bench` extra), the PyTorch loop implementation
(benchmarks/torch_reference.py) runs the same shapes in the same invocation and
the ratio of sequences/s is reported. Writes results/<machine>/<name>.json
and .png.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from typing import Dict, Optional

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from lvm_jax import cli, models as models_lib
from lvm_jax import checkpoint
from lvm_jax.ops import scan
from lvm_jax.train import step as step_lib
from lvm_jax.train.parallel import DataParallel

DEFAULT_CONFIG = "configs/s_contrastive.py"
# Spellings of the argparse version that absl does not parse, and what they mean now.
OLD_SPELLINGS = {"--no-torch": "--notorch"}


def random_batch(accum_steps, micro_batch, length, dim, seed=0):
  vectors = np.random.default_rng(seed).normal(size=(1, accum_steps, micro_batch, length + 1, dim))
  vectors = (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)
  ids = np.arange(accum_steps * micro_batch, dtype=np.int64).reshape(1, accum_steps, micro_batch)
  return {"contexts": vectors[..., :length, :], "targets": vectors[..., length, :],
          "target_ids": ids}


def model_flops_per_sequence(config, params) -> float:
  """Forward+backward FLOPs a sequence: 3 x (2 x kernel size per token) + the scan's work."""
  length = config.data.context_length
  model_kernels = sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(params["model"])[0]
                      if str(getattr(path[-1], "key", "")).endswith("kernel"))
  head_kernels = sum(x.size for x in jax.tree_util.tree_leaves(params["head"]) if x.ndim == 2)
  sizes = models_lib.model_sizes(config)
  d_inner = sizes["expand"] * sizes["d_model"]
  scan_blocks = sum(1 for k in params["model"] if k.endswith("_mamba"))
  scan = 8 * d_inner * sizes["d_state"] * scan_blocks  # see benchmarks/scan_bench.py
  forward = length * (2 * model_kernels + scan) + 2 * 2 * head_kernels  # head: prediction + target
  return 3.0 * forward


def make_jax_step(config: ml_collections.ConfigDict):
  """The config's jitted train step on one device as a no-argument callable that blocks, and facts.

  The callable carries the state from call to call, as training does (the state is donated).
  """
  dim = config.data.vector_dim or config.data.synthetic.dim
  predictor = models_lib.predictor_from_config(config, dim)
  state = step_lib.create_train_state(config, predictor, jax.random.PRNGKey(0), dim, 1000)
  flops = model_flops_per_sequence(config, state.params)
  data_parallel = DataParallel.create(config.train.parallel, devices=jax.local_devices()[:1])
  step = step_lib.make_parallel_train_step(config, data_parallel)
  batch = data_parallel.place_batch(random_batch(config.train.accum_steps, config.train.batch_size,
                                                 config.data.context_length, dim))
  carried = {"state": data_parallel.replicate(state)}
  rng = jax.random.PRNGKey(0)

  def run_step():
    carried["state"], metrics = step(carried["state"], batch, rng)
    jax.block_until_ready(metrics)
    return metrics

  sizes = models_lib.model_sizes(config)
  info = {"micro_batch": config.train.batch_size, "accum_steps": config.train.accum_steps,
          "vector_dim": dim, "d_model": sizes["d_model"], "n_layers": sizes["n_layers"],
          "d_state": sizes["d_state"], "scan_mode": config.model.scan_mode,
          # what the Mamba blocks ran that mode as ("auto": the platform's kernel, once it passed
          # its self-check)
          "scan_mode_run": scan.resolve_scan_type(config.model.scan_mode,
                                                  config.data.context_length).value,
          "model_flops_per_sequence": flops}
  return run_step, info


def jax_step_throughput(config: ml_collections.ConfigDict, steps: int) -> Dict:
  run_step, info = make_jax_step(config)
  start = time.perf_counter()
  run_step()
  first_s = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    metrics = run_step()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  sequences = config.train.accum_steps * config.train.batch_size
  return dict(info, **{"first_step_s (compile+run)": first_s,
                       "median_step_s": median, "sequences_per_s": sequences / median,
                       "achieved_flop_per_s": info["model_flops_per_sequence"] * sequences / median,
                       "loss": float(np.asarray(metrics["loss"])[0])})


def measure(config: ml_collections.ConfigDict, *, config_name: str, steps: int, torch: bool,
            torch_micro_batch: Optional[int]) -> Dict:
  """The config's step, and with `torch` the same shapes against the PyTorch loop."""
  matmul_peak = common.matmul_peak_flops()
  print(f"matmul peak {matmul_peak / 1e9:.1f} GFLOP/s", flush=True)
  results = {"config": config_name, "matmul_peak_flop_per_s": matmul_peak}
  jax_result = jax_step_throughput(config, steps)
  jax_result["matmul_fraction"] = jax_result["achieved_flop_per_s"] / matmul_peak
  results["jax"] = jax_result
  print(f"JAX   {config_name} micro {jax_result['micro_batch']} x {jax_result['accum_steps']}: "
        f"{jax_result['sequences_per_s']:.1f} seq/s, {jax_result['median_step_s']:.2f} s/step, "
        f"{jax_result['achieved_flop_per_s'] / 1e9:.1f} GFLOP/s "
        f"({100 * jax_result['matmul_fraction']:.0f} % of matmul peak)", flush=True)
  if torch:
    from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
    # The loop implementation keeps every step's [batch, d_inner, d_state] tensors for
    # autograd; --torch_micro_batch keeps it inside this machine's memory. Both sides run it.
    micro = torch_micro_batch or config.train.batch_size
    compare = copy.deepcopy(config)
    compare.train.batch_size, compare.train.accum_steps = micro, 1
    jax_same = jax_step_throughput(compare, steps)
    torch_result = torch_reference.benchmark_torch_step(
        vector_dim=jax_same["vector_dim"], d_model=jax_same["d_model"],
        n_layers=jax_same["n_layers"], d_state=jax_same["d_state"], micro_batch=micro,
        accum_steps=1, context_length=config.data.context_length, steps=steps)
    results["same_shape_comparison"] = {
        "micro_batch": micro, "accum_steps": 1, "jax": jax_same, "torch_loop": torch_result,
        "jax_over_torch_sequences_per_s": jax_same["sequences_per_s"] /
                                          torch_result["sequences_per_s"]}
    print(f"same shapes (micro {micro} x 1): JAX {jax_same['sequences_per_s']:.1f} seq/s, "
          f"PyTorch loop {torch_result['sequences_per_s']:.1f} seq/s: "
          f"{results['same_shape_comparison']['jax_over_torch_sequences_per_s']:.1f}x", flush=True)
  return results


def plot(report, path) -> bool:
  plt = common.pyplot()
  if plt is None:
    return False
  labels, values = [f"JAX {report['jax']['micro_batch']}x{report['jax']['accum_steps']}"], \
      [report["jax"]["sequences_per_s"]]
  same = report.get("same_shape_comparison")
  if same:
    labels += [f"JAX {same['micro_batch']}x1", f"PyTorch loop {same['micro_batch']}x1"]
    values += [same["jax"]["sequences_per_s"], same["torch_loop"]["sequences_per_s"]]
  fig, axis = plt.subplots(figsize=(6, 4))
  axis.bar(labels, values)
  axis.set_ylabel("sequences / s")
  axis.set_title(f"train step, {report['config']} ({common.machine_name()})")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return True


def run(config: ml_collections.ConfigDict, *, config_name: str, config_overrides: Dict,
        steps: int, torch: bool, torch_micro_batch: Optional[int], name: str,
        out_dir: str) -> Dict:
  """Measures, writes <out_dir>/<machine>/<name>.json and .png, returns the report.

  The arguments are settings(flags): the flags hold the defaults.
  """
  report = measure(config, config_name=config_name, steps=steps, torch=torch,
                   torch_micro_batch=torch_micro_batch)
  report["config_overrides"] = dict(config_overrides)
  path = common.write_json(name, report, out_dir)
  png = os.path.join(common.results_dir(out_dir), f"{name}.png")
  print(f"wrote {path}" + (f" and {png}" if plot(report, png) else ""))
  return report


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Experiment config file, e.g. configs/s_contrastive.py[:tiny]; "
      "override fields with --config.train.batch_size=64 and the like.", flag_values=flag_values)
  flags.DEFINE_integer("steps", 3, "Timed steps after the first.", flag_values=flag_values)
  flags.DEFINE_boolean("torch", True, "Also run the PyTorch loop implementation at the same "
                       "shapes (--notorch, or the old --no-torch, skips it).",
                       flag_values=flag_values)
  flags.DEFINE_integer("torch_micro_batch", 64, "Micro-batch of the JAX-vs-PyTorch comparison "
                       "(0: the config's).", flag_values=flag_values)
  flags.DEFINE_string("name", "train_bench", "Result file name.", flag_values=flag_values)
  common.define_out_dir(flag_values)
  common.dashed_aliases(flag_values, "torch_micro_batch")


def settings(flag_values: flags.FlagValues = flags.FLAGS) -> Dict:
  """The arguments of run() that the parsed flags ask for."""
  return dict(config=flag_values.config,
              config_name=config_flags.get_config_filename(flag_values["config"]),
              config_overrides=config_flags.get_override_values(flag_values["config"]),
              steps=flag_values.steps, torch=flag_values.torch,
              torch_micro_batch=flag_values.torch_micro_batch, name=flag_values.name,
              out_dir=flag_values.out_dir)


def current_spellings(argv):
  """argv with the argparse version's spellings rewritten (OLD_SPELLINGS)."""
  return [OLD_SPELLINGS.get(arg, arg) for arg in argv]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run(**settings())


if __name__ == "__main__":
  define_flags()
  cli.run(main, argv=current_spellings(sys.argv))
