"""A full disk (OSError ENOSPC) while writing, one row per file kind: checkpoint, history,
index, eval JSON. Each gives one `error:` line naming the file, the errno and the fix,
exit status 3 (an environment fault; 2 stays bad input), leaves the previous file as it
was, and the same command succeeds (a training run resumes) once the disk has room.

The fault is injected where the file is committed: os.replace for write-then-rename files
(it fails on a full disk like the writes before it), Orbax's save for checkpoints.
"""

import errno
import json
import os

import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from lvm_jax import cli
from lvm_jax.eval import __main__ as eval_cli
from lvm_jax.eval import build_index
from lvm_jax.workdir import Workdir

LAX_GATES = ["--gate-contain50", "0", "--gate-eff5", "0", "--gate-r5", "0", "--gate-p95", "1e9"]
FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk_at(monkeypatch, suffix):
  """os.replace onto a path ending in `suffix` fails as on a full disk; others go through."""
  real_replace = os.replace

  def replace(source, target, *args, **kwargs):
    if os.fspath(target).endswith(suffix):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(target))
    return real_replace(source, target, *args, **kwargs)
  monkeypatch.setattr(os, "replace", replace)


def _full_disk_for_checkpoints(monkeypatch, _):
  def save(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)


def _snapshot(paths):
  """Bytes of every file under `paths` (files or directories), by path."""
  found = {}
  for path in paths:
    if os.path.isfile(path):
      found[path] = open(path, "rb").read()
    for root, _, names in os.walk(path):
      for name in names:
        found[os.path.join(root, name)] = open(os.path.join(root, name), "rb").read()
  return found


def _assert_one_clear_line(message, path_part):
  assert "\n" not in message, message
  assert path_part in message and "ENOSPC" in message and "Fix: free space" in message, message
  assert "previous version of the file is intact" in message


# kind, how to fill the disk, the file the error must name (part of its path), the files
# that must stay as they were (history.json gains the epoch before its checkpoint is saved;
# a resume truncates it to the checkpoint's step)
TRAINING_CASES = [
    ("history", lambda m: _full_disk_at(m, "history.json"), "history.json",
     ("history", "checkpoints")),
    ("checkpoint", lambda m: _full_disk_for_checkpoints(m, None), "checkpoints",
     ("checkpoints",)),
]


@pytest.mark.parametrize("kind,fill_disk,names,kept", TRAINING_CASES,
                         ids=[case[0] for case in TRAINING_CASES])
@pytest.mark.slow
def test_training_stops_with_one_line_keeps_its_files_and_resumes(finished_run_copy, monkeypatch,
                                                                  kind, fill_disk, names, kept):
  from lvm_jax import train  # pylint: disable=g-import-not-at-top
  workdir, _ = finished_run_copy
  paths = Workdir(workdir)
  kept_paths = [getattr(paths, name) for name in kept]
  before = _snapshot(kept_paths)
  with monkeypatch.context() as patch:
    fill_disk(patch)
    with pytest.raises(cli.EnvironmentFault) as caught:
      train.train_and_evaluate(tiny_config(num_epochs=3), workdir)
  assert cli.exit_status(caught.value) == 3
  _assert_one_clear_line(cli.message(caught.value), names)
  assert _snapshot(kept_paths) == before, kind
  summary = train.train_and_evaluate(tiny_config(num_epochs=3), workdir)
  assert [entry["epoch"] for entry in summary["history"]] == [1, 2, 3]


def test_index_write_keeps_the_previous_index(eval_workdir, tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "payload.faiss")
  argv = ["--payload", os.path.join(eval_workdir, "data", "payload"), "--out", out,
          "--kind", "flat"]
  assert build_index.main(argv) == 0
  before = _snapshot([out])
  with monkeypatch.context() as patch:
    _full_disk_at(patch, ".faiss")
    assert build_index.main(argv) == 3
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith("error: ")
  _assert_one_clear_line(line, out)
  assert _snapshot([out]) == before and not [n for n in os.listdir(tmp_path) if ".tmp" in n]
  assert build_index.main(argv) == 0


def test_eval_json_write_keeps_the_previous_report(eval_workdir, tmp_path, monkeypatch, capsys):
  out = str(tmp_path / "eval.json")
  argv = ["--checkpoint", eval_workdir, "--out", out, "--latency-queries", "5", *LAX_GATES]
  assert eval_cli.main(argv) == 0
  before = _snapshot([out])
  with monkeypatch.context() as patch:
    _full_disk_at(patch, "eval.json")
    assert eval_cli.main(argv) == 3
  line = capsys.readouterr().err.strip().splitlines()[-1]
  _assert_one_clear_line(line, out)
  assert _snapshot([out]) == before
  with open(out) as f:
    json.load(f)
  assert eval_cli.main(argv) == 0


@pytest.fixture
def parsed_flags():
  """--verbose at its default, as after app.run's parsing."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  was_parsed = flags.FLAGS.is_parsed()
  if not was_parsed:
    flags.FLAGS.mark_as_parsed()
  yield
  if not was_parsed:
    flags.FLAGS.unparse_flags()


def test_cli_exits_3_for_the_environment_and_2_for_bad_input(capsys, parsed_flags):
  @cli.exits_cleanly_on_user_errors
  def full_disk(argv):
    raise cli.write_failed("/data/x.json", FULL)

  @cli.exits_cleanly_on_user_errors
  def bad_value(argv):
    raise ValueError("config field x=-1 is invalid")

  for main, code in ((full_disk, 3), (bad_value, 2)):
    with pytest.raises(SystemExit) as exited:
      main([])
    assert exited.value.code == code
  err = capsys.readouterr().err.splitlines()
  assert err[0].startswith("error: /data/x.json: write failed, ENOSPC")
  assert err[1] == "error: config field x=-1 is invalid"
  # Not every OSError is the machine's: a missing directory stays bad input.
  assert cli.write_failed("/x", OSError(errno.ENOENT, "No such file")).errno == errno.ENOENT
  assert cli.exit_status(cli.write_failed("/x", OSError(errno.ENOENT, "No such file"))) == 2
