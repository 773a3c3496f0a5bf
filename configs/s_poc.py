"""The reference's failing baseline: mamba_s trained on the AR cosine loss alone.

Run:
  python -m lvm_jax.main --config=configs/s_poc.py --workdir=runs/s_poc
  python -m lvm_jax.main --config=configs/s_poc.py:tiny --workdir=runs/s_poc_tiny
"""

from lvm_jax.config_base import REFERENCE_TRAINING_D_MODEL, apply_argument, base_config


def get_config(arg=None):
  config = base_config()
  config.model.d_model = REFERENCE_TRAINING_D_MODEL
  config.loss.contrastive_weight = 0.0
  config.loss.ar_weight = 1.0
  return apply_argument(config, arg, __file__)
