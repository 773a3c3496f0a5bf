"""Evaluators built from `config.evals`, as big_vision builds them.

Each entry `config.evals.<name>` is a ConfigDict with a `type` and that type's knobs:

  config.evals.val = ml_collections.ConfigDict(dict(type="validation", every_epochs=1))

`type` names a module: `lvm_jax.evaluators.<type>` when there is one, else `<type>` itself
as an importable module path (an evaluator kept outside the package). The module's
`Evaluator` class is the kind; constructing it is `Evaluator(predict_fns, settings, context)`
with the model's models.predict_fns.PredictFns, the entry and a `base.Context`, as big_vision
builds its evaluators from a predict_fn (never the trainer). Every evaluator has one interface (base.Evaluator):

  due(epoch) -> bool          whether it runs after this (1-based) epoch
  run(params) -> Iterator[(key, value)]
  baselines() -> {row: {key: value}}, the numbers a model must beat ({} when none)

The loop measures each value as `<name>/<key>` (hooks.MetricWriter states the naming
rule), so adding an evaluator is one new file here plus a config entry
(docs/evaluation.md, "Adding an evaluator").

  base        Evaluator (due from every_epochs, no baselines) and Context
  validation  the validation set: losses, cosine, the retrieval proxy, margins
  retrieval   FAISS retrieval of the eval set, as `python -m lvm_jax.eval` runs it
"""

from __future__ import annotations

import importlib
from typing import List, Tuple

import ml_collections

from lvm_jax.config_base import EVAL_EVERY_EPOCHS
from lvm_jax.evaluators.base import Context, Evaluator
from lvm_jax.models.predict_fns import PredictFns

__all__ = ["Context", "Evaluator", "check_config", "from_config", "kind"]


def kind(type_name: str, field: str = "type") -> type:
  """The Evaluator class of a `type`; raises naming the field and the fix."""
  if not isinstance(type_name, str) or not type_name:
    raise ValueError(f"config field {field}={type_name!r} is invalid: it must name an evaluator "
                     "module (validation, retrieval, or a module path). Fix: pass "
                     f"--config.{field}=<type>.")
  candidates = ([f"lvm_jax.evaluators.{type_name}"] if "." not in type_name else []) + [type_name]
  for module_name in candidates:
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
      if error.name is not None and not module_name.startswith(error.name):
        raise  # the module exists but one of its own imports is missing
      continue
    evaluator_class = getattr(module, "Evaluator", None)
    if evaluator_class is None:
      raise ValueError(f"config field {field}={type_name!r}: module {module.__name__} defines no "
                       "`Evaluator` class. Fix: name the evaluator class `Evaluator` (see "
                       "docs/evaluation.md).")
    return evaluator_class
  raise ValueError(f"config field {field}={type_name!r} is invalid: no module "
                   f"{' or '.join(candidates)}. Fix: add lvm_jax/evaluators/{type_name}.py, or "
                   "name an importable module (docs/evaluation.md, \"Adding an evaluator\").")


def _entries(config: ml_collections.ConfigDict):
  """(name, settings) of every config.evals entry that is on (every_epochs > 0, default 1)."""
  evals = config.get("evals") or {}
  for name in evals.keys():
    settings = evals[name]
    if settings.get("every_epochs", EVAL_EVERY_EPOCHS) > 0:
      yield name, settings


def check_config(config: ml_collections.ConfigDict) -> None:
  """Every entry names a known type and a metric prefix without '/' (before any data is read)."""
  for name, settings in _entries(config):
    if "/" in name or "type" not in settings:
      raise ValueError(f"config field evals.{name} is invalid: it needs a `type` and a name "
                       f"without '/'. Fix: pass --config.evals.{name}.type=<type>.")
    kind(settings.type, field=f"evals.{name}.type")


def from_config(config: ml_collections.ConfigDict, predict_fns: PredictFns,
                context: Context) -> List[Tuple[str, Evaluator]]:
  """[(name, evaluator)] of the entries that are on, in config.evals' order (by name)."""
  check_config(config)
  return [(name, kind(settings.type, field=f"evals.{name}.type")(predict_fns, settings, context))
          for name, settings in _entries(config)]
