"""benchmarks.doc_corpus: markup reduced to prose, the held-out package kept apart, reruns resume."""

import gzip
import json
import os
import re
import zlib

import numpy as np
import pytest

from benchmarks import corpus_sources, doc_corpus, source_readers

SENTENCE = "This paragraph explains how the subsystem keeps its state consistent across calls."


def test_html_prose_drops_code_tables_and_navigation_keeps_paragraphs():
  page = f"""<html><head><title>T</title></head><body>
  <div class="navheader"><table><tr><td>Prev</td></tr></table><div>Next chapter</div></div>
  <nav id="sidebar"><ol><li>Chapter one of the whole book's table of contents</li></ol></nav>
  <div class="section"><p>{SENTENCE}</p>
  <pre class="programlisting">int main(void) {{ return 0; }}</pre>
  <div class="highlight"><div><pre>x = 1</pre></div><p>inside the highlight block</p></div>
  <p>Second <code>inline</code> paragraph &amp; more text.<br>Same paragraph.</p>
  <table><tr><td>a table cell</td></tr></table></div>
  <div class="navfooter">Home | Up</div></body></html>"""
  assert doc_corpus.html_prose(page) == [
      SENTENCE, "Second inline paragraph & more text. Same paragraph."]


def test_pod_prose_keeps_ordinary_paragraphs_without_formatting_codes():
  pod = ("=head1 NAME\n\nperlfoo - foo\n\n=head1 DESCRIPTION\n\n"
         "The B<print> function writes C<< $x >> to L<the handle|perlfunc/print>,\n"
         "see E<lt>hereE<gt>.X<print>\n\n    print $x;  # verbatim code\n\n"
         "=begin html\n\n<p>raw</p>\n\n=end html\n\n=cut\n\nsub code_after_cut {}\n")
  assert doc_corpus.pod_prose(pod) == [
      "perlfoo - foo", "The print function writes $x to the handle, see <here>."]


def test_article_prose_drops_paragraphs_that_are_mostly_not_letters():
  page = f"<p>{SENTENCE}</p><p>0x00ff | 0x0f0f | 0xf0f0 | 0x1234 | 0x5678 | 0x9abc | 0xdef0</p>"
  assert doc_corpus.article_prose(page.encode(), "html") == [SENTENCE]


def _write_tree(tree, pages):
  for relative, text in pages.items():
    path = os.path.join(tree, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(gzip.compress(text.encode()) if path.endswith(".gz") else text.encode())


def test_prepare_counts_before_embedding_holds_one_package_out_and_resumes(tmp_path):
  article = "\n\n".join(f"{SENTENCE} Part {i}." for i in range(12))  # 12 chunks
  html_page = "".join(f"<p>{SENTENCE} Section {i}.</p>" for i in range(11))  # 11 chunks
  tree = str(tmp_path / "tree")
  _write_tree(tree, {"docs/kernel/a.rst.gz": article, "docs/kernel/short.rst.gz": SENTENCE,
                     "docs/web/page.html": html_page, "docs/web/skip/index.html": html_page})
  sources = [doc_corpus.DocSource("kernel-doc", "docs/kernel", ("*.rst.gz",), "rst_gz"),
             doc_corpus.DocSource("web-doc", "docs/web", ("*.html",), "html", ("skip/*",))]
  root = str(tmp_path / "root")
  record = doc_corpus.prepare(root, tree, sources, ("web-doc",), min_training_chunks=1)
  assert record["packages"]["kernel-doc"] == {"files": 2, "articles": 1, "chunks": 12,
                                               "windows": 7, "held_out": False,
                                               "writing": "manual", "licence": "?"}
  assert record["packages"]["web-doc"]["chunks"] == 11 and record["held_out"] == ["web-doc"]
  assert (record["training_chunks"], record["held_out_chunks"]) == (12, 11)
  assert sorted(os.listdir(os.path.join(root, "src"))) == ["kernel-doc"]
  assert os.listdir(os.path.join(root, "heldout_src", "web-doc")) == ["page.txt"]
  with open(os.path.join(root, "src", "kernel-doc", "a.txt")) as f:
    assert f.read().rstrip("\n") == article

  # A rerun keeps what was prepared by the same rules: the changed page is not read again.
  _write_tree(tree, {"docs/kernel/a.rst.gz": SENTENCE})
  again = doc_corpus.prepare(root, tree, sources, ("web-doc",), min_training_chunks=1)
  assert again["packages"] == record["packages"]
  with open(os.path.join(root, "prepare.json")) as f:
    assert json.load(f)["training_chunks"] == 12


def test_a_page_whose_header_is_never_closed_keeps_its_prose_when_the_source_says_so():
  # Qt's pages open <div class="header"> and never close it: cutting it cuts the page.
  page = (f'<body><div class="header"><div class="main"><div class="navigationbar">Qt 5.15'
          f'</div></div><div class="content"><p>{SENTENCE}</p></div></div></body>')
  assert doc_corpus.html_prose(page) == []
  assert doc_corpus.html_prose(page, kept_classes=("header",))[-1] == SENTENCE


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


def test_the_wide_corpus_has_its_sources_kinds_and_three_held_out_ones():
  sources = {s.package: s for s in corpus_sources.SOURCES}
  corpus_sources.check_sources(corpus_sources.SOURCES, corpus_sources.HELD_OUT)
  training = {p: s for p, s in sources.items() if p not in corpus_sources.HELD_OUT}
  assert len(sources) >= 20 and len({s.writing for s in sources.values()}) >= 4
  held = [sources[p] for p in corpus_sources.HELD_OUT]
  assert len(held) >= 3 and len({s.writing for s in held}) == len(held)
  # Each held-out kind of writing still has a trained-on source, so the check measures
  # transfer to a new source, not to a new kind.
  assert {s.writing for s in held} <= {s.writing for s in training.values()}
  assert "postgresql-doc-15" in corpus_sources.HELD_OUT
  assert not any(re.match(r"python3(\.\d+)?-doc", p) for p in sources)
  assert all(s.licence != "?" for s in sources.values())


@pytest.mark.parametrize("package", ["python3-doc", "python3.11-doc"])
def test_python_documentation_is_refused_as_a_source(package):
  bad = corpus_sources.SOURCES + (corpus_sources.DocSource(package, "x", ("*.html",), "html"),)
  with pytest.raises(ValueError, match=f"{package}: Python's own documentation"):
    corpus_sources.check_sources(bad, corpus_sources.HELD_OUT)
  with pytest.raises(ValueError, match="Python's own documentation"):
    doc_corpus.fetch("/nonexistent", bad)


def test_prepare_refuses_a_held_out_source_that_is_not_a_source(tmp_path):
  with pytest.raises(ValueError, match=r"held-out \['nope'\] are not in SOURCES"):
    doc_corpus.prepare(str(tmp_path), str(tmp_path), corpus_sources.SOURCES[:1], ("nope",))
