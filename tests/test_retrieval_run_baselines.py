"""run_baselines: the eval CLI finds a finished run's train windows and fits the same recency
and linear baselines the training loop fitted on the set it trained on."""

import numpy as np

from conftest import tiny_config
from lvm_jax.retrieval import baselines, run_baselines
from lvm_jax.train.training_sets import load_training_sets


def test_a_runs_windows_found_offline_give_the_loops_baselines(tmp_path):
  config = tiny_config()
  data_dir = str(tmp_path / "data")
  sets = load_training_sets(config, data_dir)  # the synthetic default, as the loop reads it
  in_training = run_baselines.fit(sets.train)
  offline = run_baselines.fit_for_run(config, data_dir, sets.payload)
  assert offline is not None and offline.train_windows == sets.train.num_sequences > 0
  contexts = np.asarray(sets.val.batch(np.arange(sets.val.num_sequences))[0])
  rows = baselines.baseline_predictors(in_training)
  offline_rows = baselines.baseline_predictors(offline)
  assert list(offline_rows) == list(rows) and {"recency", "linear"} <= set(rows)
  for name, predict in rows.items():
    np.testing.assert_array_equal(offline_rows[name](contexts), predict(contexts), err_msg=name)


def test_no_train_windows_on_disk_fits_nothing(tmp_path):
  assert run_baselines.fit_for_run(tiny_config(), str(tmp_path / "data"), payload=None) is None
