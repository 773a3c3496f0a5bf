"""benchmarks.doc_corpus: prose counted before embedding, held-out sources kept apart, reruns
resume, Python's docs refused."""

import gzip
import json
import os

import pytest

from benchmarks import corpus_sources, doc_corpus

SENTENCE = "This paragraph explains how the subsystem keeps its state consistent across calls."


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


def test_sample_caps_each_training_source_keeps_held_out_whole_and_repeats_exactly(tmp_path):
  tree = str(tmp_path / "tree")
  pages = {f"docs/kernel/p{i}.rst.gz": "\n\n".join(f"{SENTENCE} Page {i} part {j}."
                                                     for j in range(10 + i)) for i in range(4)}
  pages.update({f"docs/web/w{i}.html": "".join(f"<p>{SENTENCE} Web {i} {j}.</p>"
                                               for j in range(11)) for i in range(3)})
  _write_tree(tree, pages)
  sources = [doc_corpus.DocSource("kernel-doc", "docs/kernel", ("*.rst.gz",), "rst_gz"),
             doc_corpus.DocSource("web-doc", "docs/web", ("*.html",), "html")]
  full = str(tmp_path / "full")
  doc_corpus.prepare(full, tree, sources, ("web-doc",), min_training_chunks=1)
  root = str(tmp_path / "sample")
  record = doc_corpus.sample(root, full, max_source_chunks=20)

  # Articles in sample_order until the cap is reached (the one that reaches it kept whole).
  sizes = {f"p{i}.txt": 10 + i for i in range(4)}
  expected, total = [], 0
  for name in sorted(sizes, key=doc_corpus.sample_order):
    if total >= 20:
      break
    expected.append(name)
    total += sizes[name]
  assert sorted(os.listdir(os.path.join(root, "src", "kernel-doc"))) == sorted(expected)
  kernel = record["packages"]["kernel-doc"]
  assert (kernel["articles"], kernel["chunks"], kernel["windows"]) == (
      len(expected), total, total - 5 * len(expected))
  assert (kernel["available_articles"], kernel["available_chunks"]) == (4, 46)
  assert record["packages"]["web-doc"]["chunks"] == 33  # held out: every article
  assert len(os.listdir(os.path.join(root, "heldout_src", "web-doc"))) == 3
  assert (record["training_chunks"], record["held_out_chunks"]) == (total, 33)
  assert record["sample_of"] == {"max_source_chunks": 20, "training_chunks": 46}
  with open(os.path.join(root, "src", "kernel-doc", expected[0]), "rb") as f, open(
      os.path.join(full, "src", "kernel-doc", expected[0]), "rb") as g:
    assert f.read() == g.read()
  assert doc_corpus.sample(root, full, max_source_chunks=20) == record  # a rerun: the same


def test_sample_needs_a_prepared_root_of_its_own(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare.json: missing; run --steps fetch,"
                     "prepare with --root"):
    doc_corpus.sample(str(tmp_path / "s"), str(tmp_path / "full"), 10)
  with pytest.raises(ValueError, match="is --sample_of's own root"):
    doc_corpus.sample(str(tmp_path), str(tmp_path), 10)


def test_ingest_hands_reuse_to_every_payloads_ingest(tmp_path, monkeypatch):
  commands = []
  monkeypatch.setattr(doc_corpus.dev_corpus, "run", commands.append)
  doc_corpus.ingest(str(tmp_path), "MODEL_DIR", 32, reuse=["S/payload", "S/heldout/x/payload"])
  outs = [command[command.index("--out") + 1] for command in commands]
  assert outs == [os.path.join(doc_corpus.heldout_dir(str(tmp_path), p), "payload")
                  for p in doc_corpus.HELD_OUT] + [os.path.join(str(tmp_path), "payload")]
  assert all(command[-2:] == ["--reuse", "S/payload,S/heldout/x/payload"]
             for command in commands)
  commands.clear()
  doc_corpus.ingest(str(tmp_path), "MODEL_DIR", 32)
  assert not any("--reuse" in command for command in commands)
