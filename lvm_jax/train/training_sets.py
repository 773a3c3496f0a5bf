"""The train and val sets a run trains on: configured files, or the synthetic default.

Everything is read and validated here, before any compilation, so a missing
or mismatched file is reported at once.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import ml_collections
import numpy as np
from absl import logging

from lvm_jax.distributed import multihost
from lvm_jax.corpus import synthetic
from lvm_jax.data.payload import Payload, read_payload
from lvm_jax.data.sequences import SequenceSet, read_sequence_set


@dataclasses.dataclass
class TrainingSets:
  train: SequenceSet
  val: SequenceSet
  payload: Optional[Payload]
  train_path: str
  val_path: str
  payload_path: str
  article_overlap: int
  eval_path: str = ""  # the held-out eval set, when known (the synthetic default has one)

  def describe(self) -> dict:
    return {"train": self.train_path, "val": self.val_path, "payload": self.payload_path,
            "article_overlap": self.article_overlap}


def synthetic_paths(config: ml_collections.ConfigDict, data_dir: str) -> dict:
  """Generates (or reuses) the synthetic corpus in data_dir; its compact sets and payload."""
  return synthetic.generate_synthetic_corpus(
      data_dir, context_length=config.data.context_length, forms=("compact",),
      **config.data.synthetic.to_dict())


def load_training_sets(config: ml_collections.ConfigDict, data_dir: str) -> TrainingSets:
  """Train and val sets from config.data, or the synthetic corpus generated into data_dir."""
  data = config.data
  if not data.train_path:
    if data.val_path or data.payload_path:
      raise ValueError("config.data: val_path/payload_path are set but train_path is empty; set "
                       "train_path too, or clear all three to use the synthetic corpus.")
    # Process 0 writes the corpus while the others wait; they then reuse its files.
    paths = multihost.on_process_zero("synthetic corpus",
                                      lambda: synthetic_paths(config, data_dir),
                                      expected_s=synthetic.expected_seconds(
                                          **config.data.synthetic.to_dict()))
    paths = paths or synthetic_paths(config, data_dir)
    train_path, val_path, payload_path = paths["train_rows"], paths["val_rows"], paths["payload"]
    eval_path = paths["eval"]
  else:
    eval_path = ""
    if not data.val_path:
      raise ValueError(f"config.data.val_path is empty while train_path={data.train_path!r}; "
                       "give the validation set built with the training set "
                       "(python -m lvm_jax.corpus.build writes both).")
    train_path, val_path, payload_path = data.train_path, data.val_path, data.payload_path
  expected_dim = data.vector_dim or None
  payload = None
  if payload_path:
    payload = read_payload(payload_path, expected_dim=expected_dim, normalize=data.normalize,
                           load_texts=False)
  read = functools.partial(read_sequence_set, payload=payload, expected_dim=expected_dim,
                           expected_context_length=data.context_length, normalize=data.normalize)
  train_set = read(train_path)
  val_set = read(val_path, expected_dim=train_set.vector_dim,
                 expected_source=f"the train set {train_path}")
  overlap = np.intersect1d(train_set.article_ids(), val_set.article_ids())
  if overlap.size:
    logging.warning("%d article(s) appear in both %s and %s (e.g. %s): val_cosine then measures "
                    "seen articles; build splits by article (python -m lvm_jax.corpus.build).",
                    overlap.size, train_path, val_path, overlap[:5].tolist())
  return TrainingSets(train=train_set, val=val_set, payload=payload, train_path=train_path,
                      val_path=val_path, payload_path=payload_path,
                      article_overlap=int(overlap.size), eval_path=eval_path)
