"""What the reference's tools/eval_checkpoint_unified.py printed and wrote, from our results.

The reference's JSON holds R@k, Contain@K and Eff@5 in percent (100 · hits / n),
with Eff@5 = 100 · hits@5 / contained@50; its [EVAL] line prints the same as
fractions with three decimals. Both are rebuilt here from the gated row so that
a consumer of the reference's output reads ours unchanged; this project's own
content goes under the key REPORT_KEY. Also: the reference's pickled payload
converted once and cached (`resolve_payload`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from typing import Any, Dict, Optional

from absl import logging

from lvm_jax.corpus.legacy import convert_reference_payload
from lvm_jax.data.payload import PROVENANCE_FILE
from lvm_jax.data.errors import data_error
from lvm_jax.retrieval.eval_inputs import GATES

REPORT_KEY = "lvm_jax"
PERCENT_KEYS = ("R@1", "R@5", "R@10", "R@20", "Contain@20", "Contain@50")
LATENCY_KEYS = ("latency_mean_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")
# The reference's reranker knobs: its flag, its JSON name in retrieval_knobs, its default.
KNOBS = (("rerank-mmr", "mmr_lambda", 0.7), ("seq-bias-same", "seq_bias_same", 0.05),
         ("seq-bias-gap", "seq_bias_gap", 0.12), ("directional", "directional", 0.03))
CONVERTED_SUFFIX = ".lvm_payload"


def _hits(fraction: float, n: int) -> int:
  """The hit count behind a fraction of n (fractions here are exact means of n booleans)."""
  return int(round(fraction * n))


def percent_metrics(row: Dict[str, float], n: int) -> Dict[str, float]:
  """The reference's percent keys, computed as it did: 100 * hits / n."""
  out = {key: 100 * _hits(row[key], n) / n for key in PERCENT_KEYS}
  contained = _hits(row["Contain@50"], n)
  out["Eff@5"] = 100 * _hits(row["R@5"], n) / contained if contained > 0 else 0.0
  return out


def gate_lines(percent: Dict[str, float], latency: Dict[str, float],
               gates) -> Dict[str, list]:
  """The reference's gates_passed / gates_failed strings, a gate a line in GATES' order: a
  fraction gate in percent, a timed one in ms (`latency`: the LATENCY_KEYS)."""
  passed, failed = [], []
  for gate in GATES:
    threshold = gates.thresholds[gate.metric]
    if gate.unit == "ms":
      value = latency[gate.metric]
      ok = gate.passes(value, threshold)
      shown, limit = f"{value:.2f}ms", f"{threshold:.2f}ms"
    else:
      value = percent[gate.metric]
      ok = gate.passes(value / 100, threshold)
      shown, limit = f"{value:.1f}%", f"{100 * threshold:.0f}%"
    relation = ("≤" if ok else ">") if gate.at_most else ("≥" if ok else "<")
    line = f"{gate.label}: {shown} {relation} {limit}"
    (passed if ok else failed).append(f"✅ {line}" if ok else f"❌ {line}")
  return {"gates_passed": passed, "gates_failed": failed}


def eval_line(row: Dict[str, float], n: int, p95_ms: float, alignment: Dict[str, float],
              tag: str = "EVAL") -> str:
  """The reference's one-line summary (fractions, three decimals, P95 in ms)."""
  percent = percent_metrics(row, n)
  f = {key: value / 100 for key, value in percent.items()}
  return (f"[{tag}] Contain@20={f['Contain@20']:.3f} Contain@50={f['Contain@50']:.3f} "
          f"R@1={f['R@1']:.3f} R@5={f['R@5']:.3f} R@10={f['R@10']:.3f} "
          f"Eff@5={f['Eff@5']:.3f} P95={p95_ms:.2f}ms  "
          f"truth→payload_cos(mean={alignment['alignment_mean']:.3f}, "
          f"p5={alignment['alignment_p5']:.3f})")


def reference_report(result: Dict[str, Any], *, checkpoint: str, epoch: Optional[int],
                     limit: Optional[int], val_cosine: Optional[float], knobs: Dict[str, Any],
                     gates, ours: Dict[str, Any]) -> Dict[str, Any]:
  """The reference's JSON, key for key and in its order, then REPORT_KEY: ours.

  val_cosine is the checkpoint's best validation cosine; the reference wrote 0.0 when
  unknown, and so does this key (ours holds null then).
  """
  n, gated = result["n_samples"], result["gated"]
  percent = percent_metrics(gated, n)
  report = {"n_samples": n, **{key: percent[key] for key in ("R@1", "R@5", "R@10", "R@20",
                                                              "Contain@20", "Contain@50", "Eff@5")},
            **{key: result["latency"][key] for key in LATENCY_KEYS},
            "checkpoint": str(pathlib.Path(checkpoint)), "epoch": epoch, "limit": limit,
            "val_cosine": float(val_cosine or 0.0),
            "val_cosine_pred_target": float(gated["mean_cosine"]),
            "truth_payload_cos_mean": float(result["alignment"]["alignment_mean"]),
            "truth_payload_cos_p5": float(result["alignment"]["alignment_p5"]),
            **gate_lines(percent, result["latency"], gates),
            "retrieval_knobs": knobs, REPORT_KEY: ours}
  return report


# ------------------------------------------------------------------ the reference's payload file


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def converted_path(npy_path: str, cache_dir: Optional[str]) -> str:
  """Where the converted payload of `npy_path` lives: beside it, or under cache_dir."""
  name = pathlib.Path(npy_path).stem + CONVERTED_SUFFIX
  return os.path.join(cache_dir, name) if cache_dir else os.path.join(
      os.path.dirname(os.path.abspath(npy_path)), name)


def resolve_payload(path: str, *, trust_pickle: bool, cache_dir: Optional[str] = None) -> str:
  """A payload directory for `path`: itself, or for the reference's pickled .npy its converted
  copy (made once behind trust_pickle, reused while the .npy's SHA-256 is unchanged)."""
  if not (os.path.isfile(path) and path.endswith(".npy")):
    return path
  target = converted_path(path, cache_dir)
  source_hash = _sha256(path)
  provenance_file = os.path.join(target, PROVENANCE_FILE)
  if os.path.exists(provenance_file):
    with open(provenance_file, encoding="utf-8") as f:
      try:
        cached_hash = json.load(f).get("source_hash")
      except json.JSONDecodeError:
        cached_hash = None
    if cached_hash == source_hash:
      logging.info("Using %s, converted earlier from %s", target, path)
      return target
    logging.warning("%s was converted from another version of %s: converting again", target, path)
  if not trust_pickle:
    raise data_error(path, "(file)", "is the reference's pickled payload; reading it runs pickle, "
                     "which can execute code", "if you trust the file, add --trust_pickle: it is "
                     f"converted once into {target} and reused (or convert it yourself with "
                     f"python -m lvm_jax.corpus.legacy --src {path} --dst DIR --trust_pickle)")
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  if not os.access(parent, os.W_OK):
    raise data_error(path, "(file)", f"cannot be converted beside itself: {parent} is not "
                     "writable", "pass --payload-cache DIR, a writable directory")
  convert_reference_payload(path, target, trust_pickle=True)  # logs the one line
  return target
