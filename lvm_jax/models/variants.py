"""The reference system's five model variants and `create_model`."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import jax.numpy as jnp

from lvm_jax.cli import did_you_mean
from lvm_jax.models.lnsp import LNSP_VARIANTS, build_lnsp_model
from lvm_jax.models.model import RESIDUAL_MIXINGS, BlockKind, LatentVectorModel
from lvm_jax.ops.scan import MODES


MAMBA, ATTENTION, GRU = BlockKind.MAMBA.value, BlockKind.ATTENTION.value, BlockKind.GRU.value


def _hybrid_blocks(n_layers: int, every: int = 4) -> Tuple[str, ...]:
  return tuple(ATTENTION if (i + 1) % every == 0 else MAMBA for i in range(n_layers))


@dataclasses.dataclass(frozen=True)
class Variant:
  """A variant's default sizes; `layout(sizes)` turns them into the block sequence."""
  defaults: Dict[str, Any]
  layout: Any


_COMMON = dict(vector_dim=768, d_conv=4, expand=2, dropout=0.05, alignment_head=False,
               alignment_alpha=0.25, scan_mode="auto", scan_chunk_size=None, dtype="float32",
               residual=False, residual_decay=0.0, residual_mixing="fixed", residual_max_lag=16)

VARIANTS: Dict[str, Variant] = {
    "mamba_s": Variant(
        dict(_COMMON, n_layers=8, d_model=256, d_state=128),
        lambda s: (MAMBA,) * s["n_layers"]),
    "mamba_hybrid_local": Variant(
        dict(_COMMON, n_layers=12, d_model=320, d_state=128, window=8, num_heads=4,
             attention_every=4),
        lambda s: _hybrid_blocks(s["n_layers"], s["attention_every"])),
    "mamba_xl": Variant(
        dict(_COMMON, n_layers=16, d_model=384, d_state=192),
        lambda s: (MAMBA,) * s["n_layers"]),
    "mamba_sandwich": Variant(
        dict(_COMMON, n_attention_front=2, n_layers=8, n_attention_back=2, d_model=320,
             d_state=160, window=8, num_heads=4),
        lambda s: ((ATTENTION,) * s["n_attention_front"] + (MAMBA,) * s["n_layers"]
                   + (ATTENTION,) * s["n_attention_back"])),
    "mamba_gr": Variant(
        dict(_COMMON, n_layers=10, d_model=288, d_state=144, gru_hidden=256,
             gru_state_handoff=False),
        lambda s: (MAMBA, GRU) * s["n_layers"]),
}
ALIASES = {"mamba_h": "mamba_hybrid_local"}

_POSITIVE_INTS = ("vector_dim", "residual_max_lag", "n_layers", "d_model", "d_state", "d_conv", "expand", "window",
                  "num_heads", "gru_hidden", "attention_every")
_NON_NEGATIVE_INTS = ("n_attention_front", "n_attention_back")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_names() -> Tuple[str, ...]:
  return tuple(VARIANTS) + tuple(ALIASES) + tuple(LNSP_VARIANTS)


def resolve_sizes(name: str, **overrides) -> Dict[str, Any]:
  """The variant's defaults with `overrides` applied and checked."""
  canonical = ALIASES.get(name, name)
  known = {**VARIANTS, **LNSP_VARIANTS}  # lnsp_*: the reference's own blocks (lnsp.py)
  if canonical not in known:
    raise ValueError(f"create_model: unknown model {name!r};{did_you_mean(name, model_names())} "
                     f"valid names: {', '.join(model_names())}.")
  sizes = dict(known[canonical].defaults)
  unknown = sorted(set(overrides) - set(sizes))
  if unknown:
    raise ValueError(f"create_model({name!r}): unknown option(s) {unknown}; "
                     f"valid options: {', '.join(sorted(sizes))}.")
  sizes.update(overrides)
  for key in _POSITIVE_INTS + _NON_NEGATIVE_INTS:
    if key in sizes:
      value = sizes[key]
      minimum = 1 if key in _POSITIVE_INTS else 0
      if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"create_model({name!r}): {key} must be an integer >= {minimum}, "
                         f"got {value!r}.")
  if not 0.0 <= float(sizes["dropout"]) < 1.0:
    raise ValueError(f"create_model({name!r}): dropout must be in [0, 1), got {sizes['dropout']!r}.")
  if "num_heads" in sizes and sizes["d_model"] % sizes["num_heads"]:
    raise ValueError(f"create_model({name!r}): d_model={sizes['d_model']} is not divisible by "
                     f"num_heads={sizes['num_heads']}; pick sizes where it is.")
  if sizes["scan_mode"] not in MODES:
    raise ValueError(f"create_model({name!r}): scan_mode {sizes['scan_mode']!r} is not one of {MODES}.")
  if sizes["residual_mixing"] not in RESIDUAL_MIXINGS:
    raise ValueError(f"create_model({name!r}): residual_mixing {sizes['residual_mixing']!r} is "
                     f"not one of {RESIDUAL_MIXINGS}.")
  if sizes["dtype"] not in _DTYPES:
    raise ValueError(f"create_model({name!r}): dtype {sizes['dtype']!r} is not one of "
                     f"{tuple(_DTYPES)} (parameters are always float32).")
  return sizes


def create_model(name: str, **overrides) -> LatentVectorModel:
  """Builds variant `name` (see VARIANTS) with its reference sizes, overridden by `overrides`."""
  sizes = resolve_sizes(name, **overrides)
  if name in LNSP_VARIANTS:
    return build_lnsp_model(name, sizes, _DTYPES[sizes["dtype"]])
  blocks = VARIANTS[ALIASES.get(name, name)].layout(sizes)
  return LatentVectorModel.from_sizes(
      sizes, blocks, _DTYPES[sizes["dtype"]],
      gru_state_handoff=bool(sizes.get("gru_state_handoff", False)),
      residual=bool(sizes["residual"]), residual_decay=float(sizes["residual_decay"]),
      residual_mixing=sizes["residual_mixing"], residual_max_lag=sizes["residual_max_lag"])
