"""How every command-line tool ends: one `error:` line, exit 2 on bad input, 3 on the machine.

Flag errors included: cli.run parses the flags itself (parse_flags), so an unknown flag or
config field, a value of the wrong type or a missing flag is one line naming it, what it takes
and the closest valid name, where absl printed "FATAL Flags parsing error" and exited 1 and
ml_collections raised a chained traceback.

A user who typed a wrong path or value needs the message, not 25 lines of
traceback; `--verbose` shows the traceback for a bug report. Exit codes
(docs/exit_codes.md): 2 is bad input or config, which the user fixes in the
command; 3 is the environment (a full disk, a write error, a lost peer
process), which the user fixes on the machine and then reruns the same
command to resume.
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import sys
import threading
from typing import Iterable, List, Optional

from absl import app, flags

flags.DEFINE_bool("verbose", False, "On an error, show the full traceback, not just its message.")

EXIT_BAD_INPUT = 2
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
EXIT_ENVIRONMENT = 3

# Write errors that no flag can fix: the disk, the quota or the device.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG})


class UserFacingError(Exception):
  """An error whose message tells the user what to do (not a bug)."""


class EnvironmentFault(UserFacingError, OSError):
  """The machine failed a write (full disk, I/O error); rerunning after the fix resumes."""


_LAST_WORDS = threading.Lock()  # exit_with_last_words: one caller writes and exits

# Bad input, bad config, missing or unreadable files: what a user can fix.
USER_ERRORS = (ValueError, OSError, UserFacingError)


def exit_with_last_words(message: str, status: int) -> None:
  """Prints `error: message` as the process's last line, then exits at once.

  Used where a normal exit would hang (JAX's shutdown barrier waits for dead
  peers). JAX's C++ threads keep logging until the process is gone, and the peer's
  death that brings us here makes them log at that very moment. So stdout and
  stderr point at /dev/null first and our line goes to a copy of the old stderr
  after: a line logged before lands above ours, one logged after goes nowhere. No
  wait in between: JAX may end the process itself soon after, and our line must be
  out by then. A second caller (the watchdog and a failed collective can both
  notice) waits here for the first one's exit.
  """
  _LAST_WORDS.acquire()  # never released: the first caller's os._exit ends the process
  sys.stdout.flush()
  sys.stderr.flush()
  stderr = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.dup2(devnull, 2)
  # A progress bar may own the current line: start a new one.
  os.write(stderr, f"\nerror: {message}\n".encode(errors="replace"))
  os._exit(status)  # pylint: disable=protected-access


def write_failed(path, error: OSError) -> OSError:
  """The error to raise for a failed write of `path`: an EnvironmentFault naming the file, the
  errno and the fix when the machine is at fault, else `error` itself."""
  if isinstance(error, EnvironmentFault) or error.errno not in ENVIRONMENT_ERRNOS:
    return error
  name = errno.errorcode.get(error.errno, str(error.errno))
  fix = ("free space on that filesystem (or raise the quota)"
         if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else
         "check the disk and that the filesystem is writable")
  return EnvironmentFault(
      error.errno, f"{os.fspath(path)}: write failed, {name} ({error.strerror or error}). The "
      f"previous version of the file is intact. Fix: {fix}, then rerun the same command; a "
      "training run resumes from its last checkpoint.")


def exit_status(error: BaseException) -> int:
  """3 for an environment fault, 2 for other user errors."""
  return EXIT_ENVIRONMENT if isinstance(error, EnvironmentFault) else EXIT_BAD_INPUT


def message(error: BaseException) -> str:
  """EnvironmentFault's str() is OSError's `[Errno n] text`; the text alone reads better."""
  if isinstance(error, EnvironmentFault) and error.strerror:
    return error.strerror
  return str(error)


def exits_cleanly_on_user_errors(main):
  """Wraps an absl `main(argv)`: user errors print `error: <message>` and exit 2 (3 for the
  environment)."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as error:
      if flags.FLAGS["verbose"].value:  # readable before the flags are parsed (tests)
        raise
      print(f"error: {message(error)}", file=sys.stderr)
      sys.exit(exit_status(error))

  return wrapped


def did_you_mean(name: str, candidates: Iterable[str], prefix: str = "") -> str:
  """" Did you mean <prefix><closest>?" for the closest valid name, or "" when none is close."""
  close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
  return f" Did you mean {prefix}{close[0]}?" if close else ""


def _config_argument(argv: List[str], root: str) -> Optional[str]:
  """The value of --<root>=... in argv (the config file and its argument), or None."""
  found = [arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith(f"--{root}=")]
  return found[-1] if found else None


