"""benchmarks.doc_corpus: markup reduced to prose, the held-out package kept apart, reruns resume."""

import gzip
import json
import os

from benchmarks import doc_corpus

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
  record = doc_corpus.prepare(root, tree, sources, "web-doc", min_training_chunks=1)
  assert record["packages"]["kernel-doc"] == {"files": 2, "articles": 1, "chunks": 12,
                                               "windows": 7, "held_out": False}
  assert record["packages"]["web-doc"]["chunks"] == 11 and record["held_out"] == "web-doc"
  assert (record["training_chunks"], record["held_out_chunks"]) == (12, 11)
  assert sorted(os.listdir(os.path.join(root, "src"))) == ["kernel-doc"]
  assert os.listdir(os.path.join(root, "heldout_src", "web-doc")) == ["page.txt"]
  with open(os.path.join(root, "src", "kernel-doc", "a.txt")) as f:
    assert f.read().rstrip("\n") == article

  # A rerun keeps what was prepared by the same rules: the changed page is not read again.
  _write_tree(tree, {"docs/kernel/a.rst.gz": SENTENCE})
  again = doc_corpus.prepare(root, tree, sources, "web-doc", min_training_chunks=1)
  assert again["packages"] == record["packages"]
  with open(os.path.join(root, "prepare.json")) as f:
    assert json.load(f)["training_chunks"] == 12
