#!/usr/bin/env bash
# Every check that needs a GPU, in one run of under 8 minutes on one GPU; JSON under $OUT.
#
#   OUT=RUN/suite benchmarks/device_suite.sh           # on a GPU machine, from the repository root
#   OUT=RUN/suite benchmarks/device_suite.sh --tiny    # the same steps on CPU at tiny sizes (CI:
#                                                      # tests/test_device_suite.py)
#
# Steps, each under its own time limit (seconds, below) so one that hangs or fails is
# recorded and the rest still run:
#   pallas_parity   tests/test_ops_pallas_scan.py: the kernel (Triton on a GPU) against the
#                   float64 loop and mode "sequential", forward and every gradient
#   pallas_check    benchmarks/pallas_check.py: the start-up self-check, timed, and what
#                   "auto" resolves to
#   scan_bench      every scan mode, forward and forward+backward (--quick)
#   epoch_fp32      benchmarks/epoch_bench.py at 396k sequences, float32, with the scan share
#   epoch_bf16      the same in bfloat16 matmuls (not with --tiny: the fp32 step's wiring)
#   eval_bench      the FAISS part (on the host's CPU cores)
# Writes $OUT/<step>.log, each benchmark's JSON under $OUT/<machine>/ and $OUT/suite.json
# (every step's exit status and seconds). Exits 1 if any step failed.
# $PYTHON picks the interpreter (default: python).
#
# It has not yet run on a GPU: the step limits are estimates for one H100/H200.
set -u

TINY=0
for arg in "$@"; do
  case "$arg" in
    --tiny) TINY=1 ;;
    *) echo "device_suite.sh: unknown argument $arg (only --tiny)" >&2; exit 2 ;;
  esac
done
if [[ -z "${OUT:-}" ]]; then
  echo "device_suite.sh: set OUT to the folder for the results, e.g. OUT=RUN/suite" >&2
  exit 2
fi
PYTHON="${PYTHON:-python}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if (( TINY )); then
  export JAX_PLATFORMS=cpu
  # The conftest.py tiny model: one block, d_model 16, N 4.
  MODEL=(--config=configs/s_contrastive.py:tiny --config.data.synthetic.dim=32
         --config.model.d_model=16 --config.model.n_layers=1 --config.model.d_state=4
         --config.head.hidden_dim=32 --config.head.out_dim=16 --config.train.batch_size=16
         --config.data.prefetch=0)
  PARITY=(-k "b2_L1_D3_N4_cNone and default_tiles")
  SCAN=(--lengths=5 --states=4 --channels=8 --tokens=10 --repeats=1 --reference=2,5,8,4
        --modes=unrolled)
  EPOCH=(--sequences=128 --payload_rows=200 --scan_share_repeats=0)
  EVAL=(--rows=3000 --dim=32 --queries=20 --nprobes=4,8 --k_factors=2)
  LIMITS=(300 300 300 300 0 300)  # a shared CPU is slow; 0: the bf16 epoch is left out
else
  MODEL=(--config=configs/s_contrastive.py)
  PARITY=()
  SCAN=(--quick)
  EPOCH=(--sequences=396000)
  EVAL=(--queries=500 --nprobes=32,64 --k_factors=2)
  LIMITS=(75 30 60 100 90 120)  # 475 s in all
fi

declare -a RESULTS=()
FAILED=0
step() {  # step NAME LIMIT COMMAND...: runs it under `timeout`, logs to $OUT/NAME.log
  local name="$1" limit="$2"
  shift 2
  (( limit > 0 )) || return 0
  local start=$SECONDS
  echo "== $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local status=$?
  local seconds=$(( SECONDS - start ))
  (( status == 0 )) || FAILED=1
  echo "   exit $status after $seconds s (log: $OUT/$name.log)"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   | /'
  RESULTS+=("{\"step\": \"$name\", \"exit_status\": $status, \"seconds\": $seconds, \"limit_s\": $limit, \"timed_out\": $( (( status == 124 || status == 137 )) && echo true || echo false )}")
}

step pallas_parity "${LIMITS[0]}" "$PYTHON" -m pytest -q -p no:cacheprovider \
  tests/test_ops_pallas_scan.py "${PARITY[@]}"
step pallas_check "${LIMITS[1]}" "$PYTHON" -m benchmarks.pallas_check --out_dir="$OUT"
step scan_bench "${LIMITS[2]}" "$PYTHON" -m benchmarks.scan_bench "${SCAN[@]}" --out_dir="$OUT"
step epoch_fp32 "${LIMITS[3]}" "$PYTHON" -m benchmarks.epoch_bench "${MODEL[@]}" "${EPOCH[@]}" \
  --name=epoch_bench_fp32 --out_dir="$OUT"
step epoch_bf16 "${LIMITS[4]}" "$PYTHON" -m benchmarks.epoch_bench "${MODEL[@]}" "${EPOCH[@]}" \
  --config.model.dtype=bfloat16 --scan_share_repeats=0 --name=epoch_bench_bf16 --out_dir="$OUT"
step eval_bench "${LIMITS[5]}" "$PYTHON" -m benchmarks.eval_bench "${EVAL[@]}" --out_dir="$OUT"

{
  echo "{\"tiny\": $( (( TINY )) && echo true || echo false ), \"seconds\": $SECONDS,"
  echo " \"load_average\": \"$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)\","
  echo " \"steps\": ["
  for i in "${!RESULTS[@]}"; do
    (( i + 1 < ${#RESULTS[@]} )) && echo "  ${RESULTS[$i]}," || echo "  ${RESULTS[$i]}"
  done
  echo "]}"
} >"$OUT/suite.json"
echo "suite: $SECONDS s; wrote $OUT/suite.json"
exit $FAILED
