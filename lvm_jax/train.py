"""Training: the schedule, the step, evaluation and the loop, in reading order.

One update = `accum_steps` micro-batches per device, scanned with summed
float32 gradients, averaged across devices (`lax.pmean` over AXIS), then one
optax step (clip by global norm -> AdamW with a warm-up-cosine schedule).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax import lax

from lvm_jax import backend, checkpoint, losses
from lvm_jax.config_base import NEGATIVES, PARALLEL, POSITIONS
from lvm_jax.data import augment, baselines, formats, synthetic
from lvm_jax.data.pipeline import TrainingPipeline
from lvm_jax.models import create_head, weight_decay_mask
from lvm_jax.progress import ProgressBar
from lvm_jax.tensorboard import SummaryWriter

AXIS = "batch"
HISTORY_FILE = "history.json"
BASELINES_FILE = "val_baselines.json"


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is left as it was."""


class TrainState(train_state.TrainState):
  """params = {"model": ..., "head": ...}."""


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int):
  """Linear warm-up to the peak, then cosine decay to final_lr_fraction of it."""
  peak = config.train.learning_rate
  warmup = min(config.train.warmup_steps, max(total_steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=peak * config.train.final_lr_fraction)


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int, params):
  mask = {"model": weight_decay_mask(params["model"]), "head": weight_decay_mask(params["head"])}
  return optax.chain(
      optax.clip_by_global_norm(config.train.clip_norm),
      optax.adamw(learning_rate_schedule(config, total_steps),
                  weight_decay=config.train.weight_decay, mask=mask))


def create_train_state(config, model, head, rng, vector_dim: int, total_steps: int) -> TrainState:
  model_rng, head_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, config.data.context_length, vector_dim), jnp.float32)
  params = {"model": model.init(model_rng, dummy)["params"],
            "head": head.init(head_rng, dummy[:, 0])["params"]}
  return TrainState.create(apply_fn=model.apply, params=params,
                           tx=create_optimizer(config, total_steps, params))


def prediction_targets(contexts, targets, target_ids, positions: str):
  """What each prediction is scored against.

  Args:
    contexts: [..., L, dim]; targets: [..., dim]; target_ids: [...].
    positions: "last" (only the final output predicts `targets`) or "all"
      (output t predicts context t + 1, the last one the target).

  Returns:
    next_vectors [..., P, dim] and next_ids [..., P], P = 1 or L. Windows run
    over consecutive chunks and ids grow by one per chunk (payload rows, or
    packed (article, chunk) keys), so position t's next chunk has id
    target_id - (L - 1 - t).
  """
  if positions == "last":
    return targets[..., None, :], target_ids[..., None]
  length = contexts.shape[-2]
  next_vectors = jnp.concatenate([contexts[..., 1:, :], targets[..., None, :]], axis=-2)
  offsets = jnp.arange(length - 1, -1, -1, dtype=target_ids.dtype)
  return next_vectors, target_ids[..., None] - offsets


