"""The reference training regime as one ConfigDict; configs/*.py start from it.

Every default lives here once; an experiment file changes only what differs.
"""

from __future__ import annotations

import enum
from typing import Tuple

import ml_collections


class Negatives(str, enum.Enum):
  """Where InfoNCE's negatives come from (config.loss.negatives)."""
  MICRO = "micro"  # the micro-batch only (what the reference did)
  ACCUM = "accum"  # every sample of the step on this device
  GLOBAL = "global"  # also all-gathered across devices


class Positions(str, enum.Enum):
  """Which positions predict (config.loss.positions)."""
  LAST = "last"  # the reference: the last position predicts the target
  ALL = "all"  # every position predicts its next vector


class Parallel(str, enum.Enum):
  AUTO = "auto"  # mesh; vmap on Metal
  MESH = "mesh"
  VMAP = "vmap"


class BestMode(str, enum.Enum):
  """Whether a larger or smaller train.best_metric is better."""
  MAX = "max"
  MIN = "min"


NEGATIVES = tuple(n.value for n in Negatives)
POSITIONS = tuple(p.value for p in Positions)
PARALLEL = tuple(p.value for p in Parallel)
BEST_MODES = tuple(m.value for m in BestMode)
MATMUL_PRECISIONS = ("default", "high", "highest")
MODEL_SIZES = ("d_model", "n_layers", "d_state", "d_conv", "expand")
BEST_METRIC = "val_cosine"  # train.best_metric's default; checkpoint keeps the best by it too
EVAL_EVERY_EPOCHS = 1  # a config.evals entry without every_epochs runs after every epoch
REFERENCE_TRAINING_D_MODEL = 768  # the reference trained mamba_s at d_model 768 (default 256)


def best_metric_of(config) -> Tuple[str, str]:
  """(train.best_metric, train.best_mode) of a config (a ConfigDict or a read config.json),
  with the defaults a config that predates them trained under."""
  train = config.get("train", {}) or {}
  return train.get("best_metric", BEST_METRIC), train.get("best_mode", BestMode.MAX.value)


