"""pipeline: shapes, per-(seed, epoch) shuffles, exact restart, host shards, remainder, prefetch."""

import os
import subprocess
import sys
import textwrap
import threading

import jax
import numpy as np
import pytest

from lvm_jax.data import pipeline as pipeline_lib
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.payload import Payload
from lvm_jax.data.sequences import SequenceSet
from lvm_jax.data.pipeline import TrainingPipeline

LENGTH, DIM = 5, 4


def compact_set(num_sequences=103):
  """Windows over one long article so every sequence is distinguishable by its target row."""
  rows_total = num_sequences + LENGTH
  vectors = np.random.default_rng(0).normal(size=(rows_total, DIM)).astype(np.float32)
  vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
  payload = Payload(vectors, np.zeros(rows_total, np.int64), np.arange(rows_total),
                    np.arange(rows_total))
  rows = (np.arange(num_sequences)[:, None] + np.arange(LENGTH + 1)).astype(np.int32)
  keys = np.stack([np.zeros(num_sequences, np.int64), rows[:, -1].astype(np.int64)], 1)
  return SequenceSet(truth_keys=keys, payload_rows=rows, payload=payload, source="train_rows.npz")


def make(sequence_set=None, **kwargs):
  options = dict(micro_batch=4, accum_steps=3, num_devices=1, seed=7, prefetch=0)
  options.update(kwargs)
  return TrainingPipeline(sequence_set or compact_set(), **options)


def sequence_numbers(batch):
  """The sequence index of every slot (target row - L, by construction of compact_set)."""
  return np.asarray(batch["target_ids"]) - LENGTH


def test_batch_shapes_dtypes_and_content():
  data = compact_set()
  pipe = make(data)
  batch = next(pipe.iterate(0))
  assert batch["contexts"].shape == (1, 3, 4, LENGTH, DIM)
  assert batch["targets"].shape == (1, 3, 4, DIM)
  assert batch["target_ids"].shape == (1, 3, 4)
  assert batch["contexts"].dtype == np.float32 and batch["target_ids"].dtype == np.int64
  indices = sequence_numbers(batch).reshape(-1)
  contexts, targets, _ = data.batch(indices)
  np.testing.assert_array_equal(batch["contexts"].reshape(-1, LENGTH, DIM), contexts)
  np.testing.assert_array_equal(batch["targets"].reshape(-1, DIM), targets)


def test_epoch_covers_a_permutation_minus_the_counted_remainder(caplog):
  with caplog.at_level("INFO"):
    pipe = make()
  assert pipe.sequences_per_step == 12 and pipe.steps_per_epoch == 8
  assert pipe.dropped_per_epoch == 103 - 96
  assert "7 dropped per epoch" in caplog.text
  seen = np.concatenate([sequence_numbers(b).reshape(-1) for b in pipe.iterate(0)])
  assert seen.size == 96 and np.unique(seen).size == 96


def test_shuffle_depends_on_seed_and_epoch_only():
  first = [sequence_numbers(b) for b in make().iterate(3)]
  again = [sequence_numbers(b) for b in make().iterate(3)]
  other_epoch = [sequence_numbers(b) for b in make().iterate(4)]
  other_seed = [sequence_numbers(b) for b in make(seed=8).iterate(3)]
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  assert not np.array_equal(np.stack(first), np.stack(other_epoch))
  assert not np.array_equal(np.stack(first), np.stack(other_seed))


def test_restart_at_epoch_and_step_gives_exactly_the_remaining_batches():
  pipe = make()
  whole = list(pipe.iterate(2))
  resumed = list(make().iterate(2, start_step=5))
  assert len(resumed) == len(whole) - 5
  for expected, actual in zip(whole[5:], resumed):
    for name in pipeline_lib.BATCH_FIELDS:
      np.testing.assert_array_equal(expected[name], actual[name])
  assert list(make().iterate(2, start_step=pipe.steps_per_epoch)) == []
  with pytest.raises(IndexError):
    list(make().iterate(2, start_step=pipe.steps_per_epoch + 1))


def test_host_shards_are_disjoint_and_together_make_the_global_step():
  hosts = [make(process_index=p, process_count=3, micro_batch=2, accum_steps=2)
           for p in range(3)]
  assert hosts[0].steps_per_epoch == 103 // 12 and hosts[0].dropped_per_epoch == 103 % 12
  permutation = pipeline_lib.epoch_permutation(103, 7, 1)
  for step in range(hosts[0].steps_per_epoch):
    parts = [h.step_indices(1, step).reshape(-1) for h in hosts]
    union = np.concatenate(parts)
    assert np.unique(union).size == union.size
    np.testing.assert_array_equal(union, permutation[step * 12:(step + 1) * 12])
  gathered = [sequence_numbers(b).reshape(-1) for b in hosts[1].iterate(1)]
  np.testing.assert_array_equal(np.concatenate(gathered), np.concatenate(
      [hosts[1].step_indices(1, s).reshape(-1) for s in range(hosts[1].steps_per_epoch)]))


