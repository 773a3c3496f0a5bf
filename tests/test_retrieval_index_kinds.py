"""The large-payload index kinds and the default: ids are rows after a write and read, the
search finds the exact neighbours, the search-time knobs apply and travel in the file,
and the "auto" rule picks Flat for small payloads and DEFAULT_KIND beyond."""

import numpy as np
import pytest

from lvm_jax.retrieval import index as index_lib
from lvm_jax.retrieval import search

NEW_KINDS = ("ivf_sq8_refine", "ivf_fp16")


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
  # The search setting is the one it was built with, and the file kept it.
  assert index_lib.search_knobs(index)["nprobe"] == index_lib.KIND_NPROBE[kind]
  _, own, _ = search.search(index, vectors[:300], 1)
  assert (own[:, 0] == np.arange(300)).all()
  _, found, _ = search.search(index, queries, 50)
  assert search.index_recall(found, exact_rows(vectors, queries)) >= 0.98


def test_nprobe_and_k_factor_apply_and_are_reported():
  vectors, queries = clustered_payload()
  index = index_lib.build_index(vectors, kind="ivf_sq8_refine", nlist=40)
  assert index_lib.search_knobs(index) == {"nprobe": 32, "k_factor": index_lib.REFINE_K_FACTOR}
  exact = exact_rows(vectors, queries)
  recall = lambda: search.index_recall(search.search(index, queries, 50)[1], exact)
  index_lib.set_nprobe(index, 40)  # every cell: only the 8-bit shortlist can lose neighbours
  index_lib.set_k_factor(index, 1)
  shortlist_only = recall()
  index_lib.set_k_factor(index, 4)
  assert index_lib.search_knobs(index) == {"nprobe": 40, "k_factor": 4.0}
  assert recall() == 1.0 > shortlist_only  # exact re-scoring of 4·k recovers them all
  index_lib.set_nprobe(index, 1)
  assert recall() < 0.9  # one cell of 40 misses neighbours: the knob reached the lists
  with pytest.raises(ValueError, match="k_factor=0.5: must be at least 1"):
    index_lib.set_k_factor(index, 0.5)
  # Kinds without a shortlist ignore k_factor, as other kinds ignore nprobe.
  fp16 = index_lib.build_index(vectors, kind="ivf_fp16", nlist=40)
  index_lib.set_k_factor(fp16, 4)
  assert index_lib.search_knobs(fp16) == {"nprobe": 32}


def test_one_rule_chooses_the_kind_flat_below_the_small_payload_size_else_the_default():
  assert index_lib.choose_index_kind(index_lib.FLAT_MAX_ROWS - 1) == "flat"
  assert index_lib.choose_index_kind(index_lib.FLAT_MAX_ROWS) == index_lib.DEFAULT_KIND
  assert index_lib.resolve_kind("auto", 584_000) == index_lib.DEFAULT_KIND
  assert index_lib.resolve_kind("ivf_flat", 584_000) == "ivf_flat"
  with pytest.raises(ValueError, match="'ivf' is not one of"):
    index_lib.resolve_kind("ivf", 10)
  assert index_lib.DEFAULT_KIND in index_lib.IVF_KINDS


def test_eval_cli_builds_the_chosen_kind_and_keeps_its_nprobe():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from lvm_jax.eval import __main__ as eval_cli  # pylint: disable=g-import-not-at-top
  values = flags.FlagValues()
  eval_cli.define_flags(values)
  values(["eval"])
  assert values["index-kind"].value == index_lib.AUTO  # choose_index_kind, as build and loop
  assert index_lib.resolve_kind(values["index-kind"].value, 584_000) == index_lib.DEFAULT_KIND
  assert values.nprobe is None  # the index's own KIND_NPROBE, not the reference's 64
