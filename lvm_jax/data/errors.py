"""The one error type for bad data files, and the one way its messages are worded.

Every message reads "<file>: field '<field>': <what is wrong>. Fix: <what to do>"
so a user can act on it without reading the code. It lives apart from
the readers so that validate.py and every reader can import it.
"""

from __future__ import annotations

from typing import Optional


class DataFormatError(ValueError):
  """A data file is missing, malformed or inconsistent; the message names file, field and fix.

  `path`, `field`, `problem` and `fix` are kept as attributes when the error was
  built by `data_error`, so callers (and tests) can inspect them.
  """

  def __init__(self, message: str, *, path: Optional[str] = None, field: Optional[str] = None,
               problem: Optional[str] = None, fix: Optional[str] = None):
    super().__init__(message)
    self.path = path
    self.field = field
    self.problem = problem
    self.fix = fix


def data_error(path, field: str, problem: str, fix: str) -> DataFormatError:
  """Builds (does not raise) a DataFormatError worded the house way."""
  message = f"{path}: field '{field}': {problem}. Fix: {fix}"
  return DataFormatError(message, path=str(path), field=field, problem=problem, fix=fix)
