"""Continue training a reference checkpoint imported by `python -m lvm_jax.import_torch`.

The argument is the import's workdir; its config.json (rebuilt from the
reference's args) is laid over the base config, so the model, the lnsp head and
the training regime match the checkpoint:

  python -m lvm_jax.main --config=configs/lnsp_imported.py:runs/imported --workdir=runs/imported \
      --config.data.train_path=train.npz --config.data.val_path=val.npz

Without data paths it trains on the synthetic corpus at the imported vector_dim.
"""

import json
import os

from lvm_jax.config_base import base_config
from lvm_jax.workdir import Workdir


def get_config(workdir=None):
  if not workdir:
    raise ValueError("configs/lnsp_imported.py needs the import's workdir: "
                     "--config=configs/lnsp_imported.py:DIR")
  path = Workdir(workdir).config
  if not os.path.exists(path):
    raise ValueError(f"{path}: not found; run python -m lvm_jax.import_torch --workdir "
                     f"{workdir} first.")
  config = base_config()
  with open(path) as f:
    config.update(json.load(f))
  return config
