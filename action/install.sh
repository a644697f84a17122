#!/usr/bin/env bash
# The GitHub Action's install step (action.yml): puts the static slim
# binary of release SLIM_VERSION (a tag of SLIM_REPOSITORY, e.g. v1.2.0)
# on PATH, its SHA-256 checked against the release's .sha256 file. When
# SLIM_VERSION is not a release tag (a branch or a commit) and slim is
# already on PATH, that slim is used.
set -euo pipefail

case "$(uname -m)" in
  x86_64) target=x86_64-unknown-linux-musl ;;
  aarch64 | arm64) target=aarch64-unknown-linux-musl ;;
  *) echo "::error::slim releases are built for x86_64 and aarch64 Linux, not $(uname -m)" >&2; exit 1 ;;
esac

if [[ ! "${SLIM_VERSION:-}" =~ ^v[0-9] ]] && command -v slim >/dev/null; then
  echo "using $(command -v slim) ($(slim --version))"
  exit 0
fi
[[ "${SLIM_VERSION:-}" =~ ^v[0-9] ]] || {
  echo "::error::no slim on PATH and '${SLIM_VERSION:-}' is not a release tag: set the version input (e.g. v1.0.0)" >&2
  exit 1
}

dir=${RUNNER_TEMP:-/tmp}/slim-$SLIM_VERSION
mkdir -p "$dir"
base="${GITHUB_SERVER_URL:-https://github.com}/$SLIM_REPOSITORY/releases/download/$SLIM_VERSION/slim-$target"
curl -fsSL --retry 3 -o "$dir/slim" "$base"
curl -fsSL --retry 3 -o "$dir/slim.sha256" "$base.sha256"
echo "$(cut -d' ' -f1 "$dir/slim.sha256")  $dir/slim" | sha256sum -c --quiet
chmod +x "$dir/slim"
echo "$dir" >>"$GITHUB_PATH"
"$dir/slim" --version
