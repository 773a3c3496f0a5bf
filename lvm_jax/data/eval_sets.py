"""Eval sets: held-out windows for retrieval, as NPZ.

  contexts [N, L, dim] float32, targets [N, dim], truth_keys [N, 2], provenance,
  optional scalars context_length, num_sequences, vector_dim.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import numpy as np

from lvm_jax import atomic
from lvm_jax.data import file_io
from lvm_jax.data.payload import Payload, payload_rows_for_keys
from lvm_jax.data.sequences import read_windows

EVAL_CONTEXT_FIELDS = ("contexts",)
EVAL_TARGET_FIELDS = ("targets",)


@dataclasses.dataclass
class EvalSet:
  """Held-out windows for retrieval: contexts [N, L, dim], targets [N, dim], truth_keys [N, 2]."""
  contexts: np.ndarray
  targets: np.ndarray
  truth_keys: np.ndarray
  provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)
  source: str = "<eval set in memory>"

  @property
  def num_sequences(self) -> int:
    return int(self.truth_keys.shape[0])

  @property
  def context_length(self) -> int:
    return int(self.contexts.shape[1])

  @property
  def vector_dim(self) -> int:
    return int(self.contexts.shape[2])

  def target_rows(self, payload: Payload) -> np.ndarray:
    """[N] payload rows (= FAISS ids) of the targets; raises if a key is absent."""
    return payload_rows_for_keys(payload, self.truth_keys, source=self.source)


def write_eval_set(path: str, eval_set: EvalSet) -> str:
  provenance = file_io.make_provenance(**eval_set.provenance)
  atomic.savez(path, contexts=np.asarray(eval_set.contexts, np.float32),
                targets=np.asarray(eval_set.targets, np.float32),
                truth_keys=np.asarray(eval_set.truth_keys, np.int64),
                provenance=file_io.provenance_array(provenance),
                context_length=np.int64(eval_set.context_length),
                num_sequences=np.int64(eval_set.num_sequences),
                vector_dim=np.int64(eval_set.vector_dim))
  return path


def read_eval_set(path: str, *, payload: Optional[Payload] = None,
                  expected_dim: Optional[int] = None,
                  expected_context_length: Optional[int] = None,
                  expected_source: str = file_io.CONFIG_SOURCE, normalize: bool = False) -> EvalSet:
  """Reads and validates an eval NPZ; with a payload, keys must exist and targets match."""
  path = str(path)
  expected = file_io.Expected(expected_dim, expected_context_length, expected_source)
  with file_io.open_npz(path) as npz:
    contexts_field = file_io.first_present(npz, EVAL_CONTEXT_FIELDS, path)
    targets_field = file_io.first_present(npz, EVAL_TARGET_FIELDS, path)
    contexts, targets, keys, provenance, _ = read_windows(
        path, npz, contexts_field, targets_field, payload=payload, expected=expected,
        normalize=normalize, check_targets=True)
  return EvalSet(contexts=contexts, targets=targets, truth_keys=keys, provenance=provenance,
                 source=path)


def read_queries(path: str, payload: Payload) -> EvalSet:
  """An EvalSet from an eval NPZ, or from a sequence set (val_rows.npz) over `payload`."""
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  with file_io.open_npz(path) as npz:
    is_eval_set = "contexts" in npz.files
  if is_eval_set:
    return read_eval_set(path, expected_dim=payload.vector_dim)
  windows = read_sequence_set(path, payload=payload)
  contexts, targets, _ = windows.batch(np.arange(windows.num_sequences))
  provenance = dict(payload.provenance)
  provenance.update(windows.provenance)
  return EvalSet(contexts=contexts, targets=targets, truth_keys=windows.truth_keys,
                 provenance=provenance, source=path)
