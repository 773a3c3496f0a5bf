"""convert: the CLI refuses pickle without --trust_pickle and writes a readable safe payload."""

import subprocess
import sys

import numpy as np

from lvm_jax.data.payload import read_payload


def test_cli_converts_only_with_trust_pickle(tmp_path):
  vectors = np.eye(4, dtype=np.float32)
  entries = {10 + i: (f"text {i}", {"article_index": 2 - i // 2, "chunk_index": i % 2}, vectors[i])
             for i in range(4)}
  src = str(tmp_path / "reference.npy")
  np.save(src, entries, allow_pickle=True)
  dst = str(tmp_path / "payload")
  command = [sys.executable, "-m", "lvm_jax.data.convert", "--src", src, "--dst", dst,
             "--embedder_id", "gtr-t5-base"]
  refused = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert refused.returncode != 0
  assert f"{src}: field '(file)'" in refused.stderr and "trust_pickle" in refused.stderr
  done = subprocess.run(command + ["--trust_pickle"], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  payload = read_payload(dst)
  np.testing.assert_array_equal(payload.article_index, [1, 1, 2, 2])
  np.testing.assert_array_equal(payload.chunk_index, [0, 1, 0, 1])
  np.testing.assert_array_equal(payload.ids, [12, 13, 10, 11])
  np.testing.assert_array_equal(payload.vectors, vectors[[2, 3, 0, 1]])
  assert payload.texts == ["text 2", "text 3", "text 0", "text 1"]
  assert payload.provenance["embedder_id"] == "gtr-t5-base"