def base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.backend = "auto"  # auto | cpu | gpu | metal (the --backend flag wins)
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # Empty paths: generate the synthetic corpus into <workdir>/data (the embedded default).
  config.data.train_path = ""
  config.data.val_path = ""
  config.data.payload_path = ""  # needed by the compact (row-index) form of the sets
  config.data.context_length = 5
  config.data.vector_dim = 0  # 0: take it from the data; otherwise the data must match
  config.data.normalize = False  # re-normalise non-unit vectors (logged) instead of failing
  config.data.prefetch = 2  # batches staged on device ahead of the step; 0 turns it off
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.num_articles = 600
  config.data.synthetic.dim = 768
  config.data.synthetic.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "mamba_s"
  # Sizes are stated once, in models.variants: None here means the variant's default, so a
  # config naming another variant gets that variant's sizes without repeating them.
  for size in MODEL_SIZES:
    config.model[size] = ml_collections.config_dict.placeholder(int)
  config.model.dropout = 0.1
  config.model.scan_mode = "auto"
  config.model.dtype = "float32"  # float32 | bfloat16 (matmuls only; see README "Precision")
  # float32 matmul precision: default (TF32 on NVIDIA Ampere+ GPUs) | high | highest (full fp32).
  config.model.matmul_precision = "default"
  config.model.alignment_head = False
  config.model.residual = False  # predict a correction to context vector t (see LatentVectorModel)
  config.model.residual_decay = 0.0  # residual base: recency-weighted context average (0: vector t)
  # fixed: that average for every window | learned: per-window weights over the last
  # residual_max_lag lags, read from the hidden state, starting at the fixed decay's
  # True: residual_decay becomes the recency baseline's decay fitted on the train windows
  # (recorded in config.json), so an untrained model is exactly that baseline row.
  config.model.residual_decay_fitted = False
  config.model.residual_mixing = ml_collections.config_dict.placeholder(str)
  config.model.residual_max_lag = ml_collections.config_dict.placeholder(int)

  config.head = ml_collections.ConfigDict()
  config.head.kind = "native"  # native | lnsp (the reference trainer's head, for imports)
  config.head.hidden_dim = 512
  config.head.out_dim = 256

  config.loss = ml_collections.ConfigDict()
  config.loss.contrastive_weight = 0.7
  config.loss.ar_weight = 0.3
  config.loss.temperature = 0.07
  config.loss.negatives = "accum"  # micro | accum | global
  config.loss.positions = "last"  # last | all
  # InfoNCE of the predictions themselves against the raw next vectors (the retrieval space),
  # added to the head's InfoNCE with this weight; 0 leaves the reference loss.
  config.loss.vector_infonce_weight = 0.0
  config.loss.vector_temperature = 0.05
  # Every context vector of the step joins the negatives of both InfoNCE terms: among them each
  # window's own context, which a prediction near its input retrieves before the true next chunk.
  config.loss.context_negatives = False
  # InfoNCE of the predictions against corpus rows: bank_negatives payload rows drawn per
  # device and step (-1: all), the window's own rows masked (losses.bank_info_nce), with
  # vector_temperature. Needs the compact form (a payload).
  config.loss.bank_infonce_weight = 0.0
  config.loss.bank_negatives = 0
  # Each window's own context chunks join its bank InfoNCE as negatives: the all-candidates
  # view ranks them, and a prediction near its input retrieves them before the true next chunk.
  config.loss.bank_context_negatives = False

  config.augment = ml_collections.ConfigDict()
  config.augment.article_dropout = 0.2
  config.augment.span_corruption = 0.1

  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 256  # micro-batch per device
  config.train.accum_steps = 4
  config.train.num_epochs = 20
  config.train.learning_rate = 1e-3
  config.train.weight_decay = 0.02
  config.train.warmup_steps = 1000
  config.train.final_lr_fraction = 0.01
  config.train.clip_norm = 1.0
  # A trained workdir (or pretrained/<name>) whose model parameters start this run: fine-tuning.
  # Read only on the first start; the head and the optimizer start fresh. "" trains from scratch.
  config.train.init_from = ""
  config.train.early_stopping_patience = 3  # epochs without a gain in best_metric; 0: never stop
  config.train.smoke_gate_epoch = 2
  # The epoch-N gate judges the margin over the best baseline (copy-last, mean, recency,
  # linear) on validation R@5 with the context excluded: an absolute cosine means nothing on
  # real text. Any history field can be named; PASSED when it is >= the minimum.
  config.train.smoke_gate_metric = "val_r5_excl_margin"
  config.train.smoke_gate_minimum = 0.0
  config.train.parallel = Parallel.AUTO.value  # auto (mesh; vmap on Metal) | mesh | vmap
  config.train.log_every_steps = 50  # metrics leave the device (and are checked) this often
  config.train.keep_checkpoints = 2  # newest steps kept for resume, besides the best one
  # The history field that picks the best checkpoint; a margin over the best baseline
  # (val_r5_excl_margin, val_r50_excl_margin, ...) picks the one furthest ahead of it.
  config.train.best_metric = BEST_METRIC
  config.train.best_mode = "max"  # max | min

  config.eval = ml_collections.ConfigDict()
  config.eval.batch_size = 1024

  # Evaluators run in the loop after each epoch, built from config.evals as big_vision builds
  # them: each entry names its `type` (a module of lvm_jax/evaluators) and that type's knobs,
  # and its metrics enter TensorBoard as <name>/<key> and history.json as <name>_<key>
  # (val_cosine, retrieval_contain50_excl, ...), so train.best_metric can name any of them.
  # every_epochs 0 turns an entry off. docs/evaluation.md: "Adding an evaluator".
  config.evals = ml_collections.ConfigDict()
  config.evals.val = ml_collections.ConfigDict()
  config.evals.val.type = "validation"  # losses, cosine, the retrieval proxy, margins
  config.evals.val.every_epochs = EVAL_EVERY_EPOCHS
  # The FAISS retrieval evaluation of the eval set, as `python -m lvm_jax.eval` runs it.
  config.evals.retrieval = ml_collections.ConfigDict()
  config.evals.retrieval.type = "retrieval"
  config.evals.retrieval.every_epochs = 0  # 0: off
  config.evals.retrieval.eval_path = ""  # default: the synthetic corpus's eval.npz
  config.evals.retrieval.payload_path = ""  # default: config.data.payload_path / synthetic
  config.evals.retrieval.index_path = ""  # default: built from the payload
  config.evals.retrieval.index_kind = "auto"  # built when no index_path; auto: choose_index_kind
  config.evals.retrieval.nprobe = 64
  config.evals.retrieval.limit = 0  # eval windows used; 0: all
  # None: the gate's default, stated once in retrieval.eval_inputs.GATES (which this base layer
  # may not import: tests/test_evaluators.py checks these names against it).
  for gate in ("gate_contain50", "gate_eff5", "gate_r5", "gate_p95"):
    config.evals.retrieval[gate] = ml_collections.config_dict.placeholder(float)
  return config


VARIANT_ARGUMENTS = ("tiny", "runlocal")


def apply_argument(config: ml_collections.ConfigDict, arg, config_file: str,
                   **tiny_model: object) -> ml_collections.ConfigDict:
  """Applies a config file's argument (`--config=FILE:tiny`): "tiny"/"runlocal" or none.

  tiny_model: extra config.model values for the shrunken variant of this file.
  """
  if arg in VARIANT_ARGUMENTS:
    shrink_to_tiny(config)
    config.model.update(tiny_model)
  elif arg:
    raise unknown_argument(config_file, arg, VARIANT_ARGUMENTS)
  return config


def unknown_argument(config_file: str, arg: str, valid) -> ValueError:
  """The error for `--config=FILE:arg` with an argument FILE does not know."""
  from lvm_jax.cli import did_you_mean  # pylint: disable=g-import-not-at-top
  return ValueError(f"{config_file}: unknown config argument {arg!r}.{did_you_mean(arg, valid)} "
                    f"Fix: use one of {', '.join(valid)}, or none (--config={config_file}).")


def shrink_to_tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Model and data small enough for a run of about a minute on 2 CPU cores."""
  config.data.synthetic.dim = 64
  config.model.d_model = 32
  config.model.n_layers = 2
  config.model.d_state = 8
  config.head.hidden_dim = 64
  config.head.out_dim = 32
  config.train.batch_size = 32
  config.train.accum_steps = 2
  config.train.num_epochs = 20
  config.train.learning_rate = 3e-3  # a 2-block d_model-32 model learns faster at this rate
  config.train.warmup_steps = 100
  config.train.log_every_steps = 10
  config.eval.batch_size = 256
  return config
