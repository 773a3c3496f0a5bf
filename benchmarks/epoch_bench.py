"""One training epoch at the reference size: wall time, compile apart, FLOP/s, scan share.

  python -m benchmarks.epoch_bench                          # 396k sequences, s_contrastive
  python -m benchmarks.epoch_bench --sequences=8192         # a shrunken epoch (CPU)
  python -m benchmarks.epoch_bench --config=configs/s_contrastive.py:tiny --sequences=512

The epoch runs the real step (jit over the device mesh, accumulation, AdamW) and
the real input pipeline over a compact synthetic set: `--payload_rows` random
unit vectors and windows of consecutive rows, so 396k sequences cost one
payload's memory, not 396k copies. The first step (compilation) is timed and
reported apart; the epoch time counts the remaining steps plus one step's
estimate for the first. Reports sequences/s, the analytic model FLOPs achieved,
their fraction of the matmul peak measured in the same process, and the scan's
share of the model's forward+backward (the ablation of benchmarks/scan_share.py
at the config's micro-batch). Writes results/<machine>/<name>.json and .png.
"""

from __future__ import annotations

import os
import time
from typing import Dict

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common, scan_share, train_bench
from lvm_jax import cli, models as models_lib
from lvm_jax import checkpoint
from lvm_jax.data.payload import Payload
from lvm_jax.data.pipeline import TrainingPipeline
from lvm_jax.data.sequences import SequenceSet
from lvm_jax.train import step as step_lib
from lvm_jax.train.parallel import DataParallel

DEFAULT_CONFIG = "configs/s_contrastive.py"
REFERENCE_EPOCH = 396_000  # sequences in one epoch of the reference's training set
TARGET_H100_SECONDS = 10.0  # issue 13's target for one such epoch on one H100


