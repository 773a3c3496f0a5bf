"""The evaluation benchmark runs at a tiny size, writes its JSON with every row's ratio to the
reference's index, and reuses the indexes it cached (no timing asserted)."""

import json

from benchmarks import common, eval_bench
from lvm_jax.retrieval import index as index_lib


def test_eval_bench_writes_json_with_ratios_and_reuses_its_cache(tmp_path):
  argv = ["--rows", "3000", "--dim", "32", "--queries", "40", "--batch_queries", "300",
          "--nprobes", "2,8", "--k_factors", "1,2", "--ef_searches", "16",
          "--kinds", "ivf_sq8_refine,ivf_pqfs_refine,hnsw",
          "--cache_dir", str(tmp_path / "cache"), "--out_dir", str(tmp_path)]
  eval_bench.main(argv)
  path = tmp_path / common.machine_name() / "eval_bench.json"
  report = json.loads(path.read_text())
  refine = lambda kind: [(kind, p, f) for p in (2, 8) for f in (1.0, 2.0)]
  # IVF-Flat comes first and always carries the reference's nprobe 64.
  assert [(r["kind"], r.get("nprobe") or r.get("ef_search"), r.get("k_factor"))
          for r in report["results"]] == [
      ("ivf_flat", 2, None), ("ivf_flat", 8, None), ("ivf_flat", 64, None),
      *refine("ivf_sq8_refine"), *refine("ivf_pqfs_refine"), ("hnsw", 16, None)]
  reference = report["results"][2]
  assert reference["latency_p95_ratio"] == 1.0 == reference["cpu_latency_p95_ratio"]
  assert report["reference"]["latency_p95_ms"] == reference["latency_p95_ms"]
  for row in report["results"]:
    assert 0.0 <= row["recall@50_vs_flat"] <= 1.0
    assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0
    assert row["latency_p95_ratio"] == row["latency_p95_ms"] / reference["latency_p95_ms"]
    assert row["build_seconds"] > 0 and row["batched_qps"] > 0
  assert report["batch_queries"] > report["queries"] == 40
  assert report["rows_in_payload"] >= 2900 and report["nlist"] >= 1
  assert set(report["index_file_bytes"]) == {"ivf_sq8_refine", "ivf_pqfs_refine", "hnsw"}
  # A second run reads the cached indexes back: same build times, same recalls.
  again = eval_bench.main(argv)
  assert again["build_seconds"] == report["build_seconds"]
  assert ([r["recall@50_vs_flat"] for r in again["results"]]
          == [r["recall@50_vs_flat"] for r in report["results"]])
  assert report["chosen_default"] == eval_bench.choose_default(report["results"], 50)
  assert report["chosen_default_by_cpu_time"] == eval_bench.choose_default(
      report["results"], 50, clock="cpu_latency")
  assert all(0 < r["cpu_latency_p50_ms"] <= r["cpu_latency_p95_ms"] for r in report["results"])
  assert report["code_default"]["kind"] == index_lib.DEFAULT_KIND
  assert len(report["loadavg"]["start"]) == 3


def test_chosen_default_is_the_smallest_ratio_meeting_both_targets():
  row = lambda kind, recall, p95, nprobe=32: {
      "kind": kind, "nprobe": nprobe, "recall@50_vs_flat": recall, "latency_p95_ms": p95,
      "cpu_latency_p95_ms": p95}
  rows = [row("ivf_flat", 0.999, 4.0, nprobe=64), row("fast_but_inexact", 0.98, 0.5),
          row("passes", 0.995, 0.9), row("passes_faster", 0.991, 0.8),
          row("exact_but_slow", 0.999, 1.2)]  # ratio 0.3 > 0.25
  eval_bench.add_ratios(rows)
  assert rows[2]["latency_p95_ratio"] == 0.9 / 4.0
  assert eval_bench.choose_default(rows, 50)["kind"] == "passes_faster"
  assert eval_bench.choose_default(rows, 50, clock="cpu_latency")["kind"] == "passes_faster"
  assert eval_bench.choose_default([rows[0], rows[1], rows[4]], 50) is None


