"""legacy: the reference's pickled payload, refused without trust_pickle, converted sorted into
the safe format, and its provenance carried over from the sets the reference built from it, so
the reference's own eval sets check against the converted payload (issue 11, item 9)."""

import hashlib
import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from data_helpers import assert_message, make_payload, unit_rows
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.corpus.legacy import convert_reference_payload, read_reference_payload
from lvm_jax.data.payload import read_payload
from lvm_jax.data.sequences import read_sequence_set
from lvm_jax.retrieval.eval_inputs import check_provenance

REFERENCE_DIM = 768  # the reference's build tool always records vector_dim=768
REFERENCE_CREATED_AT = "2025-10-26T20:22:59.816929"


def write_reference_payload(path, payload, order=None):
  """The reference's layout: np.save of {payload_id: (text, meta, vec)}, in any row order."""
  order = np.arange(payload.num_rows) if order is None else order
  entries = {int(payload.ids[r]): (payload.texts[r],
                                   {"article_index": int(payload.article_index[r]),
                                    "chunk_index": int(payload.chunk_index[r]), "extra": "x"},
                                   payload.vectors[r]) for r in order}
  np.save(path, entries, allow_pickle=True)
  return str(path)


def test_reference_pickled_payload_is_refused_without_trust_pickle(tmp_path):
  path = write_reference_payload(tmp_path / "ref.npy", make_payload())
  with pytest.raises(DataFormatError) as error:
    read_reference_payload(path)
  assert_message(error, path, "pickle", "trust_pickle=True")
  with pytest.raises(DataFormatError) as error:
    convert_reference_payload(path, str(tmp_path / "out"), trust_pickle=False)
  assert_message(error, "trust_pickle=True")
  assert not os.path.exists(tmp_path / "out")
  with pytest.raises(DataFormatError) as error:  # read_payload points at the converter
    read_payload(path)
  assert_message(error, path, "lvm_jax.corpus.legacy", "--trust_pickle")


def test_reference_payload_converts_sorted_to_the_safe_format(tmp_path):
  original = make_payload()
  shuffled = np.random.default_rng(1).permutation(original.num_rows)
  path = write_reference_payload(tmp_path / "ref.npy", original, shuffled)
  converted = convert_reference_payload(path, str(tmp_path / "safe"), trust_pickle=True,
                                                embedder_id="gtr-t5-base")
  read = read_payload(str(tmp_path / "safe"))
  np.testing.assert_array_equal(read.vectors, original.vectors)
  np.testing.assert_array_equal(read.ids, original.ids)
  assert read.texts == original.texts
  assert read.provenance["embedder_id"] == "gtr-t5-base"
  assert len(read.provenance["source_hash"]) == 64
  assert converted.num_rows == original.num_rows
  assert sorted(os.listdir(tmp_path / "safe")) == [  # plain arrays and text only, no pickle
      "article_index.npy", "chunk_index.npy", "ids.npy", "provenance.json", "texts.jsonl",
      "vectors.npy"]


def test_reference_payload_entries_are_checked(tmp_path):
  bad = {1: ("t", {"article_index": 0}, np.ones(4, np.float32) / 2)}
  path = str(tmp_path / "bad.npy")
  np.save(path, bad, allow_pickle=True)
  with pytest.raises(DataFormatError) as error:
    read_reference_payload(path, trust_pickle=True)
  assert_message(error, path, "[1].meta", "chunk_index")


# ----------------------------------------------------------------------------- the reference's files
# Written field for field as the reference writes them: its payload with np.save of a dict, its
# train/val sets with tools/build_payload_aligned_training.py (np.savez, int32 truth keys, plain
# Python scalars, vector_dim=768, provenance as a one-element JSON string array).


def reference_payload_entries(articles=3, chunks=12, seed=0):
  """{payload_id: (text, {"article_index", "chunk_index"}, vec [768])}, ids in shuffled order,
  article indexes not contiguous, as the reference's payload dict holds them."""
  rng = np.random.default_rng(seed)
  vectors = unit_rows(rng, articles * chunks, REFERENCE_DIM)
  keys = [(article * 7 + 2, chunk) for article in range(articles) for chunk in range(chunks)]
  payload_ids = rng.permutation(len(keys)) + 1000
  return {int(payload_id): (f"article {article}, chunk {chunk}",
                            {"article_index": article, "chunk_index": chunk},
                            vectors[row])
          for row, (payload_id, (article, chunk)) in enumerate(zip(payload_ids, keys))}


