"""A seeded fuzz test of the file readers, through the error path every CLI uses.

Each case damages one file a CLI reads (payload, train/val windows, eval NPZ, checkpoint,
reranker.json, the text predict reads) in a way no reader may accept: truncation, random
bytes, a dtype or shape no reader takes, NaN, a missing field. The reader runs under
`cli.exits_cleanly_on_user_errors` in this process; the case passes when that ends in exactly
one `error:` line, exit 2 and no traceback. A reader that raises anything else (a KeyError, an
AttributeError) or accepts the file fails the case.

LVM_JAX_FUZZ_CASES=5000 python -m pytest -q tests/test_fuzz_readers.py runs more than the
default (the seed is fixed, so a larger count runs the default cases and then new ones).
"""

import glob
import json
import os
import shutil

import numpy as np
import pytest

from lvm_jax import cli
from lvm_jax.corpus import synthetic
from lvm_jax.data.eval_sets import read_eval_set, read_queries
from lvm_jax.data.payload import read_payload
from lvm_jax.data.sequences import read_sequence_set
from lvm_jax.retrieval import learned_rerank
from lvm_jax.workdir import Workdir

SEED = 31
CASES = int(os.environ.get("LVM_JAX_FUZZ_CASES", "320"))
CHECKPOINT_CASES = max(4, CASES // 40)  # an Orbax restore costs far more than an NPZ read
NPY_DTYPES = ("<U4", "complex64", "object")  # no reader takes these for any field
OPTIONAL_SCALARS = ("num_sequences", "context_length", "vector_dim")  # checked when present


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A small synthetic corpus (payload, compact and full windows, eval NPZ) and a reranker."""
  root = tmp_path_factory.mktemp("fuzz")
  data = str(root / "data")
  synthetic.generate_synthetic_corpus(data, num_articles=40, dim=16)
  features = len(learned_rerank.FEATURE_NAMES)
  learned_rerank.save(str(root / "reranker.json"), learned_rerank.LinearReranker(
      weights=np.ones(features, np.float32), mean=np.zeros(features, np.float32),
      scale=np.ones(features, np.float32), depth=60, decay=0.4, fitted_on={"windows": "val"}))
  with open(root / "text.txt", "w", encoding="utf-8") as f:
    f.write("A first paragraph of text.\n\nA second one.\n")
  # What status reads of a run: config.json, history.json, val_baselines.json.
  run = Workdir(str(root / "run"))
  os.makedirs(run.root)
  train = {"num_epochs": 4, "early_stopping_patience": 2, "smoke_gate_epoch": 2,
           "best_metric": "val_cosine", "best_mode": "max"}
  for path, value in ((run.config, {"model": {"name": "mamba_s"}, "train": train}),
                      (run.history, [{"epoch": e, "step": 10 * e, "val_cosine": 0.1 * e,
                                      "time": 1.0} for e in (1, 2, 3)]),
                      (run.baselines, {"copy_last": {"cosine": 0.3, "r5": 0.2},
                                       "recency": {"cosine": 0.35, "decay": 0.4}})):
    with open(path, "w") as f:
      json.dump(value, f)
  return {"data": data, "root": str(root)}


# ------------------------------------------------------------------------------ mutations
# Each takes (rng, path) and damages the file at path in place; each returns its description.


def truncate(rng, path):
  size = os.path.getsize(path)
  keep = int(rng.integers(0, max(size, 1)))
  with open(path, "rb") as f:
    head = f.read(keep)
  with open(path, "wb") as f:
    f.write(head)
  return f"truncated to {keep} of {size} bytes"


def random_bytes(rng, path):
  size = int(rng.integers(1, 2 * max(os.path.getsize(path), 1) + 2))
  # A leading 0x99 is never valid UTF-8, JSON, a zip or an NPY header.
  with open(path, "wb") as f:
    f.write(b"\x99" + rng.bytes(size))
  return f"{size + 1} random bytes"


def _rewrite_npy(path, change):
  array = np.load(path, allow_pickle=False)
  np.save(path, change(array), allow_pickle=True)


def _rewrite_npz(path, field, change):
  with np.load(path, allow_pickle=False) as npz:
    arrays = {name: npz[name] for name in npz.files}
  if change is None:
    del arrays[field]
  else:
    arrays[field] = change(arrays[field])
  with open(path, "wb") as f:  # np.savez would append .npz to a name without it
    np.savez(f, **arrays, allow_pickle=True)


def _wrong_dtype(rng):
  dtype = NPY_DTYPES[int(rng.integers(len(NPY_DTYPES)))]
  return dtype, lambda a: a.astype(dtype)


def _wrong_shape(a):
  return a.reshape(-1) if a.ndim > 1 else a.reshape(-1, 1)[:, [0, 0]]


def _with_nan(rng):
  def change(a):
    a = a.astype(np.float32, copy=True)
    a.reshape(-1)[int(rng.integers(a.size))] = np.nan
    return a
  return change


def npy_mutation(rng, path, *, floats: bool):
  kinds = ["truncate", "random_bytes", "dtype", "shape"] + (["nan"] if floats else [])
  kind = kinds[int(rng.integers(len(kinds)))]
  if kind == "truncate":
    return truncate(rng, path)
  if kind == "random_bytes":
    return random_bytes(rng, path)
  if kind == "dtype":
    dtype, change = _wrong_dtype(rng)
    _rewrite_npy(path, change)
    return f"dtype {dtype}"
  if kind == "shape":
    _rewrite_npy(path, _wrong_shape)
    return "wrong shape"
  _rewrite_npy(path, _with_nan(rng))
  return "a NaN"


def npz_mutation(rng, path):
  with np.load(path, allow_pickle=False) as npz:
    fields = [name for name in npz.files if name != "provenance"]
    arrays = [name for name in fields if name not in OPTIONAL_SCALARS]
    float_fields = [name for name in fields if npz[name].dtype.kind == "f"]
  kinds = ["truncate", "random_bytes", "dtype", "shape", "missing"] + (
      ["nan"] if float_fields else [])
  kind = kinds[int(rng.integers(len(kinds)))]
  if kind == "truncate":
    return truncate(rng, path)
  if kind == "random_bytes":
    return random_bytes(rng, path)
  if kind == "nan":
    field = float_fields[int(rng.integers(len(float_fields)))]
    _rewrite_npz(path, field, _with_nan(rng))
    return f"a NaN in {field}"
  field = fields[int(rng.integers(len(fields)))]
  if kind == "dtype":
    dtype, change = _wrong_dtype(rng)
    _rewrite_npz(path, field, change)
    return f"{field} as {dtype}"
  if kind == "shape":
    _rewrite_npz(path, field, _wrong_shape)
    return f"{field} of a wrong shape"
  field = arrays[int(rng.integers(len(arrays)))]  # the scalars may be left out
  _rewrite_npz(path, field, None)
  return f"{field} missing"


STATUS_KINDS = ("truncate", "random_bytes", "not an object", "wrong type")


def json_mutation(rng, path, *, required, kinds=None):
  """required: top-level keys a reader needs, any of which may be dropped or retyped (kinds:
  the mutations allowed; default all)."""
  kinds = [kind for kind in ["truncate", "random_bytes", "not an object"] + (
      ["missing", "wrong type"] if required else []) if kinds is None or kind in kinds]
  kind = kinds[int(rng.integers(len(kinds)))]
  if kind == "truncate":
    with open(path, "rb") as f:
      size = len(f.read().rstrip())
    keep = int(rng.integers(0, size))  # never the whole object: its closing brace goes
    with open(path, "rb") as f:
      head = f.read(keep)
    with open(path, "wb") as f:
      f.write(head)
    return f"truncated to {keep} of {size} bytes"
  if kind == "random_bytes":
    return random_bytes(rng, path)
  with open(path) as f:
    value = json.load(f)
  if kind == "not an object":
    value = [value]
  else:
    key = required[int(rng.integers(len(required)))]
    if kind == "missing":
      del value[key]
    else:
      wrong = [other for other in ("fast", [1, 2], None, {"a": 1}, True)
               if type(other) is not type(value[key])]  # a value of another JSON type
      value[key] = wrong[int(rng.integers(len(wrong)))]
    kind = f"{key} {kind}"
  with open(path, "w") as f:
    json.dump(value, f)
  return kind


# -------------------------------------------------------------------------------- readers
# name -> (file to damage, relative to a fresh copy of the corpus; mutation; read(copy)).

PAYLOAD_ARRAYS = ("vectors.npy", "article_index.npy", "chunk_index.npy", "ids.npy")


def _payload_reader(name):
  return (f"payload/{name}", lambda rng, p: npy_mutation(rng, p, floats=name == "vectors.npy"),
          lambda d: read_payload(os.path.join(d, "payload")))


READERS = {
    **{f"payload {name}": _payload_reader(name) for name in PAYLOAD_ARRAYS},
    "payload texts.jsonl": ("payload/texts.jsonl", random_bytes,
                            lambda d: read_payload(os.path.join(d, "payload"))),
    "payload provenance.json": ("payload/provenance.json",
                                lambda rng, p: json_mutation(rng, p, required=()),
                                lambda d: read_payload(os.path.join(d, "payload"))),
    "train windows (compact)": ("train_rows.npz", npz_mutation, lambda d: read_sequence_set(
        os.path.join(d, "train_rows.npz"), payload=read_payload(os.path.join(d, "payload")))),
    "train windows (full)": ("train.npz", npz_mutation,
                             lambda d: read_sequence_set(os.path.join(d, "train.npz"))),
    "val windows as queries": ("val_rows.npz", npz_mutation, lambda d: read_queries(
        os.path.join(d, "val_rows.npz"), read_payload(os.path.join(d, "payload")))),
    "eval NPZ": ("eval.npz", npz_mutation, lambda d: read_eval_set(os.path.join(d, "eval.npz"))),
    "reranker.json": ("../reranker.json",
                      lambda rng, p: json_mutation(rng, p, required=(
                          "format_version", "kind", "features", "weights", "mean", "scale",
                          "depth", "decay")),
                      lambda d: learned_rerank.load(os.path.join(d, "..", "reranker.json"))),
    "predict's text file": ("../text.txt", random_bytes, lambda d: _read_text(d)),
    # Status may miss any of these keys (a run from before a field, no baselines yet), so
    # they are retyped, never dropped (STATUS_KINDS).
    **{f"status {name}": (f"../run/{name}", lambda rng, p, keys=keys: json_mutation(
        rng, p, required=keys, kinds=STATUS_KINDS), lambda d: _status(d)) for name, keys in (
            ("config.json", ("train", "model")), ("history.json", ()),
            ("val_baselines.json", ("copy_last", "recency")))},
}


def _status(data):
  from lvm_jax import status  # pylint: disable=g-import-not-at-top
  return status.summarize(status.read_run(Workdir(os.path.join(data, "..", "run"))))


def _read_text(data):
  from lvm_jax import predict  # pylint: disable=g-import-not-at-top
  return predict.read_text_file(os.path.join(data, "..", "text.txt"))


def run_like_a_cli(read, capsys):
  """(exit code, stderr lines) of `read` under the CLIs' error path; a crash is raised."""
  capsys.readouterr()

  @cli.exits_cleanly_on_user_errors
  def main(argv):
    del argv
    read()

  try:
    main(["fuzz"])
    code = 0
  except SystemExit as exit_:
    code = exit_.code
  return code, capsys.readouterr().err.splitlines()


def check_case(read, capsys, description):
  """None when the case ended as a CLI must end on bad input, else what happened."""
  try:
    code, lines = run_like_a_cli(read, capsys)
  except Exception as error:  # pylint: disable=broad-except
    return f"{description}: crashed with {type(error).__name__}: {error}"
  errors = [line for line in lines if line.startswith("error: ")]
  if code != 2 or len(errors) != 1 or any("Traceback" in line for line in lines):
    return f"{description}: exit {code}, stderr {lines[-3:]}"
  return None


def fresh_copy(corpus, tmp_path):
  """A private copy of the corpus (data/ and the files beside it)."""
  copy = tmp_path / "case"
  if copy.exists():
    shutil.rmtree(copy)
  shutil.copytree(corpus["root"], copy)
  return str(copy / "data")


def test_every_reader_is_reached_by_the_cases():
  names = [case_reader(i) for i in range(CASES)]
  assert set(names) == set(READERS)


def case_reader(index):
  return sorted(READERS)[index % len(READERS)]


@pytest.mark.parametrize("name", sorted(READERS))
def test_damaged_files_end_in_one_error_line_and_exit_2(corpus, tmp_path, capsys, name):
  target, mutate, read = READERS[name]
  failures, count = [], 0
  for index in range(CASES):
    if case_reader(index) != name:
      continue
    rng = np.random.default_rng([SEED, index])
    data = fresh_copy(corpus, tmp_path)
    description = f"case {index} ({name}): " + mutate(rng, os.path.join(data, target))
    failure = check_case(lambda: read(data), capsys, description)
    failures += [failure] if failure else []
    count += 1
  assert count > 0
  assert not failures, "\n".join(failures)


def test_missing_and_directory_text_files_end_in_one_error_line(corpus, tmp_path, capsys):
  from lvm_jax import predict  # pylint: disable=g-import-not-at-top
  missing = str(tmp_path / "absent.txt")
  assert run_like_a_cli(lambda: predict.read_text_file(missing), capsys) == (2, [
      f"error: --text-file {missing}: does not exist. Fix: pass --text-file with a plain-text "
      "(UTF-8) file, or pipe the text to standard input."])
  binary = tmp_path / "binary.txt"
  binary.write_bytes(b"ok\x99text")
  assert run_like_a_cli(lambda: predict.read_text_file(str(binary)), capsys) == (2, [
      f"error: --text-file {binary}: is not UTF-8 text (byte 0x99 at offset 2). Fix: pass "
      "--text-file with a plain-text (UTF-8) file, or pipe the text to standard input."])


@pytest.fixture(scope="module")
def checkpoint_workdir(eval_workdir, tmp_path_factory):
  """The shared untrained workdir's config.json and checkpoint, with the data left out."""
  copy = str(tmp_path_factory.mktemp("fuzz_checkpoint") / "run")
  shutil.copytree(eval_workdir, copy, ignore=shutil.ignore_patterns("data", ".lock"))
  return copy


def test_damaged_checkpoints_end_in_one_error_line_and_exit_2(checkpoint_workdir, tmp_path,
                                                             capsys):
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  failures = []
  for index in range(CHECKPOINT_CASES):
    rng = np.random.default_rng([SEED, 10**6 + index])
    workdir = str(tmp_path / f"run{index}")
    shutil.copytree(checkpoint_workdir, workdir)
    # What a restore reads: the merged OCDBT store (process_0's is what it was merged from).
    default = glob.glob(os.path.join(workdir, "checkpoints", "*", "default"))[0]
    targets = ([os.path.join(workdir, "config.json"), os.path.join(default, "manifest.ocdbt"),
                os.path.join(default, "_METADATA")] +
               sorted(glob.glob(os.path.join(default, "d", "*"))))
    target = targets[int(rng.integers(len(targets)))]
    if target.endswith(".json"):
      description = json_mutation(rng, target, required=("model",))
    else:
      description = (truncate if rng.integers(2) else random_bytes)(rng, target)
    failure = check_case(lambda: checkpoint.load(workdir), capsys,
                         f"checkpoint case {index}: {os.path.relpath(target, workdir)} "
                         f"{description}")
    failures += [failure] if failure else []
    shutil.rmtree(workdir)
  assert not failures, "\n".join(failures)


# ------------------------------------------------------------- end to end, in fresh processes
# The same damage through the CLIs themselves (absl's app.run, eval's own parser): a few cases,
# each a JAX-importing process, so marked slow.

END_TO_END = [
    ("eval, random bytes for the eval NPZ", "lvm_jax.eval", "data/eval.npz", random_bytes,
     ["--checkpoint", "{run}", "--latency-queries", "5"]),
    ("eval, a truncated reranker.json", "lvm_jax.eval", "reranker.json",
     lambda rng, p: json_mutation(rng, p, required=()), ["--checkpoint", "{run}",
                                                         "--latency-queries", "5"]),
    ("fit_reranker, truncated val windows", "lvm_jax.eval.fit_reranker", "data/val_rows.npz",
     truncate, ["--checkpoint", "{run}"]),
    ("status, a damaged history.json", "lvm_jax.status", "history.json", random_bytes,
     ["{run}"]),
    # Newer Orbax finishes the abandoned reads of a failed restore later, each printing a
    # traceback, unless checkpoint._quiet_abandoned_reads drops them.
    ("eval, every checkpoint data file garbled", "lvm_jax.eval", "checkpoints",
     lambda rng, p: [random_bytes(rng, f) for f in glob.glob(os.path.join(p, "*", "default",
                                                                           "d", "*"))],
     ["--checkpoint", "{run}", "--latency-queries", "5"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, module, target, mutate, argv", END_TO_END,
                         ids=[c[0] for c in END_TO_END])
def test_damaged_files_end_to_end(eval_workdir, tmp_path, case, module, target, mutate, argv):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  run = str(tmp_path / "run")
  shutil.copytree(eval_workdir, run, ignore=shutil.ignore_patterns(".lock"))
  if target == "reranker.json":
    features = len(learned_rerank.FEATURE_NAMES)
    learned_rerank.save(os.path.join(run, target), learned_rerank.LinearReranker(
        weights=np.ones(features, np.float32), mean=np.zeros(features, np.float32),
        scale=np.ones(features, np.float32), depth=60, decay=0.4))
  description = mutate(np.random.default_rng([SEED, 2 * 10**6]), os.path.join(run, target))
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  result = subprocess.run([sys.executable, "-m", module, *(a.format(run=run) for a in argv)],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
  errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert result.returncode == 2 and len(errors) == 1, (case, description, result.stderr[-1500:])
  assert "Traceback" not in result.stderr
  assert os.path.join(run, target) in errors[0] or target in errors[0], errors[0]
