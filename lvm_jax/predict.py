"""Try a checkpoint on text: the next chunks it predicts from a payload, beside copy-last's.

  python -m lvm_jax.predict --checkpoint DIR --payload PAYLOAD_DIR --text-file F \
      [--model NAME_OR_PATH] [--k 5]
  cat F | python -m lvm_jax.predict --checkpoint DIR --payload PAYLOAD_DIR

The text is chunked as ingest chunks (the payload's recorded chunking) and its
last context_length chunks are embedded with the payload's embedder (the
`embed` extra; --model as in ingest, by default the model the payload
records). The checkpoint predicts the next vector; the payload's texts
nearest to it are printed with their inner products, next to those nearest
to the last chunk itself (copy-last), the untrained predictor a model must beat.
A reranker.json in the checkpoint's workdir (python -m lvm_jax.eval.fit_reranker)
reorders the model's shortlist, as the eval does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Callable, List, Optional

import numpy as np
from absl import app, flags

from lvm_jax import backend, cli

DEFAULT_K = 5
TEXT_WIDTH = 160  # characters of each chunk shown


def define_flags() -> None:
  cli.define_checkpoint_flag()
  flags.DEFINE_string("payload", None, "Payload directory (from python -m lvm_jax.corpus.ingest) "
                      "with texts.jsonl.")
  flags.DEFINE_string("text-file", None, "The text to continue; default: standard input.")
  flags.DEFINE_string("model", None, "sentence-transformers model name or local directory "
                      "(as in ingest); default: the model the payload's provenance records.")
  flags.DEFINE_string("embedder_id", None, "The embedder's name, compared with the payload's "
                      "provenance (default: --model as ingest names it).")
  flags.DEFINE_integer("k", DEFAULT_K, "Next chunks shown for each predictor.")
  flags.DEFINE_enum("backend", "cpu", list(backend.PLATFORMS), "JAX backend.")
  flags.DEFINE_enum("predictor", "auto", ["auto", "learned"], "auto: the untrained predictor "
                    "python -m lvm_jax.adapt chose (<workdir>/adapt_choice.json) when it chose "
                    "one, else the model; learned: the model (and its reranker).")


class EmbedderMismatch(cli.UserFacingError, ValueError):
  """The text would be embedded by another model, or into another space, than the payload."""


@dataclasses.dataclass
class Prediction:
  context: List[str]  # the text's last context_length chunks
  num_chunks: int  # chunks of the whole text
  prediction: np.ndarray  # [dim] the model's next vector, unit norm
  model_rows: np.ndarray  # [k] payload rows nearest to the prediction
  model_scores: np.ndarray  # [k] their inner products with it (the reranker's scores if any)
  copy_last_rows: np.ndarray  # [k] payload rows nearest to the last chunk
  copy_last_scores: np.ndarray
  reranker: Optional[str] = None  # the reranker.json that reordered model_rows
  served: Optional[dict] = None  # adapt's choice record, when an untrained predictor made it
  chosen_line: Optional[str] = None  # what adapt chose and what is served, when adapt made it


def resolve_embedder(provenance: dict, payload_path: str, model: Optional[str],
                     embedder_id: Optional[str]):
  """(model, embedder id) to embed the text with; raises unless the id is the payload's."""
  from lvm_jax.corpus import ingest  # pylint: disable=g-import-not-at-top
  recorded_id, recorded_model = provenance.get("embedder_id"), provenance.get("model")
  if model is None:
    if not recorded_model:
      raise EmbedderMismatch(f"{payload_path}: provenance records no 'model'; pass --model "
                             f"(the model of embedder {recorded_id!r}).")
    model = recorded_model
  if embedder_id is None:
    embedder_id = recorded_id if model == recorded_model else ingest.default_embedder_id(model)
  if recorded_id and embedder_id != recorded_id:
    raise EmbedderMismatch(f"{payload_path}: embedded by {recorded_id!r}, but --model {model} is "
                           f"{embedder_id!r}; pass --model of {recorded_id!r} (or --embedder_id "
                           f"{recorded_id!r} if this model is that one).")
  if os.path.isabs(model) and not os.path.exists(model):
    raise EmbedderMismatch(f"{payload_path}: its embedder {recorded_id!r} was at {model}, which "
                           "does not exist here; pass --model with that model's directory.")
  return model, embedder_id


