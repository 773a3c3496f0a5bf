"""The selective-scan kernel: every mode x forward / forward+backward x L, at fixed tokens.

  python -m benchmarks.scan_bench            # the grid below + the reference training shape
  python -m benchmarks.scan_bench --quick    # fewer lengths and a smaller batch of tokens
  python -m benchmarks.scan_bench --lengths=5,16 --states=4 --out_dir=/tmp/bench

Reports the median of >= 5 timed runs after compilation, the compile time, the
compiled executable's temporary memory, achieved FLOP/s and bytes/s beside the
matmul and copy peaks measured in this process, and the ratio of each mode to
"associative" at the reference shape (batch 256, L 5, D 1536, N 128). Writes
benchmarks/results/<machine>/scan_bench.json and .png.
"""

from __future__ import annotations

import os
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import common
from lvm_jax import cli
from lvm_jax.ops.scan import (CONCRETE_MODES, KERNEL_MODES, XLA_MODES, batch_tile,
                              resolve_scan_type, selective_scan)


# The unrolled program grows with L, and so does its compile time (compile_s in
# results/<machine>/scan_bench.json); longer L is left to the other modes.
UNROLLED_MAX_LENGTH = 64
# "associative" materialises [tile, L, D, N] several times over; a tile beyond this would not
# fit in the memory of the machines this ran on, so it is skipped (and reported as skipped).
ASSOCIATIVE_MAX_TILE_BYTES = 1 << 30
# Multiply-adds per (batch, position, channel, state) element of the forward:
# exp(delta*A), decay*h, delta*u*B (2), + drive, h*C and its sum.
FORWARD_FLOPS_PER_ELEMENT = 8
BACKWARD_FACTOR = 3.0  # forward + a backward of about twice the forward's work


def scan_inputs(batch, length, channels, state, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 5)
  return (jax.random.normal(keys[0], (batch, length, channels)),
          jax.nn.softplus(jax.random.normal(keys[1], (batch, length, channels))) * 0.1,
          -jnp.exp(jax.random.normal(keys[2], (channels, state)) * 0.1),
          jax.random.normal(keys[3], (batch, length, state)),
          jax.random.normal(keys[4], (batch, length, state)),
          jnp.ones((channels,)))


def measure(mode, batch, length, channels, state, backward, repeats, chunk_size=None):
  args = scan_inputs(batch, length, channels, state)
  forward = lambda *a: selective_scan(*a, mode=mode, chunk_size=chunk_size)
  if backward:
    fn = jax.jit(jax.grad(lambda *a: jnp.sum(forward(*a)), argnums=(0, 1, 2, 3, 4)))
  else:
    fn = jax.jit(forward)
  result = common.time_compiled(fn, *args, repeats=repeats)
  elements = batch * length * channels * state
  flops = FORWARD_FLOPS_PER_ELEMENT * elements * (BACKWARD_FACTOR if backward else 1.0)
  # The least a scan must move: u, delta, y [B, L, D], B and C [B, L, N] (x2 with gradients).
  io_bytes = 4 * (3 * batch * length * channels + 2 * batch * length * state) * (2 if backward else 1)
  return {"mode": mode, "pass": "fwd+bwd" if backward else "fwd", "batch": batch, "L": length,
          "D": channels, "N": state, **result, "flop_per_s": flops / result["median_s"],
          "io_bytes_per_s": io_bytes / result["median_s"],
          "state_bytes_all_positions": 4 * elements}


