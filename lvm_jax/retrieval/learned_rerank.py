"""A learned second stage: reorder the index's shortlist by vector features.

The predictor's query alone ranks a window's own context chunks first (a prediction
near the recency average is close to them) and ignores how central a candidate is in
the corpus. A linear scorer over a few similarities per candidate fixes both without
any article identity: each feature is computed from vectors only (the query, the
window's context, the candidate, the other candidates of its shortlist and the
payload's mean direction), so it applies to any payload of the same embedder.

shortlist_density, a candidate's mean cosine to the rest of its shortlist, says how generic
the candidate is near this query: a chunk that resembles most of the other candidates is a
local hub, close to every query of the region, and seldom the one next chunk. Its fitted
weight comes out negative, a local form of the hubness corrections of cross-lingual retrieval
(CSLS). After adapt on postgresql-doc-15 it added about +0.02 R@5 (docs/results.md). A
reranker.json fitted before it (FEATURES_BEFORE_DENSITY: the shipped model's) still loads and
scores with the features it was fitted on.

Fit it on windows the predictor did not train on (val), never on the eval windows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import numpy as np

from lvm_jax import atomic
from lvm_jax.data import file_io

FORMAT_VERSION = 1
FILE_NAME = "reranker.json"  # in the training workdir, where the eval CLI looks for it
LAGS = 5  # similarities to the last LAGS context chunks, one feature each
FEATURES_BEFORE_DENSITY = (
    ("query_score",) + tuple(f"context_lag{lag}" for lag in range(1, LAGS + 1))
    + ("context_max", "context_duplicate", "recency_average", "log_rank", "payload_centrality"))
FEATURE_NAMES = FEATURES_BEFORE_DENSITY + ("shortlist_density",)  # what candidate_features makes
FEATURE_SETS = (FEATURE_NAMES, FEATURES_BEFORE_DENSITY)  # what a reranker.json may be fitted on
DUPLICATE_COSINE = 0.999  # a candidate this close to a context chunk repeats it
FEATURE_BATCH = 1024  # queries whose candidate vectors are gathered at once (bounded memory)


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def payload_direction(payload_vectors: np.ndarray) -> np.ndarray:
  """The unit mean of the payload: candidates near it are the corpus's hubs."""
  total = np.zeros(payload_vectors.shape[1], np.float64)
  for start in range(0, len(payload_vectors), 65536):
    total += np.asarray(payload_vectors[start:start + 65536], np.float64).sum(0)
  return _unit(total).astype(np.float32)


def candidate_features(rows: np.ndarray, scores: np.ndarray, contexts: np.ndarray,
                       payload_vectors: np.ndarray, direction: np.ndarray,
                       decay: float) -> np.ndarray:
  """[n, K, len(FEATURE_NAMES)] features of the shortlist rows [n, K] (-1 = none).

  scores [n, K]: the unit query's inner products with the candidates; contexts
  [n, L, dim]; lags beyond L give similarity 0.
  """
  n, depth = rows.shape
  length = contexts.shape[1]
  weights = decay ** np.arange(length - 1, -1, -1, dtype=np.float64)
  out = np.empty((n, depth, len(FEATURE_NAMES)), np.float32)
  log_rank = np.log1p(np.arange(depth, dtype=np.float32))
  for start in range(0, n, FEATURE_BATCH):
    stop = min(start + FEATURE_BATCH, n)
    context = np.asarray(contexts[start:stop], np.float32)
    candidates = np.asarray(payload_vectors[np.maximum(rows[start:stop], 0)], np.float32)
    to_context = np.einsum("nkd,nld->nkl", candidates, context)  # [b, K, L]
    recency = _unit(np.einsum("l,nld->nd", weights, context).astype(np.float32))
    block = out[start:stop]
    block[..., 0] = scores[start:stop]
    for lag in range(1, LAGS + 1):
      block[..., lag] = to_context[..., -lag] if lag <= length else 0.0
    block[..., LAGS + 1] = to_context.max(-1)
    block[..., LAGS + 2] = block[..., LAGS + 1] > DUPLICATE_COSINE
    block[..., LAGS + 3] = np.einsum("nkd,nd->nk", candidates, recency)
    block[..., LAGS + 4] = log_rank[None, :]
    block[..., LAGS + 5] = candidates @ direction
    block[..., LAGS + 6] = shortlist_density(candidates, rows[start:stop] >= 0)
  return out


