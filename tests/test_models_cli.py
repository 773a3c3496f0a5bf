"""`python -m lvm_jax.models`: the parameter table from the command line."""

import subprocess
import sys

from lvm_jax.models import VARIANTS


def test_cli_prints_every_variant_at_the_given_vector_dim():
  result = subprocess.run([sys.executable, "-m", "lvm_jax.models", "--vector_dim=16"],
                          capture_output=True, text=True, timeout=600, check=True)
  rows = result.stdout.splitlines()[1:]
  assert {row.split()[0] for row in rows} == set(VARIANTS)
  assert all(int(row.split()[-1].replace(",", "")) > 0 for row in rows)


def test_help_prints_the_flag():
  result = subprocess.run([sys.executable, "-m", "lvm_jax.models", "--help"], capture_output=True,
                          text=True, timeout=600, check=False)
  # absl's --help prints the usage and exits 1 without running main (absl/app.py, HelpFlag).
  assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
  assert "--vector_dim" in result.stdout and "parameter counts" in result.stdout