def _config_of(values: flags.FlagValues, root: str, argv: List[str]):
  """The ConfigDict of the config flag `root`, loaded again from argv when the parse failed
  before setting it (ml_collections applies the overrides while parsing the file's flag);
  None when `root` is no config flag or its file does not load (reported on its own)."""
  from ml_collections import ConfigDict  # pylint: disable=g-import-not-at-top
  if root not in values:
    return None
  try:
    config = values[root].value
    if config is None and _config_argument(argv, root) is not None:
      config = values[root].parser.parse(_config_argument(argv, root))
  except Exception:  # pylint: disable=broad-except
    return None
  return config if isinstance(config, ConfigDict) else None


def _leaf_paths(config, prefix: str = "") -> List[str]:
  """Every field of a ConfigDict as a dotted path (the closest match may sit in a group)."""
  from ml_collections import ConfigDict  # pylint: disable=g-import-not-at-top
  paths = []
  for key, value in config.items():
    path = prefix + key
    paths += _leaf_paths(value, path + ".") if isinstance(value, ConfigDict) else [path]
  return paths


FIELD_CUTOFF = 0.7  # difflib ratio a config field's suggestion needs


def _closest_field(name: str, node, config, group: str, root: str) -> str:
  """" Did you mean --<field>?" for the closest of: the fields beside the typo, and every value
  of the config by its own name (--config.d_model -> --config.model.d_model); "" when none is
  close: a ratio below FIELD_CUTOFF (total_steps is 0.64 from accum_steps, a wrong lead)."""
  candidates = {f"--{group}.{key}": key for key in node.keys()}
  for path in _leaf_paths(config):
    candidates.setdefault(f"--{root}.{path}", path.rsplit(".", 1)[-1])
  scored = [(difflib.SequenceMatcher(None, name, last).ratio(), -index, suggestion)
            for index, (suggestion, last) in enumerate(candidates.items())]
  score, _, suggestion = max(scored, default=(0.0, 0, ""))
  return f" Did you mean {suggestion}?" if score >= FIELD_CUTOFF else ""


def _unloadable_config(values: flags.FlagValues, argv: List[str]) -> Optional[str]:
  """The message for a config flag whose file did not load (ml_collections defers the error
  to the first use of the config), else None."""
  from ml_collections import ConfigDict  # pylint: disable=g-import-not-at-top
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  for name in values:
    flag = values[name]
    if (not isinstance(flag.parser, config_flags.ConfigFileFlagParser) or flag.value is None
        or isinstance(flag.value, ConfigDict)):
      continue
    try:
      flag.value.keys()
      continue
    except Exception as error:  # pylint: disable=broad-except
      lines = [line.strip() for line in str(error).splitlines() if line.strip()]
      reason = next((line for line in lines if "Errno" in line), lines[-1])
    return (f"--{name}={_config_argument(argv, name)}: the config file does not load: "
            f"{reason}. Fix: pass a file of configs/, e.g. --{name}=configs/s_realtext.py:tiny.")
  return None


def _missing_field(argv: List[str], values: flags.FlagValues) -> Optional[str]:
  """The message for the first --<config>.<path>=... whose path is not a field, else None."""
  from ml_collections import ConfigDict  # pylint: disable=g-import-not-at-top
  for arg in argv[1:]:
    name = arg.lstrip("-").split("=", 1)[0]
    root, _, path = name.partition(".")
    config = _config_of(values, root, argv) if arg.startswith("--") and path else None
    if config is None:
      continue
    node, walked = config, []
    for part in path.split("."):
      if isinstance(node, ConfigDict) and part in node:
        node, walked = node[part], walked + [part]
        continue
      where = ".".join(walked)
      if not isinstance(node, ConfigDict):
        return (f"{arg}: config field {where} is a value ({node!r}), not a group with fields. "
                f"Fix: pass --{root}.{where}=<value>.")
      fields = sorted(node.keys())
      group = f"{root}.{where}" if where else root
      hint = _closest_field(part, node, config, group, root)
      return (f"{arg}: config field {'.'.join(walked + [part])} does not exist in "
              f"{_config_argument(argv, root) or '--' + root}.{hint} Fix: pass one of "
              f"{group}'s fields: {', '.join(fields)}.")
  return None


def _field_type(values: flags.FlagValues, name: str, argv: List[str]) -> str:
  """" (it takes float values; default 0.003)" for a config field `name` (root.path), else ""."""
  root, _, path = name.partition(".")
  node = _config_of(values, root, argv) if path else None
  try:
    for part in path.split("."):
      node = node[part]
  except Exception:  # pylint: disable=broad-except
    return ""
  return "" if node is None else f" (it takes {type(node).__name__} values; default {node!r})"


