#!/bin/bash
# bench.sh - the batch-signing benchmarks, all in one run on one machine so
# that every figure is a ratio against a reference measured beside it:
#   - the token's raw signing rate (build/token_speed --sweep: the best any
#     number of sessions, threads or processes gets from the same token and
#     key) and `openssl speed` on all cores (the CPU's limit);
#   - `ocspctl sign` pre-signing 100,000 and 1,000,000 certificates with
#     P-256 and 100,000 with RSA-2048, with its peak memory;
#   - latency hiding through tests/pkcs11-shim with 5 ms per signature;
#   - serving pre-signed answers against signing the same requests.
# Each figure is printed as `BENCH <name> <value>`.
#
# usage: tests/bench/bench.sh [BUILD_DIR]   (from the repository root)
# Environment: BENCH_LARGE (default 1000000), BENCH_SMALL (100000),
# BENCH_RSA (100000), BENCH_QUICK=1 (small counts, for a smoke run).
set -euo pipefail

BUILD=${1:-build}
SMALL=${BENCH_SMALL:-100000}
LARGE=${BENCH_LARGE:-1000000}
RSA_COUNT=${BENCH_RSA:-100000}
LATENCY_COUNT=${BENCH_LATENCY:-20000}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	SMALL=5000 LARGE=20000 RSA_COUNT=2000 LATENCY_COUNT=2000
fi
DELAY_US=5000
ROOT=$(pwd)
TMP=$(mktemp -d /tmp/ocsp-bench.XXXXXX)
PIDS=()

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$TMP"
}
trap cleanup EXIT

