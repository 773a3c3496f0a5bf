"""Data: the reference's file formats, validation, article-disjoint sets, augmentation, input
pipeline and the synthetic corpus.

  errors     DataFormatError and its wording (file, field, problem, fix)
  validate   the checks every reader runs
  formats    Payload, SequenceSet (full and compact), EvalSet: read/write
  convert    CLI: the reference's pickled payload -> the safe payload directory
  build      CLI: payload -> windows, article-disjoint splits, manifest, FAISS index
  augment    article dropout and span corruption, jittable
  pipeline   TrainingPipeline: shuffled, host-sharded, prefetched batches
  synthetic  CLI: the embedded default corpus with a learnable dynamic
(FAISS indexes and the baseline predictors live in lvm_jax.retrieval.)
"""
