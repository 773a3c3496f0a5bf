"""Prints parameter counts: `python -m lvm_jax.models [--vector_dim=768]`."""

from __future__ import annotations

from typing import Dict, List, Tuple

import jax
import jax.numpy as jnp
from absl import app, flags

from lvm_jax import cli
from lvm_jax.models.model import count_parameters
from lvm_jax.models.variants import VARIANTS, create_model

# The reference's training size: mamba_s widened to d_model 768.
REFERENCE_TRAINING_SIZE = ("mamba_s", dict(d_model=768, n_layers=8, d_state=128))


def parameter_count(name: str, **overrides) -> int:
  """Counts parameters from shapes alone (jax.eval_shape: nothing is allocated)."""
  model = create_model(name, **overrides)
  dummy = jax.ShapeDtypeStruct((1, 5, model.vector_dim), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), dummy)
  return count_parameters(shapes["params"])


def parameter_table(vector_dim: int = 768) -> List[Tuple[str, Dict, int]]:
  rows = [(name, {}, parameter_count(name, vector_dim=vector_dim)) for name in VARIANTS]
  name, overrides = REFERENCE_TRAINING_SIZE
  rows.append((name, overrides, parameter_count(name, vector_dim=vector_dim, **overrides)))
  return rows


def print_table(vector_dim: int) -> None:
  print(f"{'model':<20} {'overrides':<42} {'parameters':>14}")
  for name, overrides, count in parameter_table(vector_dim):
    print(f"{name:<20} {str(overrides or 'reference defaults'):<42} {count:>14,}")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Called only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_integer("vector_dim", 768, "Input vector dimension of every model.",
                       flag_values=flag_values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  print_table(flags.FLAGS.vector_dim)


if __name__ == "__main__":
  define_flags()
  cli.run(main)
