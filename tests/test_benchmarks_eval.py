"""The evaluation benchmark runs at a tiny size and writes its JSON (no timing asserted)."""

import json

from benchmarks import common, eval_bench
from lvm_jax.retrieval import index as index_lib


def test_eval_bench_writes_json(tmp_path):
  eval_bench.main(["--rows", "3000", "--dim", "32", "--queries", "40", "--nprobes", "2,8",
                   "--k_factors", "1,2", "--out-dir", str(tmp_path)])
  path = tmp_path / common.machine_name() / "eval_bench.json"
  report = json.loads(path.read_text())
  assert [(r["kind"], r["nprobe"], r.get("k_factor")) for r in report["results"]] == [
      ("ivf_flat", 2, None), ("ivf_flat", 8, None), ("ivf_sq8", 2, None), ("ivf_sq8", 8, None),
      ("ivf_sq8_refine", 2, 1.0), ("ivf_sq8_refine", 2, 2.0), ("ivf_sq8_refine", 8, 1.0),
      ("ivf_sq8_refine", 8, 2.0), ("ivf_fp16", 2, None), ("ivf_fp16", 8, None)]
  for row in report["results"]:
    assert 0.0 <= row["recall@50_vs_flat"] <= 1.0
    assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0
    assert row["build_seconds"] > 0
  assert report["rows_in_payload"] >= 2900 and report["nlist"] >= 1
  assert report["chosen_default"] == eval_bench.choose_default(report["results"], 50)
  assert report["chosen_default_by_cpu_time"] == eval_bench.choose_default(
      report["results"], 50, clock="cpu_latency")
  assert all(0 < r["cpu_latency_p50_ms"] <= r["cpu_latency_p95_ms"] for r in report["results"])
  assert report["code_default"]["kind"] == index_lib.DEFAULT_KIND
  assert len(report["loadavg"]["start"]) == 3


def test_chosen_default_is_the_fastest_setting_meeting_both_targets():
  row = lambda kind, recall, p95: {"kind": kind, "nprobe": 32, "recall@50_vs_flat": recall,
                                   "latency_p95_ms": p95}
  rows = [row("fast_but_inexact", 0.97, 0.5), row("exact_but_slow", 0.999, 3.0),
          row("passes", 0.985, 1.2), row("passes_faster", 0.981, 0.9)]
  assert eval_bench.choose_default(rows, 50)["kind"] == "passes_faster"
  assert eval_bench.choose_default(rows[:2], 50) is None


def test_compare_eval_puts_a_checkpoint_beside_every_baseline_with_its_margin(eval_workdir):
  import os  # pylint: disable=g-import-not-at-top
  from benchmarks import compare_eval  # pylint: disable=g-import-not-at-top
  data = os.path.join(eval_workdir, "data")
  report = compare_eval.run_comparison(
      train=os.path.join(data, "train_rows.npz"), payload_path=os.path.join(data, "payload"),
      eval_path=os.path.join(data, "eval.npz"), checkpoints=[("untrained", eval_workdir)],
      recency_decays=["0.5"])
  for view in ("all", "excl"):
    assert list(report[view]) == ["copy_last", "mean_of_context", "recency", "linear",
                                  "recency_average(0.5)", "untrained"]
    assert set(report["margin"]["untrained"][view]) == {"R@1", "R@5", "Contain@50"}
  decay = report["fitted_baselines"]["recency"]["decay"]
  table = compare_eval.markdown(report)
  assert f"| recency (decay {decay:g}, fitted on train) |" in table
  assert "untrained: margin (excl) over the best baseline" in table
