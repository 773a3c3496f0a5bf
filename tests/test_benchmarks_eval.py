"""The evaluation benchmark runs at a tiny size and writes its JSON (no timing asserted)."""

import json

from benchmarks import common, eval_bench


def test_eval_bench_writes_json(tmp_path):
  eval_bench.main(["--rows", "3000", "--dim", "32", "--queries", "40", "--nprobes", "2,8",
                   "--out-dir", str(tmp_path)])
  path = tmp_path / common.machine_name() / "eval_bench.json"
  report = json.loads(path.read_text())
  assert [(r["kind"], r["nprobe"]) for r in report["results"]] == [
      ("ivf_flat", 2), ("ivf_flat", 8), ("ivf_sq8", 2), ("ivf_sq8", 8)]
  for row in report["results"]:
    assert 0.0 <= row["recall@50_vs_flat"] <= 1.0
    assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0
  assert report["rows_in_payload"] >= 2900 and report["nlist"] >= 1
