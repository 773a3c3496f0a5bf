"""The large-payload index kinds and the default: ids are rows after a write and read, the
search finds the exact neighbours, the search-time knobs apply and travel in the file,
and one rule (choose_index_kind) picks Flat for small payloads and DEFAULT_KIND beyond."""

import numpy as np
import pytest

from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import search

NEW_KINDS = ("ivf_sq8_refine", "ivf_pqfs_refine", "ivf_hnsw_pqfs_refine", "ivf_fp16")
# Shortlist long enough that exact re-scoring recovers every neighbour on this 32-d toy payload,
# where 4-bit codes of 4-d sub-vectors rank loosely; the 768-d defaults are in KIND_K_FACTOR.
TOY_K_FACTOR = {"ivf_sq8_refine": 4, "ivf_pqfs_refine": 32, "ivf_hnsw_pqfs_refine": 16}


def built_knobs(kind, nlist):
  """search_knobs of a freshly built `kind` over `nlist` cells."""
  knobs = {"nprobe": min(index_lib.KIND_NPROBE[kind], nlist)}  # never more than the cells
  if kind in index_lib.REFINE_KINDS:
    knobs["k_factor"] = index_lib.KIND_K_FACTOR[kind]
  if kind in index_lib.GRAPH_QUANTIZER_KINDS:
    knobs["quantizer_ef_search"] = index_lib.QUANTIZER_EF_SEARCH
  return knobs


