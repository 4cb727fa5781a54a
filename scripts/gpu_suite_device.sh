#!/usr/bin/env bash
# The lent device's command for the GPU suite (issue 30): install the wheels carried in .whl (what the
# device image lacks: `make gpu-wheels` downloads them here), then run scripts/gpu_suite.py into $OUT.
#   device run: command "bash scripts/gpu_suite_device.sh", carry [".whl"], timeout_s 590
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONUNBUFFERED=1 python3 scripts/gpu_suite.py --out "${OUT:-gpu-suite-out}" --work /tmp/gpu_suite_work "$@" 2>&1 | tee "${OUT:-/tmp}/gpu_suite.log"
