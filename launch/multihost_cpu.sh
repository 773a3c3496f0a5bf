#!/usr/bin/env bash
# Runs a multi-host training on one machine: NUM_PROCESSES CPU processes that talk through
# jax.distributed and Gloo collectives as the hosts of a GPU cluster do through
# launch/multihost_gpu.sh. It checks the multi-process paths by hand, without a cluster:
# work done once by process 0, cross-process negatives, checkpoints, resume, and the error a
# process gives when another dies (kill one with kill -9 PID; its PID is printed).
#
# Usage (from the repository root):
#   CONFIG=configs/s_contrastive.py:tiny launch/multihost_cpu.sh --config.train.num_epochs=2
#   NUM_PROCESSES=2 PORT=12355 launch/multihost_cpu.sh [MAIN_FLAGS...]
#   LAUNCH_DRY_RUN=1 launch/multihost_cpu.sh   # print the commands, run nothing
#   launch/multihost_cpu.sh --help             # this text
#
# Runs, for each PROCESS_ID in 0..NUM_PROCESSES-1, at once:
#   JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$NUM_PROCESSES \
#     JAX_PROCESS_ID=$PROCESS_ID python -m lvm_jax.main --config=$CONFIG --workdir=$WORKDIR \
#     --backend=cpu [MAIN_FLAGS...]
# Process 0 prints to the terminal; process i writes $WORKDIR.process<i>.log. The script
# waits for all of them and exits with the first non-zero status (0 when all succeed). Rerun
# it on the same WORKDIR to resume from the latest checkpoint. Ctrl-C stops every process.
#
# Environment:
#   NUM_PROCESSES   processes to start, >= 2; default 2
#   PORT            coordinator port on 127.0.0.1; default 12355
#   LVM_JAX_INIT_TIMEOUT_S, LVM_JAX_HEARTBEAT_TIMEOUT_S, LVM_JAX_BARRIER_TIMEOUT_S
#                   bounds (seconds) on the waits between processes: reaching the coordinator,
#                   declaring a silent process dead, a barrier or checkpoint commit
#                   (defaults 300, 100, and 10x the work >= 300; see
#                   lvm_jax/distributed/multihost.py); passed through
#   CONFIG          config file[:variant]; default configs/s_contrastive.py
#   WORKDIR         run directory shared by the processes; default runs/<config>[_<variant>]
#   XLA_FLAGS       passed through
#   PYTHON          interpreter; default python
#   LAUNCH_DRY_RUN  1: print the commands and exit 0 without running them
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
launch_help_if_asked "$0" "$@"

NUM_PROCESSES="${NUM_PROCESSES:-2}"
PORT="${PORT:-12355}"
if ! [[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]] || (( NUM_PROCESSES < 2 )); then
  launch_fail "NUM_PROCESSES=$NUM_PROCESSES must be an integer >= 2 (for one process use" \
    "launch/cpu.sh)."
fi
if ! [[ "$PORT" =~ ^[1-9][0-9]*$ ]] || (( PORT > 65535 )); then
  launch_fail "PORT=$PORT must be a TCP port number (1..65535), free on this machine."
fi
LAUNCH_ENV+=("JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT" "JAX_NUM_PROCESSES=$NUM_PROCESSES")
launch_pass_env LVM_JAX_INIT_TIMEOUT_S LVM_JAX_HEARTBEAT_TIMEOUT_S LVM_JAX_BARRIER_TIMEOUT_S \
  XLA_FLAGS
launch_command cpu "$@"
for ((id = 0; id < NUM_PROCESSES; id++)); do
  launch_print "${LAUNCH_ENV[@]}" "JAX_PROCESS_ID=$id" "${LAUNCH_COMMAND[@]}"
done
if [[ "${LAUNCH_DRY_RUN:-0}" == "1" ]]; then
  exit 0
fi

PIDS=()
stop_all() {
  # SIGKILL: JAX handles SIGTERM as a preemption notice and keeps running.
  kill -9 ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null || true
}
trap 'stop_all; exit 130' INT TERM
mkdir -p "$(dirname "$LAUNCH_WORKDIR")"
for ((id = 0; id < NUM_PROCESSES; id++)); do
  if (( id == 0 )); then
    env "${LAUNCH_ENV[@]}" "JAX_PROCESS_ID=$id" "${LAUNCH_COMMAND[@]}" &
  else
    env "${LAUNCH_ENV[@]}" "JAX_PROCESS_ID=$id" "${LAUNCH_COMMAND[@]}" \
      >"$LAUNCH_WORKDIR.process$id.log" 2>&1 &
  fi
  PIDS+=("$!")
  if (( id == 0 )); then
    echo "process $id: PID $!" >&2
  else
    echo "process $id: PID $!, log $LAUNCH_WORKDIR.process$id.log" >&2
  fi
done
STATUS=0
for ((id = 0; id < NUM_PROCESSES; id++)); do
  code=0
  wait "${PIDS[$id]}" || code=$?
  if (( code != 0 )); then
    echo "$(basename "$0"): process $id exited with status $code" >&2
    if (( STATUS == 0 )); then STATUS=$code; fi
  fi
done
exit "$STATUS"
