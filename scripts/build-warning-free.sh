#!/bin/sh
# Builds the package and fails if the compiler printed any warning for its own
# code (Sources/, Tests/, Package.swift). Dependencies' warnings are not ours
# and are ignored.
#
#   scripts/build-warning-free.sh debug     swift build --build-tests
#   scripts/build-warning-free.sh release   swift build $RELEASE_FLAGS (as `make build`)
#
# A warning is printed only when its file is compiled, and an incremental build
# compiles only what changed: a warning in an untouched file would pass
# unseen. So the intermediate files of this package's own targets are removed
# first, and each of them is compiled again; the dependencies stay built.
# make test runs both configurations.
set -eu

cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-swift}
RELEASE_FLAGS=${RELEASE_FLAGS:--c release --static-swift-stdlib}
ROOT=$(pwd -P)

case "${1:-debug}" in
debug) flags="--build-tests" ;;
release) flags=$RELEASE_FLAGS ;;
*) echo "build-warning-free.sh: unknown configuration '$1' (debug, release)" >&2; exit 2 ;;
esac
config=${1:-debug}

# Every target of this package has a directory under Sources/ or Tests/, and
# SwiftPM keeps its intermediate files in <bin>/<target>.build.
# shellcheck disable=SC2086 # flags are words
bin=$($SWIFT build $flags --show-bin-path | tail -n 1)
targets=""
for dir in Sources/* Tests/*; do
	[ -d "$dir" ] || continue
	name=${dir#*/}
	targets="$targets $name"
	rm -rf "${bin:?}/$name.build"
done

log=$(mktemp "${TMPDIR:-/tmp}/balloonctl-build.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
# shellcheck disable=SC2086
$SWIFT build $flags >"$log" 2>&1 || status=$?
cat "$log"
[ "$status" = 0 ] || { echo "build-warning-free.sh: $config build failed" >&2; exit "$status"; }

# Ours: a diagnostic located in one of our files, or a SwiftPM warning about
# this package or one of its targets ("warning: 'BalloonKit': ...").
names=$(printf '%s\n' balloonctl $targets | sort -u | paste -sd '|' -)
ours=$(grep -E "^($ROOT/)?(Sources|Tests|Package\.swift)[^ ]*: warning:|^warning: '($names)'" "$log" | sort | uniq -c || true)
if [ -n "$ours" ]; then
	echo "build-warning-free.sh: the $config build printed warnings for this package's code (count, warning):" >&2
	echo "$ours" >&2
	exit 1
fi
echo "build-warning-free.sh: $config build: no warnings in Sources/, Tests/ or Package.swift"
