"""Each benchmark runs at a tiny size and writes its JSON. No timing is asserted.

The flags are parsed into a fresh FlagValues (the modules define their flags only
when run as scripts), then run(**settings) does what main() would.
"""

import json
import subprocess
import sys

import jax
import pytest
from absl import flags

from benchmarks import common, epoch_bench, scan_bench, scan_share, train_bench

TINY_CONFIG = "configs/s_contrastive.py:tiny"


def read(tmp_path, name):
  return json.loads((tmp_path / common.machine_name() / f"{name}.json").read_text())


def parse(module, args, monkeypatch):
  """module.settings() for the command line `args`, as its __main__ block would parse it."""
  argv = [module.__name__] + args
  monkeypatch.setattr(sys, "argv", argv)  # ml_collections reads --config.* overrides from here
  flag_values = flags.FlagValues()
  module.define_flags(flag_values)
  flag_values(getattr(module, "current_spellings", list)(argv))
  return module.settings(flag_values)


@pytest.mark.slow
def test_scan_bench_writes_every_mode_and_the_ratios(tmp_path, monkeypatch):
  settings = parse(scan_bench, ["--lengths=5,16", "--states=4", "--channels=8", "--tokens=32",
                                "--repeats=1", "--reference=2,5,8,4", f"--out_dir={tmp_path}"],
                   monkeypatch)
  scan_bench.run(**settings)
  report = read(tmp_path, "scan_bench")
  assert settings["modes"] == scan_bench.default_modes()
  modes = {(r["mode"], r["pass"], r["L"]) for r in report["grid"]}
  for mode in settings["modes"]:
    assert {(mode, "fwd", 5), (mode, "fwd+bwd", 16)} <= modes
  assert "auto_fwd+bwd_speedup_vs_associative" in report["ratios_at_reference"]
  assert report["matmul_peak_flop_per_s"] > 0 and report["copy_peak_bytes_per_s"] > 0
  assert report["reference"] == [2, 5, 8, 4]


def test_scan_bench_quick_and_mode_checks(monkeypatch):
  settings = parse(scan_bench, ["--quick", "--lengths=7"], monkeypatch)
  assert settings["lengths"] == [5, 64, 1024] and settings["tokens"] == 2048
  if jax.default_backend() == "cpu":  # Pallas only where it compiles, not interpreted
    assert "pallas" not in settings["modes"] and "native" in settings["modes"]
  assert parse(scan_bench, ["--modes=pallas"], monkeypatch)["modes"] == ["pallas"]
  with pytest.raises(flags.IllegalFlagValueError, match="modes"):
    parse(scan_bench, ["--modes=sequential,fastest"], monkeypatch)


@pytest.mark.slow
def test_train_bench_without_torch_writes_throughput_and_flops(tmp_path, monkeypatch):
  settings = parse(train_bench, [f"--config={TINY_CONFIG}", "--config.train.batch_size=4",
                                 "--config.train.accum_steps=2", "--steps=1", "--no-torch",
                                 f"--out_dir={tmp_path}"], monkeypatch)
  assert settings["torch"] is False  # the argparse spelling still works
  train_bench.run(**settings)
  report = read(tmp_path, "train_bench")
  assert report["config"] == TINY_CONFIG
  assert report["config_overrides"] == {"train.batch_size": 4, "train.accum_steps": 2}
  assert report["jax"]["micro_batch"] == 4 and report["jax"]["accum_steps"] == 2
  assert report["jax"]["sequences_per_s"] > 0 and report["jax"]["model_flops_per_sequence"] > 0
  assert "same_shape_comparison" not in report


@pytest.mark.slow
def test_train_bench_compares_with_the_torch_loop(tmp_path, monkeypatch):
  pytest.importorskip("torch")
  settings = parse(train_bench, [f"--config={TINY_CONFIG}", "--config.train.batch_size=4",
                                 "--config.train.accum_steps=1", "--steps=1",
                                 "--torch_micro_batch=4", f"--out_dir={tmp_path}"], monkeypatch)
  train_bench.run(**settings)
  same = read(tmp_path, "train_bench")["same_shape_comparison"]
  assert same["torch_loop"]["sequences_per_s"] > 0 and same["jax_over_torch_sequences_per_s"] > 0
  assert same["jax"]["micro_batch"] == 4 and same["jax"]["accum_steps"] == 1


def test_model_flops_count_kernels_and_scan():
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.config_base import base_config, shrink_to_tiny  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  config = shrink_to_tiny(base_config())
  from lvm_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  predictor = models_lib.predictor_from_config(config, 64)
  state = step_lib.create_train_state(config, predictor, jax.random.PRNGKey(0), 64, 10)
  flops = train_bench.model_flops_per_sequence(config, state.params)
  d_inner = 2 * config.model.d_model
  scan_only = 3 * 5 * 8 * d_inner * config.model.d_state * config.model.n_layers
  assert flops > scan_only


