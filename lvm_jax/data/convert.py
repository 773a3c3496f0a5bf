"""Converts the reference's pickled payload into this project's safe payload directory, once.

  python -m lvm_jax.data.convert --src reference_payload.npy --dst PAYLOAD_DIR --trust_pickle \
      [--embedder_id gtr-t5-base | --provenance_from reference_train.npz] [--normalize]

The reference saved {payload_id: (text, meta, vec)} with np.save, so reading it
runs pickle (arbitrary code): pass --trust_pickle only for files you trust.
Everything after this step reads plain arrays.
"""

from __future__ import annotations

import json

from absl import app, flags

from lvm_jax import cli
from lvm_jax.data.legacy import convert_reference_payload


def define_flags() -> None:
  flags.DEFINE_string("src", None, "The reference's pickled payload (.npy).", required=True)
  flags.DEFINE_string("dst", None, "Output payload directory.", required=True)
  flags.DEFINE_bool("trust_pickle", False, "Allow unpickling --src (it can run code).")
  flags.DEFINE_string("embedder_id", None, "Recorded in the provenance, e.g. gtr-t5-base "
                      "(default: from --provenance_from, else 'unknown').")
  flags.DEFINE_string("provenance_from", None, "An NPZ the reference built from this payload "
                      "(train/val/eval): its provenance (embedder_id, norm, metric, ...) is "
                      "carried over.")
  flags.DEFINE_bool("normalize", False, "Re-normalise non-unit vectors (logged) instead of "
                    "failing.")


@cli.exits_cleanly_on_user_errors
def main(argv) -> None:
  del argv
  args = flags.FLAGS
  payload = convert_reference_payload(args.src, args.dst, trust_pickle=args.trust_pickle,
                                      embedder_id=args.embedder_id, normalize=args.normalize,
                                      provenance_from=args.provenance_from)
  print(json.dumps({"payload": args.dst, "rows": payload.num_rows, "dim": payload.vector_dim}))


if __name__ == "__main__":
  define_flags()
  app.run(main)
