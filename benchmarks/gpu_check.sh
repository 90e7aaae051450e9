#!/usr/bin/env bash
# One-shot GPU check of the evaluation and training speed, about 6 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh            # results in $OUT (if set) or benchmarks/gpu_results/
#   PYTHON=/path/to/python bash benchmarks/gpu_check.sh
#
# Runs, each step in its own process under its own time limit, so that one failing or slow
# step loses nothing of the others (each writes NAME.log and, when it finishes, NAME.json):
#   gpu_tests     the GPU-marked tests (samplers on CUDA against the CPU, every precision)
#   eval_main     original way vs today's DDIM (K = 20, fp32) vs ddim K = 20 bf16 vs dpm++ K = 5
#                 fp32 and bf16, at the released eval batch size 64, 512 images, side by side
#   eval_compile  dpm++ K = 5 bf16 with torch.compile of the denoising step (default mode)
#   eval_graphs   the same with mode="reduce-overhead" (CUDA graphs)
#   training      training samples/s at the released batch 128, without and with caches
# Downloads nothing: the shards are synthetic and generated here, the weights random.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
RESULTS=${OUT:-benchmarks/gpu_results}
SHARDS=${SHARDS:-webdataset/benchmark_gpu}
mkdir -p "$RESULTS"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to NAME.log, report the exit status
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit} s): $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - start)) s"
    tail -n 25 "$RESULTS/$name.log"
    echo "$name $status $((SECONDS - start))" >>"$RESULTS/status.txt"
}

COMMON=(--device cuda --images 512 --batch-size 64 --workers 8 --shards "$SHARDS" --train-samples 256
        --train-batch-size 128)
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    "$PYTHON" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"
} >"$RESULTS/machine.txt" 2>&1
cat "$RESULTS/machine.txt"
rm -f "$RESULTS/status.txt"

step shards 25 "$PYTHON" -c "from common.synthetic.world import generate_dataset as g; g('$SHARDS', 'h36m', num_train=256, num_test=512, workers=16, progress=False)"
step gpu_tests 25 "$PYTHON" -m pytest tests/model/test_samplers.py -q -p no:cacheprovider -m gpu
step eval_main 100 "$PYTHON" -m benchmarks.pipeline "${COMMON[@]}" --skip training \
    --fast ddim:20:bf16 --fast dpm++:5:fp32 --fast dpm++:5:bf16 --json "$RESULTS/eval_main.json"
step eval_compile 80 "$PYTHON" -m benchmarks.pipeline "${COMMON[@]}" --skip original training \
    --fast dpm++:5:bf16:compile --json "$RESULTS/eval_compile.json"
step eval_graphs 80 "$PYTHON" -m benchmarks.pipeline "${COMMON[@]}" --skip original training \
    --fast dpm++:5:bf16:reduce-overhead --json "$RESULTS/eval_graphs.json"
step training 50 "$PYTHON" -m benchmarks.pipeline "${COMMON[@]}" --skip original today \
    --fast dpm++:5:bf16 --json "$RESULTS/training.json"
echo "=== status (name, exit code, seconds):"
cat "$RESULTS/status.txt"
