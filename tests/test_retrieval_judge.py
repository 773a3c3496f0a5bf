"""RetrievalJudge on a small synthetic corpus: rows, both views, scalars, checks."""

import dataclasses
import os

import numpy as np
import pytest

from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.data.payload import read_payload
from lvm_jax.data import provenance as provenance_lib
from lvm_jax.data.errors import DataFormatError
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval.eval_inputs import EvalOptions
from lvm_jax.retrieval.judge import RetrievalJudge

copy_last = lambda contexts: contexts[:, -1]


def corpus(workdir):
  data = os.path.join(workdir, "data")
  payload = read_payload(os.path.join(data, "payload"))
  return payload, read_eval_set(os.path.join(data, "eval.npz"))


def evaluator_for(workdir, **options):
  payload, eval_set = corpus(workdir)
  index = index_lib.build_index(payload.vectors, kind="flat")
  return RetrievalJudge(eval_set, payload, index,
                            EvalOptions(**{"latency_queries": 20, **options}))


def test_oracle_finds_every_target_and_the_baselines_are_rows(eval_workdir):
  result = evaluator_for(eval_workdir).report(copy_last)
  for view in ("all", "excl"):
    rows = result["views"][view]
    assert rows["oracle"]["R@1"] == 1.0
    assert rows["oracle"]["exact_duplicate_misses"] == 0
    for name in ("copy_last", "mean_of_context", "model"):
      assert 0.0 <= rows[name]["R@5"] <= 1.0
    # The predict_fn above is copy-last, so the model row must equal the copy_last row.
    assert rows["model"]["R@5"] == rows["copy_last"]["R@5"]
  assert result["rows"] is result["views"]["all"]  # the gated view


def test_every_run_reports_both_views(eval_workdir):
  """With all candidates a copy-last prediction retrieves its own last context chunk first;
  with the window's context excluded it can find the true next chunk."""
  result = evaluator_for(eval_workdir).report(copy_last)
  assert result["views"]["all"]["model"]["R@1"] == 0.0
  assert result["views"]["excl"]["model"]["R@1"] > 0.0
  excl = evaluator_for(eval_workdir, gate_view="excl").report(copy_last)
  assert excl["gated"]["R@1"] == excl["views"]["excl"]["model"]["R@1"] > 0.0


def test_run_returns_flat_scalars_for_both_views_and_reuses_the_baselines(eval_workdir):
  evaluator = evaluator_for(eval_workdir)
  first = evaluator.run(copy_last)
  baselines = evaluator._baseline_views  # pylint: disable=protected-access
  second = evaluator.run(lambda contexts: contexts.mean(axis=1))
  assert evaluator._baseline_views is baselines  # pylint: disable=protected-access
  for name in ("r1", "r5", "contain20", "contain50", "eff5", "mrr"):
    assert name in first and name + "_excl" in first
  assert first["contain50_excl"] >= 0 and "latency_p95_ms" in first and "cosine" in first
  scalars = evaluator.baseline_scalars()
  assert second["r5_excl"] == pytest.approx(scalars["mean_of_context"]["r5_excl"])
  assert first["r5"] == pytest.approx(scalars["copy_last"]["r5"])


def test_predict_fn_always_sees_full_batches(eval_workdir):
  seen = []

  def predict(contexts):
    seen.append(contexts.shape[0])
    return contexts[:, -1]

  evaluator = evaluator_for(eval_workdir, batch_size=50, latency_queries=0)
  evaluator.run(predict)
  assert set(seen) == {50} and len(seen) == -(-len(evaluator.contexts) // 50)
  with pytest.raises(ValueError, match=r"predict_fn returned predictions of shape"):
    evaluator.run(lambda contexts: contexts[:, :, :3].reshape(len(contexts), -1)[:, :5])


def test_provenance_mismatch_is_an_error_unless_overridden(eval_workdir):
  payload, eval_set = corpus(eval_workdir)
  other = dataclasses.replace(eval_set, provenance=dict(eval_set.provenance, embedder_id="minilm"))
  index = index_lib.build_index(payload.vectors, kind="flat")
  with pytest.raises(DataFormatError, match=r"embedder_id: eval set 'minilm' vs payload"):
    RetrievalJudge(other, payload, index, EvalOptions())
  RetrievalJudge(other, payload, index, EvalOptions(allow_provenance_mismatch=True))


def test_reference_provenance_spellings_equal_ours(eval_workdir):
  """The reference's eval set (l2_once, ip) against a converted payload (l2, inner_product,
  embedder unknown) passes; the unknown embedder is a warning, not a refusal."""
  payload, eval_set = corpus(eval_workdir)
  reference = dataclasses.replace(eval_set, provenance={
      "embedder_id": "GTR-T5-base-768", "norm": "l2_once", "metric": "ip"})
  converted = dataclasses.replace(payload, provenance=dict(
      payload.provenance, embedder_id="unknown", norm="l2", metric="inner_product"))
  index = index_lib.build_index(payload.vectors, kind="flat")
  assert RetrievalJudge(reference, converted, index, EvalOptions()).provenance_mismatches == []
  assert provenance_lib.canonical({"norm": "L2_once", "metric": "IP", "embedder_id": ""}) == {
      "embedder_id": None, "norm": "l2", "metric": "inner_product"}
  assert provenance_lib.compare({"metric": "ip"}, {"metric": "l2"})[0] == ["metric"]


def test_misaligned_targets_name_the_worst_rows(eval_workdir):
  payload, eval_set = corpus(eval_workdir)
  targets = eval_set.targets.copy()
  targets[3] = -targets[3]
  targets[:] = np.roll(targets, 1, axis=0)
  shifted = dataclasses.replace(eval_set, targets=targets)
  index = index_lib.build_index(payload.vectors, kind="flat")
  with pytest.raises(DataFormatError, match=r"do not match their payload vectors: mean cosine .* "
                                            r"worst rows \[4"):
    RetrievalJudge(shifted, payload, index, EvalOptions())


@pytest.mark.parametrize("options, words", [
    ({"k": 0}, "must be at least 50"), ({"k": 20}, "must be at least 50"),
    ({"k": 10**6}, "exceeds the payload's"), ({"nprobe": 0}, "must be at least 1"),
    ({"limit": -3}, "limit (--limit) = -3"), ({"mmr_lambda": 1.5}, "must be in [0, 1]"),
    ({"gate_view": "both"}, "is not one of")])
def test_options_are_validated_before_anything_runs(eval_workdir, options, words):
  with pytest.raises(ValueError) as error:
    evaluator_for(eval_workdir, **options)
  assert words in str(error.value)

