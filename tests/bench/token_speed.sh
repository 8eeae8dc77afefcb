#!/bin/sh
# token_speed.sh - the ceiling our batch pre-signer is measured against: the
# raw signing rate of a throwaway SoftHSM2 token (build/token_speed --sweep,
# the best any number of sessions, threads or processes gets from it) beside
# `openssl speed` for the same algorithm on all cores and on one.
#
# usage: tests/bench/token_speed.sh [--tokendir-base DIR] [--backend file|db]
#            [--log-level LEVEL] [--removable true|false] [--seconds S]
#            [--key ec|rsa|both] [--runs N] [--skip-cpu] [--elapsed]
#
# Run it from the repository root after `make all build/token_speed`. Each
# key gets its own token in a fresh directory under --tokendir-base (default
# $TMPDIR or /tmp; /dev/shm puts it on tmpfs), provisioned by ocspctl as the
# responder's would be; the directory is removed at the end. Every rate is a
# median of N runs (default 3), the machine being shared. The last lines are
#	BENCH token_raw_<alg> R
#	BENCH cpu_<alg>_all_cores R
#	BENCH cpu_<alg>_one_core R
# with <alg> p256 or rsa2048 and R in signatures per second.
#
# token_speed divides by wall-clock time; `openssl speed` by default divides
# by the user CPU time its processes got, which on a shared machine reads
# higher than what the wall clock allows. --elapsed passes -elapsed to
# openssl speed, so that both sides are wall-clock rates.
set -eu

usage() {
	echo "usage: $0 [--tokendir-base DIR] [--backend file|db] [--log-level LEVEL]" >&2
	echo "           [--removable true|false] [--seconds S] [--key ec|rsa|both] [--runs N]" >&2
	echo "           [--skip-cpu] [--elapsed]" >&2
	exit 2
}

say() {
	printf 'token_speed: %s\n' "$*" >&2
}

die() {
	printf 'token_speed: %s\n' "$*" >&2
	exit 1
}

BASE=${TMPDIR:-/tmp}
BACKEND="file"
LOG_LEVEL=ERROR
REMOVABLE=false
SECONDS_PER_RUN=3
KEYS="ec rsa"
SKIP_CPU=no
ELAPSED=
RUNS=3
while [ $# -gt 0 ]; do
	case $1 in
	--tokendir-base) [ $# -ge 2 ] || usage; BASE=$2; shift 2 ;;
	--backend)	[ $# -ge 2 ] || usage; BACKEND=$2; shift 2 ;;
	--log-level)	[ $# -ge 2 ] || usage; LOG_LEVEL=$2; shift 2 ;;
	--removable)	[ $# -ge 2 ] || usage; REMOVABLE=$2; shift 2 ;;
	--seconds)	[ $# -ge 2 ] || usage; SECONDS_PER_RUN=$2; shift 2 ;;
	--key)		[ $# -ge 2 ] || usage
			case $2 in
			ec|rsa) KEYS=$2 ;;
			both)	KEYS="ec rsa" ;;
			*)	usage ;;
			esac
			shift 2 ;;
	--runs)		[ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
	--skip-cpu)	SKIP_CPU=yes; shift ;;
	--elapsed)	ELAPSED=-elapsed; shift ;;
	-h|--help)	usage ;;
	*)		echo "token_speed: unknown argument: $1" >&2; usage ;;
	esac
done
case $BACKEND in
file|db) ;;
*) die "--backend is file or db, not '$BACKEND'" ;;
esac
case $LOG_LEVEL in
ERROR|WARNING|INFO|DEBUG) ;;
*) die "--log-level is ERROR, WARNING, INFO or DEBUG, not '$LOG_LEVEL'" ;;
esac
case $REMOVABLE in
true|false) ;;
*) die "--removable is true or false, not '$REMOVABLE'" ;;
esac
case $RUNS in
''|*[!0-9]*|0) die "--runs needs a positive number, not '$RUNS'" ;;
esac
[ -d "$BASE" ] || die "--tokendir-base $BASE is not a directory"

BUILD=${BUILD:-build}
OCSPCTL=$BUILD/ocspctl
TOKEN_SPEED=$BUILD/token_speed
[ -x "$OCSPCTL" ] || die "$OCSPCTL not found: build it first (make all)"
[ -x "$TOKEN_SPEED" ] || die "$TOKEN_SPEED not found: build it first (make $TOKEN_SPEED)"
command -v openssl >/dev/null 2>&1 || die "openssl not found"

# The PKCS#11 module: SOFTHSM2_MODULE, else where Debian installs it.
MODULE=${SOFTHSM2_MODULE:-}
if [ -z "$MODULE" ]; then
	for m in /usr/lib/softhsm/libsofthsm2.so \
	    /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
	    /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
	    /usr/local/lib/softhsm/libsofthsm2.so; do
		if [ -e "$m" ]; then
			MODULE=$m
			break
		fi
	done
fi
if [ -z "$MODULE" ] || [ ! -e "$MODULE" ]; then
	die "libsofthsm2.so not found: install softhsm2 or set SOFTHSM2_MODULE"
fi