def reference_windows(entries, context_length=5):
  """The build tool's windows: per article, chunks sorted by chunk_index, each run of
  context_length + 1 consecutive chunks -> (contexts [N, L, dim] float32, targets [N, dim]
  float32, truth_keys [N, 2] int32 of the target)."""
  by_article = defaultdict(list)
  for _, (_, meta, vec) in entries.items():
    by_article[meta["article_index"]].append((meta["chunk_index"], vec))
  contexts, targets, keys = [], [], []
  for article, chunks in by_article.items():
    chunks.sort(key=lambda item: item[0])
    for start in range(len(chunks) - context_length):
      window = chunks[start:start + context_length + 1]
      if [c for c, _ in window] != list(range(window[0][0], window[0][0] + context_length + 1)):
        continue
      contexts.append(np.stack([v for _, v in window[:-1]]))
      targets.append(window[-1][1])
      keys.append([article, window[-1][0]])
  return (np.array(contexts, np.float32), np.array(targets, np.float32),
          np.array(keys, np.int32))


def reference_provenance(payload_path):
  """The build tool's provenance record (its created_at is a fixed earlier time here)."""
  with open(payload_path, "rb") as f:
    payload_hash = hashlib.sha256(f.read()).hexdigest()[:16]
  return {"embedder_id": "GTR-T5-base-768",
          "payload_build_id": f"payload584k_2025-10-24@sha256:{payload_hash}",
          "norm": "l2_once", "metric": "ip", "created_at": REFERENCE_CREATED_AT,
          "creation_tool": "build_payload_aligned_training.py",
          "data_source": "wikipedia_584k_payload.npy"}


