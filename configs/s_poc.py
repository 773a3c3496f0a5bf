"""The reference's failing baseline: mamba_s trained on the AR cosine loss alone.

Run:
  python -m lvm_jax.main --config=configs/s_poc.py --workdir=runs/s_poc
  python -m lvm_jax.main --config=configs/s_poc.py:tiny --workdir=runs/s_poc_tiny
"""

from lvm_jax.config_base import base_config, shrink_to_tiny


def get_config(arg=None):
  config = base_config()
  config.loss.contrastive_weight = 0.0
  config.loss.ar_weight = 1.0
  if arg in ("tiny", "runlocal"):
    shrink_to_tiny(config)
  elif arg:
    raise ValueError(f"configs/s_poc.py: unknown argument {arg!r}; use 'tiny' or none.")
  return config
