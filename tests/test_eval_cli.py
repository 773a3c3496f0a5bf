"""The evaluation CLI and evaluator on a small synthetic corpus and an untrained checkpoint."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from lvm_jax import checkpoint, train
from lvm_jax.config_base import base_config
from lvm_jax.data import synthetic
from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.data.payload import read_payload
from lvm_jax.data import index as index_lib
from lvm_jax.data.errors import DataFormatError
from lvm_jax.eval import __main__ as eval_cli
from lvm_jax.eval.evaluator import EvalOptions, RetrievalEvaluator
from lvm_jax.models import ProjectionHead

REFERENCE_KEYS = ("n_samples", "R@1", "R@5", "R@10", "R@20", "Contain@20", "Contain@50", "Eff@5",
                  "latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                  "checkpoint", "limit", "val_cosine", "gates_passed", "gates_failed",
                  "retrieval_knobs")
LAX_GATES = ["--gate-contain50", "0", "--gate-eff5", "0", "--gate-r5", "0", "--gate-p95", "1e9"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A workdir as training leaves it: synthetic data, config.json, a checkpoint, history."""
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


def corpus(workdir):
  data = os.path.join(workdir, "data")
  payload = read_payload(os.path.join(data, "payload"))
  return payload, read_eval_set(os.path.join(data, "eval.npz"))


def test_oracle_finds_every_target_and_the_baselines_are_rows(workdir):
  payload, eval_set = corpus(workdir)
  index = index_lib.build_index(payload.vectors, kind="flat")
  evaluator = RetrievalEvaluator(eval_set, payload, index, EvalOptions(latency_queries=20))
  result = evaluator.run(lambda contexts: contexts[:, -1])
  assert result["rows"]["oracle"]["R@1"] == 1.0
  assert result["rows"]["oracle"]["exact_duplicate_misses"] == 0
  for name in ("copy_last", "mean_of_context", "model"):
    assert 0.0 <= result["rows"][name]["R@5"] <= 1.0
  # The predict_fn above is copy-last, so the model row must equal the copy_last row.
  assert result["rows"]["model"]["R@5"] == result["rows"]["copy_last"]["R@5"]


def test_exclude_context_drops_the_windows_own_chunks(workdir):
  payload, eval_set = corpus(workdir)
  index = index_lib.build_index(payload.vectors, kind="flat")
  plain = RetrievalEvaluator(eval_set, payload, index, EvalOptions(latency_queries=5))
  excluded = RetrievalEvaluator(eval_set, payload, index,
                                EvalOptions(latency_queries=5, exclude_context=True))
  copy_last = lambda contexts: contexts[:, -1]
  assert plain.run(copy_last)["rows"]["model"]["R@1"] == 0.0  # its own last context chunk wins
  assert excluded.run(copy_last)["rows"]["model"]["R@1"] > 0.0


def test_cli_writes_the_reference_keys_and_exits_0_when_gates_pass(workdir, capsys):
  out = os.path.join(workdir, "eval.json")
  code = eval_cli.main(["--checkpoint", workdir, "--out", out, "--latency-queries", "20",
                        "--mmr-lambda", "0.5", "--w-next-gap", "0.1", *LAX_GATES])
  printed = capsys.readouterr().out
  assert code == 0
  assert printed.splitlines()[0].startswith("[EVAL] Contain@20=")
  assert "| oracle | 1.0000 |" in printed and "(article identity)" in printed
  with open(out) as f:
    report = json.load(f)
  for key in REFERENCE_KEYS:
    assert key in report, key
  assert report["gates_failed"] == [] and report["val_cosine"] == 0.25
  assert report["retrieval_knobs"]["nprobe"] == 64


def test_cli_exits_1_when_a_gate_fails(workdir, capsys):
  code = eval_cli.main(["--checkpoint", workdir, "--latency-queries", "10", *LAX_GATES[:-2],
                        "--gate-p95", "0"])
  assert code == 1
  assert "| latency_p95_ms |" in capsys.readouterr().out


def test_cli_refuses_to_gate_on_article_identity(workdir, capsys):
  code = eval_cli.main(["--checkpoint", workdir, "--latency-queries", "5", "--w-same-article",
                        "0.1", "--gate-row", "model+same_article(w=0.1)"])
  assert code == 2
  assert "uses the query's article identity" in capsys.readouterr().err


def test_provenance_mismatch_is_an_error_unless_overridden(workdir):
  payload, eval_set = corpus(workdir)
  other = dataclasses.replace(eval_set, provenance=dict(eval_set.provenance, embedder_id="minilm"))
  index = index_lib.build_index(payload.vectors, kind="flat")
  with pytest.raises(DataFormatError, match=r"embedder_id: eval set 'minilm' vs payload"):
    RetrievalEvaluator(other, payload, index, EvalOptions())
  RetrievalEvaluator(other, payload, index, EvalOptions(allow_provenance_mismatch=True))


def test_misaligned_targets_name_the_worst_rows(workdir):
  payload, eval_set = corpus(workdir)
  targets = eval_set.targets.copy()
  targets[3] = -targets[3]
  targets[:] = np.roll(targets, 1, axis=0)
  shifted = dataclasses.replace(eval_set, targets=targets)
  index = index_lib.build_index(payload.vectors, kind="flat")
  with pytest.raises(DataFormatError, match=r"do not match their payload vectors: mean cosine .* "
                                            r"worst rows \[4"):
    RetrievalEvaluator(shifted, payload, index, EvalOptions())


def test_bad_checkpoint_path_exits_2(tmp_path, capsys):
  assert eval_cli.main(["--checkpoint", str(tmp_path)]) == 2
  assert "not a training workdir" in capsys.readouterr().err


def test_build_index_cli_writes_an_index_of_the_payload(workdir, tmp_path, capsys):
  from lvm_jax.eval import build_index  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "ivf.faiss")
  build_index.main(["--payload", os.path.join(workdir, "data", "payload"), "--out", out,
                    "--kind", "ivf_flat", "--nlist", "8", "--train-sample", "500"])
  payload, _ = corpus(workdir)
  index = index_lib.read_index(out, payload.vectors)
  assert index_lib.index_kind(index) == "ivf_flat" and index.ntotal == payload.num_rows
  assert "ivf_flat index over" in capsys.readouterr().out
