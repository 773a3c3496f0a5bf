"""Retrieval in one place: FAISS indexes, ranking metrics, baseline predictors, the evaluator.

  index      FAISS index build / write / read with checks (FAISS loaded on first use)
  search     batched search and its candidate views (all; context excluded),
             single-threaded per-query latency, index recall
  metrics    the one ranking implementation: R@k, Contain@K, Eff@5, MRR, exact ranks,
             rank_metrics (the training loop's validation proxy), cosines
  rerank     MMR, same-article, next-gap and directional rerankers (heuristic_rows)
  eval_inputs  EvalOptions, the gates (GATES, Gates), the provenance and truth-alignment checks
  baselines  the scoreboard's rows (BASELINE_ROWS, baseline_predictors: copy-last,
             mean-of-context, recency with a decay fitted on train per metric, linear),
             nearest-train;
             CLI with their numbers
  margin     the model minus the best of those rows, with a paired bootstrap interval
             (margin_fields: the flat scalars every judge logs)
  choice     the pick python -m lvm_jax.adapt records (the learned system or the best
             untrained row on val, by its RULE) and that eval and predict serve
  judge      RetrievalJudge: report(predict_fn), the rows per view, latency, gates; the CLI
             (python -m lvm_jax.eval) and the training loop reach it through the
             config's evaluator, lvm_jax.evaluators.retrieval (RetrievalEvaluation)
Nothing here imports training; `metrics`, `baselines` and `margin` never import FAISS.
"""
