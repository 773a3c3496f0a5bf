"""The learned shortlist reranker: its features, its fit, its file, and the evaluator using it."""

import json
import os

import numpy as np
import pytest

from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.data.payload import read_payload
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import learned_rerank
from lvm_jax.retrieval.eval_inputs import EvalOptions
from lvm_jax.retrieval.judge import RetrievalJudge

NUM_FEATURES = len(learned_rerank.FEATURE_NAMES)


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def identity_reranker(depth=60, **weights):
  """Weight 1 on the query's own score (and any extra weights): the search's own order."""
  w = np.zeros(NUM_FEATURES, np.float32)
  w[0] = 1.0
  for name, value in weights.items():
    w[learned_rerank.FEATURE_NAMES.index(name)] = value
  return learned_rerank.LinearReranker(weights=w, mean=np.zeros(NUM_FEATURES, np.float32),
                                       scale=np.ones(NUM_FEATURES, np.float32), depth=depth,
                                       decay=0.5)


def test_features_are_the_similarities_they_name():
  rng = np.random.default_rng(0)
  payload = unit(rng.normal(size=(30, 8))).astype(np.float32)
  contexts = payload[None, [3, 4, 5]]  # a window of three payload rows, L=3 < LAGS
  rows = np.array([[5, 7, 9, 3]])
  scores = np.array([[0.9, 0.8, 0.7, 0.6]], np.float32)
  direction = learned_rerank.payload_direction(payload)
  f = learned_rerank.candidate_features(rows, scores, contexts, payload, direction, decay=0.5)
  names = learned_rerank.FEATURE_NAMES
  col = lambda name: f[0, :, names.index(name)]
  np.testing.assert_allclose(col("query_score"), scores[0])
  np.testing.assert_allclose(col("context_lag1"), payload[rows[0]] @ payload[5], atol=1e-6)
  np.testing.assert_allclose(col("context_lag3"), payload[rows[0]] @ payload[3], atol=1e-6)
  np.testing.assert_array_equal(col("context_lag4"), 0.0)  # beyond the window
  np.testing.assert_array_equal(col("context_duplicate"), [1, 0, 0, 1])  # rows 5 and 3 repeat it
  recency = unit(0.25 * payload[3] + 0.5 * payload[4] + payload[5])
  np.testing.assert_allclose(col("recency_average"), payload[rows[0]] @ recency, atol=1e-6)
  np.testing.assert_allclose(col("log_rank"), np.log1p(np.arange(4)), atol=1e-6)
  np.testing.assert_allclose(col("payload_centrality"), payload[rows[0]] @ direction, atol=1e-6)
  cosines = payload[rows[0]] @ payload[rows[0]].T
  np.testing.assert_allclose(col("shortlist_density"), (cosines.sum(1) - 1.0) / 3, atol=1e-6)


def test_shortlist_density_skips_missing_rows():
  """-1 rows (a shortlist shorter than its depth) add nothing to the others' mean, and a
  candidate alone in its shortlist gets 0."""
  rng = np.random.default_rng(2)
  payload = unit(rng.normal(size=(10, 6))).astype(np.float32)
  rows = np.array([[1, 2, 3, -1], [4, -1, -1, -1]])
  f = learned_rerank.candidate_features(rows, np.zeros((2, 4), np.float32), payload[None, :2]
                                        .repeat(2, 0), payload, payload[0], decay=0.5)
  density = f[..., learned_rerank.FEATURE_NAMES.index("shortlist_density")]
  expected = [(payload[1] @ payload[2] + payload[1] @ payload[3]) / 2,
              (payload[2] @ payload[1] + payload[2] @ payload[3]) / 2,
              (payload[3] @ payload[1] + payload[3] @ payload[2]) / 2]
  np.testing.assert_allclose(density[0, :3], expected, atol=1e-6)
  assert density[1, 0] == 0.0


def test_a_reranker_fitted_before_the_density_feature_scores_as_it_did(tmp_path):
  """The shipped model's reranker.json names the 11 features it was fitted on: it loads, and
  its scores are the old formula over those columns, whatever the new column holds."""
  rng = np.random.default_rng(3)
  old_names = learned_rerank.FEATURES_BEFORE_DENSITY
  weights, mean = rng.normal(size=(2, len(old_names))).astype(np.float32)
  scale = rng.uniform(0.5, 2.0, len(old_names)).astype(np.float32)
  path = str(tmp_path / "reranker.json")
  with open(path, "w") as f:
    json.dump({"format_version": 1, "kind": "linear", "features": list(old_names),
               "weights": weights.tolist(), "mean": mean.tolist(), "scale": scale.tolist(),
               "depth": 100, "decay": 0.6}, f)
  reranker = learned_rerank.load(path)
  assert reranker.features == old_names
  features = rng.normal(size=(4, 7, NUM_FEATURES)).astype(np.float32)
  expected = ((features[..., :len(old_names)] - mean) / scale) @ weights
  np.testing.assert_allclose(reranker.score(features), expected, rtol=1e-5, atol=1e-5)
  features[..., learned_rerank.FEATURE_NAMES.index("shortlist_density")] += 100.0
  np.testing.assert_allclose(reranker.score(features), expected, rtol=1e-5, atol=1e-5)


