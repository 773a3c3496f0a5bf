"""Training, by concern.

  augment        article dropout and span corruption, jittable (step applies it)
  training_sets  the train/val sets a run trains on (configured, or the synthetic default)
  step        optimizer, TrainState, accumulated_gradients, train_step (pure)
  hooks       the one metrics sink (TensorBoard, history.json, log line), early stopping,
              smoke gate
  loop        train_and_evaluate(config, workdir): the evaluators of config.evals
              (lvm_jax.evaluators) run after each epoch
"""

__all__ = ["NonFiniteLossError", "train_and_evaluate"]


def __getattr__(name):
  """The loop's names, imported at first use: `status` reads hooks without importing JAX."""
  if name in __all__:
    from lvm_jax.train import loop  # pylint: disable=g-import-not-at-top
    return getattr(loop, name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
