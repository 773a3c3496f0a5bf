"""file_io: what every reader checks before it parses: the file exists, is a file, is not
empty, starts like the format it claims, and each NPZ member reads back intact; each failure
names the file, the field and what the file holds instead."""

import os
import struct
import zipfile

import numpy as np
import pytest

from data_helpers import assert_message, full_set_arrays, make_payload, save_npz
from lvm_jax.data import file_io
from lvm_jax.data.errors import DataFormatError
from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.corpus.legacy import read_reference_payload
from lvm_jax.data.payload import read_payload, write_payload
from lvm_jax.data.sequences import read_sequence_set

NPZ_READERS = {"sequence set": read_sequence_set, "eval set": read_eval_set,
               "open_npz": lambda path: file_io.open_npz(path).__enter__()}


def write_text(text):
  def write(path):
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
  return write


def write_bytes(data):
  def write(path):
    with open(path, "wb") as f:
      f.write(data)
  return write


def payload_with_vectors_file(tmp_path, write):
  """A valid payload directory whose vectors.npy is replaced by what `write(path)` makes."""
  directory = write_payload(str(tmp_path / "payload"), make_payload())
  vectors = os.path.join(directory, "vectors.npy")
  os.remove(vectors)
  write(vectors)
  return directory, vectors


# ----------------------------------------------------------------------------- the file itself


def test_empty_file(tmp_path):
  path = tmp_path / "empty.npz"
  path.write_bytes(b"")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "empty file (0 bytes)", "Fix: rewrite it")


def test_empty_npy_in_a_payload_names_the_field(tmp_path):
  directory, vectors = payload_with_vectors_file(tmp_path, write_bytes(b""))
  with pytest.raises(DataFormatError) as error:
    read_payload(directory)
  assert_message(error, vectors, "field 'vectors'", "is an empty file (0 bytes)",
                 "Fix: rewrite it")


def test_missing_file(tmp_path):
  path = str(tmp_path / "nope.npz")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "does not exist", "Fix:")


@pytest.mark.parametrize("reader", sorted(NPZ_READERS))
def test_a_directory_given_as_an_npz(tmp_path, reader):
  path = tmp_path / "train.npz"
  path.mkdir()
  with pytest.raises(DataFormatError) as error:
    NPZ_READERS[reader](str(path))
  assert_message(error, str(path), "field '(file)'", "is a directory, not a file",
                 "Fix: pass the file's path")


def test_a_directory_given_as_an_npy_in_a_payload(tmp_path):
  directory, vectors = payload_with_vectors_file(tmp_path, os.mkdir)
  with pytest.raises(DataFormatError) as error:
    read_payload(directory)
  assert_message(error, vectors, "field 'vectors'", "is a directory, not a file")


# ----------------------------------------------------------------------------- magic checks


def test_not_an_npz(tmp_path):
  path = tmp_path / "text.npz"
  path.write_text("hello")
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "is not an NPZ archive: it holds text ('hello'...)", "Fix:")


@pytest.mark.parametrize("reader", sorted(NPZ_READERS))
def test_text_given_as_an_npz_says_it_holds_text(tmp_path, reader):
  path = tmp_path / "train.npz"
  path.write_text("context_sequences,target_vectors\n0.1,0.2\n")
  with pytest.raises(DataFormatError) as error:
    NPZ_READERS[reader](str(path))
  assert_message(error, str(path), "field '(file)'", "is not an NPZ archive: it holds text",
                 "'context_sequences,target_vectors", "Fix: pass an .npz written by np.savez")


def test_an_npy_given_as_an_npz_says_it_is_a_single_array(tmp_path):
  path = tmp_path / "train.npz"
  with open(path, "wb") as f:  # np.save to an open file keeps the .npz name
    np.save(f, np.zeros((3, 4), np.float32))
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "is not an NPZ archive: it holds a single .npy array")


def test_binary_garbage_given_as_an_npz_shows_its_first_bytes(tmp_path):
  path = tmp_path / "train.npz"
  path.write_bytes(bytes([0xff, 0xfe, 0x00, 0x81]) * 16)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "it holds binary data of an unknown format",
                 r"(first bytes b'\xff\xfe\x00\x81")


def test_zip_magic_without_a_readable_archive(tmp_path):
  path = tmp_path / "train.npz"
  path.write_bytes(file_io.NPZ_MAGIC + b"\x00" * 60)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(str(path))
  assert_message(error, str(path), "field '(file)'", "is not a readable NPZ archive",
                 "Fix: pass an .npz written by np.savez")


