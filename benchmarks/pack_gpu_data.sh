#!/usr/bin/env bash
# Packs the real photos of `make gpu-check-2`'s accuracy stage (Imagenette, 82 MB as an
# archive) into parts a device call can carry beside the repository (64 MiB a call):
#
#   bash benchmarks/pack_gpu_data.sh [ARCHIVE]      (default ../shared/data/imagenette-160.tar.gz)
#
# Writes .gpu/d0/part-00, .gpu/d1/part-01 (git ignores .gpu/). On the GPU machine, one call
# per part (carry [".gpu/d0"], then [".gpu/d1"]):  mkdir -p /tmp/gpu-data && cp .gpu/dN/* /tmp/gpu-data/
# and in the gpu-check-2 call:
#   cat /tmp/gpu-data/part-* | tar xz -C /tmp/gpu-data && \
#   GPU_CHECK_ACCURACY_DATA=/tmp/gpu-data/imagenette-160 make gpu-check-2
set -euo pipefail
archive=${1:-../shared/data/imagenette-160.tar.gz}
top=$(git rev-parse --show-toplevel)
cd "$top"
[[ -f $archive ]] || { echo "no archive at $archive: give its path" >&2; exit 2; }
rm -rf .gpu/d0 .gpu/d1 && mkdir -p .gpu/d0 .gpu/d1
split -b 45M -d -a 2 "$archive" .gpu/part-
parts=(.gpu/part-*)
[[ ${#parts[@]} -le 2 ]] || { echo "$archive needs ${#parts[@]} parts of 45 MiB; this script carries 2" >&2; exit 2; }
for p in "${parts[@]}"; do n=${p##*-}; mv "$p" ".gpu/d$((10#$n))/"; done
ls -l .gpu/d0 .gpu/d1
