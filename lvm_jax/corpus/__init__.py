"""Making corpora: text -> payload -> article-disjoint windows, written in lvm_jax.data's formats.

  text_sources   the articles of a directory or JSONL file
  chunking       sentence-aware chunks of an article's text
  ingest         CLI: texts -> chunks -> embeddings -> payload directory
  legacy         CLI: the reference's pickled payload -> the safe payload directory
  synthetic      CLI: the embedded default corpus with a learnable dynamic
  build          CLI: payload -> windows, article-disjoint splits, manifest

The FAISS index over a payload is lvm_jax.retrieval's (python -m lvm_jax.eval.build_index).
"""
