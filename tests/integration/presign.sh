#!/bin/bash
# presign.sh - end-to-end test of pre-signing: a demo deployment in a fresh
# temporary directory, `ocspctl sign` and `ocspctl verify`, the responder
# serving the stored bytes, a revocation while serving and the background
# refresher re-signing it, a refresh half a day later (under faketime),
# `ocspctl sign` killed with SIGKILL at three moments, and the token going
# away under a running responder. `openssl ocsp` and curl judge every
# answer.
#
# usage: tests/integration/presign.sh BUILD_DIR
# Prints `ok - name` or `FAIL - name (detail)` per check, `# ...` for what
# it measured, and ends with `N passed, N failed`; exits non-zero on any
# failure. KEEP_TMP=1 keeps the temporary directory for a look afterwards.
set -u

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd -P)
cd "$ROOT" || exit 2
BUILD=$1
case $BUILD in
/*) ;;
*) BUILD=$ROOT/$BUILD ;;
esac
CTL=$BUILD/ocspctl
RESPONDER=$BUILD/ocsp-responder

# Serials imported for each `ocspctl sign` that is killed: enough that
# signing them outlasts the last kill moment (1.5 s).
KILL_SERIALS=40000
KILL_MOMENTS="0.3 0.8 1.5"

PASSED=0
FAILED=0
for tool in openssl curl base64 od awk sha256sum; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		fail "tools present" "$tool not found"
		summary
		exit 1
	fi
done
if [ ! -x "$CTL" ] || [ ! -x "$RESPONDER" ]; then
	fail "binaries present" "$CTL or $RESPONDER missing: build them first"
	summary
	exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ocsp-presign.XXXXXX")
PIDS=""
cleanup() {
	for pid in $PIDS; do
		if kill -0 "$pid" 2>/dev/null; then
			kill -TERM "$pid" 2>/dev/null
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.5
			done
			kill -KILL "$pid" 2>/dev/null
		fi
	done
	# The token directory goes back where it belongs even when a check
	# stopped half-way (the demo is deleted anyway unless KEEP_TMP=1).
	if [ -n "${D:-}" ] && [ -d "$D/tokens.away" ] && [ ! -e "$D/tokens" ]; then
		mv "$D/tokens.away" "$D/tokens"
	fi
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		echo "# kept $TMP" >&2
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Helpers shared with the other integration suites.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

TAB=$(printf '\t')
USED_PORTS=" "

# now_ms prints the wall clock in milliseconds.
now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# judge RESP CERT [PREFIX...]: `openssl ocsp` reads the response in RESP
# as an answer about CERT (no nonce asked) and verifies it against the
# CA; its output goes to RESP.txt. PREFIX (faketime ...) runs openssl at
# another time.
judge() {
	local resp=$1 cert=$2 rc
	shift 2
	"$@" openssl ocsp -respin "$resp" -issuer "$CA" -cert "$cert" \
	    -no_nonce -CAfile "$CA" -resp_text \
	    >"$resp.stdout" 2>"$resp.stderr"
	rc=$?
	cat "$resp.stdout" "$resp.stderr" >"$resp.txt"
	return "$rc"
}

# says RESP CERT STATUS [REASON]: RESP (judged) verified and says STATUS
# (and REASON) for CERT.
says() {
	verified "$1.txt" && grep -qx "$2: $3" "$1.txt" &&
	    { [ -z "${4:-}" ] ||
		[ "$(summary_field "$1.txt" "$2" Reason)" = "$4" ]; }
}

# get REQ OUT: GETs the OCSP request in the file REQ (percent-encoded
# base64 in the path); prints the HTTP status code, the body goes to OUT,
# the headers to OUT.h.
get() {
	local b64
	b64=$(base64 -w0 "$1" | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g')
	curl -s --max-time 10 -o "$2" -D "$2.h" -w '%{http_code}' \
	    "http://127.0.0.1:$PORT/$b64" 2>/dev/null
}

# post REQ OUT: POSTs the OCSP request in the file REQ, as get does.
post() {
	curl -s --max-time 10 -o "$2" -D "$2.h" -w '%{http_code}' \
	    -H 'Content-Type: application/ocsp-request' --data-binary "@$1" \
	    "http://127.0.0.1:$PORT/" 2>/dev/null
}

# make_req OUT CERT: a request for CERT with one SHA-1 CertID and no nonce.
make_req() {
	openssl ocsp -issuer "$CA" -cert "$2" -no_nonce -reqout "$1" \
	    >/dev/null 2>&1
}

# Access-log lines: the responder writes one per request, but only after
# it queued the answer, so the client may read the answer first.
n_logged() {
	grep -c 'ocsp: client=' "$LOG" 2>/dev/null
}
# logged_after N: waits up to 2 s for access-log line N+1 and prints it.
logged_after() {
	local line
	for _ in $(seq 1 200); do
		line=$(grep 'ocsp: client=' "$LOG" 2>/dev/null | sed -n "$(($1 + 1))p")
		if [ -n "$line" ]; then
			printf '%s\n' "$line"
			return 0
		fi
		sleep 0.01
	done
	return 1
}
# source_of LINE prints the source= field of an access-log line.
source_of() {
	sed -n 's/.* source=\([a-z]*\).*/\1/p' <<<"$1"
}

