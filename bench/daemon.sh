#!/usr/bin/env bash
# slim against a local engine: a private `podman system service` (its own
# storage, config and mount namespace; nothing of the host's engine is read
# or changed) holding the corpus python-app under a bare name, then
# `slim python-app:latest -o python-app:slim` as a developer types it, and
# the same from the engine to an OCI layout. Prints wall time and peak RSS
# of each run, and what the engine holds afterwards.
#
#   usage: bench/daemon.sh [SLIM] [IMAGE]   (default: target/release/slim python-app)
#
# Needs root, podman, and the corpus registry (../shared/corpus/load.sh) on
# $REGISTRY (default 127.0.0.1:5101).
set -euo pipefail
SLIM=$(realpath "${1:-target/release/slim}")
IMAGE=${2:-python-app}
REGISTRY=${REGISTRY:-127.0.0.1:5101}
mkdir -p target
dir=$(realpath "$(mktemp -d target/bench-podman.XXXXXX)")
runroot=$(mktemp -d /tmp/slim-pm-bench.XXXXXX)
service=
cleanup() {
  [ -n "$service" ] && kill "$service" 2>/dev/null && wait "$service" 2>/dev/null || true
  rm -rf "$dir" "$runroot"
}
trap cleanup EXIT
mkdir -p "$dir"/{root,tmp,xdg,home,libpod-tmp,networks,vartmp,runc,cache,out}
cat > "$dir/containers.conf" <<EOF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_config_dir = "$dir/networks"
EOF
cat > "$dir/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$dir/root"
runroot = "$runroot"
EOF
printf 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n' > "$dir/registries.conf"
export CONTAINERS_CONF=$dir/containers.conf CONTAINERS_STORAGE_CONF=$dir/storage.conf \
  CONTAINERS_REGISTRIES_CONF=$dir/registries.conf XDG_RUNTIME_DIR=$dir/xdg \
  HOME=$dir/home TMPDIR=$dir/tmp
podman_() {
  unshare --mount --propagation private /bin/sh -c '
    for pair in /var/tmp:vartmp /run/runc:runc /var/lib/containers/cache:cache; do
      t=${pair%%:*}; [ -d "$t" ] && mount --bind "$0/${pair#*:}" "$t"
    done; exec podman "$@"' "$dir" --root "$dir/root" --runroot "$runroot" \
    --tmpdir "$dir/libpod-tmp" --storage-driver vfs --cgroup-manager cgroupfs "$@"
}
podman_ system service --time=0 "unix://$dir/podman.sock" > "$dir/service.log" 2>&1 &
service=$!
for _ in $(seq 60); do [ -S "$dir/podman.sock" ] && break; sleep 1; done
podman_ pull -q --tls-verify=false "$REGISTRY/corpus/$IMAGE:latest" > /dev/null
podman_ tag "$REGISTRY/corpus/$IMAGE:latest" "$IMAGE:latest"
export DOCKER_HOST=unix://$dir/podman.sock
measure() {
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$dir/time" "$SLIM" "$@" -q --report "$dir/report.json"
  read -r wall rss < "$dir/time"
  python3 - "$label" "$wall" "$rss" "$dir/report.json" <<'PY'
import json, sys
label, wall, rss, path = sys.argv[1:]
r = json.load(open(path))
src, out = r["source"], r["output"]
print(f"{label}: {float(wall):.1f} s, peak RSS {int(rss) / 1024:.0f} MiB, "
      f"{src['compressed_bytes']} -> {out['compressed_bytes']} bytes compressed, "
      f"from {src['from']}, output {out['digest']}")
PY
}
measure "engine -> engine ($IMAGE:latest -o $IMAGE:slim)" "$IMAGE:latest" -o "$IMAGE:slim"
measure "engine -> oci layout" "$IMAGE:latest" -o "oci:$dir/out:slim"
podman_ images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F "$IMAGE"
