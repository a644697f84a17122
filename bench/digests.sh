#!/usr/bin/env bash
# Output digests of slim on the corpus images, for checking that a change
# keeps every output byte: run it with the binary before and after, and
# compare the two lists (`diff`).
#
#   usage: bench/digests.sh [SLIM]     (default: target/release/slim)
#
# Needs the corpus registry (../shared/corpus/load.sh) on $REGISTRY
# (default 127.0.0.1:5101). Prints "IMAGE SETTINGS DIGEST" lines.
set -euo pipefail
SLIM=${1:-target/release/slim}
REGISTRY=${REGISTRY:-127.0.0.1:5101}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for image in python-app node-app; do
  for settings in "--squash all" "--squash none" "--keep-base 1" "--compression zstd"; do
    name=$(echo "$settings" | tr -d ' -')
    "$SLIM" "$REGISTRY/corpus/$image:latest" \
      -o "$REGISTRY/digests/$image:$name" \
      --profile none $settings -q --report "$out/report.json"
    digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["output"]["digest"])' "$out/report.json")
    echo "$image $name $digest"
  done
done