def read_text_file(path: str) -> str:
  """The text of --text-file; raises ValueError naming the file and the fix when it is missing,
  a directory, or not UTF-8 text."""
  fix = "Fix: pass --text-file with a plain-text (UTF-8) file, or pipe the text to standard input."
  if not os.path.exists(path):
    raise ValueError(f"--text-file {path}: does not exist. {fix}")
  if os.path.isdir(path):
    raise ValueError(f"--text-file {path}: is a directory. {fix}")
  try:
    with open(path, encoding="utf-8") as handle:
      return handle.read()
  except UnicodeDecodeError as error:
    byte = error.object[error.start]
    raise ValueError(f"--text-file {path}: is not UTF-8 text (byte 0x{byte:02x} at offset "
                     f"{error.start}). {fix}") from error


def context_chunks(text: str, provenance: dict, context_length: int, source: str) -> List[str]:
  """The text's chunks as ingest made the payload's (its recorded min/max chars)."""
  from lvm_jax.corpus import chunking  # pylint: disable=g-import-not-at-top
  rules = provenance.get("chunking") or {}
  min_chars = int(rules.get("min_chars", chunking.DEFAULT_MIN_CHARS))
  max_chars = int(rules.get("max_chars", chunking.DEFAULT_MAX_CHARS))
  chunks, _ = chunking.chunk_text(text, min_chars=min_chars, max_chars=max_chars)
  if len(chunks) < context_length:
    raise ValueError(f"{source}: gives {len(chunks)} chunks (paragraphs of {min_chars}-"
                     f"{max_chars} characters, blank-line separated), but the checkpoint reads "
                     f"{context_length}; give a longer text.")
  return chunks


def predict(text: str, checkpoint_path: str, payload_path: str, *, model: Optional[str] = None,
            embedder_id: Optional[str] = None, k: int = DEFAULT_K, source: str = "<text>",
            encoder: Optional[Callable[[List[str]], np.ndarray]] = None, predictor: str = "auto"):
  """Returns (Prediction, payload, loaded checkpoint). `encoder` replaces the model (tests)."""
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  from lvm_jax.corpus import ingest  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.models import predict_fns  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import choice, search  # pylint: disable=g-import-not-at-top

  if k < 1:
    raise ValueError(f"--k {k}: must be at least 1.")
  payload = read_payload(payload_path)
  if payload.texts is None:
    raise ValueError(f"{payload_path}: has no texts.jsonl, so there is nothing to show; pass a "
                     "payload written by python -m lvm_jax.corpus.ingest.")
  model, _ = resolve_embedder(payload.provenance, payload_path, model, embedder_id)
  checkpoint.quiet_orbax_logs()
  loaded = checkpoint.load(checkpoint_path)
  if loaded.model.vector_dim != payload.vector_dim:
    raise EmbedderMismatch(f"{payload_path}: vectors are {payload.vector_dim}-d, but the "
                           f"checkpoint {loaded.path} predicts {loaded.model.vector_dim}-d "
                           "vectors; pass a payload of the embedder the model was trained on.")
  context_length = int(loaded.config.data.context_length)
  chunks = context_chunks(text, payload.provenance, context_length, source)
  context = chunks[-context_length:]
  vectors = np.asarray((encoder or ingest.load_encoder(model, ingest.DEFAULT_BATCH_SIZE))(context), np.float32)
  if vectors.shape != (context_length, payload.vector_dim):
    raise EmbedderMismatch(f"--model {model}: embeds into {vectors.shape[-1]}-d vectors, but "
                           f"{payload_path} holds {payload.vector_dim}-d ones; pass the "
                           f"payload's embedder ({payload.provenance.get('embedder_id')!r}).")
  chosen = choice.read(loaded.workdir)  # python -m lvm_jax.adapt's pick, when it made this run
  served = choice.served(chosen, predictor)  # the record, when that pick is untrained
  fns = (predict_fns.from_apply_fn(loaded.model.apply) if served is None else
         choice.as_predict_fns(served, lambda: choice.fitted_on_train(loaded.config)))
  prediction = np.asarray(fns.predict(loaded.params, vectors[None])[0], np.float64)
  prediction = (prediction / max(np.linalg.norm(prediction), 1e-12)).astype(np.float32)
  index = index_lib.build_index(payload.vectors, kind="flat")
  k = min(k, payload.num_rows)
  # The served predictor's second stage: the learned system's, or the untrained pick's own.
  reranker_path = (choice.second_stage_path(served) if served is not None else
                   os.path.join(loaded.workdir or checkpoint_path, learned_rerank.FILE_NAME))
  used = bool(reranker_path) and os.path.exists(reranker_path)
  reranker = learned_rerank.load(reranker_path) if used else None
  depth = min(max(k, reranker.depth), payload.num_rows) if used else k
  scores, rows, _ = search.search(index, np.stack([prediction, vectors[-1]]), depth)
  if used:  # the second stage reorders the served predictor's shortlist
    reranked_scores, reranked = reranker.rerank(
        rows[:1], scores[:1], vectors[None], np.asarray(payload.vectors, np.float32),
        learned_rerank.payload_direction(payload.vectors))
    scores[0], rows[0] = reranked_scores[0], reranked[0]
  scores, rows = scores[:, :k], rows[:, :k]
  return Prediction(context=context, num_chunks=len(chunks), prediction=prediction,
                    model_rows=rows[0], model_scores=scores[0], copy_last_rows=rows[1],
                    copy_last_scores=scores[1], reranker=reranker_path if used else None,
                    served=served, chosen_line=chosen and choice.served_line(chosen, predictor)), \
      payload, loaded


