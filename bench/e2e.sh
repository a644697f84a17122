#!/usr/bin/env bash
# bench/e2e.sh -- end-to-end checks of slim on the shared corpus (too big and
# slow for CI): faithful copies keep digests, squash keeps the tree (umoci),
# output is reproducible, zstd round-trips through skopeo, corrupt input is
# refused. Prints PASS/FAIL per check; exits non-zero if any failed.
#
#   usage: bench/e2e.sh            (registry with the corpus on $REGISTRY,
#                                   default 127.0.0.1:5101; see load.sh)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REG=${REGISTRY:-127.0.0.1:5101}
WORK=${E2E_WORK:-$(mktemp -d /tmp/slim-e2e.XXXXXX)}
cargo build --release -q || exit 1
SLIM=$PWD/target/release/slim
SK="skopeo --override-os linux"
failed=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failed=1; }
digest() { skopeo inspect --raw --tls-verify=false "$1" | sha256sum | cut -d' ' -f1; }
check_eq() { if [ "$2" = "$3" ]; then pass "$1"; else fail "$1 ($2 != $3)"; fi; }
# tree REF DIR: unpack any image into DIR with skopeo (to gzip) + umoci; list it.
tree() {
  rm -rf "$2"; skopeo copy -q --src-tls-verify=false --dest-compress --dest-compress-format gzip "$1" "oci:$2.oci:t" >/dev/null &&
  umoci unpack --image "$2.oci:t" "$2" >/dev/null && python3 bench/tree.py "$2/rootfs" > "$2.tree" && rm -rf "$2" "$2.oci"
}
run=$(date +%s)

# --- faithful copies (issue: foundation) -------------------------------------
"$SLIM" -q "$REG/corpus/python-app:latest" -o "$REG/e2e-$run/copy:latest" --squash none --profile none
check_eq "registry->registry copy keeps the digest" "$(digest "docker://$REG/corpus/python-app:latest")" "$(digest "docker://$REG/e2e-$run/copy:latest")"
"$SLIM" -q "$REG/corpus-v2s2/python-app:latest" -o "$REG/e2e-$run/v2s2:latest" --squash none --profile none
check_eq "v2s2 copy keeps the digest" "$(digest "docker://$REG/corpus-v2s2/python-app:latest")" "$(digest "docker://$REG/e2e-$run/v2s2:latest")"
check_eq "v2s2 stays v2s2" "$(skopeo inspect --raw --tls-verify=false "docker://$REG/e2e-$run/v2s2:latest" | jq -r .mediaType)" "application/vnd.docker.distribution.manifest.v2+json"
"$SLIM" -q "$REG/corpus/python-app:latest" -o "oci:$WORK/layout:latest" --squash none --profile none
check_eq "registry->oci copy keeps the digest" "$(digest "docker://$REG/corpus/python-app:latest")" "$(digest "oci:$WORK/layout:latest")"
"$SLIM" -q "$REG/corpus/multiarch:latest" -o "$REG/e2e-$run/multi:latest" --squash none --profile none
check_eq "multi-arch index keeps both platforms" "$(skopeo inspect --raw --tls-verify=false "docker://$REG/e2e-$run/multi:latest" | jq -r '[.manifests[].platform.architecture] | sort | join(",")')" "amd64,arm64"
skopeo copy -q --src-tls-verify=false "docker://$REG/corpus/debian:base" "docker-archive:$WORK/debian.tar" >/dev/null
"$SLIM" -q "docker-archive:$WORK/debian.tar" -o "oci:$WORK/from-archive:latest" --squash none --profile none
if umoci unpack --image "$WORK/from-archive:latest" "$WORK/from-archive-unpacked" >/dev/null; then pass "docker-archive in gives an image umoci unpacks"; else fail "docker-archive in gives an image umoci unpacks"; fi
rm -rf "$WORK/from-archive-unpacked"
# A corrupt blob inside an OCI layout: refused, nothing tagged.
cp -a "$WORK/layout" "$WORK/corrupt"
big=$(ls -S "$WORK/corrupt/blobs/sha256" | head -1)
printf 'X' | dd of="$WORK/corrupt/blobs/sha256/$big" bs=1 seek=1000 conv=notrunc status=none
out=$("$SLIM" "oci:$WORK/corrupt:latest" -o "oci:$WORK/fresh:latest" --squash none --profile none 2>&1); rc=$?
if [ $rc -ne 0 ] && grep -q "$big" <<<"$out" && [ ! -e "$WORK/fresh/index.json" ]; then pass "corrupt blob refused, naming its digest, nothing tagged"; else fail "corrupt blob refused ($rc): $out"; fi