def accumulated_gradients(state: TrainState, batch: Dict[str, jax.Array], rng: jax.Array, *,
                          model, head, config: ml_collections.ConfigDict):
  """Gradient of the mean loss over this device's [accum_steps, micro_batch, ...] batch.

  Because the target branch has stop-gradient, the target projections of the
  whole step are computed once up front and every micro-batch scores against
  them ("accum"), or against all devices' ("global"): the summed micro-batch
  gradients then equal the gradient of one batch of the whole step.
  """
  contexts, targets, target_ids = batch["contexts"], batch["targets"], batch["target_ids"]
  accum_steps, micro_batch = contexts.shape[:2]
  negatives, temperature = config.loss.negatives, config.loss.temperature
  device_index = lax.axis_index(AXIS)

  next_vectors, next_ids = prediction_targets(contexts, targets, target_ids, config.loss.positions)
  per_micro = next_vectors.shape[2] * micro_batch  # queries per micro-batch
  keys = lax.stop_gradient(head.apply({"params": state.params["head"]}, next_vectors))
  keys = keys.reshape(accum_steps, per_micro, -1)
  key_ids = next_ids.reshape(accum_steps, per_micro)
  step_keys, step_key_ids = keys.reshape(-1, keys.shape[-1]), key_ids.reshape(-1)
  pool_offset = 0
  if negatives == "global":
    step_keys = lax.all_gather(step_keys, AXIS, tiled=True)
    step_key_ids = lax.all_gather(step_key_ids, AXIS, tiled=True)
    pool_offset = device_index * accum_steps * per_micro
  queries_per_device = accum_steps * per_micro

  def micro_step(carry, inputs):
    grad_sum, metric_sum = carry
    micro_contexts, micro_next, micro_ids, micro_keys, micro_key_ids, index = inputs
    micro_rng = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
        rng, state.step), device_index), index)
    augment_rng, dropout_rng = jax.random.split(micro_rng)
    micro_contexts = augment.augment_contexts(
        augment_rng, micro_contexts, article_dropout_p=config.augment.article_dropout,
        span_corruption_p=config.augment.span_corruption)
    if negatives == "micro":
      pool, pool_ids, positive = micro_keys, micro_key_ids, jnp.arange(per_micro)
    else:
      pool, pool_ids = step_keys, step_key_ids
      positive = pool_offset + index * per_micro + jnp.arange(per_micro)

    def loss_fn(params):
      predictions = model.apply({"params": params["model"]}, micro_contexts, train=True,
                                rngs={"dropout": dropout_rng})
      if config.loss.positions == "last":
        predictions = predictions[:, -1:]
      ar = losses.ar_cosine_loss(predictions, micro_next)
      queries = head.apply({"params": params["head"]}, predictions).reshape(per_micro, -1)
      infonce, masked = losses.info_nce(queries, pool, positive, micro_ids.reshape(-1), pool_ids,
                                        temperature)
      # Sums over the step's queries, not micro-batch means: the scan then adds up
      # to exactly the gradient of the mean over one big batch.
      loss = losses.combined_loss(jnp.sum(infonce), jnp.sum(ar), config.loss.contrastive_weight,
                                  config.loss.ar_weight) / queries_per_device
      sums = {"loss": loss * queries_per_device, "infonce": jnp.sum(infonce),
              "ar_loss": jnp.sum(ar), "cosine": jnp.sum(1.0 - ar[:, -1]) * per_micro / micro_batch,
              "masked_negatives": jnp.sum(masked).astype(jnp.float32)}
      return loss, sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
    grad_sum = jax.tree_util.tree_map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
    metric_sum = jax.tree_util.tree_map(jnp.add, metric_sum, sums)
    return (grad_sum, metric_sum), None

  zero_grads = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
  zero_metrics = {k: jnp.float32(0) for k in ("loss", "infonce", "ar_loss", "cosine",
                                              "masked_negatives")}
  inputs = (contexts, next_vectors, next_ids, keys, key_ids, jnp.arange(accum_steps))
  (grads, sums), _ = lax.scan(micro_step, (zero_grads, zero_metrics), inputs)
  return grads, sums, queries_per_device


def train_step(state: TrainState, batch: Dict[str, jax.Array], rng: jax.Array, *, model, head,
               config: ml_collections.ConfigDict):
  """One update: accumulated gradients, averaged over devices, one optimizer step."""
  grads, sums, queries_per_device = accumulated_gradients(state, batch, rng, model=model,
                                                          head=head, config=config)
  grads = lax.pmean(grads, AXIS)
  metrics = {k: v / queries_per_device for k, v in sums.items() if k != "masked_negatives"}
  metrics = lax.pmean(metrics, AXIS)
  metrics["masked_negatives"] = lax.psum(sums["masked_negatives"], AXIS)
  metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
  return state.apply_gradients(grads=grads), metrics


