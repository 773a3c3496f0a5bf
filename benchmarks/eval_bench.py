"""Evaluation speed: IVF per-query and batched latency and recall@50 against Flat, per nprobe.

  python -m benchmarks.eval_bench                     # 584k x 768, the reference's corpus size
  python -m benchmarks.eval_bench --rows 20000 --queries 200 --nprobes 8,64   # quick

The payload is the synthetic corpus's generator (shared dynamic + clustered
topics + noise) at the requested size; the queries are the mean of each eval
window's context, which, like a model's prediction, lies near but not on the
corpus. Writes benchmarks/results/<machine>/eval_bench.json and .png.
"""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace
from typing import List, Optional

import faiss
import numpy as np
from absl import flags

from benchmarks import common
from lvm_jax.data import synthetic
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import search

# Articles are 6..40 chunks (mean 23) and a few chunks fall to gaps: 22.5 lands on `rows`.
CHUNKS_PER_ARTICLE = 22.5


def make_payload_and_queries(rows: int, dim: int, queries: int, seed: int):
  knobs = synthetic.SyntheticKnobs(num_articles=max(2, round(rows / CHUNKS_PER_ARTICLE)), dim=dim,
                                   seed=seed, with_texts=False)
  payload, _, _ = synthetic.sample_corpus(knobs)
  rng = np.random.default_rng(seed)
  # Windows of 5 consecutive chunks of one article: mean of the context as the query.
  starts = rng.choice(payload.num_rows - 6, size=queries * 3, replace=False)
  same_article = payload.article_index[starts] == payload.article_index[starts + 5]
  starts = starts[same_article][:queries]
  contexts = payload.vectors[starts[:, None] + np.arange(5)[None, :]]
  query_vectors = contexts.mean(axis=1)
  query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
  return payload, np.ascontiguousarray(query_vectors, np.float32)


