#!/usr/bin/env bash
# GPU benchmark, for a CUDA machine (prepared on a CPU-only machine; see docs/results.md, "Speed").
#   bash bench/gpu.sh [DATA_DIR]
# DATA_DIR holds torchvision's MNIST layout, or gzipped files under DATA_DIR/gz/MNIST/*.gz (as a copy
# of ../shared/data/gz), which are unpacked into .gpu-data/. Installs nothing: it needs torch,
# torchvision and convtrain's dependencies already importable (PYTHONPATH is set to this checkout).
# Runs the speed issue's items 1-3 on the GPU and prints one table (bench/speed.py's goals mode):
#   - the article's script, 1 epoch, as a whole process, against convtrain's mnist.yaml (2 rounds);
#   - configs/fast_gpu.yaml (the time-to-99% recipe for one GPU) with seeds 0-4: test accuracy,
#     training time, whole process, fixed cost; `convtrain --help`;
#   - fast_gpu.yaml once more with speed.compile=reduce-overhead (CUDA graphs), its compile warm-up
#     run first and reported apart from the training time.
# Then the CPU recipe (speedrun.yaml) on the GPU, one line. Each step has its own time limit, so the
# whole script ends within 4 minutes even if one hangs.
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
timeout 20 $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  || { echo "no CUDA device usable from torch"; exit 1; }
echo "== items 1-3 on the GPU: article script vs mnist.yaml, fast_gpu.yaml x 5 seeds, then with CUDA graphs"
timeout 190 $PY bench/speed.py --device cuda --rounds 2 --recipe configs/fast_gpu.yaml --seeds 0,1,2,3,4 \
  --compiled reduce-overhead || echo "items 1-3 failed or timed out (exit $?)"
echo "== the CPU recipe (speedrun.yaml) on the GPU"
timeout 25 $PY bench/speed.py --only-fast --device cuda --fast-config configs/speedrun.yaml --seeds 0 \
  || echo "speedrun on the GPU failed or timed out (exit $?)"
date -u
