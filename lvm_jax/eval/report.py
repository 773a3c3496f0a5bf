"""The report: the table of rows per view, the gate table, this project's JSON section.

The reference's own JSON and [EVAL] line are rebuilt in eval/reference.py; what
is here is this project's richer content, in fractions (0..1).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from lvm_jax import atomic
from lvm_jax.workdir import Workdir
from lvm_jax.retrieval import baselines
from lvm_jax.retrieval import margin as margin_lib
from lvm_jax.retrieval.eval_inputs import GATES, VIEW_TITLES, VIEWS

TABLE_COLUMNS = ("R@1", "R@5", "R@10", "R@20", "Contain@20", "Contain@50", "Eff@5", "MRR",
                 "mean_cosine")
FORMAT = "lvm_jax eval report 2"


def rows_table(rows: Dict[str, Dict]) -> str:
  """Baselines and the model (and each reranker) as rows of one table, same queries and index."""
  header = "| row | " + " | ".join(TABLE_COLUMNS) + " |"
  lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
  for name, row in rows.items():
    mark = " (article identity)" if row.get("uses_article_identity") else ""
    cells = " | ".join("-" if row.get(c) is None else f"{row[c]:.4f}" for c in TABLE_COLUMNS)
    lines.append(f"| {baselines.row_label(name, row)}{mark} | {cells} |")
  return "\n".join(lines)


def views_tables(result: Dict) -> str:
  """One table per view, the gated view first."""
  order = [result["gate_view"]] + [v for v in VIEWS if v != result["gate_view"]]
  parts = []
  for view in order:
    gated = " (gated)" if view == result["gate_view"] else ""
    parts.append(f"{view}: {VIEW_TITLES[view]}{gated}\n{rows_table(result['views'][view])}")
    if "margin" in result:
      parts[-1] += "\n" + margin_lib.format_margin(result["margin"][view], label=f"({view})")
  return "\n\n".join(parts)


def gate_table(result: Dict, gates, asked) -> str:
  """The gates asked for (`asked`: GATES' metrics, e.g. "R@5"), or one line saying none was."""
  if not asked:
    return ("gates: none asked for, so none judged (exit 0). The reference's: "
            + " ".join(f"--{gate.knob} {gate.default}" for gate in GATES)
            + " (docs/eval_reference.md).")
  thresholds = {gate.metric: f"{'<=' if gate.at_most else '>='} {gates.thresholds[gate.metric]}"
                for gate in GATES}
  lines = [f"| gate ({result['gated_row']}, {result['gate_view']}) | value | threshold | result |",
           "|---|---|---|---|"]
  for name, passed in result["gate_results"].items():
    if name in asked:
      lines.append(f"| {name} | {result['gated'][name]:.4f} | {thresholds[name]} | "
                   f"{'PASS' if passed else 'FAIL'} |")
  return "\n".join(lines)


def our_section(result: Dict, *, checkpoint: Optional[str], val_cosine: Optional[float],
                options: Dict[str, Any]) -> Dict[str, Any]:
  """This project's content: both views' rows, the gated row, checks, in fractions."""
  return {"format": FORMAT, "units": "fractions (0..1); the reference keys above are percent",
          "checkpoint_path": checkpoint, "val_cosine": val_cosine,
          "gate_view": result["gate_view"], "gated_row": result["gated_row"],
          "gated": result["gated"], "gate_results": result["gate_results"],
          "views": result["views"], "margin": result["margin"],
          "fitted_baselines": result["fitted_baselines"], "latency": result["latency"],
          "index_recall": result["index_recall"],
          "inference_ms_per_sequence": result["inference_ms_per_sequence"],
          "alignment": result["alignment"],
          "provenance_mismatches": result["provenance_mismatches"], "options": options}


def val_cosine_of(workdir: Optional[str]) -> Optional[float]:
  """Best val_cosine in the training workdir's history.json, if there is one."""
  path = Workdir(workdir).history if workdir else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    history: List[Dict] = json.load(f)
  values = [h["val_cosine"] for h in history if "val_cosine" in h]
  return float(max(values)) if values else None


def write_json(path: str, report: Dict) -> None:
  """Indented like the reference's (json.dump, indent=2); written beside, then renamed."""
  def default(value):
    if isinstance(value, (np.floating, np.integer)):
      return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")

  with atomic.atomic_open(path, "w") as f:
    json.dump(report, f, indent=2, default=default)
