"""FAISS indexes over a payload: build, write, read with checks. Ids are payload rows.

Vectors are unit norm, so inner product is cosine. Kinds:
  flat      exact search; the ground truth, and the choice for small payloads;
  ivf_flat  inverted lists over k-means cells (nlist), nprobe cells scanned per
            query: the reference's index;
  ivf_sq8   the same lists with 8-bit scalar-quantised vectors: a quarter of the
            bytes scanned a query (search is memory-bound), at a small recall cost;
  ivf_sq8_refine  ivf_sq8 whose k_factor·k best candidates are re-scored exactly
            against a float copy of the payload: the 8-bit codes only shortlist, so
            recall is IVF-Flat's at the same nprobe, for about SQ8's scan cost (the
            file holds both: ~1.25x IVF-Flat's bytes);
  ivf_pqfs_refine  the lists as 4-bit product-quantised codes (dim/4 sub-vectors
            of 4 dims, 96 bytes a 768-d row) scanned with FAISS's fast-scan kernels
            (lookup tables held in SIMD registers), and the k_factor·k best re-scored
            exactly against a float copy: the scan is ~30x fewer bytes than IVF-Flat's
            and compute-light, so the cell search costs little and the coarse
            quantizer and the re-scoring dominate;
  ivf_hnsw_pqfs_refine  ivf_pqfs_refine with finer codes (sub-vectors of 2 dims, 192
            bytes a 768-d row, which shortlist tightly enough for k_factor 8) and a graph
            (HNSW) over the k-means centroids as the coarse quantizer, so a query no
            longer scores every centroid exactly. Rows are assigned to cells by the exact
            centroids when added; the graph is attached after. The default (DEFAULT_KIND)
            for large payloads, built at nprobe 48, k_factor 8: per-query P95 0.21x
            IVF-Flat nprobe 64's at recall@50 0.995 on 585k x 768, chosen by
            benchmarks.eval_bench (benchmarks/results/x86_64-2cpu/eval_bench.json);
  ivf_fp16  the lists in 16-bit floats: half IVF-Flat's bytes and nearly its recall;
  hnsw      a graph index (M links a node), no training; slow to build at 585k x 768
            on two cores.

Search-time knobs live in the index file (FAISS writes them): nprobe (IVF kinds,
KIND_NPROBE when built; set_nprobe) and k_factor (the *_refine kinds, KIND_K_FACTOR;
set_k_factor). choose_index_kind(rows) is the one rule for which kind to build.
"""

from __future__ import annotations

import logging as python_logging
import math
import os
import re
from typing import Optional

import numpy as np
from absl import logging

from lvm_jax import atomic
from lvm_jax.data.errors import data_error

INDEX_KINDS = ("flat", "ivf_flat", "ivf_sq8", "ivf_sq8_refine", "ivf_pqfs_refine",
               "ivf_hnsw_pqfs_refine", "ivf_fp16", "hnsw")
IVF_KINDS = ("ivf_flat", "ivf_sq8", "ivf_sq8_refine", "ivf_pqfs_refine", "ivf_hnsw_pqfs_refine",
             "ivf_fp16")
REFINE_KINDS = ("ivf_sq8_refine", "ivf_pqfs_refine", "ivf_hnsw_pqfs_refine")
GRAPH_QUANTIZER_KINDS = ("ivf_hnsw_pqfs_refine",)  # IVF kinds whose cells are found by HNSW
DEFAULT_KIND = "ivf_hnsw_pqfs_refine"  # what choose_index_kind picks for large payloads
FLAT_MAX_ROWS = 50_000  # below this many rows exact Flat search is fast enough and needs no training
AUTO = "auto"  # a kind argument meaning choose_index_kind(rows)
INDEX_FILE = "payload.faiss"  # the index beside a data directory's sets
DEFAULT_NPROBE = 64  # the reference's locked nprobe (ivf_flat)
# nprobe and k_factor set at build time, per kind: the settings that reach recall@50 >= 0.99
# at the default nlist on 585k x 768 (benchmarks/results/x86_64-2cpu/eval_bench.json).
KIND_NPROBE = {"ivf_flat": DEFAULT_NPROBE, "ivf_sq8": DEFAULT_NPROBE, "ivf_sq8_refine": 48,
               "ivf_pqfs_refine": 64, "ivf_hnsw_pqfs_refine": 48, "ivf_fp16": 48}
