#!/bin/sh
# Builds and runs the whole test suite under one sanitizer, in its own scratch
# path, and fails on any sanitizer report:
#   scripts/test-sanitized.sh address   # ASan + LeakSanitizer, in .build-asan
#   scripts/test-sanitized.sh thread    # TSan, in .build-tsan
#
# The CLI tests spawn the balloonctl built next to the test bundle
# (Tests/BalloonKitTests/Support/Subprocess.swift), so that binary is sanitized
# too, and the *SAN_OPTIONS below are passed to it. Every report, of the test
# process or of a spawned balloonctl, is written under <scratch>/sanitizer-logs;
# any file there fails the run, even when the test that spawned the process
# passed. The umockdev suites run under umockdev-wrapper as in the plain run:
# the sanitizer runtimes are linked statically into the executables, so their
# interceptors come first and call on into libumockdev-preload.
set -eu

SWIFT=${SWIFT:-swift}
case "${1:-}" in
address) name=asan title=AddressSanitizer ;;
thread) name=tsan title=ThreadSanitizer ;;
*)
	echo "test-sanitized.sh: usage: test-sanitized.sh address|thread" >&2
	exit 2
	;;
esac
sanitizer=$1
cd "$(dirname "$0")/.."
repo=$(pwd)
scratch=.build-$name
logs=$repo/$scratch/sanitizer-logs
symbolizer=$(command -v llvm-symbolizer || echo "$(dirname "$(command -v "$SWIFT")")/llvm-symbolizer")

began=$(date +%s)
# Only what the tests run: the test bundle and the balloonctl it spawns. The
# bench (and the packages only it uses) would double the build time.
for product in balloonctlPackageTests balloonctl; do
	$SWIFT build --sanitize="$sanitizer" --scratch-path "$scratch" --product "$product" || {
		echo "test-$name: FAILED: the $title build of $product failed" >&2
		exit 1
	}
done
built=$(date +%s)

rm -rf "$logs"
mkdir -p "$logs"
# halt_on_error: the first report ends the process (ASan's default; TSan would
# otherwise go on and only change the exit status at exit). The symbolizer is
# named because a spawned balloonctl gets a PATH without the toolchain.
common="halt_on_error=1:log_path=$logs/$name:external_symbolizer_path=$symbolizer"
status=0
ASAN_OPTIONS="$common:detect_leaks=1" \
	LSAN_OPTIONS="suppressions=$repo/Tests/Sanitizers/lsan.supp:print_suppressions=0" \
	TSAN_OPTIONS="$common:second_deadlock_stack=1" \
	BALLOONCTL_REQUIRE_UMOCKDEV=1 \
	umockdev-wrapper $SWIFT test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" || status=$?
ended=$(date +%s)

times="build $((built - began)) s, tests $((ended - built)) s"
reports=$(find "$logs" -type f | sort)
if [ -n "$reports" ]; then
	for report in $reports; do
		echo "---- $report"
		cat "$report"
	done
	count=$(echo "$reports" | wc -l)
	echo "test-$name: FAILED: $title reported in $count process(es); reports above and in $scratch/sanitizer-logs ($times)" >&2
	exit 1
fi
if [ "$status" != 0 ]; then
	echo "test-$name: FAILED: the tests failed (exit $status) under $title, with no sanitizer report ($times)" >&2
	exit 1
fi
echo "test-$name: OK: every test passed under $title with 0 reports ($times)"