def test_compare_eval_puts_a_checkpoint_beside_every_baseline_with_its_margin(eval_workdir):
  import os  # pylint: disable=g-import-not-at-top
  from benchmarks import compare_eval  # pylint: disable=g-import-not-at-top
  data = os.path.join(eval_workdir, "data")
  report = compare_eval.run_comparison(
      train=os.path.join(data, "train_rows.npz"), payload_path=os.path.join(data, "payload"),
      eval_path=os.path.join(data, "eval.npz"), checkpoints=[("untrained", eval_workdir)],
      recency_decays=["0.5"])
  for view in ("all", "excl"):
    recency_rows = list(report["fitted_baselines"])[:-1]  # one per distinct fitted decay
    assert recency_rows[0] == "recency" and list(report["fitted_baselines"])[-1] == "linear"
    assert list(report[view]) == ["copy_last", "mean_of_context", *recency_rows, "linear",
                                  "recency_average(0.5)", "untrained"]
    assert set(report["margin"]["untrained"][view]) == {"R@1", "R@5", "Contain@50"}
  decay = report["fitted_baselines"]["recency"]["decay"]
  table = compare_eval.markdown(report)
  fitted_for = "/".join(m.replace(" excl. on train", "")
                        for m in report["fitted_baselines"]["recency"]["fit_metric"])
  assert f"| recency (decay {decay:g}, fitted on train for {fitted_for}) |" in table
  assert "untrained: margin (excl) over the best baseline" in table


def test_compare_eval_adds_a_row_with_the_runs_reranker(eval_workdir, tmp_path):
  import os  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import compare_eval  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  shutil.copytree(eval_workdir, workdir)
  names = learned_rerank.FEATURE_NAMES
  weights = np.zeros(len(names), np.float32)
  weights[names.index("context_lag1")] = 1.0  # rank by similarity to the last chunk: copy-last
  data = os.path.join(workdir, "data")
  with np.load(os.path.join(data, "eval.npz")) as npz:
    context_length = npz["contexts"].shape[1]
  # Every row but as many as the context holds: the search reaches the whole payload.
  depth = read_payload(os.path.join(data, "payload")).num_rows - context_length
  learned_rerank.save(os.path.join(workdir, learned_rerank.FILE_NAME), learned_rerank.LinearReranker(
      weights=weights, mean=np.zeros_like(weights), scale=np.ones_like(weights), depth=depth,
      decay=0.5))
  report = compare_eval.run_comparison(
      train=os.path.join(data, "train_rows.npz"), payload_path=os.path.join(data, "payload"),
      eval_path=os.path.join(data, "eval.npz"), checkpoints=[("untrained", workdir)])
  assert list(report["margin"]) == ["untrained", "untrained+rerank"]
  # Over the whole payload, that reranker is copy-last.
  for metric in ("R@1", "R@5"):
    assert report["excl"]["untrained+rerank"][metric] == report["excl"]["copy_last"][metric]


def test_compare_eval_limit_scores_the_first_windows_as_eval_does(eval_workdir):
  import os  # pylint: disable=g-import-not-at-top
  from benchmarks import compare_eval  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.eval_inputs import EvalOptions  # pylint: disable=g-import-not-at-top
  data = os.path.join(eval_workdir, "data")
  paths = dict(train=os.path.join(data, "train_rows.npz"),
               payload_path=os.path.join(data, "payload"), eval_path=os.path.join(data, "eval.npz"),
               checkpoints=[("untrained", eval_workdir)])
  whole = compare_eval.run_comparison(**paths)
  first = compare_eval.run_comparison(**paths, limit=7)
  assert first["_sizes"]["queries"] == 7 < first["_sizes"]["eval_windows"]
  assert whole["_sizes"]["queries"] == whole["_sizes"]["eval_windows"]
  # The same scores as the judge itself gives with --limit 7.
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.judge import RetrievalJudge  # pylint: disable=g-import-not-at-top
  payload = read_payload(paths["payload_path"], load_texts=False)
  judge = RetrievalJudge(read_queries(paths["eval_path"], payload), payload,
                         index_lib.build_index(payload.vectors, kind="flat"),
                         EvalOptions(latency_queries=0, index_recall=False, limit=7),
                         fitted=compare_eval.fit_baselines(paths["train"], payload, 32))
  expected = judge.report(compare_eval.model_predictor(eval_workdir))["views"]["excl"]["model"]
  scores = lambda row: {column: row[column] for column in compare_eval.COLUMNS}
  assert scores(first["excl"]["untrained"]) == scores(expected)
  assert scores(first["excl"]["untrained"]) != scores(whole["excl"]["untrained"])