def test_text_given_as_an_npy_in_a_payload_says_it_holds_text(tmp_path):
  directory, vectors = payload_with_vectors_file(tmp_path, write_text("0.1 0.2 0.3\n"))
  with pytest.raises(DataFormatError) as error:
    read_payload(directory)
  assert_message(error, vectors, "field 'vectors'", "is not a .npy array: it holds text",
                 "'0.1 0.2 0.3", "Fix: rewrite the payload with write_payload")


def test_an_npz_given_as_an_npy_says_it_is_a_zip(tmp_path):
  def write_npz(path):
    with open(path, "wb") as f:  # np.savez to an open file keeps the .npy name
      np.savez(f, vectors=np.zeros((2, 2)))
  directory, vectors = payload_with_vectors_file(tmp_path, write_npz)
  with pytest.raises(DataFormatError) as error:
    read_payload(directory)
  assert_message(error, vectors, "field 'vectors'", "is not a .npy array: it holds a zip archive")


def test_text_given_as_the_reference_payload_says_it_holds_text(tmp_path):
  path = tmp_path / "wikipedia_584k_payload.npy"
  path.write_text("payload_id,text\n")
  with pytest.raises(DataFormatError) as error:
    read_reference_payload(str(path), trust_pickle=True)
  assert_message(error, str(path), "is not a .npy file", "it holds text ('payload_id,text")


def test_describe_content_names_each_kind(tmp_path):
  kinds = {"a.npy": (lambda p: np.save(p, np.ones(2)), "a single .npy array"),
           "b.npz": (lambda p: np.savez(p, x=np.ones(2)), "a zip archive"),
           "c.txt": (write_text("héllo"), "text ('héllo'...)"),
           "d.bin": (write_bytes(b"\xff\xd8\xff\xe0" * 4),
                     r"binary data of an unknown format (first bytes b'\xff\xd8\xff\xe0")}
  for name, (write, expected) in kinds.items():
    path = str(tmp_path / name)
    write(path)
    assert file_io.describe_content(path).startswith(expected), (name, expected)


# ----------------------------------------------------------------------------- damaged members


def member_middle(path, member):
  """Byte offset of the middle of `member`'s stored (maybe compressed) data in the zip at
  `path`: past its local header, so the flip hits that member and no other."""
  with zipfile.ZipFile(path) as archive:
    info = archive.getinfo(member)
  with open(path, "rb") as f:
    f.seek(info.header_offset + 26)
    name_length, extra_length = struct.unpack("<HH", f.read(4))
  return info.header_offset + 30 + name_length + extra_length + info.compress_size // 2


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
@pytest.mark.parametrize("reader, field, member", [
    (read_sequence_set, "context_sequences", "context_sequences.npy"),
    (read_sequence_set, "target_vectors", "target_vectors.npy"),
    (read_eval_set, "contexts", "contexts.npy")])
def test_flipped_bytes_of_the_same_size_name_the_file_and_field(tmp_path, payload_dir, save,
                                                                reader, field, member):
  arrays = full_set_arrays(read_payload(payload_dir))
  if reader is read_eval_set:
    arrays = {"contexts": arrays["context_sequences"], "targets": arrays["target_vectors"],
              "truth_keys": arrays["truth_keys"], "provenance": arrays["provenance"]}
  path = str(tmp_path / "set.npz")
  save(path, **arrays)
  with open(path, "rb") as f:
    damaged = bytearray(f.read())
  start = member_middle(path, member) - 4
  damaged[start:start + 8] = bytes(255 - b for b in damaged[start:start + 8])
  with open(path, "wb") as f:
    f.write(damaged)
  assert os.path.getsize(path) == len(damaged)  # same size: only the contents are wrong
  with pytest.raises(DataFormatError) as error:
    reader(path)
  assert_message(error, path, f"field '{field}'", "is damaged and cannot be read",
                 "Fix: rewrite or rebuild the file; it was corrupted on disk or in transfer")
  assert error.value.field == field


def test_object_arrays_are_not_unpickled(tmp_path, payload_dir):
  arrays = full_set_arrays(read_payload(payload_dir))
  arrays["provenance"] = np.array([{"embedder_id": "x"}], dtype=object)
  path = save_npz(tmp_path / "t.npz", **arrays)
  with pytest.raises(DataFormatError) as error:
    read_sequence_set(path)
  assert_message(error, path, "'provenance'", "without pickle", "Fix: store plain numeric arrays")
