#!/usr/bin/env bash
# packaging/image.sh -- build slim's own image without a Docker engine: the
# static (musl) binary and a CA bundle on an empty base, as an OCI layout
# (the same content as the Dockerfile's final stage), then check that slim
# finds nothing to strip in it.
#
#   usage: packaging/image.sh [OUT_LAYOUT]     (default: target/slim-image)
#   push:  target/release/slim oci:target/slim-image:latest -o registry.example.com/tools/slim:latest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-target/slim-image}
TARGET=x86_64-unknown-linux-musl
command -v umoci >/dev/null || { echo "needs umoci" >&2; exit 1; }
CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
  cargo build --release --locked --target "$TARGET"
BIN=target/$TARGET/release/slim
file "$BIN" | grep -Eq "static(-pie)? linked" || { echo "$BIN is not static" >&2; exit 1; }
rm -rf "$OUT" "$OUT.bundle"
umoci init --layout "$OUT"
umoci new --image "$OUT:latest"
umoci unpack --rootless --image "$OUT:latest" "$OUT.bundle" >/dev/null
root=$OUT.bundle/rootfs
install -D -m 0755 "$BIN" "$root/usr/local/bin/slim"
strip "$root/usr/local/bin/slim"
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
umoci repack --image "$OUT:latest" "$OUT.bundle" >/dev/null
umoci config --image "$OUT:latest" \
  --config.entrypoint /usr/local/bin/slim \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --os linux --architecture amd64 >/dev/null
rm -rf "$OUT.bundle"
echo "built oci:$OUT:latest"
# slim on its own image: nothing left to strip.
"$BIN" "oci:$OUT:latest" -o "oci:$OUT-slim:latest" --dry-run
