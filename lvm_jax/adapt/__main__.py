"""Use the project on your own text: one command from built windows to a served predictor.

  python -m lvm_jax.adapt --train DATA/sets/train_rows.npz --val DATA/sets/val_rows.npz \
      --payload DATA/payload --workdir RUN/mine

TRAIN and VAL are windows files of `python -m lvm_jax.corpus.build` over PAYLOAD. In order,
each stage printed with the time since the start:
  1. plan: fine-tune the shipped model when it reads your vectors (the same dimension and,
     when recorded, embedder), else train the recipe from scratch (adapt.plan); print an
     estimate of the time;
  2. train (configs/s_realtext.py, early stopping on VAL), the best checkpoint into WORKDIR;
  3. fit its learned reranker on VAL (eval.fit_reranker);
  4. judge on VAL, context excluded: the learned system beside every untrained predictor,
     the margin table with paired-bootstrap intervals;
  5. choose by retrieval.choice.RULE and record it in WORKDIR/adapt_choice.json, which
     `python -m lvm_jax.eval --checkpoint WORKDIR` and `python -m lvm_jax.predict` follow;
     an untrained pick gets its own reranker when it pays on held-out val articles
     (adapt.untrained_rerank).
Rerunning the same command resumes the training and redoes the later stages.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from lvm_jax import backend, cli
from lvm_jax.adapt import plan

FLAGS = flags.FLAGS
DEFAULT_BUDGET_MINUTES = 60.0
MIN_PAYLOAD_ROWS = 50  # the k of Contain@50: the val table and the eval rank this many rows


def define_flags() -> None:
  flags.DEFINE_string("train", None, "Train windows (train_rows.npz of python -m "
                      "lvm_jax.corpus.build).", required=True)
  flags.DEFINE_string("val", None, "Val windows (val_rows.npz of the same build): early stopping, "
                      "the reranker and the choice.", required=True)
  flags.DEFINE_string("payload", None, "Payload directory the windows index (python -m "
                      "lvm_jax.corpus.ingest).", required=True)
  flags.DEFINE_string("workdir", None, "Where the run, its reranker and the choice go.",
                      required=True)
  flags.DEFINE_string("eval", None, "Eval set that python -m lvm_jax.eval --checkpoint WORKDIR "
                      "reads by default; default: eval.npz beside --train, when there.")
  flags.DEFINE_integer("epochs", 0, "Epochs to train (0: the recipe's, capped by "
                       "--budget_minutes).")
  flags.DEFINE_float("budget_minutes", DEFAULT_BUDGET_MINUTES, "Caps the recipe's epochs so "
                     "that the estimate fits (0: no cap); --epochs is never capped.")
  flags.DEFINE_bool("from_scratch", False, "Train from scratch even when the shipped model "
                    "reads these vectors.")
  flags.DEFINE_string("pretrained", None, "Model to fine-tune; default: the recipe's shipped "
                      "model (pretrained/ in the repository).")
  flags.DEFINE_integer("seed", 0, "Seed of the shuffling, the drawn negatives and any fresh "
                       "weights; runs with different seeds show how much the result varies.")
  flags.DEFINE_enum("backend", "auto", list(backend.PLATFORMS), "JAX backend.")


class Clock:
  """Stage lines with the time since the start."""

  def __init__(self):
    self.start = time.perf_counter()

  def stage(self, text: str) -> None:
    seconds = int(time.perf_counter() - self.start)
    print(f"adapt [{seconds // 60:d}:{seconds % 60:02d}] {text}", flush=True)


def check_inputs(train: str, val: str, payload: str) -> None:
  """Each input exists and is of its kind: one message naming the flag, the file and the fix."""
  build = "python -m lvm_jax.corpus.build --payload DATA/payload --out DATA/sets"
  for flag, path, name in (("--train", train, "train_rows.npz"), ("--val", val, "val_rows.npz")):
    if not os.path.exists(path):
      raise FileNotFoundError(f"{flag} {path}: does not exist. Fix: pass the {name} that "
                              f"{build} wrote (DATA/sets/{name}).")
    if os.path.isdir(path):
      raise ValueError(f"{flag} {path}: is a directory, not a windows file. Fix: pass the "
                       f"{name} in it that {build} wrote.")
  if os.path.abspath(train) == os.path.abspath(val):
    raise ValueError(f"--train and --val are the same file {train}. Fix: pass the val_rows.npz "
                     "of the build (its articles are not the train ones).")
  if not os.path.isdir(payload):
    what = "is not a directory" if os.path.exists(payload) else "does not exist"
    raise FileNotFoundError(f"--payload {payload}: {what}. Fix: pass the payload directory the "
                            "windows were built from (python -m lvm_jax.corpus.ingest --out "
                            "DATA/payload).")


def default_eval_path(train: str) -> str:
  """eval.npz beside the train windows (corpus.build writes it with the full form), or ""."""
  path = os.path.join(os.path.dirname(os.path.abspath(train)), "eval.npz")
  return path if os.path.exists(path) else ""


def adapt(f, clock: Clock) -> dict:
  """The five stages; returns the choice record."""
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.sequences import read_sequence_set  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import run_baselines  # pylint: disable=g-import-not-at-top
  check_inputs(f.train, f.val, f.payload)
  if f.eval and not os.path.isfile(f.eval):
    raise FileNotFoundError(f"--eval {f.eval}: does not exist. Fix: pass the eval.npz of the "
                            "build, or leave --eval out.")
  if f.epochs < 0 or f.budget_minutes < 0:
    raise ValueError(f"--epochs {f.epochs} / --budget_minutes {f.budget_minutes:g}: must be "
                     "0 or more. Fix: pass 0 for the defaults.")
  payload = read_payload(f.payload, load_texts=False)
  if payload.num_rows < MIN_PAYLOAD_ROWS:
    raise ValueError(f"--payload {f.payload}: holds {payload.num_rows} chunks; the val table "
                     f"ranks {MIN_PAYLOAD_ROWS} candidates a window (Contain@50), so adapt needs "
                     f"at least {MIN_PAYLOAD_ROWS}. Fix: ingest more text into the payload.")
  train_set = read_sequence_set(f.train, payload=payload)
  val_set = read_sequence_set(f.val, payload=payload, expected_dim=train_set.vector_dim,
                              expected_source=f"the train set {f.train}")
  val_articles = val_set.article_ids().size
  if val_articles < 2:
    raise ValueError(f"--val {f.val}: holds the windows of {val_articles} article; the "
                     "reranker's self-check fits on some val articles and scores the others, so "
                     "val needs at least 2. Fix: rebuild with more articles in val (python -m "
                     "lvm_jax.corpus.build --split_ratios 0.8,0.1,0.1 on a larger payload).")
  recipe = plan.load_recipe()
  shipped = plan.read_shipped(f.pretrained or os.path.join(plan.REPO_ROOT, recipe.PRETRAINED),
                              recipe.PRETRAINED_EMBEDDER)
  start = plan.decide_start(train_set.vector_dim, payload.provenance.get("embedder_id"),
                            shipped, from_scratch=f.from_scratch)
  print(f"adapt: {start.why}", flush=True)
  fitted = run_baselines.fit(train_set)  # once: the loop and the val table take these
  recipe_epochs = recipe.get_config(start.recipe_arg).train.num_epochs
  estimate = plan.estimate(train_set.num_sequences, val_set.num_sequences, train_set.vector_dim,
                           shipped, recipe_epochs=recipe_epochs, epochs=f.epochs,
                           budget_minutes=f.budget_minutes)
  print(estimate.line, flush=True)
  eval_path = f.eval or default_eval_path(f.train)
  config = plan.adapt_config(recipe, start, train=f.train, val=f.val, payload=f.payload,
                             eval_path=eval_path, epochs=estimate.epochs, backend=f.backend,
                             seed=f.seed)
  del train_set, val_set, payload  # the loop reads its own

  backend.initialize(config.backend)
  # After the backend is set: these import JAX.
  from lvm_jax import checkpoint, train  # pylint: disable=g-import-not-at-top
  from lvm_jax.adapt import judge_val  # pylint: disable=g-import-not-at-top
  from lvm_jax.adapt import untrained_rerank  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import fit_reranker  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import choice  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  for earlier in (choice.path_in(f.workdir), os.path.join(f.workdir, choice.SECOND_STAGE_FILE)):
    if os.path.exists(earlier):  # an earlier pick stands for nothing until redone
      os.remove(earlier)
  clock.stage(f"{'fine-tune' if start.init_from else 'train'}: up to {estimate.epochs} "
              f"epoch{'s' if estimate.epochs > 1 else ''} into {f.workdir}")
  try:
    summary = train.train_and_evaluate(config, f.workdir, fitted=fitted)
  except train.NonFiniteLossError as error:  # the loop's message names train.learning_rate,
    # a flag adapt does not have: say what adapt leaves and what to do from here instead.
    raise cli.UserFacingError(
        f"the training diverged: {str(error).split('; stopped')[0]}. Nothing is chosen: "
        f"{f.workdir} holds no {choice.FILE_NAME}, so eval and predict serve no untrained pick "
        "from it. Fix: check TRAIN's vectors (python -m lvm_jax.corpus.build checks them), "
        "then rerun with --from_scratch, or with --epochs 1 to see the first epoch.") from error
  epochs = len(summary["history"])
  best = "none" if summary["best"] is None else f"{summary['best']:+.4f}"
  clock.stage(f"trained: {epochs} epoch{'s' if epochs > 1 else ''}, best {summary['best_metric']} "
              f"{best}{' (stopped early)' if summary['stopped_early'] else ''}")
  clock.stage("reranker: fitting the learned second stage on --val")
  reranker, check, reranker_path = fit_reranker.fit_for_run(f.workdir)
  for line in fit_reranker.check_lines(check):
    print(f"  {line}")
  print(f"  {learned_rerank.describe(reranker)}; wrote {reranker_path}")
  clock.stage("margin table on --val (context excluded; exact search over the payload)")
  verdict = judge_val.judge(f.workdir, config, reranker, fitted)
  print(judge_val.table(verdict))
  clock.stage("choice")
  picked = choice.choose(verdict.margins)
  record = choice.make_record(
      picked, verdict.margins, verdict.scores, params=verdict.params.get(picked),
      val=config.data.val_path, val_windows=verdict.windows, train=config.data.train_path,
      checkpoint=verdict.checkpoint, reranker=reranker_path, start=start.why)
  if picked != choice.LEARNED:
    clock.stage(f"second stage: fitting a reranker on the shortlist of {choice.describe(record)} "
                "on --val")
    stage = untrained_rerank.fit(record, val_path=config.data.val_path,
                                 payload_path=config.data.payload_path, fitted=fitted,
                                 workdir=f.workdir)
    print("\n".join(untrained_rerank.lines(stage, record)))
    record.update(second_stage=choice.SECOND_STAGE_FILE if stage.kept else None,
                  second_stage_check=stage.check)
  path = choice.write(f.workdir, record)
  print(choice_lines(record, path, f.workdir, eval_path))
  clock.stage("done")
  return record


def choice_lines(record: dict, path: str, workdir: str, eval_path: str) -> str:
  """What was picked and why, and the commands that now serve it."""
  from lvm_jax.retrieval import choice  # pylint: disable=g-import-not-at-top
  margins = record["margins"]
  said = ", ".join(f"{metric} {margins[metric]['margin']:+.4f} vs {margins[metric]['baseline']}"
                   for metric in choice.RULE_METRICS)
  if record["predictor"] == choice.LEARNED:
    why = f"chose the learned system: its margins on val are >= 0 ({said})"
  else:
    what = ("an untrained predictor whose shortlist a reranker fitted on val reorders"
            if record.get("second_stage") else "an untrained predictor")
    why = (f"chose {choice.describe(record)}, {what}: the learned system's margins on val are "
           f"{said}, not both >= 0")
  evaluate = f"python -m lvm_jax.eval --checkpoint {workdir} --exclude_context"
  if not eval_path:
    evaluate += " --eval_npz DATA/sets/eval.npz"
  return "\n".join([f"adapt: {why}.", f"  rule: {choice.RULE}.", f"  recorded in {path}; "
                    "eval and predict serve it (--predictor learned overrides).",
                    f"  next: {evaluate}"])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(cli.unexpected_arguments(argv))
  adapt(FLAGS, Clock())


if __name__ == "__main__":
  define_flags()
  cli.run(cli.exits_cleanly_on_user_errors(main))
