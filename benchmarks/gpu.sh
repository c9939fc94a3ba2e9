#!/usr/bin/env bash
# The GPU checks in one command, for a CUDA machine with torch installed (as `python3`, or $PYTHON):
#
#     bash benchmarks/gpu.sh            # writes each step's output to outputs/gpu/ (or $OUT)
#     STEPS="synth precision" bash benchmarks/gpu.sh   # only the steps named
#
# In order: the machine, the synthetic 'small' set, the CUDA tests (tests/test_cuda.py), the model's
# training step against the published model and where it spends its time, one training epoch of the project's loop against the
# published loop, the evaluation of the test split, training by precision and compilation, whole
# processes of `iivformer train` against the published main.py, and the test suite on this machine.
# Each step runs under its own time limit, so that one slow step does not cost the others.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
began=$(date +%s)

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start
    shift 2
    if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then return; fi
    start=$(date +%s)
    echo "== $name (limit $limit s): $*"
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local status=$?
    tail -n 25 "$OUT/$name.txt"
    echo "== $name: exit $status, $(( $(date +%s) - start )) s"
}

step machine 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; \
    df -h /dev/shm | tail -1; $PY -c 'import torch, numpy; print(\"torch\", torch.__version__, \"cuda\", \
    torch.version.cuda, torch.cuda.get_device_name(0), \"numpy\", numpy.__version__)'"
step synth 120 $PY -m iivformer synth --preset small
step cuda_tests 200 $PY -m pytest -p no:cacheprovider -q -s -rs tests/test_cuda.py
step model_step 60 $PY benchmarks/bench_model_step.py --device cuda --warmup 3 --repeats 20 --batch_sizes 256 1024 4096
step profile 60 $PY benchmarks/profile_step.py --device cuda
step train 120 $PY benchmarks/bench_train.py --samples 0 --repeats 2
step evaluate 90 $PY benchmarks/bench_evaluate.py --repeats 3
step precision 180 $PY benchmarks/bench_precision.py --samples 0 --epochs 2
step end_to_end 200 $PY benchmarks/bench_end_to_end.py --epochs 2 --ours "" "--precision bf16"
step test_suite 150 $PY -m pytest -p no:cacheprovider -q -n 14 -rfE --tb=line tests --continue-on-collection-errors \
    --ignore tests/test_viewer_browser.py --ignore tests/test_jupyterlab_explorer.py
echo "== all steps in $(( $(date +%s) - began )) s"
