"""python -m lvm_jax.import_torch: a best.pt in the reference trainer's format -> a workdir
that evaluates and continues training. The best.pt is written here with plain torch from the
committed fixtures (the reference's tensors and names), so no reference code is needed."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from lvm_jax import checkpoint
from lvm_jax import import_torch
from lvm_jax.models import torch_import
from lvm_jax.models.lnsp_import import StateDictMismatch, from_torch, torch_name

# Its module fixture is costly: one pytest-xdist worker runs the whole file.
pytestmark = pytest.mark.xdist_group("import_torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
REFUSAL = ("not read: a .pt file is a pickle and loading it can run arbitrary code; pass "
           "--trust_pickle if you trust where it came from.")


def fixture(name):
  with np.load(os.path.join(FIXTURES, f"{name}.npz")) as f:
    state = {str(k): f[f"state/{k}"].astype(np.float32) for k in f["state_names"]}
    return f["inputs"].astype(np.float32), f["outputs"], json.loads(str(f["kwargs"])), state


def reference_args(**changes):
  """Every field of the reference trainer's argparse namespace, as vars(args) saves it."""
  _, _, model, _ = fixture("lnsp_mamba_s")
  _, _, head, _ = fixture("lnsp_projection_head")
  args = dict(model_type="mamba_s", d_model=model["d_model"], n_layers=model["n_layers"],
              d_state=model["d_state"], conv_sz=model["conv_sz"], expand=model["expand"],
              dropout=model["dropout"], local_attn_win=8, local_attn_every=4, n_heads=4,
              n_layers_mamba=8, n_layers_local=4, gru_hidden=256,
              proj_hidden=head["hidden_dim"], proj_out=head["out_dim"], lambda_con=0.7,
              lambda_ar=0.3, temperature=0.07, train_npz="artifacts/lvm/train.npz",
              val_split=0.1, article_dropout=0.2, span_corruption=0.1, epochs=2, batch_size=16,
              grad_accum_steps=2, lr=1e-3, weight_decay=0.02, warmup_steps=10,
              early_stop_patience=3, device="cpu", num_workers=0,
              save_dir=pathlib.Path("artifacts/lvm/models/mamba_s_contrastive"))
  args.update(changes)
  return args


def write_best_pt(path, *, model_state=None, args=None, optimizer_steps=2):
  """torch.save of the dict the reference trainer saves, with a real AdamW state."""
  torch = pytest.importorskip("torch")
  model_state = model_state or fixture("lnsp_mamba_s")[3]
  head_state = fixture("lnsp_projection_head")[3]
  params = [torch.nn.Parameter(torch.tensor(v)) for v in (*model_state.values(),
                                                          *head_state.values())]
  optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.02)
  generator = torch.Generator().manual_seed(0)
  for _ in range(optimizer_steps):
    for p in params:
      p.grad = torch.randn(p.shape, generator=generator)
    optimizer.step()
  as_tensors = lambda state: {k: torch.tensor(v) for k, v in state.items()}
  torch.save({"epoch": 1, "model_state_dict": as_tensors(model_state),
              "projection_head_state_dict": as_tensors(head_state),
              "optimizer_state_dict": optimizer.state_dict(), "val_cosine": 0.4321,
              "val_loss": 1.5, "args": args or reference_args()}, path)
  return optimizer.state_dict(), list(model_state), list(head_state)


def restore_state(workdir):
  """The TrainState as training resumes it: restored into step.create_train_state's template."""
  from lvm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.workdir import Workdir  # pylint: disable=g-import-not-at-top
  config = checkpoint.read_config(Workdir(workdir))
  from lvm_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  predictor = models_lib.predictor_from_config(config, config.data.vector_dim)
  template = step_lib.create_train_state(config, predictor, jax.random.PRNGKey(1),
                                         config.data.vector_dim, 1)
  saver = checkpoint.Checkpointer(Workdir(workdir).checkpoints)
  try:
    return saver.restore_latest(template)
  finally:
    saver.close()


def test_refuses_without_trust_pickle(tmp_path):
  src = tmp_path / "best.pt"
  src.write_bytes(b"not opened")
  with pytest.raises(torch_import.TorchImportError) as error:
    import_torch.import_checkpoint(str(src), str(tmp_path / "out"))
  assert str(error.value) == f"{src}: {REFUSAL}"
  assert not (tmp_path / "out").exists()


def test_cli_refusal_is_one_line_and_exit_code_2(tmp_path):
  src = tmp_path / "best.pt"
  src.write_bytes(b"not opened")
  done = subprocess.run([sys.executable, "-m", "lvm_jax.import_torch", f"--src={src}",
                         f"--workdir={tmp_path / 'out'}"], capture_output=True, text=True,
                        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"),
                        check=False)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == f"error: {src}: {REFUSAL}"


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("import")
  src = str(root / "best.pt")
  torch_optimizer, model_names, head_names = write_best_pt(src)
  workdir = str(root / "imported")
  record = import_torch.import_checkpoint(src, workdir, trust_pickle=True, import_optimizer=True)
  return workdir, record, torch_optimizer, model_names, head_names


def test_imported_model_and_head_give_the_reference_outputs(imported):
  workdir, record, _, _, _ = imported
  assert record["step"] == 2 and record["optimizer"] == "imported" and record["epoch"] == 1
  loaded = checkpoint.load(workdir)
  assert loaded.config.model.name == "lnsp_mamba_s" and loaded.config.head.kind == "lnsp"
  assert loaded.step == 2
  inputs, outputs, _, _ = fixture("lnsp_mamba_s")
  predictions = np.asarray(loaded.model.apply({"params": loaded.params}, inputs, train=False))
  assert np.max(np.abs(predictions - outputs)) <= 1e-5
  head_inputs, head_outputs, _, _ = fixture("lnsp_projection_head")
  from lvm_jax.models import create_head  # pylint: disable=g-import-not-at-top
  head = create_head(loaded.config.head)
  projected = np.asarray(head.apply({"params": restore_state(workdir).params["head"]},
                                    head_inputs))
  assert np.max(np.abs(projected - head_outputs)) <= 1e-5


