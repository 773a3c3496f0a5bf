"""FAISS retrieval evaluation CLI: `python -m lvm_jax.eval --checkpoint WORKDIR`.

  __main__     the CLI: flags -> settings -> the retrieval evaluator's run(params) -> the
               report printed and written; exit codes
  flags        its absl flags, the reference tool's spellings as aliases, parsing
  settings     the evaluator's settings: the checkpoint's config.evals.retrieval plus the
               flags that override it, default paths, baselines fitted on train windows
  reference    the reference's JSON, [EVAL] line and gate strings; its pickled payload,
               converted once and cached
  report       tables per view, the gate table, this project's JSON section
  build_index  CLI: a FAISS index over a payload
The evaluator itself (also run by training) is lvm_jax.evaluators.retrieval; predictions come
from lvm_jax.models.predict_fns. Nothing here imports training.
"""