# --- squash (issue: layer rewriter) ---------------------------------------------
tree "docker://$REG/corpus/python-app:latest" "$WORK/src"
"$SLIM" -q "$REG/corpus/python-app:latest" -o "$REG/e2e-$run/squash:a" --squash all --profile none --no-hardlink-dedup
"$SLIM" -q "$REG/corpus/python-app:latest" -o "$REG/e2e-$run/squash:b" --squash all --profile none --no-hardlink-dedup
check_eq "squash all gives one layer" "$(skopeo inspect --tls-verify=false "docker://$REG/e2e-$run/squash:a" | jq '.Layers | length')" "1"
check_eq "squash all twice gives the same digest" "$(digest "docker://$REG/e2e-$run/squash:a")" "$(digest "docker://$REG/e2e-$run/squash:b")"
tree "docker://$REG/e2e-$run/squash:a" "$WORK/squash"
if cmp -s "$WORK/src.tree" "$WORK/squash.tree"; then pass "squash all has the source's tree (umoci)"; else fail "squash all tree differs: $(diff "$WORK/src.tree" "$WORK/squash.tree" | head -5)"; fi
"$SLIM" -q "$REG/corpus/python-app:latest" -o "$REG/e2e-$run/none:zstd" --squash none --profile none --compression zstd
check_eq "squash none keeps 6 layers" "$(skopeo inspect --tls-verify=false "docker://$REG/e2e-$run/none:zstd" | jq '.Layers | length')" "6"
tree "docker://$REG/e2e-$run/none:zstd" "$WORK/none"
if cmp -s "$WORK/src.tree" "$WORK/none.tree"; then pass "squash none + zstd has the source's tree"; else fail "squash none + zstd tree differs: $(diff "$WORK/src.tree" "$WORK/none.tree" | head -5)"; fi
"$SLIM" -q "$REG/corpus/python-app:latest" -o "$REG/e2e-$run/dedup:latest" --squash all --profile none
tree "docker://$REG/e2e-$run/dedup:latest" "$WORK/dedup"
if cmp -s "$WORK/src.tree" "$WORK/dedup.tree"; then pass "hard-link dedup keeps every path, mode and content"; else fail "dedup tree differs: $(diff "$WORK/src.tree" "$WORK/dedup.tree" | head -5)"; fi

# --- profiles (issue: strip profiles and safety keeps) --------------------------
# unpack REF DIR: the image's rootfs in DIR/rootfs.
unpack() {
  rm -rf "$2" "$2.oci"
  skopeo copy -q --src-tls-verify=false --dest-compress --dest-compress-format gzip "$1" "oci:$2.oci:t" >/dev/null &&
  umoci unpack --image "$2.oci:t" "$2" >/dev/null && rm -rf "$2.oci"
}
size() { skopeo inspect --raw --tls-verify=false "$1" | jq '[.layers[].size] | add'; }
in_chroot() { local root=$1; shift; timeout 60 chroot "$root" /bin/sh -c "$*"; }
for img in debian:base python-app:latest node-app:latest; do
  name=${img%%:*}
  case $name in debian) limit=60 ;; python-app) limit=45 ;; node-app) limit=40 ;; esac
  "$SLIM" -q "$REG/corpus/$img" -o "$REG/e2e-$run/$name:slim" --compression gzip
  src=$(size "docker://$REG/corpus/$img"); out=$(size "docker://$REG/e2e-$run/$name:slim")
  pct=$((100 * out / src))
  if [ $pct -le $limit ]; then pass "$name: $out of $src bytes compressed ($pct% <= $limit%)"; else fail "$name: $pct% > $limit%"; fi
  unpack "docker://$REG/e2e-$run/$name:slim" "$WORK/$name"
  unpack "docker://$REG/corpus/$img" "$WORK/$name-src"
  r=$WORK/$name/rootfs
  for keep in usr/share/doc/dpkg/copyright etc/ssl/certs/ca-certificates.crt usr/share/zoneinfo/UTC; do
    if [ ! -e "$WORK/$name-src/rootfs/$keep" ]; then pass "$name: /$keep is not in the source either"
    elif [ -e "$r/$keep" ]; then pass "$name keeps /$keep"; else fail "$name lost /$keep"; fi
  done
  n=$(find "$WORK/$name-src/rootfs/usr/share/doc" -name copyright | wc -l); m=$(find "$r/usr/share/doc" -name copyright | wc -l)
  check_eq "$name keeps every /usr/share/doc/*/copyright" "$m" "$n"
  rm -rf "$WORK/$name-src"
  if [ -d "$r/usr/share/man" ]; then pass "$name keeps the /usr/share/man directory"; else fail "$name lost /usr/share/man"; fi
  n=$(find "$r/var/lib/apt/lists" -type f 2>/dev/null | grep -cv '/lock$'); check_eq "$name has no apt lists" "$n" "0"
  n=$(find "$r" -name '*.deb' -type f | wc -l); check_eq "$name has no .deb files" "$n" "0"
  n=$(find "$r/usr/share/man" -type f | wc -l); check_eq "$name has no man page files" "$n" "0"
  case $name in
    debian)
      if in_chroot "$r" 'apt-get --version >/dev/null && dpkg -l >/dev/null'; then pass "debian: apt-get --version and dpkg -l run"; else fail "debian: apt-get/dpkg do not run"; fi ;;
    python-app)
      if in_chroot "$r" 'cd /app && python3 -c "import app, numpy, pandas, requests"'; then pass "python-app: app, numpy, pandas, requests import"; else fail "python-app: imports fail"; fi ;;
    node-app)
      if in_chroot "$r" 'cd /app && node -e "require(\"express\"); require(\"lodash\"); require(\"moment\")"'; then pass "node-app: require(express, lodash, moment)"; else fail "node-app: require fails"; fi
      out=$(PORT=0 timeout 5 chroot "$r" /bin/sh -c 'cd /app && PORT=38517 node /app/server.js' 2>&1 | head -1)
      if grep -q listening <<<"$out"; then pass "node-app: server.js prints '$out'"; else fail "node-app: server.js printed '$out'"; fi ;;
  esac
