#!/bin/bash
# run-all.sh - runs every test suite of one or more build directories: each
# unit test binary BUILD_DIR/test_*, then tests/integration/run.sh BUILD_DIR
# and tests/integration/presign.sh BUILD_DIR.
# Each suite ends with `N passed, N failed`; this script prints one line per
# suite, then `TOTAL: N passed, N failed` and, last, `N passed, N failed`,
# which CI reads. It exits non-zero if any suite failed, crashed or printed
# no summary line.
#
# usage: tests/run-all.sh [--unit-only|--integration-only] BUILD_DIR...
set -u

usage() {
	echo "usage: $0 [--unit-only|--integration-only] BUILD_DIR..." >&2
	exit 2
}

UNIT=1
INTEGRATION=1
while [ $# -gt 0 ]; do
	case $1 in
	--unit-only) INTEGRATION=0 ;;
	--integration-only) UNIT=0 ;;
	-h|--help) usage ;;
	--) shift; break ;;
	-*) echo "run-all: unknown option: $1" >&2; usage ;;
	*) break ;;
	esac
	shift
done
[ $# -ge 1 ] || usage
[ "$UNIT" -eq 1 ] || [ "$INTEGRATION" -eq 1 ] || usage

ROOT=$(cd "$(dirname "$0")/.." && pwd -P)
cd "$ROOT" || exit 2

# A suite that hangs must not hang CI: SUITE_TIMEOUT seconds at most.
SUITE_TIMEOUT=${SUITE_TIMEOUT:-900}
TIMEOUT=""
if command -v timeout >/dev/null 2>&1; then
	TIMEOUT="timeout -k 30 $SUITE_TIMEOUT"
fi

TOTAL_PASSED=0
TOTAL_FAILED=0
SUITES_BAD=0
REPORT=""
OUT=$(mktemp "${TMPDIR:-/tmp}/run-all.XXXXXX")
trap 'rm -f "$OUT"' EXIT

# note NAME LINE: adds LINE to the per-suite report.
note() {
	REPORT="$REPORT$(printf '%-40s %s' "$1" "$2")
"
}

# run_suite NAME COMMAND...: runs one suite, its output shown as it goes,
# and adds its counts to the totals.
run_suite() {
	local name=$1 rc last passed failed
	shift
	echo "=== $name"
	# shellcheck disable=SC2086 # TIMEOUT is a command and its arguments
	env ${SAN_ENV[@]+"${SAN_ENV[@]}"} $TIMEOUT "$@" 2>&1 | tee "$OUT"
	rc=${PIPESTATUS[0]}
	last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$OUT" | tail -n 1)
	if [ -z "$last" ]; then
		# No summary: count the suite itself as one failure.
		TOTAL_FAILED=$((TOTAL_FAILED + 1))
		SUITES_BAD=$((SUITES_BAD + 1))
		if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
			note "$name" "TIMED OUT after ${SUITE_TIMEOUT} s, no summary line"
		elif [ "$rc" -gt 128 ]; then
			note "$name" "CRASHED (signal $((rc - 128))), no summary line"
		else
			note "$name" "NO SUMMARY LINE (exit $rc)"
		fi
		return
	fi
	passed=${last%% passed*}
	failed=${last#*passed, }
	failed=${failed%% failed*}
	TOTAL_PASSED=$((TOTAL_PASSED + passed))
	TOTAL_FAILED=$((TOTAL_FAILED + failed))
	if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
		SUITES_BAD=$((SUITES_BAD + 1))
		if [ "$failed" -eq 0 ]; then
			# A suite that says all passed but exits non-zero (a leak
			# found at exit, say) still fails.
			TOTAL_FAILED=$((TOTAL_FAILED + 1))
		fi
		if [ "$rc" -gt 128 ]; then
			note "$name" "$last  CRASHED (signal $((rc - 128)))"
		else
			note "$name" "$last  FAILED (exit $rc)"
		fi
	else
		note "$name" "$last"
	fi
}

for build in "$@"; do
	build=${build%/}
	# Sanitizer settings, for the instrumented build only.
	SAN_ENV=()
	case $(basename "$build") in
	build-asan)
		SAN_ENV=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
		    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)
		if [ -f tests/lsan.supp ]; then
			SAN_ENV+=("LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0")
		fi
		;;
	esac
	if [ ! -d "$build" ]; then
		echo "run-all: no build directory $build" >&2
		TOTAL_FAILED=$((TOTAL_FAILED + 1))
		SUITES_BAD=$((SUITES_BAD + 1))
		note "$build" "MISSING build directory"
		continue
	fi
	if [ "$UNIT" -eq 1 ]; then
		found=0
		for t in "$build"/test_*; do
			if [ ! -f "$t" ] || [ ! -x "$t" ]; then
				continue
			fi
			found=1
			run_suite "$t" "$t"
		done
		if [ "$found" -eq 0 ]; then
			TOTAL_FAILED=$((TOTAL_FAILED + 1))
			SUITES_BAD=$((SUITES_BAD + 1))
			note "$build/test_*" "NO UNIT TEST BINARIES"
		fi
	fi
	if [ "$INTEGRATION" -eq 1 ]; then
		run_suite "integration ($build)" tests/integration/run.sh "$build"
		run_suite "presign ($build)" tests/integration/presign.sh "$build"
	fi
done

echo "=== summary"
printf '%s' "$REPORT"
echo "TOTAL: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
[ "$SUITES_BAD" -eq 0 ] && [ "$TOTAL_FAILED" -eq 0 ] && [ "$TOTAL_PASSED" -gt 0 ]
