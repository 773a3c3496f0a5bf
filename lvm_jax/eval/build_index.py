"""Build a FAISS index over a payload (ids = payload rows).

  python -m lvm_jax.eval.build_index --payload data/payload --out data/payload.faiss \
      --kind ivf_flat --nlist 3056 --train-sample 200000
"""

from __future__ import annotations

import argparse
import time

from absl import logging

from lvm_jax.data.payload import read_payload
from lvm_jax.data import index as index_lib


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m lvm_jax.eval.build_index", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--payload", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--kind", default="ivf_flat", choices=index_lib.INDEX_KINDS)
  p.add_argument("--nlist", type=int, help="IVF cells (default ≈ 4·√M)")
  p.add_argument("--train-sample", type=int, help="k-means training points (default 64 a cell)")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  logging.set_verbosity(logging.INFO)
  payload = read_payload(args.payload, load_texts=False)
  start = time.perf_counter()
  index = index_lib.build_index(payload.vectors, kind=args.kind, nlist=args.nlist,
                                train_sample=args.train_sample, seed=args.seed)
  index_lib.write_index(index, args.out)
  print(f"{args.kind} index over {payload.num_rows} rows -> {args.out} "
        f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
