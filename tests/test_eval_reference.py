"""Drop-in for the reference's tools/eval_checkpoint_unified.py: its JSON (keys, order, units),
its [EVAL] line and its complete command line, checked against a fixture written the way the
reference writes it (tests/fixtures/reference_eval/make_reference_json.py)."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest

from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.eval_sets import EvalSet, read_eval_set
from lvm_jax.data.payload import Payload, read_payload
from lvm_jax.eval import __main__ as eval_cli
from lvm_jax.eval import reference
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval.eval_inputs import EvalOptions, Gates
from lvm_jax.retrieval.judge import RetrievalJudge

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "reference_eval")
LATENCY = ("latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")


def fixture_module():
  spec = importlib.util.spec_from_file_location(
      "make_reference_json", os.path.join(FIXTURE_DIR, "make_reference_json.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def known():
  """(fixture JSON, our reference-format report) for the known case's predictions."""
  case = fixture_module()
  with open(os.path.join(FIXTURE_DIR, "reference_eval.json")) as f:
    expected = json.load(f)
  payload_dict, contexts, targets, keys = case.known_case()
  rows = list(payload_dict.values())
  payload = Payload(
      vectors=np.stack([v for _, _, v in rows]).astype(np.float32),
      article_index=np.array([m["article_index"] for _, m, _ in rows], np.int64),
      chunk_index=np.array([m["chunk_index"] for _, m, _ in rows], np.int64),
      ids=np.array(list(payload_dict), np.int64),
      provenance={"embedder_id": "unknown", "norm": "l2", "metric": "inner_product"})
  eval_set = EvalSet(contexts, targets, keys, provenance=case.PROVENANCE)
  index = index_lib.build_index(payload.vectors, kind="flat")
  options = EvalOptions(limit=case.LIMIT, latency_queries=len(keys), index_recall=False)
  result = RetrievalJudge(eval_set, payload, index, options).report(case.predict)
  ours = reference.reference_report(
      result, checkpoint=case.CHECKPOINT, epoch=case.EPOCH, limit=case.LIMIT,
      val_cosine=case.VAL_COSINE, knobs=dict(case.KNOBS), gates=Gates(), ours={})
  return expected, ours, result


def test_same_keys_in_the_same_order(known):
  expected, ours, _ = known
  assert list(ours)[:-1] == list(expected)
  assert list(ours)[-1] == reference.REPORT_KEY  # our content under a key of its own


