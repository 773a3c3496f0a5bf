"""benchmarks/device_suite.sh --tiny: every GPU check's wiring, on CPU at tiny sizes."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import common

SUITE = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "device_suite.sh")


@pytest.mark.slow
def test_tiny_suite_runs_every_step_and_writes_their_json(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
  result = subprocess.run(["bash", SUITE, "--tiny"], env=env, capture_output=True, text=True,
                          timeout=1500, check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  suite = json.loads((tmp_path / "suite.json").read_text())
  assert suite["tiny"] is True
  steps = {s["step"]: s["exit_status"] for s in suite["steps"]}
  assert steps == {"pallas_parity": 0, "pallas_check": 0, "scan_bench": 0, "epoch_fp32": 0,
                   "eval_bench": 0}
  results = tmp_path / common.machine_name()
  check = json.loads((results / "pallas_check.json").read_text())
  assert check["passed"] and check["failure"] is None and check["interpret"]
  assert check["auto_at_L5"] == "native"  # on CPU "auto" picks the native kernel, never Pallas
  for name in ("scan_bench", "epoch_bench_fp32", "eval_bench"):
    assert (results / f"{name}.json").exists(), name


def test_unknown_argument_and_missing_out_are_refused(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path))
  bad = subprocess.run(["bash", SUITE, "--huge"], env=env, capture_output=True, text=True,
                       check=False)
  assert bad.returncode == 2 and "--huge" in bad.stderr
  env.pop("OUT")
  no_out = subprocess.run(["bash", SUITE, "--tiny"], env=env, capture_output=True, text=True,
                          check=False)
  assert no_out.returncode == 2 and "set OUT" in no_out.stderr
