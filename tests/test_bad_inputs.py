"""Bad input, as a careless or unlucky user gives it: one row per case.

Each row: a name, how to make the input, the command, the expected exit code and the
words the one `error:` line must contain. No command may print a traceback.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lvm_jax.corpus import synthetic

TINY = "configs/s_contrastive.py:tiny"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("data"))
  synthetic.generate_synthetic_corpus(out, num_articles=60, dim=16)
  return out


def _flip_bytes(path, out):
  """The same file with bytes flipped in the middle: same size, bad CRC."""
  shutil.copy(path, out)
  size = os.path.getsize(out)
  with open(out, "r+b") as f:
    f.seek(size // 2)
    chunk = f.read(64)
    f.seek(size // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))
  return out


def _text_file(out):
  with open(out, "w") as f:
    f.write("article,chunk,text\n1,2,hello\n")
  return out


def _main(*flags):
  return ["-m", "lvm_jax.main", f"--config={TINY}", "--config.data.prefetch=0", *flags]


def _sets(data, train="train.npz", val="val.npz"):
  return [f"--config.data.train_path={train if os.path.isabs(train) else os.path.join(data, train)}",
          f"--config.data.val_path={val if os.path.isabs(val) else os.path.join(data, val)}"]


# name, command builder (data_dir, tmp_path) -> argv after python, exit code, words
CASES = [
    ("negative learning rate",
     lambda d, t: _main(f"--workdir={t}/w", "--config.train.learning_rate=-0.003"), 2,
     "config field train.learning_rate=-0.003 is invalid: it must be a number > 0 and <= 1"),
    ("zero temperature",
     lambda d, t: _main(f"--workdir={t}/w", "--config.loss.temperature=0"), 2,
     "config field loss.temperature=0.0 is invalid: it must be a number > 0"),
    ("zero eval batch",
     lambda d, t: _main(f"--workdir={t}/w", "--config.eval.batch_size=0"), 2,
     "config field eval.batch_size=0 is invalid: it must be an integer >= 1"),
    ("zero context length",
     lambda d, t: _main(f"--workdir={t}/w", "--config.data.context_length=0"), 2,
     "config field data.context_length=0 is invalid: it must be an integer >= 1. "
     "Fix: pass --config.data.context_length="),
    ("flipped bytes in the train NPZ",
     lambda d, t: _main(f"--workdir={t}/w", *_sets(d, _flip_bytes(
         os.path.join(d, "train.npz"), f"{t}/train_flipped.npz"))), 2,
     "train_flipped.npz: field 'context_sequences': is damaged and cannot be read"),
    ("text file as the train NPZ",
     lambda d, t: _main(f"--workdir={t}/w", *_sets(d, _text_file(f"{t}/train.npz"))), 2,
     "train.npz: field '(file)': is not an NPZ archive: it holds text"),
    ("val set of another context length",
     lambda d, t: _main(f"--workdir={t}/w", *_sets(d, val=os.path.join(d, "l4", "val.npz"))), 2,
     "has context length 4 but the train set"),
    ("read-only workdir",
     lambda d, t: _main("--workdir=/proc/lvm_jax_run"), 2,
     "/proc/lvm_jax_run: cannot write the workdir"),
    ("convert: missing file",
     lambda d, t: ["-m", "lvm_jax.corpus.legacy", f"--src={t}/missing.npy", f"--dst={t}/p",
                   "--trust_pickle"], 2,
     "missing.npy: field '(file)': does not exist. Fix: pass the reference's payload .npy (--src)"),
    ("convert: text file",
     lambda d, t: ["-m", "lvm_jax.corpus.legacy", f"--src={_text_file(t / 'p.npy')}",
                   f"--dst={t}/p", "--trust_pickle"], 2,
     "is not a .npy file (the reference saves its payload with np.save): it holds text"),
    ("build: a split without articles",
     lambda d, t: ["-m", "lvm_jax.corpus.build", f"--payload={d}/payload", f"--out={t}/sets",
                   "--split_ratios=1,0,0"], 2,
     "the val share is 0.0; every split needs a share > 0"),
]


@pytest.mark.parametrize("name, command, code, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_error_line(data_dir, tmp_path, name, command, code, words):
  if name == "val set of another context length" and not os.path.exists(
      os.path.join(data_dir, "l4", "val.npz")):
    synthetic.generate_synthetic_corpus(os.path.join(data_dir, "l4"), num_articles=60, dim=16,
                                        context_length=4)
  result = subprocess.run([sys.executable, *command(data_dir, tmp_path)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
  assert result.returncode == code, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  error_lines = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(error_lines) == 1, result.stderr[-2000:]
  assert words in error_lines[0]
  if name == "zero context length":  # rejected before anything was generated
    assert not os.path.exists(tmp_path / "w" / "data")


def test_verbose_shows_the_traceback(tmp_path):
  result = subprocess.run([sys.executable, *_main(f"--workdir={tmp_path}/w", "--verbose",
                                                  "--config.train.learning_rate=-1")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert result.returncode != 0 and "Traceback" in result.stderr
