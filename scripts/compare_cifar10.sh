#!/usr/bin/env bash
# Trains LeNet on CIFAR-10 with every learning rule for the same budget, then writes the
# `ssa report` table and the `ssa plot` figure of the runs.
#
# Usage: scripts/compare_cifar10.sh [EPOCHS] [OUT_DIR]
#   EPOCHS   epochs per rule (default 5). One LeNet epoch of 50,000 images took 1 to 3.5
#            minutes per rule on 2 shared cores (ssa the slowest), and the default 105 minutes
#            for the eight rules (docs/results.md).
#   OUT_DIR  where the run directories, report.md and compare.png go (default runs/compare)
# A rule whose run in OUT_DIR has EPOCHS epochs or more is skipped, and an unfinished one (after
# Ctrl-C, say) is resumed, so running the script again completes the comparison.
#
# Environment:
#   DATA_DIR      CIFAR-10 binary directory. Unset, the config's data/cifar-10-batches-bin is
#                 used and downloaded if missing.
#   RULES         rules to train (default: all eight).
#   SSA           the binary (default target/release/ssa, built if missing).
#   EXTRA         more --set arguments for every run, e.g. EXTRA="--set data.train_limit=10000".
#   SSA_EXTRA, SVD_BP_EXTRA
#                 more --set arguments for ssa or svd_bp alone.
#
# The config retracts U and V every 10 steps (method.retract_every), a key that only the SVD
# rules ssa and svd_bp take, so the script sets it to 0 for the dense rules. Without it both
# SVD rules diverged within the first epoch on full CIFAR-10 (docs/tuning.md).
set -euo pipefail

case ${1:-} in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
cd "$(dirname "$0")/.."
epochs=${1:-5}
if ! [[ $epochs =~ ^[1-9][0-9]*$ ]]; then
  echo "invalid EPOCHS '$epochs': expected a positive integer (see --help)" >&2
  exit 2
fi
out=${2:-runs/compare}
data_args=()
[ -n "${DATA_DIR:-}" ] && data_args=(--data-dir "$DATA_DIR")
rules=${RULES:-"bp ssa usf brsf svd_bp fa dfa drtp"}
ssa=${SSA:-target/release/ssa}
[ -x "$ssa" ] || cargo build --release --locked
mkdir -p "$out"

# Prints the newest run directory of a rule, if any.
latest_run() {
  ls -d "$out/$1"/*/ 2>/dev/null | tail -n 1 || true
}

runs=()
for rule in $rules; do
  run=$(latest_run "$rule")
  trained=""
  [ -n "$run" ] && trained=$(tail -n 1 "$run/metrics.csv" 2>/dev/null | cut -d, -f1)
  if [[ $trained =~ ^[0-9]+$ ]] && [ "$trained" -ge "$epochs" ]; then
    echo "== $rule: already trained for $trained epochs in $run, skipping (delete it to train again)"
  elif [ -n "$run" ] && [ -f "$run/checkpoints/last.safetensors" ]; then
    echo "== $rule: resuming $run ($(date -u +%H:%M:%S) UTC)"
    "$ssa" train --resume "$run" "${data_args[@]}" --set "train.epochs=$epochs" 2>&1 | grep -v "^\s*$" | tail -n 3
  else
    echo "== $rule: training $epochs epochs ($(date -u +%H:%M:%S) UTC)"
    case $rule in
      ssa) rule_extra=${SSA_EXTRA:-} ;;
      svd_bp) rule_extra=${SVD_BP_EXTRA:-} ;;
      *) rule_extra="--set method.retract_every=0" ;;
    esac
    # shellcheck disable=SC2086
    "$ssa" train --config configs/cifar10_lenet.toml "${data_args[@]}" --out "$out/$rule" \
      --set "method.rule=\"$rule\"" --set "experiment.name=\"lenet_$rule\"" \
      --set "train.epochs=$epochs" ${EXTRA:-} $rule_extra 2>&1 | grep -v "^\s*$" | tail -n 3
  fi
  runs+=("$(latest_run "$rule")")
done

"$ssa" report "${runs[@]}" | tee "$out/report.md"
"$ssa" plot "${runs[@]}" --out "$out/compare.png"
"$ssa" plot "${runs[@]}" --out "$out/compare.svg"
echo "report: $out/report.md  plot: $out/compare.png"
