"""Data: the reference's file formats, validation, article-disjoint sets, augmentation, input
pipeline and the synthetic corpus.

  errors     DataFormatError and its wording (file, field, problem, fix)
  validate   the checks every reader runs
  formats    Payload, SequenceSet (full and compact), EvalSet: read/write
  convert    CLI: the reference's pickled payload -> the safe payload directory
  import_torch CLI: the reference trainer's best.pt -> a workdir (the torch extra)
  build      CLI: payload -> windows, article-disjoint splits, manifest, FAISS index
  index      FAISS index build/read/check (owned by eval)
  augment    article dropout and span corruption, jittable
  pipeline   TrainingPipeline: shuffled, host-sharded, prefetched batches
  synthetic  CLI: the embedded default corpus with a learnable dynamic
  baselines  CLI: copy-last, mean-of-context, linear, memorisation, noise-free numbers
"""