def test_same_values_for_the_same_predictions(known):
  expected, ours, _ = known
  for key, value in expected.items():
    if key in LATENCY or key in ("gates_passed", "gates_failed"):
      assert isinstance(ours[key], type(value)) or isinstance(value, float), key
      continue
    if isinstance(value, float):
      assert ours[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    else:
      assert ours[key] == value, key
  # The percent rates are the reference's exact arithmetic (100 * hits / n), not rounded copies.
  for key in ("R@1", "R@5", "R@10", "R@20", "Contain@20", "Contain@50", "Eff@5"):
    assert ours[key] == expected[key], key


def test_gate_strings_match_except_the_measured_latency(known):
  expected, ours, _ = known
  without_p95 = lambda lines: [line for line in lines if "P95" not in line]
  assert without_p95(ours["gates_passed"]) == without_p95(expected["gates_passed"])
  assert without_p95(ours["gates_failed"]) == without_p95(expected["gates_failed"])
  p95 = [line for line in ours["gates_passed"] + ours["gates_failed"] if "P95" in line]
  assert len(p95) == 1 and re.fullmatch(r"(✅|❌) P95: \d+\.\d\dms (≤|>) 1\.45ms", p95[0])


def test_eval_line_is_the_reference_format(known):
  expected, _, result = known
  p95 = result["latency"]["latency_p95_ms"]
  f = {k: expected[k] / 100 for k in ("Contain@20", "Contain@50", "R@1", "R@5", "R@10", "Eff@5")}
  line = (f"[EVAL] Contain@20={f['Contain@20']:.3f} Contain@50={f['Contain@50']:.3f} "
          f"R@1={f['R@1']:.3f} R@5={f['R@5']:.3f} R@10={f['R@10']:.3f} "
          f"Eff@5={f['Eff@5']:.3f} P95={p95:.2f}ms  "
          f"truth→payload_cos(mean={expected['truth_payload_cos_mean']:.3f}, "
          f"p5={expected['truth_payload_cos_p5']:.3f})")
  assert reference.eval_line(result["gated"], result["n_samples"], p95,
                             result["alignment"]) == line


def reference_files(workdir, directory):
  """The workdir's data as the reference stores it: a pickled payload dict, an eval NPZ with
  the reference's provenance spellings, an IVF index file."""
  payload = read_payload(os.path.join(workdir, "data", "payload"))
  eval_set = read_eval_set(os.path.join(workdir, "data", "eval.npz"))
  payload_dict = {row: (payload.texts[row], {"article_index": int(payload.article_index[row]),
                                             "chunk_index": int(payload.chunk_index[row])},
                        payload.vectors[row]) for row in range(payload.num_rows)}
  npy = os.path.join(directory, "wikipedia_payload.npy")
  np.save(npy, payload_dict, allow_pickle=True)
  npz = os.path.join(directory, "eval_v2_payload_aligned.npz")
  np.savez(npz, contexts=eval_set.contexts, targets=eval_set.targets,
           truth_keys=eval_set.truth_keys, provenance=np.array([json.dumps(
               {"embedder_id": "GTR-T5-base-768", "norm": "l2_once", "metric": "ip",
                "aligned_at": "2025-10-01T00:00:00"})]))
  index_path = os.path.join(directory, "wikipedia_ivf_flat_ip.index")
  index_lib.write_index(index_lib.build_index(payload.vectors, kind="ivf_flat", nlist=8),
                        index_path)
  return npy, npz, index_path


def test_the_reference_command_line_is_accepted(eval_workdir, tmp_path, capsys):
  npy, npz, index_path = reference_files(eval_workdir, str(tmp_path))
  out = str(tmp_path / "smoke_epoch4.json")
  command = ["--checkpoint", eval_workdir, "--eval-npz", npz, "--payload", npy,
             "--faiss", index_path, "--device", "cpu", "--limit", "1000", "--epoch", "4",
             "--nprobe", "64", "--gate-contain50", "0.60", "--gate-eff5", "0.68",
             "--gate-r5", "0.40", "--gate-p95", "1.45", "--rerank-mmr", "0.7",
             "--seq-bias-same", "0.05", "--seq-bias-gap", "0.12", "--directional", "0.03",
             "--shard-assist", "false", "--out", out]
  assert eval_cli.main(command) == 2  # the pickled payload needs consent
  assert "--trust_pickle" in capsys.readouterr().err
  assert eval_cli.main(command + ["--trust_pickle"]) == 1  # an untrained model fails the gates
  printed = capsys.readouterr().out
  assert re.match(r"\[EVAL\] Contain@20=\d\.\d{3} Contain@50=\d\.\d{3} R@1=\d\.\d{3} "
                  r"R@5=\d\.\d{3} R@10=\d\.\d{3} Eff@5=\d\.\d{3} P95=\d+\.\d{2}ms  "
                  r"truth→payload_cos\(mean=1\.000, p5=1\.000\)$", printed.splitlines()[0])
  with open(out) as f:
    report = json.load(f)
  with open(os.path.join(FIXTURE_DIR, "reference_eval.json")) as f:
    assert list(report)[:-1] == list(json.load(f))
  assert report["epoch"] == 4 and report["limit"] == 1000 and report["val_cosine"] == 0.25
  assert report["retrieval_knobs"]["shard_assist"] == "false"
  # The conversion is cached beside the .npy and reused without --trust_pickle.
  converted = reference.converted_path(npy, None)
  assert os.path.isdir(converted)
  assert eval_cli.main(command) == 1


def test_a_changed_pickle_is_converted_again_and_a_cache_dir_is_honoured(tmp_path):
  payload = {0: ("a", {"article_index": 0, "chunk_index": 0}, np.eye(4, dtype=np.float32)[0]),
             1: ("b", {"article_index": 0, "chunk_index": 1}, np.eye(4, dtype=np.float32)[1])}
  npy = str(tmp_path / "p.npy")
  np.save(npy, payload, allow_pickle=True)
  cache = str(tmp_path / "cache")
  converted = reference.resolve_payload(npy, trust_pickle=True, cache_dir=cache)
  assert converted == os.path.join(cache, "p" + reference.CONVERTED_SUFFIX)
  assert reference.resolve_payload(npy, trust_pickle=False, cache_dir=cache) == converted
  payload[2] = ("c", {"article_index": 0, "chunk_index": 2}, np.eye(4, dtype=np.float32)[2])
  np.save(npy, payload, allow_pickle=True)
  with pytest.raises(DataFormatError, match="--trust_pickle"):
    reference.resolve_payload(npy, trust_pickle=False, cache_dir=cache)
  reference.resolve_payload(npy, trust_pickle=True, cache_dir=cache)
  assert read_payload(converted).num_rows == 3


@pytest.mark.parametrize("flags, words", [
    (["--shard-assist", "true"], "shard-assist is not available"),
    (["--device", "cuda", "--backend", "cpu"], "--device cuda means --backend gpu"),
    (["--rerank-mmr", "x"], "could not convert string to float"),
])
def test_reference_flags_we_cannot_honour_fail_clearly(eval_workdir, capsys, flags, words):
  assert eval_cli.main(["--checkpoint", eval_workdir, *flags]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and words in err and "Traceback" not in err
