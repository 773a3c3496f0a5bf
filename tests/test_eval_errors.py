"""Bad input to `python -m lvm_jax.eval`: one row per case (the input, the command, the exit
code, the words of the message). Bad input exits 2 with one `error:` line and no traceback;
exit 1 is kept for a failed gate."""

import json
import os
import shutil

import numpy as np
import pytest

from lvm_jax.data.eval_sets import read_eval_set
from lvm_jax.data.payload import read_payload
from lvm_jax.eval import __main__ as eval_cli
from lvm_jax.retrieval import index as index_lib

LAX_GATES = ["--gate-contain50", "0", "--gate-eff5", "0", "--gate-r5", "0", "--gate-p95", "1e9"]
QUICK = ["--latency-queries", "5"]


@pytest.fixture(scope="module")
def inputs(eval_workdir, tmp_path_factory):
  """Damaged and odd copies of the workdir's files, by name."""
  directory = tmp_path_factory.mktemp("bad_inputs")
  data = os.path.join(eval_workdir, "data")
  payload = read_payload(os.path.join(data, "payload"))
  paths = {"workdir": eval_workdir, "dir": str(directory), "missing": str(directory / "absent")}
  ivf = str(directory / "ivf.faiss")
  index_lib.write_index(index_lib.build_index(payload.vectors, kind="ivf_flat", nlist=8), ivf)
  paths["ivf"] = ivf
  with open(ivf, "rb") as f:
    index_bytes = f.read()
  for name, content in (("garbage_index", b"not an index at all " * 50),
                        ("truncated_index", index_bytes[:len(index_bytes) // 2])):
    (directory / f"{name}.faiss").write_bytes(content)
    paths[name] = str(directory / f"{name}.faiss")
  os.makedirs(directory / "index_dir.faiss")
  paths["index_dir"] = str(directory / "index_dir.faiss")
  with open(os.path.join(data, "eval.npz"), "rb") as f:
    npz_bytes = bytearray(f.read())
  crc = bytearray(npz_bytes)
  middle = len(crc) // 2
  crc[middle:middle + 16] = bytes(255 - b for b in crc[middle:middle + 16])  # same size
  (directory / "crc.npz").write_bytes(bytes(crc))
  (directory / "truncated.npz").write_bytes(bytes(npz_bytes[:len(npz_bytes) // 2]))
  paths["crc_npz"], paths["truncated_npz"] = str(directory / "crc.npz"), str(
      directory / "truncated.npz")
  eval_set = read_eval_set(os.path.join(data, "eval.npz"))

  def eval_npz(name, provenance):
    path = str(directory / f"{name}.npz")
    np.savez(path, contexts=eval_set.contexts, targets=eval_set.targets,
             truth_keys=eval_set.truth_keys, provenance=np.array([json.dumps(provenance)]))
    paths[name] = path

  eval_npz("reference_spellings", {"embedder_id": payload.provenance.get("embedder_id"),
                                       "norm": "l2_once", "metric": "ip"})
  eval_npz("other_embedder", {"embedder_id": "minilm", "norm": "l2", "metric": "ip"})
  payload_copy = str(directory / "payload")
  shutil.copytree(os.path.join(data, "payload"), payload_copy)
  paths["payload"] = payload_copy
  return paths


# (case, command with {placeholders} for `inputs`, exit code, words the error must hold)
CASES = [
    ("k zero", ["--k", "0"], 2, ["--k", "must be at least 50"]),
    ("k negative", ["--k", "-5"], 2, ["--k", "must be at least 50"]),
    ("k below 50 (was a TypeError in the gate check)", ["--k", "20"], 2, ["must be at least 50"]),
    ("k above the payload", ["--k", "1000000"], 2, ["exceeds the payload's"]),
    ("nprobe zero with an IVF index", ["--faiss", "{ivf}", "--nprobe", "0"], 2,
     ["--nprobe", "must be at least 1"]),
    ("negative limit", ["--limit", "-1"], 2, ["--limit", "= -1", "must be at least 1"]),
    ("no latency queries", ["--latency-queries", "0"], 2, ["--latency_queries"]),
    ("garbage index", ["--faiss", "{garbage_index}"], 2,
     ["{garbage_index}", "not a readable FAISS index"]),
    ("truncated index", ["--faiss", "{truncated_index}"], 2,
     ["{truncated_index}", "not a readable FAISS index"]),
    ("a directory as index", ["--faiss", "{index_dir}"], 2,
     ["{index_dir}", "is a directory"]),
    ("missing index", ["--faiss", "{missing}"], 2, ["{missing}", "does not exist"]),
    ("NPZ with a CRC error", ["--eval-npz", "{crc_npz}"], 2, ["{crc_npz}"]),
    ("truncated NPZ", ["--eval-npz", "{truncated_npz}"], 2, ["{truncated_npz}"]),
    ("missing checkpoint", ["--checkpoint", "{missing}"], 2, ["{missing}", "does not exist"]),
    ("a directory that is no workdir", ["--checkpoint", "{dir}"], 2, ["not a training workdir"]),
    ("unknown flag", ["--bogus", "1"], 2,
     ["unknown flag --bogus. Fix: correct or drop it (--help lists the flags)."]),
    ("shard-assist on", ["--shard-assist", "true"], 2, ["shard-assist is not available"]),
    ("another embedder", ["--eval-npz", "{other_embedder}", "--payload", "{payload}"], 2,
     ["provenance", "embedder_id"]),
    ("the reference's provenance spellings (l2_once, ip) pass",
     ["--eval-npz", "{reference_spellings}", "--payload", "{payload}", *LAX_GATES], 0, []),
    ("nprobe above nlist is clamped, not an error", ["--faiss", "{ivf}", "--payload", "{payload}",
                                                     "--nprobe", "500", *LAX_GATES], 0, []),
    ("a failed gate exits 1", ["--gate-r5", "1.0"], 1, []),
]


def fill(items, paths):
  return [item.format(**paths) for item in items]


@pytest.mark.parametrize("case, command, code, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(inputs, capsys, case, command, code, words):
  del case
  command = fill(command, inputs)
  if "--checkpoint" not in command:
    command = ["--checkpoint", inputs["workdir"]] + command
  assert eval_cli.main(QUICK + command) == code
  err = capsys.readouterr().err
  assert "Traceback" not in err
  errors = [line for line in err.splitlines() if line.startswith("error: ")]
  if code == 2:
    assert len(errors) == 1, err
    for word in fill(words, inputs):
      assert word in errors[0], (word, errors[0])
  else:
    assert errors == []


def test_verbose_shows_the_traceback(inputs, capsys):
  assert eval_cli.main(["--checkpoint", inputs["workdir"], "--faiss", inputs["garbage_index"],
                        "--verbose"]) == 2
  err = capsys.readouterr().err
  assert "Traceback" in err and "error: " in err
