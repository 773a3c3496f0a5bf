"""adapt's verdict on val: the learned system beside every untrained row, the margins, a table.

The same judge as `python -m lvm_jax.eval` (retrieval.judge.RetrievalJudge) with the same
baselines (fitted on the train windows), over the val windows, with exact search: so the
margins that decide the choice are the ones eval would print for these windows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from lvm_jax.retrieval import choice

SHOWN = ("R@5", "Contain@50")
NOT_BASELINES = ("oracle", "model")  # rows of the report that are no untrained predictor


@dataclasses.dataclass
class Verdict:
  report: Dict[str, Any]  # the judge's report
  margins: Dict[str, Dict]  # {metric: interval}, view choice.VIEW
  scores: Dict[str, Dict[str, float]]  # {LEARNED | row: {metric: value}}, view choice.VIEW
  params: Dict[str, Dict[str, Any]]  # {row: its fitted parameters (recency: decay)}
  windows: int
  checkpoint: str


def judge(workdir: str, config, reranker, fitted) -> Verdict:
  """The run's best checkpoint plus `reranker`, judged on config.data.val_path beside the
  baselines `fitted` on config.data.train_path (baselines.fit_baselines_on_set)."""
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predict_fns  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.eval_inputs import EvalOptions  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval.judge import RetrievalJudge  # pylint: disable=g-import-not-at-top
  loaded = checkpoint.load(workdir)
  payload = read_payload(config.data.payload_path, load_texts=False)
  val = read_queries(config.data.val_path, payload)
  options = EvalOptions(latency_queries=0, index_recall=False,
                        batch_size=max(1, min(EvalOptions.batch_size, val.num_sequences)))
  evaluator = RetrievalJudge(val, payload, index_lib.build_index(payload.vectors, kind="flat"),
                             options, fitted=fitted)
  report = evaluator.report(predict_fns.predict_with(loaded.model.apply, loaded.params),
                            reranker=reranker)
  rows = report["views"][choice.VIEW]
  scores = {choice.LEARNED: {metric: rows["model"][metric] for metric in SHOWN}}
  params = {}
  for name, row in rows.items():
    if name not in NOT_BASELINES:
      scores[name] = {metric: row[metric] for metric in SHOWN}
      params[name] = {"decay": float(row["decay"])} if "decay" in row else {}
  return Verdict(report, report["margin"][choice.VIEW], scores, params,
                 int(report["n_samples"]), loaded.path)


def table(verdict: Verdict) -> str:
  """The margin table: each predictor's R@5 and Contain@50 on val, then the margin lines."""
  from lvm_jax.retrieval import margin as margin_lib  # pylint: disable=g-import-not-at-top
  lines = [f"val: {verdict.windows:,} windows, context excluded", "| predictor | R@5 | "
           "Contain@50 |", "|---|---|---|"]
  for name, values in verdict.scores.items():
    label = choice.describe({"predictor": name, "params": verdict.params.get(name),
                             "reranker": True})
    lines.append(f"| {label} | {values['R@5']:.4f} | {values['Contain@50']:.4f} |")
  lines.append(margin_lib.format_margin(verdict.margins, f"({choice.VIEW}, val)"))
  lines.append(margin_lib.format_margin(verdict.report["margin"]["all"], "(all, val)"))
  return "\n".join(lines)
