"""The retrieval evaluator's settings for a checkpoint: its config.evals.retrieval, the flags
that override it, the default paths of its workdir, and the recency and linear baselines
fitted on its train windows (by retrieval.run_baselines, as in training).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval.eval_inputs import GATES

# Knobs a checkpoint's config.evals.retrieval supplies when their flag is not given.
CONFIG_KNOBS = ("index_kind",) + tuple(gate.knob for gate in GATES)


def asked_gates(f, stored) -> List[str]:
  """The gates judged: those whose --gate_* flag is given or the checkpoint's config sets. None
  by default, so a plain evaluation reports and exits 0; the reference's own command passes its
  four gates."""
  return [gate.metric for gate in GATES
          if f[gate.knob].present or stored.get(gate.knob) is not None]


def retrieval_settings(f, stored, paths) -> Dict[str, Any]:
  """The retrieval evaluator's settings: the checkpoint's config.evals.retrieval (`stored`)
  for CONFIG_KNOBS whose flag is absent, the flags for the rest; `paths` is
  (eval_npz, payload, faiss)."""
  if f.shard_assist == "true":
    raise ValueError("--shard_assist true: shard-assist is not available in this project (the "
                     "reference recorded the knob but never applied it); drop the flag or pass "
                     "--shard_assist false.")
  if f.latency_queries < 1:
    raise ValueError(f"--latency_queries {f.latency_queries}: must be at least 1, "
                     "because the P95 latency is gated.")
  weight = lambda name: None if f[name].value == 0 else f[name].value
  settings = {knob: stored[knob] if not f[knob].present and stored.get(knob) is not None
              else f[knob].value for knob in CONFIG_KNOBS}
  settings.update(
      type="retrieval", eval_path=paths[0], payload_path=paths[1], index_path=paths[2],
      nlist=f.nlist, k=f.k, nprobe=f.nprobe, limit=f.limit, latency_queries=f.latency_queries,
      index_recall=True, gate_view="excl" if f.exclude_context else f.gate_view,
      mmr_lambda=None if f.mmr_lambda == 1.0 else f.mmr_lambda,
      w_same_article=weight("w-same-article"), w_next_gap=weight("w-next-gap"),
      w_directional=weight("w-directional"), gate_row=f.gate_row,
      gate_article_rerankers=f.gate_article_rerankers,
      allow_provenance_mismatch=f.allow_provenance_mismatch)
  return settings


def stored_settings(loaded) -> Dict[str, Any]:
  """The checkpoint config's evals.retrieval ({} for a run from before config.evals)."""
  evals = loaded.config.get("evals") or {}
  return dict(evals.get("retrieval") or {})


def default_paths(f, workdir: str, stored: Dict[str, Any]):
  """--eval_npz / --payload / --faiss, else the config's evals.retrieval paths, else the
  workdir's data/ (the synthetic corpus)."""
  data_dir = os.path.join(workdir, "data")
  eval_npz = f.eval_npz or stored.get("eval_path") or os.path.join(data_dir, "eval.npz")
  payload = f.payload or stored.get("payload_path") or os.path.join(data_dir, "payload")
  faiss_path = f.faiss or (stored.get("index_path") if not f.payload else None) or None
  if faiss_path is None and not f.payload and not stored.get("payload_path") and os.path.exists(
      os.path.join(data_dir, index_lib.INDEX_FILE)):
    faiss_path = os.path.join(data_dir, index_lib.INDEX_FILE)
  return eval_npz, payload, faiss_path


def fit_train_baselines(f, loaded, payload):
  """recency and linear fitted on --train, else on the run's own train windows
  (retrieval.run_baselines, as the training loop fits them); None (said in one line) when they
  cannot be found: then they are fitted on nothing, never on the eval windows."""
  from lvm_jax.retrieval import run_baselines  # pylint: disable=g-import-not-at-top
  if f.train and not os.path.exists(f.train):
    raise FileNotFoundError(f"--train {f.train}: does not exist; pass the train set the model "
                            "was trained on (a *_rows.npz from python -m lvm_jax.corpus.build).")
  fitted = run_baselines.fit_for_run(loaded.config, os.path.join(loaded.workdir or "", "data"),
                                     payload, train_path=f.train or None)
  if fitted is None:
    print("recency and linear baselines: no train windows found (checkpoint config "
          "data.train_path, synthetic data/train_rows.npz, or --train): not fitted, rows omitted. "
          "The margins below are over copy-last and mean-of-context only, which the fitted "
          "recency average often beats. Fix: pass --train DATA/sets/train_rows.npz (windows over "
          "this payload, from python -m lvm_jax.corpus.build).")
  return fitted


def reranker_path(choice: str, workdir: Optional[str],
                  served: Optional[Mapping[str, Any]] = None) -> Optional[str]:
  """--reranker: "auto" (<workdir>/reranker.json if present), "none", or a path. With an
  untrained pick `served` (retrieval.choice), "auto" is the pick's own second stage, if any."""
  from lvm_jax.retrieval import choice as choice_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  if choice == "none":
    return None
  if served is not None and choice == "auto":
    return choice_lib.second_stage_path(served)
  path = os.path.join(workdir or "", learned_rerank.FILE_NAME) if choice == "auto" else choice
  if choice == "auto" and not os.path.exists(path):
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f"--reranker {path}: does not exist; fit one with python -m "
                            "lvm_jax.eval.fit_reranker, or pass --reranker none.")
  return path
