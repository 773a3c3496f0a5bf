"""Judge a checkpoint by FAISS retrieval of the true next chunk from the whole payload.

  python -m lvm_jax.eval --checkpoint runs/s_tiny --out runs/s_tiny/eval.json

A drop-in for the reference's tools/eval_checkpoint_unified.py: its flags (with
their spellings and defaults), its JSON keys and units, and its [EVAL] line;
see docs/eval_reference.md. With a workdir trained on the synthetic corpus,
--eval_npz, --payload and --faiss default to its data/ directory. Every run
reports two views: all candidates, and the window's own context chunks
excluded; the [EVAL] line and the gates use --gate_view's (default: all, as
the reference), a second [EVAL-excl] / [EVAL-all] line the other.
It runs the same evaluator as training (lvm_jax.evaluators.retrieval), built
from the checkpoint's config.evals.retrieval plus these flags: a flag that is
given wins; the index kind, the gates and the eval set, payload and index paths
otherwise come from that config when it sets them, and every other knob is the
flag's (the reference's) default, so the same command gives the same numbers.
Gates are judged only when asked for (a --gate_* flag, or the checkpoint config's
evals.retrieval.gate_*); the reference's own command passes its four. Exit code: 0
when every gate asked for passes (or none is asked for), 1 when one fails, 2 on
bad input (one `error:` line; --verbose adds the traceback).
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Dict, List, Optional

import numpy as np
from absl import flags, logging

from lvm_jax import backend, cli
from lvm_jax.eval import reference
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import margin as margin_lib
from lvm_jax.retrieval.eval_inputs import VIEWS, Gates

BATCH_SIZE = 1024
DEVICE_BACKENDS = {"cpu": "cpu", "cuda": "gpu", "mps": "metal"}  # reference --device -> --backend


def define_flags(values: flags.FlagValues) -> None:
  """This project's flags, and the reference's spellings as aliases where they differ."""
  d = dict(flag_values=values)
  flags.DEFINE_string("checkpoint", None, "Training workdir or checkpoint directory.", **d)
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
  flags.DEFINE_float("gate_contain50", Gates.contain50, "Contain@50 gate (fraction); every "
                    "gate is judged only when its flag is given (defaults: the reference's).", **d)
  flags.DEFINE_float("gate_eff5", Gates.eff5, "Eff@5 gate (fraction), judged when given.", **d)
  flags.DEFINE_float("gate_r5", Gates.r5, "R@5 gate (fraction), judged when given.", **d)
  flags.DEFINE_float("gate_p95", Gates.p95_ms, "P95 per-query latency gate (ms), judged when "
                     "given.", **d)
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
                      "when it exists, none turns it off, or give a path. With one, the model row "
                      "is the predictor plus that second stage.", **d)
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
  flags.DEFINE_alias("gate-contain50", "gate_contain50", flag_values=values)
  flags.DEFINE_alias("gate-eff5", "gate_eff5", flag_values=values)
  flags.DEFINE_alias("gate-r5", "gate_r5", flag_values=values)
  flags.DEFINE_alias("gate-p95", "gate_p95", flag_values=values)
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


def help_text() -> str:
  values = flags.FlagValues()
  define_flags(values)
  return __doc__ + "\nflags:\n" + values.get_help(include_special_flags=False)


def _platform(f) -> str:
  if f.device is None:
    return f.backend
  mapped = DEVICE_BACKENDS[f.device]
  if f["backend"].present and f.backend != mapped:
    raise ValueError(f"--device {f.device} means --backend {mapped}, but --backend {f.backend} "
                     "was given too; pass one of them.")
  return mapped


# Knobs a checkpoint's config.evals.retrieval supplies when their flag is not given.
CONFIG_KNOBS = ("index_kind", "gate_contain50", "gate_eff5", "gate_r5", "gate_p95")
# --gate_* flag -> the gate it sets (the names of Gates.check).
GATE_FLAGS = {"gate_contain50": "Contain@50", "gate_eff5": "Eff@5", "gate_r5": "R@5",
              "gate_p95": "latency_p95_ms"}


def asked_gates(f, stored) -> List[str]:
  """The gates judged: those whose --gate_* flag is given or the checkpoint's config sets. None
  by default, so a plain evaluation reports and exits 0; the reference's own command passes its
  four gates."""
  return [gate for flag, gate in GATE_FLAGS.items()
          if f[flag].present or stored.get(flag) is not None]


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
  if f.limit < 0:
    raise ValueError(f"--limit {f.limit}: must be at least 1, or 0 for every sequence.")
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


def train_windows_path(f, loaded) -> Optional[str]:
  """--train, else the run's own train set (config.data.train_path, or the synthetic
  corpus's <workdir>/data/train_rows.npz); None when there is none on disk."""
  if f.train:
    if not os.path.exists(f.train):
      raise FileNotFoundError(f"--train {f.train}: does not exist; pass the train set the model "
                              "was trained on (a *_rows.npz from python -m lvm_jax.corpus.build).")
    return f.train
  data = loaded.config.get("data", {})
  path = data.get("train_path") or os.path.join(loaded.workdir or "", "data",
                                                "train_rows.npz")
  return path if os.path.exists(path) else None