KIND_K_FACTOR = {"ivf_sq8_refine": 2.0, "ivf_pqfs_refine": 16.0, "ivf_hnsw_pqfs_refine": 8.0}
# Dims a 4-bit sub-quantizer codes (the vector dim must divide by it).
PQ_DIMS_PER_CODE = {"ivf_pqfs_refine": 4, "ivf_hnsw_pqfs_refine": 2}
QUANTIZER_LINKS = 32  # the centroid graph's links a node (ivf_hnsw_pqfs_refine)
QUANTIZER_EF_CONSTRUCTION = 200
QUANTIZER_EF_SEARCH = 64  # centroid candidates kept a query; in the file (quantizer_ef_search)
TRAIN_POINTS_PER_CELL = 64  # k-means sample: this many points a cell (FAISS warns below 39)
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128  # hnsw: candidates kept while walking the graph (set when built; set_ef_search)
CHECK_SAMPLE = 64  # payload rows that read_index looks up to check the id mapping


def _faiss():
  """FAISS on first use: training imports the evaluators, which import this module.

  Its loader logs at INFO that the AVX2 build is absent (a ModuleNotFoundError line) before
  loading the generic build, which works: only its warnings are kept.
  """
  python_logging.getLogger("faiss.loader").setLevel(python_logging.WARNING)
  import faiss  # pylint: disable=g-import-not-at-top
  return faiss


def _faiss_reason(error: Exception) -> str:
  """The useful tail of a FAISS C++ error: without the function signature and source line."""
  text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
  match = re.search(r" at \S+:\d+: (.*)$", text)
  return (match.group(1) if match else text)[:200]


