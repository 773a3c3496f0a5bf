"""FAISS indexes: ids are payload rows, and read_index rejects an index of another payload."""

import numpy as np
import pytest

from lvm_jax.retrieval import index as index_lib
from lvm_jax.data.errors import DataFormatError


def unit_vectors(count, dim=16, seed=0):
  x = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", index_lib.INDEX_KINDS)
def test_every_row_finds_itself_first(kind, tmp_path):
  vectors = unit_vectors(2000)
  built = index_lib.build_index(vectors, kind=kind, nlist=16)
  index_lib.set_nprobe(built, 16)
  path = str(tmp_path / "payload.faiss")
  index_lib.write_index(built, path)
  index = index_lib.read_index(path, vectors)
  # Top 10 (eval asks for 50): the refine kinds re-score k_factor·k coded candidates exactly,
  # so the row itself comes first once it is on the shortlist.
  _, ids = index.search(vectors[:200], 10)
  found = ids[:, 0] == np.arange(200)
  # 8-bit codes can swap a row with a near-equal neighbour; exact kinds never do. 4-bit PQ
  # codes shortlist only k_factor·k = 4 rows at k = 1, and the row can fall outside them.
  floor = {"ivf_sq8": 0.98, "ivf_pqfs_refine": 0.95, "ivf_hnsw_pqfs_refine": 0.95}.get(kind, 1.0)
  assert found.mean() >= floor
  assert index_lib.index_kind(index) == kind


def test_default_nlist_rule():
  assert index_lib.default_nlist(584_000) == round(4 * np.sqrt(584_000))
  assert index_lib.default_nlist(100) == 2
  assert index_lib.default_nlist(10) == 1


def test_read_index_rejects_another_payload(tmp_path):
  vectors = unit_vectors(500)
  path = str(tmp_path / "payload.faiss")
  index_lib.write_index(index_lib.build_index(vectors, kind="flat"), path)
  with pytest.raises(DataFormatError, match=r"holds 500 vectors of dim 16 but the payload has 400"):
    index_lib.read_index(path, vectors[:400])
  shuffled = vectors[np.random.default_rng(1).permutation(500)]
  with pytest.raises(DataFormatError, match="its ids are not this payload's row numbers"):
    index_lib.read_index(path, shuffled)
  with pytest.raises(DataFormatError, match="does not exist"):
    index_lib.read_index(str(tmp_path / "absent.faiss"), vectors)


@pytest.mark.parametrize("module", ["lvm_jax.train", "lvm_jax.corpus.build",
                                    "lvm_jax.retrieval.metrics", "lvm_jax.retrieval.baselines",
                                    "lvm_jax.retrieval.index", "lvm_jax.corpus.synthetic"])
def test_importing_does_not_load_faiss(module):
  """FAISS loads on first use of an index, never on the training path's imports (and each
  module imports first in a fresh interpreter: no import cycle)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = f"import sys, {module}; print('faiss' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"


def test_payload_index_holds_the_payload_in_row_order_and_auto_is_flat_when_small(tmp_path):
  from data_helpers import make_payload  # pylint: disable=g-import-not-at-top
  payload = make_payload()
  path = str(tmp_path / index_lib.INDEX_FILE)
  built = index_lib.build_index(payload.vectors, kind=index_lib.resolve_kind(
      index_lib.AUTO, payload.num_rows))
  index_lib.write_index(built, path)
  assert index_lib.index_kind(built) == "flat"
  index = index_lib.read_index(path, payload.vectors)
  assert index.ntotal == payload.num_rows
  _, ids = index.search(payload.vectors[[0, 17, 40]], 1)
  np.testing.assert_array_equal(ids[:, 0], [0, 17, 40])


def test_faiss_loads_without_its_loaders_info_lines():
  """The loader's INFO lines (a ModuleNotFoundError for the absent AVX2 build) are dropped."""
  import logging as python_logging  # pylint: disable=g-import-not-at-top
  index_lib.build_index(unit_vectors(8), kind="flat")
  assert python_logging.getLogger("faiss.loader").getEffectiveLevel() == python_logging.WARNING
