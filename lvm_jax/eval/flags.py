"""The eval CLI's flags: this project's spellings, the reference tool's as aliases, parsing.

`python -m lvm_jax.eval` takes the reference's tools/eval_checkpoint_unified.py command line
unchanged (docs/eval_reference.md); every alias is defined here, nowhere else.
"""

from __future__ import annotations

from typing import List

from absl import flags

from lvm_jax import backend, cli
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval.eval_inputs import GATES, VIEWS

DEVICE_BACKENDS = {"cpu": "cpu", "cuda": "gpu", "mps": "metal"}  # reference --device -> --backend


def define_flags(values: flags.FlagValues) -> None:
  """This project's flags, and the reference's spellings as aliases where they differ."""
  d = dict(flag_values=values)
  cli.define_checkpoint_flag(values)
  flags.DEFINE_string("eval_npz", None, "Eval NPZ (contexts, targets, truth_keys, provenance); "
                      "default: <workdir>/data/eval.npz.", **d)
  flags.DEFINE_string("payload", None, "Payload directory, or the reference's pickled .npy "
                      "(with --trust_pickle: converted once, then reused); default: "
                      "<workdir>/data/payload.", **d)
  flags.DEFINE_bool("trust_pickle", False, "Allow converting a pickled .npy --payload (reading "
                    "it runs pickle, which can execute code).", **d)
  flags.DEFINE_string("train", None, "Train windows (compact *_rows.npz over the payload, or a "
                      "full set) that the recency and linear baselines are fitted on; default: "
                      "the checkpoint config's data.train_path (or the synthetic corpus's). "
                      "Never the eval windows.", **d)
  flags.DEFINE_string("payload_cache", None, "Directory for converted .npy payloads (default: "
                      "beside the .npy).", **d)
  flags.DEFINE_string("faiss", None, "FAISS index of the payload; built when absent.", **d)
  flags.DEFINE_enum("index_kind", index_lib.AUTO, (index_lib.AUTO,) + index_lib.INDEX_KINDS,
                    "Kind built when --faiss is absent; auto: retrieval.index.choose_index_kind "
                    "(Flat below 50k rows).", **d)
  flags.DEFINE_integer("nlist", None, "IVF cells when building (default ≈ 4·√M).", **d)
  flags.DEFINE_integer("limit", 1000, "Evaluate the first N sequences (the reference's default "
                       "1000); 0: every sequence.", **d)
  flags.DEFINE_integer("nprobe", None, "IVF cells scanned a query; default: the index's own, "
                       "set when built (retrieval.index.KIND_NPROBE: 64 for ivf_flat as the "
                       "reference).", **d)
  flags.DEFINE_integer("k", 50, "Candidates a query (at least 50: Contain@50 is gated).", **d)
  flags.DEFINE_integer("latency_queries", 1000, "Queries timed one at a time on one thread.", **d)
  flags.DEFINE_enum("gate_view", "all", VIEWS, "The view the [EVAL] line, the reference keys and "
                    "the gates use: all candidates (as the reference) or context excluded.", **d)
  flags.DEFINE_bool("exclude_context", False, "Same as --gate_view=excl.", **d)
  flags.DEFINE_float("mmr_lambda", 0.7, "MMR reranker row, λ in [0, 1]; 1 turns it off.", **d)
  flags.DEFINE_alias("rerank-mmr", "mmr_lambda", flag_values=values)
  flags.DEFINE_float("w_same_article", 0.05, "Same-article bias row weight; 0 turns it off.", **d)
  flags.DEFINE_alias("seq-bias-same", "w_same_article", flag_values=values)
  flags.DEFINE_float("w_next_gap", 0.12, "Next-gap bias row weight; 0 turns it off.", **d)
  flags.DEFINE_alias("seq-bias-gap", "w_next_gap", flag_values=values)
  flags.DEFINE_float("w_directional", 0.03, "Directional bonus row weight; 0 turns it off.", **d)
  flags.DEFINE_alias("directional", "w_directional", flag_values=values)
  flags.DEFINE_enum("shard_assist", "false", ["true", "false"], "The reference's shard-assist "
                    "knob: recorded; `true` is refused (not available here).", **d)
  flags.DEFINE_string("gate_row", "model", "The row the gates judge.", **d)
  flags.DEFINE_bool("gate_article_rerankers", False, "Allow gating on a row that uses the "
                    "query's article identity.", **d)
  flags.DEFINE_bool("allow_provenance_mismatch", False, "Evaluate although embedder_id / norm / "
                    "metric disagree.", **d)
  for number, gate in enumerate(GATES):  # the first flag's help speaks for all of them
    when = ("; every gate is judged only when its flag is given (defaults: the reference's)."
            if number == 0 else ", judged when given.")
    flags.DEFINE_float(gate.knob, gate.default,
                       f"{gate.title or gate.label} gate ({gate.unit}){when}", **d)
  flags.DEFINE_string("out", None, "Write the JSON report here (the reference's keys and units, "
                      "this project's content under 'lvm_jax').", **d)
  flags.DEFINE_integer("epoch", None, "Epoch number, recorded in the report (as the reference).",
                       **d)
  flags.DEFINE_enum("device", None, list(DEVICE_BACKENDS), "The reference's device: cpu, cuda "
                    "(= --backend gpu) or mps (= --backend metal).", **d)
  flags.DEFINE_enum("backend", "auto", list(backend.PLATFORMS), "JAX backend.", **d)
  flags.DEFINE_bool("verbose", False, "Show the traceback of an error.", **d)
  flags.DEFINE_string("reranker", "auto", "Learned shortlist reranker (a reranker.json from "
                      "python -m lvm_jax.eval.fit_reranker): auto uses <workdir>/reranker.json "
                      "when it exists (with an untrained pick of lvm_jax.adapt, the pick's own "
                      "reranker, if adapt kept one), none turns it off, or give a path. With "
                      "one, the model row "
                      "is the predictor plus that second stage.", **d)
  flags.DEFINE_enum("predictor", "auto", ["auto", "learned"], "What the model row judges: auto "
                    "follows <workdir>/adapt_choice.json (python -m lvm_jax.adapt's pick) when "
                    "there, else the learned system; learned: the model (and its reranker).", **d)
  # The reference tool's spellings, kept as aliases (docs/eval_reference.md).
  flags.DEFINE_alias("eval-npz", "eval_npz", flag_values=values)
  flags.DEFINE_alias("payload-cache", "payload_cache", flag_values=values)
  flags.DEFINE_alias("index-kind", "index_kind", flag_values=values)
  flags.DEFINE_alias("latency-queries", "latency_queries", flag_values=values)
  flags.DEFINE_alias("gate-view", "gate_view", flag_values=values)
  flags.DEFINE_alias("exclude-context", "exclude_context", flag_values=values)
  flags.DEFINE_alias("mmr-lambda", "mmr_lambda", flag_values=values)
  flags.DEFINE_alias("w-same-article", "w_same_article", flag_values=values)
  flags.DEFINE_alias("w-next-gap", "w_next_gap", flag_values=values)
  flags.DEFINE_alias("w-directional", "w_directional", flag_values=values)
  flags.DEFINE_alias("shard-assist", "shard_assist", flag_values=values)
  flags.DEFINE_alias("gate-row", "gate_row", flag_values=values)
  flags.DEFINE_alias("gate-article-rerankers", "gate_article_rerankers", flag_values=values)
  flags.DEFINE_alias("allow-provenance-mismatch", "allow_provenance_mismatch", flag_values=values)
  for gate in GATES:
    flags.DEFINE_alias(gate.knob.replace("_", "-"), gate.knob, flag_values=values)
  flags.DEFINE_alias("trust-pickle", "trust_pickle", flag_values=values)


def parse_flags(argv: List[str]) -> flags.FlagValues:
  """argv without the program name -> parsed flags; raises flags.Error on bad flags."""
  values = flags.FlagValues()
  define_flags(values)
  full_argv = ["lvm_jax.eval"] + list(argv)
  try:
    leftover = values(full_argv)
  except flags.Error as error:
    raise flags.Error(cli.flag_error_message(error, full_argv, values)) from error
  if len(leftover) > 1:
    raise flags.Error(f"unexpected arguments {leftover[1:]} (every input is a --flag)")
  if values.checkpoint is None:
    raise flags.Error("--checkpoint is required (the training workdir or checkpoint directory)")
  return values


def platform_of(f) -> str:
  """--device (the reference's) or --backend -> the platform backend.initialize takes."""
  if f.device is None:
    return f.backend
  mapped = DEVICE_BACKENDS[f.device]
  if f["backend"].present and f.backend != mapped:
    raise ValueError(f"--device {f.device} means --backend {mapped}, but --backend {f.backend} "
                     "was given too; pass one of them.")
  return mapped
