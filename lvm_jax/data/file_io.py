"""What every data reader shares: file checks, NPZ field access, provenance records.

Each failure is a DataFormatError naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import zipfile
import zlib
from typing import Any, Dict, Optional

import numpy as np
from absl import logging

from lvm_jax.data import validate
from lvm_jax.data.errors import data_error

FORMAT_VERSION = 1
BUILD_HINT = "python -m lvm_jax.corpus.build"
CONFIG_SOURCE = "config"  # expectations passed to the readers come from config.data by default


def make_provenance(**fields: Any) -> Dict[str, Any]:
  """The provenance record every writer stores; unknown extra fields are kept."""
  record = {"embedder_id": "unknown", "norm": "l2", "metric": "inner_product",
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source_hash": "", "format_version": FORMAT_VERSION}
  record.update(fields)
  return record


@dataclasses.dataclass(frozen=True)
class Expected:
  """What the caller expects of a set's shape, and where that expectation comes from."""
  dim: Optional[int]
  context_length: Optional[int]
  source: str

  def check(self, path, field: str, context_length: int, dim: int) -> None:
    from_config = self.source == CONFIG_SOURCE
    validate.check_context_length(
        context_length, self.context_length, path=path, field=field,
        expected_from="config.data.context_length" if from_config else self.source)
    validate.check_dim(
        dim, self.dim, path=path, field=field,
        expected_from="config.data.vector_dim" if from_config else self.source,
        fix=("set config.data.vector_dim to 0 (take it from the data) or to the file's "
             "dimension, or use files from the expected embedder") if from_config else
        f"use sets built from one payload and embedder ({BUILD_HINT} writes them together)")



def check_scalars(npz, path, count: int, context_length: int, dim: int) -> None:
  for field, actual in (("num_sequences", count), ("context_length", context_length),
                        ("vector_dim", dim)):
    if field in npz.files:
      stored = load_field(npz, field, path)
      if stored.size != 1 or stored.dtype.kind not in "iu":
        raise data_error(path, field, f"has dtype {stored.dtype} and shape "
                         f"{tuple(stored.shape)}, expected an integer scalar",
                         f"rebuild the file ({BUILD_HINT})")
      validate.check_stored_scalar(stored.reshape(-1)[0], actual, path=path, field=field)


def first_present(npz, names, path) -> str:
  for name in names:
    if name in npz.files:
      return name
  also = f" (or the older name {', '.join(names[1:])})" if len(names) > 1 else ""
  raise data_error(path, names[0], f"is missing{also}; the file has {sorted(npz.files)}",
                   f"pass a file written by this project or the reference ({BUILD_HINT})")


def load_field(npz, field: str, path) -> np.ndarray:
  if field not in npz.files:
    raise data_error(path, field, f"is missing; the file has {sorted(npz.files)}",
                     f"rebuild the file ({BUILD_HINT})")
  try:
    return npz[field]
  except ValueError as error:  # object arrays need pickle, which we never run here
    raise data_error(path, field, f"cannot be loaded without pickle ({error})",
                     "store plain numeric arrays (and provenance as a JSON string)") from error
  except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as error:  # bad CRC, truncation
    raise data_error(path, field, f"is damaged and cannot be read ({type(error).__name__}: "
                     f"{error})", "rewrite or rebuild the file; it was corrupted on disk or in "
                     "transfer") from error


def read_npz_provenance(npz, path) -> Dict[str, Any]:
  if "provenance" not in npz.files:
    logging.warning("%s: no 'provenance' field; where these vectors came from is unknown.", path)
    return {}
  array = load_field(npz, "provenance", path)
  if array.dtype.kind not in "US" or array.size != 1:
    raise data_error(path, "provenance", f"has dtype {array.dtype} and shape "
                     f"{tuple(array.shape)}, expected a JSON string in a 1-element array",
                     "store np.array([json.dumps(provenance)])")
  text = array.reshape(-1)[0]
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  return parse_provenance_text(text, path)


def parse_provenance_text(text: str, path) -> Dict[str, Any]:
  try:
    parsed = json.loads(text)
  except json.JSONDecodeError as error:
    raise data_error(path, "provenance", f"is not valid JSON ({error})",
                     "store provenance as json.dumps(dict)") from error
  if not isinstance(parsed, dict):
    raise data_error(path, "provenance", f"is JSON {type(parsed).__name__}, expected an object",
                     "store provenance as json.dumps(dict)")
  return parsed


