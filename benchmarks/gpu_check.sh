#!/usr/bin/env bash
# The one GPU check: every test, run and benchmark the GPU path needs, in at most 8 minutes, each part logged.
#
#   OUT=/path/to/logs bash benchmarks/gpu_check.sh                   # on a machine with CuPy and a GPU
#   OUT=/tmp/check BACKEND=numpy TINY=1 bash benchmarks/gpu_check.sh # the same parts on NumPy, tiny (the CPU test)
#
# Parts, in order, each under its own `timeout` (seconds below) and run whatever the previous ones did:
#   gpu_tests     the GPU tests: every test whose id says cupy, gpu or nvrtc (-rs lists any skip)
#   full_suite    the whole suite with -n 8 (pytest-xdist; without it, one process)
#   main_eager    the main job, examples/mnist_mlp.py, 3 epochs on Fashion-MNIST
#   main_graph    the same with --cuda-graph
#   bench_step    bench_step.py at batches 64, 1024, 4096 with the --cuda-graph column
#   bench_sgemm   bench_sgemm.py: the graph's SGEMM variants per GEMM shape against cupy.matmul
#   bench_dcgan   bench_dcgan_step.py (its CuPy table has the float32 and the --tf32 columns)
#   bench_conv    bench_conv.py --subpixel
#   dcgan         examples/dcgan.py, 1 epoch on Fashion-MNIST
# Each writes $OUT/<part>.log; $OUT/summary.txt gets each part's exit code and seconds, then its figures
# (table rows, epoch lines, final losses). Runs write under $OUT/runs only. Nothing is installed: the machine
# may have no network. Data: the Fashion-MNIST IDX files from $SCRATCHGAN_TEST_DATASETS/fashion-mnist,
# else shared/datasets or ../shared/datasets beside the checkout; without them the main job and dcgan train
# on the MNIST digits bundled with the package (said in the summary).
# Environment: OUT (required), BACKEND (cupy), TINY (1: tiny sizes, for the CPU test), PYTHON (python).
set -u
if [ -z "${OUT:-}" ]; then
    echo "gpu_check.sh: set OUT to the folder for the logs (OUT=/path bash benchmarks/gpu_check.sh)" >&2
    exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
BACKEND=${BACKEND:-cupy}
TINY=${TINY:-0}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT/runs" || { echo "gpu_check.sh: cannot create $OUT/runs" >&2; exit 2; }
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
cd "$REPO" || exit 2

# ---------------------------------------------------------------------------------------------- the data
DATA=""
for root in "${SCRATCHGAN_TEST_DATASETS:-}" "$REPO/shared/datasets" "$REPO/../shared/datasets"; do
    if [ -n "$root" ] && [ -f "$root/fashion-mnist/train-images-idx3-ubyte.gz" ]; then
        DATA=$(cd "$root" && pwd)
        break
    fi
done
if [ -n "$DATA" ]; then
    export SCRATCHGAN_TEST_DATASETS="$DATA"
    DATASET=(--dataset fashion-mnist --data-dir "$DATA/fashion-mnist")
    DATA_NOTE="Fashion-MNIST from $DATA/fashion-mnist"
else
    DATASET=(--dataset mnist-bundled)
    DATA_NOTE="no Fashion-MNIST found (set SCRATCHGAN_TEST_DATASETS): the bundled MNIST test digits"
fi

# ------------------------------------------------------------------------------------------- the sizes
if [ "$TINY" = 1 ]; then
    GPU_TESTS=(tests/fast/test_gpu_rng.py -k "cupy or gpu or nvrtc or states")
    SUITE=(tests/fast/test_gpu_rng.py)
    MLP=(--limit 128 --batch-size 32 --g-hidden 16,32 --d-hidden 32,16 --latent-dim 8)
    STEP=(--batches 64 --reps 1 --steps 2 --warmup 1)
    SGEMM=(--quick)
    DCGAN_STEP=(--quick --no-torch)
    CONV=(--quick --no-torch)
    DCGAN=(--limit 32 --batch-size 16 --g-width 8 --d-width 8)
else
    GPU_TESTS=(tests -k "cupy or gpu or nvrtc")
    SUITE=(tests)
    MLP=()
    STEP=(--batches 64,1024,4096 --reps 1 --steps 50 --warmup 10)
    SGEMM=(--batches 64,1024,4096 --reps 30)
    DCGAN_STEP=(--reps 1 --steps 10)
    CONV=(--rounds 1)
    DCGAN=()