say() { printf 'bench: %s\n' "$*" >&2; }
bench() { printf 'BENCH %s %s\n' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

free_port() {
	local p
	for p in $(seq 20000 20999); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	return 1
}

serials() { # N SEED: N random positive 16-byte serials in hex
	python3 -c "
import random, sys
random.seed(int(sys.argv[2]))
for _ in range(int(sys.argv[1])):
    print('%032X' % (random.getrandbits(126) | (1 << 124)))" "$1" "$2"
}

# with_conf BASE NEW KEY VALUE...: a copy of BASE with keys replaced or added
with_conf() {
	local base=$1 new=$2
	shift 2
	cp "$base" "$new"
	while [ $# -ge 2 ]; do
		sed -i "/^$1[[:space:]]/d" "$new"
		printf '%s %s\n' "$1" "$2" >>"$new"
		shift 2
	done
}

# sign_run CONF LABEL: times `ocspctl sign`; prints "rate rss_kib"
sign_run() {
	local conf=$1 label=$2 out
	out=$(/usr/bin/time -f 'rss_kib=%M' "$BUILD/ocspctl" -c "$conf" sign 2>&1) ||
		{ say "$label: ocspctl sign failed: $out"; return 1; }
	say "$label: $(echo "$out" | grep '^signed' || true) $(echo "$out" | grep -o 'rss_kib=[0-9]*')"
	echo "$(echo "$out" | sed -n 's/.*(\([0-9]*\)\/s).*/\1/p') $(echo "$out" | sed -n 's/.*rss_kib=\([0-9]*\).*/\1/p')"
}

machine() {
	say "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	say "machine: $(grep MemTotal /proc/meminfo | awk '{ printf "%.0f GiB", $2 / 1048576 }'), $(uname -r), SoftHSM2 $(dpkg-query -W -f='${Version}' softhsm2 2>/dev/null)"
}

cpu_speed() { # ALG: openssl speed, signatures per second
	local alg=$1 n
	n=$(nproc)
	openssl speed -elapsed -seconds 3 -multi "$n" "$alg" 2>/dev/null |
		awk -v alg="$alg" '
		alg == "ecdsap256" && /256 bits ecdsa \(nistp256\)/ { print $(NF - 1); exit }
		alg == "rsa2048" && /^rsa 2048 bits/ { print $(NF - 1); exit }'
}

deployment() { # KEY: a demo deployment with a token of its own
	local key=$1 dir=$TMP/$1
	BUILD=$BUILD scripts/demo.sh --dir "$dir" --port "$(free_port)" --key "$key" >/dev/null 2>"$TMP/demo-$key.log" ||
		{ cat "$TMP/demo-$key.log" >&2; exit 1; }
	echo "$dir"
}

raw_rate() { # DIR: the token's best raw rate
	local dir=$1 line
	line=$(SOFTHSM2_CONF=$dir/softhsm2.conf "$BUILD/token_speed" --module /usr/lib/softhsm/libsofthsm2.so \
		--token ocsp-demo --key ocsp-signer --pin-file "$dir/pin" --seconds 2 --sweep 2>&1 | tee "$TMP/raw.log" |
		sed -n 's/^best rate=\([0-9.]*\).*/\1/p')
	say "token_speed: $(grep '^best' "$TMP/raw.log")"
	echo "$line"
}

make -s "$BUILD/token_speed" "$BUILD/libpkcs11-shim.so" >/dev/null
machine

# --- P-256 ----------------------------------------------------------------
EC=$(deployment ec)
export SOFTHSM2_CONF=$EC/softhsm2.conf
SIGNER="hsm_processes 2 hsm_in_flight 4 hsm_sessions 4 sign_batch 512"
# shellcheck disable=SC2086
with_conf "$EC/responder.conf" "$EC/small.conf" index index-small log_requests no $SIGNER
# shellcheck disable=SC2086
with_conf "$EC/responder.conf" "$EC/large.conf" index index-large log_requests no $SIGNER

RAW_P256=$(raw_rate "$EC")
CPU_P256=$(cpu_speed ecdsap256)
bench token_raw_p256 "$RAW_P256"
bench cpu_p256_all_cores "$CPU_P256"

serials "$SMALL" 1 >"$TMP/small.txt"
"$BUILD/ocspctl" -c "$EC/small.conf" import-serials "$TMP/small.txt" >/dev/null
read -r RATE_SMALL RSS_SMALL < <(sign_run "$EC/small.conf" "p256 $SMALL")
serials "$LARGE" 2 >"$TMP/large.txt"
"$BUILD/ocspctl" -c "$EC/large.conf" import-serials "$TMP/large.txt" >/dev/null
read -r RATE_LARGE RSS_LARGE < <(sign_run "$EC/large.conf" "p256 $LARGE")
bench presign_rate_p256_small "$RATE_SMALL"
bench presign_rate_p256_large "$RATE_LARGE"
bench presign_vs_token_p256 "$(ratio "$RATE_SMALL" "$RAW_P256")"
bench presign_vs_cpu_p256 "$(ratio "$RATE_SMALL" "$CPU_P256")"
bench presign_rss_small_kib "$RSS_SMALL"
bench presign_rss_large_kib "$RSS_LARGE"
bench presign_rss_1m_over_100k "$(ratio "$RSS_LARGE" "$RSS_SMALL")"
"$BUILD/ocspctl" -c "$EC/small.conf" verify >"$TMP/verify.txt" ||
	{ say "verify failed: $(cat "$TMP/verify.txt")"; exit 1; }
say "verify: $(cat "$TMP/verify.txt")"

# --- latency hiding: 5 ms per signature ---------------------------------
WORST=""
for in_flight in 8 32 128; do
	per_process=$((in_flight / 2))
	with_conf "$EC/responder.conf" "$EC/lat-$in_flight.conf" index "index-lat-$in_flight" \
		pkcs11_module "$ROOT/$BUILD/libpkcs11-shim.so" hsm_processes 2 \
		hsm_in_flight "$per_process" hsm_sessions "$per_process" sign_batch 512 log_requests no
	serials "$LATENCY_COUNT" "$((10 + in_flight))" >"$TMP/lat.txt"
	"$BUILD/ocspctl" -c "$EC/lat-$in_flight.conf" import-serials "$TMP/lat.txt" >/dev/null
	read -r RATE _ < <(PKCS11_SHIM_SIGN_DELAY_US=$DELAY_US sign_run "$EC/lat-$in_flight.conf" "latency in_flight=$in_flight")
	EXPECTED=$(awk -v f="$in_flight" -v d="$DELAY_US" -v raw="$RAW_P256" \
		'BEGIN { e = f / (d / 1e6); printf "%.0f", (e < raw ? e : raw) }')
	R=$(ratio "$RATE" "$EXPECTED")
	bench "latency_hiding_${in_flight}" "$R"
	say "latency in_flight=$in_flight: $RATE/s, expected min(in_flight/5ms, raw) = $EXPECTED/s"
	WORST=$(awk -v w="${WORST:-1e9}" -v r="$R" 'BEGIN { print (r < w ? r : w) }')
done
bench latency_hiding_worst "$WORST"

# --- serving: pre-signed against on-demand, same requests, same client ---
PORT_A=$(free_port)
"$BUILD/ocsp-responder" -f "$EC/small.conf" -l "127.0.0.1:$PORT_A" 2>"$TMP/a.log" &
PIDS+=($!)
with_conf "$EC/responder.conf" "$EC/ondemand.conf" index index-ondemand log_requests no presign no
head -n 1000 "$TMP/small.txt" >"$TMP/od.txt"
"$BUILD/ocspctl" -c "$EC/ondemand.conf" import-serials "$TMP/od.txt" >/dev/null
PORT_B=$(free_port)
[ "$PORT_B" != "$PORT_A" ] || PORT_B=$((PORT_A + 1))
"$BUILD/ocsp-responder" -f "$EC/ondemand.conf" -l "127.0.0.1:$PORT_B" 2>"$TMP/b.log" &
PIDS+=($!)
SERIAL=$(head -n 1 "$TMP/small.txt")
openssl ocsp -issuer "$EC/ca.pem" -serial "0x$SERIAL" -no_nonce -reqout "$TMP/req.der" >/dev/null 2>&1
GET_PATH=$(base64 -w0 "$TMP/req.der" | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
sleep 1
for p in "$PORT_A" "$PORT_B"; do
	curl -sf -o /dev/null "http://127.0.0.1:$p/$GET_PATH" || { say "responder on $p not answering"; exit 1; }
done
wrk_rate() { wrk -t2 -c16 -d5s "http://127.0.0.1:$1/$GET_PATH" | awk '/^Requests\/sec/ { print $2 }'; }
A_RATES=() B_RATES=()
for _ in 1 2 3; do
	A_RATES+=("$(wrk_rate "$PORT_A")")
	B_RATES+=("$(wrk_rate "$PORT_B")")
done
SERVE_A=$(printf '%s\n' "${A_RATES[@]}" | median)
SERVE_B=$(printf '%s\n' "${B_RATES[@]}" | median)
say "serving: pre-signed ${A_RATES[*]} req/s, on-demand ${B_RATES[*]} req/s (wrk -t2 -c16 -d5s, GET)"
bench serve_presigned_rps "$SERVE_A"
bench serve_ondemand_rps "$SERVE_B"
bench presigned_vs_ondemand "$(ratio "$SERVE_A" "$SERVE_B")"

# --- RSA-2048 -----------------------------------------------------------
RSA=$(deployment rsa)
export SOFTHSM2_CONF=$RSA/softhsm2.conf
# shellcheck disable=SC2086
with_conf "$RSA/responder.conf" "$RSA/small.conf" index index-small log_requests no $SIGNER
RAW_RSA=$(raw_rate "$RSA")
CPU_RSA=$(cpu_speed rsa2048)
bench token_raw_rsa2048 "$RAW_RSA"
bench cpu_rsa2048_all_cores "$CPU_RSA"
serials "$RSA_COUNT" 3 >"$TMP/rsa.txt"
"$BUILD/ocspctl" -c "$RSA/small.conf" import-serials "$TMP/rsa.txt" >/dev/null
read -r RATE_RSA _ < <(sign_run "$RSA/small.conf" "rsa2048 $RSA_COUNT")
bench presign_rate_rsa2048 "$RATE_RSA"
bench presign_vs_token_rsa2048 "$(ratio "$RATE_RSA" "$RAW_RSA")"
