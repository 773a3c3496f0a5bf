"""Moved to lvm_jax.retrieval.baselines; this name stays only until train.py imports it from
there (the training refactor), then this file is deleted."""

from lvm_jax.retrieval.baselines import copy_last, mean_of_context  # noqa: F401
