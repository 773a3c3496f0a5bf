"""Reads a reference `best.pt` (app/lvm/train_mamba_contrastive.py) as this project's model.

The CLI that writes it into a workdir is `python -m lvm_jax.import_torch` (it
writes through lvm_jax.checkpoint); this module only reads and maps.

best.pt is a pickle (epoch, model_state_dict, projection_head_state_dict,
optimizer_state_dict, val_cosine, val_loss, args): reading it can run code, so
it is refused without --trust_pickle. The model config is rebuilt from `args`
as an lnsp_* model (the reference's own blocks) with the reference trainer's
head (head.kind = "lnsp"); every tensor is mapped by name with its shape
checked. """

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from lvm_jax.config_base import base_config
from lvm_jax.models.predictor import model_from_config
from lvm_jax.models.projection import create_head
from lvm_jax.models.lnsp import LNSP_PREFIX, LNSP_VARIANTS
from lvm_jax.models.lnsp_import import StateDictMismatch, state_dict_to_params

REQUIRED_KEYS = ("model_state_dict", "projection_head_state_dict", "args")
# The reference's AdamW: torch defaults, which optax.adamw shares.
TORCH_ADAMW = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False}


class TorchImportError(ValueError):
  """best.pt cannot be imported as asked; the message says why and what to do."""


def read_best_pt(src: str, *, trust_pickle: bool) -> Dict[str, Any]:
  """The checkpoint dict with every tensor as a float32 NumPy array (torch needed)."""
  if not trust_pickle:
    raise TorchImportError(f"{src}: not read: a .pt file is a pickle and loading it can run "
                           "arbitrary code; pass --trust_pickle if you trust where it came from.")
  if not os.path.isfile(src):
    raise TorchImportError(f"{src}: no such file; pass the best.pt that the reference trainer "
                           "wrote.")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as error:
    raise TorchImportError("reading best.pt needs PyTorch: pip install -e '.[torch]'.") from error
  # weights_only=False: args holds a pathlib.Path (save_dir), which the safe loader refuses.
  raw = torch.load(src, map_location="cpu", weights_only=False)
  if not isinstance(raw, dict) or any(key not in raw for key in REQUIRED_KEYS):
    found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
    raise TorchImportError(f"{src}: not a reference best.pt: needs keys {list(REQUIRED_KEYS)}, "
                           f"found {found}; pass the file app/lvm/train_mamba_contrastive.py "
                           "saved.")

  def to_numpy(value):
    if isinstance(value, torch.Tensor):
      return value.detach().cpu().float().numpy()
    if isinstance(value, dict):
      return type(value)((k, to_numpy(v)) for k, v in value.items())
    if isinstance(value, list):
      return [to_numpy(v) for v in value]
    return value

  out = {k: to_numpy(v) for k, v in raw.items() if k != "args"}
  out["args"] = raw["args"] if isinstance(raw["args"], dict) else vars(raw["args"])
  return out


def config_from_args(args: Mapping[str, Any], vector_dim: int,
                     src: str = "best.pt") -> ml_collections.ConfigDict:
  """This project's config for the reference trainer's argparse values `args`.

  Model fields follow the trainer's own model_kwargs (sandwich: n_layers_mamba
  and n_layers_local; hybrid: n_layers, window, every, heads; 'gr': gru_hidden);
  a field absent from args takes the reference constructor's default.
  """
  model_type = args.get("model_type")
  name = f"{LNSP_PREFIX}{model_type}"
  if name not in LNSP_VARIANTS:
    raise TorchImportError(f"{src}: args.model_type={model_type!r} is not one of the reference's "
                           f"models {[n[len(LNSP_PREFIX):] for n in LNSP_VARIANTS]}.")
  defaults = LNSP_VARIANTS[name].defaults
  pick = lambda theirs, ours: args.get(theirs, defaults.get(ours))
  config = base_config()
  model = config.model
  model.name = name
  model.d_model, model.d_state = pick("d_model", "d_model"), pick("d_state", "d_state")
  model.d_conv, model.expand = pick("conv_sz", "d_conv"), pick("expand", "expand")
  model.dropout = float(pick("dropout", "dropout"))
  model.alignment_head = bool(args.get("use_alignment_head", False))
  if "alignment_alpha" in args:
    model.alignment_alpha = float(args["alignment_alpha"])
  if "sandwich" in model_type:
    local = pick("n_layers_local", None)
    if local is None:
      local = defaults["n_attention_front"] + defaults["n_attention_back"]
    if local % 2:
      raise TorchImportError(f"{src}: args.n_layers_local={local} is odd; the reference splits it "
                             "evenly front and back and cannot have built this model.")
    model.n_layers = pick("n_layers_mamba", "n_layers")
    model.n_attention_front = model.n_attention_back = local // 2
  else:
    model.n_layers = pick("n_layers", "n_layers")
  if "sandwich" in model_type or "hybrid" in model_type:
    model.window, model.num_heads = pick("local_attn_win", "window"), pick("n_heads", "num_heads")
  if "hybrid" in model_type:
    model.attention_every = pick("local_attn_every", "attention_every")
  if "gr" in model_type:
    model.gru_hidden = pick("gru_hidden", "gru_hidden")

  config.head.kind = "lnsp"
  config.head.hidden_dim = args.get("proj_hidden", config.head.hidden_dim)
  config.head.out_dim = args.get("proj_out", config.head.out_dim)
  config.data.vector_dim = vector_dim
  config.data.synthetic.dim = vector_dim
  # The reference scores only the last position, with in-batch negatives per micro-batch.
  config.loss.positions, config.loss.negatives = "last", "micro"
  for section, ours, theirs in (
      ("loss", "contrastive_weight", "lambda_con"), ("loss", "ar_weight", "lambda_ar"),
      ("loss", "temperature", "temperature"), ("augment", "article_dropout", "article_dropout"),
      ("augment", "span_corruption", "span_corruption"), ("train", "batch_size", "batch_size"),
      ("train", "accum_steps", "grad_accum_steps"), ("train", "num_epochs", "epochs"),
      ("train", "learning_rate", "lr"), ("train", "weight_decay", "weight_decay"),
      ("train", "warmup_steps", "warmup_steps"),
      ("train", "early_stopping_patience", "early_stop_patience")):
    if theirs in args:
      config[section][ours] = type(config[section][ours])(args[theirs])
  # Hard-coded in the reference trainer: clip_grad_norm_(1.0), min_lr_ratio 0.01.
  config.train.clip_norm, config.train.final_lr_fraction = 1.0, 0.01
  return config


