#!/usr/bin/env bash
# The GPU benchmark of issue 14, one prepared run for a machine without network: install the carried wheels (.whl/),
# then, each against nerdyrodent's loop (benchmarks/nerdyrodent.py) and the models alone:
# (warm-up 10 steps: vqclip reads its losses back every 10 steps on a GPU, as it does in use)
#   256²/32 cutouts, one image (target <= 25 ms/step)      480²/32 cutouts, one image (target <= 50 ms/step)
#   256²/32 cutouts, 8 jobs grouped (target >= 4x the baseline's images/hour)
#   512²/32 cutouts, one image: peak memory (target <= 8 GB)
# Results: $OUT/bench_<size>_<cutn>.json; copy them to docs/ with the device name.
set -euo pipefail
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__)"
python3 -m pytest -q -x -p no:cacheprovider tests/test_grouping.py -k "not kill" 2>&1 | tail -3 || true
python3 benchmarks/generate_step.py --size 256 256 --cutn 32 --steps 20 --warmup 10 --device cuda --group 8 \
  --group-steps 10 --json "$OUT/bench_256_32.json"
python3 benchmarks/generate_step.py --size 480 480 --cutn 32 --steps 20 --warmup 10 --device cuda \
  --json "$OUT/bench_480_32.json"
python3 benchmarks/generate_step.py --size 512 512 --cutn 32 --steps 10 --warmup 10 --device cuda --repeats 1 \
  --arms vqclip --json "$OUT/bench_512_32.json"
