#!/usr/bin/env bash
# The whole speed table in one go: training-step ablation (AdvEnt multi-level), every method in
# reference vs fast mode, evaluation at the papers' protocol, and the data pipeline up to 16
# workers, plus a torchrun smoke run. At most TOTAL_S = 570 s on one H100: each part has a time
# budget (rows that would not fit are printed as skipped) and a hard limit. Results go to $OUT
# (set by the machine that runs it) or runs/speed_table; the table is written as rows finish.
#
#   bash benchmarks/gpu_table.sh                        # GPU, papers' sizes
#   PARTS="ablation" BUDGET_ABLATE=500 bash benchmarks/gpu_table.sh   # one part, more time
#   DEVICE=cpu bash benchmarks/gpu_table.sh             # CPU, tiny sizes: checks that it all runs
set -uo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-runs/speed_table}"
mkdir -p "$OUT_DIR"
TABLE="$OUT_DIR/gpu_table.md"
DEVICE="${DEVICE:-cuda}"
: > "$TABLE"

if [ "$DEVICE" = "cpu" ]; then
    SIZES=(--source-size 64 32 --target-size 64 32 --batch-size 2 --eval-size 128 64
           --eval-label-size 256 128 --eval-batch 2)
    ITERS=(--warmup 2 --iters 3)
    LOADER=(--workers 0 1 2 --images 8 --distinct 2 --batches 4 --seconds 2 --stage-images 2)
    BUDGET_ABLATE=${BUDGET_ABLATE:-900}; BUDGET_METHODS=${BUDGET_METHODS:-300}
    BUDGET_EVAL=${BUDGET_EVAL:-400}; LIMIT_LOADER=240
else
    SIZES=()
    ITERS=(--warmup 3 --iters 10)
    LOADER=(--workers 1 2 4 8 16 --images 96 --distinct 12 --batches 16 --seconds 2.5)
    BUDGET_ABLATE=${BUDGET_ABLATE:-auto}; BUDGET_METHODS=${BUDGET_METHODS:-60}
    BUDGET_EVAL=${BUDGET_EVAL:-50}; LIMIT_LOADER=90
fi
COMPILE_BACKEND="${COMPILE_BACKEND:-inductor}"
# The ablation goes last: its compiled rows are the slowest to start, and with BUDGET_ABLATE=auto
# it gets whatever is left of TOTAL_S (a device call may last 600 s).
PARTS="${PARTS:-methods eval loader dist ablation}"
TOTAL_S=${TOTAL_S:-570}
START=$SECONDS
STEP=(python benchmarks/train_step.py --device "$DEVICE" "${SIZES[@]}" "${ITERS[@]}"
      --compile-backend "$COMPILE_BACKEND" --out "$TABLE")

{
    echo "# segda speed table"
    echo
    echo "- command: \`DEVICE=$DEVICE bash benchmarks/gpu_table.sh\`, $(date -u +%Y-%m-%dT%H:%MZ)"
    if command -v nvidia-smi > /dev/null; then
        echo "- $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
    fi
    echo "- $(python -c 'import torch; print("torch", torch.__version__)'), $(nproc) CPU cores"
} >> "$TABLE"

run() {  # run NAME SECONDS CMD...: a part that fails or overruns is reported, the rest goes on
    local name=$1 limit=$2
    shift 2
    echo "== $name" >&2
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2> "$OUT_DIR/$name.log"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo -e "\n**$name: exit code $rc** (see $name.log)\n" >> "$TABLE"
        tail -n 20 "$OUT_DIR/$name.log" >&2
    fi
}

for part in $PARTS; do
    case $part in
        ablation)
            budget=$BUDGET_ABLATE
            [ "$budget" = "auto" ] && budget=$((TOTAL_S - (SECONDS - START) - 20))
            [ "$budget" -lt 60 ] && budget=60
            run ablation $((budget + 20)) "${STEP[@]}" --ablate --no-methods \
                --methods advent:multi --budget-s "$budget" ;;
        methods) run methods $((BUDGET_METHODS + 20)) "${STEP[@]}" --budget-s "$BUDGET_METHODS" ;;
        eval) run eval $((BUDGET_EVAL + 20)) "${STEP[@]}" --eval --no-methods \
                  --budget-s "$BUDGET_EVAL" ;;
        loader) run loader "$LIMIT_LOADER" python benchmarks/loader.py "${LOADER[@]}" \
                    --out "$TABLE" ;;
        dist)  # the torchrun entry point on this machine's devices (NCCL on GPUs): a smoke run
            NPROC=$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')
            [ "$DEVICE" = "cpu" ] && NPROC=2
            echo "== dist" >&2
            timeout --signal=INT --kill-after=10 60 python -m torch.distributed.run \
                --nproc_per_node "$NPROC" -m segda train embedded/minent \
                --run-dir "$OUT_DIR/dist_run" --set run.device="$DEVICE" \
                --set run.progress=false --set optim.early_stop=4 --set optim.max_iters=10 \
                --set run.eval_max_images=8 > "$OUT_DIR/dist.log" 2>&1
            rc=$?
            { echo; echo "### torchrun smoke run: $NPROC process(es), $DEVICE, exit code $rc"
              echo; grep -E "effective batch|done:" "$OUT_DIR/dist.log" | sed 's/^/    /'
            } >> "$TABLE"
            rm -f "$OUT_DIR"/dist_run/*.pth ;;
        *) echo "unknown part $part" >&2 ;;
    esac
done

cat "$TABLE"
