#!/usr/bin/env bash
# Trains on the GPU of an Apple-silicon Mac through jax-metal. Installs nothing itself; set up
# once with
#   pip install -e ".[metal]"      # pins jax==0.5.0 jaxlib==0.5.0 jax-metal==0.1.1
#
# Usage (from the repository root, on macOS/arm64):
#   launch/metal.sh [MAIN_FLAGS...]
#   CONFIG=configs/s_contrastive.py:tiny launch/metal.sh --config.model.scan_mode=sequential
#   LAUNCH_DRY_RUN=1 launch/metal.sh      # print the command, run nothing (any OS)
#   launch/metal.sh --help                # this text
#
# Runs:
#   python -m lvm_jax.main --config=$CONFIG --workdir=$WORKDIR --backend=metal [MAIN_FLAGS...]
# MAIN_FLAGS pass through unchanged, e.g. config overrides --config.model.n_layers=2.
#
# What Metal cannot do, and so what a run here uses:
#   - float32 only: no float64 and no bfloat16 compute; keep config.model.dtype=float32.
#   - one device: the step is vmapped on it, so negatives are gathered over that one device.
#   - no associative_scan: the selective scan runs unrolled or sequential (scan_mode=auto picks
#     it; force one with --config.model.scan_mode=unrolled or =sequential).
#
# Environment:
#   CONFIG                     config file[:variant]; default configs/s_contrastive.py
#   WORKDIR                    run directory; default runs/<config>[_<variant>]
#   ENABLE_PJRT_COMPATIBILITY  1: let jax-metal load under a jaxlib newer than it was built
#                              for (only if it refuses to start; the pinned pair needs no help)
#   PYTHON                     interpreter; default python (python3 when there is no python)
#   LAUNCH_DRY_RUN             1: print the command and exit 0 without running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_help_if_asked "$0" "$@"

if [[ "${LAUNCH_DRY_RUN:-0}" != "1" ]] && \
   [[ "$(uname -s)" != "Darwin" || "$(uname -m)" != "arm64" ]]; then
  launch_fail "Metal needs macOS on Apple silicon, this is $(uname -s)/$(uname -m)." \
    "Use launch/cpu.sh or launch/gpu.sh here."
fi
launch_pass_env ENABLE_PJRT_COMPATIBILITY
launch_run metal "$@"
