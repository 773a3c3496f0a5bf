"""A second stage for adapt's untrained pick: the same reranker, fitted on that row's shortlist.

When the learned system loses on val, adapt falls back to the best untrained row (recency,
as a rule). The reranker's features come from vectors alone (the query's score, the
context, the candidate, the shortlist), so it fits just as well on the shortlist of the
recency average as on the model's. On three manuals it never saw, the shipped model's kind of
reranker over recency's own shortlist scored about as well as the whole learned system
(docs/results.md). It is kept only when, fitted on half of val's articles, it raises both R@5
and Contain@50 on the other half (context excluded): a user is then served the reranked row,
and else the row alone, never something worse than the row.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from lvm_jax.retrieval import choice


@dataclasses.dataclass
class SecondStage:
  kept: bool  # whether the reranker raised both metrics on the held-out val articles
  check: Dict[str, Dict[str, float]]  # fit_reranker's self-check, {view: figures}
  path: Optional[str]  # the file written when kept, choice.SECOND_STAGE_FILE in the workdir


def raises_both(figures: Mapping[str, float]) -> bool:
  """Whether the reranked shortlist is at least as good on R@5 and Contain@50, and better on
  one (the check figures of one view, fit_reranker.fit_and_check)."""
  before = (figures["R@5"], figures["Contain@50"])
  after = (figures["R@5 reranked"], figures["Contain@50 reranked"])
  return all(a >= b for a, b in zip(after, before)) and after != before


def fit(record: Mapping[str, Any], *, val_path: str, payload_path: str, fitted, workdir: str,
        depth: int = 100) -> SecondStage:
  """Fits a reranker on the untrained pick `record`'s val shortlist; writes it beside the
  choice record when raises_both holds on the view choice.VIEW of its self-check."""
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import fit_reranker  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, choice.SECOND_STAGE_FILE)  # adapt removed an earlier run's
  payload = read_payload(payload_path, load_texts=False)
  windows = read_queries(val_path, payload)
  predictions = choice.predictor(record, lambda: fitted)(np.asarray(windows.contexts, np.float32))
  decay = float((record.get("params") or {}).get("decay", fit_reranker.DEFAULT_DECAY))
  reranker, check = fit_reranker.fit_and_check(
      predictions, windows.contexts, windows.target_rows(payload), windows.truth_keys[:, 0],
      np.asarray(payload.vectors, np.float32), depth=depth, decay=decay, check_share=0.5,
      fitted_on={"windows": val_path, "predictor": choice.describe(record)})
  reranker.fitted_on["check"] = check
  kept = raises_both(check[choice.VIEW])
  if kept:
    learned_rerank.save(path, reranker)
  return SecondStage(kept, check, path if kept else None)


def lines(stage: SecondStage, record: Mapping[str, Any]) -> List[str]:
  """The self-check and the verdict, as adapt prints them."""
  from lvm_jax.eval import fit_reranker  # pylint: disable=g-import-not-at-top
  shown = [f"  {line}" for line in fit_reranker.check_lines(stage.check)]
  if stage.kept:
    shown.append(f"  kept: it raises both on held-out val articles ({choice.VIEW}); wrote "
                 f"{stage.path}")
  else:
    shown.append(f"  not kept: it does not raise both R@5 and Contain@50 on held-out val "
                 f"articles ({choice.VIEW}); {choice.describe(record)} is served alone")
  return shown