@pytest.fixture
def reference_files(tmp_path):
  """The reference's payload .npy, its train/val NPZs and an eval-style NPZ over held-out
  windows, all from one build; returns their paths and the windows."""
  entries = reference_payload_entries()
  payload_path = str(tmp_path / "wikipedia_584k_payload.npy")
  np.save(payload_path, entries, allow_pickle=True)
  contexts, targets, keys = reference_windows(entries)
  provenance = reference_provenance(payload_path)
  order = np.random.RandomState(42).permutation(len(contexts))
  train, val = order[:len(order) * 4 // 5], order[len(order) * 4 // 5:]
  paths = {"payload": payload_path}
  for name, rows in (("train", train), ("val", val)):
    paths[name] = str(tmp_path / f"{name}_payload_aligned.npz")
    np.savez(paths[name], context_sequences=contexts[rows], target_vectors=targets[rows],
             truth_keys=keys[rows], context_length=5, num_sequences=len(rows), vector_dim=768,
             provenance=np.array([json.dumps(provenance)]))
  paths["eval"] = str(tmp_path / "eval_v2_payload_aligned.npz")
  np.savez(paths["eval"], contexts=contexts[val], targets=targets[val], truth_keys=keys[val],
           provenance=np.array([json.dumps(provenance)]))
  return paths, (contexts, targets, keys, train)


def test_converted_payload_carries_the_reference_sets_provenance(tmp_path, reference_files):
  paths, (contexts, targets, keys, train) = reference_files
  dst = str(tmp_path / "safe")
  convert_reference_payload(paths["payload"], dst, trust_pickle=True,
                            provenance_from=paths["train"])
  payload = read_payload(dst)
  recorded = reference_provenance(paths["payload"])
  for field in ("embedder_id", "norm", "metric", "payload_build_id", "creation_tool",
                "data_source"):
    assert payload.provenance[field] == recorded[field], field
  assert payload.provenance["provenance_from"] == os.path.abspath(paths["train"])
  assert payload.provenance["created_at"] != REFERENCE_CREATED_AT  # the conversion's own time
  with open(paths["payload"], "rb") as f:
    assert payload.provenance["source_hash"] == hashlib.sha256(f.read()).hexdigest()
  # The reference's train set reads against the converted payload as it is: int32 keys,
  # Python-int scalars, every key present and every target equal to its payload vector.
  train_set = read_sequence_set(paths["train"], payload=payload, expected_dim=REFERENCE_DIM,
                                expected_context_length=5)
  assert train_set.num_sequences == len(train) and train_set.vector_dim == REFERENCE_DIM
  np.testing.assert_array_equal(train_set.truth_keys, keys[train])
  np.testing.assert_array_equal(payload.vectors[train_set.target_ids], targets[train])


def test_check_provenance_accepts_the_reference_eval_set_without_allow(tmp_path, reference_files,
                                                                       caplog):
  paths, _ = reference_files
  dst = str(tmp_path / "safe")
  convert_reference_payload(paths["payload"], dst, trust_pickle=True,
                            provenance_from=paths["train"])
  payload = read_payload(dst)
  eval_set = read_eval_set(paths["eval"], payload=payload)
  with caplog.at_level("WARNING"):
    assert check_provenance(eval_set, payload, allow=False) == []
  assert "not checked" not in caplog.text and "mismatch" not in caplog.text


def test_check_provenance_accepts_our_spellings_of_the_same_provenance(tmp_path, reference_files,
                                                                       caplog):
  """Converted without provenance_from, the payload records this project's spellings (l2,
  inner_product) and an org-prefixed embedder id; the reference's eval set still agrees."""
  paths, _ = reference_files
  dst = str(tmp_path / "safe")
  convert_reference_payload(paths["payload"], dst, trust_pickle=True,
                            embedder_id="sentence-transformers/gtr-t5-base")
  payload = read_payload(dst)
  assert (payload.provenance["norm"], payload.provenance["metric"]) == ("l2", "inner_product")
  eval_set = read_eval_set(paths["eval"], payload=payload)
  assert (eval_set.provenance["norm"], eval_set.provenance["metric"]) == ("l2_once", "ip")
  with caplog.at_level("WARNING"):
    assert check_provenance(eval_set, payload, allow=False) == []
  assert "not checked" not in caplog.text


def test_check_provenance_refuses_a_different_embedder(tmp_path, reference_files, caplog):
  """embedder_id overrides what provenance_from carries; a really different embedder is a
  mismatch: refused without allow, a warning with it."""
  paths, _ = reference_files
  dst = str(tmp_path / "safe")
  convert_reference_payload(paths["payload"], dst, trust_pickle=True,
                            provenance_from=paths["train"], embedder_id="all-MiniLM-L6-v2")
  payload = read_payload(dst)
  assert payload.provenance["norm"] == "l2_once"  # the rest still comes from provenance_from
  eval_set = read_eval_set(paths["eval"], payload=payload)
  with pytest.raises(DataFormatError) as error:
    check_provenance(eval_set, payload, allow=False)
  assert_message(error, paths["eval"], "field 'provenance'", dst,
                 "embedder_id: eval set 'GTR-T5-base-768' vs payload 'all-MiniLM-L6-v2'",
                 "--allow-provenance-mismatch")
  assert "norm:" not in error.value.problem and "metric:" not in error.value.problem
  with caplog.at_level("WARNING"):
    mismatches = check_provenance(eval_set, payload, allow=True)
  assert len(mismatches) == 1 and mismatches[0].startswith("embedder_id")
  assert "Provenance mismatch allowed by the user" in caplog.text


def test_provenance_from_a_bad_file_names_it_and_writes_nothing(tmp_path, reference_files):
  paths, _ = reference_files
  text = tmp_path / "notes.npz"
  text.write_text("built with GTR-T5\n")
  dst = tmp_path / "safe"
  with pytest.raises(DataFormatError) as error:
    convert_reference_payload(paths["payload"], str(dst), trust_pickle=True,
                              provenance_from=str(text))
  assert_message(error, str(text), "is not an NPZ archive: it holds text")
  assert not dst.exists()


def test_cli_converts_only_with_trust_pickle(tmp_path):
  vectors = np.eye(4, dtype=np.float32)
  entries = {10 + i: (f"text {i}", {"article_index": 2 - i // 2, "chunk_index": i % 2}, vectors[i])
             for i in range(4)}
  src = str(tmp_path / "reference.npy")
  np.save(src, entries, allow_pickle=True)
  dst = str(tmp_path / "payload")
  command = [sys.executable, "-m", "lvm_jax.corpus.legacy", "--src", src, "--dst", dst,
             "--embedder_id", "gtr-t5-base"]
  refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert refused.returncode != 0
  assert f"{src}: field '(file)'" in refused.stderr and "trust_pickle" in refused.stderr
  done = subprocess.run(command + ["--trust_pickle"], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  payload = read_payload(dst)
  np.testing.assert_array_equal(payload.article_index, [1, 1, 2, 2])
  np.testing.assert_array_equal(payload.chunk_index, [0, 1, 0, 1])
  np.testing.assert_array_equal(payload.ids, [12, 13, 10, 11])
  np.testing.assert_array_equal(payload.vectors, vectors[[2, 3, 0, 1]])
  assert payload.texts == ["text 2", "text 3", "text 0", "text 1"]
  assert payload.provenance["embedder_id"] == "gtr-t5-base"
