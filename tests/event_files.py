"""Reads TensorBoard event files without TensorBoard: TFRecord framing around Event protos
(tensorboardX's own protobuf), so tests can check what the writer wrote."""

import os
import struct

from tensorboardX.proto import event_pb2


def read_scalars(directory):
  """{tag: {step: value}} of every scalar in the event files under `directory`."""
  scalars = {}
  for root, _, files in os.walk(directory):
    for name in sorted(files):
      if not name.startswith("events.out.tfevents"):
        continue
      with open(os.path.join(root, name), "rb") as f:
        data = f.read()
      offset = 0
      while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        record = data[offset + 12:offset + 12 + length]  # after the length and its CRC
        offset += 12 + length + 4  # the record's CRC
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
          scalars.setdefault(value.tag, {})[event.step] = value.simple_value
  return scalars