def run(args) -> dict:
  start = time.perf_counter()
  payload, queries = make_payload_and_queries(args.rows, args.dim, args.queries, args.seed)
  generate_s = time.perf_counter() - start
  print(f"payload {payload.num_rows} x {payload.vector_dim} generated in {generate_s:.1f} s; "
        f"{len(queries)} queries", flush=True)
  start = time.perf_counter()
  exact = faiss.IndexFlatIP(payload.vector_dim)
  exact.add(payload.vectors)
  _, exact_rows, _ = search.search(exact, queries, args.k)
  exact_s = time.perf_counter() - start
  start = time.perf_counter()
  ivf = index_lib.build_index(payload.vectors, kind="ivf_flat", nlist=args.nlist)
  build_s = time.perf_counter() - start
  nlist = faiss.extract_index_ivf(ivf).nlist
  print(f"IVF-Flat nlist={nlist} built in {build_s:.1f} s (exact top-{args.k} in {exact_s:.1f} s)",
        flush=True)
  indexes = {"ivf_flat": ivf}
  if "ivf_sq8" in args.kinds:
    # The same k-means cells (cloned quantizer: no second clustering), 8-bit codes in the lists.
    start = time.perf_counter()
    sq8 = index_lib.ivf_index(faiss.clone_index(faiss.extract_index_ivf(ivf).quantizer),
                              "ivf_sq8", nlist)
    sq8.train(payload.vectors[::max(1, payload.num_rows // 100_000)])
    sq8.add(payload.vectors)
    indexes["ivf_sq8"] = sq8
    print(f"IVF-SQ8 on the same cells built in {time.perf_counter() - start:.1f} s", flush=True)
  rows = []
  for kind in args.kinds:
    for nprobe in args.nprobes:
      index = indexes[kind]
      index_lib.set_nprobe(index, nprobe)
      _, approximate_rows, qps = search.search(index, queries, args.k)
      latency = search.latency_summary(search.per_query_latency_ms(index, queries, args.k))
      row = {"kind": kind, "nprobe": nprobe,
             f"recall@{args.k}_vs_flat": search.index_recall(approximate_rows, exact_rows),
             "batched_qps": qps, **latency}
      rows.append(row)
      print(f"{kind:8s} nprobe {nprobe:4d}: recall@{args.k} {row[f'recall@{args.k}_vs_flat']:.4f}"
            f"  P50 {latency['latency_p50_ms']:.3f} ms  P95 {latency['latency_p95_ms']:.3f} ms  "
            f"P99 {latency['latency_p99_ms']:.3f} ms  batched {qps:,.0f} q/s", flush=True)
  return {"rows_in_payload": payload.num_rows,
          "dim": payload.vector_dim, "queries": len(queries), "k": args.k, "nlist": nlist,
          "faiss_version": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(),
          "generate_seconds": generate_s, "build_seconds": build_s,
          "exact_search_seconds": exact_s, "results": rows,
          "targets": {"latency_p95_ms_at_nprobe_64": 1.45, "recall_at_50": 0.95}}


def plot(report: dict, path: str) -> bool:
  plt = common.pyplot()
  if plt is None:
    return False
  k = report["k"]
  fig, axis = plt.subplots(figsize=(6, 4))
  for kind in sorted({r["kind"] for r in report["results"]}):
    rows = [r for r in report["results"] if r["kind"] == kind]
    axis.plot([r[f"recall@{k}_vs_flat"] for r in rows], [r["latency_p95_ms"] for r in rows], "o-",
              label=kind)
    for r in rows:
      axis.annotate(str(r["nprobe"]), (r[f"recall@{k}_vs_flat"], r["latency_p95_ms"]), fontsize=7)
  axis.axhline(1.45, color="red", linestyle="--", label="P95 gate 1.45 ms")
  axis.axvline(0.95, color="gray", linestyle=":", label="recall 0.95")
  axis.set_xlabel(f"recall@{k} vs Flat")
  axis.set_ylabel("per-query P95 (ms, 1 thread)")
  axis.set_title(f"IVF nlist={report['nlist']} (labels: nprobe), {report['rows_in_payload']:,} x "
                 f"{report['dim']} ({common.machine_name()})")
  axis.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  return True


def define_flags(values: flags.FlagValues) -> None:
  d = dict(flag_values=values)
  flags.DEFINE_integer("rows", 584_000, "Payload rows.", **d)
  flags.DEFINE_integer("dim", 768, "Vector dimension.", **d)
  flags.DEFINE_integer("queries", 1000, "Queries timed one at a time.", **d)
  flags.DEFINE_integer("k", 50, "Candidates a query.", **d)
  flags.DEFINE_integer("nlist", None, "IVF cells (default: ≈ 4·√rows).", **d)
  flags.DEFINE_list("nprobes", ["8", "16", "32", "64", "128"], "nprobe values.", **d)
  flags.DEFINE_integer("seed", 0, "Generator seed.", **d)
  flags.DEFINE_list("kinds", ["ivf_flat", "ivf_sq8"], "ivf_flat and/or ivf_sq8.", **d)
  flags.DEFINE_string("out-dir", common.RESULTS_ROOT, "Results root.", **d)


def parse_args(argv: List[str]) -> SimpleNamespace:
  """absl flags (per call, so tests can run it twice) -> the settings `run` reads."""
  values = flags.FlagValues()
  define_flags(values)
  if "--help" in argv or "-h" in argv:
    print(__doc__ + "\nflags:\n" + values.get_help(include_special_flags=False))
    raise SystemExit(0)
  values(["eval_bench"] + list(argv))
  settings = {name: values[name].value for name in values}
  settings["nprobes"] = [int(n) for n in settings["nprobes"]]
  settings["out_dir"] = settings.pop("out-dir")
  return SimpleNamespace(**settings)


def main(argv: Optional[List[str]] = None) -> dict:
  args = parse_args(list(sys.argv[1:] if argv is None else argv))
  report = run(args)
  json_path = common.write_json("eval_bench", report, args.out_dir)
  png = os.path.join(common.results_dir(args.out_dir), "eval_bench.png")
  print(f"wrote {json_path}" + (f" and {png}" if plot(report, png) else ""))
  return report


if __name__ == "__main__":
  main()