def test_fit_starts_at_the_search_order_and_learns_a_planted_rule():
  rng = np.random.default_rng(1)
  n, k = 400, 20
  features = rng.normal(size=(n, k, NUM_FEATURES)).astype(np.float32)
  truth = np.argmax(features[..., 7] - features[..., 0], axis=1)  # context_duplicate minus score
  labels = np.zeros((n, k), bool)
  labels[np.arange(n), truth] = True
  labels[:10] = False  # queries without their truth in the shortlist are skipped
  reranker = learned_rerank.fit(features, labels, depth=k, decay=0.6, steps=300,
                                learning_rate=0.05)
  start = learned_rerank.fit(features, labels, depth=k, decay=0.6, steps=0)
  np.testing.assert_array_equal(np.argsort(-start.score(features), axis=1),
                                np.argsort(-features[..., 0], axis=1))
  assert reranker.fitted_on["queries_with_truth"] == n - 10
  assert reranker.fitted_on["final_loss"] < reranker.fitted_on["start_loss"] - 1.0
  assert reranker.weights[7] > 0 > reranker.weights[0]
  top = np.argmax(reranker.score(features), axis=1)
  assert np.mean(top[10:] == truth[10:]) > 0.9


def test_fit_refuses_features_of_another_set():
  """fit takes candidate_features' columns, all of them; an older 11-column array is refused
  in one line naming the columns it expects."""
  old = np.zeros((3, 5, len(learned_rerank.FEATURES_BEFORE_DENSITY)), np.float32)
  with pytest.raises(ValueError, match=r"^fit: features have 11 columns; candidate_features "
                     r"makes 12 \(query_score, .*, shortlist_density\)\.$"):
    learned_rerank.fit(old, np.ones((3, 5), bool), depth=5, decay=0.6)


def test_fit_refuses_shortlists_without_any_truth():
  with pytest.raises(ValueError, match="no query has its true next chunk in its shortlist"):
    learned_rerank.fit(np.zeros((3, 5, NUM_FEATURES)), np.zeros((3, 5), bool), depth=5, decay=0.6)


def test_save_and_load_round_trip_and_refuse_another_feature_set(tmp_path):
  path = str(tmp_path / "reranker.json")
  reranker = identity_reranker(context_max=-0.5)
  reranker.fitted_on = {"windows": "val_rows.npz"}
  learned_rerank.save(path, reranker)
  again = learned_rerank.load(path)
  np.testing.assert_array_equal(again.weights, reranker.weights)
  assert (again.depth, again.decay, again.fitted_on) == (60, 0.5, {"windows": "val_rows.npz"})
  assert again.features == learned_rerank.FEATURE_NAMES == tuple(value_features(path))
  with open(path) as f:
    value = json.load(f)
  del value["features"][1]  # a set this lvm_jax does not compute
  with open(path, "w") as f:
    json.dump(value, f)
  with pytest.raises(ValueError, match=r"reranker\.json: features .* differ from every set"):
    learned_rerank.load(path)


def value_features(path):
  with open(path) as f:
    return json.load(f)["features"]


def evaluator(workdir):
  data = os.path.join(workdir, "data")
  payload = read_payload(os.path.join(data, "payload"))
  eval_set = read_eval_set(os.path.join(data, "eval.npz"))
  index = index_lib.build_index(payload.vectors, kind="flat")
  return RetrievalJudge(eval_set, payload, index, EvalOptions(latency_queries=0,
                                                                  index_recall=False))


def test_evaluator_model_row_is_the_reranked_system(eval_workdir):
  judge = evaluator(eval_workdir)
  copy_last = lambda contexts: contexts[:, -1]
  plain = judge.report(copy_last)
  same = judge.report(copy_last, reranker=identity_reranker())
  for view in ("all", "excl"):
    for metric in ("R@1", "R@5", "Contain@50"):
      assert same["views"][view]["model"][metric] == plain["views"][view]["model"][metric]
  # Copy-last's first candidate in the all view is the window's last chunk itself; a strong
  # penalty on repeating a context chunk pushes every context row out of the top 50.
  assert plain["views"]["all"]["model"]["R@1"] == 0.0
  pushed = judge.report(copy_last, reranker=identity_reranker(context_duplicate=-100.0))
  assert pushed["views"]["all"]["model"]["R@5"] > plain["views"]["all"]["model"]["R@5"]
  assert pushed["views"]["all"]["model"]["R@5"] == plain["views"]["excl"]["model"]["R@5"]


def test_evaluator_refuses_a_reranker_shallower_than_k(eval_workdir):
  with pytest.raises(ValueError, match="reranker's depth 20 is below k = 50"):
    evaluator(eval_workdir).report(lambda c: c[:, -1], reranker=identity_reranker(depth=20))
