"""A synthetic corpus with a learnable next-chunk task: the embedded default when no data is set.

  python -m lvm_jax.corpus.synthetic --out DIR [--num_articles 600] [--dim 768] [--seed 0]
  python -m lvm_jax.retrieval.baselines --data DIR     # the baselines' numbers on it

The generating process (all of it fixed by `seed`):
  latent   z_{t+1} = normalise(f(z_t) + innovation_scale * e_t / sqrt(k)), e_t ~ N(0, I_k),
           f(z) = normalise(R z + nonlinearity * tanh(B z)), R a fixed rotation by
           angles in rotation_range (radians per step), B a fixed random matrix;
           the SAME dynamic for every article, z_0 uniform on the sphere;
  topic    per article: sqrt(cluster_share) * (one of topic_clusters centres)
           + sqrt(1 - cluster_share) * (its own direction), unit norm;
  vector   x_t = normalise(W z_t + topic_scale * topic + noise_scale * n_t),
           W [dim, k] orthonormal columns, n_t ~ N(0, I_dim / dim).
So the next vector depends on the context through the shared dynamic (learnable
and useful on unseen articles), the article's topic (estimable from the
context, but memorising training articles' topics does not transfer), and two
noises (innovation, observation) that no predictor can recover: even the
noise-free prediction normalise(W f(z_t) + topic_scale * topic) misses R@1.
Articles have lengths uniform in [min_length, max_length]; each chunk after
the first is missing with gap_probability, so chunk indices have gaps as in
real payloads (windows never span them).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

from lvm_jax import atomic, cli
from lvm_jax.corpus import build
from lvm_jax.data.file_io import make_provenance
from lvm_jax.data.payload import PAYLOAD_FILES, Payload, write_payload

STATE_FILE = "synthetic_state.npz"  # latents and topics, for the noise-free predictor
PAYLOAD_DIR = "payload"
NOISE_BLOCK_ROWS = 1 << 15  # rows per noise draw; bounds temporaries. Part of the corpus's
# definition: changing it changes every vector (the same seed then gives another corpus).


@dataclasses.dataclass(frozen=True)
class SyntheticKnobs:
  """Every knob of the generating process; defaults give a corpus of ~14k chunks at dim 768."""
  num_articles: int = 600
  dim: int = 768
  seed: int = 0
  latent_dim: int = 16
  min_length: int = 6
  max_length: int = 40
  gap_probability: float = 0.02
  rotation_range: Tuple[float, float] = (0.2, 0.6)
  nonlinearity: float = 0.5
  innovation_scale: float = 0.6
  topic_clusters: int = 20
  cluster_share: float = 0.8
  topic_scale: float = 0.8
  noise_scale: float = 1.4
  with_texts: bool = True

  def check(self) -> None:
    problems = []
    if self.num_articles < 1:
      problems.append(f"num_articles={self.num_articles} must be >= 1")
    if self.dim < 2:
      problems.append(f"dim={self.dim} must be >= 2")
    if not 2 <= self.latent_dim <= self.dim or self.latent_dim % 2:
      problems.append(f"latent_dim={self.latent_dim} must be even and in [2, dim={self.dim}]")
    if not 1 <= self.min_length <= self.max_length:
      problems.append(f"lengths [{self.min_length}, {self.max_length}] must satisfy "
                      "1 <= min_length <= max_length")
    if not 0 <= self.gap_probability < 1 or not 0 <= self.cluster_share <= 1:
      problems.append("gap_probability must be in [0, 1) and cluster_share in [0, 1]")
    if problems:
      raise ValueError("synthetic corpus knobs: " + "; ".join(problems) + ".")


@dataclasses.dataclass(frozen=True)
class SyntheticProcess:
  """The fixed maps of the process: rotation [k, k], mixing [k, k], projection [dim, k]."""
  rotation: np.ndarray
  mixing: np.ndarray
  projection: np.ndarray
  nonlinearity: float
  topic_scale: float

  def step(self, latents: np.ndarray) -> np.ndarray:
    """f: [..., k] -> [..., k] unit vectors: the deterministic part of one step."""
    moved = latents @ self.rotation.T + self.nonlinearity * np.tanh(latents @ self.mixing.T)
    return moved / np.linalg.norm(moved, axis=-1, keepdims=True)

  def noise_free_next(self, latents: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """[n, k] latents of chunk t and [n, dim] topics -> [n, dim] unit prediction of chunk t+1."""
    clean = self.step(latents) @ self.projection.T + self.topic_scale * topics
    return (clean / np.linalg.norm(clean, axis=-1, keepdims=True)).astype(np.float32)


def make_process(knobs: SyntheticKnobs) -> SyntheticProcess:
  rng = np.random.default_rng([knobs.seed, 0])
  k = knobs.latent_dim
  angles = rng.uniform(knobs.rotation_range[0], knobs.rotation_range[1], k // 2)
  blocks = np.zeros((k, k))
  for i, angle in enumerate(angles):
    blocks[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[np.cos(angle), -np.sin(angle)],
                                                [np.sin(angle), np.cos(angle)]]
  basis, _ = np.linalg.qr(rng.normal(size=(k, k)))
  projection, _ = np.linalg.qr(rng.normal(size=(knobs.dim, k)))
  return SyntheticProcess(rotation=basis @ blocks @ basis.T,
                          mixing=rng.normal(size=(k, k)) / np.sqrt(k), projection=projection,
                          nonlinearity=knobs.nonlinearity, topic_scale=knobs.topic_scale)


def _unit_rows(array: np.ndarray) -> np.ndarray:
  return array / np.linalg.norm(array, axis=-1, keepdims=True)


def sample_corpus(knobs: SyntheticKnobs) -> Tuple[Payload, np.ndarray, np.ndarray]:
  """Draws the corpus. Returns (payload, latents [M, k] float32, topics [A, dim] float32)."""
  knobs.check()
  process = make_process(knobs)
  rng = np.random.default_rng([knobs.seed, 1])
  lengths = rng.integers(knobs.min_length, knobs.max_length + 1, knobs.num_articles)
  cluster_centres = _unit_rows(rng.normal(size=(max(knobs.topic_clusters, 1), knobs.dim)))
  own = _unit_rows(rng.normal(size=(knobs.num_articles, knobs.dim)))
  if knobs.topic_clusters > 0:
    cluster = rng.integers(0, knobs.topic_clusters, knobs.num_articles)
    topics = (np.sqrt(knobs.cluster_share) * cluster_centres[cluster] +
              np.sqrt(1 - knobs.cluster_share) * own)
  else:
    topics = own
  topics = _unit_rows(topics).astype(np.float32)

  # Latent trajectories of all articles at once: [A, T, k].
  steps = int(lengths.max())
  trajectories = np.empty((knobs.num_articles, steps, knobs.latent_dim))
  state = _unit_rows(rng.normal(size=(knobs.num_articles, knobs.latent_dim)))
  for t in range(steps):
    trajectories[:, t] = state
    innovation = rng.normal(size=state.shape) / np.sqrt(knobs.latent_dim)
    state = _unit_rows(process.step(state) + knobs.innovation_scale * innovation)

  # Keep chunk t < length; each chunk after the first goes missing with gap_probability.
  kept = np.arange(steps)[None, :] < lengths[:, None]
  kept[:, 1:] &= rng.uniform(size=(knobs.num_articles, steps - 1)) >= knobs.gap_probability
  article_index, chunk_index = np.nonzero(kept)  # row-major: sorted by (article, chunk)
  latents = trajectories[article_index, chunk_index].astype(np.float32)
  num_rows = article_index.shape[0]

  vectors = np.empty((num_rows, knobs.dim), np.float32)
  num_blocks = -(-num_rows // NOISE_BLOCK_ROWS)
  starts = tqdm(range(0, num_rows, NOISE_BLOCK_ROWS), desc="synthetic vectors", unit="block",
                disable=num_blocks <= 4)
  for block_number, start in enumerate(starts):
    block = slice(start, min(start + NOISE_BLOCK_ROWS, num_rows))
    noise_rng = np.random.default_rng([knobs.seed, 2, block_number])
    noise = noise_rng.standard_normal((block.stop - block.start, knobs.dim), np.float32)
    clean = latents[block] @ process.projection.T.astype(np.float32)
    clean += knobs.topic_scale * topics[article_index[block]]
    clean += (knobs.noise_scale / np.sqrt(knobs.dim)) * noise
    vectors[block] = _unit_rows(clean)
  texts = None
  if knobs.with_texts:
    texts = [f"synthetic article {a} chunk {c}" for a, c in zip(article_index, chunk_index)]
  provenance = make_provenance(
      embedder_id=f"synthetic-v1(dim={knobs.dim}, seed={knobs.seed})",
      source="lvm_jax.corpus.synthetic", source_hash=f"synthetic:{_knobs_hash(knobs)}",
      synthetic_knobs=_knobs_record(knobs))
  payload = Payload(vectors=vectors, article_index=article_index.astype(np.int64),
                    chunk_index=chunk_index.astype(np.int64),
                    ids=np.arange(num_rows, dtype=np.int64), texts=texts, provenance=provenance,
                    source="<synthetic payload>")
  return payload, latents, topics


def _knobs_record(knobs: SyntheticKnobs) -> Dict:
  record = dataclasses.asdict(knobs)
  record["rotation_range"] = list(knobs.rotation_range)
  return record


def _knobs_hash(knobs: SyntheticKnobs) -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  return hashlib.sha256(json.dumps(_knobs_record(knobs), sort_keys=True).encode()).hexdigest()[:16]


# Chunk-dimensions (chunks x dim) generated, windowed and indexed per second on a loaded
# 2-core machine: the default corpus took 4.4 s at load average 15.
CHUNK_DIMS_PER_S = 2e6


def expected_seconds(**knob_values) -> float:
  """About how long generate_synthetic_corpus takes for these knobs (scales multi-host waits)."""
  knobs = SyntheticKnobs(**{k: v for k, v in knob_values.items()
                            if k in SyntheticKnobs.__dataclass_fields__})
  chunks = knobs.num_articles * (knobs.min_length + knobs.max_length) / 2
  return chunks * knobs.dim / CHUNK_DIMS_PER_S


def corpus_paths(out_dir: str) -> Optional[Dict[str, str]]:
  """The paths generate_synthetic_corpus wrote in out_dir (a run's data/, when its config named
  no data), or None when out_dir holds no synthetic corpus."""
  manifest_path = os.path.join(out_dir, build.MANIFEST_FILE)
  if not os.path.exists(manifest_path):
    return None
  manifest = build.read_manifest(manifest_path)
  if "synthetic" not in manifest:
    return None
  paths = {key: os.path.join(out_dir, name) for key, name in manifest["files"].items()}
  paths.update(payload=os.path.join(out_dir, PAYLOAD_DIR), manifest=manifest_path)
  return paths


def generate_synthetic_corpus(out_dir: str, *, context_length: int = build.DEFAULT_CONTEXT_LENGTH,
                              min_article_chunks: int = build.DEFAULT_MIN_ARTICLE_CHUNKS,
                              split_ratios: Sequence[float] = build.DEFAULT_SPLIT_RATIOS,
                              split_seed: Optional[int] = None,
                              forms: Sequence[str] = build.FORMS, reuse: bool = True, **knob_values) -> Dict[str, str]:
  """Writes payload, train/val/eval sets (full and compact) and manifest.

  knob_values: any SyntheticKnobs field (num_articles, dim, seed, ...).
  reuse: when out_dir already holds a corpus made with the same knobs and build
  settings, return its paths instead of regenerating (generation is
  deterministic, so the files would be identical).
  Returns {"payload", "train", "train_rows", "val", "val_rows", "eval",
  "eval_rows", "manifest", "synthetic_state": path} (only the forms asked for).
  """
  knobs = SyntheticKnobs(**knob_values)
  settings = {"knobs": _knobs_record(knobs), "context_length": context_length,
              "min_article_chunks": min_article_chunks, "split_ratios": list(split_ratios),
              "split_seed": knobs.seed if split_seed is None else split_seed,
              "forms": sorted(forms)}
  manifest_path = os.path.join(out_dir, build.MANIFEST_FILE)
  if reuse and os.path.exists(manifest_path):
    manifest = build.read_manifest(manifest_path)
    if manifest.get("synthetic") == settings:
      paths = {key: os.path.join(out_dir, name) for key, name in manifest["files"].items()}
      paths.update(payload=os.path.join(out_dir, PAYLOAD_DIR), manifest=manifest_path,
                   synthetic_state=os.path.join(out_dir, STATE_FILE))
      if all(os.path.exists(p) for p in paths.values()):
        logging.info("Reusing the synthetic corpus in %s (same knobs).", out_dir)
        return paths
  logging.info("Generating a synthetic corpus in %s: %s", out_dir, settings["knobs"])
  payload, latents, topics = sample_corpus(knobs)
  os.makedirs(out_dir, exist_ok=True)
  payload_dir = write_payload(os.path.join(out_dir, PAYLOAD_DIR), payload)
  payload.source = payload_dir
  state_path = os.path.join(out_dir, STATE_FILE)
  atomic.savez(state_path, latents=latents, topics=topics)
  paths = build.build_dataset(payload, out_dir, context_length=context_length,
                              min_article_chunks=min_article_chunks, split_ratios=split_ratios,
                              seed=settings["split_seed"], forms=forms,
                              extra_manifest={"synthetic": settings})
  paths["synthetic_state"] = state_path
  logging.info("Synthetic corpus: %d articles, %d chunks x %d dims in %s", knobs.num_articles,
               payload.num_rows, knobs.dim, out_dir)
  return paths


def noise_free_predictions(data_dir: str, target_rows: np.ndarray) -> np.ndarray:
  """The noise-free next-vector prediction [n, dim] for targets at payload rows [n].

  Uses the true latent of the chunk before each target (the last context chunk).
  """
  manifest = build.read_manifest(data_dir)
  knobs = SyntheticKnobs(**{**manifest["synthetic"]["knobs"],
                            "rotation_range": tuple(manifest["synthetic"]["knobs"]
                                                    ["rotation_range"])})
  process = make_process(knobs)
  payload_articles = np.load(os.path.join(data_dir, PAYLOAD_DIR,
                                          PAYLOAD_FILES["article_index"]))
  with np.load(os.path.join(data_dir, STATE_FILE)) as state:
    latents, topics = state["latents"], state["topics"]
  previous = np.asarray(target_rows) - 1  # windows are consecutive rows
  return process.noise_free_next(latents[previous], topics[payload_articles[previous]])


def define_flags() -> None:
  flags.DEFINE_string("out", None, "Output directory.")
  for field in dataclasses.fields(SyntheticKnobs):
    if field.name in ("rotation_range",):
      continue
    define = {int: flags.DEFINE_integer, float: flags.DEFINE_float,
              bool: flags.DEFINE_bool}[type(field.default)]
    define(field.name, field.default, f"Synthetic knob {field.name}.")
  flags.DEFINE_integer("context_length", build.DEFAULT_CONTEXT_LENGTH, "Context chunks.")
  flags.DEFINE_integer("min_article_chunks", build.DEFAULT_MIN_ARTICLE_CHUNKS,
                       "Articles with fewer chunks give no windows.")
  flags.DEFINE_string("split_ratios", ",".join(map(str, build.DEFAULT_SPLIT_RATIOS)),
                      "train,val,eval shares of the articles.")
  flags.DEFINE_list("forms", list(build.FORMS), "Which forms to write: full, compact.")


def main(argv) -> None:
  del argv
  args = flags.FLAGS
  if not args.out:
    raise app.UsageError("--out is required.")
  knob_values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticKnobs)
                 if f.name != "rotation_range"}
  paths = generate_synthetic_corpus(args.out, context_length=args.context_length,
                                    min_article_chunks=args.min_article_chunks,
                                    split_ratios=build.parse_ratios(args.split_ratios),
                                    forms=args.forms, reuse=False,
                                    **knob_values)
  print(json.dumps(paths, indent=1))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
