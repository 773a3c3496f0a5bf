"""The reference's PyTorch state dicts <-> lnsp_* Flax parameters: pure functions, no torch.

The lnsp modules are named after the PyTorch attributes, so the mapping is
mechanical: "layers_3" <-> "layers.3", a Dense kernel [in, out] is the
transpose of nn.Linear's weight [out, in], a LayerNorm scale is its weight,
the depthwise conv kernel [width, C] is Conv1d's weight [C, 1, width]
transposed, and everything else (RMSNorm weight, A_log, D, biases) is equal.
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Tuple

import flax
import numpy as np

PathKey = Tuple[str, ...]


class StateDictMismatch(ValueError):
  """A state dict does not fit the model: names missing, left over, or shapes differ."""


def torch_name(path: PathKey) -> str:
  """("layers_0", "in_proj", "kernel") -> "layers.0.in_proj.weight"."""
  *modules, leaf = path
  modules = [re.sub(r"_(\d+)$", r".\1", m) for m in modules]
  leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join(modules + [leaf])


def from_torch(path: PathKey, value: np.ndarray) -> np.ndarray:
  """A PyTorch tensor (as an array) in the layout of the Flax leaf at `path`."""
  value = np.asarray(value, np.float32)
  if path[-1] == "kernel" and len(path) > 1 and path[-2] == "conv1d":
    return np.ascontiguousarray(value[:, 0, :].T)  # [C, 1, width] -> [width, C]
  if path[-1] == "kernel":
    return np.ascontiguousarray(value.T)  # [out, in] -> [in, out]
  return value


def torch_shape(path: PathKey, shape: Tuple[int, ...]) -> Tuple[int, ...]:
  """The PyTorch shape of the Flax leaf at `path` with `shape`."""
  if path[-1] == "kernel" and len(path) > 1 and path[-2] == "conv1d":
    return (shape[1], 1, shape[0])
  if path[-1] == "kernel":
    return tuple(reversed(shape))
  return tuple(shape)


def state_dict_to_params(state_dict: Mapping[str, np.ndarray], template, *,
                         source: str = "state dict"):
  """Flax params with the structure of `template` (arrays or ShapeDtypeStructs), from torch names.

  Every template leaf must find its tensor with the matching shape, and every
  tensor must be used; otherwise StateDictMismatch lists all the offenders.
  """
  flat_template = flax.traverse_util.flatten_dict(flax.core.unfreeze(template))
  flat_params, missing, wrong_shape = {}, [], []
  used = set()
  for path, leaf in flat_template.items():
    name = torch_name(path)
    if name not in state_dict:
      missing.append(name)
      continue
    used.add(name)
    value = np.asarray(state_dict[name])
    expected = torch_shape(path, tuple(leaf.shape))
    if tuple(value.shape) != expected:
      wrong_shape.append(f"{name}: shape {tuple(value.shape)} in the file, {expected} expected")
      continue
    flat_params[path] = from_torch(path, value)
  unmapped = [name for name in state_dict if name not in used]
  problems = []
  if missing:
    problems.append(f"missing (the model needs them): {', '.join(missing)}")
  if unmapped:
    problems.append(f"unmapped (the model has no such parameter): {', '.join(unmapped)}")
  if wrong_shape:
    problems.append(f"wrong shape: {'; '.join(wrong_shape)}")
  if problems:
    raise StateDictMismatch(
        f"{source} does not fit the model rebuilt from its args: " + " | ".join(problems)
        + ". Check that the args saved with it describe the model that wrote it.")
  return flax.traverse_util.unflatten_dict(flat_params)


def params_to_state_dict(params) -> Dict[str, np.ndarray]:
  """The inverse of state_dict_to_params (names and PyTorch layouts; order not PyTorch's)."""
  out = {}
  for path, value in flax.traverse_util.flatten_dict(flax.core.unfreeze(params)).items():
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel" and len(path) > 1 and path[-2] == "conv1d":
      value = value.T[:, None, :]
    elif path[-1] == "kernel":
      value = value.T
    out[torch_name(path)] = np.ascontiguousarray(value)
  return out

