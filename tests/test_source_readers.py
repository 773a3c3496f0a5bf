"""benchmarks.source_readers: SWORD modules read from their block files, addresses cut into
paragraphs of whole sentences."""

import os
import zlib

import numpy as np
import pytest

from benchmarks import source_readers


def _write_sword_module(directory, testaments):
  """A zText/zCom module's block files: {testament: [block text, ...]} -> .bzs + .bzz."""
  os.makedirs(directory, exist_ok=True)
  for testament, blocks in testaments.items():
    index, data = [], b""
    for text in blocks:
      packed = zlib.compress(text.encode())
      index.append((len(data), len(packed), len(text.encode())))
      data += packed
    np.asarray(index, "<u4").tofile(os.path.join(directory, f"{testament}.bzs"))
    with open(os.path.join(directory, f"{testament}.bzz"), "wb") as f:
      f.write(data)


def _book(osis_id, verses):
  start, end = f'<div osisID="{osis_id}" sID="b{osis_id}" type="book"/>', \
      f'<div eID="b{osis_id}" osisID="{osis_id}" type="book"/>'
  return (f'{start}<title type="main">The Book of {osis_id}</title><div sID="p1" type="x-p"/>'
          + "".join(verses) + f'<div eID="p1" type="x-p"/>{end}')


def test_a_sword_module_reads_as_one_article_per_book_without_notes_or_headings(tmp_path):
  module = str(tmp_path / "mod")
  _write_sword_module(module, {
      "ot": ['<milestone type="x-importer"/>', "<title>Preface</title>Front matter. ",
             _book("Gen", ['<w lemma="H1">In</w> the beginning. ',
                           'God spoke.<note placement="foot">a footnote</note> '])
             + _book("Exod", ["These are the names. "])],
      "nt": [_book("Jude", ["Jude, a servant &amp; brother. "])]})
  assert source_readers.sword_articles(module) == [
      ("Gen", ["In the beginning. God spoke."]), ("Exod", ["These are the names."]),
      ("Jude", ["Jude, a servant & brother."])]


def test_a_one_book_commentary_reads_as_one_article_per_chapter(tmp_path):
  module = str(tmp_path / "psalms")
  chapters = [f'<chapter n="{n}" osisID="Ps.{n}" sID="Ps.{n}"/><div sID="q" type="x-p"/>'
              f"Psalm {n} is sung.<div eID=\"q\" type=\"x-p\"/>" for n in (1, 2)]
  _write_sword_module(module, {"ot": ['<div osisID="Ps" sID="g" type="book"/>Preface. '
                                      + chapters[0], chapters[1]]})
  assert source_readers.sword_articles(module) == [("Ps.1", ["Psalm 1 is sung."]),
                                                   ("Ps.2", ["Psalm 2 is sung."])]


def test_a_damaged_sword_block_is_named(tmp_path):
  module = str(tmp_path / "mod")
  _write_sword_module(module, {"ot": [_book("Gen", ["In the beginning. "])]})
  index = np.fromfile(os.path.join(module, "ot.bzs"), "<u4").reshape(-1, 3)
  index[0, 2] += 1
  index.tofile(os.path.join(module, "ot.bzs"))
  with pytest.raises(ValueError, match=r"ot\.bzs: a block is .* the module is damaged"):
    source_readers.sword_text(module)


def test_an_address_on_one_line_becomes_paragraphs_of_whole_sentences():
  sentences = [f"Sentence number {i} tells Congress about the state of the Union." for i in
               range(20)] + ['He said: "We will." Then he left!', "Is it 1861? Yes."]
  text = " ".join(sentences)
  paragraphs = source_readers.sotu_paragraphs(text, target_chars=200)
  assert " ".join(paragraphs) == text
  assert all(len(p) >= 200 for p in paragraphs[:-1]) and len(paragraphs) > 3
  ends = {s[-1] for s in sentences}
  assert all(p[-1] in ends | {'"'} for p in paragraphs)  # never cut inside a sentence
  assert all(len(p) - len(p.split(". ")[-1]) < 200 for p in paragraphs[:-1])  # no longer
