"""training_sets: what a run trains on: the synthetic default when no paths are set, the
configured files otherwise, checked (and article overlap reported) before anything compiles."""

import os

import numpy as np
import pytest

from data_helpers import DIM, full_set_arrays, make_payload, save_npz, unit_rows
from lvm_jax.config_base import base_config
from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.payload import read_payload
from lvm_jax.train.training_sets import load_training_sets


def tiny_synthetic_config():
  config = base_config()
  config.data.synthetic.num_articles = 24
  config.data.synthetic.dim = 16
  return config


def file_config(train_path="", val_path="", payload_path=""):
  config = base_config()
  config.data.train_path, config.data.val_path = train_path, val_path
  config.data.payload_path = payload_path
  return config


def test_synthetic_default_gives_article_disjoint_sets_and_their_payload(tmp_path):
  data_dir = str(tmp_path / "data")
  sets = load_training_sets(tiny_synthetic_config(), data_dir)
  for path in (sets.train_path, sets.val_path, sets.eval_path):
    assert os.path.isfile(path) and os.path.dirname(path) == data_dir
  assert os.path.isdir(sets.payload_path) and os.path.dirname(sets.payload_path) == data_dir
  assert sets.payload is not None and sets.payload.vector_dim == 16
  assert sets.train.is_compact and sets.val.is_compact  # row indices into the payload
  assert sets.train.vector_dim == sets.val.vector_dim == 16
  assert sets.train.context_length == sets.val.context_length == 5
  assert sets.train.num_sequences > sets.val.num_sequences > 0
  eval_set = read_eval_set(sets.eval_path, payload=sets.payload)
  train_articles = sets.train.article_ids()
  assert sets.article_overlap == 0
  assert np.intersect1d(train_articles, sets.val.article_ids()).size == 0
  assert np.intersect1d(train_articles, np.unique(eval_set.truth_keys[:, 0])).size == 0
  assert sets.describe() == {"train": sets.train_path, "val": sets.val_path,
                             "payload": sets.payload_path, "article_overlap": 0}
  # A second run with the same knobs reuses the corpus instead of regenerating it.
  stamp = os.stat(sets.train_path).st_mtime_ns
  again = load_training_sets(tiny_synthetic_config(), data_dir)
  assert (again.train_path, again.eval_path) == (sets.train_path, sets.eval_path)
  assert os.stat(again.train_path).st_mtime_ns == stamp


@pytest.mark.parametrize("set_field, value", [("val_path", "/data/val.npz"),
                                               ("payload_path", "/data/payload")])
def test_val_or_payload_without_train_path_is_refused_before_generating(tmp_path, set_field,
                                                                        value):
  config = file_config(**{set_field: value})
  data_dir = tmp_path / "data"
  with pytest.raises(ValueError) as error:
    load_training_sets(config, str(data_dir))
  assert str(error.value) == (
      "config.data: val_path/payload_path are set but train_path is empty; set train_path too, "
      "or clear all three to use the synthetic corpus.")
  assert not data_dir.exists()  # no synthetic corpus was generated instead


def test_train_path_without_val_path_is_refused(tmp_path):
  config = file_config(train_path="/data/train.npz")
  with pytest.raises(ValueError) as error:
    load_training_sets(config, str(tmp_path / "data"))
  assert str(error.value) == (
      "config.data.val_path is empty while train_path='/data/train.npz'; give the validation "
      "set built with the training set (python -m lvm_jax.corpus.build writes both).")


def write_sets(tmp_path, payload_dir, train_starts, val_starts, val_payload=None):
  payload = read_payload(payload_dir)
  train = save_npz(tmp_path / "train.npz", **full_set_arrays(payload, train_starts))
  val = save_npz(tmp_path / "val.npz", **full_set_arrays(val_payload or payload, val_starts))
  return train, val


def test_overlapping_articles_between_train_and_val_log_a_warning(tmp_path, payload_dir, caplog):
  # Windows start at payload rows; rows 12-23 are article 13, rows 24-35 article 23.
  train, val = write_sets(tmp_path, payload_dir, (0, 1, 12, 13), (14, 24))
  with caplog.at_level("WARNING"):
    sets = load_training_sets(file_config(train, val, payload_dir), str(tmp_path / "data"))
  assert sets.article_overlap == 1
  assert "1 article(s) appear in both" in caplog.text
  assert train in caplog.text and val in caplog.text and "[13]" in caplog.text
  assert "build splits by article (python -m lvm_jax.corpus.build)" in caplog.text
  assert sets.describe()["article_overlap"] == 1
  assert (sets.train_path, sets.val_path, sets.payload_path, sets.eval_path) == (
      train, val, payload_dir, "")


def test_disjoint_configured_sets_load_without_a_warning(tmp_path, payload_dir, caplog):
  train, val = write_sets(tmp_path, payload_dir, (0, 1, 2), (24, 36))
  with caplog.at_level("WARNING"):
    sets = load_training_sets(file_config(train, val, payload_dir), str(tmp_path / "data"))
  assert sets.article_overlap == 0 and "appear in both" not in caplog.text
  assert not sets.train.is_compact and sets.train.vector_dim == DIM
  assert not os.path.exists(tmp_path / "data")  # configured files: nothing generated


def test_val_checked_against_the_train_set(tmp_path, payload_dir):
  other = make_payload()
  other.vectors = unit_rows(np.random.default_rng(3), other.num_rows, 6)
  train, val = write_sets(tmp_path, payload_dir, (0, 1), (24,), val_payload=other)
  with pytest.raises(DataFormatError) as error:
    load_training_sets(file_config(train, val), str(tmp_path / "data"))
  message = str(error.value)
  assert message.startswith(val) and "dimension 6" in message
  assert f"but the train set {train} has {DIM}" in message