# start_responder LOG [PREFIX...]: starts the demo's responder on PORT in
# the background (through PREFIX, e.g. faketime, when given), its output
# in LOG; sets RPID to the responder itself and WPID to what the shell
# started (the same unless a wrapper forks).
start_responder() {
	local log=$1
	shift
	set -- "$@" "$RESPONDER" -f "$CONF" -l "127.0.0.1:$PORT"
	# A background job of a script ignores SIGINT unless told otherwise.
	if env --default-signal=INT true 2>/dev/null; then
		set -- env --default-signal=INT "$@"
	fi
	"$@" >"$log" 2>&1 &
	WPID=$!
	RPID=$WPID
	PIDS="$PIDS $WPID"
}

# forget_pid PID: PID has been waited for; cleanup must not signal
# whatever process gets its number next.
forget_pid() {
	PIDS=" $PIDS "
	PIDS=${PIDS// $1 / }
}

# find_responder: once the responder answers, RPID becomes the process
# that runs it, should a wrapper have forked it.
find_responder() {
	local child
	if [ "$(readlink "/proc/$WPID/exe" 2>/dev/null)" != "$RESPONDER" ]; then
		# shellcheck disable=SC2013 # one line of pids, split into words
		for child in $(cat "/proc/$WPID/task/"*/children 2>/dev/null); do
			if [ "$(readlink "/proc/$child/exe" 2>/dev/null)" = "$RESPONDER" ]; then
				RPID=$child
				PIDS="$PIDS $RPID"
			fi
		done
	fi
}

# wait_up PID: waits until the responder answers HTTP on PORT at all.
wait_up() {
	for _ in $(seq 1 300); do
		kill -0 "$1" 2>/dev/null || return 1
		if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/"; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# stop_responder NAME: SIGTERM to RPID; checks it exits 0 (the exit
# status of WPID, which a wrapper passes on).
stop_responder() {
	local name=$1 rc
	if ! kill -0 "$RPID" 2>/dev/null; then
		fail "$name: responder still alive at the end" "it died earlier"
		return
	fi
	ok "$name: responder still alive at the end"
	kill -TERM "$RPID"
	for _ in $(seq 1 100); do
		kill -0 "$WPID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$WPID" 2>/dev/null; then
		fail "$name: SIGTERM stops the responder" "still running after 10 s"
		kill -KILL "$RPID" "$WPID" 2>/dev/null
		wait "$WPID" 2>/dev/null
		forget_pid "$WPID"
		forget_pid "$RPID"
		return
	fi
	wait "$WPID"
	rc=$?
	forget_pid "$WPID"
	forget_pid "$RPID"
	check "$name: SIGTERM stops the responder with exit 0" "exit $rc" \
	    test "$rc" -eq 0
}

# ctl NAME ARGS...: runs ocspctl on the demo's config (or on CTL_CONF when
# set), stdout to $TMP/NAME.out, stderr to $TMP/NAME.err; returns its exit
# status. CTL_PREFIX (faketime ...) runs it at another time.
ctl() {
	local name=$1
	shift
	${CTL_PREFIX[@]+"${CTL_PREFIX[@]}"} "$CTL" -c "${CTL_CONF:-$CONF}" \
	    "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
}

# verify_counts NAME: `ocspctl verify`; sets VRC (its exit status) and
# V_CERTS, V_OK, V_BAD, V_MISSING, V_AWAITING from its line, V_LINE.
verify_counts() {
	ctl "$1" verify
	VRC=$?
	V_LINE=$(grep -m1 '^certificates=' "$TMP/$1.out")
	V_CERTS=$(sed -n 's/.*certificates=\([0-9]*\).*/\1/p' <<<"$V_LINE")
	V_OK=$(sed -n 's/.*responses_ok=\([0-9]*\).*/\1/p' <<<"$V_LINE")
	V_BAD=$(sed -n 's/.* bad=\([0-9]*\).*/\1/p' <<<"$V_LINE")
	V_MISSING=$(sed -n 's/.*missing=\([0-9]*\).*/\1/p' <<<"$V_LINE")
	V_AWAITING=$(sed -n 's/.*awaiting_status_change=\([0-9]*\).*/\1/p' <<<"$V_LINE")
	[ -n "$V_LINE" ] || V_LINE="no counts: $(head -c 200 "$TMP/$1.err")"
}

# signed_count NAME prints N of "signed N responses" in NAME.out.
signed_count() {
	sed -n 's/^signed \([0-9]*\) responses .*/\1/p' "$TMP/$1.out" | head -n 1
}

# random_serials N prints N random 16-byte serials in hex, the top bit
# clear and the first byte not zero: positive INTEGERs of 16 bytes.
random_serials() {
	head -c $(($1 * 16)) /dev/urandom | od -An -v -tx1 | tr -d ' \n' |
	    fold -w 32 | awk '{
		n = (index("0123456789abcdef", substr($0, 1, 1)) - 1) % 8
		first = substr("01234567", n + 1, 1) substr($0, 2, 1)
		if (first == "00")
			first = "01"
		print toupper(first substr($0, 3))
	    }'
}

# response_count INDEX prints how many responses the LMDB index in the
# directory INDEX holds (mdb_stat reads it without disturbing a writer),
# or nothing without mdb_stat.
response_count() {
	command -v mdb_stat >/dev/null 2>&1 || return 0
	mdb_stat -s responses "$1" 2>/dev/null |
	    sed -n 's/^ *Entries: \([0-9]*\)$/\1/p'
}

########################################################################
# The demo, pre-signed by `ocspctl sign`
########################################################################
D=$TMP/demo
CA=$D/ca.pem
CONF=$D/responder.conf
free_port || {
	fail "a free port" "none found"
	summary
	exit 1
}
URL="http://127.0.0.1:$PORT/"
if BUILD=$BUILD scripts/demo.sh --dir "$D" --port "$PORT" \
    >"$TMP/demo.out" 2>"$TMP/demo.err"; then
	ok "demo.sh sets up the demo"
else
	fail "demo.sh sets up the demo" "$(tail -n 3 "$TMP/demo.err" | tr '\n' ' ')"
	summary
	exit 1
fi
export SOFTHSM2_CONF="$D/softhsm2.conf"
GOOD=$D/good.pem
REVOKED=$D/revoked.pem
GOOD_SERIAL=$(serial_of "$GOOD")

ctl sign1 sign
rc=$?
n=$(signed_count sign1)
check "ocspctl sign: exit 0, signs both certificates" \
    "exit $rc: $(head -c 200 "$TMP/sign1.out" "$TMP/sign1.err" | tr '\n' ' ')" \
    test "$rc" -eq 0 -a "${n:-0}" -eq 2
verify_counts verify1
check "ocspctl verify after sign: exit 0, bad=0, missing=0" "exit $VRC: $V_LINE" \
    test "$VRC" -eq 0 -a "$V_BAD" = 0 -a "$V_MISSING" = 0 -a "$V_OK" = 2

########################################################################
# Serving the stored bytes
########################################################################
LOG=$TMP/responder.log
start_responder "$LOG"
if wait_up "$RPID"; then
	ok "the responder answers on 127.0.0.1:$PORT"
else
	fail "the responder answers on 127.0.0.1:$PORT" \
	    "$(tail -n 5 "$LOG" | tr '\n' ' ')"
	summary
	exit 1
fi

# A POST without a nonce, as openssl sends it.
n=$(n_logged)
ask "$TMP/post1.txt" -issuer "$CA" -cert "$GOOD" -no_nonce
line=$(logged_after "$n")
check "POST without a nonce for good.pem: verified, good" \
    "$(grep -m1 -iE 'error|good.pem:' "$TMP/post1.txt")" \
    says "$TMP/post1" "$GOOD" good
check "POST without a nonce: source=presigned" "$line" \
    test "$(source_of "$line")" = presigned

# GET, twice: the same stored bytes, with cache headers that match them.
make_req "$TMP/good.req" "$GOOD"
n=$(n_logged)
before=$(date -u +%s)
code=$(get "$TMP/good.req" "$TMP/get1.resp")
line=$(logged_after "$n")
judge "$TMP/get1.resp" "$GOOD"
check "GET for good.pem: HTTP 200, verified, good" \
    "HTTP $code, $(grep -m1 -iE 'error|good.pem:' "$TMP/get1.resp.txt")" \
    says "$TMP/get1.resp" "$GOOD" good
check "GET: source=presigned" "$line" test "$(source_of "$line")" = presigned
n=$(n_logged)
code2=$(get "$TMP/good.req" "$TMP/get2.resp")
line=$(logged_after "$n")
if [ "$code2" = 200 ] && cmp -s "$TMP/get1.resp" "$TMP/get2.resp" &&
    [ "$(source_of "$line")" = presigned ]; then
	ok "two GETs: byte-identical bodies, both presigned"
else
	fail "two GETs: byte-identical bodies, both presigned" \
	    "HTTP $code2, $(cmp "$TMP/get1.resp" "$TMP/get2.resp" 2>&1), $line"
fi
etag=$(header "$TMP/get1.resp" ETag)
want="\"$(sha256sum "$TMP/get1.resp" | cut -d' ' -f1)\""
check "GET: ETag is the quoted SHA-256 of the body" "$etag, want $want" \
    test "$etag" = "$want"
this=$(summary_field "$TMP/get1.resp.txt" "$GOOD" "This Update")
next=$(summary_field "$TMP/get1.resp.txt" "$GOOD" "Next Update")
this_s=$(epoch "$this")
next_s=$(epoch "$next")
cc=$(header "$TMP/get1.resp" Cache-Control)
max_age=$(sed -n 's/.*max-age=\([0-9]*\).*/\1/p' <<<"$cc")
if [ -n "$max_age" ] && [ -n "$next_s" ] && [ "$max_age" -ge 0 ] &&
    [ "$max_age" -le $((next_s - before)) ]; then
	ok "GET: Cache-Control max-age within [0, nextUpdate - now]"
else
	fail "GET: Cache-Control max-age within [0, nextUpdate - now]" \
	    "'$cc', nextUpdate '$next', now $before"
fi
lm=$(epoch "$(header "$TMP/get1.resp" Last-Modified)")
ex=$(epoch "$(header "$TMP/get1.resp" Expires)")
check "GET: Last-Modified = thisUpdate, Expires = nextUpdate" \
    "Last-Modified $lm, Expires $ex, this $this_s, next $next_s" \
    test -n "$this_s" -a "$lm" = "$this_s" -a "$ex" = "$next_s"

########################################################################
# A revocation while serving
########################################################################
# Times count from the start of `ocspctl revoke`, its own run included.
t0=$(now_ms)
"$CTL" -c "$CONF" revoke "$GOOD_SERIAL" --reason keyCompromise \
    >"$TMP/revoke1.out" 2>"$TMP/revoke1.err"
rc=$?
revoke_ms=$(($(now_ms) - t0))
check "ocspctl revoke good.pem while serving" \
    "exit $rc: $(head -c 200 "$TMP/revoke1.err")" test "$rc" -eq 0
n=$(n_logged)
code=$(post "$TMP/good.req" "$TMP/rev0.resp")
line=$(logged_after "$n")
judge "$TMP/rev0.resp" "$GOOD"
check "the very next request: revoked, keyCompromise, verified" \
    "HTTP $code, $(grep -m1 -iE 'error|good.pem:' "$TMP/rev0.resp.txt"), $line" \
    says "$TMP/rev0.resp" "$GOOD" revoked keyCompromise
echo "# the very next request after the revocation: source=$(source_of "$line")"
# Until a stored response says revoked and is served as it is.
first_ms=""
tries=0
while [ $(($(now_ms) - t0 - revoke_ms)) -lt 2000 ]; do
	tries=$((tries + 1))
	n=$(n_logged)
	post "$TMP/good.req" "$TMP/rev.resp" >/dev/null
	t=$(now_ms)
	line=$(logged_after "$n")
	if [ "$(source_of "$line")" = presigned ]; then
		judge "$TMP/rev.resp" "$GOOD"
		if says "$TMP/rev.resp" "$GOOD" revoked keyCompromise; then
			first_ms=$((t - t0))
			break
		fi
	fi
	sleep 0.02
done
if [ -n "$first_ms" ]; then
	echo "# revocation -> first presigned revoked answer: $first_ms ms ($tries requests; ocspctl revoke itself took $revoke_ms ms)"
	check "a presigned revoked answer within 1.5 s of the revocation" \
	    "$first_ms ms" test "$first_ms" -lt 1500
else
	fail "a presigned revoked answer within 1.5 s of the revocation" \
	    "none in 2 s, last: $line"
fi

# The same with no request in between: the on-demand answer above is
# kept for the next client, so this shows the refresher at work. A third
# certificate, known by its serial only, signed by the refresher first.
EXTRA_SERIAL=$(random_serials 1)
echo "$EXTRA_SERIAL" >"$TMP/extra.txt"
"$CTL" -c "$CONF" import-serials "$TMP/extra.txt" >"$TMP/extra.out" \
    2>"$TMP/extra.err"
rc=$?
t1=$(now_ms)
while :; do
	verify_counts verify-extra
	[ "$V_MISSING" = 0 ] && break
	[ $(($(now_ms) - t1)) -ge 3000 ] && break
	sleep 0.05
done
check "the refresher signs a certificate imported while serving" \
    "import exit $rc; $V_LINE" \
    test "$rc" -eq 0 -a "$VRC" -eq 0 -a "$V_MISSING" = 0 -a "$V_CERTS" = 3
t0=$(now_ms)
"$CTL" -c "$CONF" revoke "$EXTRA_SERIAL" --reason keyCompromise \
    >"$TMP/revoke2.out" 2>"$TMP/revoke2.err"
resigned_ms=""
while [ $(($(now_ms) - t0)) -lt 3000 ]; do
	verify_counts verify-resign
	if [ "$VRC" -eq 0 ] && [ "$V_AWAITING" = 0 ] && [ "$V_OK" = 3 ]; then
		resigned_ms=$(($(now_ms) - t0))
		break
	fi
	sleep 0.05
done
n=$(n_logged)
ask "$TMP/extra-q.txt" -issuer "$CA" -serial "0x$EXTRA_SERIAL" -no_nonce
line=$(logged_after "$n")
if [ -n "$resigned_ms" ]; then
	echo "# revocation -> refresher stored the revoked response: <= $resigned_ms ms"
fi
if [ -n "$resigned_ms" ] && [ "$resigned_ms" -lt 1500 ] &&
    verified "$TMP/extra-q.txt" &&
    grep -qx "0x$EXTRA_SERIAL: revoked" "$TMP/extra-q.txt" &&
    [ "$(source_of "$line")" = presigned ]; then
	ok "with no request: the refresher re-signs a revocation within 1.5 s, served presigned"
else
	fail "with no request: the refresher re-signs a revocation within 1.5 s, served presigned" \
	    "${resigned_ms:-not in 3 s} ms; $V_LINE; $line"
fi

########################################################################
# The token gone: stored answers still go out, the rest is tryLater
########################################################################
make_req "$TMP/revoked.req" "$REVOKED"
if mv "$D/tokens" "$D/tokens.away"; then
	n=$(n_logged)
	code=$(get "$TMP/revoked.req" "$TMP/gone-get.resp")
	line=$(logged_after "$n")
	judge "$TMP/gone-get.resp" "$REVOKED"
	if says "$TMP/gone-get.resp" "$REVOKED" revoked keyCompromise &&
	    [ "$(source_of "$line")" = presigned ]; then
		ok "token gone: GET for revoked.pem verified, presigned"
	else
		fail "token gone: GET for revoked.pem verified, presigned" \
		    "HTTP $code, $(grep -m1 -iE 'error|revoked.pem:' "$TMP/gone-get.resp.txt"), $line"
	fi
	n=$(n_logged)
	ask "$TMP/gone-post.txt" -issuer "$CA" -cert "$REVOKED" -no_nonce
	line=$(logged_after "$n")
	if says "$TMP/gone-post" "$REVOKED" revoked keyCompromise &&
	    [ "$(source_of "$line")" = presigned ]; then
		ok "token gone: POST for revoked.pem verified, presigned"
	else
		fail "token gone: POST for revoked.pem verified, presigned" \
		    "$(grep -m1 -iE 'error|revoked.pem:' "$TMP/gone-post.txt"), $line"
	fi
	t0=$(now_ms)
	openssl ocsp -issuer "$CA" -cert "$REVOKED" -timeout 10 \
	    -reqout "$TMP/gone-nonce.req" -respout "$TMP/gone-nonce.resp" \
	    -url "$URL" >"$TMP/gone-nonce.txt" 2>&1
	ms=$(($(now_ms) - t0))
	st=$(resp_status "$TMP/gone-nonce.resp")
	echo "# token gone: a request with a nonce answered $st in $ms ms"
	check "token gone: a request with a nonce gets tryLater (3) within 5 s" \
	    "$st after $ms ms: $(head -n 1 "$TMP/gone-nonce.txt")" \
	    test "$st" = tryLater -a "$ms" -lt 5000
	check "token gone: the responder is still alive" "" kill -0 "$RPID"
	mv "$D/tokens.away" "$D/tokens"
	# Not a check: whether the responder signs again once the token is
	# back (libp11 sessions may not recover without a restart).
	sleep 1
	openssl ocsp -issuer "$CA" -cert "$REVOKED" -timeout 10 \
	    -respout "$TMP/back.resp" -url "$URL" >/dev/null 2>&1
	echo "# token back for 1 s: a request with a nonce gets $(resp_status "$TMP/back.resp")"
else
	fail "token gone: move the token directory away" "mv failed"
fi

# Before the refresh check: what the index holds, and one stored
# response's thisUpdate, read from the bytes served as they are.
n=$(n_logged)
get "$TMP/revoked.req" "$TMP/before13.resp" >/dev/null
line=$(logged_after "$n")
judge "$TMP/before13.resp" "$REVOKED"
THIS0=$(epoch "$(summary_field "$TMP/before13.resp.txt" "$REVOKED" "This Update")")
[ "$(source_of "$line")" = presigned ] || THIS0=""
stop_responder "serving"

########################################################################
# Refresh: half a day later everything is due again
########################################################################
if ! command -v faketime >/dev/null 2>&1; then
	ok "# SKIP refresh after 13 h: faketime is not installed (Debian package faketime)"
else
	FAKE=(faketime -f '+13h')
	# Under ASan: libfaketime is preloaded ahead of the ASan runtime,
	# and the ASan allocator must not read the clock while it holds its
	# lock (libfaketime's first clock_gettime() allocates: deadlock).
	FAKE_ENV=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0:allocator_release_to_os_interval_ms=-1")
	verify_counts verify-before13
	stored=$V_OK
	CTL_PREFIX=("${FAKE_ENV[@]}")
	command -v timeout >/dev/null 2>&1 && CTL_PREFIX+=(timeout 120)
	CTL_PREFIX+=("${FAKE[@]}")
	ctl sign13 sign
	rc=$?
	unset CTL_PREFIX
	n=$(signed_count sign13)
	echo "# faketime +13h: $(head -n 1 "$TMP/sign13.out"); stored before: $stored"
	check "faketime +13h: ocspctl sign re-signs every stored response" \
	    "exit $rc, signed '${n:-}', stored $stored: $(head -c 200 "$TMP/sign13.err")" \
	    test "$rc" -eq 0 -a "${n:-0}" -gt 0 -a "${n:-0}" = "$stored"
	free_port || PORT=""
	URL="http://127.0.0.1:$PORT/"
	LOG=$TMP/responder13.log
	start_responder "$LOG" "${FAKE_ENV[@]}" "${FAKE[@]}"
	if [ -n "$PORT" ] && wait_up "$WPID"; then
		find_responder
		n=$(n_logged)
		code=$(get "$TMP/revoked.req" "$TMP/after13.resp")
		line=$(logged_after "$n")
		judge "$TMP/after13.resp" "$REVOKED" "${FAKE[@]}"
		this13=$(epoch "$(summary_field "$TMP/after13.resp.txt" "$REVOKED" "This Update")")
		d=""
		[ -n "$THIS0" ] && [ -n "$this13" ] && d=$((this13 - THIS0 - 13 * 3600))
		echo "# stored thisUpdate moved by 13 h + ${d:-?} s"
		if says "$TMP/after13.resp" "$REVOKED" revoked keyCompromise &&
		    [ "$(source_of "$line")" = presigned ] && [ -n "$d" ] &&
		    [ "$d" -ge 0 ] && [ "$d" -le 300 ]; then
			ok "faketime +13h: the stored response served has thisUpdate = before + 13 h"
		else
			fail "faketime +13h: the stored response served has thisUpdate = before + 13 h" \
			    "HTTP $code, before '$THIS0', after '$this13', $line"
		fi
		stop_responder "faketime +13h"
	else
		fail "faketime +13h: a second responder answers" \
		    "$(tail -n 5 "$LOG" | tr '\n' ' ')"
	fi
fi

########################################################################
# ocspctl sign killed with SIGKILL, then run again
########################################################################
k=0
for moment in $KILL_MOMENTS; do
	k=$((k + 1))
	# An index of its own for each round, so that each verify reads
	# only this round's responses.
	CTL_CONF=$D/kill$k.conf
	sed "s/^index .*/index kill$k/" "$CONF" >"$CTL_CONF"
	total=0
	killed=""
	for attempt in 1 2; do
		random_serials "$KILL_SERIALS" >"$TMP/serials-$k-$attempt.txt"
		ctl "import-$k-$attempt" import-serials "$TMP/serials-$k-$attempt.txt"
		rc=$?
		if [ "$rc" -ne 0 ] || ! grep -q "($KILL_SERIALS new)" "$TMP/import-$k-$attempt.out"; then
			fail "kill at $moment s: import $KILL_SERIALS serials" \
			    "exit $rc: $(head -c 200 "$TMP/import-$k-$attempt.out" "$TMP/import-$k-$attempt.err")"
			break
		fi
		total=$((total + KILL_SERIALS))
		"$CTL" -c "$CTL_CONF" sign >"$TMP/killed-$k-$attempt.out" \
		    2>"$TMP/killed-$k-$attempt.err" &
		spid=$!
		PIDS="$PIDS $spid"
		sleep "$moment"
		# Kill only once something was signed (a slow start under
		# ASan may not have signed anything yet).
		for _ in $(seq 1 250); do
			kill -0 "$spid" 2>/dev/null || break
			c=$(response_count "$D/kill$k")
			[ "${c:-1}" -gt 0 ] && break
			sleep 0.02
		done
		kill -KILL "$spid" 2>/dev/null
		# (bash would report the job's death on stderr)
		{ wait "$spid"; } 2>/dev/null
		rc=$?
		forget_pid "$spid"
		verify_counts "verify-killed-$k-$attempt"
		if [ "$rc" -eq 137 ] && [ "${V_MISSING:-0}" -gt 0 ] &&
		    [ "${V_OK:-0}" -gt 0 ]; then
			killed=$attempt
			break
		fi
		echo "# kill at $moment s, attempt $attempt: sign exit $rc, $V_LINE"
		[ "$attempt" -eq 1 ] && echo "# retrying with $KILL_SERIALS more serials"
	done
	if [ -z "$killed" ]; then
		fail "kill -9 at $moment s: killed after some but not all were signed" \
		    "sign exit $rc; $V_LINE"
		continue
	fi
	echo "# kill -9 at $moment s: $V_OK of $total signed"
	if [ "$VRC" -eq 0 ] && [ "$V_BAD" = 0 ] && [ "$V_MISSING" -gt 0 ] &&
	    [ "$V_CERTS" = "$total" ] && [ $((V_OK + V_MISSING)) -eq "$total" ]; then
		ok "kill -9 at $moment s: ocspctl verify exits 0, bad=0, missing=$V_MISSING"
	else
		fail "kill -9 at $moment s: ocspctl verify exits 0, bad=0, missing>0" \
		    "exit $VRC: $V_LINE"
	fi
	missing=$V_MISSING
	start=$(now_ms)
	ctl "resign-$k" sign
	rc=$?
	ms=$(($(now_ms) - start))
	n=$(signed_count "resign-$k")
	echo "# rerun after the kill: $(head -n 1 "$TMP/resign-$k.out") ($ms ms)"
	check "kill -9 at $moment s: ocspctl sign again finishes, signing exactly the $missing missing" \
	    "exit $rc: $(head -c 200 "$TMP/resign-$k.out" "$TMP/resign-$k.err")" \
	    test "$rc" -eq 0 -a "${n:-x}" = "$missing"
	verify_counts "verify-done-$k"
	check "kill -9 at $moment s: then ocspctl verify: missing=0 bad=0" \
	    "exit $VRC: $V_LINE" \
	    test "$VRC" -eq 0 -a "$V_BAD" = 0 -a "$V_MISSING" = 0 -a "$V_OK" = "$total"
	unset CTL_CONF
	rm -rf "${D:?}/kill$k"
done

########################################################################
# Sanitizers: nothing reported by any process
########################################################################
if grep -lE 'AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer' \
    "$TMP"/*.err "$TMP"/*.log >"$TMP/san.list" 2>/dev/null; then
	fail "no sanitizer report from the responder or ocspctl" \
	    "$(tr '\n' ' ' <"$TMP/san.list")"
else
	ok "no sanitizer report from the responder or ocspctl"
fi

if [ "$FAILED" -gt 0 ]; then
	for log in "$TMP"/responder*.log; do
		[ -f "$log" ] || continue
		echo "# last lines of $(basename "$log"):"
		tail -n 15 "$log" | sed 's/^/#   /'
	done
fi
summary
