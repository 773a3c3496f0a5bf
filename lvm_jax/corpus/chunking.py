"""Text -> paragraphs -> chunks: the pure part of `python -m lvm_jax.corpus.ingest`.

A chunk is what one payload row embeds. The rules, chosen so a reader can
predict the chunks from the text:
  * paragraphs are blank-line separated blocks (.txt, .md, JSONL text), or the
    text of HTML block elements (<p>, <li>, <pre>, headings, <div>, ...);
  * whitespace inside a paragraph is collapsed to single spaces, nothing else
    changes, so a paragraph of min_chars..max_chars characters becomes exactly
    one chunk;
  * a longer paragraph is cut at sentence ends, sentences packed greedily up to
    max_chars; a sentence longer than max_chars is cut at spaces;
  * chunks shorter than min_chars are dropped, not merged (headings, captions,
    short list items): merging would break the one-paragraph-one-chunk rule;
  * an exact repeat of an earlier chunk of the same article is dropped.
"""

from __future__ import annotations

import dataclasses
import html.parser
import re
from typing import Dict, Iterable, List, Tuple

DEFAULT_MIN_CHARS = 60
DEFAULT_MAX_CHARS = 1200

_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


@dataclasses.dataclass
class ChunkStats:
  """What chunking kept and dropped, summed over articles (the ingest summary prints it)."""
  paragraphs: int = 0
  paragraphs_split: int = 0
  short_dropped: int = 0
  duplicates_dropped: int = 0

  def add(self, other: "ChunkStats") -> None:
    for field in dataclasses.fields(self):
      setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

  def as_dict(self) -> Dict[str, int]:
    return dataclasses.asdict(self)


def collapse_whitespace(text: str) -> str:
  return " ".join(text.split())


def text_paragraphs(text: str) -> List[str]:
  """Plain text or Markdown -> paragraphs (blank-line separated), whitespace collapsed."""
  text = text.replace("\r\n", "\n").replace("\r", "\n")
  paragraphs = (collapse_whitespace(block) for block in _BLANK_LINE.split(text))
  return [p for p in paragraphs if p]


class _BlockTextParser(html.parser.HTMLParser):
  """Collects the text of HTML block elements; script/style/head content is skipped."""

  BLOCK_TAGS = frozenset(
      "p li pre h1 h2 h3 h4 h5 h6 div section article header footer nav aside main blockquote "
      "dt dd dl ul ol table tr td th caption figure figcaption form fieldset legend address "
      "hr body title details summary".split())
  SKIPPED_TAGS = frozenset("script style head noscript template svg".split())

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.paragraphs: List[str] = []
    self._parts: List[str] = []
    self._skip_depth = 0

  def _flush(self) -> None:
    paragraph = collapse_whitespace("".join(self._parts))
    self._parts = []
    if paragraph:
      self.paragraphs.append(paragraph)

  def handle_starttag(self, tag, attrs):
    if tag in self.SKIPPED_TAGS:
      self._skip_depth += 1
    elif tag in self.BLOCK_TAGS:
      self._flush()
    elif tag == "br":
      self._parts.append(" ")

  def handle_startendtag(self, tag, attrs):
    if tag in self.BLOCK_TAGS:
      self._flush()
    elif tag == "br":  # a line break inside a paragraph, not a paragraph break
      self._parts.append(" ")

  def handle_endtag(self, tag):
    if tag in self.SKIPPED_TAGS:
      self._skip_depth = max(self._skip_depth - 1, 0)
    elif tag in self.BLOCK_TAGS:
      self._flush()

  def handle_data(self, data):
    if not self._skip_depth:
      self._parts.append(data)

  def close(self):
    super().close()
    self._flush()


def html_paragraphs(text: str) -> List[str]:
  """HTML -> the text of its block elements, one paragraph each, whitespace collapsed.

  Only the standard library's parser: the corpus tools must not need a browser engine.
  <head> is skipped, so the page title (usually repeated as an <h1>) is not a chunk.
  """
  parser = _BlockTextParser()
  parser.feed(text)
  parser.close()
  return parser.paragraphs


def split_sentences(paragraph: str) -> List[str]:
  """One collapsed paragraph -> sentences (the separating space dropped)."""
  return [s for s in _SENTENCE_END.split(paragraph) if s] if paragraph else []


def _pack(units: List[str], max_chars: int) -> List[str]:
  """Units joined by single spaces, greedily, into pieces of at most max_chars (a unit as long
  as max_chars stands alone)."""
  pieces, current = [], ""
  for unit in units:
    if not current:
      current = unit
    elif len(current) + 1 + len(unit) <= max_chars:
      current += " " + unit
    else:
      pieces.append(current)
      current = unit
  if current:
    pieces.append(current)
  return pieces


def _split_at_spaces(text: str, max_chars: int) -> List[str]:
  """Words packed greedily up to max_chars; a word longer than max_chars is cut."""
  words = []
  for word in text.split(" "):
    while len(word) > max_chars:
      words.append(word[:max_chars])
      word = word[max_chars:]
    words.append(word)
  return _pack(words, max_chars)


def split_long_paragraph(paragraph: str, max_chars: int) -> List[str]:
  """A collapsed paragraph -> pieces of at most max_chars, cut at sentence ends where possible."""
  if len(paragraph) <= max_chars:
    return [paragraph]
  units = []
  for sentence in split_sentences(paragraph):
    units.extend([sentence] if len(sentence) <= max_chars else
                 _split_at_spaces(sentence, max_chars))
  return _pack(units, max_chars)


def chunk_paragraphs(paragraphs: Iterable[str], *, min_chars: int = DEFAULT_MIN_CHARS,
                     max_chars: int = DEFAULT_MAX_CHARS) -> Tuple[List[str], ChunkStats]:
  """Paragraphs of one article -> its chunks in order, and what was dropped."""
  if not 0 < min_chars <= max_chars:
    raise ValueError(f"min_chars={min_chars}, max_chars={max_chars}: need 0 < min_chars <= "
                     "max_chars (--min_chars, --max_chars).")
  stats = ChunkStats()
  chunks, seen = [], set()
  for paragraph in paragraphs:
    paragraph = collapse_whitespace(paragraph)
    if not paragraph:
      continue
    stats.paragraphs += 1
    pieces = split_long_paragraph(paragraph, max_chars)
    stats.paragraphs_split += len(pieces) > 1
    for piece in pieces:
      if len(piece) < min_chars:
        stats.short_dropped += 1
      elif piece in seen:
        stats.duplicates_dropped += 1
      else:
        seen.add(piece)
        chunks.append(piece)
  return chunks, stats


def paragraphs_for(text: str, kind: str) -> List[str]:
  """kind: "html" or "text" (.txt, .md, JSONL text)."""
  return html_paragraphs(text) if kind == "html" else text_paragraphs(text)


def chunk_text(text: str, kind: str = "text", *, min_chars: int = DEFAULT_MIN_CHARS,
               max_chars: int = DEFAULT_MAX_CHARS) -> Tuple[List[str], ChunkStats]:
  return chunk_paragraphs(paragraphs_for(text, kind), min_chars=min_chars, max_chars=max_chars)