def shortlist_density(candidates: np.ndarray, present: np.ndarray) -> np.ndarray:
  """[n, K] mean cosine of each candidate [n, K, dim] to the other present ones of its
  shortlist (present [n, K] bool: False for -1 rows, which count for nothing); 0 alone."""
  kept = candidates * present[..., None]
  total = np.einsum("nkd,nd->nk", kept, kept.sum(1))
  self_term = np.einsum("nkd,nkd->nk", kept, kept)
  others = present.sum(1, keepdims=True) - present
  return np.where(others > 0, (total - self_term) / np.maximum(others, 1), 0.0)


@dataclasses.dataclass
class LinearReranker:
  """score = ((features - mean) / scale) · weights over a shortlist of `depth` rows, with the
  features named in `features` (one of FEATURE_SETS) taken from candidate_features' columns."""
  weights: np.ndarray
  mean: np.ndarray
  scale: np.ndarray
  depth: int
  decay: float
  fitted_on: Dict[str, Any] = dataclasses.field(default_factory=dict)
  features: Tuple[str, ...] = FEATURE_NAMES

  def score(self, features: np.ndarray) -> np.ndarray:
    """features [..., len(FEATURE_NAMES)] of candidate_features -> scores [...]."""
    columns = [FEATURE_NAMES.index(name) for name in self.features]
    return ((features[..., columns] - self.mean) / self.scale) @ self.weights

  def rerank(self, rows: np.ndarray, scores: np.ndarray, contexts: np.ndarray,
             payload_vectors: np.ndarray, direction: np.ndarray):
    """(new scores, rows) of the shortlist [n, K], best first; -1 rows stay last."""
    features = candidate_features(rows, scores, contexts, payload_vectors, direction, self.decay)
    new_scores = np.where(rows >= 0, self.score(features), -np.inf).astype(np.float32)
    order = np.argsort(-new_scores, axis=1, kind="stable")
    return np.take_along_axis(new_scores, order, 1), np.take_along_axis(rows, order, 1)

  def to_json(self) -> Dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "kind": "linear", "features": list(self.features),
            "weights": self.weights.tolist(), "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "depth": int(self.depth), "decay": float(self.decay),
            "fitted_on": self.fitted_on}


def save(path: str, reranker: LinearReranker) -> None:
  atomic.write_json(path, reranker.to_json())


