"""atomic: a failed write leaves the old file whole and no temporary behind."""

import json
import os

import numpy as np
import pytest

from lvm_jax import atomic


def test_writes_replace_whole_files(tmp_path):
  path = tmp_path / "sub" / "a.json"
  atomic.write_json(path, {"x": 1})
  atomic.write_json(path, {"x": 2})
  assert json.loads(path.read_text()) == {"x": 2}
  atomic.save_npy(tmp_path / "v.npy", np.arange(3))
  np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), np.arange(3))
  atomic.savez(tmp_path / "s.npz", a=np.ones(2))
  np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["a"], np.ones(2))
  assert sorted(os.listdir(tmp_path)) == ["s.npz", "sub", "v.npy"]


def test_an_error_mid_write_keeps_the_old_file(tmp_path):
  path = tmp_path / "history.json"
  atomic.write_text(path, "old")
  with pytest.raises(RuntimeError):
    with atomic.atomic_open(path) as f:
      f.write("half")
      raise RuntimeError("crash")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["history.json"]
