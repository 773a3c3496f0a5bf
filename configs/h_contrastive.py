"""mamba_hybrid_local (every 4th block causal local attention) in the contrastive regime.

Run:
  python -m lvm_jax.main --config=configs/h_contrastive.py --workdir=runs/h_contrastive
  python -m lvm_jax.main --config=configs/h_contrastive.py:tiny --workdir=runs/h_tiny
"""

from lvm_jax.config_base import base_config, shrink_to_tiny


def get_config(arg=None):
  config = base_config()
  config.model.name = "mamba_hybrid_local"
  config.model.n_layers = 12
  config.model.d_model = 320
  config.model.d_state = 128
  config.model.dropout = 0.05
  config.model.window = 8
  config.model.num_heads = 4
  if arg in ("tiny", "runlocal"):
    shrink_to_tiny(config)
    config.model.n_layers = 4
  elif arg:
    raise ValueError(f"configs/h_contrastive.py: unknown argument {arg!r}; use 'tiny' or none.")
  return config
