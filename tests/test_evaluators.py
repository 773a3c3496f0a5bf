"""evaluators: types resolve to classes, and an evaluator added as docs/evaluation.md says (one
file plus a config entry) reaches history.json and TensorBoard under the writer's naming rule,
beside the validation and retrieval evaluators."""

import json
import os
import re
import shutil

import ml_collections
import pytest

from lvm_jax import evaluators, train
from lvm_jax.evaluators import retrieval, validation
from lvm_jax.eval import flags as eval_flags
from lvm_jax.eval import reference, report
from lvm_jax.eval import settings as eval_settings
from lvm_jax.retrieval import eval_inputs
from lvm_jax.retrieval.eval_inputs import GATES, Gate, Gates
from lvm_jax.train import hooks
from conftest import tiny_config
from event_files import read_scalars

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def docs_example():
  """(the evaluator module's source, the config entry) of docs/evaluation.md's example."""
  with open(os.path.join(ROOT, "docs", "evaluation.md"), encoding="utf-8") as f:
    section = f.read().split("## Adding an evaluator", 1)[1]
  module, entry = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
  return module, entry


def test_types_name_modules_and_unknown_ones_name_the_field():
  assert evaluators.kind("validation") is validation.ValidationEvaluator
  assert evaluators.kind("retrieval") is retrieval.RetrievalEvaluation
  config = tiny_config()
  config.evals.val.type = "no_such_evaluator"
  with pytest.raises(ValueError, match=r"evals\.val\.type='no_such_evaluator'.*"
                                       r"lvm_jax/evaluators/no_such_evaluator\.py"):
    evaluators.check_config(config)
  config.evals.val.every_epochs = 0  # an entry that is off is not built, nor checked
  evaluators.check_config(config)


def test_evaluators_share_due_and_the_gate_defaults():
  context = evaluators.Context(config=tiny_config())
  every_two = evaluators.Evaluator(None, ml_collections.ConfigDict({"every_epochs": 2}), context)
  assert [every_two.due(epoch) for epoch in (1, 2, 3, 4)] == [False, True, False, True]
  assert every_two.baselines() == {}
  defaults = Gates.from_knobs(tiny_config().evals.retrieval)  # None: GATES' defaults
  assert defaults == Gates()
  assert Gates.from_knobs({"gate_r5": 0.5}) == Gates({**Gates().thresholds, "R@5": 0.5})
  options = retrieval.options_from(tiny_config().evals.retrieval, batch_size=8)
  assert (options.nprobe, options.limit, options.latency_queries, options.index_recall) == (
      64, None, 0, False)


def gate_uses(gates=GATES, given=()):
  """What each user of the gate table makes of it: the knobs, the flags (and their aliases) with
  their defaults, the gates asked by `given` flags, check(), the report's gate lines (none asked,
  all asked) and the reference tool's lines."""
  f = eval_flags.parse_flags(["--checkpoint", "run"] + [f"--{flag}=0.5" for flag in given])
  row = {gate.metric: 0.5 for gate in gates}
  verdicts = Gates().check(row)
  result = {"gated_row": "model", "gate_view": "all", "gated": row, "gate_results": verdicts}
  percent = {**{key: 50.0 for key in reference.PERCENT_KEYS}, "Eff@5": 50.0}
  lines = reference.gate_lines(percent, {"latency_p95_ms": 0.5}, Gates())
  return {"flags": {gate.knob: (f[gate.knob].default, f[gate.knob.replace("_", "-")].default)
                    for gate in gates},
          "asked": eval_settings.asked_gates(f, {}), "check": verdicts,
          "report_none": report.gate_table(result, Gates(), []),
          "report": report.gate_table(result, Gates(), list(verdicts)),
          "reference": lines["gates_passed"] + lines["gates_failed"]}


def test_the_gate_knobs_flags_report_and_check_all_follow_the_one_table():
  """GATES is the one statement of the reference's gates; config_base (which may not import
  retrieval/) repeats the knob names, so they are checked here."""
  knobs = [gate.knob for gate in GATES]
  config_knobs = [name for name in tiny_config().evals.retrieval if name.startswith("gate_")]
  assert sorted(config_knobs) == sorted(knobs)
  assert eval_settings.CONFIG_KNOBS == ("index_kind", *knobs)
  assert eval_inputs.GATED_METRICS == ("Contain@50", "Eff@5", "R@5", "latency_p95_ms")
  assert Gates().thresholds == {"Contain@50": 0.60, "Eff@5": 0.68, "R@5": 0.40,
                                "latency_p95_ms": 1.45}
  uses = gate_uses(given=knobs)
  assert uses["flags"] == {gate.knob: (gate.default, gate.default) for gate in GATES}
  assert uses["asked"] == list(eval_inputs.GATED_METRICS)
  assert uses["check"] == {"Contain@50": False, "Eff@5": False, "R@5": True,
                           "latency_p95_ms": True}
  assert "latency_p95_ms" not in Gates().check({"Contain@50": 1, "Eff@5": 1, "R@5": 1})
  assert uses["report_none"].endswith("The reference's: --gate_contain50 0.6 --gate_eff5 0.68 "
                                      "--gate_r5 0.4 --gate_p95 1.45 (docs/eval_reference.md).")
  assert uses["report"].splitlines()[2:] == [
      "| Contain@50 | 0.5000 | >= 0.6 | FAIL |", "| Eff@5 | 0.5000 | >= 0.68 | FAIL |",
      "| R@5 | 0.5000 | >= 0.4 | PASS |", "| latency_p95_ms | 0.5000 | <= 1.45 | PASS |"]
  assert uses["reference"] == ["✅ R@5: 50.0% ≥ 40%", "✅ P95: 0.50ms ≤ 1.45ms",
                               "❌ Contain@50: 50.0% < 60%", "❌ Eff@5: 50.0% < 68%"]