def fit_train_baselines(f, loaded, payload):
  """recency and linear fitted on the run's train windows; None (said in one line) when they
  cannot be found: then they are fitted on nothing, never on the eval windows."""
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import baselines  # pylint: disable=g-import-not-at-top
  path = train_windows_path(f, loaded)
  if path is None:
    print("recency and linear baselines: no train windows found (checkpoint config "
          "data.train_path, synthetic data/train_rows.npz, or --train): not fitted, rows omitted")
    return None
  train_payload_path = loaded.config.get("data", {}).get("payload_path") if not f.train else None
  if train_payload_path and os.path.exists(train_payload_path) and (
      os.path.abspath(train_payload_path) != os.path.abspath(payload.source)):
    from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
    payload = read_payload(train_payload_path, load_texts=False)  # the one its rows index
  logging.info("Fitting the recency and linear baselines on the train windows %s", path)
  return baselines.fit_baselines_on_set(read_sequence_set(path, payload=payload))


def reranker_path(choice: str, workdir: Optional[str]) -> Optional[str]:
  """--reranker: "auto" (<workdir>/reranker.json if present), "none", or a path."""
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  if choice == "none":
    return None
  path = os.path.join(workdir or "", learned_rerank.FILE_NAME) if choice == "auto" else choice
  if choice == "auto" and not os.path.exists(path):
    return None
  if not os.path.exists(path):
    raise FileNotFoundError(f"--reranker {path}: does not exist; fit one with python -m "
                            "lvm_jax.eval.fit_reranker, or pass --reranker none.")
  return path


