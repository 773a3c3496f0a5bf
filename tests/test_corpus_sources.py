"""benchmarks.corpus_sources: the sources, their kinds of writing, the held-out ones."""

import re

import pytest

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


def test_the_reranker_sources_are_neither_trained_on_nor_held_out():
  """The shipped reranker is fitted on text the model never saw, and none of the held-out
  sources it is judged on; Python's docs are in neither."""
  names = [s.package for s in corpus_sources.RERANKER_SOURCES]
  corpus_sources.check_sources(corpus_sources.RERANKER_SOURCES, ())
  assert names and not set(names) & {s.package for s in corpus_sources.SOURCES}
  assert not any(re.match(r"python3(\.\d+)?-doc", p) for p in names)
  assert all(s.licence != "?" for s in corpus_sources.RERANKER_SOURCES)


def test_reranker_set_refuses_a_source_the_model_trained_on(tmp_path):
  from benchmarks import doc_corpus  # pylint: disable=g-import-not-at-top
  trained = corpus_sources.SOURCES[0]
  with pytest.raises(ValueError, match=rf"RERANKER_SOURCES \['{trained.package}'\] are corpus "
                     "sources too"):
    doc_corpus.reranker_set(str(tmp_path), str(tmp_path), None, 64,
                            sources=corpus_sources.RERANKER_SOURCES + (trained,))