def default_nlist(num_vectors: int) -> int:
  """≈ 4·√M cells, at least 1 and never more than M / 39 (FAISS's minimum points a cell)."""
  return int(max(1, min(round(4 * math.sqrt(num_vectors)), num_vectors // 39)))


def choose_index_kind(num_rows: int) -> str:
  """The kind to build over a payload of `num_rows` when none is named: the one rule that
  eval.build_index, the eval CLI and the in-loop evaluator share. Flat below FLAT_MAX_ROWS,
  else DEFAULT_KIND."""
  return "flat" if num_rows < FLAT_MAX_ROWS else DEFAULT_KIND


def resolve_kind(kind: str, rows: int) -> str:
  """`kind`, or choose_index_kind(rows) for "auto"; refuses an unknown kind."""
  if kind == AUTO:
    return choose_index_kind(rows)
  if kind not in INDEX_KINDS:
    raise ValueError(f"index kind {kind!r} is not one of {(AUTO,) + INDEX_KINDS}.")
  return kind


def build_index(vectors: np.ndarray, kind: str = AUTO, nlist: Optional[int] = None,
                train_sample: Optional[int] = None, seed: int = 0) -> faiss.Index:
  """An inner-product index over `vectors` [M, dim] in row order (FAISS id = row).

  kind: one of INDEX_KINDS, or "auto" (choose_index_kind(M)); nlist: IVF cells
  (default default_nlist(M)); train_sample: k-means training points (default
  TRAIN_POINTS_PER_CELL per cell), drawn without replacement.
  """
  faiss = _faiss()
  vectors = np.ascontiguousarray(vectors, dtype=np.float32)
  num_vectors, dim = vectors.shape
  kind = resolve_kind(kind, num_vectors)
  if kind == "flat":
    index = faiss.IndexFlatIP(dim)
  elif kind == "hnsw":
    index = faiss.IndexHNSWFlat(dim, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = HNSW_EF_SEARCH
  else:
    nlist = default_nlist(num_vectors) if nlist is None else int(nlist)
    if not 1 <= nlist <= num_vectors:
      raise ValueError(f"nlist={nlist} must be in [1, {num_vectors}] (the payload's rows).")
    index = ivf_index(faiss.IndexFlatIP(dim), kind, nlist)
    sample_size = min(num_vectors, train_sample or nlist * TRAIN_POINTS_PER_CELL)
    sample = np.random.default_rng(seed).choice(num_vectors, sample_size, replace=False)
    logging.info("Training IVF (nlist=%d) on %d of %d vectors", nlist, sample_size, num_vectors)
    index.train(vectors[np.sort(sample)])
    set_nprobe(index, KIND_NPROBE[kind])
  index.add(vectors)
  if kind in GRAPH_QUANTIZER_KINDS:
    attach_graph_quantizer(index)
  return index


def attach_graph_quantizer(index: faiss.Index) -> None:
  """Replaces a trained, filled IVF index's exact coarse quantizer with an HNSW graph over the
  same centroids: each query then visits a few hundred centroids, not all nlist. The lists,
  filled by exact assignment, are unchanged; the index owns the graph."""
  faiss = _faiss()
  ivf = faiss.extract_index_ivf(index)
  centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)
  graph = faiss.IndexHNSWFlat(ivf.d, QUANTIZER_LINKS, faiss.METRIC_INNER_PRODUCT)
  graph.hnsw.efConstruction = QUANTIZER_EF_CONSTRUCTION
  graph.add(centroids)
  graph.hnsw.efSearch = QUANTIZER_EF_SEARCH
  graph.this.disown()  # freed with the IVF index, which owns it from here
  ivf.quantizer = graph
  ivf.own_fields = True


def ivf_index(quantizer: faiss.Index, kind: str, nlist: int) -> faiss.Index:
  """An untrained IVF index of `kind` over the cells of `quantizer` (inner product).

  For ivf_sq8_refine: train() trains the SQ8 lists, add() fills both them and the
  float copy that re-scores the shortlist.
  """
  faiss = _faiss()
  dim = quantizer.d
  if kind not in IVF_KINDS:
    raise ValueError(f"index kind {kind!r} is not an IVF kind {IVF_KINDS}.")
  if kind == "ivf_flat":
    return faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
  if kind in PQ_DIMS_PER_CODE:
    code_dims = PQ_DIMS_PER_CODE[kind]
    if dim % code_dims:
      raise ValueError(f"{kind}: vector dim {dim} does not divide into sub-vectors of "
                       f"{code_dims}; use ivf_sq8_refine for this payload.")
    lists = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, dim // code_dims, 4,
                                     faiss.METRIC_INNER_PRODUCT)
    index = faiss.IndexRefineFlat(lists)
    index.k_factor = KIND_K_FACTOR[kind]
    return index
  codes = faiss.ScalarQuantizer.QT_fp16 if kind == "ivf_fp16" else faiss.ScalarQuantizer.QT_8bit
  index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, codes, faiss.METRIC_INNER_PRODUCT)
  if kind == "ivf_sq8_refine":
    index = faiss.IndexRefineFlat(index)  # the flat copy takes the base's metric (IP)
    index.k_factor = KIND_K_FACTOR[kind]
  return index


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
  """Cells scanned a query (IVF only; other kinds ignore it)."""
  faiss = _faiss()
  ivf = faiss.try_extract_index_ivf(index)
  if ivf is not None:
    ivf.nprobe = int(min(nprobe, ivf.nlist))


def set_k_factor(index: faiss.Index, k_factor: float) -> None:
  """Shortlist size, as a multiple of k, re-scored exactly (REFINE_KINDS; others ignore it)."""
  faiss = _faiss()
  if k_factor < 1:
    raise ValueError(f"k_factor={k_factor}: must be at least 1 (the shortlist holds k_factor·k "
                     "candidates).")
  refine = faiss.downcast_index(index)
  if isinstance(refine, faiss.IndexRefine):
    refine.k_factor = float(k_factor)


def set_ef_search(index: faiss.Index, ef_search: int) -> None:
  """Graph candidates kept a query (hnsw; other kinds ignore it): recall against time."""
  faiss = _faiss()
  graph = faiss.downcast_index(index)
  if isinstance(graph, faiss.IndexHNSW):
    graph.hnsw.efSearch = int(ef_search)


def search_knobs(index: faiss.Index) -> dict:
  """The search-time settings an index holds: {"nprobe": .., "k_factor": ..}, those that apply
  ("ef_search" for hnsw)."""
  faiss = _faiss()
  knobs = {}
  graph = faiss.downcast_index(index)
  if isinstance(graph, faiss.IndexHNSW):
    knobs["ef_search"] = int(graph.hnsw.efSearch)
  ivf = faiss.try_extract_index_ivf(index)
  if ivf is not None:
    knobs["nprobe"] = int(ivf.nprobe)
    quantizer = faiss.downcast_index(ivf.quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
      knobs["quantizer_ef_search"] = int(quantizer.hnsw.efSearch)
  refine = faiss.downcast_index(index)
  if isinstance(refine, faiss.IndexRefine):
    knobs["k_factor"] = float(refine.k_factor)
  return knobs


def ivf_cells(index: faiss.Index) -> Optional[int]:
  """nlist of an IVF index; None for other kinds."""
  faiss = _faiss()
  ivf = faiss.try_extract_index_ivf(index)
  return None if ivf is None else int(ivf.nlist)


def index_kind(index: faiss.Index) -> str:
  faiss = _faiss()
  ivf = faiss.try_extract_index_ivf(index)
  if ivf is not None:
    lists = faiss.downcast_index(ivf)
    if isinstance(lists, faiss.IndexIVFPQFastScan):
      graph = isinstance(faiss.downcast_index(ivf.quantizer), faiss.IndexHNSW)
      return "ivf_hnsw_pqfs_refine" if graph else "ivf_pqfs_refine"
    if not isinstance(lists, faiss.IndexIVFScalarQuantizer):
      return "ivf_flat"
    if lists.sq.qtype == faiss.ScalarQuantizer.QT_fp16:
      return "ivf_fp16"
    return "ivf_sq8_refine" if isinstance(faiss.downcast_index(index), faiss.IndexRefine) \
        else "ivf_sq8"
  if isinstance(index, faiss.IndexHNSW):
    return "hnsw"
  return "flat"


def write_index(index: faiss.Index, path: str) -> None:
  """Written beside, then renamed: a crash never leaves half an index."""
  faiss = _faiss()
  atomic.write_with(path, lambda temporary: faiss.write_index(index, temporary))


def read_index(path: str, payload_vectors: np.ndarray, *, check_sample: int = CHECK_SAMPLE,
               seed: int = 0) -> faiss.Index:
  """Reads an index and checks it belongs to the payload: same size, and a sample of
  payload rows finds itself (its own row id among the exact top hits)."""
  faiss = _faiss()
  rebuild = ("rebuild it with python -m lvm_jax.eval.build_index --payload PAYLOAD --out "
             f"{path}")
  if not os.path.exists(path):
    raise data_error(path, "(file)", "does not exist", "build it with python -m "
                     f"lvm_jax.eval.build_index --payload PAYLOAD --out {path}")
  if os.path.isdir(path):
    raise data_error(path, "(file)", "is a directory, not a FAISS index file",
                     "pass the index file itself (e.g. DIR/payload.faiss)")
  if os.path.getsize(path) == 0:
    raise data_error(path, "(file)", "is empty (0 bytes)", rebuild)
  try:
    index = faiss.read_index(path)
  except RuntimeError as error:  # FAISS raises RuntimeError for any unreadable file
    raise data_error(path, "(file)", "is not a readable FAISS index (truncated, damaged or "
                     f"another format: {_faiss_reason(error)})", rebuild) from error
  num_rows, dim = payload_vectors.shape
  if index.ntotal != num_rows or index.d != dim:
    raise data_error(path, "ntotal", f"holds {index.ntotal} vectors of dim {index.d} but the "
                     f"payload has {num_rows} of dim {dim}", "rebuild the index from this payload")
  rows = np.random.default_rng(seed).choice(num_rows, min(check_sample, num_rows), replace=False)
  queries = np.ascontiguousarray(payload_vectors[rows], np.float32)
  ivf = faiss.try_extract_index_ivf(index)
  saved_nprobe = ivf.nprobe if ivf is not None else None
  if ivf is not None:
    ivf.nprobe = ivf.nlist  # exhaustive for the check: a miss then means a wrong id
  _, ids = index.search(queries, 10)
  if ivf is not None:
    ivf.nprobe = saved_nprobe
  # A row may have exact duplicates in the payload; accept any id holding the same vector.
  found = [row in hits or any(np.array_equal(payload_vectors[h], payload_vectors[row])
                              for h in hits if h >= 0) for row, hits in zip(rows, ids)]
  missing = rows[~np.asarray(found)]
  if missing.size:
    raise data_error(path, "ids", f"payload rows {missing[:5].tolist()} do not find themselves "
                     "in the index: its ids are not this payload's row numbers",
                     "rebuild the index from this payload (rows in payload order)")
  return index

