"""lvm_jax's training step against mambapy's (pure-PyTorch Mamba, parallel scan), in one process.

  python -m benchmarks.mambapy_bench          # batch 64, L 5, d_model 768, 8 layers, N 128
  python -m benchmarks.mambapy_bench --config=configs/s_contrastive.py:tiny --batch=8 --rounds=1

Both sides run one optimizer step of the same shapes: forward, backward,
clipping and AdamW. lvm_jax runs the config's jitted train step at micro-batch
--batch without accumulation; mambapy runs benchmarks/torch_reference.py's
step with mambapy's blocks (`pip install --no-deps mambapy`; the `bench`
extra). On a shared machine the load moves under a run, so after a warm-up
step each the two alternate, A B A B ..., for --rounds rounds, and the report
gives each side's median, the ratio of the medians and the load average at the
start and the end. Writes results/<machine>/<name>.json.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from typing import Dict

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common, train_bench
from lvm_jax import cli, models as models_lib

DEFAULT_CONFIG = "configs/s_contrastive.py"


def load_average():
  return list(os.getloadavg())


def run(config: ml_collections.ConfigDict, *, config_name: str, config_overrides: Dict,
        batch: int, rounds: int, name: str, out_dir: str) -> Dict:
  """Alternates the two steps `rounds` times; writes <out_dir>/<machine>/<name>.json."""
  from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  config.train.batch_size, config.train.accum_steps = batch, 1
  dim = config.data.vector_dim or config.data.synthetic.dim
  load_before = load_average()
  jax_step, jax_info = train_bench.make_jax_step(config)
  sizes = models_lib.model_sizes(config)
  torch_step, torch_info = torch_reference.make_torch_step(
      vector_dim=dim, d_model=sizes["d_model"], n_layers=sizes["n_layers"],
      d_state=sizes["d_state"], micro_batch=batch, context_length=config.data.context_length,
      implementation="mambapy")
  times = {"lvm_jax": [], "mambapy": []}
  steps = {"lvm_jax": jax_step, "mambapy": torch_step}
  for side, step in steps.items():  # compile / allocate before anything is timed
    start = time.perf_counter()
    step()
    print(f"{side} warm-up step {time.perf_counter() - start:.2f} s", flush=True)
  for round_index in range(rounds):
    for side, step in steps.items():
      start = time.perf_counter()
      step()
      times[side].append(time.perf_counter() - start)
    print(f"round {round_index + 1}/{rounds}: lvm_jax {times['lvm_jax'][-1]:.2f} s, "
          f"mambapy {times['mambapy'][-1]:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
  report = {"config": config_name, "config_overrides": dict(config_overrides), "batch": batch,
            "rounds": rounds, "command": " ".join(["python -m benchmarks.mambapy_bench"] +
                                                   sys.argv[1:]),
            "load_average_before": load_before, "load_average_after": load_average(),
            "cpu_count": os.cpu_count()}
  for side, info in (("lvm_jax", jax_info), ("mambapy", torch_info)):
    median = statistics.median(times[side])
    report[side] = dict(info, step_s=times[side], median_step_s=median,
                        sequences_per_s=batch / median)
  report["lvm_jax_over_mambapy"] = (report["lvm_jax"]["sequences_per_s"] /
                                    report["mambapy"]["sequences_per_s"])
  print(f"batch {batch}, L {config.data.context_length}, d_model {sizes['d_model']}, "
        f"{sizes['n_layers']} layers, N {sizes['d_state']}: "
        f"lvm_jax {report['lvm_jax']['sequences_per_s']:.2f} seq/s, "
        f"mambapy {report['mambapy']['sequences_per_s']:.2f} seq/s, "
        f"ratio {report['lvm_jax_over_mambapy']:.1f}x")
  print("wrote", common.write_json(name, report, out_dir))
  return report


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Experiment config file (model shape, loss, optimizer); "
      "override fields with --config.model.d_state=16 and the like.", flag_values=flag_values)
  flags.DEFINE_integer("batch", 64, "Sequences per step (one micro-batch, no accumulation).",
                       flag_values=flag_values)
  flags.DEFINE_integer("rounds", 5, "Timed rounds of one step each, alternating the two sides.",
                       flag_values=flag_values)
  flags.DEFINE_string("name", "mambapy_bench", "Result file name.", flag_values=flag_values)
  common.define_out_dir(flag_values)


def settings(flag_values: flags.FlagValues = flags.FLAGS) -> Dict:
  """The arguments of run() that the parsed flags ask for."""
  return dict(config=flag_values.config,
              config_name=config_flags.get_config_filename(flag_values["config"]),
              config_overrides=config_flags.get_override_values(flag_values["config"]),
              batch=flag_values.batch, rounds=flag_values.rounds, name=flag_values.name,
              out_dir=flag_values.out_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run(**settings())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
