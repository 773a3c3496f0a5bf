"""build: windows only over consecutive chunks, article-disjoint splits, manifest, both forms, CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lvm_jax.corpus import build
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.data.payload import Payload, read_payload, write_payload
from lvm_jax.data.sequences import read_sequence_set

DIM = 6


def payload_with(lengths, gaps=(), dim=DIM, seed=0):
  """Articles 0..A-1 with the given chunk counts; `gaps` = (article, chunk) keys left out."""
  keys = [(a, c) for a, n in enumerate(lengths) for c in range(n) if (a, c) not in set(gaps)]
  keys = np.array(keys, np.int64)
  vectors = np.random.default_rng(seed).normal(size=(len(keys), dim)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  return Payload(vectors, keys[:, 0], keys[:, 1], np.arange(len(keys)) + 1000,
                 provenance={"embedder_id": "test"})


def test_windows_follow_consecutive_chunks_of_long_enough_articles():
  # Article 0: 12 chunks; 1: 9 chunks (too short); 2: 14 chunks with chunk 6 missing.
  payload = payload_with([12, 9, 14], gaps=[(2, 6)])
  rows = build.window_rows(payload.article_index, payload.chunk_index, context_length=5,
                           min_article_chunks=10)
  assert rows.dtype == np.int32 and rows.shape[1] == 6
  articles = payload.article_index[rows]
  chunks = payload.chunk_index[rows]
  assert (articles == articles[:, :1]).all() and (np.diff(chunks, axis=1) == 1).all()
  assert set(articles[:, 0]) == {0, 2}
  np.testing.assert_array_equal(chunks[articles[:, 0] == 0, -1], np.arange(5, 12))
  # Article 2 has 13 rows (>= 10); runs 0..5 (6 chunks: one window) and 7..13 (7 chunks: two).
  np.testing.assert_array_equal(chunks[articles[:, 0] == 2, -1], [5, 12, 13])


def test_min_article_chunks_counts_rows_and_context_length_is_respected():
  payload = payload_with([10, 3])
  rows = build.window_rows(payload.article_index, payload.chunk_index, context_length=2,
                           min_article_chunks=3)
  assert rows.shape == (8 + 1, 3)
  assert build.window_rows(payload.article_index, payload.chunk_index, context_length=5,
                           min_article_chunks=11).shape == (0, 6)


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (1, 1, 1), (0.9, 0.1, 0)])
def test_split_articles_is_disjoint_complete_and_sized_by_ratio(ratios):
  articles = np.arange(1000, 1237)
  splits = build.split_articles(articles, ratios, seed=3)
  union = np.concatenate(list(splits.values()))
  assert np.unique(union).size == union.size == articles.size
  shares = np.asarray(ratios, float) / sum(ratios)
  for share, name in zip(shares, build.SPLITS):
    assert abs(splits[name].size - share * articles.size) <= 1
  assert build.split_articles(articles, ratios, seed=3)["train"].tolist() == \
      splits["train"].tolist()
  assert build.split_articles(articles, ratios, seed=4)["train"].tolist() != \
      splits["train"].tolist()


def test_split_articles_errors():
  with pytest.raises(ValueError, match="cannot fill splits"):
    build.split_articles(np.arange(2), (0.8, 0.1, 0.1))
  with pytest.raises(ValueError, match="--split_ratios"):
    build.split_articles(np.arange(10), (0.8, -0.1, 0.3))
  assert build.split_articles(np.arange(3), (0.8, 0.1, 0.1))["eval"].size == 1


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("build")
  lengths = np.random.default_rng(0).integers(6, 30, 60)
  payload_dir = write_payload(str(root / "payload"), payload_with(lengths,
                                                                          gaps=[(3, 4), (7, 10)]))
  paths = build.build_dataset(payload_dir, str(root / "data"), seed=5)
  return payload_dir, paths


def test_build_writes_both_forms_and_manifest(built):
  payload_dir, paths = built
  for key in ("train", "train_rows", "val", "val_rows", "eval", "eval_rows", "manifest"):
    assert os.path.exists(paths[key]), key
  payload = read_payload(payload_dir)
  manifest = build.read_manifest(os.path.dirname(paths["manifest"]))
  assert manifest["context_length"] == 5 and manifest["min_article_chunks"] == 10
  assert manifest["seed"] == 5 and manifest["payload"]["path"] == os.path.abspath(payload_dir)
  assert "index" not in paths and "index" not in manifest  # the index is retrieval's
  for name in build.SPLITS:
    full = (read_eval_set(paths[name], payload=payload) if name == "eval" else
            read_sequence_set(paths[name], payload=payload))
    compact = read_sequence_set(paths[f"{name}_rows"], payload=payload)
    np.testing.assert_array_equal(full.truth_keys, compact.truth_keys)
    assert manifest["splits"][name]["num_sequences"] == compact.num_sequences
    assert set(manifest["splits"][name]["articles"]) == set(compact.article_ids().tolist())
    contexts, targets, _ = compact.batch(np.arange(compact.num_sequences))
    np.testing.assert_array_equal(contexts, full.contexts if name == "eval" else
                                  full.context_sequences)


def test_no_article_sits_in_two_splits(built):
  payload_dir, paths = built
  payload = read_payload(payload_dir)
  articles = {name: set(read_sequence_set(paths[f"{name}_rows"], payload=payload)
                        .article_ids().tolist()) for name in build.SPLITS}
  assert not articles["train"] & articles["val"]
  assert not articles["train"] & articles["eval"]
  assert not articles["val"] & articles["eval"]
  manifest = build.read_manifest(paths["manifest"])
  listed = [set(manifest["splits"][n]["articles"]) for n in build.SPLITS]
  assert sum(map(len, listed)) == len(set.union(*listed))




def test_builds_at_other_context_lengths_keep_each_article_in_its_split():
  """A long-context train set never holds a short-context build's val or eval articles,
  though the short articles give no long window."""
  payload = payload_with([12, 30, 14, 25, 11, 40, 13, 22, 16, 35] * 3, seed=1)
  short, _ = build.build_splits(payload, context_length=5, min_article_chunks=10)
  long, _ = build.build_splits(payload, context_length=16, min_article_chunks=10)
  split_of = {}
  for name, windows in short.items():
    split_of.update({int(a): name for a in windows.article_ids()})
  for name, windows in long.items():
    assert all(split_of[int(a)] == name for a in windows.article_ids()), name
  assert sum(len(w.article_ids()) for w in long.values()) < len(split_of)


def test_compact_only_still_writes_the_eval_set_in_full(tmp_path):
  payload = payload_with([20] * 12)
  payload.source = write_payload(str(tmp_path / "p"), payload)
  paths = build.build_dataset(payload, str(tmp_path / "d"), forms=("compact",),
)
  assert sorted(k for k in paths if k not in ("manifest", "payload")) == \
      ["eval", "eval_rows", "train_rows", "val_rows"]


def test_build_needs_a_written_payload(tmp_path):
  with pytest.raises(ValueError, match="must be written first"):
    build.build_dataset(payload_with([20] * 12), str(tmp_path / "d"))


def test_payload_without_any_window_is_a_clear_error(tmp_path):
  payload = payload_with([4, 5])
  with pytest.raises(DataFormatError) as error:
    build.build_splits(payload)
  assert "gives no window of 5 consecutive chunks" in str(error.value)
  assert "Fix: lower --context_length or --min_article_chunks" in str(error.value)


def test_cli_builds_from_the_reference_pickled_payload_only_with_trust_pickle(tmp_path):
  payload = payload_with([15] * 10)
  entries = {int(payload.ids[r]): (f"t{r}", {"article_index": int(payload.article_index[r]),
                                             "chunk_index": int(payload.chunk_index[r])},
                                   payload.vectors[r]) for r in range(payload.num_rows)}
  reference = str(tmp_path / "reference_payload.npy")
  np.save(reference, entries, allow_pickle=True)
  command = [sys.executable, "-m", "lvm_jax.corpus.build", "--payload", reference, "--out",
             str(tmp_path / "out"), "--split_ratios", "0.6,0.2,0.2"]
  refused = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert refused.returncode != 0 and "trust_pickle" in refused.stderr
  done = subprocess.run(command + ["--trust_pickle"], capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  paths = json.loads(done.stdout[done.stdout.index("{"):])
  manifest = build.read_manifest(paths["manifest"])
  assert manifest["split_ratios"] == {"train": 0.6, "val": 0.2, "eval": 0.2}
  assert [manifest["splits"][n]["num_articles"] for n in build.SPLITS] == [6, 2, 2]
  converted = read_payload(paths["payload"])
  np.testing.assert_array_equal(converted.vectors, payload.vectors)
