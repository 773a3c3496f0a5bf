#!/usr/bin/env bash
# Trains on the CPU: the tiny configs, tests, debugging, and multi-device code paths
# (the device mesh, all_gather negatives) on one machine through fake host devices.
#
# Usage (from the repository root):
#   launch/cpu.sh [MAIN_FLAGS...]
#   CONFIG=configs/s_contrastive.py:tiny DEVICES=4 launch/cpu.sh --config.train.num_epochs=2
#   LAUNCH_DRY_RUN=1 launch/cpu.sh        # print the command, run nothing
#   launch/cpu.sh --help                  # this text
#
# Runs:
#   python -m lvm_jax.main --config=$CONFIG --workdir=$WORKDIR --backend=cpu [MAIN_FLAGS...]
# MAIN_FLAGS pass through unchanged, e.g. config overrides --config.model.n_layers=2.
#
# Environment:
#   CONFIG          config file[:variant]; default configs/s_contrastive.py
#   WORKDIR         run directory (checkpoints, TensorBoard); default runs/<config>[_<variant>]
#   DEVICES         N > 0: split the CPU into N XLA devices, by appending
#                   --xla_force_host_platform_device_count=N to XLA_FLAGS; unset: one device
#   XLA_FLAGS       further XLA flags, kept
#   PYTHON          interpreter; default python
#   LAUNCH_DRY_RUN  1: print the command and exit 0 without running it
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_help_if_asked "$0" "$@"

if [[ -n "${DEVICES:-}" ]]; then
  if ! [[ "$DEVICES" =~ ^[1-9][0-9]*$ ]]; then
    launch_fail "DEVICES=$DEVICES must be a positive integer (the number of fake CPU devices)."
  fi
  XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES"
fi
launch_pass_env XLA_FLAGS
launch_run cpu "$@"
