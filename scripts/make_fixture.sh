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

# Fashion-MNIST: the first 300 training and 100 test images of Debian's copy, as gzip IDX files
# with headers rewritten for the smaller counts.
fashion_src=${3:-/usr/share/datasets/fashion-mnist}
fashion_dst=${4:-tests/fixtures/fashion-mnist}
if [ -d "$fashion_src" ]; then
  mkdir -p "$fashion_dst"
  python3 - "$fashion_src" "$fashion_dst" <<'PY'
import gzip, struct, sys
src, dst = sys.argv[1:3]
for prefix, count in (("train", 300), ("t10k", 100)):
    for kind, item in (("images-idx3-ubyte", 28 * 28), ("labels-idx1-ubyte", 1)):
        name = f"{prefix}-{kind}.gz"
        data = gzip.open(f"{src}/{name}").read()
        dims = data[3]
        header = bytearray(data[:4 + 4 * dims])
        header[4:8] = struct.pack(">I", count)
        body = data[4 + 4 * dims:4 + 4 * dims + count * item]
        with gzip.GzipFile(f"{dst}/{name}", "wb", mtime=0) as out:
            out.write(bytes(header) + body)
PY
  ls -l "$fashion_dst"
fi
