"""What adapt will do before it does it: fine-tune or train from scratch, the config, the time.

Fine-tuning starts from the shipped model only when it reads the user's vectors: the same
dimension, and the same embedder when both the payload and the recipe record one (a MiniLM
model fed GTR-T5 vectors of the same size would start from noise, and slowly). Otherwise the
recipe's "cpu" config trains from scratch. The recipe (configs/s_realtext.py) and the shipped
model (pretrained/) sit in the repository, not in the package: they are found beside the
lvm_jax package, which is the repository root of the README's `pip install -e .`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from typing import Optional

import lvm_jax
from lvm_jax.data import provenance as provenance_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(lvm_jax.__file__)))
RECIPE = os.path.join("configs", "s_realtext.py")
INSTALL_FIX = ("Fix: run adapt from a clone of the repository installed as the README shows "
               "(pip install -e .), where configs/ and pretrained/ sit beside lvm_jax/")


@dataclasses.dataclass(frozen=True)
class Shipped:
  """The shipped model as adapt needs it: where, which vectors, and how fast it trained."""
  path: str
  vector_dim: int
  embedder_id: Optional[str]
  windows_per_s: float  # its own training rate (history.json: sequences_per_s, 2 CPU cores)


@dataclasses.dataclass(frozen=True)
class Start:
  """init_from: the shipped model's path, or "" to train from scratch; why: one line."""
  init_from: str
  why: str

  @property
  def recipe_arg(self) -> str:
    return "finetune" if self.init_from else "cpu"