def make_parallel_train_step(config, model, head, use_pmap: bool):
  """The step over a leading device axis: pmap, or vmap under jit on one device (Metal)."""
  step = functools.partial(train_step, model=model, head=head, config=config)
  if use_pmap:
    return jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,))
  return jax.jit(jax.vmap(step, axis_name=AXIS, in_axes=(0, 0, None)), donate_argnums=(0,))


def predict_last(model, params, contexts):
  """[batch, L, dim] -> the last position's prediction [batch, dim]."""
  return model.apply({"params": params}, contexts, train=False)[:, -1]


@functools.partial(jax.jit, static_argnames=("model", "head", "temperature"))
def eval_step(params, contexts, targets, target_ids, *, model, head, temperature):
  """Validation sums of one batch, without augmentation or dropout; negatives in-batch."""
  predictions = predict_last(model, params["model"], contexts)
  ar = losses.ar_cosine_loss(predictions, targets)
  queries = head.apply({"params": params["head"]}, predictions)
  keys = head.apply({"params": params["head"]}, targets)
  infonce, _ = losses.info_nce(queries, keys, jnp.arange(targets.shape[0]), target_ids, target_ids,
                               temperature)
  return predictions, {"infonce": jnp.sum(infonce), "ar_loss": jnp.sum(ar),
                       "cosine": jnp.sum(1.0 - ar)}


@jax.jit
def _ranks_of_true_targets(predictions, own_targets, all_targets):
  """Rank of each prediction's own target among all targets (0 = nearest)."""
  true_score = jnp.sum(predictions * own_targets, axis=-1)
  scores = predictions @ all_targets.T
  return jnp.sum(scores > true_score[:, None], axis=-1)


def retrieval_proxy(predictions: np.ndarray, targets: np.ndarray, block: int) -> Dict[str, float]:
  """Mean cosine, and R@1 / R@5 of each prediction among all the set's targets."""
  all_targets = jnp.asarray(targets)
  ranks = np.concatenate([
      np.asarray(_ranks_of_true_targets(predictions[s:s + block], targets[s:s + block],
                                        all_targets)) for s in range(0, len(targets), block)])
  cosine = np.asarray(losses.cosine_similarity(jnp.asarray(predictions), all_targets))
  return {"cosine": float(np.mean(cosine)), "r1": float(np.mean(ranks < 1)),
          "r5": float(np.mean(ranks < 5))}


def _dataset_batches(dataset, batch_size: int):
  for start in range(0, dataset.num_sequences, batch_size):
    yield dataset.batch(np.arange(start, min(start + batch_size, dataset.num_sequences)))


def evaluate(params, dataset, *, model, head, config) -> Dict[str, float]:
  """val_loss, val_infonce, val_ar, val_cosine, and R@1/R@5 of each prediction
  among all validation targets (a cheap retrieval proxy)."""
  sums = {"infonce": 0.0, "ar_loss": 0.0}
  predictions, targets = [], []
  for batch_contexts, batch_targets, batch_ids in _dataset_batches(dataset, config.eval.batch_size):
    batch_predictions, batch_sums = eval_step(
        params, batch_contexts, batch_targets, batch_ids, model=model, head=head,
        temperature=config.loss.temperature)
    for k in sums:
      sums[k] += float(batch_sums[k])
    predictions.append(np.asarray(batch_predictions))
    targets.append(np.asarray(batch_targets, np.float32))
  proxy = retrieval_proxy(np.concatenate(predictions), np.concatenate(targets),
                          config.eval.batch_size)
  infonce, ar = sums["infonce"] / dataset.num_sequences, sums["ar_loss"] / dataset.num_sequences
  return {"val_loss": losses.combined_loss(infonce, ar, config.loss.contrastive_weight,
                                           config.loss.ar_weight),
          "val_infonce": infonce, "val_ar": ar, "val_cosine": proxy["cosine"],
          "val_r1": proxy["r1"], "val_r5": proxy["r5"]}


