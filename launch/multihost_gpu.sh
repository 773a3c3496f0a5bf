#!/usr/bin/env bash
# Trains on GPUs across several hosts: run this script once on every host, each with its own
# PROCESS_ID. It exports JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, from
# which lvm_jax.main calls jax.distributed.initialize() before anything else touches JAX; then
# every process drives its local GPUs and the device mesh spans all of them.
#
# Usage (from the repository root, on every host):
#   COORDINATOR_ADDRESS=host0:12345 NUM_PROCESSES=2 PROCESS_ID=0 launch/multihost_gpu.sh [MAIN_FLAGS...]
#   COORDINATOR_ADDRESS=host0:12345 NUM_PROCESSES=2 PROCESS_ID=1 launch/multihost_gpu.sh [MAIN_FLAGS...]
#   LAUNCH_DRY_RUN=1 ... launch/multihost_gpu.sh   # print the command, run nothing
#   launch/multihost_gpu.sh --help                 # this text
#
# Runs:
#   JAX_COORDINATOR_ADDRESS=... JAX_NUM_PROCESSES=... JAX_PROCESS_ID=... \
#     python -m lvm_jax.main --config=$CONFIG --workdir=$WORKDIR --backend=gpu [MAIN_FLAGS...]
# MAIN_FLAGS pass through unchanged and must be the same on every host.
#
# Environment:
#   COORDINATOR_ADDRESS  host:port of process 0, reachable from every host (required)
#   NUM_PROCESSES        number of processes, one per host (default: $SLURM_NTASKS)
#   PROCESS_ID           this host's index, 0..NUM_PROCESSES-1 (default: $SLURM_PROCID)
#   CONFIG               config file[:variant]; default configs/s_contrastive.py
#   WORKDIR              run directory on a filesystem every host sees (Orbax writes one
#                        checkpoint from all hosts); default runs/<config>[_<variant>]
#   CUDA_VISIBLE_DEVICES, XLA_PYTHON_CLIENT_MEM_FRACTION, XLA_PYTHON_CLIENT_PREALLOCATE,
#   XLA_FLAGS            as in launch/gpu.sh
#   NCCL_DEBUG, NCCL_SOCKET_IFNAME  NCCL logging / the network interface between hosts
#   LVM_JAX_INIT_TIMEOUT_S, LVM_JAX_HEARTBEAT_TIMEOUT_S, LVM_JAX_BARRIER_TIMEOUT_S
#                        bounds (seconds) on reaching the coordinator, on a silent process
#                        being declared dead, on a barrier or checkpoint commit (defaults 300,
#                        100, 10x the work >= 300); a process that loses the others exits with an error that
#                        names it instead of hanging. See lvm_jax/distributed/multihost.py
#   PYTHON               interpreter; default python
#   LAUNCH_DRY_RUN       1: print the command and exit 0 without running it
# Every process runs the same program; process 0 alone generates the synthetic corpus (the
# others wait, then read it) and writes config.json, history, baselines and TensorBoard
# events; every process takes part in each checkpoint. launch/multihost_cpu.sh runs the
# same thing as processes on one machine.
#
# SLURM: one task per node, each task sees all GPUs of its node; NUM_PROCESSES and PROCESS_ID
# then come from SLURM_NTASKS and SLURM_PROCID, and process 0 runs on the first node:
#   #SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=8
#   export COORDINATOR_ADDRESS="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1):12345"
#   srun launch/multihost_gpu.sh --config.seed=0
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_help_if_asked "$0" "$@"

NUM_PROCESSES="${NUM_PROCESSES:-${SLURM_NTASKS:-}}"
PROCESS_ID="${PROCESS_ID:-${SLURM_PROCID:-}}"
if [[ -z "${COORDINATOR_ADDRESS:-}" ]]; then
  launch_fail "COORDINATOR_ADDRESS is not set; set it to host:port of process 0" \
    "(the same on every host), e.g. COORDINATOR_ADDRESS=host0:12345."
fi
if ! [[ "$COORDINATOR_ADDRESS" =~ ^[^:]+:[0-9]+$ ]]; then
  launch_fail "COORDINATOR_ADDRESS=$COORDINATOR_ADDRESS is not host:port (e.g. host0:12345)."
fi
if ! [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]]; then
  launch_fail "NUM_PROCESSES='$NUM_PROCESSES' must be a positive integer, the number of hosts" \
    "(or run under SLURM, which sets SLURM_NTASKS)."
fi
if ! [[ "$PROCESS_ID" =~ ^(0|[1-9][0-9]*)$ ]] || (( PROCESS_ID >= NUM_PROCESSES )); then
  launch_fail "PROCESS_ID='$PROCESS_ID' must be an integer in 0..$((NUM_PROCESSES - 1))," \
    "different on every host (or run under SLURM, which sets SLURM_PROCID)."
fi
LAUNCH_ENV+=("JAX_COORDINATOR_ADDRESS=$COORDINATOR_ADDRESS"
             "JAX_NUM_PROCESSES=$NUM_PROCESSES"
             "JAX_PROCESS_ID=$PROCESS_ID")
launch_pass_env CUDA_VISIBLE_DEVICES XLA_PYTHON_CLIENT_MEM_FRACTION \
  XLA_PYTHON_CLIENT_PREALLOCATE XLA_FLAGS NCCL_DEBUG NCCL_SOCKET_IFNAME \
  LVM_JAX_INIT_TIMEOUT_S LVM_JAX_HEARTBEAT_TIMEOUT_S LVM_JAX_BARRIER_TIMEOUT_S
launch_run gpu "$@"
