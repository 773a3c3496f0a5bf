"""lvm_jax.export: the export loads as the run's chosen model, without the optimizer state or the
trainer's data paths, and never mixes with an earlier export."""

import json
import os

import jax
import numpy as np
import pytest

from lvm_jax import checkpoint, export


def _bytes(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def test_export_loads_as_the_runs_model_and_drops_optimizer_state_and_paths(finished_run_copy,
                                                                            tmp_path):
  run, _ = finished_run_copy
  with open(os.path.join(run, "config.json")) as f:
    config = json.load(f)
  config["data"]["train_path"] = "/machine/of/the/trainer/train_rows.npz"
  config["evals"]["retrieval"]["eval_path"] = "/machine/of/the/trainer/eval.npz"
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(config, f)
  out = str(tmp_path / "shipped")

  done = export.export(run, out)

  source, exported = checkpoint.load(run), checkpoint.load(out)
  assert done["step"] == exported.step == source.step
  same = jax.tree_util.tree_map(np.array_equal, source.params, exported.params)
  assert all(jax.tree_util.tree_leaves(same))
  contexts = np.random.default_rng(0).normal(size=(2, 5, 32)).astype(np.float32)
  np.testing.assert_array_equal(
      np.asarray(source.model.apply({"params": source.params}, contexts)),
      np.asarray(exported.model.apply({"params": exported.params}, contexts)))
  # Adam's two moments per parameter are gone: well under the source step's size.
  assert done["bytes"] == _bytes(os.path.join(out, "checkpoints"))
  assert done["bytes"] < 0.6 * _bytes(source.path)
  with open(os.path.join(out, "config.json")) as f:
    written = json.load(f)
  assert written["data"]["train_path"] == "" and written["evals"]["retrieval"]["eval_path"] == ""
  assert written["model"] == config["model"]
  with open(os.path.join(run, "history.json")) as f, \
      open(os.path.join(out, "history.json")) as g:
    assert json.load(f) == json.load(g)
  assert "history.json" in done["files"]


def test_export_refuses_an_out_that_already_holds_checkpoints(finished_run, tmp_path):
  run, _ = finished_run
  out = str(tmp_path / "shipped")
  export.export(run, out)
  with pytest.raises(FileExistsError) as raised:
    export.export(run, out)
  assert str(raised.value) == (
      f"{os.path.join(out, 'checkpoints')}: already holds checkpoints. Fix: pass an --out that "
      "does not exist yet (or remove it), so that no older export mixes with this one.")
