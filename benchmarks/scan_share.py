"""How much of the model's forward+backward is the selective scan: an ablation in one run.

  python -m benchmarks.scan_share                 # mamba_s at d_model 768, micro-batch 256, L 5
  python -m benchmarks.scan_share --batch 8 --d-model 64

Times jit(grad(model)) with the real scan, then with the scan replaced by its
skip term (y = D * u), in the same process. Writes results/<machine>/scan_share.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks import common
from lvm_jax.models import create_model
from lvm_jax.models import mamba


def model_fwd_bwd_seconds(args, repeats: int) -> float:
  model = create_model("mamba_s", vector_dim=args.vector_dim, d_model=args.d_model,
                       n_layers=args.n_layers, d_state=args.d_state, dropout=0.0)
  x = jax.random.normal(jax.random.PRNGKey(0), (args.batch, args.length, args.vector_dim))
  params = model.init(jax.random.PRNGKey(0), x)["params"]
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(model.apply({"params": p}, x))))
  jax.block_until_ready(grad(params, x))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(grad(params, x))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--length", type=int, default=5)
  p.add_argument("--vector-dim", type=int, default=768)
  p.add_argument("--d-model", type=int, default=768)
  p.add_argument("--n-layers", type=int, default=8)
  p.add_argument("--d-state", type=int, default=128)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--out-dir", default=common.RESULTS_ROOT)
  args = p.parse_args(argv)
  with_scan = model_fwd_bwd_seconds(args, args.repeats)
  real_scan = mamba.selective_scan
  mamba.selective_scan = lambda u, delta, A, B, C, D, **kw: u * D + 0.0 * delta
  try:
    without_scan = model_fwd_bwd_seconds(args, args.repeats)
  finally:
    mamba.selective_scan = real_scan
  report = {"shape": vars(args) | {"out_dir": None}, "with_scan_s": with_scan,
            "scan_replaced_by_skip_s": without_scan,
            "scan_share": (with_scan - without_scan) / with_scan}
  print(f"model fwd+bwd: {with_scan:.2f} s with the scan, {without_scan:.2f} s without: the scan "
        f"is {100 * report['scan_share']:.0f} % of it")
  print("wrote", common.write_json("scan_share", report, args.out_dir))
  return report


if __name__ == "__main__":
  main()
