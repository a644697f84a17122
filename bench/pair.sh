#!/usr/bin/env bash
# bench/pair.sh -- slim's zstd squash against the zstd floor in pairs, one
# right after the other, N times: on a shared, noisy machine the ratio
# within a pair says more than the best of each taken apart.
#
#   usage: bench/pair.sh [IMAGE] [N]        (default: node-app 5)
#
# Needs what bench/run.sh needs (the corpus in a registry on $REGISTRY,
# default 127.0.0.1:5101; skopeo, jq, pigz, zstd, openssl, /usr/bin/time).
# Prints one line a pair (wall seconds, CPU seconds of slim, the ratio) and
# the median ratio. slim's output is the same every time, so after the
# first run the registry has it and slim does not upload it again (nor does
# the floor upload anything).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
IMG=${1:-node-app}
N=${2:-5}
REG=${REGISTRY:-127.0.0.1:5101}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/slim-pair.XXXXXX)}
mkdir -p "$WORK"
for t in skopeo jq pigz zstd openssl /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
curl -fs "http://$REG/v2/" >/dev/null || { echo "no registry on $REG (run ../shared/corpus/load.sh)" >&2; exit 1; }
cargo build --release -q
SLIM=$PWD/target/release/slim
src="$REG/corpus/$IMG:latest"
layout="$WORK/src-$IMG"
[ -d "$layout" ] || skopeo copy -q --src-tls-verify=false "docker://$src" "oci:$layout:src" >/dev/null
manifest=$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
layers=$(jq -r '.layers[].digest' "$layout/blobs/sha256/$manifest" | cut -d: -f2 | sed "s|^|$layout/blobs/sha256/|" | tr '\n' ' ')
export layers

ratios=()
for i in $(seq "$N"); do
  /usr/bin/time -f "%e" -o "$WORK/floor" bash -c 'for l in $layers; do pigz -dc "$l"; done | zstd -q -T2 -3 -c | openssl dgst -sha256' >/dev/null
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/slim" "$SLIM" -q "$src" -o "$REG/bench/$IMG-pair:zstd" \
    --squash all --profile none --compression zstd >/dev/null
  read -r f < "$WORK/floor"
  read -r s u k kb < "$WORK/slim"
  r=$(awk "BEGIN{printf \"%.2f\", $s/$f}")
  ratios+=("$r")
  printf 'pair %d: floor %s s, slim %s s (CPU %.2f s, peak RSS %d MB): %sx\n' "$i" "$f" "$s" "$(awk "BEGIN{print $u+$k}")" $((kb / 1024)) "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %sx of %d pairs\n", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), NR}'
