"""How every command-line tool ends: one `error:` line and exit 2 on bad input or config.

A user who typed a wrong path or value needs the message, not 25 lines of
traceback; `--verbose` shows the traceback for a bug report.
"""

from __future__ import annotations

import functools
import sys

from absl import app, flags

flags.DEFINE_bool("verbose", False, "On an error, show the full traceback, not just its message.")

EXIT_BAD_INPUT = 2
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


class UserFacingError(Exception):
  """An error whose message tells the user what to do (not a bug)."""


# Bad input, bad config, missing or unreadable files: what a user can fix.
USER_ERRORS = (ValueError, OSError, UserFacingError)


def exits_cleanly_on_user_errors(main):
  """Wraps an absl `main(argv)`: user errors print `error: <message>` and exit 2."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as error:
      if flags.FLAGS.verbose:
        raise
      print(f"error: {error}", file=sys.stderr)
      sys.exit(EXIT_BAD_INPUT)

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
