"""Markup -> prose paragraphs: what the corpus keeps of an HTML page, a POD file or an .rst.gz.

HTML goes through the project's HTML reader (lvm_jax.corpus.chunking.html_paragraphs) after
code listings, tables and navigation are cut out; POD loses its verbatim blocks and
commands; reStructuredText goes through dev_corpus.rst_prose. Paragraphs that are mostly
not letters (code, register maps, command lines) are dropped. Used by benchmarks.doc_corpus.
"""

from __future__ import annotations

import gzip
import html
import html.parser
import re
from typing import List, Optional, Sequence

from benchmarks import dev_corpus, source_readers

MIN_LETTER_SHARE = 0.8  # as dev_corpus: below it a paragraph is code, a table row or a command
PROSE_VERSION = 1  # bump when the markup -> prose rules change: prepare then redoes every package


# Cut with everything inside: code listings, tables, navigation, sidebars, indexes.
DROPPED_TAGS = frozenset("pre table nav script style head form button select svg math "
                         "header footer aside".split())
DROPPED_CLASSES = frozenset(
    # DocBook (PostgreSQL, debian-reference), asciidoc (git), texinfo (R, Octave),
    # Sphinx (Django, kernel), mdBook (Rust), node's doc tool.
    "navheader navfooter toc titlepage refsynopsisdiv programlisting screen synopsis "
    "cmdsynopsis funcsynopsis literallayout informaltable table "
    "listingblock literalblock tableblock header footer nav-panel example display "
    "highlight sphinxsidebar related footer nav toctree-wrapper "
    "sidebar menu-bar nav-wrapper nav-wide-wrapper mobile-nav-chapters playground "
    "api_stability api_metadata signature".split())
DROPPED_IDS = frozenset("header footer toc toctitle sidebar menu-bar column2 toc-picker "
                        "apicontent-toc gtoc".split())
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track "
                      "wbr".split())


class _ContentFilter(html.parser.HTMLParser):
  """HTML minus the dropped elements (and everything inside them), re-serialised."""

  def __init__(self, dropped_classes=DROPPED_CLASSES):
    super().__init__(convert_charrefs=True)
    self._dropped_classes = dropped_classes
    self.parts: List[str] = []
    self._dropping: Optional[str] = None  # the tag of the outermost dropped element
    self._depth = 0  # open elements of that tag inside it, itself included

  def _dropped(self, tag, attrs) -> bool:
    attrs = dict(attrs)
    classes = set((attrs.get("class") or "").split())
    return (tag in DROPPED_TAGS or bool(classes & self._dropped_classes) or
            attrs.get("id") in DROPPED_IDS)

  def handle_starttag(self, tag, attrs):
    if self._dropping is not None:
      self._depth += tag == self._dropping and tag not in VOID_TAGS
    elif self._dropped(tag, attrs) and tag not in VOID_TAGS:
      self._dropping, self._depth = tag, 1
    else:
      self.parts.append(self.get_starttag_text() or "")

  def handle_startendtag(self, tag, attrs):
    if self._dropping is None and not self._dropped(tag, attrs):
      self.parts.append(self.get_starttag_text() or "")

  def handle_endtag(self, tag):
    if self._dropping is not None:
      if tag == self._dropping:
        self._depth -= 1
        if self._depth == 0:
          self._dropping = None
    else:
      self.parts.append(f"</{tag}>")

  def handle_data(self, data):
    if self._dropping is None:
      self.parts.append(html.escape(data, quote=False))


def html_prose(text: str, kept_classes: Sequence[str] = ()) -> List[str]:
  """An HTML page -> its prose paragraphs (code, tables and navigation cut out)."""
  from lvm_jax.corpus import chunking  # pylint: disable=g-import-not-at-top
  content = _ContentFilter(DROPPED_CLASSES - frozenset(kept_classes))
  content.feed(text)
  content.close()
  paragraphs = chunking.html_paragraphs("".join(content.parts))
  return [p.replace("\u00b6", "").strip() for p in paragraphs]  # Sphinx's pilcrow anchors


_POD_CODE = re.compile(r"[A-Z]<(?:<+\s(.*?)\s>+|([^<>]*))>", re.S)


def _pod_inline(text: str) -> str:
  """B<x>, C<< x >>, L<text|target> ... -> x, innermost first; X<> and Z<> vanish."""
  for _ in range(8):  # nesting depth
    def replace(match):
      body = match.group(1) if match.group(1) is not None else match.group(2)
      code = match.group(0)[0]
      if code in "XZ":
        return ""
      if code == "E":
        return {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}.get(body, "")
      if code == "L":
        body = body.split("|", 1)[0] if "|" in body else body.split("/")[-1].strip('"')
      return body
    new = _POD_CODE.sub(replace, text)
    if new == text:
      break
    text = new
  return text


def pod_prose(text: str) -> List[str]:
  """POD -> prose paragraphs: ordinary paragraphs only (commands and verbatim blocks dropped)."""
  paragraphs, in_pod, skipping = [], True, False
  for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
    if not block.strip():
      continue
    if block.startswith("="):
      command = block.split(None, 1)[0]
      if command == "=cut":
        in_pod = False
      elif command in ("=pod", "=head1", "=head2", "=head3", "=head4", "=over", "=back",
                       "=item", "=encoding"):
        in_pod = True
      if command == "=begin":
        skipping = True
      elif command == "=end":
        skipping = False
      continue
    if not in_pod or skipping or block[:1].isspace():  # code or a verbatim (code) block
      continue
    paragraphs.append(" ".join(_pod_inline(block).split()))
  return paragraphs


def article_prose(data: bytes, kind: str, kept_classes: Sequence[str] = ()) -> List[str]:
  """A source file's bytes -> prose paragraphs kept (letter share >= MIN_LETTER_SHARE)."""
  if kind == "rst_gz":
    text = gzip.decompress(data).decode("utf-8", errors="replace")
    return [p for p in dev_corpus.rst_prose(text).split("\n\n") if p.strip()]
  text = data.decode("utf-8", errors="replace")
  readers = {"html": lambda t: html_prose(t, kept_classes), "pod": pod_prose,
             "sotu_txt": source_readers.sotu_paragraphs}
  if kind not in readers:
    raise ValueError(f"kind {kind!r}: not a file kind; choose rst_gz or one of {sorted(readers)}")
  paragraphs = readers[kind](text)
  return [p for p in paragraphs if p and dev_corpus._letter_share(p) >= MIN_LETTER_SHARE]  # pylint: disable=protected-access
