"""The commands in README.md, docs/*.md and launch/README.md name flags and config fields that
exist: each `python -m lvm_jax.<cli> --flag` is checked against that CLI's --helpfull, and each
`--config.<field>` against the config file the command names. A renamed flag or field then
fails here instead of in a newcomer's first hour (issue 31). The commands are not run here
(they train, embed or read a run); each CLI's --helpfull is, all at once."""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", "launch/README.md", *sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
COMMAND = re.compile(r"python -m (lvm_jax(?:\.[a-z_]+)*)((?:[^`\n]|\\\n)*)")
HELP_FLAG = re.compile(r"^\s+--(?:\[no\])?([A-Za-z0-9_.-]+)", re.MULTILINE)
# absl's own flags that any CLI takes.
ABSL_FLAGS = {"help", "helpfull", "helpshort", "verbose", "v", "logtostderr", "flagfile"}


def documented_commands():
  """[(page, module, [argument words])] of every `python -m lvm_jax...` in the pages."""
  found = []
  for page in PAGES:
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
      text = f.read()
    for match in COMMAND.finditer(text):
      words = match.group(2).replace("\\\n", " ").split("#")[0]
      try:
        arguments = shlex.split(words)
      except ValueError:  # an unbalanced quote in prose: keep the words up to it
        arguments = words.split()
      found.append((page, match.group(1), arguments))
  return found


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def known_flags():
  """{module: flag names} from each documented CLI's --helpfull, every CLI at once."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  modules = sorted({module for _, module, _ in COMMANDS})
  procs = {module: subprocess.Popen([sys.executable, "-m", module, "--helpfull"], cwd=ROOT,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for module in modules}
  flags = {}
  for module, proc in procs.items():
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (module, err[-1000:])
    flags[module] = set(HELP_FLAG.findall(out + err)) | ABSL_FLAGS
  return flags


def test_the_pages_hold_commands():
  assert len(COMMANDS) > 30 and {m for _, m, _ in COMMANDS} >= {"lvm_jax.main", "lvm_jax.eval",
                                                                "lvm_jax.predict"}


def test_every_documented_flag_exists(known_flags):
  unknown = []
  for page, module, arguments in COMMANDS:
    for word in arguments:
      if not word.startswith("--") or word == "--":
        continue
      name = word[2:].split("=", 1)[0]
      if name.startswith("config.") and module == "lvm_jax.main":
        continue  # a config field: the next test
      if name not in known_flags[module] and not (
          name.startswith("no") and name[2:] in known_flags[module]):
        unknown.append(f"{page}: python -m {module} ... {word}")
  assert not unknown, "\n".join(unknown)


def _config_of(spec):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values)
  values(["test", f"--config={spec}"])
  return values.config


def test_every_documented_config_field_exists():
  missing = []
  for page, module, arguments in COMMANDS:
    spec = next((w.split("=", 1)[1] for w in arguments if w.startswith("--config=")), None)
    fields = [w[len("--config."):].split("=", 1)[0] for w in arguments
              if w.startswith("--config.")]
    if module != "lvm_jax.main" or not fields or spec is None or not spec.startswith("configs/"):
      continue
    if spec.startswith("configs/lnsp_imported.py"):
      spec = "configs/s_contrastive.py"  # its argument is an imported run; the fields are these
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
      config = _config_of(spec)
    finally:
      os.chdir(cwd)
    for field in fields:
      node = config
      for part in field.split("."):
        if part not in node:
          missing.append(f"{page}: --config.{field} (not in {spec})")
          break
        node = node[part]
  assert not missing, "\n".join(missing)