def _article_names(payload_path: str):
  """{article_index: name} from ingest's articles.json, or {} without one."""
  from lvm_jax.corpus import ingest  # pylint: disable=g-import-not-at-top
  path = os.path.join(payload_path, ingest.ARTICLES_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return {record["article_index"]: record["name"] for record in json.load(f)}


def _shorten(text: str, width: int = TEXT_WIDTH) -> str:
  return text if len(text) <= width else text[:width - 1] + "…"


def format_prediction(result: Prediction, payload, loaded, source: str) -> str:
  from lvm_jax.retrieval import choice  # pylint: disable=g-import-not-at-top
  names = _article_names(payload.source)
  in_context = set(result.context)

  def hits(rows, scores):
    lines = []
    for rank, (row, score) in enumerate(zip(rows, scores), 1):
      article = int(payload.article_index[row])
      where = f"{names.get(article, f'article {article}')} #{int(payload.chunk_index[row])}"
      mark = "  (a context chunk)" if payload.texts[row] in in_context else ""
      lines.append(f"  {rank:2d}. {score:.4f}  [{where}]{mark}\n      "
                   f"{_shorten(payload.texts[row])}")
    return lines

  lines = [f"{source}: {result.num_chunks} chunks; the last {len(result.context)} are the "
           "context:"]
  lines += [f"  [{i - len(result.context)}] {_shorten(chunk)}"
            for i, chunk in enumerate(result.context)]
  if result.chosen_line:
    lines = [result.chosen_line, ""] + lines
  label = (f"model ({loaded.path})" if not result.served else
           f"{choice.describe(result.served)}, chosen by lvm_jax.adapt")
  lines += ["", f"{label} -> top {len(result.model_rows)} of "
            f"{payload.num_rows} chunks in {payload.source}"
            + (f", reordered by {result.reranker} (its scores):" if result.reranker else ":")]
  lines += hits(result.model_rows, result.model_scores)
  lines += ["", "copy-last (the last context chunk as the query):"]
  lines += hits(result.copy_last_rows, result.copy_last_scores)
  return "\n".join(lines)


@cli.exits_cleanly_on_user_errors
def main(argv) -> None:
  del argv
  f = flags.FLAGS
  if not (f.checkpoint and f.payload):
    raise app.UsageError("--checkpoint and --payload are required.")
  backend.initialize(f.backend)
  path = f["text-file"].value
  text, source = (read_text_file(path), path) if path else (sys.stdin.read(), "<stdin>")
  result, payload, loaded = predict(text, f.checkpoint, f.payload, model=f.model,
                                    embedder_id=f.embedder_id, k=f.k, source=source,
                                    predictor=f.predictor)
  print(format_prediction(result, payload, loaded, source))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