def evaluate(f) -> int:
  """The run behind main(); raises on bad input."""
  backend.initialize(_platform(f))
  from lvm_jax import checkpoint, evaluators  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  from lvm_jax.data.errors import DataFormatError  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import report  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predict_fns  # pylint: disable=g-import-not-at-top

  if not os.path.exists(f.checkpoint):
    raise checkpoint.CheckpointError(f"{f.checkpoint}: does not exist; pass the training "
                                     "workdir (the directory given to --workdir).")
  loaded = checkpoint.load(f.checkpoint)
  stored = stored_settings(loaded)
  eval_npz, payload_path, faiss_path = default_paths(f, loaded.workdir, stored)
  payload_path = reference.resolve_payload(payload_path, trust_pickle=f.trust_pickle,
                                           cache_dir=f.payload_cache)
  settings = retrieval_settings(f, stored, (eval_npz, payload_path, faiss_path))
  fns = predict_fns.from_apply_fn(loaded.model.apply)
  evaluation = evaluators.kind("retrieval")(fns, settings, evaluators.Context(
      config=loaded.config, fitted=lambda payload: fit_train_baselines(f, loaded, payload)))
  _, eval_set = evaluation.inputs()
  if eval_set.vector_dim != loaded.model.vector_dim:
    raise DataFormatError(f"{eval_npz}: field 'contexts': vectors are {eval_set.vector_dim}-d "
                          f"but the checkpoint {loaded.path} predicts "
                          f"{loaded.model.vector_dim}-d vectors. Fix: evaluate with the data "
                          "the model was trained for.")
  count = eval_set.num_sequences if not f.limit else min(f.limit, eval_set.num_sequences)
  # Read by evaluator() below, which builds the options once: no bigger batch than windows.
  settings.update(batch_size=max(1, min(BATCH_SIZE, count)),
                  reranker_path=reranker_path(f.reranker, loaded.workdir))
  evaluator = evaluation.evaluator()
  options, index, reranker = evaluator.options, evaluator.index, evaluation.reranker()
  if reranker is not None:
    print(f"reranker: {settings['reranker_path']} ({reranker.depth} candidates reordered; "
          "--reranker none turns it off)")
  fns.predict(loaded.params, np.zeros((options.batch_size,) + eval_set.contexts.shape[1:],
                                      np.float32))  # compiled outside the timed run
  dict(evaluation.run(loaded.params))  # the loop's scalars; the CLI prints the full report
  result = evaluation.last_report

  n, p95 = result["n_samples"], result["latency"]["latency_p95_ms"]
  other = [v for v in VIEWS if v != result["gate_view"]][0]
  print(reference.eval_line(result["gated"], n, p95, result["alignment"]))
  print(reference.eval_line(result["views"][other][options.gate_row], n, p95,
                            result["alignment"], tag=f"EVAL-{other}"))
  for view in (result["gate_view"], other):  # the [EVAL] line itself stays the reference's
    print(f"[EVAL-margin-{view}] " + margin_lib.compact(result["margin"][view]))
  print(report.views_tables(result))
  if any(r.get("uses_article_identity") for r in result["rows"].values()):
    print("Rows marked (article identity) know the query's article: continuation within a "
          "known article, not open retrieval.")
  print(f"index recall vs Flat: {result['index_recall']}; batched "
        f"{result['gated']['batched_qps']:.0f} queries/s; model "
        f"{result['inference_ms_per_sequence']:.4f} ms/sequence; per-query latency "
        + ", ".join(f"{k}={v:.3f}" for k, v in result["latency"].items()))
  asked = asked_gates(f, stored)
  print(report.gate_table(result, options.gates, asked))
  if f.out:
    nprobe = index_lib.search_knobs(index).get("nprobe")  # the one searched with
    knobs = {"nprobe": nprobe, **{name: f[flag].value for flag, name, _ in reference.KNOBS},
             "shard_assist": f.shard_assist}
    val_cosine = report.val_cosine_of(loaded.workdir)
    ours = report.our_section(result, checkpoint=loaded.path, val_cosine=val_cosine, options={
        "index": index_lib.index_kind(index), "index_path": faiss_path, "nprobe": nprobe,
        "k": f.k, "limit": options.limit, "latency_queries": options.latency_queries,
        "eval_npz": eval_npz, "payload": payload_path, "mmr_lambda": options.mmr_lambda,
        "w_same_article": options.w_same_article, "w_next_gap": options.w_next_gap,
        "w_directional": options.w_directional, "backend": backend.current_platform(),
        "reranker": None if reranker is None else reranker.to_json()})
    report.write_json(f.out, reference.reference_report(
        result, checkpoint=f.checkpoint, epoch=f.epoch, limit=f.limit, val_cosine=val_cosine,
        knobs=knobs, gates=options.gates, ours=ours))
    print(f"wrote {f.out}")
  return 0 if all(passed for gate, passed in result["gate_results"].items() if gate in asked) else 1


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--help" in argv or "-h" in argv or "--helpfull" in argv:
    print(help_text())
    return 0
  try:
    f = parse_flags(argv)
  except flags.Error as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.INFO)
  try:
    return evaluate(f)
  except Exception as error:  # pylint: disable=broad-except
    # Every failure here is bad input (data, index, checkpoint, flags), exit 2, or the
    # machine (a full disk writing --out), exit 3; exit 1 means a gate.
    if f.verbose:
      traceback.print_exc()
    if isinstance(error, (ValueError, RuntimeError, OSError)):
      message = cli.message(error)
    else:
      message = f"{type(error).__name__}: {error} (--verbose shows the traceback)"
    print(f"error: {message}", file=sys.stderr)
    return cli.exit_status(error)


if __name__ == "__main__":
  sys.exit(main())
