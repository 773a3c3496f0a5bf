"""Training, by concern.

  step        optimizer, TrainState, accumulated_gradients, train_step (pure)
  evaluators  ValidationEvaluator: val losses, cosine, retrieval proxy, baselines
  hooks       history, TensorBoard scalars, early stopping, smoke gate
  loop        train_and_evaluate(config, workdir)
"""

from lvm_jax.train.loop import NonFiniteLossError, train_and_evaluate

__all__ = ["NonFiniteLossError", "train_and_evaluate"]