@pytest.mark.slow
def test_scan_share_writes_the_ablation(tmp_path, monkeypatch):
  settings = parse(scan_share, ["--batch=2", "--vector_dim=16", "--d_model=8", "--n_layers=1",
                                "--d_state=4", "--repeats=1", f"--out_dir={tmp_path}"], monkeypatch)
  scan_share.run(**settings)
  report = read(tmp_path, "scan_share")
  assert report["with_scan_s"] > 0 and report["scan_replaced_by_skip_s"] > 0
  assert report["scan_share"] == pytest.approx(
      (report["with_scan_s"] - report["scan_replaced_by_skip_s"]) / report["with_scan_s"])
  assert report["shape"]["batch"] == 2 and report["shape"]["d_model"] == 8


@pytest.mark.parametrize("module, dashed, underscore", [
    (scan_share, ["--d-state=4", "--out-dir=/tmp/x"], ["--d_state=4", "--out_dir=/tmp/x"]),
    (epoch_bench, ["--payload-rows=300", "--scan-share-repeats=1", "--out-dir=/tmp/x"],
     ["--payload_rows=300", "--scan_share_repeats=1", "--out_dir=/tmp/x"]),
    (train_bench, ["--torch-micro-batch=4", "--out-dir=/tmp/x"],
     ["--torch_micro_batch=4", "--out_dir=/tmp/x"])])
def test_flags_are_spelled_with_underscores_and_the_dashed_ones_are_aliases(
    module, dashed, underscore, monkeypatch):
  settings = parse(module, underscore, monkeypatch)
  assert settings == parse(module, dashed, monkeypatch)
  assert settings["out_dir"] == "/tmp/x"


@pytest.mark.slow
def test_epoch_bench_times_a_tiny_epoch_with_compile_apart(tmp_path, monkeypatch):
  settings = parse(epoch_bench, [f"--config={TINY_CONFIG}", "--sequences=512",
                                 "--payload_rows=300", "--scan_share_repeats=1",
                                 "--config.data.prefetch=0", f"--out_dir={tmp_path}"],
                   monkeypatch)
  epoch_bench.run(**settings)
  report = read(tmp_path, "epoch_bench")
  assert report["steps"] == 512 // 64 and report["sequences"] == 512  # micro 32 x accum 2
  assert report["compile_and_first_step_s"] > 0 and report["epoch_s"] > 0
  assert report["sequences_per_s"] == pytest.approx(report["sequences"] / report["epoch_s"])
  assert 0 < report["fraction_of_matmul_peak"]
  # The share is a difference of two timings, so at this tiny size noise can make it
  # negative: the test holds it to its definition, not to a sign.
  share = read(tmp_path, "scan_share")
  assert report["scan_share"] == share["scan_share"] < 1
  assert (tmp_path / common.machine_name() / "epoch_bench.png").exists()


@pytest.mark.parametrize("module, flag", [(scan_bench, "--quick"), (train_bench, "--config"),
                                          (scan_share, "--d_state"), (epoch_bench, "--sequences")])
def test_help_prints_the_docstring_and_flags(module, flag):
  result = subprocess.run([sys.executable, "-m", module.__name__, "--help"], capture_output=True,
                          text=True, timeout=600, check=False)
  # absl's --help prints the usage and exits 1 without running main (absl/app.py, HelpFlag).
  assert result.returncode in (0, 1) and "Traceback" not in result.stderr, result.stderr
  assert module.__doc__.splitlines()[0] in result.stdout and flag in result.stdout


@pytest.mark.slow
def test_mambapy_bench_alternates_both_steps_and_reports_the_ratio(tmp_path, monkeypatch):
  pytest.importorskip("mambapy")
  from benchmarks import mambapy_bench  # pylint: disable=g-import-not-at-top
  settings = parse(mambapy_bench, [f"--config={TINY_CONFIG}", "--config.model.d_model=16",
                                   "--config.model.n_layers=1", "--config.model.d_state=4",
                                   "--config.data.synthetic.dim=32", "--batch=4", "--rounds=2",
                                   f"--out_dir={tmp_path}"], monkeypatch)
  mambapy_bench.run(**settings)
  report = read(tmp_path, "mambapy_bench")
  assert len(report["lvm_jax"]["step_s"]) == len(report["mambapy"]["step_s"]) == 2
  assert report["mambapy"]["implementation"] == "mambapy"
  assert report["mambapy"]["parameters"] > 0 and report["lvm_jax"]["d_model"] == 16
  assert report["lvm_jax_over_mambapy"] == pytest.approx(
      report["lvm_jax"]["sequences_per_s"] / report["mambapy"]["sequences_per_s"])
  assert len(report["load_average_before"]) == 3


@pytest.mark.slow
@pytest.mark.stack
def test_kill_soak_ends_where_an_uninterrupted_run_ends(tmp_path):
  """benchmarks.soak with 3 kills (CI's size; the committed record has 30): the killed and
  rerun run's final state and history equal the uninterrupted run's, bit for bit."""
  from benchmarks import soak  # pylint: disable=g-import-not-at-top
  result = soak.soak(kills=3, seed=1, root=str(tmp_path), epochs=2)
  assert result["kills_landed"] >= 1, result["kills"]
  assert result["final_step"]["killed"] == result["final_step"]["reference"]
  assert result["state_bitwise_equal"] and result["history_equal"], result
