"""train_and_evaluate: data, model, state, then epochs of train -> evaluate -> record -> save.

After each epoch every due evaluator of config.evals runs (`for key, value in
evaluator.run(params)`), and its values are measured as `<name>/<key>` through
the one writer (hooks.MetricWriter), beside the epoch's `train/<key>` means.

Resume = restore the newest good checkpoint, then continue from `int(state.step)`
with the same data order, so a killed and rerun job ends where an uninterrupted
one does.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from lvm_jax import models as models_lib
from lvm_jax.models import predict_fns
from lvm_jax import checkpoint, config_checks, evaluators
from lvm_jax.distributed import multihost, workdir_lock
from lvm_jax.data.pipeline import TrainingPipeline
from lvm_jax.train.training_sets import load_training_sets
from lvm_jax.retrieval import baselines as baselines_lib
from lvm_jax.retrieval import run_baselines
from lvm_jax.train import hooks, parallel
from lvm_jax.train import step as step_lib
from lvm_jax.workdir import Workdir


# The step's metric -> the key of its epoch mean, measured as train/<key> (history: train_loss,
# train_ar_cosine, ...); infonce is absent when the head's InfoNCE is off (contrastive_weight 0).
TRAIN_MEANS = {"loss": "loss", "infonce": "infonce", "ar_loss": "ar_cosine", "cosine": "cosine",
               "vector_infonce": "vector_infonce", "bank_infonce": "bank_infonce"}


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is left as it was."""


def check_finite(metrics: Dict[str, float], step: int, workdir: Workdir) -> None:
  """Process 0 decides (multihost.agree), so every process stops at the same step."""
  bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
  if multihost.agree(bool(bad), f"a non-finite metric at step {step}"):
    raise NonFiniteLossError(
        f"non-finite training metrics {bad or '(on process 0)'} at step {step}; stopped. The "
        f"last good checkpoint in {workdir.checkpoints} is untouched: lower "
        "train.learning_rate or check the data for NaN.")


def train_epoch(p_train_step, state, pipeline: TrainingPipeline, epoch: int, first_step: int,
                rng, *, config, workdir: Workdir, writer: hooks.MetricWriter, schedule):
  """One epoch from `first_step`; metrics are fetched from the device every log_every_steps."""
  steps_per_epoch = pipeline.steps_per_epoch
  bar = tqdm(total=steps_per_epoch - first_step, unit="step", leave=False, mininterval=1.0,
             desc=f"epoch {epoch + 1}/{config.train.num_epochs}", disable=not multihost.is_process_0())
  sums, pending, done, start = {}, [], 0, time.perf_counter()

  def fetch(step: int) -> Dict[str, float]:
    fetched = [parallel.first(m) for m in pending]
    check_finite({k: v for metrics in fetched for k, v in metrics.items()
                  if not math.isfinite(v)}, step, workdir)
    for metrics in fetched:
      for k, v in metrics.items():
        sums[k] = sums.get(k, 0.0) + v
    pending.clear()
    return fetched[-1]

  for batch in pipeline.iterate(epoch, first_step):
    state, metrics = p_train_step(state, batch, rng)
    pending.append(metrics)
    done += 1
    step = epoch * steps_per_epoch + first_step + done
    if step % config.train.log_every_steps == 0:
      latest = fetch(step)
      seq_per_s = done * pipeline.sequences_per_step / (time.perf_counter() - start)
      bar.set_postfix(loss=f"{latest['loss']:.4f}", seq_s=f"{seq_per_s:.0f}")
      writer.write(step, {f"train_step/{k}": v for k, v in
                          {**latest, "learning_rate": float(schedule(step - 1))}.items()})
    bar.update(1)
  if pending:
    fetch(epoch * steps_per_epoch + first_step + done)
  bar.close()
  seconds = time.perf_counter() - start
  means = {k: v / max(done, 1) for k, v in sums.items()}
  return state, means, {"time": seconds, "sequences_per_s": done * pipeline.sequences_per_step /
                        max(seconds, 1e-9)}


