"""Train-step throughput: the jitted update against the PyTorch loop implementation.

  python -m benchmarks.train_bench                                  # s_contrastive, full size
  python -m benchmarks.train_bench --config=configs/s_contrastive.py:tiny --no-torch

Measures sequences/s of one optimizer step (median of --steps after compiling)
at the config's micro-batch x accumulation, the analytic model FLOPs per
sequence and the achieved fraction of the matmul peak measured in this process.
With torch installed (the `bench` extra), the PyTorch loop implementation
(benchmarks/torch_reference.py) runs the same shapes in the same invocation and
the ratio of sequences/s is reported. Writes results/<machine>/train_bench.json
and .png.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time

import jax
import numpy as np

from benchmarks import common
from lvm_jax import checkpoint, train
from lvm_jax.models import ProjectionHead


def load_config(spec: str):
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


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
  d_inner = config.model.expand * config.model.d_model
  scan_blocks = sum(1 for k in params["model"] if k.endswith("_mamba"))
  scan = 8 * d_inner * config.model.d_state * scan_blocks  # see benchmarks/scan_bench.py
  forward = length * (2 * model_kernels + scan) + 2 * 2 * head_kernels  # head: prediction + target
  return 3.0 * forward


def jax_step_throughput(config, steps: int):
  dim = config.data.vector_dim or config.data.synthetic.dim
  model = checkpoint.model_from_config(config, dim)
  head = ProjectionHead(config.head.hidden_dim, config.head.out_dim)
  state = train.create_train_state(config, model, head, jax.random.PRNGKey(0), dim, 1000)
  flops = model_flops_per_sequence(config, state.params)
  step = train.make_parallel_train_step(config, model, head, use_pmap=True)
  batch = random_batch(config.train.accum_steps, config.train.batch_size,
                       config.data.context_length, dim)
  state = train.replicate(state, 1)
  rng = jax.random.PRNGKey(0)
  start = time.perf_counter()
  state, metrics = step(state, batch, rng)
  jax.block_until_ready(metrics)
  first_s = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  sequences = config.train.accum_steps * config.train.batch_size
  return {"micro_batch": config.train.batch_size, "accum_steps": config.train.accum_steps,
          "vector_dim": dim, "d_model": config.model.d_model, "n_layers": config.model.n_layers,
          "d_state": config.model.d_state, "first_step_s (compile+run)": first_s,
          "median_step_s": median, "sequences_per_s": sequences / median,
          "model_flops_per_sequence": flops, "achieved_flop_per_s": flops * sequences / median,
          "loss": float(np.asarray(metrics["loss"])[0])}


def run(args):
  config = load_config(args.config)
  if args.micro_batch:
    config.train.batch_size = args.micro_batch
  if args.accum_steps:
    config.train.accum_steps = args.accum_steps
  matmul_peak = common.matmul_peak_flops()
  print(f"matmul peak {matmul_peak / 1e9:.1f} GFLOP/s", flush=True)
  results = {"config": args.config, "matmul_peak_flop_per_s": matmul_peak}
  jax_result = jax_step_throughput(config, args.steps)
  jax_result["matmul_fraction"] = jax_result["achieved_flop_per_s"] / matmul_peak
  results["jax"] = jax_result
  print(f"JAX   {args.config} micro {jax_result['micro_batch']} x {jax_result['accum_steps']}: "
        f"{jax_result['sequences_per_s']:.1f} seq/s, {jax_result['median_step_s']:.2f} s/step, "
        f"{jax_result['achieved_flop_per_s'] / 1e9:.1f} GFLOP/s "
        f"({100 * jax_result['matmul_fraction']:.0f} % of matmul peak)", flush=True)
  if args.torch:
    from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
    # The loop implementation keeps every step's [batch, d_inner, d_state] tensors for
    # autograd; --torch-micro-batch keeps it inside this machine's memory. Both sides run it.
    micro = args.torch_micro_batch or config.train.batch_size
    compare = load_config(args.config)
    compare.train.batch_size, compare.train.accum_steps = micro, 1
    jax_same = jax_step_throughput(compare, args.steps)
    torch_result = torch_reference.benchmark_torch_step(
        vector_dim=jax_same["vector_dim"], d_model=config.model.d_model,
        n_layers=config.model.n_layers, d_state=config.model.d_state, micro_batch=micro,
        accum_steps=1, context_length=config.data.context_length, steps=args.steps)
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


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/s_contrastive.py")
  p.add_argument("--micro-batch", type=int, help="override config.train.batch_size")
  p.add_argument("--accum-steps", type=int, help="override config.train.accum_steps")
  p.add_argument("--steps", type=int, default=3, help="timed steps after the first")
  p.add_argument("--no-torch", dest="torch", action="store_false")
  p.add_argument("--torch-micro-batch", type=int, default=64)
  p.add_argument("--name", default="train_bench", help="result file name")
  p.add_argument("--out-dir", default=common.RESULTS_ROOT)
  args = p.parse_args(argv)
  report = run(args)
  path = common.write_json(args.name, report, args.out_dir)
  png = os.path.join(common.results_dir(args.out_dir), f"{args.name}.png")
  print(f"wrote {path}" + (f" and {png}" if plot(report, png) else ""))
  return report


if __name__ == "__main__":
  main()