def test_adam_moments_and_schedule_resume_at_the_reference_step(imported):
  workdir, _, torch_optimizer, model_names, head_names = imported
  state = restore_state(workdir)
  adam, schedule = state.opt_state[1][0], state.opt_state[1][2]
  assert int(state.step) == int(adam.count) == int(schedule.count) == 2
  flat_mu = flax.traverse_util.flatten_dict(adam.mu)
  flat_nu = flax.traverse_util.flatten_dict(adam.nu)
  names = [("model", n) for n in model_names] + [("head", n) for n in head_names]
  by_name = {}
  for path in flat_mu:
    by_name[(path[0], torch_name(path[1:]))] = path
  assert len(by_name) == len(names)
  for index, name in enumerate(names):
    path = by_name[name]
    state = torch_optimizer["state"][index]
    np.testing.assert_array_equal(flat_mu[path], from_torch(path[1:], state["exp_avg"].numpy()))
    np.testing.assert_array_equal(flat_nu[path], from_torch(path[1:], state["exp_avg_sq"].numpy()))


def test_without_import_optimizer_the_moments_start_fresh(tmp_path):
  src = str(tmp_path / "best.pt")
  write_best_pt(src, optimizer_steps=3)
  record = import_torch.import_checkpoint(src, str(tmp_path / "w"), trust_pickle=True)
  assert record["optimizer"] == "fresh" and record["step"] == 3
  state = restore_state(str(tmp_path / "w"))
  adam, schedule = state.opt_state[1][0], state.opt_state[1][2]
  assert int(state.step) == int(schedule.count) == 3 and int(adam.count) == 0
  assert all(not np.any(leaf) for leaf in jax.tree_util.tree_leaves((adam.mu, adam.nu)))


def test_missing_and_misshaped_tensors_are_listed(tmp_path):
  state = dict(fixture("lnsp_mamba_s")[3])
  del state["layers.1.D"]
  state["layers.0.x_proj.weight"] = np.zeros((3, 16), np.float32)
  src = str(tmp_path / "best.pt")
  write_best_pt(src, model_state=state)
  with pytest.raises(StateDictMismatch) as error:
    import_torch.import_checkpoint(src, str(tmp_path / "w"), trust_pickle=True)
  assert str(error.value) == (
      f"{src} model_state_dict does not fit the model rebuilt from its args: missing (the model "
      "needs them): layers.1.D | wrong shape: layers.0.x_proj.weight: shape (3, 16) in the file, "
      "(8, 16) expected. Check that the args saved with it describe the model that wrote it.")
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_args_of_another_size_leave_tensors_unmapped(tmp_path):
  src = str(tmp_path / "best.pt")
  write_best_pt(src, args=reference_args(n_layers=1))
  with pytest.raises(StateDictMismatch, match=r"unmapped \(the model has no such parameter\): "
                     r"layers\.1\.A_log, layers\.1\.D, layers\.1\.norm\.weight, "):
    import_torch.import_checkpoint(src, str(tmp_path / "w"), trust_pickle=True)


def test_sandwich_args_map_to_the_project_config():
  config = torch_import.config_from_args(
      reference_args(model_type="mamba_sandwich", n_layers_mamba=3, n_layers_local=2,
                     local_attn_win=6, n_heads=2), 768)
  model = config.model
  assert (model.name, model.n_layers, model.n_attention_front, model.n_attention_back,
          model.window, model.num_heads) == ("lnsp_mamba_sandwich", 3, 1, 1, 6, 2)
  assert (config.train.accum_steps, config.loss.negatives, config.loss.positions,
          config.head.kind, config.head.hidden_dim) == (2, "micro", "last", "lnsp", 16)
  with pytest.raises(torch_import.TorchImportError, match="args.model_type='mamba_x' is not one"):
    torch_import.config_from_args(reference_args(model_type="mamba_x"), 768)


@pytest.mark.slow
def test_continues_training_from_its_step_and_evaluates(imported, tmp_path):
  from lvm_jax import train  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import __main__ as eval_cli  # pylint: disable=g-import-not-at-top
  workdir = imported[0]
  spec = importlib.util.spec_from_file_location(
      "lnsp_imported", os.path.join(ROOT, "configs", "lnsp_imported.py"))
  config_module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(config_module)
  config = config_module.get_config(workdir)
  config.data.synthetic.num_articles = 60
  config.data.prefetch = 0
  config.eval.batch_size = 256
  config.train.num_epochs = 1  # the rest of the reference's epoch 1: steps 3 .. steps_per_epoch
  summary = train.train_and_evaluate(config, workdir)
  steps = [h["step"] for h in summary["history"]]
  assert len(steps) == 1 and steps[0] > 2 and int(summary["final_state"].step) == steps[0]
  assert np.isfinite(summary["history"][-1]["val_loss"])
  out = str(tmp_path / "eval.json")
  code = eval_cli.main(["--checkpoint", workdir, "--out", out, "--latency-queries", "5",
                        "--gate-contain50", "0", "--gate-eff5", "0", "--gate-r5", "0",
                        "--gate-p95", "1e9"])
  assert code == 0
  with open(out) as f:
    assert json.load(f)["n_samples"] > 0
