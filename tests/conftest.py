"""Shared fixtures: the tiny training config and one finished tiny run per session.

A finished run takes a compile and two short epochs; the loop, checkpoint,
status and eval tests all read the same one instead of training their own.
"""

import os
import shutil

import pytest

from lvm_jax.config_base import base_config, shrink_to_tiny


def tiny_config(num_epochs=2):
  config = shrink_to_tiny(base_config())
  config.data.synthetic.num_articles = 80
  config.data.synthetic.dim = 32
  config.model.d_model, config.model.n_layers, config.model.d_state = 16, 1, 4
  config.head.hidden_dim, config.head.out_dim = 32, 16
  config.train.batch_size, config.train.accum_steps = 16, 2
  config.train.num_epochs = num_epochs
  config.train.early_stopping_patience = 10
  config.data.prefetch = 0
  return config


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
  from lvm_jax import train  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("run"))
  return workdir, train.train_and_evaluate(tiny_config(), workdir)


@pytest.fixture
def finished_run_copy(finished_run, tmp_path):
  """A private copy of the finished run's workdir, free to damage or extend."""
  workdir, summary = finished_run
  copy = str(tmp_path / "run_copy")
  shutil.copytree(workdir, copy)
  if os.path.exists(os.path.join(copy, ".lock")):
    os.remove(os.path.join(copy, ".lock"))
  return copy, summary
