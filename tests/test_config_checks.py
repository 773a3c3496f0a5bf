"""config_checks: every field outside its range is one clear line, before anything runs."""

import pytest

from lvm_jax import config_checks
from lvm_jax.config_base import base_config

BAD_VALUES = [
    ("train.learning_rate", -0.003, "must be a number > 0 and <= 1"),
    ("train.learning_rate", 0.0, "must be a number > 0 and <= 1"),
    ("train.learning_rate", float("nan"), "must be a number > 0 and <= 1"),
    ("train.warmup_steps", -1, "must be an integer >= 0"),
    ("train.weight_decay", -0.1, "must be a number >= 0"),
    ("loss.temperature", 0.0, "must be a number > 0"),
    ("loss.temperature", -0.07, "must be a number > 0"),
    ("loss.contrastive_weight", -0.7, "must be a number >= 0"),
    ("loss.ar_weight", float("inf"), "must be a number >= 0"),
    ("train.batch_size", 0, "must be an integer >= 1"),
    ("train.accum_steps", 0, "must be an integer >= 1"),
    ("train.num_epochs", 0, "must be an integer >= 1"),
    ("eval.batch_size", 0, "must be an integer >= 1"),
    ("data.context_length", 0, "must be an integer >= 1"),
    ("augment.article_dropout", 1.0, "must be a number >= 0 and < 1"),
    ("augment.span_corruption", -0.1, "must be a number >= 0 and < 1"),
    ("model.dropout", 1.5, "must be a number >= 0 and < 1"),
    ("head.hidden_dim", 0, "must be an integer >= 1"),
    ("head.out_dim", -4, "must be an integer >= 1"),
    ("train.clip_norm", 0.0, "must be a number > 0"),
    ("train.final_lr_fraction", 2.0, "must be a number >= 0 and <= 1"),
    ("train.keep_checkpoints", 0, "must be an integer >= 1"),
]


@pytest.mark.parametrize("field, value, words", BAD_VALUES)
def test_each_bad_value_is_named_with_its_range(field, value, words):
  config = base_config()
  section, name = field.split(".")
  config[section][name] = value
  with pytest.raises(config_checks.ConfigError) as raised:
    config_checks.check_config(config)
  message = str(raised.value)
  assert message.startswith(f"config field {field}={value!r} is invalid: it {words}.")
  assert f"--config.{field}=" in message
  assert "\n" not in message


def test_both_loss_weights_zero_is_rejected():
  config = base_config()
  config.loss.contrastive_weight = config.loss.ar_weight = 0.0
  with pytest.raises(config_checks.ConfigError, match="are all 0: nothing would be trained"):
    config_checks.check_config(config)


def test_bank_context_negatives_without_the_bank_term_is_rejected():
  config = base_config()
  config.loss.bank_context_negatives = True
  with pytest.raises(config_checks.ConfigError,
                     match=r"loss.bank_context_negatives=True adds negatives to the bank InfoNCE, "
                           r"which is off \(loss.bank_infonce_weight=0\)"):
    config_checks.check_config(config)


def test_choices_are_checked():
  config = base_config()
  config.loss.negatives = "everything"
  with pytest.raises(config_checks.ConfigError,
                     match=r"loss.negatives='everything' is not one of \('micro', 'accum', "
                           r"'global'\)"):
    config_checks.check_config(config)


def test_the_reference_regime_passes():
  config_checks.check_config(base_config())


def test_each_default_and_enum_has_one_home():
  """Issue 33: the Parallel enum, the best metric and every_epochs' default live in config_base
  and are imported, not restated."""
  from lvm_jax import checkpoint, config_base  # pylint: disable=g-import-not-at-top
  from lvm_jax.evaluators import base  # pylint: disable=g-import-not-at-top
  from lvm_jax.train import parallel  # pylint: disable=g-import-not-at-top
  assert parallel.Parallel is config_base.Parallel
  assert parallel.resolve_parallel("auto", "cpu") is config_base.Parallel.MESH
  assert checkpoint.DEFAULT_BEST_METRIC == config_base.base_config().train.best_metric
  unset = base.Evaluator(None, {}, None)  # no every_epochs: EVAL_EVERY_EPOCHS (every epoch)
  assert config_base.EVAL_EVERY_EPOCHS == 1 and all(unset.due(epoch) for epoch in (1, 2, 3))


def test_best_metric_of_reads_every_form_of_config():
  """One helper gives (best_metric, best_mode) to the checkpoint reader, the export and the
  run's ending line: from a ConfigDict, from a read config.json, and the defaults when absent."""
  from lvm_jax import config_base  # pylint: disable=g-import-not-at-top
  config = base_config()
  config.train.best_metric, config.train.best_mode = "val_r50_excl_margin", "min"
  assert config_base.best_metric_of(config) == ("val_r50_excl_margin", "min")
  assert config_base.best_metric_of(config.to_dict()) == ("val_r50_excl_margin", "min")
  assert config_base.best_metric_of({}) == ("val_cosine", "max")
  assert config_base.best_metric_of({"train": {"best_metric": "val_loss"}}) == ("val_loss", "max")
