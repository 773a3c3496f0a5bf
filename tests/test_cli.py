"""cli: every command-line tool answers --help with its usage and exit 0 (absl's own exit 1
reads as a failure to scripts and CI)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIS = ("lvm_jax.main", "lvm_jax.status", "lvm_jax.eval", "lvm_jax.eval.build_index",
        "lvm_jax.corpus.build", "lvm_jax.corpus.ingest", "lvm_jax.corpus.legacy",
        "lvm_jax.corpus.synthetic", "lvm_jax.import_torch", "lvm_jax.models",
        "lvm_jax.retrieval.baselines", "lvm_jax.predict", "lvm_jax.eval.fit_reranker",
        "lvm_jax.distributed.coordination_service", "lvm_jax.adapt",
        "lvm_jax.export")


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


# ---------------------------------------------------------------- the newcomer's bad input
# Each probe of issue 31, as a new user types it: one `error:` line that names the flag or
# field, what it takes and the closest valid name; exit 2; no traceback.

TINY = "--config=configs/s_realtext.py:tiny"
TRAIN_FIELDS = ("accum_steps, batch_size, best_metric, best_mode, clip_norm, "
                "early_stopping_patience, final_lr_fraction, init_from, keep_checkpoints, "
                "learning_rate, log_every_steps, num_epochs, parallel, smoke_gate_epoch, "
                "smoke_gate_metric, smoke_gate_minimum, warmup_steps, weight_decay")
GROUPS = "augment, backend, data, eval, evals, head, loss, model, seed, train"

# (probe, argv after the program, the exact error line)
MAIN_PROBES = [
    ("unknown field in a group", [TINY, "--workdir=W", "--config.train.bogus=1"],
     "error: --config.train.bogus=1: config field train.bogus does not exist in "
     f"configs/s_realtext.py:tiny. Fix: pass one of config.train's fields: {TRAIN_FIELDS}."),
    ("a typo of a field", [TINY, "--workdir=W", "--config.train.learing_rate=0.1"],
     "error: --config.train.learing_rate=0.1: config field train.learing_rate does not exist "
     "in configs/s_realtext.py:tiny. Did you mean --config.train.learning_rate? Fix: pass one of "
     f"config.train's fields: {TRAIN_FIELDS}."),
    ("a model field given at the top", [TINY, "--workdir=W", "--config.d_model=64"],
     "error: --config.d_model=64: config field d_model does not exist in "
     "configs/s_realtext.py:tiny. Did you mean --config.model.d_model? Fix: pass one of "
     f"config's fields: {GROUPS}."),
    ("unknown top-level field", [TINY, "--workdir=W", "--config.bogus=1"],
     "error: --config.bogus=1: config field bogus does not exist in configs/s_realtext.py:tiny. "
     f"Fix: pass one of config's fields: {GROUPS}."),
    ("a field of a group given at the top (launch/README.md's old example)",
     [TINY, "--workdir=W", "--config.num_epochs=2"],
     "error: --config.num_epochs=2: config field num_epochs does not exist in "
     "configs/s_realtext.py:tiny. Did you mean --config.train.num_epochs? Fix: pass one of "
     f"config's fields: {GROUPS}."),
    ("unknown config argument", ["--config=configs/s_realtext.py:bogus", "--workdir=W"],
     "error: --config=configs/s_realtext.py:bogus: configs/s_realtext.py: unknown config "
     "argument 'bogus'. Fix: use one of cpu, tiny, finetune, or none "
     "(--config=configs/s_realtext.py)."),
    ("a typo of the config argument", ["--config=configs/s_realtext.py:tinny", "--workdir=W"],
     "error: --config=configs/s_realtext.py:tinny: configs/s_realtext.py: unknown config "
     "argument 'tinny'. Did you mean tiny? Fix: use one of cpu, tiny, finetune, or none "
     "(--config=configs/s_realtext.py)."),
    ("a config file that does not exist", ["--config=configs/nope.py", "--workdir=W"],
     "error: --config=configs/nope.py: the config file does not load: [Errno 2] No such file or "
     "directory: 'configs/nope.py'. Fix: pass a file of configs/, e.g. "
     "--config=configs/s_realtext.py:tiny."),
    ("no --workdir, no --config", [],
     "error: missing required flags --config, --workdir (--config: Experiment config file, "
     "e.g. configs/s_contrastive.py[:tiny]; --workdir: Directory for checkpoints, "
     "history.json, TensorBoard). Fix: pass them."),
    ("a word for a number", [TINY, "--workdir=W", "--config.train.learning_rate=fast"],
     "error: --config.train.learning_rate=fast: config field train.learning_rate cannot take "
     "'fast' (it takes float values; default 0.003): could not convert string to float: "
     "'fast'. Fix: pass --config.train.learning_rate=<a value of that type>."),
    ("a value below a field", [TINY, "--workdir=W", "--config.train.learning_rate.x=1"],
     "error: --config.train.learning_rate.x=1: config field train.learning_rate is a value "
     "(0.003), not a group with fields. Fix: pass --config.train.learning_rate=<value>."),
    ("unknown flag", [TINY, "--workdir=W", "--bogus=1"],
     "error: unknown flag --bogus. Fix: correct or drop it (--help lists the flags)."),
    ("a typo of a flag", [TINY, "--workdirr=W"],
     "error: unknown flag --workdirr. Did you mean --workdir? Fix: correct or drop it (--help "
     "lists the flags)."),
    ("a stray argument", [TINY, "--workdir=W", "extra"],
     "error: unexpected argument 'extra': every input is a --flag=value. Fix: drop it, or "
     "write it as a flag (--help lists them)."),
    ("an unknown model, refused before any data is made",
     [TINY, "--workdir=W", "--config.model.name=mamba_ss"],
     "error: config field model (model.name='mamba_ss'): create_model: unknown model "
     "'mamba_ss'; Did you mean mamba_s? valid names: mamba_s, mamba_hybrid_local, mamba_xl, "
     "mamba_sandwich, mamba_gr, mamba_h, lnsp_mamba_s, lnsp_mamba_hybrid_local, lnsp_mamba_xl, "
     "lnsp_mamba_sandwich, lnsp_mamba_gr. Fix: pass --config.model.<field>=<valid value>."),
    ("a typo of a choice", [TINY, "--workdir=W", "--config.loss.negatives=acum"],
     "error: config field loss.negatives='acum' is not one of ('micro', 'accum', 'global'). Did "
     "you mean accum? Fix: pass --config.loss.negatives=<one of them>."),
    ("a negative model size, refused before any data is made",
     [TINY, "--workdir=W", "--config.model.d_model=-5"],
     "error: config field model.d_model=-5 is invalid: it must be an integer >= 1. Fix: pass "
     "--config.model.d_model=<value in range>."),
]


def _run_in_process(module, argv, capsys, monkeypatch):
  """`python -m module *argv` in this process: (exit code, stderr). ml_collections reads the
  overrides from sys.argv, and registers a flag for each; both are put back after (the logging
  state app.run changes is put back by conftest's autouse fixture)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from lvm_jax import cli  # pylint: disable=g-import-not-at-top
  program = [module.__file__, *argv]
  monkeypatch.setattr(sys, "argv", program)
  flags.FLAGS.unparse_flags()
  capsys.readouterr()
  try:
    cli.run(module.main, argv=program)
    code = 0
  except SystemExit as exit_:
    code = exit_.code
  finally:
    for name in [name for name in flags.FLAGS if name.startswith("config.")]:
      delattr(flags.FLAGS, name)
    flags.FLAGS.unparse_flags()
  return code, capsys.readouterr().err


@pytest.mark.parametrize("probe, argv, line", MAIN_PROBES, ids=[p[0] for p in MAIN_PROBES])
def test_main_answers_bad_input_with_one_line_and_exit_2(tmp_path, capsys, monkeypatch, probe,
                                                         argv, line):
  del probe
  from lvm_jax import main as main_module  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(ROOT)
  workdir = str(tmp_path / "run")
  code, err = _run_in_process(main_module, [a.replace("=W", "=" + workdir) for a in argv],
                              capsys, monkeypatch)
  assert code == 2, err
  assert "Traceback" not in err
  assert [l for l in err.splitlines() if l.startswith("error:")] == [line]
  assert not os.path.exists(workdir)  # refused before anything was written or generated


# CLIs whose flags share names with main's (each defines them on absl's one FLAGS): run in
# their own interpreters, all at once. (module, argv, the exact error line)
OTHER_PROBES = [
    ("lvm_jax.status", ["--bogus"],
     "error: unknown flag --bogus. Fix: correct or drop it (--help lists the flags)."),
    ("lvm_jax.status", [],
     "error: python -m lvm_jax.status takes one argument, the run's WORKDIR (the --workdir "
     "given to python -m lvm_jax.main), not 0. Fix: python -m lvm_jax.status RUN/realtext_tiny."),
    ("lvm_jax.import_torch", ["--bogus"],
     "error: unknown flag --bogus. Fix: correct or drop it (--help lists the flags)."),
    ("lvm_jax.predict", ["--checkpiont=x"],
     "error: unknown flag --checkpiont. Did you mean --checkpoint? Fix: correct or drop it "
     "(--help lists the flags)."),
    ("lvm_jax.predict", ["--checkpoint=RUN", "--payload=P", "--text-file=tests/fixtures"],
     "error: --text-file tests/fixtures: is a directory. Fix: pass --text-file with a plain-text "
     "(UTF-8) file, or pipe the text to standard input."),
    ("lvm_jax.predict", ["--checkpoint=RUN", "--payload=P",
                         "--text-file=tests/fixtures/lnsp_mamba_s.npz"],
     "error: --text-file tests/fixtures/lnsp_mamba_s.npz: is not UTF-8 text (byte 0xc7 at offset "
     "15). Fix: pass --text-file with a plain-text (UTF-8) file, or pipe the text to standard "
     "input."),
    ("lvm_jax.predict", ["--checkpoint=RUN", "--payload=P", "--text-file=absent.txt"],
     "error: --text-file absent.txt: does not exist. Fix: pass --text-file with a plain-text "
     "(UTF-8) file, or pipe the text to standard input."),
    ("lvm_jax.eval.fit_reranker", [],
     "error: --checkpoint is required: the training workdir (the --workdir given to python -m "
     "lvm_jax.main). Fix: pass --checkpoint RUN/realtext_tiny."),
    ("lvm_jax.eval.fit_reranker", ["--checkpoint=x", "--depth=many"],
     "error: --depth=many: invalid literal for int() with base 10: 'many'. --depth takes: "
     "Shortlist rows reordered (at least the eval's k, 50). Fix: pass --depth=<a value of that "
     "kind>."),
]


def test_other_clis_answer_bad_input_with_one_line_and_exit_2():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  procs = [subprocess.Popen([sys.executable, "-m", module, *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for module, argv, _ in OTHER_PROBES]
  for (module, argv, line), proc in zip(OTHER_PROBES, procs):
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, (module, argv, err[-1000:])
    assert "Traceback" not in err and "FATAL" not in err, err
    assert [l for l in err.splitlines() if l.startswith("error:")] == [line], (module, argv)


def test_help_does_not_import_jax():
  """--help answers before JAX is imported (JAX's import is most of a two-second start)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for module in ("lvm_jax.main", "lvm_jax.status", "lvm_jax.import_torch"):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "absl.flags" in imported  # the check sees the imports at all
    assert "jax" not in imported and "flax" not in imported, module


LAST_WORDS_CHILD = """
import os, sys, threading, time
from lvm_jax import cli
def noise():  # as JAX's C++ logging does when a peer dies: line-sized writes to fd 2
  while True:
    os.write(2, b'E0000 noise.cc:1] still logging\\n')
    time.sleep(0.00005)
threading.Thread(target=noise, daemon=True).start()
time.sleep(0.05)
other = threading.Thread(target=cli.exit_with_last_words, args=('the collective failed', 3))
other.start()
cli.exit_with_last_words('process 1 of 2 lost contact', 3)
"""


def test_last_words_stay_last_and_single_while_threads_write_to_stderr(tmp_path):
  """exit_with_last_words ends the process with its status and exactly one `error:` line,
  the last, although a thread keeps logging to fd 2 and a second thread calls it too.

  stderr is a file, as a launcher's log is: with the old order (print, then /dev/null)
  the noise lands after our line in most runs."""
  script = tmp_path / "child.py"
  script.write_text(LAST_WORDS_CHILD)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  for run in range(10):
    log = tmp_path / f"stderr{run}.txt"
    with open(log, "w") as stderr:
      code = subprocess.run([sys.executable, str(script)], stdout=subprocess.DEVNULL,
                            stderr=stderr, env=env, timeout=120, check=False).returncode
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 3 and len(errors) == 1 and lines[-1] == errors[0], (run, code, lines[-3:])
    assert "still logging" in lines[0]  # the noise did run beside it
