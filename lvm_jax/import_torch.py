"""Imports a reference `best.pt` (app/lvm/train_mamba_contrastive.py) into a training workdir.

  pip install -e '.[torch]'
  python -m lvm_jax.import_torch --src best.pt --workdir RUN/imported --trust_pickle \
      [--import_optimizer]
  python -m lvm_jax.eval --checkpoint RUN/imported --eval-npz ... --payload ...
  python -m lvm_jax.main --config=configs/lnsp_imported.py:RUN/imported --workdir=RUN/imported \
      --config.data.train_path=... --config.data.val_path=...

models/torch_import reads and maps best.pt (see there); this entry point builds
the training state as train.step does and writes it through lvm_jax.checkpoint:
config.json, an Orbax checkpoint at the reference's optimizer step (latest and
best) and imported_from.json. See docs/reference_import.md.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import ml_collections
from absl import app, flags, logging

from lvm_jax import atomic, cli
from lvm_jax.workdir import Workdir

# JAX, optax and the model code are imported where they are used, so --help and a mistyped flag
# answer at once.

IMPORT_RECORD = "imported_from.json"


def with_optimizer_state(opt_state, step: int, moments: Optional[Tuple[Any, Any]]):
  """opt_state with the schedule at `step`, and Adam's moments and count imported or fresh."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  found = {"adam": 0, "schedule": 0}

  def rebuild(node):
    if isinstance(node, optax.ScaleByAdamState):
      found["adam"] += 1
      if moments is None:
        return node
      mu, nu = (jax.tree_util.tree_map(jnp.asarray, m) for m in moments)
      return node._replace(count=jnp.asarray(step, node.count.dtype), mu=mu, nu=nu)
    if isinstance(node, optax.ScaleByScheduleState):
      found["schedule"] += 1
      return node._replace(count=jnp.asarray(step, node.count.dtype))
    if isinstance(node, tuple) and hasattr(node, "_fields"):
      return type(node)(*(rebuild(child) for child in node))
    if isinstance(node, (tuple, list)):
      return type(node)(rebuild(child) for child in node)
    return node

  rebuilt = rebuild(opt_state)
  if found != {"adam": 1, "schedule": 1}:
    raise RuntimeError(f"with_optimizer_state: expected one Adam and one schedule "
                       f"state in step.create_optimizer's chain, found {found}; update it.")
  return rebuilt


def write_checkpoint(workdir: str, config: ml_collections.ConfigDict, params, step: int,
                     moments: Optional[Tuple[Any, Any]], metrics: Dict[str, float]) -> None:
  """The one place that knows the training state: built as step.create_train_state builds it,
  saved as checkpoint.Checkpointer saves it (the step, kept as latest and best)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predictor_from_config  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  vector_dim = config.data.vector_dim
  predictor = predictor_from_config(config, vector_dim)
  state = step_lib.create_train_state(config, predictor, jax.random.PRNGKey(config.seed),
                                      vector_dim, total_steps=1)
  state = state.replace(step=step, params=jax.tree_util.tree_map(jnp.asarray, params),
                        opt_state=with_optimizer_state(state.opt_state, step, moments))
  checkpoint.write_state(Workdir(workdir), config, state, metrics)


def import_checkpoint(src: str, workdir: str, *, trust_pickle: bool = False,
                      import_optimizer: bool = False) -> Dict[str, Any]:
  """Reads `src`, maps it onto an lnsp_* model and head, writes `workdir`; returns the record."""
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import torch_import  # pylint: disable=g-import-not-at-top
  if os.path.isdir(Workdir(workdir).checkpoints):
    raise torch_import.TorchImportError(f"{workdir}: already holds checkpoints/; import into an "
                                        "empty --workdir.")
  imported = torch_import.convert_best_pt(src, trust_pickle=trust_pickle,
                                          import_optimizer=import_optimizer)
  config, params, step, moments, raw = (imported.config, imported.params, imported.step,
                                        imported.moments, imported.raw)
  val_cosine = raw.get("val_cosine")
  val_cosine = float(val_cosine) if val_cosine is not None else -1.0
  os.makedirs(workdir, exist_ok=True)
  write_checkpoint(workdir, config, params, step, moments, {checkpoint.DEFAULT_BEST_METRIC: val_cosine})
  record = {"src": os.path.abspath(src), "model": config.model.name, "step": step,
            "epoch": raw.get("epoch"), "val_cosine": raw.get("val_cosine"),
            "val_loss": raw.get("val_loss"), "optimizer": "imported" if moments else "fresh",
            "reference_args": {k: (v if isinstance(v, (bool, int, float, str, type(None)))
                                   else str(v)) for k, v in raw["args"].items()}}
  for key in ("val_cosine", "val_loss"):
    if record[key] is not None:
      record[key] = float(record[key])
  atomic.write_json(os.path.join(workdir, IMPORT_RECORD), record)
  logging.info("Imported %s (%s, step %d, epoch %s, val_cosine %s) into %s", src,
               config.model.name, step, record["epoch"], record["val_cosine"], workdir)
  return record


@cli.exits_cleanly_on_user_errors
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(cli.unexpected_arguments(argv))
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoint.quiet_orbax_logs()
  config = flags.FLAGS
  import_checkpoint(config.src, config.workdir, trust_pickle=config.trust_pickle,
                    import_optimizer=config.import_optimizer)


def define_flags():
  flags.DEFINE_string("src", None, "The reference trainer's best.pt.")
  flags.DEFINE_string("workdir", None, "An empty directory for config.json and checkpoints.")
  flags.DEFINE_bool("trust_pickle", False, "Allow reading the .pt file (a pickle: runs code).")
  flags.DEFINE_bool("import_optimizer", False,
                    "Carry AdamW's moments over; otherwise the optimizer starts fresh.")
  flags.mark_flags_as_required(["src", "workdir"])


if __name__ == "__main__":
  define_flags()
  cli.run(main)
