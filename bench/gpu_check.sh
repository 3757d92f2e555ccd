#!/usr/bin/env bash
# The single prepared GPU check of the performance issue (one H100, well inside 10 minutes).
#
#   bash bench/gpu_check.sh                    # results in $OUT (or bench/results/)
#   PUMLC_BENCH_COMPILE=1 bash bench/gpu_check.sh   # + torch.compile rows, if time is left
#
# Runs from the source tree with torch, torchvision, timm, numpy, Pillow and scikit-image only
# (no ray, optuna, pycocotools, pytest), in this order, each stage in its own process with a
# time limit taken from one overall budget (PUMLC_BENCH_BUDGET_S, default 540 s):
#   1. gpu_parity.py  fast vs literal LGC on CUDA (fp32 / bf16 / fp16, NCHW / channels_last)
#   2. bench_step.py  published vs our step at 448 px, batch 35, 80 classes (+ no-LGC ceiling)
#   3. bench_data.py  JPEG files -> loaders (PIL in 8 processes / nvJPEG on the GPU) -> our step;
#                     evaluation images/s
#   4. sync_audit.py  every host<->GPU synchronisation inside our step and the device transforms
#                     (file:line), from torch.cuda.set_sync_debug_mode('warn')
#   5. bench_step.py  published vs ours again with cudnn.benchmark on (information)
#   6. (PUMLC_BENCH_COMPILE=1) torch.compile of our step, cold cache, then a second process
#   7. report.py      the final table against the targets (>= 3x, memory no higher, e2e >= 0.85)
# Exits 2 without CUDA, 1 if any stage failed, 0 otherwise (a missed target is reported, not an
# error). Expected duration on an H100 without compile: about 3-4 minutes.
# PUMLC_BENCH_DRY_CPU=1 runs the same stages on the CPU at toy sizes (ResNet-50, 64 px): a test of
# this script only.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
RES="${OUT:-$REPO/bench/results}"
mkdir -p "$RES"
PY="${PYTHON:-$(command -v python || command -v python3)}"
BUDGET="${PUMLC_BENCH_BUDGET_S:-540}"
START=$(date +%s)
FAILED=()

log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$RES/gpu_check.log"; }

PARITY_ARGS=(); STEP_ARGS=(); DATA_ARGS=()
if [ "${PUMLC_BENCH_DRY_CPU:-0}" = "1" ]; then
    PARITY_ARGS=(--device cpu)
    STEP_ARGS=(--device cpu --model resnet50 --size 64 --batch 2 --steps 1 --warmup 1 --threads 1)
    DATA_ARGS=(--device cpu --model resnet50 --size 64 --batch 2 --images 12 --batches 1 --eval-images 4 --threads 1)
fi

PUMLC_BENCH_DRY_CPU="${PUMLC_BENCH_DRY_CPU:-0}" "$PY" - <<'EOF' 2>&1 | tee "$RES/environment.txt"
import os, sys, torch
if not torch.cuda.is_available() and os.environ["PUMLC_BENCH_DRY_CPU"] == "1":
    print("DRY RUN on the CPU (PUMLC_BENCH_DRY_CPU=1): toy sizes, numbers mean nothing")
    sys.exit(0)
if not torch.cuda.is_available():
    print("ERROR: CUDA is not available (torch %s, CUDA build %s): this check needs a GPU"
          % (torch.__version__, torch.version.cuda), file=sys.stderr)
    sys.exit(2)
p = torch.cuda.get_device_properties(0)
print(f"GPU {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
for mod in ("torchvision", "timm", "numpy", "PIL", "skimage"):
    m = __import__(mod)
    print(f"{mod} {getattr(m, '__version__', '?')}")
EOF
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    echo "gpu_check: no CUDA device, nothing measured" >&2
    exit 2
fi
{ nproc; df -h /dev/shm 2>/dev/null | tail -1; nvidia-smi -L 2>/dev/null; } | sed 's/^/  /' \
    | tee -a "$RES/environment.txt"

# run NAME LIMIT_S CMD...: one stage, its output in $RES/NAME.log, its limit cut to the budget.
# The limits guard a GPU lease's device time; a dry run (a correctness test of this script on a
# CPU that may be shared and slow) runs every stage to its end instead.
run() {
    local name=$1 limit=$2; shift 2
    if [ "${PUMLC_BENCH_DRY_CPU:-0}" = "1" ]; then
        log "start $name (dry run: no time limit)"
        "$@" 2>&1 | tee "$RES/$name.log"
        local rc=${PIPESTATUS[0]}
        if [ "$rc" -ne 0 ]; then log "FAILED $name (rc $rc)"; FAILED+=("$name"); else log "done $name"; fi
        return "$rc"
    fi
    local left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 30 ]; then log "skip $name: budget spent"; FAILED+=("$name(skipped)"); return 1; fi
    [ "$limit" -gt "$left" ] && limit=$left
    log "start $name (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$RES/$name.log"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then log "FAILED $name (rc $rc)"; FAILED+=("$name"); else log "done $name"; fi
    return "$rc"
}

run parity 120 "$PY" bench/gpu_parity.py "${PARITY_ARGS[@]}" --json "$RES/parity.json"
run step 200 "$PY" bench/bench_step.py "${STEP_ARGS[@]}" --json "$RES/step.json" \
    --markdown "$RES/step.md"
run data 220 "$PY" bench/bench_data.py "${DATA_ARGS[@]}" --json "$RES/data.json" \
    --markdown "$RES/data.md"
if [ "${PUMLC_BENCH_DRY_CPU:-0}" != "1" ]; then
    run sync_audit 90 "$PY" bench/sync_audit.py --json "$RES/sync_audit.json"
fi
run step_cudnn_benchmark 100 "$PY" bench/bench_step.py "${STEP_ARGS[@]}" --cudnn-benchmark \
    --paths published,ours --no-parity --json "$RES/step_cudnn_benchmark.json"
if [ "${PUMLC_BENCH_COMPILE:-0}" = "1" ]; then
    CACHE="$(mktemp -d /tmp/pumlc_inductor_XXXXXX)"     # cold; not under $RES (large)
    run compile 600 "$PY" bench/bench_step.py "${STEP_ARGS[@]}" --paths ours,ours_compiled --compile \
        --compile-second-process --no-parity --steps 10 --warmup 3 \
        --compile-cache "$CACHE" --json "$RES/step_compile.json"
    rm -rf "$CACHE"
fi
"$PY" bench/report.py "$RES" 2>&1 | tee "$RES/summary.txt"
log "total $(( $(date +%s) - START )) s"
if [ "${#FAILED[@]}" -ne 0 ]; then
    log "FAILED stages: ${FAILED[*]}"
    exit 1
fi
exit 0