def synthetic_sequences(num_sequences: int, payload_rows: int, context_length: int, dim: int,
                        seed: int = 0) -> SequenceSet:
  """A compact set: windows of consecutive rows over `payload_rows` random unit vectors."""
  rng = np.random.default_rng(seed)
  vectors = rng.standard_normal((payload_rows, dim), np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  rows = np.arange(payload_rows, dtype=np.int64)
  payload = Payload(vectors=vectors, article_index=np.zeros(payload_rows, np.int64),
                    chunk_index=rows, ids=rows, source="<epoch_bench payload>")
  starts = rng.integers(0, payload_rows - context_length, num_sequences)
  windows = (starts[:, None] + np.arange(context_length + 1)).astype(np.int32)
  keys = np.stack([np.zeros(num_sequences, np.int64), windows[:, -1].astype(np.int64)], axis=1)
  return SequenceSet(truth_keys=keys, payload_rows=windows, payload=payload)


def time_epoch(config: ml_collections.ConfigDict, sequences: SequenceSet) -> Dict:
  """Compile seconds, then the seconds of the epoch's remaining steps."""
  data_parallel = DataParallel.create(config.train.parallel)
  num_devices = data_parallel.num_local_devices
  dim = sequences.vector_dim
  pipeline = TrainingPipeline(sequences, micro_batch=config.train.batch_size,
                              accum_steps=config.train.accum_steps, num_devices=num_devices,
                              prefetch=config.data.prefetch, devices=data_parallel.local_devices,
                              place=data_parallel.place_batch)
  if pipeline.steps_per_epoch < 2:
    raise ValueError(f"--sequences={sequences.num_sequences} gives {pipeline.steps_per_epoch} "
                     f"step(s) of {pipeline.sequences_per_step}; give at least two steps' worth.")
  predictor = models_lib.predictor_from_config(config, dim)
  state = step_lib.create_train_state(config, predictor, jax.random.PRNGKey(0), dim,
                                      pipeline.steps_per_epoch)
  flops_per_sequence = train_bench.model_flops_per_sequence(config, state.params)
  p_step = step_lib.make_parallel_train_step(config, data_parallel)
  state = data_parallel.replicate(state)
  rng = jax.random.PRNGKey(0)
  batches = pipeline.iterate(0)
  start = time.perf_counter()
  state, metrics = p_step(state, next(batches), rng)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  steps = 0
  for batch in batches:
    state, metrics = p_step(state, batch, rng)
    steps += 1
  jax.block_until_ready((state, metrics))
  rest_s = time.perf_counter() - start
  step_s = rest_s / steps
  epoch_s = rest_s + step_s  # the first step, at the steady-state speed
  sequences_done = pipeline.steps_per_epoch * pipeline.sequences_per_step
  return {"devices": num_devices, "steps": pipeline.steps_per_epoch,
          "sequences": sequences_done, "dropped": pipeline.dropped_per_epoch,
          "compile_and_first_step_s": compile_s, "step_s": step_s, "epoch_s": epoch_s,
          "sequences_per_s": sequences_done / epoch_s,
          "model_flops_per_sequence": flops_per_sequence,
          "achieved_flop_per_s": flops_per_sequence * sequences_done / epoch_s,
          "scan_mode": predictor.model.scan_mode}


def run(config: ml_collections.ConfigDict, *, config_name: str, sequences: int,
        payload_rows: int, scan_share_repeats: int, name: str, out_dir: str) -> Dict:
  """Times the epoch, measures the peak and the scan share, writes JSON and PNG."""
  data = synthetic_sequences(sequences, min(payload_rows, sequences + 64),
                             config.data.context_length, config.data.synthetic.dim)
  report = {"config": config_name, "device": str(jax.devices()[0].device_kind),
            "platform": jax.default_backend(), "requested_sequences": sequences,
            **time_epoch(config, data)}
  report["matmul_peak_flop_per_s"] = common.matmul_peak_flops()
  report["fraction_of_matmul_peak"] = (report["achieved_flop_per_s"] /
                                       report["matmul_peak_flop_per_s"])
  report["projected_reference_epoch_s"] = REFERENCE_EPOCH / report["sequences_per_s"]
  report["h100_target_s"] = TARGET_H100_SECONDS
  if scan_share_repeats:
    sizes = models_lib.model_sizes(config)
    share = scan_share.run(repeats=scan_share_repeats, out_dir=out_dir,
                           batch=config.train.batch_size, length=config.data.context_length,
                           vector_dim=config.data.synthetic.dim, d_model=sizes["d_model"],
                           n_layers=sizes["n_layers"], d_state=sizes["d_state"])
    report["scan_share"] = share["scan_share"]
  print(f"{report['sequences']} sequences in {report['epoch_s']:.2f} s "
        f"({report['sequences_per_s']:.0f} seq/s; compile + first step "
        f"{report['compile_and_first_step_s']:.1f} s apart), "
        f"{report['achieved_flop_per_s'] / 1e9:.1f} GFLOP/s = "
        f"{100 * report['fraction_of_matmul_peak']:.1f} % of the matmul peak; "
        f"{REFERENCE_EPOCH} sequences would take {report['projected_reference_epoch_s']:.1f} s")
  path = common.write_json(name, report, out_dir)
  png = os.path.join(common.results_dir(out_dir), f"{name}.png")
  print(f"wrote {path}" + (f" and {png}" if plot(report, png) else ""))
  return report


def plot(report: Dict, path: str) -> bool:
  plt = common.pyplot()
  if plt is None:
    return False
  figure, axis = plt.subplots(figsize=(6, 3))
  parts = {"compile + first step": report["compile_and_first_step_s"],
           "epoch": report["epoch_s"]}
  if "scan_share" in report:
    parts["epoch: scan (est.)"] = report["epoch_s"] * report["scan_share"]
  axis.barh(list(parts), list(parts.values()))
  axis.set_xlabel("seconds")
  axis.set_title(f"{report['sequences']} sequences, {report['device']}")
  figure.tight_layout()
  figure.savefig(path, dpi=80)
  plt.close(figure)
  return True


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Experiment config file.",
                                  flag_values=flag_values)
  flags.DEFINE_integer("sequences", REFERENCE_EPOCH, "Sequences in the timed epoch.",
                       flag_values=flag_values)
  flags.DEFINE_integer("payload_rows", 50_000, "Random payload vectors the windows index.",
                       flag_values=flag_values)
  flags.DEFINE_integer("scan_share_repeats", 3, "Repeats of the scan ablation (0: skip it).",
                       flag_values=flag_values)
  flags.DEFINE_string("name", "epoch_bench", "Result file name.", flag_values=flag_values)
  common.define_out_dir(flag_values)
  common.dashed_aliases(flag_values, "payload_rows", "scan_share_repeats")


def settings(flag_values: flags.FlagValues = flags.FLAGS) -> Dict:
  return dict(config=flag_values.config,
              config_name=config_flags.get_config_filename(flag_values["config"]),
              sequences=flag_values.sequences, payload_rows=flag_values.payload_rows,
              scan_share_repeats=flag_values.scan_share_repeats,
              name=flag_values.name, out_dir=flag_values.out_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run(**settings())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
