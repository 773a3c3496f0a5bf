"""Write-then-rename: a reader, or a rerun after a crash, never sees half a file.

Every file this project writes (payloads, sets, history, manifests, configs)
goes through these; os.replace is atomic on POSIX when source and target share
a directory, which the temporary name beside the target guarantees. A write
that fails (a full disk) raises cli.EnvironmentFault naming the file, the errno
and the fix, and leaves the previous file as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from typing import IO, Any, Callable, Iterator

import numpy as np

from lvm_jax import cli


def _raise_write_failed(path, error: OSError, cause: BaseException = None) -> None:
  fault = cli.write_failed(path, error)
  if fault is error and cause is None:
    raise error
  raise fault from (cause or error)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
  """open(path + ".tmp"), then os.replace onto `path` if the block finished without error."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = f"{path}.tmp{os.getpid()}"
  if "b" not in mode:
    open_kwargs.setdefault("encoding", "utf-8")
  try:
    with open(temporary, mode, **open_kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except OSError as error:
    _raise_write_failed(path, error)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_with(path, write: Callable[[str], None]) -> None:
  """For writers that take a path (FAISS): write(temporary path), then rename onto `path`."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  temporary = f"{path}.tmp{os.getpid()}"
  try:
    write(temporary)
    os.replace(temporary, path)
  except OSError as error:
    _raise_write_failed(path, error)
  except RuntimeError as error:  # FAISS raises RuntimeError with the C error text
    if "No space left on device" in str(error):
      _raise_write_failed(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), error)
    raise
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def write_text(path, text: str) -> None:
  with atomic_open(path, "w") as f:
    f.write(text)


def write_json(path, value: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
  with atomic_open(path, "w") as f:
    json.dump(value, f, indent=indent, sort_keys=sort_keys)


def save_npy(path, array: np.ndarray) -> None:
  with atomic_open(path, "wb") as f:
    np.save(f, array, allow_pickle=False)


def savez(path, **arrays: np.ndarray) -> None:
  """np.savez (uncompressed) through a temporary file."""
  with atomic_open(path, "wb") as f:
    np.savez(f, **arrays)
