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
from typing import List, Optional

import numpy as np
from absl import flags, logging

from lvm_jax import backend, cli
from lvm_jax.eval import flags as eval_flags
from lvm_jax.eval import reference
from lvm_jax.eval import settings as eval_settings
from lvm_jax.retrieval import choice
from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import margin as margin_lib
from lvm_jax.retrieval.eval_inputs import VIEWS

BATCH_SIZE = 1024  # contexts a predict call at most (fewer when fewer windows are evaluated)


def help_text() -> str:
  values = flags.FlagValues()
  eval_flags.define_flags(values)
  return __doc__ + "\nflags:\n" + values.get_help(include_special_flags=False)


def evaluate(f) -> int:
  """The run behind main(); raises on bad input."""
  backend.initialize(eval_flags.platform_of(f))
  from lvm_jax import checkpoint, evaluators  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  from lvm_jax.data.errors import DataFormatError  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import report  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predict_fns  # pylint: disable=g-import-not-at-top

  if not os.path.exists(f.checkpoint):
    raise checkpoint.CheckpointError(f"{f.checkpoint}: does not exist; pass the training "
                                     "workdir (the directory given to --workdir).")
  loaded = checkpoint.load(f.checkpoint)
  stored = eval_settings.stored_settings(loaded)
  eval_npz, payload_path, faiss_path = eval_settings.default_paths(f, loaded.workdir, stored)
  payload_path = reference.resolve_payload(payload_path, trust_pickle=f.trust_pickle,
                                           cache_dir=f.payload_cache)
  settings = eval_settings.retrieval_settings(f, stored, (eval_npz, payload_path, faiss_path))
  chosen = choice.read(loaded.workdir)  # python -m lvm_jax.adapt's pick, when it made this run
  served = choice.served(chosen, f.predictor)  # the record, when that pick is untrained
  fns = (predict_fns.from_apply_fn(loaded.model.apply) if served is None else  # the judge's own
         choice.as_predict_fns(served, lambda: evaluation.evaluator().fitted))  # fit: its row
  evaluation = evaluators.kind("retrieval")(fns, settings, evaluators.Context(
      config=loaded.config, fitted=lambda payload: eval_settings.fit_train_baselines(f, loaded, payload)))
  _, eval_set = evaluation.inputs()
  if eval_set.vector_dim != loaded.model.vector_dim:
    raise DataFormatError(f"{eval_npz}: field 'contexts': vectors are {eval_set.vector_dim}-d "
                          f"but the checkpoint {loaded.path} predicts "
                          f"{loaded.model.vector_dim}-d vectors. Fix: evaluate with the data "
                          "the model was trained for.")
  count = eval_set.num_sequences if not f.limit else min(f.limit, eval_set.num_sequences)
  # Read by evaluator() below, which builds the options once: no bigger batch than windows.
  settings.update(batch_size=max(1, min(BATCH_SIZE, count)),
                  reranker_path=eval_settings.reranker_path(f.reranker, loaded.workdir,
                                                            served=served))
  if chosen:
    print(choice.served_line(chosen, f.predictor))
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
  asked = eval_settings.asked_gates(f, stored)
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
    if served:
      ours["predictor"] = dict(served)  # adapt's pick: the model row is this untrained predictor
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
    f = eval_flags.parse_flags(argv)
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
