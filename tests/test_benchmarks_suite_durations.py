"""benchmarks.suite_durations groups a JUnit XML file by test file, exactly."""

import pytest

from benchmarks import suite_durations

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_a" name="test_one" time="1.5"><properties>
<property name="compile_s" value="1.0"/><property name="processes" value="0"/></properties></testcase>
<testcase classname="tests.test_a" name="test_two[x]" time="2.0"><skipped message="no"/></testcase>
<testcase classname="tests.test_a" name="test_two[y]" time="0.5"><properties>
<property name="compile_s" value="0.25"/><property name="processes" value="2"/></properties></testcase>
<testcase classname="tests.test_b.TestGroup" name="test_three" time="5.0"><failure/></testcase>
</testsuite></testsuites>
"""


def test_sums_counts_and_slowest_per_file(tmp_path):
  path = tmp_path / "suite.xml"
  path.write_text(JUNIT)
  summary = suite_durations.summarise(suite_durations.read_cases(str(path)), 12.0, top=2)
  assert summary["files"] == [{"file": "tests/test_b.py", "seconds": 5.0, "tests": 1,
                               "compile_s": 0.0},
                              {"file": "tests/test_a.py", "seconds": 4.0, "tests": 3,
                               "compile_s": 1.25}]
  # test_two[y] started 2 processes: its 0.5 s less its own 0.25 s of compiling.
  assert summary["profiled"] and summary["where"] == {
      "in_process_compile_s": 1.2, "tests_starting_processes_s": 0.2,
      "tests_starting_processes": 1, "processes_started": 2, "everything_else_s": 7.5}
  assert summary["outcomes"] == {"passed": 2, "skipped": 1, "failed": 1}
  assert summary["summed_test_s"] == 9.0 and summary["wall_s"] == 12.0
  assert summary["distinct_test_functions"] == 3  # test_two's parameters count once
  assert [row["test"] for row in summary["slowest"]] == ["tests/test_b.py::test_three",
                                                         "tests/test_a.py::test_two[x]"]


def test_an_unreadable_file_names_itself_and_the_fix(tmp_path):
  path = tmp_path / "broken.xml"
  path.write_text("<testsuites><testcase")
  with pytest.raises(ValueError, match=r"broken\.xml: not a readable JUnit XML file .*"
                                       r"--junitxml=PATH"):
    suite_durations.read_cases(str(path))