def load_recipe(root: str = REPO_ROOT):
  """configs/s_realtext.py as a module (get_config, PRETRAINED, PRETRAINED_EMBEDDER)."""
  path = os.path.join(root, RECIPE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: the recipe adapt trains with is not there. {INSTALL_FIX}.")
  spec = importlib.util.spec_from_file_location("lvm_jax_adapt_recipe", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def read_shipped(path: str, embedder_id: Optional[str]) -> Shipped:
  """The shipped model's dimension (config.json) and training rate (history.json), read as
  JSON so that deciding needs no JAX."""
  config_path = os.path.join(path, "config.json")
  if not os.path.exists(config_path):
    raise FileNotFoundError(f"{path}: no shipped model here (config.json missing). "
                            f"{INSTALL_FIX}; or pass --pretrained DIR, or --from_scratch.")
  with open(config_path, encoding="utf-8") as handle:
    dim = int(json.load(handle)["data"]["vector_dim"])
  rates = []
  history_path = os.path.join(path, "history.json")
  if os.path.exists(history_path):
    with open(history_path, encoding="utf-8") as handle:
      rates = [entry["sequences_per_s"] for entry in json.load(handle)
               if entry.get("sequences_per_s")]
  if not rates:
    raise ValueError(f"{history_path}: records no sequences_per_s, which adapt's time estimate "
                     "is calibrated on. Fix: pass the shipped model's directory as it ships.")
  return Shipped(path, dim, embedder_id, sum(rates) / len(rates))


def decide_start(vector_dim: int, embedder_id: Optional[str], shipped: Shipped, *,
                 from_scratch: bool = False) -> Start:
  """Fine-tune the shipped model when it reads these vectors, else train from scratch."""
  name = os.path.relpath(shipped.path, REPO_ROOT) if shipped.path.startswith(REPO_ROOT) \
      else shipped.path
  scratch = "training from scratch (configs/s_realtext.py:cpu)"
  if from_scratch:
    return Start("", f"{scratch}: --from_scratch.")
  if vector_dim != shipped.vector_dim:
    return Start("", f"{scratch}: your vectors are {vector_dim}-d and the shipped model {name} "
                     f"reads {shipped.vector_dim}-d ones ({shipped.embedder_id}).")
  ours = provenance_lib.canonical_value("embedder_id", embedder_id)
  theirs = provenance_lib.canonical_value("embedder_id", shipped.embedder_id)
  if ours and theirs and ours != theirs:
    return Start("", f"{scratch}: your payload's embedder {embedder_id!r} is not the one the "
                     f"shipped model {name} was trained on ({shipped.embedder_id!r}).")
  what = f"embedder {embedder_id!r}" if ours else "no recorded embedder"
  return Start(shipped.path, f"fine-tuning the shipped model {name} (configs/s_realtext.py:"
                             f"finetune): your payload's vectors are {vector_dim}-d with {what}, "
                             "as it reads.")


# Beyond the epochs, from adapt's run on 22,697 train / 2,900 val windows (docs/adapt.md):
COMPILE_SECONDS = 40.0  # compiling the step and the predict functions, loading the start
VAL_PASSES_AFTER = 14  # the reranker and the margin table cost ~14 val passes at the train rate


@dataclasses.dataclass(frozen=True)
class Estimate:
  epochs: int
  seconds: float
  windows_per_s: float
  line: str


def estimate(train_windows: int, val_windows: int, vector_dim: int, shipped: Shipped, *,
             recipe_epochs: int, epochs: int = 0, budget_minutes: float = 0.0,
             setup_seconds: float = 0.0) -> Estimate:
  """Epochs and time, at the shipped model's own training rate scaled by the vector dimension
  (the bank InfoNCE and the projections grow with it). An epoch trains the train windows and
  validates the val ones; setup_seconds (work still to come before training; adapt has
  none, since the loop reuses its baseline fit) and COMPILE_SECONDS come before, VAL_PASSES_AFTER after. --epochs wins; otherwise the
  recipe's epochs, capped so that the whole run fits --budget_minutes."""
  rate = shipped.windows_per_s * min(1.0, shipped.vector_dim / max(vector_dim, 1))
  per_epoch = (train_windows + val_windows) / rate
  fixed = setup_seconds + COMPILE_SECONDS + VAL_PASSES_AFTER * val_windows / rate
  cap = ""
  if epochs:
    chosen = epochs
  else:
    chosen = recipe_epochs
    if budget_minutes and fixed + recipe_epochs * per_epoch > budget_minutes * 60:
      chosen = max(1, math.floor((budget_minutes * 60 - fixed) / per_epoch))
      cap = (f"; the recipe's {recipe_epochs} epochs would take about "
             f"{(fixed + recipe_epochs * per_epoch) / 60:.0f} min, so {chosen} fit "
             f"--budget_minutes {budget_minutes:g}")
  seconds = fixed + chosen * per_epoch
  scaled = f", scaled to {vector_dim}-d" if rate < shipped.windows_per_s else ""
  line = (f"adapt: about {max(1, round(seconds / 60))} min on 2 CPU cores: up to {chosen} "
          f"epoch{'s' if chosen > 1 else ''} over {train_windows:,} train windows (validating "
          f"{val_windows:,} val windows each), at about {rate:,.0f} windows/s (the shipped "
          f"model's own training rate{scaled}), plus {fixed / 60:.1f} min to set up, fit the "
          f"reranker and judge; early stopping may end it sooner{cap}.")
  return Estimate(chosen, seconds, rate, line)


def adapt_config(recipe, start: Start, *, train: str, val: str, payload: str, eval_path: str,
                 epochs: int, backend: str, seed: int = 0):
  """The recipe's config for this start, on the user's data: the workdir then records every
  path eval, predict and fit_reranker read (absolute, so any working directory will do)."""
  config = recipe.get_config(start.recipe_arg)
  config.train.init_from = start.init_from
  config.data.train_path, config.data.val_path = os.path.abspath(train), os.path.abspath(val)
  config.data.payload_path = os.path.abspath(payload)
  config.evals.retrieval.payload_path = config.data.payload_path
  config.evals.retrieval.eval_path = os.path.abspath(eval_path) if eval_path else ""
  config.train.num_epochs = epochs
  config.backend = backend
  config.seed = seed
  return config
