"""The predictor a workdir serves: the learned system, or the untrained row that beat it on val.

`python -m lvm_jax.adapt` judges the learned system (the model plus its reranker) beside the
untrained rows (retrieval.baselines) on the user's val windows, context excluded, and records
its pick in <workdir>/adapt_choice.json, so that `python -m lvm_jax.eval` and
`python -m lvm_jax.predict` serve the same one. The rule (RULE):

  the learned system, when its point margin over the best untrained row is >= 0 on both R@5
  and Contain@50 (each metric against its own best row, margin.margin_over_baselines);
  otherwise the best untrained row by Contain@50, followed by a reranker fitted on that row's
  own val shortlist (adapt.untrained_rerank) when, on the val articles it was not fitted on,
  the reranker raises both R@5 and Contain@50.

Point margins, not intervals: an interval that includes 0 says the two are close, and then
either is as good on average; asking the learned system for a significant win would hand a
user a predictor that is worse on average whenever val is small. Contain@50 decides the
fallback because it is what the learned system is chosen for in training (its best
checkpoint). Reading a choice needs only json; numpy only to predict with it.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np

from lvm_jax import atomic
from lvm_jax.retrieval import baselines

FILE_NAME = "adapt_choice.json"
SECOND_STAGE_FILE = "reranker_untrained.json"  # an untrained pick's reranker, beside FILE_NAME
FORMAT_VERSION = 1
LEARNED = "learned"  # the model plus its reranker, as `python -m lvm_jax.eval` judges it
VIEW = "excl"  # the window's own context chunks are no candidates
RULE_METRICS = ("R@5", "Contain@50")
DECIDING_METRIC = "Contain@50"
RULE = ("the learned system if its point margin over the best untrained predictor (each metric "
        "against its own best row) is >= 0 on both R@5 and Contain@50 on val, context excluded; "
        "otherwise the best untrained predictor by Contain@50, reranked by a reranker fitted on "
        "its val shortlist when that raises both on the val articles it was not fitted on")


def choose(margins: Mapping[str, Mapping[str, Any]]) -> str:
  """LEARNED or the best untrained row's name, by RULE; margins: {metric: {"margin",
  "baseline", ...}} of one view (margin.margin_over_baselines)."""
  missing = [metric for metric in RULE_METRICS if metric not in margins]
  if missing:
    raise ValueError(f"the choice needs the margins of {list(RULE_METRICS)}; {missing} absent.")
  if all(margins[metric]["margin"] >= 0 for metric in RULE_METRICS):
    return LEARNED
  return str(margins[DECIDING_METRIC]["baseline"])


def describe(record: Mapping[str, Any]) -> str:
  """'learned (model + reranker)' or 'recency (decay 0.3)'."""
  name, params = record["predictor"], record.get("params") or {}
  if name == LEARNED:
    return "learned (model + reranker)" if record.get("reranker") else "learned (model)"
  shown = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                    for key, value in params.items())
  second = " + reranker" if record.get("second_stage") else ""
  return f"{name} ({shown}){second}" if shown else f"{name}{second}"


def second_stage_path(record: Mapping[str, Any]) -> Optional[str]:
  """The reranker adapt kept for an untrained pick (field 'second_stage', a file beside the
  record), or None when it kept none."""
  name = record.get("second_stage")
  if not name:
    return None
  where = record.get("path", FILE_NAME)
  path = os.path.join(os.path.dirname(where), name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{where}: field 'second_stage' names {path}, which does not exist. "
                            "Fix: rerun python -m lvm_jax.adapt with this workdir, or pass "
                            "--predictor learned.")
  return path


def make_record(predictor: str, margins: Mapping[str, Mapping], scores: Mapping[str, Mapping],
                *, params: Optional[Mapping[str, Any]] = None, **facts: Any) -> Dict[str, Any]:
  """The JSON record: what was picked and with what parameters, the margins and row scores on
  val that decided it, the rule, when; `facts` adds context (val path, start, checkpoint)."""
  return {"format_version": FORMAT_VERSION, "predictor": predictor,
          "params": dict(params or {}), "rule": RULE, "view": VIEW,
          "margins": {metric: dict(values) for metric, values in margins.items()},
          "scores": {row: dict(values) for row, values in scores.items()},
          "chosen_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          **facts}


def path_in(workdir: str) -> str:
  return os.path.join(workdir, FILE_NAME)


def write(workdir: str, record: Mapping[str, Any]) -> str:
  path = path_in(workdir)
  atomic.write_json(path, dict(record))
  return path


def read(workdir: Optional[str]) -> Optional[Dict[str, Any]]:
  """The record in `workdir`, or None when there is none (a run not made by adapt)."""
  if not workdir or not os.path.exists(path_in(workdir)):
    return None
  path = path_in(workdir)
  fix = ("Fix: rerun python -m lvm_jax.adapt with this workdir, or delete the file to serve the "
         "learned system.")
  try:
    with open(path, encoding="utf-8") as handle:
      record = json.load(handle)
  except (OSError, ValueError) as error:
    raise ValueError(f"{path}: not a readable choice record ({error}). {fix}") from error
  if not isinstance(record, dict) or not isinstance(record.get("predictor"), str):
    raise ValueError(f"{path}: field 'predictor' is missing or not a string. {fix}")
  if record.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{path}: field 'format_version' is {record.get('format_version')!r}, this "
                     f"version reads {FORMAT_VERSION}. {fix}")
  record["path"] = path
  return record


def served(record: Optional[Mapping[str, Any]], override: str) -> Optional[Mapping[str, Any]]:
  """The record when it names an untrained predictor and `override` ("auto" or LEARNED, the
  --predictor flag) leaves it in charge; None: serve the learned system."""
  if record is None or override == LEARNED or record["predictor"] == LEARNED:
    return None
  return record


def predictor(record: Mapping[str, Any],
              fitted: Callable[[], Optional[baselines.FittedBaselines]]
              ) -> Callable[[np.ndarray], np.ndarray]:
  """contexts [n, L, dim] -> [n, dim] float32 of the recorded untrained row: the scoreboard's
  own function, so its numbers are that row's. recency takes its recorded decay; a row fitted
  otherwise is refitted on the run's train windows (`fitted()`, deterministic)."""
  name, params = record["predictor"], record.get("params") or {}
  rows = baselines.baseline_predictors(None)
  if name in rows:
    return rows[name]
  if name.startswith("recency") and "decay" in params:
    decay = float(params["decay"])
    return lambda contexts: np.asarray(baselines.recency(contexts, decay), np.float32)
  rows = baselines.baseline_predictors(fitted())
  if name not in rows:
    raise ValueError(f"{record.get('path', FILE_NAME)}: field 'predictor' is {name!r}, which "
                     f"needs the run's train windows (config data.train_path) or is no "
                     f"baseline row here ({', '.join(rows)}). Fix: make the train windows "
                     "reachable, or pass --predictor learned.")
  return rows[name]


