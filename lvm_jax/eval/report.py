"""The report: one-line summary, the table of rows, the gate table, the JSON."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

import numpy as np

TABLE_COLUMNS = ("R@1", "R@5", "R@10", "R@20", "Contain@20", "Contain@50", "Eff@5", "MRR",
                 "mean_cosine")
REFERENCE_KEYS = ("R@1", "R@5", "R@10", "R@20", "Contain@20", "Contain@50", "Eff@5")


def summary_line(result: Dict) -> str:
  g = result["gated"]
  return (f"[EVAL] Contain@20={g['Contain@20']:.4f} Contain@50={g['Contain@50']:.4f} "
          f"R@1={g['R@1']:.4f} R@5={g['R@5']:.4f} R@10={g['R@10']:.4f} Eff@5={g['Eff@5']:.4f} "
          f"P95={g['latency_p95_ms']:.3f}ms")


def rows_table(result: Dict) -> str:
  """Baselines and the model (and each reranker) as rows of one table, same queries and index."""
  header = "| row | " + " | ".join(TABLE_COLUMNS) + " |"
  lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
  for name, row in result["rows"].items():
    mark = " (article identity)" if row.get("uses_article_identity") else ""
    cells = " | ".join("-" if row.get(c) is None else f"{row[c]:.4f}" for c in TABLE_COLUMNS)
    lines.append(f"| {name}{mark} | {cells} |")
  return "\n".join(lines)


def gate_table(result: Dict, gates) -> str:
  thresholds = {"Contain@50": f">= {gates.contain50}", "Eff@5": f">= {gates.eff5}",
                "R@5": f">= {gates.r5}", "latency_p95_ms": f"<= {gates.p95_ms}"}
  lines = [f"| gate ({result['gated_row']}) | value | threshold | result |", "|---|---|---|---|"]
  for name, passed in result["gate_results"].items():
    lines.append(f"| {name} | {result['gated'][name]:.4f} | {thresholds[name]} | "
                 f"{'PASS' if passed else 'FAIL'} |")
  return "\n".join(lines)


def json_report(result: Dict, *, checkpoint: Optional[str], limit: Optional[int],
                val_cosine: Optional[float], knobs: Dict) -> Dict:
  """The reference tool's keys first, then ours."""
  gated = result["gated"]
  report = {"n_samples": result["n_samples"], **{k: gated[k] for k in REFERENCE_KEYS},
            **result["latency"], "checkpoint": checkpoint, "limit": limit,
            "val_cosine": val_cosine,
            "gates_passed": [k for k, v in result["gate_results"].items() if v],
            "gates_failed": [k for k, v in result["gate_results"].items() if not v],
            "retrieval_knobs": knobs,
            "MRR": gated["MRR"], "mean_cosine": gated["mean_cosine"],
            "gated_row": result["gated_row"], "batched_qps": gated["batched_qps"],
            "inference_ms_per_sequence": result["inference_ms_per_sequence"],
            **result["index_recall"], **result["alignment"],
            "provenance_mismatches": result["provenance_mismatches"],
            "rows": result["rows"]}
  return report


def val_cosine_of(workdir: Optional[str]) -> Optional[float]:
  """Best val_cosine in the training workdir's history.json, if there is one."""
  path = os.path.join(workdir, "history.json") if workdir else None
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    history: List[Dict] = json.load(f)
  values = [h["val_cosine"] for h in history if "val_cosine" in h]
  return float(max(values)) if values else None


def write_json(path: str, report: Dict) -> None:
  def default(value):
    if isinstance(value, (np.floating, np.integer)):
      return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")

  with open(path + ".tmp", "w") as f:
    json.dump(report, f, indent=2, default=default)
  os.replace(path + ".tmp", path)
