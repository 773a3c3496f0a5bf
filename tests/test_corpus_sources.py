"""benchmarks.corpus_sources: the sources, their kinds of writing, the held-out ones."""

import re

from benchmarks import corpus_sources


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
