"""Shared fixtures."""

import os

import pytest


@pytest.fixture(scope="session")
def eval_workdir(tmp_path_factory):
  """A workdir as training leaves it: synthetic data (32-d), config.json, an untrained
  checkpoint, history.json with val_cosine 0.25."""
  import jax  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint, train  # pylint: disable=g-import-not-at-top
  from lvm_jax.config_base import base_config  # pylint: disable=g-import-not-at-top
  from lvm_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import ProjectionHead  # pylint: disable=g-import-not-at-top

  workdir = str(tmp_path_factory.mktemp("evalrun"))
  config = base_config()
  config.data.synthetic.num_articles, config.data.synthetic.dim = 80, 32
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.head.hidden_dim, config.head.out_dim = 16, 8
  synthetic.generate_synthetic_corpus(os.path.join(workdir, "data"), **config.data.synthetic)
  config.data.vector_dim = 32
  checkpoint.write_config(workdir, config)
  model = checkpoint.model_from_config(config, 32)
  head = ProjectionHead(16, 8)
  state = train.create_train_state(config, model, head, jax.random.PRNGKey(0), 32, 10)
  saver = checkpoint.Checkpointer(workdir)
  saver.save(state, {"val_cosine": 0.25})
  saver.wait_until_finished()
  saver.close()
  train.write_history(workdir, [{"epoch": 1, "step": 0, "val_cosine": 0.25}])
  return workdir
