# Shared by the launch scripts (sourced, not run): help text, the main command, printing and
# running it. Kept to bash 3.2 (macOS's /bin/bash): no associative arrays, and empty arrays are
# expanded as ${array[@]+"${array[@]}"} because `set -u` rejects "${array[@]}" there.
#
# Environment read here, for every script:
#   CONFIG          config file[:variant]      default configs/s_contrastive.py
#   WORKDIR         checkpoints, TensorBoard   default runs/<config name>[_<variant>]
#   PYTHON          interpreter                default python (python3 when there is no python)
#   LAUNCH_DRY_RUN  1: print the command and exit 0 without running it

# Extra "NAME=value" settings the command runs under; scripts append, launch_run prints them.
LAUNCH_ENV=()

# Prints the comment block at the top of script $1 (its documentation), without the "# ".
launch_usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$1"
}

# Answers -h / --help (the first argument only) with the script's documentation.
launch_help_if_asked() {
  local script="$1"
  shift
  case "${1:-}" in
    -h|--help) launch_usage "$script"; exit 0 ;;
  esac
}

launch_fail() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# Adds NAME=value to LAUNCH_ENV for each NAME that is set, so the printed command shows it.
launch_pass_env() {
  local name
  for name in "$@"; do
    if [[ -n "${!name+x}" ]]; then
      LAUNCH_ENV+=("$name=${!name}")
    fi
  done
}

# runs/<config file name>[_<variant>]: one directory per experiment, so a rerun resumes it.
launch_default_workdir() {
  local config="$1" name variant=""
  name="$(basename "${config%%:*}" .py)"
  if [[ "$config" == *:* ]]; then
    variant="_${config#*:}"
  fi
  echo "runs/${name}${variant}"
}

# launch_command BACKEND [EXTRA_ARGS...]: sets LAUNCH_COMMAND to `python -m lvm_jax.main ...`
# and LAUNCH_WORKDIR to its workdir.
launch_command() {
  local backend="$1"
  shift
  local config="${CONFIG:-configs/s_contrastive.py}"
  LAUNCH_WORKDIR="${WORKDIR:-$(launch_default_workdir "$config")}"
  local python="${PYTHON:-}"
  if [[ -z "$python" ]]; then
    if command -v python >/dev/null 2>&1; then python=python; else python=python3; fi
  fi
  LAUNCH_COMMAND=("$python" -m lvm_jax.main "--config=$config" "--workdir=$LAUNCH_WORKDIR"
                  "--backend=$backend" "$@")
}

# Prints `+ NAME=value ... command` for the given words, shell-quoted.
launch_print() {
  local printed
  printed="$(printf '%q ' "$@")"
  echo "+ ${printed% }"
}

# launch_run BACKEND [EXTRA_ARGS...]: prints and runs `python -m lvm_jax.main` on BACKEND.
launch_run() {
  launch_command "$@"
  launch_print ${LAUNCH_ENV[@]+"${LAUNCH_ENV[@]}"} "${LAUNCH_COMMAND[@]}"
  if [[ "${LAUNCH_DRY_RUN:-0}" == "1" ]]; then
    exit 0
  fi
  exec env ${LAUNCH_ENV[@]+"${LAUNCH_ENV[@]}"} "${LAUNCH_COMMAND[@]}"
}
