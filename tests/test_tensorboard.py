"""tensorboard: event files decoded by an independent reader here, and by TensorBoard if present."""

import glob
import math
import os
import struct

import numpy as np
import pytest

from lvm_jax import tensorboard
from lvm_jax.tensorboard import SummaryWriter


def bitwise_crc32c(data):
  """CRC-32C one bit at a time: slow, but shares no table with the module under test."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc ^= byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
  return crc ^ 0xFFFFFFFF


def unmask(masked):
  rotated = (masked - 0xA282EAD8) & 0xFFFFFFFF
  return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


def read_records(path):
  """Payloads of every TFRecord in `path`, checking both CRCs of each."""
  with open(path, "rb") as f:
    data = f.read()
  payloads, offset = [], 0
  while offset < len(data):
    assert len(data) - offset >= 12, f"truncated record header at byte {offset}"
    length_bytes = data[offset:offset + 8]
    (length,) = struct.unpack("<Q", length_bytes)
    (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
    assert unmask(length_crc) == bitwise_crc32c(length_bytes), f"length CRC at byte {offset}"
    payload = data[offset + 12:offset + 12 + length]
    assert len(payload) == length, f"truncated payload at byte {offset}"
    (payload_crc,) = struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])
    assert unmask(payload_crc) == bitwise_crc32c(payload), f"payload CRC at byte {offset}"
    payloads.append(payload)
    offset += 16 + length
  return payloads


def read_varint(buffer, offset):
  value, shift = 0, 0
  while True:
    byte = buffer[offset]
    offset += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, offset


def parse_fields(buffer):
  """Protobuf wire format -> list of (field_number, wire_type, raw value)."""
  fields, offset = [], 0
  while offset < len(buffer):
    key, offset = read_varint(buffer, offset)
    field_number, wire_type = key >> 3, key & 7
    if wire_type == 0:
      value, offset = read_varint(buffer, offset)
    elif wire_type == 1:
      value, offset = buffer[offset:offset + 8], offset + 8
    elif wire_type == 2:
      length, offset = read_varint(buffer, offset)
      value, offset = buffer[offset:offset + length], offset + length
    elif wire_type == 5:
      value, offset = buffer[offset:offset + 4], offset + 4
    else:
      raise AssertionError(f"unexpected wire type {wire_type} for field {field_number}")
    fields.append((field_number, wire_type, value))
  assert offset == len(buffer)
  return fields


def decode_event(payload):
  """Event bytes -> dict(wall_time, step, file_version, scalars={tag: value})."""
  event = dict(wall_time=None, step=0, file_version=None, scalars={})
  for number, wire_type, value in parse_fields(payload):
    if number == 1:
      assert wire_type == 1
      (event["wall_time"],) = struct.unpack("<d", value)
    elif number == 2:
      assert wire_type == 0
      event["step"] = value - (1 << 64) if value >= 1 << 63 else value
    elif number == 3:
      assert wire_type == 2
      event["file_version"] = value.decode("utf-8")
    elif number == 5:
      assert wire_type == 2
      for value_number, value_type, summary_value in parse_fields(value):
        assert (value_number, value_type) == (1, 2)
        tag, simple_value = None, None
        for inner_number, inner_type, inner in parse_fields(summary_value):
          if inner_number == 1:
            assert inner_type == 2
            tag = inner.decode("utf-8")
          elif inner_number == 2:
            assert inner_type == 5
            (simple_value,) = struct.unpack("<f", inner)
        event["scalars"][tag] = simple_value
    else:
      raise AssertionError(f"unexpected Event field {number}")
  return event


def read_events(logdir):
  (path,) = glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
  return [decode_event(payload) for payload in read_records(path)]


def test_crc32c_check_value():
  assert tensorboard.crc32c(b"123456789") == 0xE3069283
  assert tensorboard.crc32c(b"") == 0


def test_crc32c_matches_bitwise_reference():
  rng = np.random.default_rng(0)
  for size in (1, 7, 64, 1000):
    data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
    assert tensorboard.crc32c(data) == bitwise_crc32c(data)


def test_masked_crc_inverts():
  for data in (b"", b"abc", bytes(range(256))):
    assert unmask(tensorboard.masked_crc32c(data)) == tensorboard.crc32c(data)


def test_scalars_round_trip(tmp_path):
  with SummaryWriter(str(tmp_path)) as writer:
    writer.scalar("train/loss", 1.5, step=0)
    writer.scalars({"train/loss": 0.25, "train/lr": np.float32(3e-4), "eval/recall@10": 0.875},
                   step=10)
    writer.scalar("big_step", -2.0, step=2**40)
  path = writer.path
  assert os.path.basename(path).startswith("events.out.tfevents.")
  hostname_part = os.path.basename(path).split(".", 4)[4]
  assert hostname_part and int(os.path.basename(path).split(".")[3]) > 0

  events = read_events(str(tmp_path))
  assert events[0]["file_version"] == "brain.Event:2"
  assert events[0]["scalars"] == {}
  assert [e["step"] for e in events[1:]] == [0, 10, 2**40]
  assert events[1]["scalars"] == {"train/loss": 1.5}
  assert events[2]["scalars"]["train/loss"] == 0.25
  assert events[2]["scalars"]["train/lr"] == pytest.approx(3e-4, rel=1e-6)
  assert events[2]["scalars"]["eval/recall@10"] == 0.875
  assert events[3]["scalars"] == {"big_step": -2.0}
  for event in events:
    assert abs(event["wall_time"] - events[0]["wall_time"]) < 60


def test_non_finite_and_out_of_range_values(tmp_path):
  with SummaryWriter(str(tmp_path)) as writer:
    writer.scalars({"nan": float("nan"), "inf": float("inf"), "huge": -1e300}, step=1)
  (event,) = read_events(str(tmp_path))[1:]
  assert math.isnan(event["scalars"]["nan"])
  assert event["scalars"]["inf"] == math.inf
  assert event["scalars"]["huge"] == -math.inf


def test_negative_step_round_trips():
  payload = tensorboard.encode_event(1.0, -3, scalars={"x": 1.0})
  assert decode_event(payload)["step"] == -3


def test_disabled_writer_writes_nothing(tmp_path):
  logdir = tmp_path / "not_process_0"
  with SummaryWriter(str(logdir), enabled=False) as writer:
    writer.scalar("train/loss", 1.0, step=1)
    writer.flush()
  assert writer.path is None
  assert not logdir.exists()


def test_two_writers_in_one_directory_keep_both_files(tmp_path):
  first = SummaryWriter(str(tmp_path))
  second = SummaryWriter(str(tmp_path))
  first.scalar("a", 1.0, step=1)
  second.scalar("b", 2.0, step=1)
  first.close()
  second.close()
  assert first.path != second.path
  assert decode_event(read_records(first.path)[1])["scalars"] == {"a": 1.0}
  assert decode_event(read_records(second.path)[1])["scalars"] == {"b": 2.0}


def test_flush_makes_events_readable_before_close(tmp_path):
  writer = SummaryWriter(str(tmp_path), flush_secs=3600)
  writer.scalar("train/loss", 0.5, step=3)
  writer.flush()
  assert read_events(str(tmp_path))[1]["scalars"] == {"train/loss": 0.5}
  writer.close()
  writer.close()  # closing twice is harmless


def test_errors_name_the_problem(tmp_path):
  writer = SummaryWriter(str(tmp_path))
  with pytest.raises(TypeError, match="train/loss"):
    writer.scalar("train/loss", "high", step=1)
  with pytest.raises(ValueError, match="tag"):
    writer.scalar("", 1.0, step=1)
  writer.close()
  with pytest.raises(ValueError, match="closed"):
    writer.scalar("train/loss", 1.0, step=2)


def test_tensorboard_reads_the_file(tmp_path):
  event_accumulator = pytest.importorskip(
      "tensorboard.backend.event_processing.event_accumulator")
  with SummaryWriter(str(tmp_path)) as writer:
    for step in range(5):
      writer.scalars({"train/loss": 1.0 / (step + 1), "train/lr": 0.1 * step}, step=step)
  accumulator = event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  assert sorted(accumulator.Tags()["scalars"]) == ["train/loss", "train/lr"]
  losses = accumulator.Scalars("train/loss")
  assert [s.step for s in losses] == list(range(5))
  np.testing.assert_allclose([s.value for s in losses], [1.0 / (s + 1) for s in range(5)],
                             rtol=1e-6)
  rates = accumulator.Scalars("train/lr")
  np.testing.assert_allclose([s.value for s in rates], [0.1 * s for s in range(5)], rtol=1e-6)
