"""python -m lvm_jax.eval.fit_reranker on the tiny trained run, and the eval CLI picking it up."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from lvm_jax.eval import __main__ as eval_cli
from lvm_jax.retrieval import learned_rerank

# Its module fixture is costly: one pytest-xdist worker runs the whole file.
pytestmark = pytest.mark.xdist_group("eval_fit_reranker")

LAX_GATES = ["--gate-contain50", "0", "--gate-eff5", "0", "--gate-r5", "0", "--gate-p95", "1e9"]


def fit_cli(workdir, *extra):
  """Only --checkpoint: --payload and --windows default to the run's synthetic corpus, as on
  the README's quick-start run."""
  return subprocess.run([sys.executable, "-m", "lvm_jax.eval.fit_reranker", "--checkpoint",
                         workdir, *extra],
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def fitted_workdir(finished_run, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rerank") / "run")
  shutil.copytree(finished_run[0], workdir, ignore=shutil.ignore_patterns(".lock"))
  run = fit_cli(workdir, "--depth", "60")
  assert run.returncode == 0, run.stderr[-2000:]
  return workdir, run.stdout


def test_fit_checks_itself_on_held_out_articles_then_writes_the_reranker(fitted_workdir):
  workdir, printed = fitted_workdir
  assert "check (all, " in printed and "check (excl, " in printed
  reranker = learned_rerank.load(os.path.join(workdir, "reranker.json"))
  assert reranker.depth == 60
  assert set(reranker.fitted_on["check"]) == {"all", "excl"}
  assert reranker.fitted_on["windows"] == os.path.join(workdir, "data", "val_rows.npz")


def test_eval_uses_the_workdirs_reranker_unless_told_not_to(fitted_workdir, capsys, tmp_path):
  workdir, _ = fitted_workdir
  out = str(tmp_path / "eval.json")
  assert eval_cli.main(["--checkpoint", workdir, "--latency-queries", "5", "--out", out,
                        *LAX_GATES]) == 0
  assert "reranker: " in capsys.readouterr().out
  with open(out) as f:
    assert json.load(f)["lvm_jax"]["options"]["reranker"]["depth"] == 60
  assert eval_cli.main(["--checkpoint", workdir, "--latency-queries", "5", "--reranker", "none",
                        *LAX_GATES]) == 0
  assert "reranker: " not in capsys.readouterr().out


def test_eval_names_a_missing_reranker_file(fitted_workdir, capsys):
  workdir, _ = fitted_workdir
  code = eval_cli.main(["--checkpoint", workdir, "--reranker", "/nonexistent/r.json",
                        *LAX_GATES])
  assert code == 2
  assert ("error: --reranker /nonexistent/r.json: does not exist; fit one with python -m "
          "lvm_jax.eval.fit_reranker, or pass --reranker none.") in capsys.readouterr().err


def test_a_shortlist_shallower_than_contain50_is_refused(eval_workdir):
  run = fit_cli(eval_workdir, "--depth", "10")
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1] == (
      "error: --depth 10: must be at least 50, the k of Contain@50.")
  assert not os.path.exists(os.path.join(eval_workdir, "reranker.json"))
