"""Peak host memory of one training epoch over the compact (row-index) form: <= 1.3 x payload bytes.

  python benchmarks/data_memory.py [--num_rows 500000] [--dim 768] [--workdir /tmp/lvm_data_memory]
      [--out benchmarks/results/data_memory.json]

Stage 1 (this process) generates a synthetic payload of about --num_rows x --dim
and its compact train set. Stage 2 runs in a fresh process, so that its peak
resident set (ru_maxrss) counts only what training holds: JAX, the payload, the
row indices, the pipeline's batches and its prefetch queue. It reads the
payload and the compact train set with every validation on, then iterates one
epoch exactly as train.py does (micro-batch x accumulation, prefetch to
device) and touches every batch. Writes JSON (and prints it).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

from absl import flags, logging

from lvm_jax import cli
FLAGS = flags.FLAGS
flags.DEFINE_integer("num_rows", 500_000, "Approximate payload rows to generate.")
flags.DEFINE_integer("dim", 768, "Vector dimension.")
flags.DEFINE_string("workdir", "/tmp/lvm_data_memory", "Where the generated corpus goes.")
flags.DEFINE_string("out", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                        "data_memory.json"), "JSON result path.")
flags.DEFINE_integer("micro_batch", 256, "Sequences per micro-batch (config.train.batch_size).")
flags.DEFINE_integer("accum_steps", 4, "Micro-batches per step.")
flags.DEFINE_integer("prefetch", 2, "Batches staged on device ahead.")
flags.DEFINE_enum("stage", "all", ["all", "generate", "measure"],
                  "Internal: children run 'generate', then 'measure'.")
flags.DEFINE_float("limit", 1.3, "Pass when peak RSS <= limit x payload bytes.")

MEAN_CHUNKS_PER_ARTICLE = 23 * 0.98  # SyntheticKnobs defaults: lengths 6..40, 2 % gaps


def peak_rss_bytes() -> int:
  """This process's peak resident set.

  On Linux, VmHWM (the high-water mark of this address space): ru_maxrss
  survives execve and would report the parent's peak if it was larger, which
  is what the generating parent's is. Elsewhere ru_maxrss (bytes on macOS).
  """
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == "darwin" else peak * 1024


def current_rss_bytes() -> int:
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
  except OSError:
    return peak_rss_bytes()


def generate(workdir: str) -> dict:
  from lvm_jax.corpus import synthetic  # pylint: disable=g-import-not-at-top
  num_articles = int(round(FLAGS.num_rows / MEAN_CHUNKS_PER_ARTICLE))
  start = time.perf_counter()
  paths = synthetic.generate_synthetic_corpus(
      workdir, num_articles=num_articles, dim=FLAGS.dim, seed=0, with_texts=False,
      forms=("compact",))
  logging.info("Generated in %.1f s: %s", time.perf_counter() - start, paths)
  return paths


def measure(workdir: str) -> dict:
  """Runs in a fresh process: read + one epoch; returns the figures."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.pipeline import TrainingPipeline  # pylint: disable=g-import-not-at-top
  jax.devices()  # start the backend before the baseline reading
  rss_after_imports = current_rss_bytes()
  start = time.perf_counter()
  payload = read_payload(os.path.join(workdir, "payload"), load_texts=False)
  train_set = read_sequence_set(os.path.join(workdir, "train_rows.npz"), payload=payload,
                                        expected_context_length=5)
  read_seconds = time.perf_counter() - start
  rss_after_read = current_rss_bytes()
  peak_after_read = peak_rss_bytes()
  pipeline = TrainingPipeline(train_set, micro_batch=FLAGS.micro_batch,
                              accum_steps=FLAGS.accum_steps, num_devices=1, seed=0,
                              prefetch=FLAGS.prefetch)
  start = time.perf_counter()
  checksum = 0.0
  timeline = []
  for step, batch in enumerate(pipeline.iterate(0)):
    checksum += float(np.asarray(batch["targets"][0, 0, 0, 0]))  # waits for the transfer
    if step % 10 == 0:
      timeline.append({"step": step, "rss_bytes": current_rss_bytes(),
                       "peak_rss_bytes": peak_rss_bytes()})
  epoch_seconds = time.perf_counter() - start
  peak = peak_rss_bytes()
  payload_bytes = payload.nbytes
  return {
      "payload_rows": payload.num_rows, "dim": payload.vector_dim,
      "payload_bytes": payload_bytes, "payload_vector_bytes": int(payload.vectors.nbytes),
      "train_sequences": train_set.num_sequences,
      "compact_index_bytes": int(train_set.payload_rows.nbytes),
      "steps": pipeline.steps_per_epoch, "sequences_per_step": pipeline.sequences_per_step,
      "dropped_per_epoch": pipeline.dropped_per_epoch, "prefetch": FLAGS.prefetch,
      "rss_after_imports_bytes": rss_after_imports, "rss_after_read_bytes": rss_after_read,
      "peak_rss_after_read_bytes": peak_after_read,
      "peak_rss_bytes": peak, "peak_over_payload": peak / payload_bytes,
      "limit": FLAGS.limit, "passed": peak <= FLAGS.limit * payload_bytes,
      "read_seconds": read_seconds, "epoch_seconds": epoch_seconds,
      "sequences_per_second": pipeline.steps_per_epoch * pipeline.sequences_per_step /
                              epoch_seconds,
      "jax_version": jax.__version__, "timeline": timeline, "checksum": checksum,
  }


def main(argv) -> None:
  del argv
  if FLAGS.stage == "measure":
    print(json.dumps(measure(FLAGS.workdir)))
    return
  if FLAGS.stage == "generate":
    generate(FLAGS.workdir)
    return
  # Each stage in its own process: the measured one must not inherit the generator's memory.
  common = [f"--workdir={FLAGS.workdir}", f"--num_rows={FLAGS.num_rows}", f"--dim={FLAGS.dim}",
            f"--micro_batch={FLAGS.micro_batch}", f"--accum_steps={FLAGS.accum_steps}",
            f"--prefetch={FLAGS.prefetch}", f"--limit={FLAGS.limit}"]
  outputs = {}
  for stage in ("generate", "measure"):
    child = subprocess.run([sys.executable, os.path.abspath(__file__), f"--stage={stage}"] + common,
                           capture_output=True, text=True, check=False)
    if child.returncode != 0:
      raise RuntimeError(f"stage {stage} failed:\n{child.stderr[-4000:]}")
    outputs[stage] = child.stdout
  result = json.loads(outputs["measure"].strip().splitlines()[-1])
  result["command"] = " ".join(["python", "benchmarks/data_memory.py"] + sys.argv[1:])
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
  with open(FLAGS.out, "w") as f:
    json.dump(result, f, indent=1)
  gib = 1024 ** 3
  print(json.dumps({k: v for k, v in result.items() if k != "timeline"}, indent=1))
  print(f"peak RSS {result['peak_rss_bytes'] / gib:.3f} GiB = {result['peak_over_payload']:.3f} x "
        f"payload ({result['payload_bytes'] / gib:.3f} GiB); limit {FLAGS.limit} x: "
        f"{'PASS' if result['passed'] else 'FAIL'} -> {FLAGS.out}")


if __name__ == "__main__":
  cli.run(main)
