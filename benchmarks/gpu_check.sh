#!/usr/bin/env bash
# The prepared run for a lent NVIDIA GPU (H100 / H200: torch with CUDA, Triton, onnxruntime for CPU, no
# internet). In at most --budget-s seconds (default 480, 8 minutes) it runs, each step under its own timeout:
#   1. install: pip install --no-deps -e . and the wheels it lacks from --wheels DIR (no index is reached)
#   2. pytest -m gpu                                  -> benchmarks/results/gpu_pytest_cuda.xml
#   3. benchmarks/kernels.py --gemm4096: Triton and CUDA C++ BSR vs cuBLAS and torch bsr_dense_mm, fp16,
#      4096^3, blocks 32 / 64, 50-95% block sparsity      -> benchmarks/results/kernels_cuda.json
#   4. ResNet-20 on CIFAR-10 (the JPEG copy, 10,000 images), compressed, then a 16-reference audit, seconds per
#      reference model one by one vs batched              -> benchmarks/results/audit_scale_resnet20_cuda.json
#   5. the 64-reference MLP audit (one by one at 8, batched at 64) -> benchmarks/results/audit_scale_cuda.json
# and benchmarks/results/gpu_check_cuda.json: the device (Runtime.describe()), each step's command, exit
# status, wall time and result file. Without CUDA, or with a module missing, it stops first and writes nothing.
#
# Preparing it (on a machine with internet; the wheels are not committed, they travel with the run):
#   pip download --no-deps -d benchmarks/wheels torch-pruning opacus onnxruntime-extensions
#   device run: carry ["benchmarks/wheels"], command
#     bash benchmarks/gpu_check.sh --wheels benchmarks/wheels --data shared/data/cifar10-jpeg.tar.gz
#   `bash benchmarks/gpu_check.sh --dry-run` lists the steps with their commands and timeouts, runs nothing.
set -euo pipefail

usage() {
    echo "usage: benchmarks/gpu_check.sh [--dry-run] [--wheels DIR] [--data CIFAR10_JPEG_TARBALL] [--python PY]" \
        "[--budget-s SECONDS] [--skip-install]" >&2
}

DRY_RUN=0
WHEELS=""
DATA="shared/data/cifar10-jpeg.tar.gz"
PY="${PYTHON:-python3}"
BUDGET=480
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --wheels) [ $# -ge 2 ] || { usage; exit 2; }; WHEELS="$2"; shift 2 ;;
        --data) [ $# -ge 2 ] || { usage; exit 2; }; DATA="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || { usage; exit 2; }; PY="$2"; shift 2 ;;
        --budget-s) [ $# -ge 2 ] || { usage; exit 2; }; BUDGET="$2"; shift 2 ;;
        --skip-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument: $1" >&2; usage; exit 2 ;;
    esac
done
case "$BUDGET" in
    ''|*[!0-9]*) echo "gpu_check.sh: --budget-s takes whole seconds, got: $BUDGET" >&2; exit 2 ;;
esac
if [ -n "$WHEELS" ] && [ "$DRY_RUN" = 0 ] && [ ! -d "$WHEELS" ]; then
    echo "gpu_check.sh: --wheels $WHEELS is not a directory" >&2
    exit 2
fi

cd "$(dirname "$0")/.."
RESULTS=benchmarks/results
STEPS_LOG=""  # name|rc|wall_s|timeout_s|result file, one line a step
CMD=()
export EDGEPRUNE_NO_PROGRESS=1

# name, timeout (s), result file, command...
STEP_NAMES=(pytest-gpu kernels resnet20-audit16 mlp-audit64)
STEP_TIMEOUTS=(60 110 200 90)
STEP_RESULTS=("$RESULTS/gpu_pytest_cuda.xml" "$RESULTS/kernels_cuda.json" "$RESULTS/audit_scale_resnet20_cuda.json"
              "$RESULTS/audit_scale_cuda.json")
