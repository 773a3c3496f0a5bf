"""mamba_sandwich (2 attention, 8 Mamba, 2 attention blocks) in the contrastive regime.

Run:
  python -m lvm_jax.main --config=configs/sandwich_contrastive.py --workdir=runs/sandwich
  python -m lvm_jax.main --config=configs/sandwich_contrastive.py:tiny --workdir=runs/sandwich_tiny
"""

from lvm_jax.config_base import apply_argument, base_config


def get_config(arg=None):
  config = base_config()
  config.model.name = "mamba_sandwich"
  config.model.dropout = 0.05
  return apply_argument(config, arg, __file__, n_layers=1)
