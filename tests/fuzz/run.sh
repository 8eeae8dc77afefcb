#!/bin/sh
# Runs each libFuzzer target for a while on a scratch copy of its seeds:
#	tests/fuzz/run.sh BUILD_DIR SECONDS TARGET...
# prints `fuzz TARGET: N execs, no crash` per target, and fails if any
# target crashed, leaked or timed out; a crashing input is kept as
# BUILD_DIR/artifacts/TARGET-crash-<sha1>. With FUZZ_SAVE=1 the inputs that
# found new coverage are merged into tests/fuzz/corpus/TARGET/. A
# tests/fuzz/TARGET.dict, if present, is passed as the target's dictionary.
set -u
build=$1
seconds=$2
shift 2
mkdir -p "$build/artifacts"
failed=0
for target in "$@"; do
	seeds=tests/fuzz/corpus/$target
	scratch=$(mktemp -d "${TMPDIR:-/tmp}/$target.XXXXXX")
	log=$build/$target.log
	cp "$seeds"/* "$scratch"/
	dict=
	[ -f "tests/fuzz/$target.dict" ] && dict=-dict=tests/fuzz/$target.dict
	# shellcheck disable=SC2086
	"$build/$target" -max_total_time="$seconds" -print_final_stats=1 $dict \
	    -artifact_prefix="$build/artifacts/$target-" "$scratch" \
	    >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
	    tail -n 1)
	if [ "$rc" -eq 0 ]; then
		echo "fuzz $target: ${execs:-?} execs, no crash"
		if [ "${FUZZ_SAVE:-0}" = 1 ]; then
			"$build/$target" -merge=1 "$seeds" "$scratch" \
			    >>"$log" 2>&1 ||
				echo "fuzz $target: merge failed, see $log"
		fi
	else
		failed=1
		echo "fuzz $target: ${execs:-?} execs, CRASH (exit $rc), see $log"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix)|Test unit written' \
		    "$log" | sed 's/^/  /'
	fi
	rm -rf "$scratch"
done
exit "$failed"