def baseline_metrics(dataset, batch_size: int) -> Dict[str, Dict[str, float]]:
  """The same cosine and R@k for copy-last-context and mean-of-context predictors."""
  predictors = {"copy_last": baselines.copy_last, "mean_of_context": baselines.mean_of_context}
  predictions = {name: [] for name in predictors}
  targets = []
  for batch_contexts, batch_targets, _ in _dataset_batches(dataset, batch_size):
    for name, predict in predictors.items():
      predictions[name].append(np.asarray(predict(batch_contexts), np.float32))
    targets.append(np.asarray(batch_targets, np.float32))
  targets = np.concatenate(targets)
  return {name: retrieval_proxy(np.concatenate(p), targets, batch_size)
          for name, p in predictions.items()}


def load_training_sets(config: ml_collections.ConfigDict, workdir: str):
  """Train and val sets from config.data, or the synthetic corpus generated into <workdir>/data.

  Everything is read and validated here, before any compilation, so a missing
  or mismatched file is reported at once.
  """
  data = config.data
  if not data.train_path:
    if data.val_path or data.payload_path:
      raise ValueError("config.data: val_path/payload_path are set but train_path is empty; set "
                       "train_path too, or clear all three to use the synthetic corpus.")
    # Compact sets (payload rows) + the payload: the memory-lean form; reused when present.
    paths = synthetic.generate_synthetic_corpus(
        os.path.join(workdir, "data"), context_length=data.context_length, forms=("compact",),
        **data.synthetic.to_dict())
    train_path, val_path, payload_path = paths["train_rows"], paths["val_rows"], paths["payload"]
  else:
    if not data.val_path:
      raise ValueError(f"config.data.val_path is empty while train_path={data.train_path!r}; "
                       "give the validation set built with the training set "
                       "(python -m lvm_jax.data.build writes both).")
    train_path, val_path, payload_path = data.train_path, data.val_path, data.payload_path
  expected_dim = data.vector_dim or None
  payload = None
  if payload_path:
    payload = formats.read_payload(payload_path, expected_dim=expected_dim,
                                   normalize=data.normalize, load_texts=False)
  read = functools.partial(formats.read_sequence_set, payload=payload, expected_dim=expected_dim,
                           expected_context_length=data.context_length, normalize=data.normalize)
  train_set = read(train_path)
  val_set = read(val_path, expected_dim=train_set.vector_dim,
                 expected_source=f"the train set {train_path}")
  overlap = np.intersect1d(train_set.article_ids(), val_set.article_ids())
  if overlap.size:
    logging.warning("%d article(s) appear in both %s and %s (e.g. %s): val_cosine then measures "
                    "seen articles; build splits by article (python -m lvm_jax.data.build).",
                    overlap.size, train_path, val_path, overlap[:5].tolist())
  return train_set, val_set, {"train": train_path, "val": val_path, "payload": payload_path,
                              "article_overlap": int(overlap.size)}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises early, before data or compilation, on values the step cannot honour."""
  choices = {"loss.negatives": (config.loss.negatives, NEGATIVES),
             "loss.positions": (config.loss.positions, POSITIONS),
             "train.parallel": (config.train.parallel, PARALLEL)}
  for field, (value, valid) in choices.items():
    if value not in valid:
      raise ValueError(f"config field {field}={value!r} is not one of {valid}.")
  for field in ("batch_size", "accum_steps", "num_epochs"):
    if config.train[field] < 1:
      raise ValueError(f"config field train.{field} must be >= 1, got {config.train[field]}.")


def check_model(config: ml_collections.ConfigDict, model) -> None:
  if config.loss.positions == "all" and not model.is_causal:
    raise ValueError("config field loss.positions='all' needs a causal model, but "
                     f"{config.model.name} (with gru_state_handoff, or an lnsp_* model with "
                     "look-ahead attention or GRU hand-off) sees the whole window at every "
                     "position; set loss.positions='last' or model.gru_state_handoff=False.")


def replicate(tree, num_devices: int):
  """A leading device axis of size num_devices (host copies; the step places them)."""
  def stack(x):
    x = np.asarray(x)
    return np.broadcast_to(x, (num_devices,) + x.shape)

  return jax.tree_util.tree_map(stack, tree)


def unreplicate(tree):
  return jax.tree_util.tree_map(lambda x: x[0], tree)


def read_history(workdir: str):
  path = os.path.join(workdir, HISTORY_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return json.load(f)


def write_history(workdir: str, history) -> None:
  """Written to a temporary file, then renamed: a crash never leaves half a history."""
  path = os.path.join(workdir, HISTORY_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(history, f, indent=2)
  os.replace(path + ".tmp", path)


def _check_finite(metrics: Dict[str, float], step: int, workdir: str) -> None:
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if bad:
    raise NonFiniteLossError(
        f"non-finite training metrics {bad} at step {step}; stopped. The last good checkpoint in "
        f"{os.path.join(workdir, checkpoint.CHECKPOINT_DIR)} is untouched: lower "
        "train.learning_rate or check the data for NaN.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns a summary."""
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  platform = backend.current_platform()
  use_pmap = {"auto": not backend.is_metal(platform), "pmap": True,
              "vmap": False}[config.train.parallel]
  num_devices = jax.local_device_count() if use_pmap else 1

  train_set, val_set, data_info = load_training_sets(config, workdir)
  vector_dim = train_set.vector_dim
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy to record resolved values
  config.data.vector_dim = vector_dim
  model = checkpoint.model_from_config(config, vector_dim)
  if backend.is_metal(platform) and model.scan_mode in ("associative", "chunked"):
    logging.warning("scan_mode %r needs lax.associative_scan, which jax-metal cannot compile; "
                    "using 'auto' (unrolled or sequential) on Metal.", model.scan_mode)
    model = model.clone(scan_mode="auto")
  head = create_head(config.head)
  check_model(config, model)
  checkpoint.write_config(workdir, config)

  pipeline = TrainingPipeline(
      train_set, micro_batch=config.train.batch_size, accum_steps=config.train.accum_steps,
      num_devices=num_devices, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), prefetch=config.data.prefetch)
  steps_per_epoch = pipeline.steps_per_epoch
  total_steps = steps_per_epoch * config.train.num_epochs
  rng = jax.random.PRNGKey(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state = create_train_state(config, model, head, init_rng, vector_dim, total_steps)
  checkpointer = checkpoint.Checkpointer(workdir)
  history = read_history(workdir)
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore_latest(state)
    history = [h for h in history if h["step"] <= int(state.step)]
    logging.info("Resumed from step %d (epoch %d) in %s", int(state.step),
                 int(state.step) // steps_per_epoch, workdir)
  start_step = int(state.step)
  logging.info("%s: %d train / %d val sequences, %d steps per epoch of %d sequences "
               "(%d devices x %d micro-batches x %d), %d dropped per epoch", config.model.name,
               train_set.num_sequences, val_set.num_sequences, steps_per_epoch,
               pipeline.sequences_per_step, num_devices, config.train.accum_steps,
               config.train.batch_size, pipeline.dropped_per_epoch)

  reference = baseline_metrics(val_set, config.eval.batch_size)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, BASELINES_FILE), "w") as f:
      json.dump(reference, f, indent=2)
  baseline_note = ", ".join(f"{name} {m['cosine']:.4f} / R@5 {m['r5']:.4f}"
                            for name, m in reference.items())
  logging.info("Validation baselines (cosine / R@5): %s", baseline_note)

  p_train_step = make_parallel_train_step(config, model, head, use_pmap)
  state = replicate(state, num_devices)  # pmap/vmap place the leading axis per device
  writer = SummaryWriter(os.path.join(workdir, "tensorboard"), enabled=jax.process_index() == 0)
  schedule = learning_rate_schedule(config, total_steps)
  best = max([h["val_cosine"] for h in history], default=-math.inf)
  epochs_without_gain = _epochs_since_best(history)
  summary = {"stopped_early": False}
  try:
    for epoch in range(start_step // steps_per_epoch, config.train.num_epochs):
      if epochs_without_gain >= config.train.early_stopping_patience:
        summary["stopped_early"] = True
        break
      epoch_start = time.perf_counter()
      first_step = start_step % steps_per_epoch if epoch == start_step // steps_per_epoch else 0
      bar = ProgressBar(steps_per_epoch - first_step, f"epoch {epoch + 1}/{config.train.num_epochs}",
                        unit="step")
      train_sums, train_steps = {}, 0
      for batch in pipeline.iterate(epoch, first_step):
        state, metrics = p_train_step(state, batch, step_rng)
        train_steps += 1
        step = epoch * steps_per_epoch + first_step + train_steps
        metrics = {k: float(v[0]) for k, v in jax.device_get(metrics).items()}
        _check_finite(metrics, step, workdir)
        for k, v in metrics.items():
          train_sums[k] = train_sums.get(k, 0.0) + v
        seq_per_s = train_steps * pipeline.sequences_per_step / (time.perf_counter() - epoch_start)
        bar.update(1, loss=metrics["loss"], seq_s=seq_per_s)
        if step % config.train.log_every_steps == 0:
          writer.scalars({f"train/{k}": v for k, v in metrics.items()}, step)
          writer.scalar("train/learning_rate", float(schedule(step - 1)), step)
      bar.close()
      epoch_time = time.perf_counter() - epoch_start
      host_state = jax.device_get(unreplicate(state))
      val = evaluate(host_state.params, val_set, model=model, head=head, config=config)
      step = int(host_state.step)
      means = {k: v / max(train_steps, 1) for k, v in train_sums.items()}
      entry = {"epoch": epoch + 1, "step": step, "train_loss": means["loss"],
               "train_infonce": means["infonce"], "train_ar_cosine": means["ar_loss"],
               "train_cosine": means["cosine"], "masked_negatives_per_step":
               means["masked_negatives"], **val, "lr": float(schedule(max(step - 1, 0))),
               "time": epoch_time,
               "sequences_per_s": train_steps * pipeline.sequences_per_step / epoch_time}
      history.append(entry)
      logging.info("epoch %d: %s", epoch + 1,
                   " ".join(f"{k}={v:.4g}" for k, v in entry.items() if isinstance(v, float)))
      logging.info("epoch %d: val_cosine %.4f R@5 %.4f beside baselines (cosine / R@5): %s",
                   epoch + 1, val["val_cosine"], val["val_r5"], baseline_note)
      writer.scalars({f"val/{k}": v for k, v in val.items()}, step)
      writer.flush()
      checkpointer.save(host_state, val)
      if jax.process_index() == 0:
        write_history(workdir, history)
      if epoch + 1 == config.train.smoke_gate_epoch:
        passed = val["val_cosine"] >= config.train.smoke_gate_val_cosine
        logging.info("Epoch-%d smoke gate val_cosine >= %.2f: %s (%.4f)", epoch + 1,
                     config.train.smoke_gate_val_cosine, "PASSED" if passed else "MISSED",
                     val["val_cosine"])
        summary["smoke_gate_passed"] = passed
      epochs_without_gain = 0 if val["val_cosine"] > best else epochs_without_gain + 1
      best = max(best, val["val_cosine"])
  finally:
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.close()
  summary.update(history=history, best_val_cosine=best, data=data_info, baselines=reference,
                 final_state=jax.device_get(unreplicate(state)))
  return summary


def _epochs_since_best(history) -> int:
  best, since = -math.inf, 0
  for entry in history:
    since = 0 if entry["val_cosine"] > best else since + 1
    best = max(best, entry["val_cosine"])
  return since
