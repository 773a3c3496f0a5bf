"""benchmarks.doc_prose: markup reduced to prose, code, tables and navigation cut."""

from benchmarks import doc_prose

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
  assert doc_prose.html_prose(page) == [
      SENTENCE, "Second inline paragraph & more text. Same paragraph."]


def test_pod_prose_keeps_ordinary_paragraphs_without_formatting_codes():
  pod = ("=head1 NAME\n\nperlfoo - foo\n\n=head1 DESCRIPTION\n\n"
         "The B<print> function writes C<< $x >> to L<the handle|perlfunc/print>,\n"
         "see E<lt>hereE<gt>.X<print>\n\n    print $x;  # verbatim code\n\n"
         "=begin html\n\n<p>raw</p>\n\n=end html\n\n=cut\n\nsub code_after_cut {}\n")
  assert doc_prose.pod_prose(pod) == [
      "perlfoo - foo", "The print function writes $x to the handle, see <here>."]


def test_article_prose_drops_paragraphs_that_are_mostly_not_letters():
  page = f"<p>{SENTENCE}</p><p>0x00ff | 0x0f0f | 0xf0f0 | 0x1234 | 0x5678 | 0x9abc | 0xdef0</p>"
  assert doc_prose.article_prose(page.encode(), "html") == [SENTENCE]


def test_a_page_whose_header_is_never_closed_keeps_its_prose_when_the_source_says_so():
  # Qt's pages open <div class="header"> and never close it: cutting it cuts the page.
  page = (f'<body><div class="header"><div class="main"><div class="navigationbar">Qt 5.15'
          f'</div></div><div class="content"><p>{SENTENCE}</p></div></div></body>')
  assert doc_prose.html_prose(page) == []
  assert doc_prose.html_prose(page, kept_classes=("header",))[-1] == SENTENCE
