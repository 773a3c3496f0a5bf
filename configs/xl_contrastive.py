"""mamba_xl (16 Mamba blocks, d_model 384, d_state 192) in the contrastive regime.

Run:
  python -m lvm_jax.main --config=configs/xl_contrastive.py --workdir=runs/xl_contrastive
  python -m lvm_jax.main --config=configs/xl_contrastive.py:tiny --workdir=runs/xl_tiny
"""

from lvm_jax.config_base import apply_argument, base_config


def get_config(arg=None):
  config = base_config()
  config.model.name = "mamba_xl"
  config.model.dropout = 0.05
  return apply_argument(config, arg, __file__)
