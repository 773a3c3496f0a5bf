"""The interface every evaluator has, and what the loop (or the eval CLI) hands it.

As in big_vision, an evaluator is built from a prediction function and its settings
(`Evaluator(predict_fns, settings, context)`) and never sees the trainer: the loop and the
eval CLI hand it the same models.predict_fns.PredictFns. A subclass sets what it measures in
`run`; `due` and `baselines` have defaults: it runs every `settings.every_epochs` epochs
(default 1) and has no baselines.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, Optional, Tuple

import ml_collections

from lvm_jax.config_base import EVAL_EVERY_EPOCHS
from lvm_jax.models.predict_fns import PredictFns


@dataclasses.dataclass
class Context:
  """What an evaluator may use besides its own settings.

  config: the run's resolved config; val: the validation
  SequenceSet; eval_path / payload_path: the eval set and payload the run's data provides
  (the synthetic corpus's by default); fitted: baselines.FittedBaselines fitted on the
  train windows, or a function of the payload that fits them (None: not fitted).
  """
  config: ml_collections.ConfigDict
  val: Any = None
  eval_path: Optional[str] = None
  payload_path: Optional[str] = None
  fitted: Any = None


class Evaluator:
  """One evaluator of config.evals.<name>: due(epoch), run(params), baselines().

  predict_fns: predict(params, contexts) -> [batch, dim] and project (jitted), the only way an
  evaluator reaches the model.
  """

  def __init__(self, predict_fns: PredictFns, settings: ml_collections.ConfigDict,
               context: Context):
    self.predict_fns = predict_fns
    self.settings = settings
    self.context = context

  def due(self, epoch: int) -> bool:
    """After 1-based `epoch`: every `every_epochs` epochs (0 turns the entry off)."""
    every = self.settings.get("every_epochs", EVAL_EVERY_EPOCHS)
    return every > 0 and epoch % every == 0

  def run(self, params) -> Iterator[Tuple[str, float]]:
    raise NotImplementedError(f"{type(self).__name__}.run(params) must yield (key, value)")

  def baselines(self) -> Dict[str, Dict[str, float]]:
    return {}
