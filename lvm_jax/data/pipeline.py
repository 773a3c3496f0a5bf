"""Training batches from a SequenceSet: shuffled per (seed, epoch), sharded per host, prefetched.

Every step consumes `process_count * sequences_per_step` sequences of one
global permutation drawn from (seed, epoch); host p takes its contiguous slice
of each step, so all hosts agree on the order without talking, each gathers
only its own rows, and a run restarted at (epoch, step) sees exactly the
batches it would have seen. The tail that does not fill a whole step is
dropped (counted and logged) so every step has the same static shape.

Batches are dicts of
  contexts   [local_devices, accum_steps, micro_batch, L, dim] float32
  targets    [local_devices, accum_steps, micro_batch, dim] float32
  target_ids [local_devices, accum_steps, micro_batch] int64
as numpy arrays (prefetch=0) or as device arrays sharded over the leading
axis, staged by a background thread `prefetch` batches ahead.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Dict, Iterator, Optional, Sequence

import jax
import numpy as np
from absl import logging

from lvm_jax.data.errors import data_error
from lvm_jax.data.sequences import SequenceSet

BATCH_FIELDS = ("contexts", "targets", "target_ids")


def epoch_permutation(num_sequences: int, seed: int, epoch: int) -> np.ndarray:
  """[num_sequences] int64: the same for every host and every restart of (seed, epoch)."""
  return np.random.default_rng([seed, epoch]).permutation(num_sequences)


def leading_axis_sharding(devices: Sequence[jax.Device], ndim: int):
  """Places axis 0 of an array across `devices`, in the layout pmap reads without copying."""
  if hasattr(jax.sharding, "PmapSharding") and len(devices) > 1:
    return lambda shape: jax.sharding.PmapSharding.default(shape, 0, devices)
  mesh = jax.sharding.Mesh(np.asarray(devices), ("devices",))
  spec = jax.sharding.PartitionSpec("devices", *([None] * (ndim - 1)))
  named = jax.sharding.NamedSharding(mesh, spec)
  return lambda shape: named


def put_on_devices(batch: Dict[str, np.ndarray], devices: Sequence[jax.Device]):
  """numpy batch [devices, ...] -> device arrays split over the leading axis."""
  return {name: jax.device_put(array, leading_axis_sharding(devices, array.ndim)(array.shape))
          for name, array in batch.items()}


class TrainingPipeline:
  """One epoch = `iterate(epoch)`; `iterate(epoch, start_step)` resumes inside an epoch.

  Args:
    sequence_set: full or compact SequenceSet (anything with num_sequences,
      context_length, vector_dim and batch(indices)).
    micro_batch: sequences per device per micro-batch.
    accum_steps: micro-batches per device per optimiser step.
    num_devices: local devices fed per step (default: all local devices).
    seed: shuffling seed; the epoch number is folded in.
    process_index, process_count: this host and the number of hosts.
    prefetch: batches staged on device ahead of the consumer; 0 returns numpy
      batches from the calling thread.
    devices: the devices to place batches on (default: the first num_devices local ones).
    place: numpy batch -> device batch (default: split over `devices` along axis 0); the
      training loop passes the mesh's placement, which builds global arrays.
    bank_rows: payload rows drawn per device and step as extra negatives
      (config.loss.bank_negatives): batches gain "bank_vectors" [devices, K, dim]
      and "bank_ids" [devices, K]; -1 or more than the payload holds takes every
      row. Draws are seeded by (seed, epoch, step, host, device), so a resumed
      run sees the same ones. Needs the compact form (the payload).
  """

  def __init__(self, sequence_set: SequenceSet, *, micro_batch: int, accum_steps: int = 1,
               num_devices: Optional[int] = None, seed: int = 0, process_index: int = 0,
               process_count: int = 1, prefetch: int = 2,
               devices: Optional[Sequence[jax.Device]] = None,
               place: Optional[Callable[[Dict[str, np.ndarray]], Dict]] = None,
               bank_rows: int = 0):
    if devices is None:
      local = jax.local_devices()
      devices = local[:num_devices] if num_devices else local
    self.devices = list(devices)
    self.num_devices = len(self.devices) if num_devices is None else int(num_devices)
    if self.num_devices != len(self.devices):
      raise ValueError(f"TrainingPipeline: num_devices={num_devices} but {len(self.devices)} "
                       "devices are available; lower num_devices or pass devices=.")
    if micro_batch < 1 or accum_steps < 1:
      raise ValueError(f"TrainingPipeline: micro_batch={micro_batch} and "
                       f"accum_steps={accum_steps} must be >= 1 (config.train.batch_size, "
                       "config.train.accum_steps).")
    if not 0 <= process_index < process_count:
      raise ValueError(f"TrainingPipeline: process_index={process_index} is not in "
                       f"[0, process_count={process_count}).")
    if bank_rows and getattr(sequence_set, "payload", None) is None:
      raise data_error(getattr(sequence_set, "source", "<train set>"), "payload_rows",
                       "is a set without its payload, but bank negatives draw payload rows",
                       "use the compact form (*_rows.npz with config.data.payload_path) or set "
                       "config.loss.bank_negatives=0")
    self.bank_rows = int(bank_rows)
    self.sequence_set = sequence_set
    self.micro_batch = int(micro_batch)
    self.accum_steps = int(accum_steps)
    self.seed = int(seed)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.prefetch = int(prefetch)
    self.place = place
    self.sequences_per_step = self.num_devices * self.accum_steps * self.micro_batch  # this host
    self.global_sequences_per_step = self.sequences_per_step * self.process_count
    self.num_sequences = sequence_set.num_sequences
    self.steps_per_epoch = self.num_sequences // self.global_sequences_per_step
    self.dropped_per_epoch = self.num_sequences - self.steps_per_epoch * \
        self.global_sequences_per_step
    if self.steps_per_epoch == 0:
      raise data_error(getattr(sequence_set, "source", "<train set>"), "num_sequences",
                       f"holds {self.num_sequences} sequences but one step needs "
                       f"{self.global_sequences_per_step} ({self.process_count} hosts x "
                       f"{self.num_devices} devices x {self.accum_steps} accumulation steps x "
                       f"{self.micro_batch} micro-batch)", "lower config.train.batch_size or "
                       "config.train.accum_steps, or use more data")
    logging.info("Input pipeline: %d sequences, %d steps per epoch of %d sequences (%d per "
                 "host); %d dropped per epoch (the remainder that does not fill a step).",
                 self.num_sequences, self.steps_per_epoch, self.global_sequences_per_step,
                 self.sequences_per_step, self.dropped_per_epoch)

  def step_indices(self, epoch: int, step: int, permutation: Optional[np.ndarray] = None
                   ) -> np.ndarray:
    """This host's sequence indices for (epoch, step): [num_devices, accum_steps, micro_batch]."""
    if not 0 <= step < self.steps_per_epoch:
      raise IndexError(f"step {step} is outside [0, {self.steps_per_epoch}) for this epoch")
    if permutation is None:
      permutation = epoch_permutation(self.num_sequences, self.seed, epoch)
    start = step * self.global_sequences_per_step + self.process_index * self.sequences_per_step
    indices = permutation[start:start + self.sequences_per_step]
    return indices.reshape(self.num_devices, self.accum_steps, self.micro_batch)

  def host_batch(self, indices: np.ndarray) -> Dict[str, np.ndarray]:
    """Gathers a numpy batch for indices [num_devices, accum_steps, micro_batch]."""
    contexts, targets, target_ids = self.sequence_set.batch(indices.reshape(-1))
    lead = indices.shape
    return {"contexts": np.asarray(contexts, np.float32).reshape(lead + contexts.shape[1:]),
            "targets": np.asarray(targets, np.float32).reshape(lead + targets.shape[1:]),
            "target_ids": np.asarray(target_ids, np.int64).reshape(lead)}

  def host_batches(self, epoch: int, start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
    """Numpy batches of `epoch` from `start_step`, in the calling thread."""
    if not 0 <= start_step <= self.steps_per_epoch:
      raise IndexError(f"start_step {start_step} is outside [0, {self.steps_per_epoch}]")
    permutation = epoch_permutation(self.num_sequences, self.seed, epoch)
    for step in range(start_step, self.steps_per_epoch):
      batch = self.host_batch(self.step_indices(epoch, step, permutation))
      if self.bank_rows:
        batch.update(self.bank_batch(epoch, step))
      yield batch

  def bank_batch(self, epoch: int, step: int) -> Dict[str, np.ndarray]:
    """Each device's draw of payload rows for (epoch, step): vectors and row ids."""
    payload = self.sequence_set.payload
    count = payload.num_rows if self.bank_rows < 0 else min(self.bank_rows, payload.num_rows)
    if count == payload.num_rows:  # every row: a view of the payload, no gather per step
      shape = (self.num_devices,) + payload.vectors.shape
      return {"bank_vectors": np.broadcast_to(np.asarray(payload.vectors, np.float32), shape),
              "bank_ids": np.broadcast_to(np.arange(count, dtype=np.int64),
                                          (self.num_devices, count))}
    ids = np.stack([np.sort(np.random.default_rng(
        [self.seed, epoch, step, self.process_index, device]).choice(
            payload.num_rows, count, replace=False)) for device in range(self.num_devices)])
    return {"bank_vectors": np.asarray(payload.vectors[ids], np.float32), "bank_ids": ids}

  def iterate(self, epoch: int, start_step: int = 0) -> Iterator[Dict]:
    """Batches of `epoch` from `start_step`; prefetched to device when prefetch > 0."""
    batches = self.host_batches(epoch, start_step)
    if self.prefetch <= 0:
      return batches if self.place is None else map(self.place, batches)
    place = self.place or (lambda batch: put_on_devices(batch, self.devices))
    return _prefetch_to_devices(batches, place, self.prefetch)


def _prefetch_to_devices(batches: Iterator[Dict[str, np.ndarray]], place, depth: int):
  """Runs gather + device_put in a daemon thread `depth` batches ahead of the consumer.

  Errors in the thread are re-raised in the consumer; closing the generator
  (break, exception) stops the thread.
  """
  staged: "queue.Queue" = queue.Queue(maxsize=depth)
  stop = threading.Event()
  finished = object()

  def offer(item) -> bool:
    while not stop.is_set():
      try:
        staged.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for batch in batches:
        if not offer(place(batch)):
          return
      offer(finished)
    except BaseException as error:  # handed to the consumer, which re-raises it
      offer(error)

  thread = threading.Thread(target=produce, name="lvm-prefetch", daemon=True)
  thread.start()

  def consume():
    try:
      while True:
        item = staged.get()
        if item is finished:
          return
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()
      thread.join(timeout=10)

  return consume()
