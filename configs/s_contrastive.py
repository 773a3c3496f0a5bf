"""The reference regime: mamba_s at d_model 768, InfoNCE (0.7) + AR cosine (0.3).

Run:
  python -m lvm_jax.main --config=configs/s_contrastive.py --workdir=runs/s_contrastive
Shrunk for 2 CPU cores (about a minute):
  python -m lvm_jax.main --config=configs/s_contrastive.py:tiny --workdir=runs/s_tiny
"""

from lvm_jax.config_base import REFERENCE_TRAINING_D_MODEL, apply_argument, base_config


def get_config(arg=None):
  config = base_config()
  config.model.d_model = REFERENCE_TRAINING_D_MODEL
  return apply_argument(config, arg, __file__)
