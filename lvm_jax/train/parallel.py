"""How the step spans devices: jit over a Mesh with a data axis, or vmap on one device (Metal).

"mesh" (the default): one global Mesh over every device of every process with
the data axis AXIS. The step is `jit(shard_map(train_step))`: each device runs
the same per-device code as pmap did (accumulation, `lax.pmean` / `lax.all_gather`
over AXIS), the state is one replicated global array tree, and each process
contributes its own slice of the batch (`make_array_from_process_local_data`).
"vmap": `jit(vmap(train_step))` over a size-1 axis on one device, for jax-metal,
whose single device runs neither pmap nor multi-device meshes.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lvm_jax import backend
from lvm_jax.config_base import Parallel

AXIS = "batch"


def resolve_parallel(name: str, platform: Optional[str] = None) -> Parallel:
  """config.train.parallel -> Parallel: "auto" is the mesh, except on Metal."""
  if name == Parallel.AUTO:
    return Parallel.VMAP if backend.is_metal(platform) else Parallel.MESH
  return Parallel(name)


def _shard_map(f, mesh, in_specs, out_specs):
  """shard_map without the replication check (the step pmeans what it returns replicated);
  jax.shard_map on current jax, jax.experimental.shard_map on 0.5.0."""
  if hasattr(jax, "shard_map"):
    return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
  from jax.experimental.shard_map import shard_map  # pylint: disable=g-import-not-at-top
  return shard_map(f, mesh, in_specs, out_specs, check_rep=False)


@dataclasses.dataclass
class DataParallel:
  """Places the state and the batches for `mode` and compiles the step for it."""
  mode: Parallel
  mesh: Optional[Mesh] = None

  @classmethod
  def create(cls, parallel: str, devices=None) -> "DataParallel":
    """devices: the mesh's devices (default: every device of every process)."""
    mode = resolve_parallel(parallel)
    if mode is Parallel.VMAP:
      return cls(mode)
    return cls(mode, Mesh(np.asarray(devices or jax.devices()), (AXIS,)))

  @property
  def local_devices(self):
    if self.mode is Parallel.VMAP:
      return jax.local_devices()[:1]
    return [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]

  @property
  def num_local_devices(self) -> int:
    return len(self.local_devices)

  def replicate(self, tree):
    """Host values -> the step's state layout (the same value on every device)."""
    if self.mode is Parallel.VMAP:
      return jax.device_put(jax.tree_util.tree_map(lambda x: np.asarray(x)[None], tree),
                            self.local_devices[0])
    sharding = NamedSharding(self.mesh, PartitionSpec())

    def place(x):
      value = np.asarray(x)
      return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree_util.tree_map(place, tree)

  def to_host(self, tree):
    """The state's value as numpy (this process's copy; every copy is the same)."""
    if self.mode is Parallel.VMAP:
      return jax.tree_util.tree_map(lambda x: np.asarray(x)[0], tree)
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)

  def place_batch(self, batch: Dict[str, np.ndarray]):
    """This process's numpy batch [local_devices, ...] -> the global batch [devices, ...]."""
    if self.mode is Parallel.VMAP:
      return jax.device_put(batch, self.local_devices[0])
    sharding = NamedSharding(self.mesh, PartitionSpec(AXIS))
    total = self.mesh.devices.size
    return {name: jax.make_array_from_process_local_data(
        sharding, array, (total,) + array.shape[1:]) for name, array in batch.items()}

  def compile_step(self, step: Callable) -> Callable:
    """step(state, batch_one_device, rng) -> (state, metrics) over all devices, state donated
    (except where backend.donate_argnums says a cached program mishandles it).

    The compiled step returns metrics with a leading device axis, as pmap did.
    """
    if self.mode is Parallel.VMAP:
      return jax.jit(jax.vmap(step, axis_name=AXIS, in_axes=(0, 0, None)),
                     donate_argnums=backend.donate_argnums((0,)))

    def per_device(state, batch, rng):
      state, metrics = step(state, jax.tree_util.tree_map(lambda x: x[0], batch), rng)
      return state, jax.tree_util.tree_map(lambda m: m[None], metrics)

    spec = PartitionSpec(AXIS)
    return jax.jit(_shard_map(per_device, self.mesh, in_specs=(PartitionSpec(), spec,
                                                               PartitionSpec()),
                              out_specs=(PartitionSpec(), spec)),
                   donate_argnums=backend.donate_argnums((0,)))


def first(metrics_tree):
  """Device-0 values of the step's metrics (all devices hold the same pmean'd values)."""
  return jax.tree_util.tree_map(
      lambda v: float(np.asarray(v.addressable_data(0) if isinstance(v, jax.Array) else v)
                      .reshape(-1)[0]), metrics_tree)
