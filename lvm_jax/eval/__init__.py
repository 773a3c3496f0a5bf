"""FAISS retrieval evaluation: `python -m lvm_jax.eval --checkpoint WORKDIR`.

  evaluator    checks (provenance, truth alignment), predictions, search, baselines, gates
  metrics      R@k, Contain@K, Eff@5, MRR, cosines
  search       batched search, single-threaded per-query latency, index recall
  rerank       MMR, same-article, next-gap and directional rerankers
  report       summary line, tables, JSON with the reference tool's keys
  build_index  CLI: a FAISS index over a payload
Imports only the checkpoint loader from training.
"""
