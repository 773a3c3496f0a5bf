"""The recency and linear baselines a run is judged against, fitted on the run's own train
windows (never on eval windows). The training loop and the eval CLI both fit them through
`fit`, and find a finished run's windows through `fit_for_run`, so the rows a model must beat
are the same in training and offline."""

from __future__ import annotations

import os
from typing import Optional

import ml_collections
from absl import logging

from lvm_jax.corpus import build
from lvm_jax.data.payload import Payload, read_payload
from lvm_jax.data.sequences import SequenceSet, read_sequence_set
from lvm_jax.retrieval import baselines


def fit(train_set: SequenceSet) -> baselines.FittedBaselines:
  """recency's decay and the linear predictor, fitted on the set the run trains on."""
  logging.info("Fitting the recency and linear baselines on the train windows %s",
               train_set.source)
  return baselines.fit_baselines_on_set(train_set)


def train_windows_path(config: ml_collections.ConfigDict, data_dir: str) -> str:
  """Where the run's train windows are: config.data.train_path, else the synthetic corpus's
  compact train set in its data directory (what train.training_sets trains on)."""
  data = config.get("data", {})
  return data.get("train_path") or os.path.join(data_dir, build.output_file("train", "compact"))


def fit_for_run(config: ml_collections.ConfigDict, data_dir: str, payload: Payload, *,
                train_path: Optional[str] = None) -> Optional[baselines.FittedBaselines]:
  """`fit` on a run's train windows: `train_path`, else train_windows_path(config, data_dir).
  Read with the payload their rows index: config.data.payload_path when it is on disk and not
  `payload` itself (unless `train_path` names the windows), else `payload`. None when the
  windows are not on disk."""
  path = train_path or train_windows_path(config, data_dir)
  if not os.path.exists(path):
    return None
  train_payload_path = None if train_path else config.get("data", {}).get("payload_path")
  if train_payload_path and os.path.exists(train_payload_path) and (
      os.path.abspath(train_payload_path) != os.path.abspath(payload.source)):
    payload = read_payload(train_payload_path, load_texts=False)
  return fit(read_sequence_set(path, payload=payload))