def test_a_gate_added_to_the_table_reaches_its_flag_check_the_report_and_the_reference(
    monkeypatch):
  added = Gate("R@10", "gate_r10", 0.45)
  for module in (eval_inputs, eval_flags, eval_settings, report, reference):
    monkeypatch.setattr(module, "GATES", GATES + (added,))
  uses = gate_uses(GATES + (added,), given=["gate-r10"])
  assert uses["flags"]["gate_r10"] == (0.45, 0.45)
  assert uses["asked"] == ["R@10"]
  assert uses["check"]["R@10"] is True
  assert "--gate_p95 1.45 --gate_r10 0.45 (docs" in uses["report_none"]
  assert uses["report"].splitlines()[-1] == "| R@10 | 0.5000 | >= 0.45 | PASS |"
  assert "✅ R@10: 50.0% ≥ 45%" in uses["reference"]
  assert Gates.from_knobs({"gate_r10": 0.9}).thresholds["R@10"] == 0.9


def test_an_evaluator_added_from_the_docs_reaches_history_and_tensorboard(tmp_path, monkeypatch):
  module, entry = docs_example()
  (tmp_path / "modules").mkdir()
  (tmp_path / "modules" / "copy_cosine.py").write_text(module)
  monkeypatch.syspath_prepend(str(tmp_path / "modules"))
  config = tiny_config(num_epochs=2)
  exec(entry, {"config": config, "ml_collections": ml_collections})  # pylint: disable=exec-used
  config.evals.retrieval.every_epochs = 2
  workdir = str(tmp_path / "run")
  summary = train.train_and_evaluate(config, workdir)

  with open(os.path.join(workdir, "history.json")) as f:
    history = json.load(f)
  assert history == summary["history"]
  for entry in history:
    assert -1.0 <= entry["copy_cosine"] <= 1.0
  assert "retrieval_contain50_excl" not in history[0] and "retrieval_contain50_excl" in history[1]
  # Every metric of every epoch is in TensorBoard under its tag, at the epoch's step.
  scalars = read_scalars(os.path.join(workdir, "tensorboard"))
  tags = {hooks.history_key(tag): tag for tag in scalars}
  for entry in history:
    for key, value in entry.items():
      if key in ("epoch", "step"):
        continue
      assert key in tags, f"history key {key} has no TensorBoard tag"
      assert scalars[tags[key]][entry["step"]] == pytest.approx(value, rel=1e-6, abs=1e-7), key
  for tag in ("copy/cosine", "val/r5_excl_margin", "retrieval/contain50_excl", "train/loss"):
    assert tag in scalars, tag
  assert any(tag.startswith("train_step/") for tag in scalars)


def test_the_eval_cli_builds_the_retrieval_evaluator_from_the_checkpoints_config(eval_workdir,
                                                                                  tmp_path):
  """Gates set in the run's config.evals.retrieval apply unless a flag is given."""
  from lvm_jax.eval import __main__ as eval_cli  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  shutil.copytree(eval_workdir, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  config["evals"]["retrieval"].update(gate_contain50=0.0, gate_eff5=0.0, gate_r5=0.0,
                                      gate_p95=1e9)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  quick = ["--checkpoint", workdir, "--latency_queries", "5"]
  assert eval_cli.main(quick) == 0  # the untrained model passes the config's lax gates
  assert eval_cli.main(quick + ["--gate_r5", "1.0"]) == 1  # a given flag wins


def retrieval_from_settings(eval_workdir, **settings):
  """The config's retrieval evaluator on eval_workdir's data; its predict_fn is copy-last."""
  from lvm_jax.models.predict_fns import PredictFns  # pylint: disable=g-import-not-at-top
  data = os.path.join(eval_workdir, "data")
  settings = {"eval_path": os.path.join(data, "eval.npz"),
              "payload_path": os.path.join(data, "payload"), **settings}
  copy_last = PredictFns(predict=lambda params, contexts: contexts[:, -1], project=None)
  return retrieval.RetrievalEvaluation(copy_last, settings,
                                       evaluators.Context(config=tiny_config()))


def test_the_retrieval_evaluator_loads_once_and_runs_cheaply(eval_workdir, tmp_path):
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  evaluation = retrieval_from_settings(eval_workdir, k=60)
  first, second = dict(evaluation.run(None)), dict(evaluation.run(None))
  assert index_lib.index_kind(evaluation.evaluator().index) == "flat"  # choose_index_kind
  assert first == second and "latency_p95_ms" not in first  # no timing in the loop's defaults
  index_path = str(tmp_path / index_lib.INDEX_FILE)  # the corpus build writes no index
  payload = read_payload(os.path.join(eval_workdir, "data", "payload"))
  index_lib.write_index(index_lib.build_index(payload.vectors, kind="flat"), index_path)
  from_file = retrieval_from_settings(eval_workdir, index_path=index_path, limit=30)
  assert len(from_file.evaluator().contexts) == 30


def test_the_retrieval_evaluator_names_a_damaged_eval_set(eval_workdir, tmp_path):
  from lvm_jax.data.errors import DataFormatError  # pylint: disable=g-import-not-at-top
  with open(os.path.join(eval_workdir, "data", "eval.npz"), "rb") as f:
    damaged = bytearray(f.read())
  middle = len(damaged) // 2
  damaged[middle:middle + 16] = bytes(255 - b for b in damaged[middle:middle + 16])
  path = tmp_path / "crc.npz"
  path.write_bytes(bytes(damaged))
  with pytest.raises(DataFormatError, match=rf"{path}: field '\w+': is damaged and cannot be read"):
    retrieval_from_settings(eval_workdir, eval_path=str(path)).inputs()
