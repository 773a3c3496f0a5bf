"""Judge a checkpoint by FAISS retrieval of the true next chunk from the whole payload.

  python -m lvm_jax.eval --checkpoint runs/s_tiny --out runs/s_tiny/eval.json

With a workdir trained on the synthetic corpus, --eval-npz, --payload and --faiss
default to its data/ directory. Exit code: 0 when every gate passes, 1 when a
gate fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from absl import logging

from lvm_jax import backend
from lvm_jax.data import index as index_lib
from lvm_jax.eval.evaluator import EvalOptions, Gates

BATCH_SIZE = 1024


def parse_args(argv=None):
  p = argparse.ArgumentParser(prog="python -m lvm_jax.eval", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="training workdir or checkpoint directory")
  p.add_argument("--eval-npz", help="eval NPZ (contexts, targets, truth_keys, provenance)")
  p.add_argument("--payload", help="payload directory (the corpus searched)")
  p.add_argument("--faiss", help="FAISS index of the payload; built from it when absent")
  p.add_argument("--index-kind", default="ivf_flat", choices=index_lib.INDEX_KINDS,
                 help="kind built when --faiss is absent")
  p.add_argument("--nlist", type=int, help="IVF cells when building (default ≈ 4·√M)")
  p.add_argument("--limit", type=int, help="evaluate only the first N sequences")
  p.add_argument("--nprobe", type=int, default=64)
  p.add_argument("--k", type=int, default=50)
  p.add_argument("--latency-queries", type=int, default=1000,
                 help="queries timed one at a time on one thread")
  p.add_argument("--exclude-context", action="store_true",
                 help="drop each window's own context chunks from its candidates")
  p.add_argument("--mmr-lambda", type=float, help="add an MMR-reranked row")
  p.add_argument("--w-same-article", type=float, help="add a same-article-bias row")
  p.add_argument("--w-next-gap", type=float, help="add a next-gap-bias row")
  p.add_argument("--w-directional", type=float, help="add a directional-bonus row")
  p.add_argument("--gate-row", default="model", help="the row the gates judge")
  p.add_argument("--gate-article-rerankers", action="store_true",
                 help="allow gating on a row that uses the query's article identity")
  p.add_argument("--allow-provenance-mismatch", action="store_true")
  p.add_argument("--gate-contain50", type=float, default=0.60)
  p.add_argument("--gate-eff5", type=float, default=0.68)
  p.add_argument("--gate-r5", type=float, default=0.40)
  p.add_argument("--gate-p95", type=float, default=1.45)
  p.add_argument("--out", help="write the JSON report here")
  p.add_argument("--backend", default="auto", choices=tuple(backend.PLATFORMS))
  return p.parse_args(argv)


def default_paths(args, workdir: str):
  data_dir = os.path.join(workdir, "data")
  eval_npz = args.eval_npz or os.path.join(data_dir, "eval.npz")
  payload = args.payload or os.path.join(data_dir, "payload")
  faiss_path = args.faiss
  if faiss_path is None and args.payload is None and os.path.exists(
      os.path.join(data_dir, "payload.faiss")):
    faiss_path = os.path.join(data_dir, "payload.faiss")
  return eval_npz, payload, faiss_path


def make_predict_fn(loaded):
  """Jitted last-position predictions in fixed-size batches (one compilation)."""
  import jax  # pylint: disable=g-import-not-at-top

  apply = jax.jit(lambda params, x: loaded.model.apply({"params": params}, x, train=False)[:, -1])

  def predict(contexts: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(contexts), BATCH_SIZE):
      batch = contexts[start:start + BATCH_SIZE]
      padded = np.zeros((BATCH_SIZE,) + batch.shape[1:], np.float32)
      padded[:len(batch)] = batch
      out.append(np.asarray(apply(loaded.params, padded))[:len(batch)])
    return np.concatenate(out)

  predict(np.zeros((1,) + (loaded.config.data.context_length, loaded.model.vector_dim),
                   np.float32))  # compile outside the timed run
  return predict


def main(argv=None) -> int:
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)
  backend.initialize(args.backend)
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  from lvm_jax.data.eval_sets import read_eval_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.errors import DataFormatError  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import report  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval.evaluator import RetrievalEvaluator  # pylint: disable=g-import-not-at-top

  try:
    loaded = checkpoint.load(args.checkpoint)
    eval_npz, payload_path, faiss_path = default_paths(args, loaded.workdir)
    payload = read_payload(payload_path, load_texts=False)
    eval_set = read_eval_set(eval_npz, expected_dim=payload.vector_dim,
                                     expected_source=f"the payload {payload_path}")
    if eval_set.vector_dim != loaded.model.vector_dim:
      raise DataFormatError(f"{eval_npz}: field 'contexts': vectors are {eval_set.vector_dim}-d "
                            f"but the checkpoint {loaded.path} predicts "
                            f"{loaded.model.vector_dim}-d vectors. Fix: evaluate with the data "
                            "the model was trained for.")
    if faiss_path:
      index = index_lib.read_index(faiss_path, payload.vectors)
    else:
      logging.info("No --faiss given: building a %s index over %d rows", args.index_kind,
                   payload.num_rows)
      index = index_lib.build_index(payload.vectors, kind=args.index_kind, nlist=args.nlist)
    options = EvalOptions(
        k=args.k, nprobe=args.nprobe, limit=args.limit, latency_queries=args.latency_queries,
        exclude_context=args.exclude_context, mmr_lambda=args.mmr_lambda,
        w_same_article=args.w_same_article, w_next_gap=args.w_next_gap,
        w_directional=args.w_directional, gate_row=args.gate_row,
        gate_article_rerankers=args.gate_article_rerankers,
        allow_provenance_mismatch=args.allow_provenance_mismatch,
        gates=Gates(args.gate_contain50, args.gate_eff5, args.gate_r5, args.gate_p95))
    evaluator = RetrievalEvaluator(eval_set, payload, index, options)
    result = evaluator.run(make_predict_fn(loaded))
  except (DataFormatError, checkpoint.CheckpointError, ValueError) as error:
    print(f"error: {error}", file=sys.stderr)
    return 2

  knobs = {"index": index_lib.index_kind(index), "nprobe": args.nprobe, "k": args.k,
           "exclude_context": args.exclude_context, "index_path": faiss_path}
  print(report.summary_line(result))
  print(report.rows_table(result))
  if any(r.get("uses_article_identity") for r in result["rows"].values()):
    print("Rows marked (article identity) know the query's article: continuation within a "
          "known article, not open retrieval.")
  print(f"index recall vs Flat: {result['index_recall']}; batched "
        f"{result['gated']['batched_qps']:.0f} queries/s; model "
        f"{result['inference_ms_per_sequence']:.4f} ms/sequence; per-query latency "
        + ", ".join(f"{k}={v:.3f}" for k, v in result["latency"].items()))
  print(report.gate_table(result, options.gates))
  if args.out:
    report.write_json(args.out, report.json_report(
        result, checkpoint=loaded.path, limit=args.limit,
        val_cosine=report.val_cosine_of(loaded.workdir), knobs=knobs))
    print(f"wrote {args.out}")
  return 0 if all(result["gate_results"].values()) else 1


if __name__ == "__main__":
  sys.exit(main())