def provenance_array(provenance: Dict[str, Any]) -> np.ndarray:
  return np.array([json.dumps(provenance, sort_keys=True)])


NPZ_MAGIC = b"PK\x03\x04"  # an NPZ is a zip archive
NPY_MAGIC = b"\x93NUMPY"


def require_file(path, field: str, *, missing_fix: Optional[str] = None) -> None:
  if not os.path.exists(path):
    raise data_error(path, field, "does not exist", missing_fix or (
        "check the path (see the data flags / config.data.*_path), or build the files with "
        + BUILD_HINT))
  if os.path.isdir(path):
    raise data_error(path, field, "is a directory, not a file", "pass the file's path")
  if os.path.getsize(path) == 0:
    raise data_error(path, field, "is an empty file (0 bytes)", "rewrite it; the writer was "
                     "probably interrupted")


class _NpzHandle:
  """np.load's NpzFile as a context manager with readable errors for bad archives."""

  def __init__(self, path):
    self.file = open(path, "rb")  # ours to close: np.load leaks it when the archive is bad
    try:
      self.npz = np.load(self.file, allow_pickle=False)
    except BaseException:
      self.file.close()
      raise

  def __enter__(self):
    return self.npz

  def __exit__(self, *exc):
    self.npz.close()
    self.file.close()


def describe_content(path) -> str:
  """What a file that is not in the expected format seems to hold, for the message."""
  with open(path, "rb") as f:
    head = f.read(256)
  if head.startswith(NPY_MAGIC):
    return "a single .npy array"
  if head.startswith(NPZ_MAGIC):
    return "a zip archive"
  try:
    head.decode("utf-8")
    return f"text ({head[:40].decode('utf-8', 'replace')!r}...)"
  except UnicodeDecodeError:
    return f"binary data of an unknown format (first bytes {head[:8]!r})"


def check_magic(path, field: str, magic: bytes, expected: str, fix: str) -> None:
  """Raises naming what the file holds when it does not start like `expected`."""
  with open(path, "rb") as f:
    if f.read(len(magic)) == magic:
      return
  raise data_error(path, field, f"is not {expected}: it holds {describe_content(path)}", fix)


def open_npz(path):
  require_file(path, "(file)")
  check_magic(path, "(file)", NPZ_MAGIC, "an NPZ archive",
              "pass an .npz written by np.savez or this project's writers (" + BUILD_HINT + ")")
  try:
    handle = _NpzHandle(path)
  except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
    raise data_error(path, "(file)", f"is not a readable NPZ archive ({error})",
                     "pass an .npz written by np.savez or this project's writers") from error
  if not hasattr(handle.npz, "files"):
    raise data_error(path, "(file)", "is a single .npy array, not an NPZ archive of named fields",
                     f"pass an .npz ({BUILD_HINT})")
  return handle


def load_npy(path, field, *, directory) -> np.ndarray:
  if not os.path.exists(path):
    raise data_error(directory, field, f"file {os.path.basename(path)} is missing",
                     "rewrite the payload with write_payload or lvm_jax.corpus.legacy")
  require_file(path, field)
  check_magic(path, field, NPY_MAGIC, "a .npy array", "rewrite the payload with write_payload")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError) as error:
    raise data_error(path, field, f"cannot be read as a plain .npy array ({error})",
                     "rewrite the payload with write_payload") from error




def read_text(path) -> str:
  with open(path, encoding="utf-8") as f:
    return f.read()


def read_json_object(path, fix: str, *, error: type = ValueError, not_json: str = "valid JSON",
                     expected: str = "an object.") -> Dict[str, Any]:
  """A JSON file that must hold an object (a run's config.json, reranker.json, ...): a file
  that is not JSON, or holds another value, raises `error` naming the file, what it holds and
  `fix` (`not_json` and `expected` word the two messages for the file's kind)."""
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as decode_error:
    raise error(f"{path}: is not {not_json} ({decode_error}). {fix}") from decode_error
  if not isinstance(value, dict):
    raise error(f"{path}: holds a JSON {type(value).__name__}, expected {expected} {fix}")
  return value



def sha256_of_stream(stream, block_bytes: int = 1 << 22) -> str:
  digest = hashlib.sha256()
  for block in iter(lambda: stream.read(block_bytes), b""):
    digest.update(block)
  return digest.hexdigest()
