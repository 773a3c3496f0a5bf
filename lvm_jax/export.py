"""Export a trained run for shipping: its chosen model's parameters only, and what serves it.

  python -m lvm_jax.export --checkpoint RUN/full --out pretrained/NAME

Writes OUT/config.json (the run's, with its data and eval paths blanked, since they name the
trainer's machine), one checkpoint of the step `python -m lvm_jax.eval` would load (the best
by the run's best metric) holding the model's parameters without the optimizer's moments
(Adam keeps two per parameter, so this is about a third of the size), and copies history.json
and reranker.json when the run has them. Everything that reads a model (eval, predict,
fit_reranker, fine-tuning with config.train.init_from, lvm_jax.adapt --pretrained) reads OUT
as it reads RUN; resuming training from OUT is not possible, by design.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict

import flax
from absl import app, flags

from lvm_jax import cli

FLAGS = flags.FLAGS
BLANKED_PATHS = {"data": ("train_path", "val_path", "payload_path"),
                 "evals.retrieval": ("eval_path", "payload_path", "index_path")}
COPIED_FILES = ("history.json", "reranker.json")


@flax.struct.dataclass
class ParamsOnly:
  """The part of a training state a shipped model needs; saved like one (step, params)."""
  step: int
  params: Dict[str, Any]


def _blank_paths(config) -> None:
  for group, keys in BLANKED_PATHS.items():
    node = config
    for name in group.split("."):
      node = node.get(name) if node is not None else None
    for key in keys:
      if node is not None and key in node:
        node[key] = ""


def export(checkpoint_path: str, out: str) -> Dict[str, Any]:
  """Writes the export into `out` (which must not hold a checkpoint yet); returns what it wrote:
  {"step", "bytes", "source_bytes", "files"}."""
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.workdir import Workdir  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  target = Workdir(out)
  if os.path.exists(target.checkpoints):
    raise FileExistsError(f"{target.checkpoints}: already holds checkpoints. Fix: pass an --out "
                          "that does not exist yet (or remove it), so that no older export "
                          "mixes with this one.")
  loaded = checkpoint.load(checkpoint_path)
  config = loaded.config.copy_and_resolve_references()
  _blank_paths(config)
  os.makedirs(out, exist_ok=True)
  source_dir = loaded.workdir or checkpoint_path
  checkpoint.write_state(target, config, ParamsOnly(step=loaded.step,
                                                    params={"model": loaded.params}),
                         _metrics_at(source_dir, loaded.step, config))
  files = ["config.json", f"checkpoints/{loaded.step}"]
  for name in COPIED_FILES:
    source = os.path.join(source_dir, name)
    if os.path.exists(source):
      shutil.copyfile(source, os.path.join(out, name))
      files.append(name)
  return {"step": loaded.step, "bytes": _tree_bytes(target.checkpoints),
          "source_bytes": _tree_bytes(loaded.path), "files": files}


def _metrics_at(run: str, step: int, config) -> Dict[str, float]:
  """{best metric: its value at `step`} from the run's history.json, so that the export's one
  step is also its best one; {} when the history does not record it."""
  from lvm_jax.config_base import best_metric_of  # pylint: disable=g-import-not-at-top
  path = os.path.join(run, "history.json")
  metric, _ = best_metric_of(config)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as handle:
    history = json.load(handle)
  values = [entry[metric] for entry in history if isinstance(entry, dict)
            and entry.get("step") == step and isinstance(entry.get(metric), (int, float))]
  return {metric: float(values[-1])} if values else {}


def _tree_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names)


def define_flags() -> None:
  cli.define_checkpoint_flag()
  flags.DEFINE_string("out", None, "Directory to write the export into (must not hold "
                      "checkpoints yet).")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(cli.unexpected_arguments(argv))
  if not FLAGS.checkpoint or not FLAGS.out:
    raise app.UsageError("--checkpoint (the training workdir) and --out are required. Fix: "
                         "python -m lvm_jax.export --checkpoint RUN/full --out pretrained/NAME")
  from lvm_jax import backend  # pylint: disable=g-import-not-at-top
  backend.initialize("cpu")
  done = export(FLAGS.checkpoint, FLAGS.out)
  print(f"exported step {done['step']} of {FLAGS.checkpoint} into {FLAGS.out}: "
        f"{', '.join(done['files'])}; checkpoint {done['bytes'] / 2**20:.1f} MiB (the run's "
        f"was {done['source_bytes'] / 2**20:.1f} MiB with its optimizer state)")


if __name__ == "__main__":
  define_flags()
  cli.run(cli.exits_cleanly_on_user_errors(main))
