"""Training, by concern.

  augment        article dropout and span corruption, jittable (step applies it)
  training_sets  the train/val sets a run trains on (configured, or the synthetic default)
  step        optimizer, TrainState, accumulated_gradients, train_step (pure)
  hooks       the one metrics sink (TensorBoard, history.json, log line), early stopping,
              smoke gate
  loop        train_and_evaluate(config, workdir): the evaluators of config.evals
              (lvm_jax.evaluators) run after each epoch
"""

from lvm_jax.train.loop import NonFiniteLossError, train_and_evaluate

__all__ = ["NonFiniteLossError", "train_and_evaluate"]
