#!/usr/bin/env bash
# bench/scale.sh -- slim at scale: wall time and peak RSS on synthetic images
# made by bench/synth.py (generated here, not committed; they take ~2 min
# and ~3 GB of disk):
#   - 1,000,000 small files in 3 layers (whiteouts, an opaque directory,
#     hard links, duplicate contents);
#   - one 10 GiB file in one layer.
# Each is slimmed OCI layout -> OCI layout with the default settings.
#
#   usage: bench/scale.sh            (BENCH_WORK=DIR keeps the images between runs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${BENCH_WORK:-$(mktemp -d /tmp/slim-scale.XXXXXX)}
cargo build --release -q
SLIM=$PWD/target/release/slim
[ -d "$WORK/files-1m" ] || python3 bench/synth.py files "$WORK/files-1m" 1000000
[ -d "$WORK/big-10g" ] || python3 bench/synth.py big "$WORK/big-10g" 10

printf '| image | wall s | peak RSS MB |\n|---|---|---|\n'
row() {
  local name=$1 src=$2; shift 2
  rm -rf "$WORK/out"
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$SLIM" "oci:$src:latest" -o "oci:$WORK/out:latest" -q "$@"
  read -r s kb < "$WORK/time"
  printf '| %s | %s | %d |\n' "$name" "$s" $((kb / 1024))
  rm -rf "$WORK/out"
}
row "1M files, 3 layers" "$WORK/files-1m" --max-files 2000000
row "10 GiB, 1 layer" "$WORK/big-10g"