def resolve_fitted_decay(config: ml_collections.ConfigDict, fitted) -> None:
  """model.residual_decay_fitted: the skip path's decay becomes the recency baseline's,
  fitted on the train windows, and config.json records it (eval rebuilds the same model)."""
  if config.model.residual_decay_fitted:
    config.model.residual_decay = float(fitted.decay)


def start_from_pretrained(state, path: str):
  """The model's parameters from a trained workdir (fine-tuning); head and optimizer fresh.

  Only a run's first start reads them: a resumed run continues from its own checkpoint.
  """
  loaded = checkpoint.load(path)
  fresh = state.params["model"]
  shapes = lambda tree: jax.tree_util.tree_map(np.shape, tree)
  if shapes(loaded.params) != shapes(fresh):
    raise checkpoint.CheckpointError(
        f"{loaded.path}: its model ({loaded.config.model.name}, parameter shapes "
        f"{_first_difference(shapes(loaded.params), shapes(fresh))}) does not match this config's; "
        "fix: give config.model the pretrained run's sizes (its config.json) or drop "
        "config.train.init_from.")
  logging.info("Model parameters from %s (step %d); head and optimizer start fresh",
               loaded.path, loaded.step)
  return state.replace(params={**state.params, "model": jax.tree_util.tree_map(
      lambda p, q: np.asarray(p, dtype=np.asarray(q).dtype), loaded.params, fresh)})


