#!/usr/bin/env bash
# Trains on the NVIDIA GPUs of one host (every visible GPU joins the device mesh).
# Needs a CUDA build of JAX: pip install -U "jax[cuda12]".
#
# Usage (from the repository root):
#   launch/gpu.sh [MAIN_FLAGS...]
#   CUDA_VISIBLE_DEVICES=0,1 CONFIG=configs/s_contrastive.py launch/gpu.sh --config.seed=1
#   LAUNCH_DRY_RUN=1 launch/gpu.sh        # print the command, run nothing
#   launch/gpu.sh --help                  # this text
#
# Runs:
#   python -m lvm_jax.main --config=$CONFIG --workdir=$WORKDIR --backend=gpu [MAIN_FLAGS...]
# MAIN_FLAGS pass through unchanged, e.g. config overrides --config.model.n_layers=2.
#
# Environment:
#   CONFIG                          config file[:variant]; default configs/s_contrastive.py
#   WORKDIR                         run directory; default runs/<config>[_<variant>]
#   CUDA_VISIBLE_DEVICES            which GPUs this run may use (e.g. 0,1); default all
#   XLA_PYTHON_CLIENT_MEM_FRACTION  share of each GPU's memory JAX takes at start (JAX's
#                                   default .75); raise to .9 for the largest batches, lower
#                                   it when another process shares the GPU
#   XLA_PYTHON_CLIENT_PREALLOCATE   false: allocate on demand instead of up front (slower,
#                                   more fragmentation, but shows the true footprint)
#   XLA_PYTHON_CLIENT_ALLOCATOR     platform: free memory as soon as it is unused (debugging
#                                   out-of-memory only; very slow)
#   XLA_FLAGS                       further XLA flags, e.g. --xla_gpu_enable_latency_hiding_scheduler=true
#   TF_CPP_MIN_LOG_LEVEL            0-3: quiets XLA's C++ logging
#   PYTHON                          interpreter; default python
#   LAUNCH_DRY_RUN                  1: print the command and exit 0 without running it
# The variables above are inherited by the run as set; the printed command lists those set.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_help_if_asked "$0" "$@"

launch_pass_env CUDA_VISIBLE_DEVICES XLA_PYTHON_CLIENT_MEM_FRACTION \
  XLA_PYTHON_CLIENT_PREALLOCATE XLA_PYTHON_CLIENT_ALLOCATOR XLA_FLAGS TF_CPP_MIN_LOG_LEVEL
launch_run gpu "$@"