def flag_error_message(error: Exception, argv: List[str], values: flags.FlagValues) -> str:
  """One line for a flag or config-override error: the flag or field, what it expects, the
  closest valid name, and the fix."""
  missing = _missing_field(argv, values)
  if missing:
    return missing
  if isinstance(error, flags.UnrecognizedFlagError):
    name = error.flagname
    return (f"unknown flag --{name}.{did_you_mean(name, values, '--')} Fix: correct or drop "
            "it (--help lists the flags).")
  text = str(error)
  if "Traceback (most recent call last)" in text:  # the config file raised: its last line
    last = [line for line in text.splitlines() if line.strip()][-1]
    flag = re.match(r"flag (--[^=]+=\S+?): ", text)
    reason = re.sub(r"^[A-Za-z_.]*(Error|Exception): ", "", last)
    return f"{flag.group(1)}: {reason}" if flag else reason
  problems = re.findall(r"^flag --([^=]+)=(.*?): (.*)$", text, flags=re.MULTILINE)
  required = [name for name, _, detail in problems if "must have a value other than None" in detail]
  if required:
    wanted = "; ".join(f"--{name}: {values[name].help.rstrip('.')}" for name in required)
    return (f"missing required flag{'s' if len(required) > 1 else ''} "
            f"{', '.join('--' + name for name in required)} ({wanted}). Fix: pass "
            f"{'them' if len(required) > 1 else 'it'}.")
  if problems:
    name, value, detail = problems[0]
    if "." in name and _config_of(values, name.partition(".")[0], argv) is not None:
      return (f"--{name}={value}: config field {name.partition('.')[2]} cannot take {value!r}"
              f"{_field_type(values, name, argv)}: {detail}. Fix: pass --{name}=<a value of that "
              "type>.")
    return (f"--{name}={value}: {detail}. --{name} takes: {values[name].help.rstrip('.')}. "
            f"Fix: pass --{name}=<a value of that kind>." if name in values else
            f"--{name}={value}: {detail}.")
  return " ".join(text.split())


def unexpected_arguments(argv: List[str]) -> str:
  """The message for words after the flags of a CLI whose every input is a --flag."""
  return (f"unexpected argument{'s' if len(argv) > 2 else ''} {' '.join(argv[1:])!r}: every "
          "input is a --flag=value. Fix: drop it, or write it as a flag (--help lists them).")


def parse_flags(argv: List[str]) -> List[str]:
  """app.run's flags parser: a flag or config-override error is one `error:` line and exit 2
  (absl prints "FATAL Flags parsing error" and exits 1; ml_collections raises a traceback)."""
  values = flags.FLAGS
  try:
    leftover = values(argv)
  except Exception as error:  # pylint: disable=broad-except  (every parse failure is bad input)
    if "--verbose" in argv:
      raise
    print(f"error: {flag_error_message(error, argv, values)}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  unloadable = _unloadable_config(values, argv)
  if unloadable:
    print(f"error: {unloadable}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
  return leftover


def define_checkpoint_flag(flag_values: Optional[flags.FlagValues] = None) -> None:
  """--checkpoint, one flag for every CLI that reads a trained run (eval, fit_reranker,
  predict): checkpoint.load takes a training workdir or one checkpoint directory."""
  flags.DEFINE_string("checkpoint", None, "Training workdir or checkpoint directory.",
                      flag_values=flags.FLAGS if flag_values is None else flag_values)


def run(main, **kwargs) -> None:
  """absl's app.run with flag errors and app.UsageError as one `error:` line and exit 2, and
  asking for --help a success: absl prints the usage and exits 1, which scripts and CI read as
  a failure."""
  argv = kwargs.get("argv") or sys.argv
  asked_for_help = any(arg in HELP_FLAGS for arg in argv[1:])

  @functools.wraps(main)
  def main_with_usage_errors(argv):
    try:
      return main(argv)
    except app.UsageError as error:
      if flags.FLAGS["verbose"].value:  # readable before the flags are parsed (tests)
        raise
      print(f"error: {error}", file=sys.stderr)
      sys.exit(EXIT_BAD_INPUT)

  kwargs.setdefault("flags_parser", parse_flags)
  try:
    app.run(main_with_usage_errors, **kwargs)
  except SystemExit as exit_:
    if asked_for_help and exit_.code == 1:
      sys.exit(0)
    raise
