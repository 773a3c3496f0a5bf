"""Where the test suite's time goes: a pytest JUnit XML file grouped by test file.

    python -m pytest -q --junitxml=RUN/suite.xml
    python -m benchmarks.suite_durations --xml=RUN/suite.xml --wall_s=1234 --name=suite_newest

Writes <out_dir>/<machine>/<name>.json: the wall time given (pytest's own closing line, or
`time`), the counts, every file's summed test time and test count, and the slowest tests.
Run pytest with LVM_JAX_TEST_PROFILE=1 to split the time into in-process compiling, tests
that start processes, and the rest (tests/conftest.py records both as JUnit properties).
Summed test time leaves out collection and session fixtures' set-up outside the first test,
so it is below the wall time; the JSON keeps both. Needs no JAX: it reads XML only.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import sys
import xml.etree.ElementTree as ElementTree
from typing import Dict, List

from absl import app, flags

_XML = flags.DEFINE_string("xml", None, "A pytest --junitxml file.")
_WALL_S = flags.DEFINE_float("wall_s", None, "The run's wall time in seconds, as measured.")
_NAME = flags.DEFINE_string("name", "suite_durations", "Output file name, without .json.")
_OUT_DIR = flags.DEFINE_string("out_dir", os.path.join(os.path.dirname(__file__), "results"),
                               "Results root; the file goes to <out_dir>/<machine>/.")
_TOP = flags.DEFINE_integer("top", 10, "How many of the slowest tests to keep.")


def read_cases(path: str) -> List[Dict]:
  """Every <testcase> as {file, name, seconds, outcome}."""
  try:
    root = ElementTree.parse(path).getroot()
  except (OSError, ElementTree.ParseError) as error:
    raise ValueError(f"{path}: not a readable JUnit XML file ({error}); write one with "
                     "`python -m pytest --junitxml=PATH`") from error
  cases = []
  for case in root.iter("testcase"):
    outcome = "passed"
    for child, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
      if case.find(child) is not None:
        outcome = name
    module = case.get("classname", "").split(".")
    # classname is tests.test_x or tests.test_x.TestClass: the file is the test_* part.
    file_part = next((part for part in module if part.startswith("test_")), ".".join(module))
    properties = {prop.get("name"): prop.get("value") for prop in case.iter("property")}
    cases.append({"file": f"tests/{file_part}.py", "name": case.get("name", ""),
                  "seconds": float(case.get("time", 0.0)), "outcome": outcome,
                  "compile_s": float(properties.get("compile_s", 0.0)),
                  "processes": int(properties.get("processes", 0))})
  return cases


def where_the_time_goes(cases: List[Dict]) -> Dict:
  """With LVM_JAX_TEST_PROFILE=1 (tests/conftest.py): JAX compiling in the test process; the
  rest of the tests that start processes (their children's imports, compiles and work); and
  everything else (running, data, I/O)."""
  compile_s = sum(case["compile_s"] for case in cases)
  spawning = [case for case in cases if case["processes"]]
  in_processes = sum(case["seconds"] - case["compile_s"] for case in spawning)
  return {"in_process_compile_s": round(compile_s, 1),
          "tests_starting_processes_s": round(in_processes, 1),
          "tests_starting_processes": len(spawning),
          "processes_started": sum(case["processes"] for case in cases),
          "everything_else_s": round(sum(c["seconds"] for c in cases) - compile_s - in_processes,
                                     1)}


def summarise(cases: List[Dict], wall_s: float | None, top: int) -> Dict:
  """Counts, per-file sums (largest first) and the `top` slowest tests."""
  by_file = collections.defaultdict(lambda: {"seconds": 0.0, "tests": 0, "compile_s": 0.0})
  outcomes = collections.Counter(case["outcome"] for case in cases)
  for case in cases:
    by_file[case["file"]]["seconds"] += case["seconds"]
    by_file[case["file"]]["compile_s"] += case["compile_s"]
    by_file[case["file"]]["tests"] += 1
  files = sorted(({"file": name, "seconds": round(row["seconds"], 2), "tests": row["tests"],
                   "compile_s": round(row["compile_s"], 2)}
                  for name, row in by_file.items()), key=lambda row: -row["seconds"])
  slowest = sorted(cases, key=lambda case: -case["seconds"])[:top]
  return {"wall_s": wall_s, "summed_test_s": round(sum(c["seconds"] for c in cases), 2),
          "outcomes": dict(outcomes), "distinct_test_functions":
              len({(c["file"], c["name"].split("[")[0]) for c in cases}),
          "profiled": any(case["compile_s"] or case["processes"] for case in cases),
          "where": where_the_time_goes(cases),
          "files": files,
          "slowest": [{"test": f"{c['file']}::{c['name']}", "seconds": round(c["seconds"], 2)}
                      for c in slowest]}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not _XML.value:
    print("error: --xml is required (a file from `python -m pytest --junitxml=PATH`)",
          file=sys.stderr)
    sys.exit(2)
  try:
    summary = summarise(read_cases(_XML.value), _WALL_S.value, _TOP.value)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  out_dir = os.path.join(_OUT_DIR.value, f"{platform.machine()}-{os.cpu_count()}cpu")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{_NAME.value}.json")
  with open(path, "w") as handle:
    json.dump(summary, handle, indent=1)
  print(f"{summary['outcomes']} summed {summary['summed_test_s']:.0f} s -> {path}")
  if summary["profiled"]:
    print(f"  where: {summary['where']}")
  for row in summary["files"][:15]:
    print(f"  {row['seconds']:8.1f} s  {row['tests']:4d}  {row['file']}")


if __name__ == "__main__":
  app.run(main)
