#!/usr/bin/env bash
# Trains LeNet on CIFAR-10 with every learning rule for the same budget, then writes the
# `ssa report` table and the `ssa plot` figure of the runs.
#
# Usage: scripts/compare_cifar10.sh [EPOCHS] [OUT_DIR]
#   EPOCHS   epochs per rule (default 10). Estimate for 2 idle CPU cores: one LeNet epoch of
#            50,000 images takes 1 to 2 minutes per rule, so the default needs about two hours.
#   OUT_DIR  where the run directories, report.md and compare.png go (default runs/compare)
# Environment: DATA_DIR (default ../shared/data/cifar-10-batches-bin), RULES (default all
# eight), SSA (the binary; default target/release/ssa, built if missing), EXTRA (more --set
# arguments for every run, for example EXTRA="--set data.train_limit=10000").
set -euo pipefail
cd "$(dirname "$0")/.."

epochs=${1:-10}
out=${2:-runs/compare}
data_dir=${DATA_DIR:-../shared/data/cifar-10-batches-bin}
rules=${RULES:-"bp ssa usf brsf svd_bp fa dfa drtp"}
ssa=${SSA:-target/release/ssa}
[ -x "$ssa" ] || cargo build --release --locked
mkdir -p "$out"

runs=()
for rule in $rules; do
  if ls -d "$out/$rule"/*/checkpoints/last.safetensors >/dev/null 2>&1; then
    echo "== $rule: already trained in $out/$rule, skipping (delete it to train again)"
  else
    echo "== $rule: training $epochs epochs ($(date -u +%H:%M:%S) UTC)"
    # shellcheck disable=SC2086
    "$ssa" train --config configs/cifar10_lenet.toml --data-dir "$data_dir" --out "$out/$rule" \
      --set "method.rule=\"$rule\"" --set "experiment.name=\"lenet_$rule\"" \
      --set "train.epochs=$epochs" ${EXTRA:-} 2>&1 | grep -v "^\s*$" | tail -n 3
  fi
  runs+=("$(ls -d "$out/$rule"/*/ | tail -n 1)")
done

"$ssa" report "${runs[@]}" | tee "$out/report.md"
"$ssa" plot "${runs[@]}" --out "$out/compare.png"
"$ssa" plot "${runs[@]}" --out "$out/compare.svg"
echo "report: $out/report.md  plot: $out/compare.png"
