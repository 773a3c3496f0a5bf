"""Each benchmark runs at a tiny size and writes its JSON. No timing is asserted."""

import json

import pytest

from benchmarks import common, scan_bench, train_bench

TINY_CONFIG = "configs/s_contrastive.py:tiny"


def read(tmp_path, name):
  return json.loads((tmp_path / common.machine_name() / f"{name}.json").read_text())


def test_scan_bench_writes_every_mode_and_the_ratios(tmp_path):
  scan_bench.main(["--lengths", "5,16", "--states", "4", "--channels", "8", "--tokens", "32",
                   "--repeats", "1", "--reference", "2,5,8,4", "--out-dir", str(tmp_path)])
  report = read(tmp_path, "scan_bench")
  modes = {(r["mode"], r["pass"], r["L"]) for r in report["grid"]}
  for mode in scan_bench.CONCRETE_MODES:
    assert {(mode, "fwd", 5), (mode, "fwd+bwd", 16)} <= modes
  assert "auto_fwd+bwd_speedup_vs_associative" in report["ratios_at_reference"]
  assert report["matmul_peak_flop_per_s"] > 0 and report["copy_peak_bytes_per_s"] > 0


def test_train_bench_without_torch_writes_throughput_and_flops(tmp_path):
  train_bench.main(["--config", TINY_CONFIG, "--micro-batch", "4", "--accum-steps", "2",
                    "--steps", "1", "--no-torch", "--out-dir", str(tmp_path)])
  report = read(tmp_path, "train_bench")
  assert report["jax"]["micro_batch"] == 4 and report["jax"]["accum_steps"] == 2
  assert report["jax"]["sequences_per_s"] > 0 and report["jax"]["model_flops_per_sequence"] > 0
  assert "same_shape_comparison" not in report


def test_train_bench_compares_with_the_torch_loop(tmp_path):
  pytest.importorskip("torch")
  train_bench.main(["--config", TINY_CONFIG, "--micro-batch", "4", "--accum-steps", "1",
                    "--steps", "1", "--torch-micro-batch", "4", "--out-dir", str(tmp_path)])
  same = read(tmp_path, "train_bench")["same_shape_comparison"]
  assert same["torch_loop"]["sequences_per_s"] > 0 and same["jax_over_torch_sequences_per_s"] > 0


def test_model_flops_count_kernels_and_scan():
  config = train_bench.load_config(TINY_CONFIG)
  import jax  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint, train  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import ProjectionHead  # pylint: disable=g-import-not-at-top
  model = checkpoint.model_from_config(config, 64)
  head = ProjectionHead(config.head.hidden_dim, config.head.out_dim)
  state = train.create_train_state(config, model, head, jax.random.PRNGKey(0), 64, 10)
  flops = train_bench.model_flops_per_sequence(config, state.params)
  d_inner = 2 * config.model.d_model
  scan_only = 3 * 5 * 8 * d_inner * config.model.d_state * config.model.n_layers
  assert flops > scan_only


def test_scan_share_writes_the_ablation(tmp_path):
  from benchmarks import scan_share  # pylint: disable=g-import-not-at-top
  scan_share.main(["--batch", "2", "--vector-dim", "16", "--d-model", "8", "--n-layers", "1",
                   "--d-state", "4", "--repeats", "1", "--out-dir", str(tmp_path)])
  report = read(tmp_path, "scan_share")
  assert report["with_scan_s"] > 0 and report["scan_replaced_by_skip_s"] > 0
  assert report["shape"]["batch"] == 2
