"""mamba_xl (16 Mamba blocks, d_model 384, d_state 192) in the contrastive regime.

Run:
  python -m lvm_jax.main --config=configs/xl_contrastive.py --workdir=runs/xl_contrastive
  python -m lvm_jax.main --config=configs/xl_contrastive.py:tiny --workdir=runs/xl_tiny
"""

from lvm_jax.config_base import base_config, shrink_to_tiny


def get_config(arg=None):
  config = base_config()
  config.model.name = "mamba_xl"
  config.model.n_layers = 16
  config.model.d_model = 384
  config.model.d_state = 192
  config.model.dropout = 0.05
  if arg in ("tiny", "runlocal"):
    shrink_to_tiny(config)
  elif arg:
    raise ValueError(f"configs/xl_contrastive.py: unknown argument {arg!r}; use 'tiny' or none.")
  return config
