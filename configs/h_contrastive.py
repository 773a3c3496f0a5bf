"""mamba_hybrid_local (every 4th block causal local attention) in the contrastive regime.

Run:
  python -m lvm_jax.main --config=configs/h_contrastive.py --workdir=runs/h_contrastive
  python -m lvm_jax.main --config=configs/h_contrastive.py:tiny --workdir=runs/h_tiny
"""

from lvm_jax.config_base import apply_argument, base_config


def get_config(arg=None):
  config = base_config()
  config.model.name = "mamba_hybrid_local"
  config.model.dropout = 0.05
  return apply_argument(config, arg, __file__, n_layers=4)
