"""Where ingest's articles come from: a folder of .txt/.md/.html files or a JSONL file.

Articles come out in a fixed order (sorted relative paths; JSONL order of first
appearance) so that two runs over the same input make the same chunk list, the
property the resumable ingest relies on. Bad input raises DataFormatError
naming the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Dict, List

from lvm_jax.data.errors import data_error

TEXT_SUFFIXES = {".txt": "text", ".md": "text", ".markdown": "text", ".html": "html",
                 ".htm": "html"}
JSONL_SUFFIXES = (".jsonl",)
DEFAULT_ENCODING = "utf-8"


@dataclasses.dataclass
class Article:
  """name: the relative path (folder input) or the JSONL "article" value; kind: "text"/"html"."""
  name: str
  text: str
  kind: str
  source: str


@dataclasses.dataclass
class Sources:
  articles: List[Article]
  source_hash: str  # sha256 over the input files' names and bytes
  skipped: Dict[str, str]  # path -> why, for files skipped under skip_bad_files


def decode(data: bytes, path: str, *, encoding: str = DEFAULT_ENCODING, field: str = "text"
           ) -> str:
  """File bytes -> text; empty, binary and undecodable input raise, naming the file."""
  if not data.strip():
    raise data_error(path, field, "is empty (no text)", "remove the file from the input, "
                     "or pass --skip_bad_files to skip such files")
  if b"\x00" in data[:1 << 16]:
    raise data_error(path, field, "is binary (holds NUL bytes), not text", "remove the file "
                     "from the input, or pass --skip_bad_files to skip such files")
  try:
    text = data.decode(encoding)
  except UnicodeDecodeError as error:
    raise data_error(path, field, f"is not valid {encoding} (byte {error.start}: "
                     f"{data[error.start:error.start + 1]!r})", "convert the file to UTF-8 "
                     "(iconv -f OLD -t UTF-8), pass its encoding with --encoding (e.g. "
                     "--encoding latin-1), or pass --skip_bad_files") from error
  except LookupError as error:
    raise data_error(path, field, f"cannot be decoded: unknown encoding {encoding!r}",
                     "pass a Python codec name to --encoding (utf-8, latin-1, cp1252...)"
                     ) from error
  return text.lstrip("\ufeff")


def _folder_files(root: str) -> List[str]:
  """Relative paths of the article files under `root`, recursively, sorted."""
  found = []
  for directory, subdirs, files in os.walk(root):
    subdirs.sort()
    for name in files:
      if os.path.splitext(name)[1].lower() in TEXT_SUFFIXES:
        found.append(os.path.relpath(os.path.join(directory, name), root))
  return sorted(p.replace(os.sep, "/") for p in found)


def read_folder(root: str, *, encoding: str = DEFAULT_ENCODING,
                skip_bad_files: bool = False) -> Sources:
  relative_paths = _folder_files(root)
  if not relative_paths:
    raise data_error(root, "(directory)", "holds no .txt, .md or .html file (searched "
                     "recursively)", "pass a folder of article files (one article per file) or "
                     "a .jsonl file of {\"article\": ..., \"text\": ...} records")
  digest = hashlib.sha256()
  articles, skipped = [], {}
  for relative in relative_paths:
    path = os.path.join(root, relative)
    with open(path, "rb") as f:
      data = f.read()
    digest.update(f"{relative}\0{len(data)}\0".encode())
    digest.update(data)
    try:
      text = decode(data, path, encoding=encoding)
    except ValueError as error:
      if not skip_bad_files:
        raise
      skipped[path] = str(error)
      continue
    kind = TEXT_SUFFIXES[os.path.splitext(relative)[1].lower()]
    articles.append(Article(name=relative, text=text, kind=kind, source=path))
  return Sources(articles, digest.hexdigest(), skipped)


def read_jsonl(path: str, *, encoding: str = DEFAULT_ENCODING) -> Sources:
  """Records {"article": name, "text": text}; records sharing a name are joined, in file
  order, as separate paragraphs of one article (so a file may hold one paragraph a line)."""
  with open(path, "rb") as f:
    data = f.read()
  text = decode(data, path, encoding=encoding, field="(file)")
  by_name: Dict[str, List[str]] = {}
  for line_number, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    where = f"{path}:{line_number}"
    try:
      record = json.loads(line)
    except json.JSONDecodeError as error:
      raise data_error(where, "(line)", f"is not JSON ({error.msg})", "write one JSON object "
                       "{\"article\": ..., \"text\": ...} per line") from error
    if not isinstance(record, dict):
      raise data_error(where, "(line)", f"is a JSON {type(record).__name__}, not an object",
                       "write one JSON object {\"article\": ..., \"text\": ...} per line")
    for field in ("article", "text"):
      if field not in record:
        raise data_error(where, field, "is missing", "give every record an \"article\" "
                         "(its name) and a \"text\"")
    name, body = record["article"], record["text"]
    if not isinstance(name, (str, int)) or isinstance(name, bool):
      raise data_error(where, "article", f"is a {type(name).__name__}, expected a string",
                       "name each article with a string (or an integer)")
    if not isinstance(body, str):
      raise data_error(where, "text", f"is a {type(body).__name__}, expected a string",
                       "store the article's text as one string")
    by_name.setdefault(str(name), []).append(body)
  if not by_name:
    raise data_error(path, "(file)", "holds no records", "write one JSON object "
                     "{\"article\": ..., \"text\": ...} per line")
  articles = [Article(name=name, text="\n\n".join(parts), kind="text", source=path)
              for name, parts in by_name.items()]
  return Sources(articles, hashlib.sha256(data).hexdigest(), {})


def read_sources(src: str, *, encoding: str = DEFAULT_ENCODING,
                 skip_bad_files: bool = False) -> Sources:
  """A folder or a .jsonl file -> its articles in a fixed order."""
  if os.path.isdir(src):
    return read_folder(src, encoding=encoding, skip_bad_files=skip_bad_files)
  if not os.path.exists(src):
    raise data_error(src, "--src", "does not exist", "pass a folder of .txt/.md/.html "
                     "files or a .jsonl file")
  if not src.lower().endswith(JSONL_SUFFIXES):
    raise data_error(src, "--src", "is a file but not a .jsonl file", "pass a folder of "
                     ".txt/.md/.html files (one article per file) or a .jsonl file of "
                     "{\"article\": ..., \"text\": ...} records")
  return read_jsonl(src, encoding=encoding)