def measure_grid(*, lengths: Sequence[int], states: Sequence[int], modes: Sequence[str],
                 tokens: int, channels: int, repeats: int, reference: Tuple[int, int, int, int]):
  """The grid (batch = tokens / L) and every mode at the reference shape, with the probes."""
  matmul_peak = common.matmul_peak_flops()
  copy_peak = common.copy_bandwidth()
  print(f"probes: matmul {matmul_peak / 1e9:.1f} GFLOP/s, copy {copy_peak / 1e9:.1f} GB/s",
        flush=True)
  rows, skipped = [], []
  for state in states:
    for length in lengths:
      batch = max(1, tokens // length)
      for mode in modes:
        tile_bytes = 4 * batch_tile(batch, channels, state) * length * channels * state
        if (mode == "unrolled" and length > UNROLLED_MAX_LENGTH) or (
            mode == "associative" and tile_bytes > ASSOCIATIVE_MAX_TILE_BYTES):
          skipped.append({"mode": mode, "L": length, "N": state})
          continue
        for backward in (False, True):
          row = measure(mode, batch, length, channels, state, backward, repeats)
          row.update(matmul_fraction=row["flop_per_s"] / matmul_peak)
          rows.append(row)
          print(f"N={state:4d} L={length:5d} B={batch:5d} {mode:11s} {row['pass']:7s} "
                f"{row['median_s'] * 1e3:9.2f} ms  compile {row['compile_s']:.2f} s  "
                f"temp {row['temp_bytes'] / 2**20 if row['temp_bytes'] else -1:9.1f} MiB", flush=True)
  reference_rows, timed_modes = [], list(modes) + ["auto"]
  for mode in timed_modes:
    for backward in (False, True):  # the reference shape: every mode
      row = measure(mode, *reference, backward, repeats)
      row.update(matmul_fraction=row["flop_per_s"] / matmul_peak, reference_shape=True)
      reference_rows.append(row)
      print(f"reference shape {reference} {mode:11s} {row['pass']:7s} {row['median_s'] * 1e3:9.1f} ms  "
            f"temp {row['temp_bytes'] / 2**20 if row['temp_bytes'] else -1:9.1f} MiB", flush=True)
  by_mode = {(r["mode"], r["pass"]): r["median_s"] for r in reference_rows}
  ratios = {f"{mode}_{p}_speedup_vs_associative": by_mode[("associative", p)] / by_mode[(mode, p)]
            for mode in timed_modes for p in ("fwd", "fwd+bwd")
            if ("associative", p) in by_mode}  # empty when --modes leaves it out
  long_memory = [r for r in rows if r["pass"] == "fwd+bwd" and r["L"] >= 1024]
  return {"reference": reference, "matmul_peak_flop_per_s": matmul_peak, "copy_peak_bytes_per_s": copy_peak,
          "auto_mode_at_reference": resolve_scan_type("auto", reference[1]).value,
          "auto_mode_at_1024": resolve_scan_type("auto", 1024).value,
          "grid": rows, "skipped": skipped, "reference_shape": reference_rows, "ratios_at_reference": ratios,
          "long_sequence_fwd_bwd_memory": [
              {k: r[k] for k in ("mode", "L", "batch", "N", "temp_bytes",
                                 "state_bytes_all_positions")} for r in long_memory]}


def plot(report, path) -> bool:
  plt = common.pyplot()
  if plt is None:
    return False
  states = sorted({r["N"] for r in report["grid"]})
  fig, axes = plt.subplots(1, len(states), figsize=(6 * len(states), 4), squeeze=False)
  for axis, state in zip(axes[0], states):
    for mode in sorted({r["mode"] for r in report["grid"]}):
      for p, style in (("fwd", "--"), ("fwd+bwd", "-")):
        points = [(r["L"], r["median_s"] * 1e3) for r in report["grid"]
                  if r["N"] == state and r["mode"] == mode and r["pass"] == p]
        if points:
          axis.plot(*zip(*points), style, marker="o", label=f"{mode} {p}")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("L (batch = tokens / L)")
    axis.set_ylabel("median ms")
    axis.set_title(f"selective_scan, D={report['grid'][0]['D']}, N={state}")
    axis.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return True


def run(*, out_dir: str, **grid) -> dict:
  """Measures (`grid`: the keyword arguments of measure_grid), writes the JSON and PNG."""
  report = measure_grid(**grid)
  path = common.write_json("scan_bench", report, out_dir)
  png = os.path.join(common.results_dir(out_dir), "scan_bench.png")
  print("ratios at the reference shape:", {k: round(v, 2) for k, v in
                                           report["ratios_at_reference"].items()})
  print(f"wrote {path}" + (f" and {png}" if plot(report, png) else ""))
  return report


def default_modes():
  """The XLA modes, and the fused kernel of this platform: Pallas on GPU (elsewhere it would run
  in its interpreter), the native kernel on CPU (it runs nowhere else)."""
  kernel = KERNEL_MODES.get(jax.default_backend())
  return list(XLA_MODES) + ([kernel] if kernel else [])


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_boolean("quick", False, "L in {5, 64, 1024}, 2048 tokens (overrides --lengths "
                       "and --tokens).", flag_values=flag_values)
  flags.DEFINE_integer("tokens", 4096, "batch x L of the grid.", flag_values=flag_values)
  flags.DEFINE_integer("channels", 1536, "D of the grid.", flag_values=flag_values)
  flags.DEFINE_list("lengths", "5,16,64,256,1024,4096", "L of the grid.", flag_values=flag_values)
  flags.DEFINE_list("states", "16,128", "N of the grid.", flag_values=flag_values)
  flags.DEFINE_list("modes", [], "Scan modes to time; empty: default_modes().",
                    flag_values=flag_values)
  flags.DEFINE_integer("repeats", 5, "Timed runs after compiling; the median is reported.",
                       flag_values=flag_values)
  flags.DEFINE_list("reference", "256,5,1536,128", "batch,L,D,N of the training shape.",
                    flag_values=flag_values)
  common.define_out_dir(flag_values)
  flags.register_validator("modes", lambda modes: set(modes) <= set(CONCRETE_MODES),
                           f"--modes: each must be one of {list(CONCRETE_MODES)}.",
                           flag_values=flag_values)
  flags.register_validator("reference", lambda shape: len(shape) == 4,
                           "--reference: four integers, batch,L,D,N.", flag_values=flag_values)


def settings(flag_values: flags.FlagValues = flags.FLAGS) -> dict:
  """The keyword arguments of run() that the parsed flags ask for."""
  lengths, tokens = flag_values.lengths, flag_values.tokens
  if flag_values.quick:
    lengths, tokens = ["5", "64", "1024"], 2048
  return dict(lengths=[int(x) for x in lengths], states=[int(x) for x in flag_values.states],
              modes=list(flag_values.modes) or default_modes(), tokens=tokens,
              channels=flag_values.channels, repeats=flag_values.repeats,
              reference=tuple(int(x) for x in flag_values.reference),
              out_dir=flag_values.out_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  run(**settings())


if __name__ == "__main__":
  define_flags()
  cli.run(main)
