"""The Pallas kernel's start-up self-check, timed, and what "auto" then resolves to.

  python -m benchmarks.pallas_check                   # on the machine's default backend
  python -m benchmarks.pallas_check --out_dir=/tmp/suite

Runs lvm_jax.ops.pallas_scan.self_check (through Triton on a GPU, the Pallas
interpreter elsewhere) as scan.resolve_scan_type does on a GPU, and records
whether it passed, why not, its seconds (compile included: the check should
pass or fail within about a second on a GPU) and the mode "auto" picks at L 5
and L 1024 here. Writes results/<machine>/pallas_check.json; exits 1 if the
check failed, so benchmarks/device_suite.sh marks the step failed.
"""

from __future__ import annotations

import sys
import time
from typing import Dict

import jax
from absl import app, flags

from benchmarks import common
from lvm_jax import cli
from lvm_jax.ops import pallas_scan
from lvm_jax.ops import scan


def run(*, out_dir: str) -> Dict:
  start = time.perf_counter()
  failure = pallas_scan.self_check()
  seconds = time.perf_counter() - start
  report = {"passed": failure is None, "failure": failure, "self_check_s": seconds,
            "interpret": pallas_scan.default_interpret(),
            "device": str(jax.devices()[0].device_kind),
            "auto_at_L5": scan.resolve_scan_type("auto", 5).value,
            "auto_at_L1024": scan.resolve_scan_type("auto", 1024).value}
  print(f"Pallas self-check {'passed' if failure is None else 'FAILED: ' + failure} in "
        f"{seconds:.2f} s on {report['device']}; 'auto' picks {report['auto_at_L5']} at L 5, "
        f"{report['auto_at_L1024']} at L 1024")
  print("wrote", common.write_json("pallas_check", report, out_dir))
  return report


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  common.define_out_dir(flag_values)


def settings(flag_values: flags.FlagValues = flags.FLAGS) -> Dict:
  return dict(out_dir=flag_values.out_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  sys.exit(0 if run(**settings())["passed"] else 1)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
