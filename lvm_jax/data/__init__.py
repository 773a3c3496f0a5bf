"""Data: the reference's file formats, validation, article-disjoint sets, augmentation, input
pipeline, text ingestion and the synthetic corpus.

  errors         DataFormatError and its wording (file, field, problem, fix)
  validate       the checks every reader runs
  file_io        what every reader shares: file and NPZ checks, provenance records
  provenance     one spelling per provenance value (the reference's and ours)
  payload        Payload: the corpus every retrieval searches (a safe directory)
  sequences      SequenceSet (full and compact train/val windows): read/write
  eval_sets      EvalSet (held-out windows for retrieval): read/write
  legacy         the reference's pickled payload: read, convert
  convert        CLI: the reference's pickled payload -> the safe payload directory
  import_torch   CLI: the reference trainer's best.pt -> a workdir (the torch extra)
  build          CLI: payload -> windows, article-disjoint splits, manifest, FAISS index
  training_sets  the train/val sets a run trains on (configured, or the synthetic default)
  augment        article dropout and span corruption, jittable
  pipeline       TrainingPipeline: shuffled, host-sharded, prefetched batches
  synthetic      CLI: the embedded default corpus with a learnable dynamic
"""
