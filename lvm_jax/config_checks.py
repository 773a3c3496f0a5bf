"""Checks every config value before anything is read, generated or compiled.

Each failure is one ValueError line naming the field, the value and the allowed
range, so a typo on the command line costs a second, not a compile.
"""

from __future__ import annotations

import math
from numbers import Number

import ml_collections

from lvm_jax.cli import did_you_mean
from lvm_jax.models.predictor import model_sizes
from lvm_jax.models.projection import HEAD_KINDS
from lvm_jax.config_base import (BEST_MODES, EVAL_EVERY_EPOCHS, MATMUL_PRECISIONS, MODEL_SIZES,
                                 NEGATIVES, PARALLEL, POSITIONS, Positions)


class ConfigError(ValueError):
  """A config value is outside what the run can honour."""


def _value(config, field: str):
  node = config
  for part in field.split("."):
    node = node[part]
  return node


def _fail(field: str, value, allowed: str) -> ConfigError:
  return ConfigError(f"config field {field}={value!r} is invalid: it must be {allowed}. "
                     f"Fix: pass --config.{field}=<value in range>.")


def _number(config, field: str, *, low=None, high=None, low_open=False, high_open=False,
            integer=False) -> None:
  value = _value(config, field)
  kind = "an integer" if integer else "a number"
  bounds = []
  if low is not None:
    bounds.append(f"{'>' if low_open else '>='} {low}")
  if high is not None:
    bounds.append(f"{'<' if high_open else '<='} {high}")
  allowed = kind + (" " + " and ".join(bounds) if bounds else "")
  if isinstance(value, bool) or not isinstance(value, Number):
    raise _fail(field, value, allowed)
  if integer and int(value) != value:
    raise _fail(field, value, allowed)
  if not math.isfinite(float(value)):
    raise _fail(field, value, allowed)
  if low is not None and (value <= low if low_open else value < low):
    raise _fail(field, value, allowed)
  if high is not None and (value >= high if high_open else value > high):
    raise _fail(field, value, allowed)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError on the first value the run cannot honour."""
  choices = {"loss.negatives": NEGATIVES, "loss.positions": POSITIONS,
             "train.parallel": PARALLEL, "train.best_mode": BEST_MODES,
             "model.matmul_precision": MATMUL_PRECISIONS, "head.kind": HEAD_KINDS}
  for field, valid in choices.items():
    value = _value(config, field)
    if value not in valid:
      hint = did_you_mean(str(value), [str(choice) for choice in valid])
      raise ConfigError(f"config field {field}={value!r} is not one of {valid}.{hint} Fix: pass "
                        f"--config.{field}=<one of them>.")
  for field in ("train.batch_size", "train.accum_steps", "train.num_epochs", "eval.batch_size",
                "head.hidden_dim", "head.out_dim", "data.context_length",
                "train.keep_checkpoints", "train.log_every_steps"):
    _number(config, field, low=1, integer=True)
  for field in ("train.warmup_steps", "train.early_stopping_patience", "data.prefetch",
                "data.vector_dim", "train.smoke_gate_epoch"):
    _number(config, field, low=0, integer=True)
  for size in MODEL_SIZES + ("residual_max_lag",):  # None: the variant's default
    if config.model.get(size) is not None:
      _number(config, f"model.{size}", low=1, integer=True)
  for field in ("data.synthetic.num_articles", "data.synthetic.dim"):
    _number(config, field, low=1, integer=True)
  _number(config, "train.learning_rate", low=0, low_open=True, high=1)
  _number(config, "train.weight_decay", low=0)
  _number(config, "train.final_lr_fraction", low=0, high=1)
  _number(config, "train.clip_norm", low=0, low_open=True)
  _number(config, "loss.temperature", low=0, low_open=True)
  _number(config, "loss.contrastive_weight", low=0)
  _number(config, "loss.ar_weight", low=0)
  _number(config, "loss.vector_infonce_weight", low=0)
  _number(config, "loss.vector_temperature", low=0, low_open=True)
  _number(config, "model.residual_decay", low=0, high=1)
  _number(config, "loss.bank_infonce_weight", low=0)
  _number(config, "loss.bank_negatives", low=-1, integer=True)
  if (config.loss.bank_infonce_weight > 0) != (config.loss.bank_negatives != 0):
    raise ConfigError(f"config fields loss.bank_infonce_weight="
                      f"{config.loss.bank_infonce_weight} and loss.bank_negatives="
                      f"{config.loss.bank_negatives}: the bank term needs both (a weight > 0 and "
                      "rows to draw, -1 for all) or neither. Fix: set both or set both to 0.")
  if config.loss.get("bank_context_negatives", False) and config.loss.bank_infonce_weight <= 0:
    raise ConfigError("config field loss.bank_context_negatives=True adds negatives to the bank "
                      "InfoNCE, which is off (loss.bank_infonce_weight=0). Fix: set "
                      "loss.bank_infonce_weight > 0 and loss.bank_negatives, or leave "
                      "loss.bank_context_negatives False.")
  if (config.loss.contrastive_weight + config.loss.ar_weight +
      config.loss.vector_infonce_weight + config.loss.bank_infonce_weight) <= 0:
    raise ConfigError("config fields loss.contrastive_weight, loss.ar_weight, "
                      "loss.vector_infonce_weight and loss.bank_infonce_weight are all 0: nothing "
                      "would be trained. Fix: make at least one of them > 0.")
  for field in ("augment.article_dropout", "augment.span_corruption", "model.dropout"):
    _number(config, field, low=0, high=1, high_open=True)
  for name in config.evals.keys():
    entry = config.evals[name]
    for field, low in (("every_epochs", 0), ("nprobe", 1), ("limit", 0)):
      if field in entry:
        _number(config, f"evals.{name}.{field}", low=low, integer=True)
    if config.train.best_metric.startswith(f"{name}_") and entry.get("every_epochs", EVAL_EVERY_EPOCHS) < 1:
      raise ConfigError(f"config field train.best_metric={config.train.best_metric!r} is a metric "
                        f"of evals.{name}, but config.evals.{name}.every_epochs is 0 (off). Fix: "
                        f"pass --config.evals.{name}.every_epochs=1, or pick another metric.")
  if not config.train.best_metric:
    raise ConfigError("config field train.best_metric is empty. Fix: name a validation metric, "
                      "e.g. --config.train.best_metric=val_cosine.")
  try:  # the variant's own checks (name, sizes, modes), without building it
    model_sizes(config)
  except ValueError as error:
    raise ConfigError(f"config field model (model.name={config.model.name!r}): {error} Fix: "
                      "pass --config.model.<field>=<valid value>.") from error


def check_model(config: ml_collections.ConfigDict, model) -> None:
  if config.loss.positions == Positions.ALL and not model.is_causal:
    raise ConfigError("config field loss.positions='all' needs a causal model, but "
                       f"{config.model.name} (with gru_state_handoff, or an lnsp_* model with "
                      "look-ahead attention or GRU hand-off) sees the whole window at every "
                      "position; set loss.positions='last' or model.gru_state_handoff=False.")