fi
if "$PYTHON" -c "import xdist" 2>/dev/null; then
    WORKERS=(-n "$([ "$TINY" = 1 ] && echo 2 || echo 8)")
else
    WORKERS=()
fi

# --------------------------------------------------------------------------------------------- a part
# part NAME SECONDS COMMAND...: the command under `timeout`, its output in $OUT/NAME.log, a summary line
part() {
    local name=$1 seconds=$2
    shift 2
    local log="$OUT/$name.log" start end code
    start=$(date +%s)
    { printf '+'; printf ' %q' "$@"; printf '\n\n'; } > "$log"
    timeout --kill-after=5 "$seconds" "$@" >> "$log" 2>&1 < /dev/null
    code=$?
    end=$(date +%s)
    [ "$code" = 124 ] && echo "gpu_check.sh: $name stopped after its $seconds s" >> "$log"
    echo "$name: exit $code, $((end - start)) s (limit $seconds s)" >> "$SUMMARY"
}

{
    echo "# gpu_check.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), backend $BACKEND, tiny $TINY, $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no git")"
    echo "# data: $DATA_NOTE"
    echo "# $("$PYTHON" -c 'import platform, numpy; print("python", platform.python_version(), "numpy", numpy.__version__)' 2>&1)"
    "$PYTHON" -c 'import cupy; d = cupy.cuda.runtime.getDeviceProperties(0); print("# cupy", cupy.__version__, "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), (d["name"].decode() if isinstance(d["name"], bytes) else d["name"]))' 2>/dev/null \
        || echo "# cupy: not importable or no GPU"
    "$PYTHON" -c 'import torch; print("# torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || echo "# torch: not installed"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/# nvidia-smi: /'
} > "$SUMMARY"

RUN_FLAGS=(--backend "$BACKEND" "${DATASET[@]}" --epochs 3 --no-progress --sample-every 0 "${MLP[@]}")
part gpu_tests 45 "$PYTHON" -m pytest -q -rs -p no:cacheprovider "${GPU_TESTS[@]}"
part full_suite 120 "$PYTHON" -m pytest -q -p no:cacheprovider "${WORKERS[@]}" "${SUITE[@]}"
part main_eager 45 "$PYTHON" examples/mnist_mlp.py "${RUN_FLAGS[@]}" --out "$OUT/runs/main_eager"
part main_graph 45 "$PYTHON" examples/mnist_mlp.py "${RUN_FLAGS[@]}" --cuda-graph --out "$OUT/runs/main_graph"
part bench_step 90 "$PYTHON" benchmarks/bench_step.py --backend "$BACKEND" --cuda-graph "${STEP[@]}"
part bench_sgemm 30 "$PYTHON" benchmarks/bench_sgemm.py --backend "$BACKEND" "${SGEMM[@]}"
part bench_dcgan 45 "$PYTHON" benchmarks/bench_dcgan_step.py --backend "$BACKEND" "${DCGAN_STEP[@]}"
part bench_conv 30 "$PYTHON" benchmarks/bench_conv.py --backend "$BACKEND" --subpixel "${CONV[@]}"
part dcgan 30 "$PYTHON" examples/dcgan.py --backend "$BACKEND" "${DATASET[@]}" --epochs 1 --no-progress \
    --sample-every 0 "${DCGAN[@]}" --out "$OUT/runs/dcgan"

# ------------------------------------------------------------------------------------------ the figures
{
    echo
    echo "## figures"
    for name in gpu_tests full_suite; do
        echo "$name: $(grep -E '(passed|failed|error|skipped|no tests ran)' "$OUT/$name.log" | tail -n 1)"
    done
    for name in main_eager main_graph dcgan; do
        echo "$name:"
        grep -E '^epoch [0-9]+/[0-9]+ done' "$OUT/$name.log" | sed 's/^/  /'
        metrics="$OUT/runs/$name/metrics.csv"
        [ -f "$metrics" ] && echo "  final: $(head -n 1 "$metrics") = $(tail -n 1 "$metrics")"
        grep -vE '^(\+ |$|epoch )' "$OUT/$name.log" | tail -n 1 | sed 's/^/  last line: /'
    done
    for name in bench_step bench_sgemm bench_dcgan bench_conv; do
        echo "$name:"
        grep -E '^(\| |## |step total|# |layer |[DG][0-9] |total )' "$OUT/$name.log" | sed 's/^/  /'
    done
} >> "$SUMMARY"
echo "gpu_check.sh: logs and $SUMMARY in $OUT"
