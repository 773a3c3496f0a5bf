"""Build a FAISS index over a payload (ids = payload rows).

  python -m lvm_jax.eval.build_index --payload DATA/payload --out DATA/payload.faiss \
      [--kind auto] [--nlist 3056] [--train_sample 200000]

--kind auto (the default) is retrieval.index.choose_index_kind: exact Flat below
50k rows, index.DEFAULT_KIND from there on. The eval CLI reads DATA/payload.faiss
when it is there.
"""

from __future__ import annotations

import sys
import time
from typing import List, Optional

from absl import flags, logging

from lvm_jax import cli
from lvm_jax.data.payload import read_payload
from lvm_jax.retrieval import index as index_lib


def define_flags(values: flags.FlagValues) -> None:
  d = dict(flag_values=values)
  flags.DEFINE_string("payload", None, "Payload directory.", **d)
  flags.DEFINE_string("out", None, "Index file to write.", **d)
  flags.DEFINE_enum("kind", index_lib.AUTO, (index_lib.AUTO,) + index_lib.INDEX_KINDS,
                    "Index kind; auto: retrieval.index.choose_index_kind.", **d)
  flags.DEFINE_integer("nlist", None, "IVF cells (default ≈ 4·√M).", **d)
  flags.DEFINE_integer("train_sample", None, "k-means training points (default 64 a cell).", **d)
  flags.DEFINE_integer("seed", 0, "k-means sample seed.", **d)
  # The dashed spellings of earlier versions, kept as aliases.
  flags.DEFINE_alias("train-sample", "train_sample", flag_values=values)


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  values = flags.FlagValues()
  define_flags(values)
  if any(arg in cli.HELP_FLAGS for arg in argv):
    print(__doc__ + "\nflags:\n" + values.get_help(include_special_flags=False))
    return 0
  full_argv = ["lvm_jax.eval.build_index"] + argv
  try:
    values(full_argv)
    for name in ("payload", "out"):
      if values[name].value is None:
        raise flags.Error(f"--{name} is required: {values[name].help}")
  except flags.Error as error:
    print(f"error: {cli.flag_error_message(error, full_argv, values)}", file=sys.stderr)
    return 2
  logging.set_verbosity(logging.INFO)
  try:
    payload = read_payload(values.payload, load_texts=False)
    start = time.perf_counter()
    index = index_lib.build_index(payload.vectors, kind=values.kind, nlist=values.nlist,
                                  train_sample=values.train_sample, seed=values.seed)
    index_lib.write_index(index, values.out)
  except (ValueError, OSError) as error:
    print(f"error: {cli.message(error)}", file=sys.stderr)
    return cli.exit_status(error)
  print(f"{index_lib.index_kind(index)} index over {payload.num_rows} rows -> {values.out} "
        f"({time.perf_counter() - start:.1f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