def optimizer_step(optimizer_state: Optional[Mapping[str, Any]]) -> int:
  """The reference's optimizer step (AdamW's per-parameter 'step'); 0 without a state."""
  steps = [float(np.asarray(s["step"])) for s in (optimizer_state or {}).get("state", {}).values()
           if "step" in s]
  return int(round(max(steps))) if steps else 0


def adam_moments(optimizer_state: Mapping[str, Any], state_dicts, templates, src: str):
  """(mu, nu) trees shaped like params {"model", "head"} from torch AdamW's exp_avg(_sq).

  torch indexes its state by position in list(model.parameters()) +
  list(head.parameters()), which for these buffer-free modules is the order of
  their state dicts.
  """
  groups = optimizer_state.get("param_groups", [])
  for group in groups:
    for key, value in TORCH_ADAMW.items():
      found = tuple(group.get(key, value)) if key == "betas" else group.get(key, value)
      if found != value:
        raise TorchImportError(f"{src}: optimizer_state_dict param_groups {key}={found!r}, but "
                               f"this project's AdamW uses {value!r}; import without "
                               "--import_optimizer.")
  indices = [i for group in groups for i in group["params"]]
  names = [(part, name) for part in ("model", "head") for name in state_dicts[part]]
  if len(indices) != len(names):
    raise TorchImportError(f"{src}: optimizer_state_dict covers {len(indices)} parameters, the "
                           f"model and head have {len(names)}; import without "
                           "--import_optimizer.")
  moments = {"exp_avg": {"model": {}, "head": {}}, "exp_avg_sq": {"model": {}, "head": {}}}
  state = optimizer_state.get("state", {})
  without_state = []
  for index, (part, name) in zip(indices, names):
    entry = state.get(index)
    if entry is None:  # torch keeps no state for a parameter that never had a gradient
      without_state.append(name)
    for key in moments:
      moments[key][part][name] = (np.zeros_like(state_dicts[part][name]) if entry is None
                                  else entry[key])
  if without_state:
    logging.warning("%s: no AdamW state for %d parameter(s) (never updated): %s; zero moments.",
                    src, len(without_state), ", ".join(without_state))
  return tuple({part: state_dict_to_params(moments[key][part], templates[part],
                                           source=f"{src} optimizer_state_dict {key}")
                for part in ("model", "head")} for key in ("exp_avg", "exp_avg_sq"))


@dataclasses.dataclass
class ImportedModel:
  """best.pt as this project's values: what checkpoint writes, and what the record keeps."""
  config: ml_collections.ConfigDict
  params: Dict[str, Any]  # {"model": ..., "head": ...}
  step: int  # the reference's optimizer step
  moments: Optional[Tuple[Any, Any]]  # AdamW (mu, nu) trees, or None: a fresh optimizer
  raw: Dict[str, Any]  # the rest of best.pt (epoch, val_cosine, val_loss, args)


def convert_best_pt(src: str, *, trust_pickle: bool = False,
                    import_optimizer: bool = False) -> ImportedModel:
  """Reads `src` and maps it onto an lnsp_* model and head; writes nothing."""
  raw = read_best_pt(src, trust_pickle=trust_pickle)
  state_dicts = {"model": raw["model_state_dict"], "head": raw["projection_head_state_dict"]}
  if "input_proj.weight" not in state_dicts["model"]:
    raise TorchImportError(f"{src}: model_state_dict has no input_proj.weight; not a model from "
                           "app/lvm/mamba (the reference's create_model).")
  vector_dim = int(state_dicts["model"]["input_proj.weight"].shape[1])
  config = config_from_args(raw["args"], vector_dim, src)
  model = model_from_config(config, vector_dim)
  head = create_head(config.head)
  dummy = jax.ShapeDtypeStruct((1, config.data.context_length, vector_dim), jnp.float32)
  templates = {
      "model": jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), dummy)["params"],
      "head": jax.eval_shape(lambda x: head.init(jax.random.PRNGKey(0), x[:, 0]),
                             dummy)["params"]}
  sources = {"model": f"{src} model_state_dict", "head": f"{src} projection_head_state_dict"}
  params = {part: state_dict_to_params(state_dicts[part], templates[part], source=sources[part])
            for part in ("model", "head")}
  optimizer_state = raw.get("optimizer_state_dict")
  step = optimizer_step(optimizer_state)
  moments = None
  if import_optimizer:
    if not optimizer_state or not optimizer_state.get("state"):
      raise TorchImportError(f"{src}: --import_optimizer, but it holds no AdamW state; import "
                             "without it to start the optimizer fresh.")
    moments = adam_moments(optimizer_state, state_dicts, templates, src)
    logging.info("Optimizer: AdamW moments imported at step %d.", step)
  else:
    logging.info("Optimizer: started fresh (AdamW moments not imported; pass --import_optimizer "
                 "to carry them); the learning-rate schedule resumes at step %d.", step)
  return ImportedModel(config, params, step, moments, raw)
