"""TensorBoard scalars without TensorBoard: writes TF event files by hand.

An event file is a sequence of TFRecords, each framing one serialized `Event` protobuf:

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes)
    payload (`length` bytes)      | uint32 masked_crc32c(payload)

The first record carries `file_version = "brain.Event:2"`; every later one carries a `Summary`
of scalar `Value`s. The protobuf is encoded here field by field (no generated classes), using
only the fields TensorBoard reads for scalars:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

Usage (only process 0 writes on a multi-host run, so scalars are not duplicated):

    with SummaryWriter(workdir, enabled=jax.process_index() == 0) as writer:
      writer.scalars({"train/loss": 0.3, "train/lr": 1e-3}, step=100)
"""

from __future__ import annotations

import math
import os
import socket
import struct
import time
from typing import Mapping, Optional

FILE_VERSION = "brain.Event:2"
FILE_PREFIX = "events.out.tfevents."
_CRC32C_POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reversed.
_CRC_MASK_DELTA = 0xA282EAD8

# Protobuf wire types.
_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_FIXED32 = 5


def _crc32c_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ _CRC32C_POLYNOMIAL if crc & 1 else crc >> 1
    table.append(crc)
  return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli) of `data`, as TFRecord uses; crc32c(b"123456789") == 0xE3069283."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
  """The rotated-and-offset CRC that TFRecord stores, so a CRC of CRCs does not stay trivial."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the payload, its masked CRC."""
  length = struct.pack("<Q", len(payload))
  return (length + struct.pack("<I", masked_crc32c(length)) + payload +
          struct.pack("<I", masked_crc32c(payload)))


def _varint(value: int) -> bytes:
  """Base-128 varint; negative values as 64-bit two's complement (10 bytes), as int64 wants."""
  if value < 0:
    value += 1 << 64
  out = bytearray()
  while True:
    low_bits = value & 0x7F
    value >>= 7
    if value:
      out.append(low_bits | 0x80)
    else:
      out.append(low_bits)
      return bytes(out)


def _key(field_number: int, wire_type: int) -> bytes:
  return _varint((field_number << 3) | wire_type)


def _length_delimited(field_number: int, payload: bytes) -> bytes:
  return _key(field_number, _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _float32(value: float) -> bytes:
  """`value` as a little-endian float32; magnitudes beyond float32 become +-inf, not an error."""
  try:
    return struct.pack("<f", value)
  except OverflowError:
    return struct.pack("<f", math.copysign(math.inf, value))


def encode_scalar_value(tag: str, value: float) -> bytes:
  """Summary.Value{tag, simple_value}."""
  return (_length_delimited(1, tag.encode("utf-8")) + _key(2, _FIXED32) + _float32(value))


def encode_event(wall_time: float,
                 step: int,
                 file_version: Optional[str] = None,
                 scalars: Optional[Mapping[str, float]] = None) -> bytes:
  """Event{wall_time, step, file_version | summary{value...}} as protobuf bytes."""
  event = _key(1, _FIXED64) + struct.pack("<d", wall_time) + _key(2, _VARINT) + _varint(step)
  if file_version is not None:
    event += _length_delimited(3, file_version.encode("utf-8"))
  if scalars:
    summary = b"".join(
        _length_delimited(1, encode_scalar_value(tag, value)) for tag, value in scalars.items())
    event += _length_delimited(5, summary)
  return event


class SummaryWriter:
  """Appends scalar summaries to `<logdir>/events.out.tfevents.<time>.<hostname>`.

  With `enabled=False` (every process but 0 on a multi-host run) nothing is created or written
  and every method is a no-op, so callers need no branches. The file is flushed on `flush()`,
  `close()`, leaving the `with` block, and at most `flush_secs` after a write.
  """

  def __init__(self, logdir: str, enabled: bool = True, flush_secs: float = 10.0):
    self.logdir = os.fspath(logdir)
    self.enabled = bool(enabled)
    self.path: Optional[str] = None
    self._flush_secs = flush_secs
    self._file = None
    if not self.enabled:
      return
    os.makedirs(self.logdir, exist_ok=True)
    now = time.time()
    path = os.path.join(self.logdir, f"{FILE_PREFIX}{int(now)}.{socket.gethostname()}")
    # A second writer in the same second and directory must not truncate the first one's file.
    candidate, suffix = path, 0
    while os.path.exists(candidate):
      suffix += 1
      candidate = f"{path}.{suffix}"
    self.path = candidate
    self._file = open(self.path, "xb")  # pylint: disable=consider-using-with
    self._file.write(frame_record(encode_event(now, 0, file_version=FILE_VERSION)))
    self._file.flush()
    self._last_flush = time.monotonic()

  def scalar(self, tag: str, value: float, step: int) -> None:
    """Records one scalar `value` (a Python, NumPy or 0-d JAX number) under `tag` at `step`."""
    self.scalars({tag: value}, step)

  def scalars(self, values: Mapping[str, float], step: int) -> None:
    """Records every `tag: value` of `values` at `step`, as one event."""
    if not self.enabled:
      return
    if self._file is None:
      raise ValueError(f"SummaryWriter for {self.path} is closed; scalars at step {step} "
                       "were not written. Write before close() or open a new writer.")
    checked = {}
    for tag, value in values.items():
      if not isinstance(tag, str) or not tag:
        raise ValueError(f"TensorBoard tag {tag!r} (step {step}) must be a non-empty string.")
      try:
        checked[tag] = float(value)
      except (TypeError, ValueError) as error:
        raise TypeError(f"TensorBoard scalar {tag!r} at step {step} is {value!r}, which is not "
                        "a number; log a scalar (e.g. float(x) or x.mean()).") from error
    if not checked:
      return
    self._file.write(frame_record(encode_event(time.time(), int(step), scalars=checked)))
    if time.monotonic() - self._last_flush >= self._flush_secs:
      self.flush()

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
      self._last_flush = time.monotonic()

  def close(self) -> None:
    if self._file is not None:
      self._file.flush()
      self._file.close()
      self._file = None

  def __enter__(self) -> "SummaryWriter":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