done

# --- the CI step and analyze (issue: a tool people like to use) ----------------
"$SLIM" -q "$REG/corpus/debian:base" -o "$REG/e2e-$run/debian:report" --report "$WORK/report.json"
for k in source.reference source.digest source.layers source.compressed_bytes source.uncompressed_bytes source.files \
         output.digest output.compressed_bytes removed.files removed.by_category kept_by_safety platforms duration_seconds; do
  if jq -e ".$k != null" "$WORK/report.json" >/dev/null; then :; else fail "report lacks $k"; fi
done
check_eq "report output digest is the pushed digest" "sha256:$(digest "docker://$REG/e2e-$run/debian:report")" "$(jq -r .output.digest "$WORK/report.json")"
skopeo copy -q --src-tls-verify=false "docker://$REG/corpus/debian:base" "docker-archive:$WORK/debian-in.tar:debian:base" >/dev/null
"$SLIM" -q docker-archive:- -o docker-archive:- < "$WORK/debian-in.tar" > "$WORK/debian-out.tar"
if skopeo inspect "docker-archive:$WORK/debian-out.tar" >/dev/null && [ "$(stat -c %s "$WORK/debian-out.tar")" -lt "$(stat -c %s "$WORK/debian-in.tar")" ]; then
  pass "docker-archive:- to docker-archive:- over pipes: skopeo reads it, $(stat -c %s "$WORK/debian-out.tar") < $(stat -c %s "$WORK/debian-in.tar") bytes"
else fail "docker-archive pipe"; fi
"$SLIM" -q "$REG/corpus/debian:base" -o "$REG/e2e-$run/debian:gate" --fail-if-savings-below 95; rc=$?
check_eq "--fail-if-savings-below 95 on debian:base exits 3" "$rc" "3"
wasted=$("$SLIM" -q analyze "$REG/corpus/python-app:latest" --json | jq '.images[0].wasted.bytes')
if [ "$wasted" -gt 0 ]; then pass "analyze python-app reports $wasted wasted bytes"; else fail "analyze reports no waste"; fi
for bad in "UPPER:case:x" "dir:/tmp/x" "$REG/corpus/python-app:nosuchtag" "oci:/nonexistent/dir:x"; do
  out=$("$SLIM" "$bad" -o "oci:$WORK/never:x" 2>&1); rc=$?
  lines=$(grep -c '^error:' <<<"$out")
  if [ "$lines" = 1 ] && { [ $rc = 1 ] || [ $rc = 2 ]; }; then pass "$bad: one error line, exit $rc"; else fail "$bad: exit $rc: $out"; fi
done

echo "work dir: $WORK"
exit $failed