def _first_difference(a, b) -> str:
  flat_a = dict(jax.tree_util.tree_flatten_with_path(a)[0])
  flat_b = dict(jax.tree_util.tree_flatten_with_path(b)[0])
  for key in sorted(set(flat_a) | set(flat_b), key=str):
    if flat_a.get(key) != flat_b.get(key):
      return (f"{jax.tree_util.keystr(key)}: {flat_a.get(key, 'absent')} there, "
              f"{flat_b.get(key, 'absent')} here")
  return "same leaves, other structure"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       fitted: Optional[baselines_lib.FittedBaselines] = None) -> Dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns a summary.

  The run holds the workdir's lock throughout (process 0 of a multi-host run). `fitted`: the
  baselines already fitted (run_baselines.fit) on config.data.train_path's windows, when the
  caller has them (lvm_jax.adapt); otherwise the loop fits them on the set it trains on.
  """
  config_checks.check_config(config)
  evaluators.check_config(config)
  workdir = Workdir(workdir)
  lock = workdir_lock.hold(workdir) if multihost.is_process_0() else contextlib.nullcontext()
  with lock:
    return _train_and_evaluate(config, workdir, fitted)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: Workdir,
                        fitted: Optional[baselines_lib.FittedBaselines]) -> Dict[str, Any]:
  jax.config.update("jax_default_matmul_precision", config.model.matmul_precision)
  data_parallel = parallel.DataParallel.create(config.train.parallel)
  num_devices = data_parallel.num_local_devices

  sets = load_training_sets(config, workdir.data)
  config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy to record resolved values
  config.data.vector_dim = vector_dim = sets.train.vector_dim
  if fitted is None:
    fitted = run_baselines.fit(sets.train)
  resolve_fitted_decay(config, fitted)
  predictor = models_lib.predictor_from_config(config, vector_dim)
  config_checks.check_model(config, predictor.model)
  if multihost.is_process_0():
    checkpoint.write_config(workdir, config)

  pipeline = TrainingPipeline(
      sets.train, micro_batch=config.train.batch_size, accum_steps=config.train.accum_steps,
      num_devices=num_devices, seed=config.seed, process_index=multihost.process_index(),
      process_count=multihost.process_count(), prefetch=config.data.prefetch,
      devices=data_parallel.local_devices, place=data_parallel.place_batch,
      bank_rows=config.loss.bank_negatives)
  steps_per_epoch = pipeline.steps_per_epoch
  total_steps = steps_per_epoch * config.train.num_epochs
  init_rng, step_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  state = step_lib.create_train_state(config, predictor, init_rng, vector_dim, total_steps)
  checkpointer = checkpoint.Checkpointer(
      workdir.checkpoints, keep_latest=config.train.keep_checkpoints,
      best_metric=config.train.best_metric, best_mode=config.train.best_mode)
  history = hooks.History(workdir)
  restored = checkpointer.restore_latest(state)
  # Epochs recorded after the restored step (or, with no checkpoint yet, any: a run killed
  # between its first history write and its first save) are redone.
  history.truncate_to(int(restored.step) if restored is not None else 0)
  if restored is not None:
    state = restored
    logging.info("Resumed from step %d (epoch %d) in %s", int(state.step),
                 int(state.step) // steps_per_epoch, workdir.root)
  elif config.train.init_from:
    state = start_from_pretrained(state, config.train.init_from)
  start_step = int(state.step)
  logging.info("%s: %d train / %d val sequences, %d steps per epoch of %d sequences "
               "(%d devices x %d micro-batches x %d), %d dropped per epoch", config.model.name,
               sets.train.num_sequences, sets.val.num_sequences, steps_per_epoch,
               pipeline.sequences_per_step, num_devices, config.train.accum_steps,
               config.train.batch_size, pipeline.dropped_per_epoch)

  logging.info("Baselines fitted on %d train windows: recency decay by metric %s (each the "
               "best on train, context excluded), linear rank %d", fitted.train_windows,
               fitted.decays, fitted.linear.basis.shape[1])
  evaluations = evaluators.from_config(config, predict_fns.from_apply_fn(state.apply_fn),
                                       evaluators.Context(
      config=config, val=sets.val, eval_path=sets.eval_path, payload_path=sets.payload_path,
      fitted=fitted))
  references = {}
  for name, evaluator in evaluations:
    references[name] = evaluator.baselines()
    if references[name]:
      hooks.write_baselines(workdir.evaluator_baselines(name), references[name])

  p_train_step = step_lib.make_parallel_train_step(config, data_parallel)
  state = data_parallel.replicate(state)
  writer = hooks.MetricWriter(workdir, history)
  schedule = step_lib.learning_rate_schedule(config, total_steps)
  metric, mode = config.train.best_metric, config.train.best_mode
  stopper = hooks.early_stopping_from(history, metric, mode, config.train.early_stopping_patience)
  gate = hooks.SmokeGate(config.train.smoke_gate_epoch, config.train.smoke_gate_minimum,
                        config.train.smoke_gate_metric)
  summary = {"stopped_early": False}
  try:
    for epoch in range(start_step // steps_per_epoch, config.train.num_epochs):
      if hooks.should_stop(stopper):
        summary["stopped_early"] = True
        break
      first_step = start_step % steps_per_epoch if epoch == start_step // steps_per_epoch else 0
      state, train_means, speed = train_epoch(
          p_train_step, state, pipeline, epoch, first_step, step_rng, config=config,
          workdir=workdir, writer=writer, schedule=schedule)
      host_state = data_parallel.to_host(state)
      step = int(host_state.step)
      metrics = {**{f"train/{key}": train_means[name] for name, key in TRAIN_MEANS.items()
                    if name in train_means},
                 "masked_negatives_per_step": train_means["masked_negatives"],
                 "lr": float(schedule(max(step - 1, 0))), **speed}
      for name, evaluator in evaluations:
        if evaluator.due(epoch + 1):
          metrics.update({f"{name}/{key}": value for key, value in evaluator.run(host_state.params)})
      entry = writer.write(step, metrics, epoch=epoch + 1)
      checkpointer.save(host_state, entry)
      if gate.check(epoch + 1, entry) is not None:
        summary["smoke_gate_passed"] = gate.passed
      if metric in entry:
        stopper = hooks.update_early_stopping(stopper, entry[metric], mode)
  finally:
    checkpointer.wait_until_finished()
    checkpointer.close()
    writer.close()
  summary.update(history=history.entries, best=history.best(metric, mode), best_metric=metric,
                 best_val_cosine=history.best("val_cosine"), data=sets.describe(),
                 baselines=references.get("val", {}), final_state=data_parallel.to_host(state))
  return summary
