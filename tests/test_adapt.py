"""python -m lvm_jax.adapt: the choice rule and its record, the start (fine-tune or scratch), the
estimate, bad input; slow: adapt end to end, and eval and predict serving the recorded pick."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from lvm_jax.adapt import plan
from lvm_jax.retrieval import baselines, choice

# Its module fixtures are costly: one pytest-xdist worker runs the whole file.
pytestmark = pytest.mark.xdist_group("adapt")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "pretrained", "debian_docs_minilm")
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def interval(margin, baseline):
  return {"baseline": baseline, "margin": margin, "low": margin - 0.01, "high": margin + 0.01,
          "includes_zero": True}


def shipped(dim=384, embedder=MINILM, rate=1000.0):
  return plan.Shipped(SHIPPED, dim, embedder, rate)


# ----------------------------------------------------------------------------- the choice rule


def test_learned_is_chosen_when_both_margins_are_at_least_zero():
  margins = {"R@1": interval(-0.05, "copy_last"), "R@5": interval(0.0, "copy_last"),
             "Contain@50": interval(0.02, "recency")}
  assert choice.choose(margins) == choice.LEARNED  # R@1 does not count; 0 is enough


def test_otherwise_the_best_row_by_contain50_is_chosen():
  # R@5's best row (copy_last) is not Contain@50's (recency): the fallback is Contain@50's.
  margins = {"R@5": interval(-0.001, "copy_last"), "Contain@50": interval(0.03, "recency")}
  assert choice.choose(margins) == "recency"
  margins = {"R@5": interval(0.01, "copy_last"), "Contain@50": interval(-0.02, "linear")}
  assert choice.choose(margins) == "linear"


def test_the_rule_needs_both_metrics():
  with pytest.raises(ValueError, match=r"the choice needs the margins of \['R@5', "
                     r"'Contain@50'\]; \['R@5'\] absent."):
    choice.choose({"Contain@50": interval(0.1, "recency")})


def test_an_untrained_picks_reranker_is_kept_only_when_it_raises_both_metrics():
  from lvm_jax.adapt import untrained_rerank  # pylint: disable=g-import-not-at-top

  def figures(r5, c50, r5_after, c50_after):
    return {"windows": 10, "R@5": r5, "Contain@50": c50, "R@5 reranked": r5_after,
            "Contain@50 reranked": c50_after}

  assert untrained_rerank.raises_both(figures(0.20, 0.50, 0.25, 0.55))
  assert untrained_rerank.raises_both(figures(0.20, 0.50, 0.20, 0.51))  # one up, one level
  assert not untrained_rerank.raises_both(figures(0.20, 0.50, 0.20, 0.50))  # no gain
  assert not untrained_rerank.raises_both(figures(0.20, 0.50, 0.30, 0.49))  # one down
  assert not untrained_rerank.raises_both(figures(0.20, 0.50, 0.19, 0.60))


def test_the_record_round_trips_and_names_what_it_serves(tmp_path):
  margins = {"R@5": interval(-0.01, "recency"), "Contain@50": interval(-0.02, "recency")}
  record = choice.make_record("recency", margins, {"learned": {"R@5": 0.2}},
                              params={"decay": 0.3}, val="VAL")
  path = choice.write(str(tmp_path), record)
  read = choice.read(str(tmp_path))
  assert read == {**record, "path": path}
  assert read["rule"] == choice.RULE and read["view"] == "excl"
  assert choice.describe(read) == "recency (decay 0.3)"
  assert choice.served(read, "auto") is read and choice.served(read, "learned") is None
  assert choice.served_line(read) == (
      f"predictor: recency (decay 0.3), chosen by lvm_jax.adapt on val over the learned system "
      f"(see {path}; --predictor learned serves the learned system)")
  learned = choice.make_record("learned", margins, {})
  assert choice.served(learned, "auto") is None and choice.read(str(tmp_path / "none")) is None


def test_a_damaged_record_is_one_message_with_the_fix(tmp_path):
  path = os.path.join(tmp_path, choice.FILE_NAME)
  fix = ("Fix: rerun python -m lvm_jax.adapt with this workdir, or delete the file to serve the "
         "learned system.")
  with open(path, "w") as f:
    json.dump({"format_version": 1}, f)
  with pytest.raises(ValueError) as error:
    choice.read(str(tmp_path))
  assert str(error.value) == f"{path}: field 'predictor' is missing or not a string. {fix}"
  with open(path, "w") as f:
    json.dump({"format_version": 7, "predictor": "recency"}, f)
  with pytest.raises(ValueError) as error:
    choice.read(str(tmp_path))
  assert str(error.value) == (f"{path}: field 'format_version' is 7, this version reads 1. {fix}")


def test_the_served_predictor_is_the_scoreboards_own_row():
  rng = np.random.default_rng(0)
  contexts = rng.normal(size=(40, 5, 8)).astype(np.float32)
  targets = rng.normal(size=(40, 8)).astype(np.float32)
  fitted = baselines.fit_baselines(contexts, targets, np.arange(40), rank=4)
  unused = lambda: pytest.fail("recency with a recorded decay needs no fit")
  recency = choice.predictor({"predictor": "recency", "params": {"decay": 0.3}}, unused)
  np.testing.assert_array_equal(recency(contexts), baselines.recency(contexts, 0.3))
  linear = choice.predictor({"predictor": "linear"}, lambda: fitted)
  np.testing.assert_array_equal(linear(contexts),
                                baselines.baseline_predictors(fitted)["linear"](contexts))
  fns = choice.as_predict_fns({"predictor": "copy_last"}, unused)
  np.testing.assert_array_equal(fns.predict(None, contexts), contexts[:, -1])
  with pytest.raises(ValueError) as error:
    choice.predictor({"predictor": "linear", "path": "W/adapt_choice.json"}, lambda: None)
  assert str(error.value) == (
      "W/adapt_choice.json: field 'predictor' is 'linear', which needs the run's train windows "
      "(config data.train_path) or is no baseline row here (copy_last, mean_of_context). Fix: "
      "make the train windows reachable, or pass --predictor learned.")


# ----------------------------------------------------------------------------- the start


def test_other_dimensions_train_from_scratch_and_say_why():
  start = plan.decide_start(768, "sentence-transformers/gtr-t5-base", shipped())
  assert start.init_from == "" and start.recipe_arg == "cpu"
  assert start.why == (
      "training from scratch (configs/s_realtext.py:cpu): your vectors are 768-d and the shipped "
      f"model pretrained/debian_docs_minilm reads 384-d ones ({MINILM}).")


def test_another_embedder_of_the_same_dimension_trains_from_scratch():
  start = plan.decide_start(384, "BAAI/bge-small-en-v1.5", shipped())
  assert start.init_from == ""
  assert start.why == (
      "training from scratch (configs/s_realtext.py:cpu): your payload's embedder "
      f"'BAAI/bge-small-en-v1.5' is not the one the shipped model pretrained/debian_docs_minilm "
      f"was trained on ('{MINILM}').")


@pytest.mark.parametrize("embedder", [MINILM, "all-MiniLM-L6-v2", "all-minilm-l6-v2-384", None])
def test_the_shipped_embedder_or_none_recorded_fine_tunes(embedder):
  start = plan.decide_start(384, embedder, shipped())
  assert start.init_from == SHIPPED and start.recipe_arg == "finetune"
  assert start.why.startswith("fine-tuning the shipped model pretrained/debian_docs_minilm")
  assert plan.decide_start(384, embedder, shipped(), from_scratch=True).init_from == ""


def test_the_finetune_config_starts_from_the_shipped_model_with_its_shapes(tmp_path):
  """The recipe's finetune config builds the shipped model's parameter shapes (else the loop
  refuses init_from), and every path adapt records is absolute."""
  recipe = plan.load_recipe()
  model = plan.read_shipped(os.path.join(ROOT, recipe.PRETRAINED), recipe.PRETRAINED_EMBEDDER)
  assert (model.vector_dim, model.embedder_id) == (384, MINILM) and model.windows_per_s > 0
  start = plan.decide_start(384, MINILM, model)
  config = plan.adapt_config(recipe, start, train="d/train_rows.npz", val="d/val_rows.npz",
                             payload="d/payload", eval_path="", epochs=2, backend="cpu",
                             seed=3)
  with open(os.path.join(SHIPPED, "config.json")) as f:
    shipped_model = json.load(f)["model"]
  for field in ("name", "d_model", "n_layers", "d_state", "d_conv", "expand", "residual",
                "residual_mixing", "residual_max_lag"):
    assert config.model[field] == shipped_model[field], field
  assert config.train.init_from == SHIPPED and config.train.num_epochs == 2
  assert config.seed == 3
  assert config.data.train_path == os.path.abspath("d/train_rows.npz")
  assert config.evals.retrieval.payload_path == os.path.abspath("d/payload")


def test_the_estimate_caps_the_recipes_epochs_to_the_budget_but_not_asked_epochs():
  # 9,000 train + 1,000 val windows at 1,000/s: 10 s an epoch; 6 s of measured set-up, the
  # compile allowance and 14 val passes after (14 s): 60 s besides the epochs.
  fixed = 6 + plan.COMPILE_SECONDS + plan.VAL_PASSES_AFTER * 1.0
  assert fixed == 60
  fits = plan.estimate(9000, 1000, 384, shipped(), recipe_epochs=6, budget_minutes=60,
                       setup_seconds=6)
  assert (fits.epochs, fits.seconds) == (6, 120.0)
  capped = plan.estimate(9000, 1000, 384, shipped(), recipe_epochs=6, budget_minutes=1.5,
                         setup_seconds=6)
  assert capped.epochs == 3 and capped.seconds == 90.0
  assert capped.line.endswith("the recipe's 6 epochs would take about 2 min, so 3 fit "
                              "--budget_minutes 1.5.")
  asked = plan.estimate(9000, 1000, 384, shipped(), recipe_epochs=6, epochs=9,
                        budget_minutes=1.5, setup_seconds=6)
  assert asked.epochs == 9
  wide = plan.estimate(9000, 1000, 768, shipped(), recipe_epochs=6)
  assert wide.windows_per_s == 500.0 and "scaled to 768-d" in wide.line
  assert fits.line.startswith("adapt: about 2 min on 2 CPU cores: up to 6 epochs over 9,000 "
                              "train windows")


# ----------------------------------------------------------------------------- bad input


def run_adapt(*args, timeout=900):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "lvm_jax.adapt", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_a_missing_file_is_one_error_line_naming_the_flag(tmp_path):
  (tmp_path / "train_rows.npz").write_bytes(b"")
  (tmp_path / "payload").mkdir()
  missing = str(tmp_path / "val_rows.npz")
  run = run_adapt("--train", str(tmp_path / "train_rows.npz"), "--val", missing,
                  "--payload", str(tmp_path / "payload"), "--workdir", str(tmp_path / "W"))
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert run.stderr.strip().splitlines()[-1] == (
      f"error: --val {missing}: does not exist. Fix: pass the val_rows.npz that python -m "
      "lvm_jax.corpus.build --payload DATA/payload --out DATA/sets wrote (DATA/sets/val_rows.npz).")
  run = run_adapt("--train", str(tmp_path / "train_rows.npz"), "--val", missing)
  assert run.returncode == 2
  assert run.stderr.strip().splitlines()[-1].startswith(
      "error: missing required flags --payload, --workdir")


def test_a_val_set_of_one_article_is_refused_before_training(tmp_path):
  data = make_data(str(tmp_path), 32, articles=12)  # the build's 10 % val: one article
  run = run_adapt("--train", data["train_rows"], "--val", data["val_rows"], "--payload",
                  data["payload"], "--workdir", str(tmp_path / "W"))
  assert run.returncode == 2 and not os.path.exists(tmp_path / "W")
  assert run.stderr.strip().splitlines()[-1] == (
      f"error: --val {data['val_rows']}: holds the windows of 1 article; the reranker's "
      "self-check fits on some val articles and scores the others, so val needs at least 2. "
      "Fix: rebuild with more articles in val (python -m lvm_jax.corpus.build --split_ratios "
      "0.8,0.1,0.1 on a larger payload).")


def test_a_payload_of_fewer_than_50_chunks_is_refused_before_training(tmp_path):
  from lvm_jax.data.payload import read_payload, write_payload  # pylint: disable=g-import-not-at-top
  data = make_data(str(tmp_path), 32, articles=12)
  payload = read_payload(data["payload"], load_texts=False)
  small = str(tmp_path / "small_payload")
  keep = np.arange(49)
  write_payload(small, dataclasses.replace(payload, vectors=payload.vectors[keep],
                                           article_index=payload.article_index[keep],
                                           chunk_index=payload.chunk_index[keep],
                                           ids=payload.ids[keep], texts=None))
  run = run_adapt("--train", data["train_rows"], "--val", data["val_rows"], "--payload", small,
                  "--workdir", str(tmp_path / "W"))
  assert run.returncode == 2 and not os.path.exists(tmp_path / "W")
  assert run.stderr.strip().splitlines()[-1] == (
      f"error: --payload {small}: holds 49 chunks; the val table ranks 50 candidates a window "
      "(Contain@50), so adapt needs at least 50. Fix: ingest more text into the payload.")


# ----------------------------------------------------------------------------- end to end


def make_data(folder, dim, embedder_id=None, articles=80):
  """A synthetic payload (its embedder recorded as `embedder_id` when given) and its build."""
  from lvm_jax.corpus import build, synthetic  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import write_payload  # pylint: disable=g-import-not-at-top
  payload, _, _ = synthetic.sample_corpus(synthetic.SyntheticKnobs(num_articles=articles,
                                                                   dim=dim))
  if embedder_id:
    payload.provenance["embedder_id"] = embedder_id
  payload.source = write_payload(os.path.join(folder, "payload"), payload)
  return build.build_dataset(payload, os.path.join(folder, "sets"))


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
  """(workdir, stdout, data paths) of adapt from scratch on a 32-d synthetic corpus."""
  folder = str(tmp_path_factory.mktemp("adapt"))
  data = make_data(folder, 32)
  workdir = os.path.join(folder, "W")
  run = run_adapt("--train", data["train_rows"], "--val", data["val_rows"], "--payload",
                  data["payload"], "--workdir", workdir, "--epochs", "1")
  assert run.returncode == 0, run.stderr[-3000:]
  return workdir, run.stdout, data


def eval_json(workdir, tmp_path, capsys, *extra):
  from lvm_jax.eval import __main__ as eval_cli  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "eval.json")
  assert eval_cli.main(["--checkpoint", workdir, "--latency-queries", "5", "--out", out,
                        *extra]) == 0
  with open(out) as f:
    return capsys.readouterr().out, json.load(f)["lvm_jax"]


@pytest.mark.slow
def test_adapt_plans_trains_fits_judges_and_records_its_choice(adapted, tmp_path, capsys):
  workdir, printed, data = adapted
  lines = printed.splitlines()
  assert lines[0].startswith("adapt: training from scratch (configs/s_realtext.py:cpu): your "
                             "vectors are 32-d")
  assert lines[1].startswith("adapt: about ") and "up to 1 epoch over" in lines[1]
  stages = [line.split("] ", 1)[1].split(":")[0] for line in lines if line.startswith("adapt [")]
  record = choice.read(workdir)
  untrained = ["second stage"] if record["predictor"] != choice.LEARNED else []
  assert stages == ["train", "trained", "reranker", "margin table on --val (context excluded; "
                    "exact search over the payload)", "choice", *untrained, "done"]
  assert "| learned (model + reranker) |" in printed and "margin (excl, val)" in printed
  assert os.path.isdir(os.path.join(workdir, "checkpoints"))
  assert os.path.exists(os.path.join(workdir, "reranker.json"))
  assert record["predictor"] == choice.choose(record["margins"])
  assert record["val"] == data["val_rows"] and record["reranker"].endswith("reranker.json")
  # eval --checkpoint W alone: the build's eval.npz, the payload, and the pick, named.
  out, report = eval_json(workdir, tmp_path, capsys)
  assert choice.served_line(record) in out
  assert report["options"]["eval_npz"] == data["eval"]


@pytest.mark.slow
@pytest.mark.parametrize("row", ["recency", "linear"])
def test_a_recorded_untrained_pick_is_what_eval_judges(adapted, row, tmp_path, capsys):
  """The model row's numbers are exactly the chosen row's, its margin over it exactly 0, no
  reranker; --predictor learned brings the model and its reranker back."""
  workdir = str(tmp_path / "W")
  shutil.copytree(adapted[0], workdir)
  record = choice.read(workdir)
  decay = json.load(open(os.path.join(workdir, "config.json")))["model"]["residual_decay"]
  params = {"decay": decay} if row == "recency" else {}
  choice.write(workdir, choice.make_record(row, record["margins"], {}, params=params))
  out, report = eval_json(workdir, tmp_path, capsys)
  assert f"predictor: {choice.describe({'predictor': row, 'params': params})}, chosen by " \
         "lvm_jax.adapt" in out and "reranker: " not in out
  assert report["options"]["reranker"] is None and report["predictor"]["predictor"] == row
  for view in ("all", "excl"):
    model, chosen = report["views"][view]["model"], report["views"][view][row]
    assert {k: v for k, v in model.items() if k not in ("name", "batched_qps")} == \
        {k: v for k, v in chosen.items() if k not in ("name", "batched_qps", "decay",
                                                       "fitted_for")}
  out, report = eval_json(workdir, tmp_path, capsys, "--predictor", "learned")
  assert "as --predictor learned asks" in out and "reranker: " in out
  assert "predictor" not in report


@pytest.mark.slow
def test_predict_serves_the_recorded_pick(adapted, tmp_path):
  from lvm_jax import predict  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  workdir, _, data = adapted
  workdir_copy = str(tmp_path / "W")
  shutil.copytree(workdir, workdir_copy)
  choice.write(workdir_copy, choice.make_record("recency", {}, {}, params={"decay": 0.5}))
  payload = read_payload(data["payload"])
  contexts = read_queries(data["val_rows"], payload).contexts[0]
  embedder = dict(model="unused", embedder_id=payload.provenance["embedder_id"],
                  encoder=lambda chunks: contexts)
  text = "\n\n".join(f"Paragraph {i} of a text long enough to be one chunk of its own here."
                     for i in range(6))
  result, payload, loaded = predict.predict(text, workdir_copy, data["payload"], k=3, **embedder)
  expected = baselines.recency(contexts[None], 0.5)[0]
  np.testing.assert_allclose(result.prediction, expected / np.linalg.norm(expected), atol=1e-6)
  assert result.reranker is None
  shown = predict.format_prediction(result, payload, loaded, "<text>")
  assert shown.startswith("predictor: recency (decay 0.5), chosen by lvm_jax.adapt")
  assert "recency (decay 0.5), chosen by lvm_jax.adapt -> top 3" in shown
  learned, _, _ = predict.predict(text, workdir_copy, data["payload"], k=3, predictor="learned",
                                  **embedder)
  assert learned.reranker is not None and learned.served is None


@pytest.mark.slow
def test_a_minilm_payload_fine_tunes_the_shipped_model(tmp_path):
  """384-d vectors recorded as MiniLM's: the run starts from the shipped parameters (one short
  epoch in warm-up keeps them within 1 % of them; a fresh start is nowhere near)."""
  from lvm_jax import checkpoint  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  data = make_data(str(tmp_path), 384, embedder_id=MINILM, articles=40)
  workdir = str(tmp_path / "W")
  run = run_adapt("--train", data["train_rows"], "--val", data["val_rows"], "--payload",
                  data["payload"], "--workdir", workdir, "--epochs", "1")
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.startswith("adapt: fine-tuning the shipped model "
                               "pretrained/debian_docs_minilm")
  tuned = jax.tree_util.tree_leaves(checkpoint.load(workdir).params)
  shipped_params = jax.tree_util.tree_leaves(checkpoint.load(SHIPPED).params)
  distance = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(tuned, shipped_params)))
  size = np.sqrt(sum(np.sum(b ** 2) for b in shipped_params))
  assert distance < 0.01 * size


def test_a_diverged_training_is_one_message_and_leaves_no_choice(tmp_path, monkeypatch):
  """The loop stops on a NaN loss (test_train_loop); adapt turns that into one user error
  (no traceback) and no earlier choice is left standing for eval and predict to serve."""
  import types  # pylint: disable=g-import-not-at-top
  from lvm_jax import cli, train  # pylint: disable=g-import-not-at-top
  from lvm_jax.adapt import __main__ as adapt_main  # pylint: disable=g-import-not-at-top
  data = make_data(str(tmp_path), 32)
  workdir = str(tmp_path / "W")
  os.makedirs(workdir)
  choice.write(workdir, choice.make_record("recency", {}, {}))  # an earlier run's pick

  def diverges(config, workdir, *, fitted=None):
    raise train.NonFiniteLossError(f"non-finite training metrics {{'loss': nan}} at step 3; "
                                   f"stopped. The last good checkpoint in {workdir} ...")

  monkeypatch.setattr(train, "train_and_evaluate", diverges)
  flags = types.SimpleNamespace(train=data["train_rows"], val=data["val_rows"],
                                payload=data["payload"], workdir=workdir, eval=None, epochs=1,
                                budget_minutes=0.0, from_scratch=False, pretrained=None,
                                seed=0, backend="cpu")
  with pytest.raises(cli.UserFacingError) as raised:
    adapt_main.adapt(flags, adapt_main.Clock())
  assert str(raised.value) == (
      "the training diverged: non-finite training metrics {'loss': nan} at step 3. Nothing is "
      f"chosen: {workdir} holds no adapt_choice.json, so eval and predict serve no untrained "
      "pick from it. Fix: check TRAIN's vectors (python -m lvm_jax.corpus.build checks them), "
      "then rerun with --from_scratch, or with --epochs 1 to see the first epoch.")
  assert not os.path.exists(choice.path_in(workdir))


ADAPT_PICKING = """
import sys
from lvm_jax import cli
from lvm_jax.adapt import __main__ as adapt_main
from lvm_jax.retrieval import choice
choice.choose = lambda margins: {row!r}  # as if the learned system had lost on val
adapt_main.define_flags()
cli.run(cli.exits_cleanly_on_user_errors(adapt_main.main))
"""


@pytest.mark.slow
def test_an_untrained_pick_gets_its_own_reranker_which_eval_and_predict_serve(
    adapted, tmp_path, capsys):
  """adapt rerun on the trained workdir, its rule forced to the linear row (whose reranker pays
  on this corpus's held-out val articles): it records the second stage; eval's model row is the
  reranked row (the row alone with --reranker none); predict reorders the row's shortlist."""
  from lvm_jax import predict  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.eval_sets import read_queries  # pylint: disable=g-import-not-at-top
  from lvm_jax.data.payload import read_payload  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import learned_rerank, search  # pylint: disable=g-import-not-at-top
  from lvm_jax.retrieval import index as index_lib  # pylint: disable=g-import-not-at-top
  source, _, data = adapted
  workdir = str(tmp_path / "W")
  shutil.copytree(source, workdir)
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  run = subprocess.run([sys.executable, "-c", ADAPT_PICKING.format(row="linear"), "--train",
                        data["train_rows"], "--val", data["val_rows"], "--payload",
                        data["payload"], "--workdir", workdir, "--epochs", "1"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  path = os.path.join(workdir, choice.SECOND_STAGE_FILE)
  assert f"kept: it raises both on held-out val articles (excl); wrote {path}" in run.stdout
  assert "adapt: chose linear + reranker, an untrained predictor whose shortlist a reranker " \
         "fitted on val reorders" in run.stdout
  record = choice.read(workdir)
  assert record["second_stage"] == choice.SECOND_STAGE_FILE
  assert choice.second_stage_path(record) == path
  reranker = learned_rerank.load(path)
  assert reranker.fitted_on["predictor"] == "linear"

  out, report = eval_json(workdir, tmp_path, capsys)
  assert f"reranker: {path}" in out and report["options"]["reranker"] == reranker.to_json()
  scored = lambda row: {k: v for k, v in row.items() if k in ("R@5", "Contain@50", "MRR")}
  reranked = report["views"]["excl"]
  assert scored(reranked["model"]) != scored(reranked["linear"])
  _, alone = eval_json(workdir, tmp_path, capsys, "--reranker", "none")
  assert scored(alone["views"]["excl"]["model"]) == scored(alone["views"]["excl"]["linear"])

  payload = read_payload(data["payload"])
  contexts = read_queries(data["val_rows"], payload).contexts[0]
  text = "\n\n".join(f"Paragraph {i} of a text long enough to be one chunk of its own here."
                      for i in range(6))
  result, _, _ = predict.predict(text, workdir, data["payload"], k=3, model="unused",
                                 embedder_id=payload.provenance["embedder_id"],
                                 encoder=lambda chunks: contexts)
  assert result.reranker == path
  vectors = np.asarray(payload.vectors, np.float32)
  scores, rows, _ = search.search(index_lib.build_index(vectors, kind="flat"),
                                  result.prediction[None], reranker.depth)
  _, expected = reranker.rerank(rows, scores, contexts[None], vectors,
                                learned_rerank.payload_direction(vectors))
  np.testing.assert_array_equal(result.model_rows, expected[0, :3])
