"""The main job: `python -m lvm_jax.main --config=configs/s_realtext.py:tiny --workdir=RUN/t`.

Parses flags, checks every config value, picks the backend before JAX starts, and
calls `train.train_and_evaluate(config, workdir)`. Running it again on the same
workdir resumes from the latest checkpoint. Bad input or config ends with one
`error:` line and exit 2 (`--verbose` shows the traceback). Nothing here imports
JAX before the flags are parsed, so `--help` and a mistyped flag answer at once.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lvm_jax import backend, cli
from lvm_jax.distributed import multihost

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/s_contrastive.py[:tiny].",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, history.json, TensorBoard.")
flags.DEFINE_enum("backend", None, list(backend.PLATFORMS),
                  "Overrides config.backend: auto, cpu, gpu or metal.")
flags.mark_flags_as_required(["config", "workdir"])


@cli.exits_cleanly_on_user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(cli.unexpected_arguments(argv))
  config = FLAGS.config
  if FLAGS.backend:
    with config.unlocked():
      config.backend = FLAGS.backend
  backend.initialize(config.backend)
  # After the backend is set: these import JAX.
  from lvm_jax import checkpoint, config_checks, train  # pylint: disable=g-import-not-at-top
  config_checks.check_config(config)  # before anything is read, generated or compiled
  checkpoint.quiet_orbax_logs()
  with multihost.failures_end_the_process(FLAGS.verbose):  # multi-process: no shutdown hang
    try:
      summary = train.train_and_evaluate(config, FLAGS.workdir)
    except train.NonFiniteLossError as error:
      if FLAGS.verbose:
        raise
      multihost.finish()  # every process stops here: process 0 decided (multihost.agree)
      print(f"error: {error}", file=sys.stderr)
      sys.exit(1)
  multihost.finish()  # the others may now see this process end without alarm
  from lvm_jax.train import hooks  # pylint: disable=g-import-not-at-top
  ended = hooks.how_it_ended(summary["history"], config.train) or (
      f"{len(summary['history'])} epochs; best {summary['best_metric']} {summary['best']:.4f}")
  logging.info("Done: %s. Workdir %s (python -m lvm_jax.status %s)", ended, FLAGS.workdir,
               FLAGS.workdir)


if __name__ == "__main__":
  cli.run(main)
