#!/usr/bin/env bash
# The GitHub Action's step (action.yml): turns the INPUT_* variables into
# slim's flags and runs it. slim itself appends the before/after table to
# $GITHUB_STEP_SUMMARY and digest, saved-bytes, saved-percent and
# report-path to $GITHUB_OUTPUT. An empty input adds no flag, so the
# repository's slim.toml (or slim's default) applies. Exit code: slim's.
#
# SLIM names the binary (default: slim on PATH).
set -euo pipefail

slim=${SLIM:-slim}
args=()

fail() {
  echo "::error::$*" >&2
  exit 2
}

# A single-valued input: --flag VALUE when set.
one() {
  if [ -n "${2:-}" ]; then args+=("$1=$2"); fi
}

# A list input, one value per line (blank lines and surrounding spaces
# ignored): --flag VALUE for each.
list() {
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    if [ -n "$line" ]; then args+=("$1=$line"); fi
  done <<<"${2:-}"
}

# A true/false input: --flag when true.
flag() {
  case "${2:-}" in
    true) args+=("$1") ;;
    false | "") ;;
    *) fail "input ${3}: expected true or false, not '${2}'" ;;
  esac
}

[ -n "${INPUT_SOURCE:-}" ] || fail "input source is required"
[ -n "${INPUT_DESTINATION:-}" ] || fail "input destination is required"

report=${INPUT_REPORT:-${RUNNER_TEMP:-${TMPDIR:-/tmp}}/slim-report.json}

one --profile "${INPUT_PROFILE:-}"
one --squash "${INPUT_SQUASH:-}"
one --keep-base "${INPUT_KEEP_BASE:-}"
one --compression "${INPUT_COMPRESSION:-}"
list --keep "${INPUT_KEEP:-}"
list --remove "${INPUT_REMOVE:-}"
one --platform "${INPUT_PLATFORM:-}"
flag --verify "${INPUT_VERIFY:-}" verify
list --probe-http "${INPUT_PROBE_HTTP:-}"
list --probe-tcp "${INPUT_PROBE_TCP:-}"
list --probe-cmd "${INPUT_PROBE_CMD:-}"
one --fail-if-savings-below "${INPUT_FAIL_IF_SAVINGS_BELOW:-}"
flag --fail-if-larger "${INPUT_FAIL_IF_LARGER:-}" fail-if-larger
flag --attach-report "${INPUT_ATTACH_REPORT:-}" attach-report
one --report "$report"
one --config "${INPUT_CONFIG:-}"
list --insecure-registry "${INPUT_INSECURE_REGISTRY:-}"

run=("$slim")
# --verify runs containers: it needs root. Credentials stay those of the
# runner's user (DOCKER_CONFIG), and the report stays readable.
if [ "${INPUT_VERIFY:-}" = true ] && [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  export DOCKER_CONFIG=${DOCKER_CONFIG:-$HOME/.docker}
  run=(sudo --preserve-env "$(command -v "$slim")")
fi

echo "slim ${INPUT_SOURCE} -o ${INPUT_DESTINATION} ${args[*]}" >&2
exec "${run[@]}" "$INPUT_SOURCE" -o "$INPUT_DESTINATION" "${args[@]}"
