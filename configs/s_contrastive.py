"""The reference regime: mamba_s at d_model 768, InfoNCE (0.7) + AR cosine (0.3).

Run:
  python -m lvm_jax.main --config=configs/s_contrastive.py --workdir=runs/s_contrastive
Shrunk for 2 CPU cores (about a minute):
  python -m lvm_jax.main --config=configs/s_contrastive.py:tiny --workdir=runs/s_tiny
"""

from lvm_jax.config_base import base_config, shrink_to_tiny


def get_config(arg=None):
  config = base_config()
  if arg in ("tiny", "runlocal"):
    shrink_to_tiny(config)
  elif arg:
    raise ValueError(f"configs/s_contrastive.py: unknown argument {arg!r}; use 'tiny' or none.")
  return config
