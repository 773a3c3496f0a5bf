"""mamba_gr (10 x Mamba block -> GRU gate) in the contrastive regime.

Run:
  python -m lvm_jax.main --config=configs/gr_contrastive.py --workdir=runs/gr_contrastive
  python -m lvm_jax.main --config=configs/gr_contrastive.py:tiny --workdir=runs/gr_tiny
"""

from lvm_jax.config_base import apply_argument, base_config


def get_config(arg=None):
  config = base_config()
  config.model.name = "mamba_gr"
  config.model.dropout = 0.05
  return apply_argument(config, arg, __file__, gru_hidden=16)