# The db backend exists only in builds configured with
# --with-objectstore-backend-db, which link SQLite (Debian's 2.6.1 does not):
# say so now rather than through a failed C_Initialize.
if [ "$BACKEND" = db ] && ! grep -q -a 'sqlite3_' "$MODULE"; then
	die "$MODULE has no db backend (built without SQLite); use --backend file or set SOFTHSM2_MODULE"
fi

umask 077
WORK=$(mktemp -d "$BASE/token_speed.XXXXXX")
finish() {
	rc=$?
	rm -rf "$WORK"
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NPROC=$(nproc)
say "module $MODULE ($(softhsm2-util --version 2>/dev/null || echo 'version unknown')), $(openssl version)"
say "backend=$BACKEND log.level=$LOG_LEVEL slots.removable=$REMOVABLE tokendir=$WORK ($(stat -f -c %T "$WORK")) cores=$NPROC seconds=$SECONDS_PER_RUN runs=$RUNS openssl-divisor=$([ -n "$ELAPSED" ] && echo wall-clock || echo user-cpu)"

# make_token DIR KEY creates in DIR a SoftHSM2 configuration, PINs, a
# minimal responder.conf and a token holding one key of type KEY.
make_token() {
	dir=$1
	key=$2
	mkdir -p "$dir/tokens"
	cat >"$dir/softhsm2.conf" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = $BACKEND
log.level = $LOG_LEVEL
slots.removable = $REMOVABLE
EOF
	# PINs go from openssl straight into files only we can read.
	openssl rand -hex 16 | tr -d '\n' >"$dir/pin"
	openssl rand -hex 16 | tr -d '\n' >"$dir/so-pin"
	# provision reads only the token settings; the certificates named
	# here need not exist.
	cat >"$dir/responder.conf" <<EOF
index index
pkcs11_module $MODULE
token_label speed-$key
key_label speed-$key
key_id 01
pin_file pin
responder_cert responder.pem
issuer_cert ca.pem
EOF
	if ! SOFTHSM2_CONF="$dir/softhsm2.conf" "$OCSPCTL" -c "$dir/responder.conf" \
	    provision --so-pin-file "$dir/so-pin" --key "$key" >&2; then
		die "cannot provision a $key key with backend $BACKEND"
	fi
}

# median prints the middle of the numbers on its standard input.
median() {
	sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) exit 1
		if (NR % 2) print v[(NR + 1) / 2]
		else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# cpu_rate ALG [-multi N] prints the median over $RUNS runs of openssl
# speed's signatures per second for ALG (ecdsap256 or rsa2048).
cpu_rate() {
	alg=$1
	shift
	case $alg in
	ecdsap256) pattern='ecdsa \(nistp256\)' ;;
	rsa2048) pattern='^rsa 2048 bits' ;;
	esac
	i=0
	while [ "$i" -lt "$RUNS" ]; do
		# The table's sign/s column is the next to last.
		# shellcheck disable=SC2086 # $ELAPSED is empty or one word
		openssl speed $ELAPSED -seconds 3 "$@" "$alg" 2>/dev/null |
		    awk -v p="$pattern" '$0 ~ p { print $(NF - 1) }' | tail -n 1
		i=$((i + 1))
	done >"$WORK/cpu_runs"
	[ "$(wc -l <"$WORK/cpu_runs")" -eq "$RUNS" ] ||
	    die "cannot read openssl speed $* $alg output"
	say "openssl speed $ELAPSED -seconds 3 $* $alg runs: $(tr '\n' ' ' <"$WORK/cpu_runs")"
	median <"$WORK/cpu_runs"
}

BENCH=""
for key in $KEYS; do
	case $key in
	ec) alg=p256 speed_alg=ecdsap256 ;;
	rsa) alg=rsa2048 speed_alg=rsa2048 ;;
	esac
	make_token "$WORK/$key" "$key"
	say "token sweep for $alg"
	SOFTHSM2_CONF="$WORK/$key/softhsm2.conf" "$TOKEN_SPEED" \
	    --module "$MODULE" --token "speed-$key" --key "speed-$key" \
	    --pin-file "$WORK/$key/pin" --seconds "$SECONDS_PER_RUN" \
	    --sweep --runs "$RUNS" \
	    >"$WORK/sweep" || die "token_speed --sweep failed for $alg"
	# Its BENCH line is printed with the others at the end.
	grep -v '^BENCH ' "$WORK/sweep" || true
	token=$(awk '$1 == "BENCH" { print $3 }' "$WORK/sweep")
	[ -n "$token" ] || die "token_speed printed no BENCH line for $alg"
	BENCH="${BENCH}BENCH token_raw_$alg $token
"
	if [ "$SKIP_CPU" = no ]; then
		all=$(cpu_rate "$speed_alg" -multi "$NPROC")
		one=$(cpu_rate "$speed_alg")
		BENCH="${BENCH}BENCH cpu_${alg}_all_cores $all
BENCH cpu_${alg}_one_core $one
"
		say "$alg: token/cpu(all cores) = $(awk -v t="$token" -v c="$all" 'BEGIN { printf "%.3f", t / c }')"
	fi
done
printf '%s' "$BENCH"
