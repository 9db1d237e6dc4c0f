#!/usr/bin/env bash
# Times our training steps with `ssa bench`, then the same VGG-13 steps in PyTorch with
# scripts/torch_reference.py, back to back on the same machine, and writes both tables to one
# file. Run it on an otherwise idle machine.
#
# Usage: scripts/bench_vs_torch.sh [OUT]   (default bench-results.md)
#
# Environment:
#   DATA_DIR  CIFAR-10 binary directory (default ../shared/data/cifar-10-batches-bin).
#   MODELS    models to time (default smallconv,resnet32,vgg13).
#   STEPS     timed steps per case (default 2).
#   SSA       the binary (default target/release/ssa, built if missing).
#   PYTHON    an interpreter with torch installed (default python3). Without torch the PyTorch
#             part is skipped with a message.
set -euo pipefail

case ${1:-} in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
cd "$(dirname "$0")/.."

out=${1:-bench-results.md}
data_dir=${DATA_DIR:-../shared/data/cifar-10-batches-bin}
ssa=${SSA:-target/release/ssa}
python=${PYTHON:-python3}
[ -x "$ssa" ] || cargo build --release --locked

{
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores."
  echo
  echo "\$ ssa bench --data-dir $data_dir --models ${MODELS:-smallconv,resnet32,vgg13} --steps ${STEPS:-2}"
  echo
  "$ssa" bench --data-dir "$data_dir" --models "${MODELS:-smallconv,resnet32,vgg13}" --steps "${STEPS:-2}"
  echo
  if "$python" -c "import torch" 2>/dev/null; then
    echo "\$ $python scripts/torch_reference.py --threads 2"
    echo
    "$python" scripts/torch_reference.py --threads 2
  else
    echo "PyTorch part skipped: $python cannot import torch (see scripts/torch_reference.py)."
  fi
} | tee "$out"