step_command() {  # sets CMD, an array: no argument is ever re-read by a shell
    case "$1" in
        pytest-gpu) CMD=("$PY" -m pytest -q -m gpu -rs tests "--junitxml=$RESULTS/gpu_pytest_cuda.xml") ;;
        kernels) CMD=("$PY" benchmarks/kernels.py --gemm4096 --out "$RESULTS/kernels_cuda.json") ;;
        resnet20-audit16) CMD=("$PY" benchmarks/audit_scale.py --model resnet20 --data "cifar10-jpeg:$DATA:10000"
            --device cuda --epochs 8 --finetune-epochs 2 --one 16 --ensemble 16 --ensemble-size 16 --ray ""
            --out "$RESULTS/audit_scale_resnet20_cuda.json") ;;
        mlp-audit64) CMD=("$PY" benchmarks/audit_scale.py --device cuda --one 8 --ensemble 64 --ensemble-size 64
            --ray "" --out "$RESULTS/audit_scale_cuda.json") ;;
    esac
}

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check.sh dry run: budget ${BUDGET}s; steps (timeout, command):"
    if [ "$INSTALL" = 1 ]; then
        echo "  install (60s): $PY -m pip install --no-deps --no-index -e .${WHEELS:+ and $WHEELS/*.whl}"
    fi
    echo "  module check: every module the steps import (one missing: stop, nothing written)"
    echo "  device check: $PY -c 'edgeprune.runtime.resolve(\"cuda\")' (no CUDA: stop, nothing written)"
    for i in "${!STEP_NAMES[@]}"; do
        step_command "${STEP_NAMES[$i]}"
        echo "  ${STEP_NAMES[$i]} (${STEP_TIMEOUTS[$i]}s): $(printf '%q ' "${CMD[@]}")-> ${STEP_RESULTS[$i]}"
    done
    echo "  summary: $RESULTS/gpu_check_cuda.json"
    exit 0
fi

START=$SECONDS
remaining() { echo $(( BUDGET - (SECONDS - START) )); }

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this tree, installed or not
if [ "$INSTALL" = 1 ]; then
    if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" > /dev/null; then
        timeout 60 "$PY" -m pip install -q --no-deps --no-index "$WHEELS"/*.whl
    fi
    if ! timeout 60 "$PY" -m pip install -q --no-deps --no-index --no-build-isolation -e .; then
        echo "gpu_check.sh: pip install -e . failed (no setuptools?); running from PYTHONPATH=$PWD" >&2
    fi
fi

# every module the steps import, before any device time goes into them
MODULES="torch numpy onnx onnxscript onnxruntime onnxruntime_extensions scipy torch_pruning opacus typer rich yaml
safetensors sklearn matplotlib PIL skimage pytest triton edgeprune"
# shellcheck disable=SC2086  # one word a module
if ! MISSING=$("$PY" -c 'import importlib.util, sys
missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
print(" ".join(missing))
sys.exit(1 if missing else 0)' $MODULES); then
    echo "gpu_check.sh: missing Python modules: $MISSING (carry their wheels: --wheels DIR); nothing run" >&2
    exit 4
fi

if ! DEVICE_JSON=$("$PY" -c 'import json; from edgeprune.runtime import resolve; print(json.dumps(resolve("cuda").describe()))' 2>/dev/null); then
    echo "gpu_check.sh: no CUDA device here; nothing run, nothing written" >&2
    exit 3
fi
echo "device: $DEVICE_JSON"
mkdir -p "$RESULTS"

for i in "${!STEP_NAMES[@]}"; do
    name=${STEP_NAMES[$i]}
    left=$(remaining)
    limit=${STEP_TIMEOUTS[$i]}
    if [ "$left" -lt "$limit" ]; then limit=$left; fi
    if [ "$limit" -le 5 ]; then
        STEPS_LOG+="$name|skipped: budget spent|0|0|${STEP_RESULTS[$i]}"$'\n'
        continue
    fi
    step_command "$name"
    echo "== $name (${limit}s): $(printf '%q ' "${CMD[@]}")"
    t0=$SECONDS
    rc=0
    timeout --kill-after=5 "$limit" "${CMD[@]}" || rc=$?
    STEPS_LOG+="$name|$rc|$(( SECONDS - t0 ))|$limit|${STEP_RESULTS[$i]}"$'\n'
done

STEPS_LOG="$STEPS_LOG" DEVICE_JSON="$DEVICE_JSON" BUDGET="$BUDGET" "$PY" - <<'EOF'
import json
import os
from pathlib import Path

from edgeprune.bench.machine import machine

steps = []
for line in os.environ["STEPS_LOG"].strip().splitlines():
    name, rc, wall, limit, result = line.split("|")
    status = rc if not rc.lstrip("-").isdigit() else int(rc)
    steps.append({"step": name, "exit_status": status, "wall_s": int(wall), "timeout_s": int(limit),
                  "timed_out": status in (124, 137), "result": result if Path(result).is_file() else None})
doc = {"benchmark": "gpu_check", "runtime": json.loads(os.environ["DEVICE_JSON"]), "machine": machine(),
       "budget_s": int(os.environ["BUDGET"]), "steps": steps}
out = Path("benchmarks/results/gpu_check_cuda.json")
tmp = out.with_suffix(".json.tmp")
tmp.write_text(json.dumps(doc, indent=2) + "\n")
tmp.replace(out)
print(f"wrote {out}")
EOF
