"""Data: the file formats, their validation, the readers and the training input pipeline.

Making corpora (text ingestion, chunking, synthetic generation, the reference's
pickled payload, building windows and splits) is lvm_jax.corpus's.

  errors         DataFormatError and its wording (file, field, problem, fix)
  validate       the checks every reader runs
  file_io        what every reader shares: file and NPZ checks, provenance records
  provenance     one spelling per provenance value (the reference's and ours)
  payload        Payload: the corpus every retrieval searches (a safe directory)
  sequences      SequenceSet (full and compact train/val windows): read/write
  eval_sets      EvalSet (held-out windows for retrieval): read/write
  pipeline       TrainingPipeline: shuffled, host-sharded, prefetched batches
"""