def fitted_on_train(config) -> Optional[baselines.FittedBaselines]:
  """The baselines fitted on a run's train windows (config.data.train_path over its payload),
  as the loop and eval fit them; None when either is not on disk."""
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  data = config.get("data", {})
  train_path, payload_path = data.get("train_path"), data.get("payload_path")
  if not (train_path and payload_path and os.path.exists(train_path)
          and os.path.exists(payload_path)):
    return None
  payload = read_payload(payload_path, load_texts=False)
  return baselines.fit_baselines_on_set(read_sequence_set(train_path, payload=payload))


def as_predict_fns(record: Mapping[str, Any],
                   fitted: Callable[[], Optional[baselines.FittedBaselines]]):
  """models.predict_fns.PredictFns whose predict(params, contexts) ignores params and runs the
  recorded row (resolved on the first call, when `fitted()` can answer); it has no head."""
  from lvm_jax.models.predict_fns import PredictFns  # pylint: disable=g-import-not-at-top
  resolved = []

  def predict(params, contexts):
    del params
    if not resolved:
      resolved.append(predictor(record, fitted))
    return resolved[0](np.asarray(contexts, np.float32))

  def project(params, vectors):
    raise ValueError(f"{describe(record)} is an untrained predictor: it has no projection head.")

  return PredictFns(predict=predict, project=project)


def served_line(record: Mapping[str, Any], override: str = "auto") -> str:
  """The line eval and predict print for a workdir with a choice: what they serve and why."""
  where = record.get("path", FILE_NAME)
  if record["predictor"] == LEARNED:
    return (f"predictor: the learned system, chosen by lvm_jax.adapt on val over the best "
            f"untrained predictor (see {where})")
  if override == LEARNED:
    return (f"predictor: the learned system, as --predictor learned asks; lvm_jax.adapt chose "
            f"{describe(record)} on val (see {where})")
  return (f"predictor: {describe(record)}, chosen by lvm_jax.adapt on val over the learned "
          f"system (see {where}; --predictor learned serves the learned system)")
