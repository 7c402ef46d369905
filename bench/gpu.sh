#!/usr/bin/env bash
# GPU benchmark, for a CUDA machine (prepared on a CPU-only machine; see docs/results.md, "Speed").
#   bash bench/gpu.sh [DATA_DIR]
# DATA_DIR holds torchvision's MNIST layout, or gzipped files under DATA_DIR/gz/MNIST/*.gz (as a copy
# of ../shared/data/gz), which are unpacked into .gpu-data/. Installs nothing: it needs the torch,
# torchvision and convtrain already importable (PYTHONPATH is set to this checkout). Prints:
#   1. the article config's seconds per epoch vs the article's script on the same GPU (3 alternating epochs);
#   2. configs/fast_gpu.yaml's time to 99.0% test accuracy;
#   3. configs/speedrun.yaml on the GPU (seeds 0, 1, 2), then once more with speed.compile=reduce-overhead
#      (CUDA graphs).
# Each step has its own time limit, so the whole script ends within 4 minutes even if one hangs.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${CONVTRAIN_DATA_ROOT:-data}}
if [ ! -f "$DATA/MNIST/raw/train-images-idx3-ubyte" ] && [ -d "$DATA/gz/MNIST" ]; then
  mkdir -p .gpu-data/MNIST/raw
  for f in "$DATA"/gz/MNIST/*.gz; do gunzip -c "$f" > ".gpu-data/MNIST/raw/$(basename "${f%.gz}")"; done
  DATA=.gpu-data
fi
export CONVTRAIN_DATA_ROOT="$DATA" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
echo "== 1+2: article config vs the article's script (3 alternating epochs), then fast_gpu.yaml's time to 99%"
timeout 120 $PY bench/speed.py --device cuda --epochs 3 --fast-config configs/fast_gpu.yaml || echo "step 1+2 failed or timed out (exit $?)"
echo "== 3: the speedrun recipe on the GPU"
timeout 50 $PY bench/speed.py --only-fast --device cuda --fast-config configs/speedrun.yaml --seeds 0,1,2 \
  || echo "step 3 failed or timed out (exit $?)"
timeout 50 $PY bench/speed.py --only-fast --device cuda --fast-config configs/speedrun.yaml --seeds 0 \
  --fast-set speed.compile=reduce-overhead || echo "step 3 (reduce-overhead) failed or timed out (exit $?)"
date -u
