#!/usr/bin/env bash
# bench/run.sh -- speed and memory of slim against the codec floor and skopeo,
# on the shared corpus in a local registry, all in one run (the machine is
# shared and noisy: compare ratios within one run, not across runs).
#
#   usage: bench/run.sh [IMAGE...]        (default: python-app node-app)
#
# Needs: the corpus pushed by ../shared/corpus/load.sh (registry on
# $REGISTRY, default 127.0.0.1:5101), skopeo, jq, pigz, zstd, openssl,
# /usr/bin/time. Prints a Markdown table: wall seconds, peak RSS and the
# ratio to the floor of the same compression.
#
# The floor: the source's compressed layer bytes through `pigz -dc`, into
# `zstd -T2 -3` (or `pigz -p2 -6`), into `openssl dgst -sha256` (GNU
# sha256sum has no SHA-NI path and would hide a slow pipeline).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REG=${REGISTRY:-127.0.0.1:5101}
RUNS=${RUNS:-1}
WORK=${BENCH_WORK:-$(mktemp -d /tmp/slim-bench.XXXXXX)}
[ $# -gt 0 ] || set -- python-app node-app
for t in skopeo jq pigz zstd openssl /usr/bin/time; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 1; }; done
curl -fs "http://$REG/v2/" >/dev/null || { echo "no registry on $REG (run ../shared/corpus/load.sh)" >&2; exit 1; }
cargo build --release -q
SLIM=$PWD/target/release/slim
# skopeo remembers blobs it saw (and then skips them): start it cold.
BIC=/var/lib/containers/cache/blob-info-cache-v1.boltdb

# measure NAME CMD...: one row; wall seconds and peak RSS of CMD.
measure() {
  local name=$1; shift
  local best_s="" best_kb=""
  for _ in $(seq "$RUNS"); do
    rm -f "$BIC"
    /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || { cat "$WORK/stderr" >&2; exit 1; }
    read -r s kb < "$WORK/time"
    if [ -z "$best_s" ] || awk "BEGIN{exit !($s < $best_s)}"; then best_s=$s; best_kb=$kb; fi
  done
  echo "$name $best_s $best_kb"
}

# A second, empty registry: copies to it cannot mount, every blob moves.
REG2=${REGISTRY2:-127.0.0.1:5102}
if ! curl -fs "http://$REG2/v2/" >/dev/null; then
  mkdir -p "$WORK/reg2"
  printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\nlog:\n  accesslog:\n    disabled: true\n  level: error\n' "$WORK/reg2/data" "$REG2" > "$WORK/reg2/config.yml"
  docker-registry serve "$WORK/reg2/config.yml" >"$WORK/reg2/log" 2>&1 &
  REG2_PID=$!
  trap 'kill $REG2_PID 2>/dev/null' EXIT
  for _ in $(seq 50); do curl -fs "http://$REG2/v2/" >/dev/null && break; sleep 0.2; done
fi

printf '| image | what | wall s | peak RSS MB | vs floor |\n|---|---|---|---|---|\n'
for img in "$@"; do
  src="$REG/corpus/$img:latest"
  layout="$WORK/src-$img"
  [ -d "$layout" ] || skopeo copy -q --src-tls-verify=false "docker://$src" "oci:$layout:src" >/dev/null
  manifest=$(jq -r '.manifests[0].digest' "$layout/index.json" | cut -d: -f2)
  layers=$(jq -r '.layers[].digest' "$layout/blobs/sha256/$manifest" | cut -d: -f2 | sed "s|^|$layout/blobs/sha256/|" | tr '\n' ' ')
  export layers
  run_id=$(date +%s%N)
  rows=()
  rows+=("$(measure "floor zstd-3" bash -c 'for l in $layers; do pigz -dc "$l"; done | zstd -q -T2 -3 -c | openssl dgst -sha256')")
  rows+=("$(measure "floor gzip-6" bash -c 'for l in $layers; do pigz -dc "$l"; done | pigz -p2 -6 -c | openssl dgst -sha256')")
  rows+=("$(measure "slim squash zstd" "$SLIM" -q "$src" -o "$REG/bench/$img-$run_id:zstd" --squash all --profile none --compression zstd)")
  rows+=("$(measure "slim squash gzip" "$SLIM" -q "$src" -o "$REG/bench/$img-$run_id:gzip" --squash all --profile none --compression gzip)")
  rows+=("$(measure "skopeo copy zstd" skopeo copy -q --src-tls-verify=false --dest-tls-verify=false --dest-compress-format zstd "docker://$src" "docker://$REG/bench/$img-$run_id-skopeo:zstd")")
  # Faithful copies to another registry (no mounts: every blob moves).
  rows+=("$(measure "slim copy to another registry" bash -c '"$0" -q "$1" -o "$2/copy/$3-$(date +%s%N):latest" --squash none --profile none' "$SLIM" "$src" "$REG2" "$img")")
  rows+=("$(measure "skopeo copy to another registry" bash -c 'skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$0" "docker://$1/skopeo/$2-$(date +%s%N):latest"' "$src" "$REG2" "$img")")
  floor_z=$(echo "${rows[0]}" | awk '{print $(NF-1)}')
  floor_g=$(echo "${rows[1]}" | awk '{print $(NF-1)}')
  for r in "${rows[@]}"; do
    s=$(echo "$r" | awk '{print $(NF-1)}'); kb=$(echo "$r" | awk '{print $NF}'); name=$(echo "$r" | awk '{$NF=""; $(NF-1)=""; print}' | sed 's/ *$//')
    case "$name" in
      *zstd*) ratio=$(awk "BEGIN{printf \"%.2fx\", $s/$floor_z}") ;;
      *gzip*) ratio=$(awk "BEGIN{printf \"%.2fx\", $s/$floor_g}") ;;
      *) ratio="" ;;
    esac
    printf '| %s | %s | %s | %d | %s |\n' "$img" "$name" "$s" $((kb / 1024)) "$ratio"
  done
done
