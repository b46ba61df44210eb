#!/usr/bin/env bash
# Distributed training on one machine: tools/dist_train.sh CONFIG NUM_PROCESSES [train.py options]
# Uses NCCL on GPUs and gloo on CPU (chosen in toolbox.engine.setup.init_distributed).
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
PORT=${PORT:-29500}
cd "$(dirname "$0")/.."
exec python -m torch.distributed.run --nproc_per_node="$NPROC" --master_port="$PORT" \
    tools/train.py "$CONFIG" --launcher pytorch "$@"
