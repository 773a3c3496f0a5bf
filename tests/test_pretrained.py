"""The shipped pretrained model loads on this stack, predicts unit 384-d vectors, is trained
(its skip mixing moved from the prior), and the fine-tune config starts from it."""

import os

import jax
import numpy as np

from configs import s_realtext
from lvm_jax import checkpoint
from lvm_jax.models.model import recency_lag_logits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, s_realtext.PRETRAINED)


def test_pretrained_model_loads_predicts_and_is_trained():
  loaded = checkpoint.load(PRETRAINED)
  assert loaded.config.data.vector_dim == 384
  contexts = np.random.default_rng(0).normal(size=(3, 5, 384)).astype(np.float32)
  contexts /= np.linalg.norm(contexts, axis=-1, keepdims=True)
  predictions = np.asarray(loaded.model.apply({"params": loaded.params}, contexts))
  assert predictions.shape == (3, 5, 384)
  np.testing.assert_allclose(np.linalg.norm(predictions, axis=-1), 1.0, atol=1e-5)
  mixing = loaded.params["skip_mixing"]
  prior = recency_lag_logits(loaded.config.model.residual_decay, mixing["bias"].shape[0])
  assert np.abs(np.asarray(mixing["kernel"])).max() > 0  # zero at initialisation
  assert not np.allclose(np.asarray(mixing["bias"]), prior)
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(PRETRAINED)
             for f in files)
  assert size <= 20 * 2**20


def test_finetune_config_starts_from_the_shipped_model():
  config = s_realtext.get_config("finetune")
  assert os.path.join(ROOT, config.train.init_from) == PRETRAINED
  pretrained = checkpoint.read_config(checkpoint.Workdir(PRETRAINED))
  for size in ("name", "d_model", "n_layers", "d_state", "residual_mixing"):
    assert config.model[size] == pretrained.model[size], size


def test_the_shipped_reranker_loads_and_moved_from_its_start():
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  reranker = learned_rerank.load(os.path.join(PRETRAINED, learned_rerank.FILE_NAME))
  start = np.zeros(len(reranker.features), np.float32)
  start[0] = 1.0  # fit's starting point: the search's own order
  assert reranker.depth >= 50 and not np.allclose(reranker.weights, start)
  assert reranker.decay == checkpoint.load(PRETRAINED).config.model.residual_decay
