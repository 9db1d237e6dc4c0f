#!/usr/bin/env bash
# Cuts the test fixture from a CIFAR-10 binary directory: 500 training images (records 0–499
# of data_batch_1.bin, split into five files of 100 so that the layout matches the official
# one) and the first 200 test images. These records are lossless in the copy under
# ../shared/data, so the fixture contains original CIFAR-10 pixels.
set -euo pipefail
src=${1:-../shared/data/cifar-10-batches-bin}
dst=${2:-tests/fixtures/cifar10}
record=3073
mkdir -p "$dst"
for i in 1 2 3 4 5; do
  dd if="$src/data_batch_1.bin" of="$dst/data_batch_$i.bin" bs=$record skip=$(( (i - 1) * 100 )) count=100 status=none
done
dd if="$src/test_batch.bin" of="$dst/test_batch.bin" bs=$record count=200 status=none
cp "$src/batches.meta.txt" "$dst/"
ls -l "$dst"