def clustered_payload(rows=6000, dim=32, clusters=60, seed=0):
  """Unit vectors around `clusters` centres, and queries near (not on) the payload:
  [rows, dim], [200, dim]. Retrieval structure like the corpus: neighbours share a centre."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(clusters, dim))
  vectors = centres[rng.integers(0, clusters, rows)] + 0.6 * rng.normal(size=(rows, dim))
  vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
  queries = vectors[:200] + 0.3 * rng.normal(size=(200, dim)).astype(np.float32)
  queries /= np.linalg.norm(queries, axis=1, keepdims=True)
  return vectors, np.ascontiguousarray(queries, np.float32)


def exact_rows(vectors, queries, k=50):
  return search.search(index_lib.build_index(vectors, kind="flat"), queries, k)[1]


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_new_kind_reads_back_with_row_ids_and_finds_exact_neighbours(kind, tmp_path):
  vectors, queries = clustered_payload()
  path = str(tmp_path / "payload.faiss")
  index_lib.write_index(index_lib.build_index(vectors, kind=kind, nlist=40), path)
  index = index_lib.read_index(path, vectors)  # read_index checks that ids are rows
  assert index_lib.index_kind(index) == kind
  # The search settings are the ones it was built with, and the file kept them.
  assert index_lib.search_knobs(index) == built_knobs(kind, 40)
  if kind in TOY_K_FACTOR:
    index_lib.set_k_factor(index, TOY_K_FACTOR[kind])
  _, own, _ = search.search(index, vectors[:300], 10)
  assert (own[:, 0] == np.arange(300)).all()
  _, found, _ = search.search(index, queries, 50)
  assert search.index_recall(found, exact_rows(vectors, queries)) >= 0.98


@pytest.mark.parametrize("kind", index_lib.REFINE_KINDS)
def test_nprobe_and_k_factor_apply_and_are_reported(kind):
  vectors, queries = clustered_payload()
  index = index_lib.build_index(vectors, kind=kind, nlist=40)
  exact = exact_rows(vectors, queries)
  recall = lambda: search.index_recall(search.search(index, queries, 50)[1], exact)
  index_lib.set_nprobe(index, 40)  # every cell: only the coded shortlist can lose neighbours
  index_lib.set_k_factor(index, 1)
  shortlist_only = recall()
  index_lib.set_k_factor(index, TOY_K_FACTOR[kind])
  assert index_lib.search_knobs(index) == {**built_knobs(kind, 40), "nprobe": 40,
                                           "k_factor": TOY_K_FACTOR[kind]}
  assert recall() >= 0.99 > shortlist_only  # exact re-scoring of a long shortlist recovers them
  index_lib.set_nprobe(index, 1)
  assert recall() < 0.9  # one cell of 40 misses neighbours: the knob reached the lists
  with pytest.raises(ValueError, match="k_factor=0.5: must be at least 1"):
    index_lib.set_k_factor(index, 0.5)
  # Kinds without a shortlist ignore k_factor, as other kinds ignore nprobe.
  fp16 = index_lib.build_index(vectors, kind="ivf_fp16", nlist=40)
  index_lib.set_k_factor(fp16, 4)
  assert index_lib.search_knobs(fp16) == {"nprobe": min(index_lib.KIND_NPROBE["ivf_fp16"], 40)}


def test_hnsw_ef_search_applies_and_travels_in_the_file(tmp_path):
  vectors, queries = clustered_payload(rows=3000)
  index = index_lib.build_index(vectors, kind="hnsw")
  assert index_lib.search_knobs(index) == {"ef_search": index_lib.HNSW_EF_SEARCH}
  index_lib.set_ef_search(index, 200)
  path = str(tmp_path / "payload.faiss")
  index_lib.write_index(index, path)
  index = index_lib.read_index(path, vectors)
  assert index_lib.index_kind(index) == "hnsw"
  assert index_lib.search_knobs(index) == {"ef_search": 200}
  exact = exact_rows(vectors, queries)
  assert search.index_recall(search.search(index, queries, 50)[1], exact) >= 0.98


def test_the_graph_quantizer_finds_the_cells_the_exact_one_finds():
  import faiss  # pylint: disable=g-import-not-at-top
  vectors, queries = clustered_payload()
  index = index_lib.build_index(vectors, kind="ivf_hnsw_pqfs_refine", nlist=40)
  quantizer = faiss.downcast_index(faiss.extract_index_ivf(index).quantizer)
  assert isinstance(quantizer, faiss.IndexHNSWFlat)
  graph_cells = quantizer.search(queries, 8)[1]
  centroids = quantizer.reconstruct_n(0, 40)  # the k-means centroids, stored in the graph
  exact_cells = np.argsort(-(queries @ centroids.T), axis=1)[:, :8]
  assert np.mean([len(set(a) & set(b)) / 8 for a, b in zip(graph_cells, exact_cells)]) >= 0.99


def test_pq_fast_scan_refuses_a_dim_it_cannot_split():
  with pytest.raises(ValueError, match="vector dim 30 does not divide"):
    index_lib.build_index(clustered_payload(dim=30)[0], kind="ivf_pqfs_refine", nlist=40)


def test_one_rule_picks_flat_below_the_small_payload_size_else_the_default():
  small = index_lib.FLAT_MAX_ROWS
  assert index_lib.choose_index_kind(small - 1) == "flat"
  assert index_lib.choose_index_kind(small) == index_lib.DEFAULT_KIND
  assert index_lib.choose_index_kind(584_000) == index_lib.DEFAULT_KIND
  # "auto" is that rule; an explicit kind is kept, an unknown one refused.
  assert index_lib.resolve_kind("auto", small - 1) == "flat"
  assert index_lib.resolve_kind("auto", 584_000) == index_lib.DEFAULT_KIND
  assert index_lib.resolve_kind("ivf_flat", 584_000) == "ivf_flat"
  with pytest.raises(ValueError, match="'ivf' is not one of"):
    index_lib.resolve_kind("ivf", 10)
  assert index_lib.DEFAULT_KIND in index_lib.IVF_KINDS


def test_eval_cli_builds_by_the_one_rule_and_keeps_the_index_nprobe():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import flags as eval_flags  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  eval_flags.define_flags(values)
  values(["eval"])
  assert values["index-kind"].value == index_lib.AUTO  # choose_index_kind, as build and loop
  assert index_lib.resolve_kind(values["index-kind"].value, 584_000) == index_lib.DEFAULT_KIND
  assert values.nprobe is None  # the index's own KIND_NPROBE, not the reference's 64
