#!/usr/bin/env bash
# One-shot GPU benchmark for a machine without network: install carried wheels (.whl/) then time the loop.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest -q -x -p no:cacheprovider tests/test_generation.py 2>&1 | tail -3 || true
for cfg in "480 480 32" "256 256 16"; do
  set -- $cfg
  python3 benchmarks/generate_step.py --size $1 $2 --cutn $3 --steps 20 --warmup 3 --device cuda \
    --json "$OUT/bench_${1}_${3}.json"
done
