#!/usr/bin/env bash
# The whole GPU check of issue 4 in one device call (see docs/benchmarks.md, "On a GPU").
# Run from the repository root on the lent GPU machine, after the four .ortcN parts were copied
# to /tmp/ortstore (only needed for the ort-cuda rows); results land in $OUT.
set -euo pipefail
out=${OUT:-/tmp/codenn-gpu}
mkdir -p "$out"
python3 -m pip install --no-deps --no-build-isolation -q -e . >"$out/install.log" 2>&1 || {
  echo "editable install failed; using PYTHONPATH" >>"$out/install.log"
  export PYTHONPATH=sdk:plugins:adapters${PYTHONPATH:+:$PYTHONPATH}
}
if [ -d /tmp/ortstore ]; then  # onnxruntime-gpu, brought over in parts (../shared/device/use-ort-gpu.sh)
  mkdir -p /tmp/ortsite
  [ -f /tmp/ortsite/onnxruntime/__init__.py ] || cat /tmp/ortstore/part* | xz -d -T0 | tar x -C /tmp/ortsite
  export PYTHONPATH=/tmp/ortsite${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import onnxruntime as o, torch; print(torch.__version__, o.__version__, o.get_available_providers())' \
  | tee -a "$out/gpu.txt"
python3 -m pytest -q -m gpu tests/test_runtimes.py -p no:cacheprovider 2>&1 | tail -15 | tee "$out/gpu-tests.txt" || true
python3 benchmarks/runtime.py --source random --input-size 224 --repeats 300 --budget 3 \
  --out "$out/runtime-gpu-224.json" 2>&1 | tail -60 | tee "$out/runtime-gpu-224.log"