def test_full_form_sets_feed_the_same_batches_as_compact_ones():
  compact = compact_set()
  full = compact.materialized()
  for a, b in zip(make(compact).iterate(0), make(full).iterate(0)):
    np.testing.assert_array_equal(a["contexts"], b["contexts"])
    np.testing.assert_array_equal(a["target_ids"], b["target_ids"])


def test_prefetch_yields_device_arrays_equal_to_the_unprefetched_batches():
  plain = list(make().iterate(1))
  prefetched = list(make(prefetch=2).iterate(1))
  assert len(plain) == len(prefetched)
  assert isinstance(prefetched[0]["contexts"], jax.Array)
  for a, b in zip(plain, prefetched):
    np.testing.assert_array_equal(a["contexts"], np.asarray(b["contexts"]))
    np.testing.assert_array_equal(a["targets"], np.asarray(b["targets"]))
    np.testing.assert_array_equal(a["target_ids"], np.asarray(b["target_ids"]))  # int32 on device


def test_prefetch_thread_stops_when_the_consumer_stops_early():
  before = set(threading.enumerate())  # thread objects, not names: a leftover shares the name
  iterator = make(prefetch=1).iterate(0)
  next(iterator)
  started = [t for t in threading.enumerate() if t.name == "lvm-prefetch" and t not in before]
  assert len(started) == 1, started  # this iterator's own thread, running
  iterator.close()
  assert not started[0].is_alive()


def test_errors_in_the_prefetch_thread_reach_the_consumer():
  data = compact_set()

  class Broken:
    num_sequences, context_length, vector_dim, source = data.num_sequences, LENGTH, DIM, "x"

    def batch(self, indices):
      raise RuntimeError("disk gone")

  with pytest.raises(RuntimeError, match="disk gone"):
    list(TrainingPipeline(Broken(), micro_batch=4, num_devices=1, prefetch=2).iterate(0))


def test_too_few_sequences_for_one_step():
  with pytest.raises(DataFormatError) as error:
    make(compact_set(10), micro_batch=8, accum_steps=2)
  message = str(error.value)
  assert "train_rows.npz" in message and "holds 10 sequences but one step needs 16" in message
  assert "Fix: lower config.train.batch_size or config.train.accum_steps" in message


def test_bad_arguments():
  with pytest.raises(ValueError, match="process_index=3"):
    make(process_index=3, process_count=2)
  with pytest.raises(ValueError, match="micro_batch=0"):
    make(micro_batch=0)


def test_two_devices_feed_pmap_on_this_jax_version():
  """In a fresh process with 2 host devices: batches split over devices and pmap consumes them."""
  code = textwrap.dedent(f"""
      import jax, numpy as np
      sys_path = {os.path.dirname(__file__)!r}
      import sys; sys.path.insert(0, sys_path)
      from test_data_pipeline import compact_set
      from lvm_jax.data.pipeline import TrainingPipeline
      assert jax.local_device_count() == 2
      for prefetch in (0, 2):
        pipe = TrainingPipeline(compact_set(), micro_batch=4, accum_steps=2, num_devices=2,
                                prefetch=prefetch)
        batch = next(pipe.iterate(0))
        if prefetch:
          shards = batch["contexts"].addressable_shards
          assert sorted(s.device.id for s in shards) == [0, 1], shards
          assert all(s.data.shape == (1, 2, 4, 5, 4) for s in shards)
        sums = jax.pmap(lambda c, t: c.sum() + t.sum())(batch["contexts"], batch["targets"])
        assert sums.shape == (2,)
      print("OK")
  """)
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
  assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_bank_draws_are_seeded_per_step_and_device_and_resume_exactly():
  sequences = compact_set()
  pipeline = make(sequences, bank_rows=20, num_devices=1)
  first = list(pipeline.host_batches(epoch=1))
  again = list(pipeline.host_batches(epoch=1, start_step=2))
  for a, b in zip(first[2:], again):
    np.testing.assert_array_equal(a["bank_ids"], b["bank_ids"])
  ids = first[0]["bank_ids"]
  assert ids.shape == (1, 20) and len(set(ids[0].tolist())) == 20  # without replacement
  assert not np.array_equal(ids, first[1]["bank_ids"])
  np.testing.assert_array_equal(first[0]["bank_vectors"][0], sequences.payload.vectors[ids[0]])
  every = next(make(sequences, bank_rows=-1).host_batches(epoch=0))
  np.testing.assert_array_equal(every["bank_ids"][0], np.arange(sequences.payload.num_rows))


def test_bank_draws_need_the_payload():
  full = compact_set().materialized()
  full.payload = None
  with pytest.raises(DataFormatError, match="bank negatives draw payload rows"):
    make(full, bank_rows=8)
