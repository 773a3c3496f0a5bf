"""Helpers the data tests share: a small valid payload, windows over it, NPZ writers, and a
message check. Plain functions; the `payload_dir` fixture built on them is in conftest.py."""

import json

import numpy as np

from lvm_jax.data.payload import Payload

DIM = 8


def unit_rows(rng, count, dim=DIM):
  """[count, dim] float32 rows of norm 1."""
  vectors = rng.normal(size=(count, dim)).astype(np.float32)
  return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_payload(articles=4, chunks=12, seed=0, texts=True):
  """`articles` articles (ids 3, 13, 23, ...) of `chunks` consecutive chunks, sorted, unit-norm."""
  rng = np.random.default_rng(seed)
  count = articles * chunks
  article_index = np.repeat(np.arange(articles) * 10 + 3, chunks)
  chunk_index = np.tile(np.arange(chunks), articles)
  return Payload(vectors=unit_rows(rng, count), article_index=article_index,
                 chunk_index=chunk_index, ids=np.arange(count) * 7 + 100,
                 texts=[f"chunk {i}\nline two, ünïcode" for i in range(count)] if texts else None,
                 provenance={"embedder_id": "test-embedder"})


def windows_of(payload, starts, context_length=5):
  """(rows [N, L + 1] int32, truth_keys [N, 2]) of the windows starting at payload rows `starts`."""
  rows = (np.asarray(starts)[:, None] + np.arange(context_length + 1)).astype(np.int32)
  keys = np.stack([payload.article_index[rows[:, -1]], payload.chunk_index[rows[:, -1]]], 1)
  return rows, keys


def full_set_arrays(payload, starts=(0, 1, 2, 12, 13)):
  """The arrays of a full-form sequence NPZ: five windows over `payload`."""
  rows, keys = windows_of(payload, starts)
  return {"context_sequences": payload.vectors[rows[:, :-1]],
          "target_vectors": payload.vectors[rows[:, -1]], "truth_keys": keys,
          "provenance": np.array([json.dumps({"embedder_id": "test-embedder"})])}


def save_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def assert_message(error, *parts):
  """Every part must appear in the raised error's message (pytest ExceptionInfo)."""
  message = str(error.value)
  for part in parts:
    assert part in message, f"{part!r} not in {message!r}"
