"""cli: every command-line tool answers --help with its usage and exit 0 (absl's own exit 1
reads as a failure to scripts and CI)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIS = ("lvm_jax.main", "lvm_jax.status", "lvm_jax.eval", "lvm_jax.eval.build_index",
        "lvm_jax.corpus.build", "lvm_jax.corpus.ingest", "lvm_jax.corpus.legacy",
        "lvm_jax.corpus.synthetic", "lvm_jax.import_torch", "lvm_jax.models",
        "lvm_jax.retrieval.baselines", "lvm_jax.predict", "lvm_jax.eval.fit_reranker",
        "lvm_jax.coordination_service")


def _run_all(extra_args):
  """Every CLI at once (each is a fresh interpreter; together they take one's wall time)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  procs = {name: subprocess.Popen([sys.executable, "-m", name, *extra_args], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for name in CLIS}
  return {name: (proc.wait(timeout=600), *proc.communicate()) for name, proc in procs.items()}


def test_help_exits_0_on_every_cli():
  results = _run_all(["--help"])
  failed = {name: (code, err[-300:]) for name, (code, out, err) in results.items() if code != 0}
  assert not failed, failed
  for name, (_, out, err) in results.items():
    assert "--" in out + err, f"{name} --help printed no flags"


def test_every_module_cli_is_listed():
  # A new CLI (a module with a main run by cli.run, or eval's own parser) joins CLIS above.
  found = set()
  for directory, _, files in os.walk(os.path.join(ROOT, "lvm_jax")):
    for name in files:
      path = os.path.join(directory, name)
      if name.endswith(".py") and "__name__ == \"__main__\"" in open(path, encoding="utf-8").read():
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        found.add(module[:-len(".__main__")] if module.endswith(".__main__") else module)
  assert found == set(CLIS)
