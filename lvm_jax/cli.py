"""How every command-line tool ends: one `error:` line, exit 2 on bad input, 3 on the machine.

A user who typed a wrong path or value needs the message, not 25 lines of
traceback; `--verbose` shows the traceback for a bug report. Exit codes
(docs/exit_codes.md): 2 is bad input or config, which the user fixes in the
command; 3 is the environment (a full disk, a write error, a lost peer
process), which the user fixes on the machine and then reruns the same
command to resume.
"""

from __future__ import annotations

import errno
import functools
import os
import sys

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


# Bad input, bad config, missing or unreadable files: what a user can fix.
USER_ERRORS = (ValueError, OSError, UserFacingError)


def exit_with_last_words(message: str, status: int) -> None:
  """Prints `error: message` as the process's last line, then exits at once.

  Used where a normal exit would hang (JAX's shutdown barrier waits for dead
  peers). JAX's own threads keep logging until the process is gone; pointing
  stdout and stderr at /dev/null after our line keeps it the last one a user
  (or a launcher that shows the tail) sees.
  """
  # A progress bar may own the current line: start a new one.
  print(f"\nerror: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.dup2(devnull, 2)
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
      if flags.FLAGS.verbose:
        raise
      print(f"error: {message(error)}", file=sys.stderr)
      sys.exit(exit_status(error))

  return wrapped


def run(main, **kwargs) -> None:
  """absl's app.run, but asking for --help is a success: absl prints the usage and exits 1,
  which scripts and CI read as a failure."""
  argv = kwargs.get("argv") or sys.argv
  asked_for_help = any(arg in HELP_FLAGS for arg in argv[1:])
  try:
    app.run(main, **kwargs)
  except SystemExit as exit_:
    if asked_for_help and exit_.code == 1:
      sys.exit(0)
    raise
