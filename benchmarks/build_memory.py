"""Peak memory of `python -m lvm_jax.corpus.build` on a payload the size of issue 19's corpus.

  python -m benchmarks.build_memory [--num_rows 300000] [--dim 384] [--workdir /tmp/lvm_build_memory]
      [--out benchmarks/results/build_memory.json]

Writes a synthetic payload (random unit vectors; articles of 30 chunks; texts of
about 400 characters, as MiniLM-ingested documentation has) and runs the build
CLI on it in a child process, whose peak resident set (ru_maxrss of the
children) is then only the build's. Writes JSON (and prints it) with the
payload's bytes beside the peak, so the ratio says whether build holds more
than a few copies of the payload.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CHUNKS_PER_ARTICLE = 30
TEXT_CHARS = 400


def write_synthetic_payload(path: str, num_rows: int, dim: int, seed: int = 0) -> int:
  """A valid payload of `num_rows` rows; returns the bytes of its files."""
  from lvm_jax.data.payload import Payload, write_payload  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  vectors = np.empty((num_rows, dim), np.float32)
  for start in range(0, num_rows, 50_000):  # in blocks: float64 normals of all rows are large
    block = rng.standard_normal((min(50_000, num_rows - start), dim), dtype=np.float32)
    vectors[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
  rows = np.arange(num_rows, dtype=np.int64)
  filler = "word " * (TEXT_CHARS // 5)
  texts = [f"chunk {row} {filler}" for row in range(num_rows)]
  payload = Payload(vectors=vectors, article_index=rows // CHUNKS_PER_ARTICLE,
                    chunk_index=rows % CHUNKS_PER_ARTICLE, ids=rows, texts=texts,
                    provenance={"embedder_id": "synthetic", "norm": "l2",
                                "metric": "inner_product"}, source=path)
  write_payload(path, payload)
  return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_rows", type=int, default=300_000)
  parser.add_argument("--dim", type=int, default=384)
  parser.add_argument("--workdir", default="/tmp/lvm_build_memory")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "results", "build_memory.json"))
  args = parser.parse_args()
  from lvm_jax import atomic  # pylint: disable=g-import-not-at-top
  payload_path = os.path.join(args.workdir, "payload")
  if not os.path.exists(os.path.join(payload_path, "provenance.json")):
    payload_bytes = write_synthetic_payload(payload_path, args.num_rows, args.dim)
  else:
    payload_bytes = sum(os.path.getsize(os.path.join(payload_path, name))
                        for name in os.listdir(payload_path))
  command = [sys.executable, "-m", "lvm_jax.corpus.build", "--payload", payload_path, "--out",
             os.path.join(args.workdir, "sets"), "--forms", "full,compact"]
  print("+ " + " ".join(command), flush=True)
  started = time.perf_counter()
  subprocess.run(command, check=True)
  seconds = time.perf_counter() - started
  peak_bytes = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: KiB
  result = {"num_rows": args.num_rows, "dim": args.dim, "payload_bytes": payload_bytes,
            "vector_bytes": args.num_rows * args.dim * 4, "build_peak_rss_bytes": peak_bytes,
            "peak_over_payload": round(peak_bytes / payload_bytes, 2),
            "build_seconds": round(seconds, 1), "load_average": os.getloadavg(),
            "command": " ".join(["python", "-m", "benchmarks.build_memory"] + sys.argv[1:])}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  atomic.write_json(args.out, result, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
