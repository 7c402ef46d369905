#!/usr/bin/env bash
# GPU benchmark, for a CUDA machine (prepared here, where no GPU is available; see README).
#   bash bench/gpu.sh [DATA_DIR]
# DATA_DIR holds torchvision's MNIST layout, or gzipped files under DATA_DIR/gz/MNIST/*.gz (as a copy
# of ../shared/data/gz), which are unpacked into .gpu-data/. Prints: the article method vs
# convtrain on the GPU (3 alternating epochs), then configs/fast_gpu.yaml's time to 99.0%.
# Finishes in well under 5 minutes on one modern GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${CONVTRAIN_DATA_ROOT:-data}}
if [ ! -f "$DATA/MNIST/raw/train-images-idx3-ubyte" ] && [ -d "$DATA/gz/MNIST" ]; then
  mkdir -p .gpu-data/MNIST/raw
  for f in "$DATA"/gz/MNIST/*.gz; do gunzip -c "$f" > ".gpu-data/MNIST/raw/$(basename "${f%.gz}")"; done
  DATA=.gpu-data
fi
export CONVTRAIN_DATA_ROOT="$DATA" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
$PY bench/speed.py --device cuda --epochs 3 --fast-config configs/fast_gpu.yaml
