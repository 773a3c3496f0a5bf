"""FAISS retrieval evaluation CLI: `python -m lvm_jax.eval --checkpoint WORKDIR`.

  __main__     the CLI (absl flags, the reference tool's spellings as aliases), exit codes
  reference    the reference's JSON, [EVAL] line and gate strings; its pickled payload,
               converted once and cached
  report       tables per view, the gate table, this project's JSON section
  build_index  CLI: a FAISS index over a payload
The evaluator itself (also run by training) lives in lvm_jax.retrieval. Imports only the
checkpoint loader from training.
"""