def load(path: str) -> LinearReranker:
  """Reads a reranker.json; raises ValueError naming the file, the field and the fix when it
  does not fit."""
  refit = "Fix: refit it with python -m lvm_jax.eval.fit_reranker, or pass --reranker none."
  value = file_io.read_json_object(path, refit, not_json="a JSON reranker file",
                                   expected="an object with format_version, kind, weights, ...")
  version = value.get("format_version")
  is_version = isinstance(version, int) and not isinstance(version, bool)  # True == 1
  if not is_version or version != FORMAT_VERSION or value.get("kind") != "linear":
    raise ValueError(f"{path}: format_version {value.get('format_version')!r} / kind "
                     f"{value.get('kind')!r}; this lvm_jax reads version {FORMAT_VERSION}, "
                     f"kind 'linear'. {refit}")
  known = [list(names) for names in FEATURE_SETS]
  if value.get("features") not in known:
    raise ValueError(f"{path}: features {value.get('features')} differ from every set this "
                     f"lvm_jax computes ({' or '.join(map(str, known))}). {refit}")
  features = tuple(value["features"])
  arrays = {}
  for key in ("weights", "mean", "scale"):
    field = value.get(key)
    if (not isinstance(field, list) or len(field) != len(features) or
        not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in field)):
      raise ValueError(f"{path}: field {key!r} is {str(field)[:60]}; expected a list of "
                       f"{len(features)} numbers, one per feature. {refit}")
    arrays[key] = np.asarray(field, np.float32)
    if not np.isfinite(arrays[key]).all():
      raise ValueError(f"{path}: field {key!r} holds NaN or Inf. {refit}")
  for key, kind in (("depth", int), ("decay", (int, float))):
    if not isinstance(value.get(key), kind) or isinstance(value.get(key), bool):
      raise ValueError(f"{path}: field {key!r} is {value.get(key)!r}; expected a number. {refit}")
  if value["depth"] < 1:
    raise ValueError(f"{path}: field 'depth' is {value['depth']}; expected at least 1. {refit}")
  fitted_on = value.get("fitted_on", {})
  return LinearReranker(depth=int(value["depth"]), decay=float(value["decay"]),
                        fitted_on=fitted_on if isinstance(fitted_on, dict) else {},
                        features=features, **arrays)


def fit(features: np.ndarray, labels: np.ndarray, *, depth: int, decay: float,
        steps: int = 400, learning_rate: float = 0.01,
        fitted_on: Dict[str, Any] = None) -> LinearReranker:
  """Listwise softmax over each shortlist (features [n, K, F], labels [n, K] bool, one true
  row at most); queries whose truth is not in the shortlist carry no signal and are skipped.
  Starts from the query's own score (weight 1 on it), so step 0 is the unreranked order."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  if features.shape[-1] != len(FEATURE_NAMES):
    raise ValueError(f"fit: features have {features.shape[-1]} columns; candidate_features "
                     f"makes {len(FEATURE_NAMES)} ({', '.join(FEATURE_NAMES)}).")
  has_truth = labels.any(axis=1)
  if not has_truth.any():
    raise ValueError("fit: no query has its true next chunk in its shortlist; deepen the "
                     "shortlist (depth) or check that the windows belong to the payload.")
  flat = features[has_truth].reshape(-1, features.shape[-1]).astype(np.float64)
  mean = flat.mean(0).astype(np.float32)
  scale = np.maximum(flat.std(0), 1e-6).astype(np.float32)
  x = jnp.asarray((features[has_truth] - mean) / scale)
  truth = jnp.asarray(np.argmax(labels[has_truth], axis=1))
  weights = np.zeros(features.shape[-1], np.float32)
  weights[0] = 1.0

  def loss_fn(w):
    logits = x @ w
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, truth))

  optimizer = optax.adam(learning_rate)

  @jax.jit
  def update(w, state):
    loss, grad = jax.value_and_grad(loss_fn)(w)
    updates, state = optimizer.update(grad, state)
    return optax.apply_updates(w, updates), state, loss

  w = jnp.asarray(weights)
  state = optimizer.init(w)
  start_loss = float(loss_fn(w))
  for _ in range(steps):
    w, state, loss = update(w, state)
  info = dict(fitted_on or {})
  info.update({"queries": int(labels.shape[0]), "queries_with_truth": int(has_truth.sum()),
               "steps": steps, "learning_rate": learning_rate, "start_loss": start_loss,
               "final_loss": float(loss_fn(w))})
  return LinearReranker(weights=np.asarray(w, np.float32), mean=mean, scale=scale, depth=depth,
                        decay=float(decay), fitted_on=info)


def labels_for(rows: np.ndarray, truth_rows: np.ndarray) -> np.ndarray:
  return rows == np.asarray(truth_rows)[:, None]


def describe(reranker: LinearReranker) -> str:
  pairs = ", ".join(f"{name} {w:+.2f}" for name, w in zip(reranker.features, reranker.weights))
  return f"linear reranker over {reranker.depth} candidates (decay {reranker.decay:g}): {pairs}"
