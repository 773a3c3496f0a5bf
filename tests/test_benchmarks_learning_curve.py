"""The learning-curve benchmark trains on nested article shares and scores each run beside
the baselines on both eval sets, with the margin's interval (tiny sizes; no figures asserted)."""

import numpy as np
import pytest

from benchmarks import learning_curve
from conftest import tiny_config
from data_helpers import make_payload
from lvm_jax.corpus import build
from lvm_jax.data.payload import write_payload
from lvm_jax.data.sequences import read_sequence_set


def make_root(tmp_path):
  root = tmp_path / "corpus"
  payload = make_payload(articles=40, chunks=14, seed=0, texts=False)
  build.build_dataset(write_payload(str(root / "payload"), payload), str(root / "sets"),
                      forms=("full", "compact"))
  heldout = make_payload(articles=6, chunks=12, seed=1, texts=False)
  build.build_dataset(write_payload(str(root / "heldout_payload"), heldout),
                      str(root / "heldout_sets"), split_ratios=(0.0, 0.0, 1.0),
                      forms=("full", "compact"))
  return str(root)


def test_article_shares_are_nested_and_whole(tmp_path):
  root = make_root(tmp_path)
  from lvm_jax.data.payload import read_payload
  payload = read_payload(f"{root}/payload", load_texts=False)
  train = read_sequence_set(f"{root}/sets/train_rows.npz", payload=payload)
  small, _, total = learning_curve.article_subset(train, 0.25, seed=0)
  large, kept, _ = learning_curve.article_subset(train, 0.5, seed=0)
  assert kept == int(np.ceil(0.5 * total))
  assert np.all(large[small])  # the smaller share is inside the larger
  # Every window of a kept article is kept: shares are by article, not by window.
  articles = np.unique(train.truth_keys[small, 0])
  assert np.array_equal(small, np.isin(train.truth_keys[:, 0], articles))


@pytest.mark.slow
def test_learning_curve_reports_both_curves_with_intervals(tmp_path):
  root = make_root(tmp_path)
  config = tiny_config(num_epochs=1)
  config.model.residual, config.model.residual_decay = True, 0.2
  result = learning_curve.run(config, root, [1.0, 0.5], str(tmp_path / "runs"), seed=0,
                              in_domain_limit=9)
  assert set(result["curves"]) == {"in_domain", "held_out_package"}
  for p in result["points"]:  # the limit cuts the in-domain queries only
    assert p["reports"]["in_domain"]["_sizes"]["queries"] == 9
    sizes = p["reports"]["held_out_package"]["_sizes"]
    assert sizes["queries"] == sizes["eval_windows"] > 9
  for points in result["curves"].values():
    assert [p["fraction"] for p in points] == [0.5, 1.0]
    assert points[0]["windows"] < points[1]["windows"]
    for p in points:
      for metric in ("R@5", "Contain@50"):
        assert p[metric]["low"] <= p[metric]["margin"] <= p[metric]["high"]
  report = result["points"][1]["reports"]["held_out_package"]
  assert {"copy_last", "mean_of_context", "recency", "linear", "model"} <= set(report["excl"])
  learning_curve.plot(dict(result, config="tiny"), str(tmp_path / "curve.png"))
  assert (tmp_path / "curve.png").stat().st_size > 0
