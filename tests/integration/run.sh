#!/bin/bash
# run.sh - end-to-end test of the responder: a demo deployment (SoftHSM
# token, LMDB index, test PKI) in a fresh temporary directory, the responder
# on a free loopback port, and `openssl ocsp` and curl as independent
# clients judging every answer.
#
# usage: tests/integration/run.sh BUILD_DIR
# Prints `ok - name` or `FAIL - name (detail)` per check and ends with
# `N passed, N failed`; exits non-zero on any failure. KEEP_TMP=1 keeps
# the temporary directory for a look afterwards.
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

PASSED=0
FAILED=0
for tool in openssl curl base64 od; do
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

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ocsp-it.XXXXXX")
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

# gentime_epoch YYYYMMDDHHMMSSZ prints it in seconds since 1970.
gentime_epoch() {
	local t=$1
	date -u -d "${t:0:4}-${t:4:2}-${t:6:2} ${t:8:2}:${t:10:2}:${t:12:2}" \
	    +%s 2>/dev/null
}

# verify_resp FILE [REQ]: the response in FILE is successful and verifies
# against the CA (and matches REQ's nonce when REQ is given).
verify_resp() {
	local rc
	if [ -n "${2:-}" ]; then
		openssl ocsp -reqin "$2" -respin "$1" -CAfile "$CA" -resp_text \
		    >"$1.stdout" 2>"$1.stderr"
	else
		openssl ocsp -respin "$1" -CAfile "$CA" -resp_text \
		    >"$1.stdout" 2>"$1.stderr"
	fi
	rc=$?
	cat "$1.stdout" "$1.stderr" >"$1.txt"
	[ "$rc" -eq 0 ] && verified "$1.txt"
}

# http METHOD PATH OUT [CURL ARGS...]: prints the HTTP status code; the
# body goes to OUT, the headers to OUT.h.
http() {
	local method=$1 path=$2 out=$3
	shift 3
	curl -s -X "$method" --path-as-is --max-time 10 -o "$out" -D "$out.h" \
	    -w '%{http_code}' "$@" "http://127.0.0.1:$PORT$path" 2>/dev/null
}

# post BODY PATH OUT: POSTs the file BODY as an OCSP request.
post() {
	http POST "$2" "$3" -H 'Content-Type: application/ocsp-request' \
	    --data-binary "@$1"
}

# gave_up CODE: true once three exchanges of a sweep got no HTTP answer,
# so that a hung responder costs a minute, not an hour.
NO_ANSWER=0
gave_up() {
	[ "$1" = 000 ] && NO_ANSWER=$((NO_ANSWER + 1))
	if [ "$NO_ANSWER" -ge 3 ]; then
		bad="$bad (gave up: no answer three times)"
		NO_ANSWER=0
		return 0
	fi
	return 1
}

hex_of() {
	od -An -v -tx1 "$1" | tr -d ' \n'
}
# unhex HEX writes the bytes HEX names to stdout.
unhex() {
	printf '%b' "$(printf '%s' "$1" | sed 's/../\\x&/g')"
}

# build_req OUT SPEC...: writes the DER of an OCSPRequest, built with
# `openssl asn1parse -genconf`, to OUT. Each SPEC is one of
#   id:HASH:NAME_HASH:KEY_HASH:SERIAL  a CertID (SERIAL as in INTEGER:0x01)
#   nonce:HEX                          the nonce extension
#   ext:OID:CRITICAL:HEX               another extension (CRITICAL 0 or 1)
# With no id, the request list is empty.
build_req() {
	local out=$1 list="" sections="" exts="" n=0 spec kind a b c d crit
	shift
	for spec in "$@"; do
		n=$((n + 1))
		IFS=: read -r kind a b c d <<EOF
$spec
EOF
		case $kind in
		id)
			list="${list}r$n = SEQUENCE:req$n
"
			sections="${sections}[req$n]
certid = SEQUENCE:certid$n
[certid$n]
alg = SEQUENCE:alg$n
name_hash = FORMAT:HEX,OCTETSTRING:$b
key_hash = FORMAT:HEX,OCTETSTRING:$c
serial = INTEGER:$d
[alg$n]
oid = OID:$a
params = NULL
"
			;;
		nonce)
			exts="${exts}e$n = SEQUENCE:ext$n
"
			sections="${sections}[ext$n]
oid = OID:1.3.6.1.5.5.7.48.1.2
value = OCTWRAP,FORMAT:HEX,OCTETSTRING:$a
"
			;;
		ext)
			exts="${exts}e$n = SEQUENCE:ext$n
"
			crit=""
			[ "$b" = 1 ] && crit="critical = BOOLEAN:TRUE
"
			sections="${sections}[ext$n]
oid = OID:$a
${crit}value = FORMAT:HEX,OCTETSTRING:$c
"
			;;
		esac
	done
	{
		echo "asn1 = SEQUENCE:request"
		echo "[request]"
		echo "tbs = SEQUENCE:tbs"
		echo "[tbs]"
		echo "list = SEQUENCE:list"
		[ -n "$exts" ] && echo "extensions = EXPLICIT:2,SEQUENCE:extensions"
		echo "[list]"
		printf '%s' "$list"
		if [ -n "$exts" ]; then
			echo "[extensions]"
			printf '%s' "$exts"
		fi
		printf '%s' "$sections"
	} >"$out.cnf"
	openssl asn1parse -genconf "$out.cnf" -noout -out "$out" >/dev/null
}

# cert_id_hashes HASH ISSUER: sets NAME_HASH and KEY_HASH for ISSUER.
cert_id_hashes() {
	openssl ocsp "-$1" -issuer "$2" -serial 0x01 -no_nonce -req_text \
	    >"$TMP/hashes.txt" 2>&1
	NAME_HASH=$(sed -n 's/^ *Issuer Name Hash: //p' "$TMP/hashes.txt")
	KEY_HASH=$(sed -n 's/^ *Issuer Key Hash: //p' "$TMP/hashes.txt")
}

# start_responder DIR PORT LOG: starts the responder of the demo in DIR in
# the background, its output in LOG; sets RPID.
start_responder() {
	local dir=$1 port=$2 log=$3
	set -- "$RESPONDER" -f "$dir/responder.conf" -l "127.0.0.1:$port"
	# A background job of a script ignores SIGINT unless told otherwise.
	if env --default-signal=INT true 2>/dev/null; then
		set -- env --default-signal=INT "$@"
	fi
	SOFTHSM2_CONF=$dir/softhsm2.conf "$@" >"$log" 2>&1 &
	RPID=$!
	PIDS="$PIDS $RPID"
}

# wait_up PORT PID: waits until the responder answers HTTP at all.
wait_up() {
	for _ in $(seq 1 300); do
		kill -0 "$2" 2>/dev/null || return 1
		if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# stop_responder PID SIGNAL NAME: stops it and checks it exits 0.
stop_responder() {
	local pid=$1 sig=$2 name=$3 rc
	if ! kill -0 "$pid" 2>/dev/null; then
		fail "$name: responder still alive at the end" "it died earlier"
		return
	fi
	ok "$name: responder still alive at the end"
	kill "-$sig" "$pid"
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		fail "$name: SIG$sig stops the responder" "still running after 10 s"
		kill -KILL "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		return
	fi
	wait "$pid"
	rc=$?
	check "$name: SIG$sig stops the responder with exit 0" "exit $rc" \
	    test "$rc" -eq 0
}

# check_log LOG DIR NAME: no PIN and no sanitizer report in the log.
check_log() {
	local log=$1 dir=$2 name=$3 pin so_pin
	pin=$(cat "$dir/pin")
	so_pin=$(cat "$dir/so-pin")
	if [ -n "$pin" ] && ! grep -qF -- "$pin" "$log" &&
	    ! grep -qF -- "$so_pin" "$log"; then
		ok "$name: the PIN never appears in the responder's log"
	else
		fail "$name: the PIN never appears in the responder's log" \
		    "found in $log"
	fi
	if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer' "$log"; then
		fail "$name: no sanitizer report in the log" \
		    "$(grep -m1 -E 'Sanitizer|runtime error:' "$log")"
	else
		ok "$name: no sanitizer report in the log"
	fi
}

# new_ca NAME CN: a throwaway CA in $TMP/NAME.{key,pem}.
new_ca() {
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	    -nodes -keyout "$TMP/$1.key" -out "$TMP/$1.pem" -subj "/CN=$2" \
	    -days 30 -addext "basicConstraints=critical,CA:TRUE" \
	    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# new_leaf NAME CA_BASE: a leaf in $TMP/NAME.pem issued by CA_BASE.{pem,key}.
new_leaf() {
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$TMP/$1.key" -out "$TMP/$1.csr" -subj "/CN=$1.demo.test" \
	    2>/dev/null &&
	    printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s.demo.test\n' \
		"$1" >"$TMP/$1.ext" &&
	    openssl x509 -req -in "$TMP/$1.csr" -CA "$2.pem" -CAkey "$2.key" \
		-set_serial "0x$(openssl rand -hex 15)" -days 30 \
		-extfile "$TMP/$1.ext" -out "$TMP/$1.pem" 2>/dev/null
}

########################################################################
# The EC demo: setup and the operator tool
########################################################################
D=$TMP/ec
CA=$D/ca.pem
free_port || {
	fail "a free port" "none found"
	summary
	exit 1
}
URL="http://127.0.0.1:$PORT/"

if BUILD=$BUILD scripts/demo.sh --dir "$D" --port "$PORT" --key ec \
    >"$TMP/demo.out" 2>"$TMP/demo.err"; then
	ok "demo.sh sets up the EC demo"
else
	fail "demo.sh sets up the EC demo" "$(tail -n 3 "$TMP/demo.err" | tr '\n' ' ')"
	summary
	exit 1
fi
if grep -qF "openssl ocsp -issuer $D/ca.pem -cert $D/good.pem -CAfile $D/ca.pem -url $URL" "$TMP/demo.out" &&
    grep -qF -- "-cert $D/revoked.pem" "$TMP/demo.out"; then
	ok "demo.sh prints the commands to paste"
else
	fail "demo.sh prints the commands to paste" "$(head -c 300 "$TMP/demo.out")"
fi
check "demo.sh: the PIN files are mode 600" \
    "$(stat -c '%a %n' "$D/pin" "$D/so-pin" | tr '\n' ' ')" \
    test "$(stat -c %a "$D/pin")$(stat -c %a "$D/so-pin")" = 600600
check "demo.sh: PINs are 32 hex digits" "" \
    grep -qE '^[0-9a-f]{32}$' "$D/pin"
PIN=$(cat "$D/pin")
SO_PIN=$(cat "$D/so-pin")
if grep -qF -e "$PIN" -e "$SO_PIN" "$TMP/demo.out" "$TMP/demo.err"; then
	fail "demo.sh never prints a PIN" "a PIN is in its output"
else
	ok "demo.sh never prints a PIN"
fi
check "demo.sh: softhsm2.conf names the token directory" "" \
    grep -qx "directories.tokendir = $D/tokens" "$D/softhsm2.conf"

export SOFTHSM2_CONF="$D/softhsm2.conf"
CONF=$D/responder.conf
"$CTL" -c "$CONF" pubkey >"$TMP/pub.pem" 2>"$TMP/pubkey.err"
if [ "$(openssl x509 -in "$D/responder.pem" -noout -pubkey 2>&1)" = \
    "$(openssl pkey -pubin -in "$TMP/pub.pem" 2>&1)" ] &&
    openssl pkey -pubin -in "$TMP/pub.pem" -noout -text 2>/dev/null |
    grep -q "NIST CURVE: P-256"; then
	ok "responder.pem carries the token's P-256 key (ocspctl pubkey)"
else
	fail "responder.pem carries the token's P-256 key (ocspctl pubkey)" \
	    "$(head -c 200 "$TMP/pubkey.err")"
fi
openssl x509 -in "$D/responder.pem" -noout -text >"$TMP/responder.txt"
if openssl verify -CAfile "$CA" -purpose ocsphelper "$D/responder.pem" \
    >/dev/null 2>&1 && grep -q "OCSP No Check" "$TMP/responder.txt" &&
    grep -A1 "Extended Key Usage" "$TMP/responder.txt" |
    grep -qx " *OCSP Signing"; then
	ok "responder.pem: issued by the CA, OCSPSigning only, noCheck"
else
	fail "responder.pem: issued by the CA, OCSPSigning only, noCheck" ""
fi
if openssl verify -CAfile "$CA" -purpose sslserver "$D/good.pem" \
    "$D/revoked.pem" >/dev/null 2>&1 &&
    openssl x509 -in "$D/good.pem" -noout -ext authorityInfoAccess |
    grep -qF "OCSP - URI:$URL"; then
	ok "good.pem and revoked.pem: issued by the CA, AIA names the responder"
else
	fail "good.pem and revoked.pem: issued by the CA, AIA names the responder" ""
fi

find "$D" -type f -exec sha256sum {} + | sort >"$TMP/before.sum"
BUILD=$BUILD scripts/demo.sh --dir "$D" --port "$PORT" --key ec \
    >"$TMP/demo2.out" 2>"$TMP/demo2.err"
rc=$?
find "$D" -type f -exec sha256sum {} + | sort >"$TMP/after.sum"
if [ "$rc" -eq 0 ] && cmp -s "$TMP/before.sum" "$TMP/after.sum" &&
    grep -qF -- "-cert $D/good.pem" "$TMP/demo2.out"; then
	ok "demo.sh again reuses the demo and changes nothing"
else
	fail "demo.sh again reuses the demo and changes nothing" "exit $rc"
fi
BUILD=$BUILD scripts/demo.sh --dir "$D" --port 1 --key ec \
    >"$TMP/demo3.out" 2>"$TMP/demo3.err"
rc=$?
if [ "$rc" -eq 0 ] && grep -q "$PORT" "$TMP/demo3.err" &&
    grep -qF "http://127.0.0.1:1/" "$TMP/demo3.out"; then
	ok "demo.sh with another port reuses the demo and names the old port"
else
	fail "demo.sh with another port reuses the demo and names the old port" \
	    "exit $rc"
fi
mkdir -p "$TMP/partial/tokens"
touch "$TMP/partial/tokens/keep" "$TMP/partial/ca.key"
BUILD=$BUILD scripts/demo.sh --dir "$TMP/partial" --port "$PORT" \
    >"$TMP/demo4.out" 2>"$TMP/demo4.err"
rc=$?
if [ "$rc" -ne 0 ] && [ -e "$TMP/partial/tokens/keep" ] &&
    [ -e "$TMP/partial/ca.key" ] && grep -q "partial\|incomplete" "$TMP/demo4.err"; then
	ok "demo.sh refuses a partial demo and deletes nothing"
else
	fail "demo.sh refuses a partial demo and deletes nothing" "exit $rc"
fi

"$CTL" -c "$CONF" provision --so-pin-file "$D/so-pin" --key ec \
    >"$TMP/prov.out" 2>&1
rc=$?
if [ "$rc" -eq 1 ] && [ -s "$TMP/prov.out" ]; then
	ok "ocspctl provision refuses an existing key (exit 1, a message)"
else
	fail "ocspctl provision refuses an existing key (exit 1, a message)" \
	    "exit $rc"
fi
if grep -qF -e "$PIN" -e "$SO_PIN" "$TMP/prov.out"; then
	fail "ocspctl provision never prints a PIN" ""
else
	ok "ocspctl provision never prints a PIN"
fi

GOOD_SERIAL=$(serial_of "$D/good.pem")
REVOKED_SERIAL=$(serial_of "$D/revoked.pem")
st=$("$CTL" -c "$CONF" status "$GOOD_SERIAL" 2>&1)
check "ocspctl status: good" "$st" \
    grep -qE "^serial=$GOOD_SERIAL status=good( |\$)" <<<"$st"
st=$("$CTL" -c "$CONF" status "$REVOKED_SERIAL" 2>&1)
REVOKED_AT=$(sed -n 's/.* revoked_at=\([0-9]\{14\}Z\).*/\1/p' <<<"$st")
check "ocspctl status: revoked, keyCompromise, a time" "$st" \
    grep -qE "^serial=$REVOKED_SERIAL status=revoked reason=keyCompromise revoked_at=[0-9]{14}Z\$" <<<"$st"

new_ca other "Other Throwaway CA"
new_leaf foreign "$TMP/other"
new_leaf late "$D/ca"
"$CTL" -c "$CONF" import "$TMP/foreign.pem" >"$TMP/import.out" 2>&1
rc=$?
check "ocspctl import refuses a certificate of another issuer" "exit $rc" \
    test "$rc" -ne 0
"$CTL" -c "$CONF" revoke "$GOOD_SERIAL" --reason notAReason \
    >"$TMP/revoke.out" 2>&1
rc=$?
st=$("$CTL" -c "$CONF" status "$GOOD_SERIAL" 2>&1)
if [ "$rc" -ne 0 ] && grep -q "status=good" <<<"$st"; then
	ok "ocspctl revoke refuses an unknown reason"
else
	fail "ocspctl revoke refuses an unknown reason" "exit $rc; $st"
fi

"$RESPONDER" -n -f "$CONF" >"$TMP/n.out" 2>&1
rc=$?
check "ocsp-responder -n accepts the demo config" \
    "exit $rc: $(head -c 200 "$TMP/n.out")" test "$rc" -eq 0
{ cat "$CONF"; echo "no_such_key 1"; } >"$D/bad.conf"
"$RESPONDER" -n -f "$D/bad.conf" >"$TMP/n2.out" 2>&1
rc=$?
if [ "$rc" -ne 0 ] && grep -q "no_such_key" "$TMP/n2.out"; then
	ok "ocsp-responder -n rejects an unknown key and names it"
else
	fail "ocsp-responder -n rejects an unknown key and names it" "exit $rc"
fi
rm -f "$D/bad.conf"

########################################################################
# The EC demo: serving
########################################################################
LOG=$TMP/responder-ec.log
start_responder "$D" "$PORT" "$LOG"
EC_PID=$RPID
if wait_up "$PORT" "$EC_PID"; then
	ok "the responder answers on 127.0.0.1:$PORT"
else
	fail "the responder answers on 127.0.0.1:$PORT" \
	    "$(tail -n 5 "$LOG" | tr '\n' ' ')"
	summary
	exit 1
fi

# good: verified, nonce echoed, validity exactly the configured 1d.
ask "$TMP/good.txt" -issuer "$CA" -cert "$D/good.pem"
check "good: verified with the nonce echoed" \
    "$(grep -m1 -iE 'error|warning' "$TMP/good.txt")" verified "$TMP/good.txt"
check "good: status good" "" grep -qx "$D/good.pem: good" "$TMP/good.txt"
check "good: a SHA-1 CertID (the default) echoed" "" \
    grep -q "Hash Algorithm: sha1" "$TMP/good.txt"
this=$(summary_field "$TMP/good.txt" "$D/good.pem" "This Update")
next=$(summary_field "$TMP/good.txt" "$D/good.pem" "Next Update")
this_s=$(epoch "$this")
next_s=$(epoch "$next")
now=$(date -u +%s)
if [ -n "$this_s" ] && [ -n "$next_s" ]; then
	check "good: nextUpdate - thisUpdate = 86399 s (1d, inclusive)" \
	    "$((next_s - this_s)) s" test "$((next_s - this_s))" -eq 86399
	check "good: thisUpdate <= now < nextUpdate" "$this .. $next" \
	    test "$this_s" -le "$((now + 5))" -a "$next_s" -gt "$now"
else
	fail "good: This Update and Next Update present" "'$this' '$next'"
fi
check "good: the response carries the nonce" "" \
    grep -q "OCSP Nonce" "$TMP/good.txt"
check "good: signed with ecdsa-with-SHA256" "" \
    grep -q "Signature Algorithm: ecdsa-with-SHA256" "$TMP/good.txt"
check "good: the responder certificate is included" "" \
    grep -q "Subject: CN *= *OCSP Demo Responder" "$TMP/good.txt"

# revoked: reason and time as the index has them.
ask "$TMP/revoked.txt" -issuer "$CA" -cert "$D/revoked.pem"
check "revoked: verified" "" verified "$TMP/revoked.txt"
check "revoked: status revoked" "" \
    grep -qx "$D/revoked.pem: revoked" "$TMP/revoked.txt"
reason=$(summary_field "$TMP/revoked.txt" "$D/revoked.pem" "Reason")
check "revoked: reason keyCompromise" "'$reason'" test "$reason" = keyCompromise
rtime=$(summary_field "$TMP/revoked.txt" "$D/revoked.pem" "Revocation Time")
rtime_s=$(epoch "$rtime")
want_s=$(gentime_epoch "$REVOKED_AT")
check "revoked: revocation time = ocspctl status ($REVOKED_AT)" "'$rtime'" \
    test -n "$rtime_s" -a "$rtime_s" = "$want_s"

# unknown serial under our CA, unknown issuer.
ask "$TMP/unknown.txt" -issuer "$CA" -serial 0x1234567890ABCDEF
check "unknown serial: verified" "" verified "$TMP/unknown.txt"
check "unknown serial: status unknown" "" \
    grep -qx "0x1234567890ABCDEF: unknown" "$TMP/unknown.txt"
ask "$TMP/unauth.txt" -issuer "$TMP/other.pem" -cert "$TMP/foreign.pem"
check "unknown issuer: unauthorized (6)" "$(head -n 1 "$TMP/unauth.txt")" \
    grep -qi "Responder Error: unauthorized (6)" "$TMP/unauth.txt"

# CertID hash algorithms.
for alg in sha256 sha384 sha512; do
	ask "$TMP/$alg.txt" "-$alg" -issuer "$CA" -cert "$D/good.pem" \
	    -cert "$D/revoked.pem"
	if verified "$TMP/$alg.txt" &&
	    grep -qx "$D/good.pem: good" "$TMP/$alg.txt" &&
	    grep -qx "$D/revoked.pem: revoked" "$TMP/$alg.txt" &&
	    grep -q "Hash Algorithm: $alg" "$TMP/$alg.txt"; then
		ok "$alg CertIDs: good and revoked, CertID echoed"
	else
		fail "$alg CertIDs: good and revoked, CertID echoed" \
		    "$(grep -m1 -E 'Error|error|: ' "$TMP/$alg.txt")"
	fi
done

# several CertIDs, up to max_cert_ids (8) and one more.
ask "$TMP/multi.txt" -issuer "$CA" -cert "$D/good.pem" -cert "$D/revoked.pem" \
    -serial 0x0BADC0DE
if verified "$TMP/multi.txt" && grep -qx "$D/good.pem: good" "$TMP/multi.txt" &&
    grep -qx "$D/revoked.pem: revoked" "$TMP/multi.txt" &&
    grep -qx "0x0BADC0DE: unknown" "$TMP/multi.txt"; then
	ok "three CertIDs in one request: good, revoked, unknown"
else
	fail "three CertIDs in one request: good, revoked, unknown" ""
fi
set -- -issuer "$CA"
for i in 1 2 3 4 5 6 7 8; do
	set -- "$@" -serial "0x$i$i$i"
done
ask "$TMP/eight.txt" "$@"
check "8 CertIDs (max_cert_ids): answered" \
    "$(grep -m1 Error "$TMP/eight.txt")" verified "$TMP/eight.txt"
ask "$TMP/nine.txt" "$@" -serial 0x999
check "9 CertIDs: malformedRequest" "$(head -n 1 "$TMP/nine.txt")" \
    grep -qi "Responder Error: malformedRequest (1)" "$TMP/nine.txt"

# nonces.
ask "$TMP/nononce.txt" -issuer "$CA" -cert "$D/good.pem" -no_nonce
if verified "$TMP/nononce.txt" && grep -qx "$D/good.pem: good" "$TMP/nononce.txt" &&
    ! grep -q "OCSP Nonce" "$TMP/nononce.txt"; then
	ok "-no_nonce: verified, good, no nonce in the response"
else
	fail "-no_nonce: verified, good, no nonce in the response" ""
fi

cert_id_hashes sha1 "$CA"
ID_GOOD="id:sha1:$NAME_HASH:$KEY_HASH:0x$GOOD_SERIAL"
NONCE32=$(printf '%064d' 0 | sed 's/0/A5/g' | cut -c1-64)
NONCE33=${NONCE32}5A
build_req "$TMP/n32.der" "$ID_GOOD" "nonce:$NONCE32"
post "$TMP/n32.der" / "$TMP/n32.resp" >/dev/null
if verify_resp "$TMP/n32.resp" "$TMP/n32.der" &&
    grep -qi "0420$NONCE32" "$TMP/n32.resp.txt"; then
	ok "a 32-byte nonce (max_nonce_len) is echoed"
else
	fail "a 32-byte nonce (max_nonce_len) is echoed" \
	    "$(resp_status "$TMP/n32.resp")"
fi
build_req "$TMP/n33.der" "$ID_GOOD" "nonce:$NONCE33"
post "$TMP/n33.der" / "$TMP/n33.resp" >/dev/null
st=$(resp_status "$TMP/n33.resp")
check "a 33-byte nonce: malformedRequest" "$st" test "$st" = malformedRequest

# hand-built requests the parser must judge exactly.
openssl ocsp -md5 -issuer "$CA" -serial 0x01 -no_nonce -req_text \
    >"$TMP/md5.txt" 2>&1
MD5_NAME=$(sed -n 's/^ *Issuer Name Hash: //p' "$TMP/md5.txt")
MD5_KEY=$(sed -n 's/^ *Issuer Key Hash: //p' "$TMP/md5.txt")
SERIAL21=0x01$(printf '%040d' 0 | sed 's/0/7/g')
while IFS='|' read -r name want specs; do
	# shellcheck disable=SC2086 # specs is a list of words
	build_req "$TMP/crafted.der" $specs || {
		fail "$name" "cannot build the request"
		continue
	}
	code=$(post "$TMP/crafted.der" / "$TMP/crafted.resp")
	st=$(resp_status "$TMP/crafted.resp")
	if [ "$want" = successful ]; then
		if verify_resp "$TMP/crafted.resp" "$TMP/crafted.der"; then
			ok "$name: answered and verified"
		else
			fail "$name: answered and verified" "HTTP $code, $st"
		fi
	else
		check "$name: $want" "HTTP $code, $st" test "$st" = "$want"
	fi
done <<EOF
md5 CertID|malformedRequest|id:md5:$MD5_NAME:$MD5_KEY:0x$GOOD_SERIAL
21-byte serial|malformedRequest|id:sha1:$NAME_HASH:$KEY_HASH:$SERIAL21
negative serial|malformedRequest|id:sha1:$NAME_HASH:$KEY_HASH:-5
empty request list|malformedRequest|nonce:0102030405060708
unknown critical extension|malformedRequest|$ID_GOOD ext:1.2.3.4.5:1:0500
unknown non-critical extension|successful|$ID_GOOD ext:1.2.3.4.5:0:0500
EOF
openssl ocsp -issuer "$CA" -cert "$D/good.pem" -signer "$D/good.pem" \
    -signkey "$D/good.key" -reqout "$TMP/signed.der" >/dev/null 2>&1
post "$TMP/signed.der" / "$TMP/signed.resp" >/dev/null
check "a signed request: answered and verified" \
    "$(resp_status "$TMP/signed.resp")" \
    verify_resp "$TMP/signed.resp" "$TMP/signed.der"

# POST: HTTP, headers, paths.
ask "$TMP/rq.txt" -issuer "$CA" -cert "$D/good.pem" -reqout "$TMP/req.der"
for path in / /some/path; do
	code=$(post "$TMP/req.der" "$path" "$TMP/post.resp")
	ct=$(header "$TMP/post.resp" Content-Type)
	if [ "$code" = 200 ] && [ "$ct" = application/ocsp-response ] &&
	    verify_resp "$TMP/post.resp" "$TMP/req.der" &&
	    grep -q "Cert Status: good" "$TMP/post.resp.txt"; then
		ok "POST $path: 200, application/ocsp-response, good"
	else
		fail "POST $path: 200, application/ocsp-response, good" \
		    "HTTP $code, $ct, $(resp_status "$TMP/post.resp")"
	fi
done

# GET: a request whose base64 has '+', '/', "//" and padding, so that
# every encoding below differs. The nonce's bytes steer the alphabet.
GETREQ=""
for pre in "" 00 0000; do
	for post in "" 00 0000; do
		build_req "$TMP/get.der" "$ID_GOOD" "nonce:${pre}FBEFBEFFFFFF$post"
		b64=$(base64 -w0 "$TMP/get.der")
		case $b64 in
		*//*=) case $b64 in *+*) GETREQ=$TMP/get.der; break 2 ;; esac ;;
		esac
	done
done
if [ -z "$GETREQ" ]; then
	fail "GET: a request with + / // and padding in its base64" "$b64"
else
	B64=$(base64 -w0 "$GETREQ")
	PCT=$(sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g' <<<"$B64")
	while IFS='|' read -r name path; do
		code=$(http GET "$path" "$TMP/get.resp")
		ct=$(header "$TMP/get.resp" Content-Type)
		if [ "$code" = 200 ] && [ "$ct" = application/ocsp-response ] &&
		    verify_resp "$TMP/get.resp" "$GETREQ" &&
		    grep -q "Cert Status: good" "$TMP/get.resp.txt"; then
			ok "GET $name: 200, application/ocsp-response, good"
		else
			fail "GET $name: 200, application/ocsp-response, good" \
			    "HTTP $code, $ct, $(resp_status "$TMP/get.resp")"
		fi
	done <<EOF
percent-encoded|/$PCT
under /ocsp/|/ocsp/$PCT
base64url without padding|/$(tr '+/' '-_' <<<"$B64" | tr -d '=')
no padding|/$(tr -d '=' <<<"$B64" | sed 's/+/%2B/g; s#/#%2F#g')
raw, with // in the path|/$B64
lowercase percent-encoding|/$(sed 's/+/%2b/g; s#/#%2f#g; s/=/%3d/g' <<<"$B64")
EOF
fi

# keep-alive: two exchanges over one connection.
curl -sv --max-time 20 -o /dev/null -o /dev/null "http://127.0.0.1:$PORT/$PCT" \
    "http://127.0.0.1:$PORT/$PCT" 2>"$TMP/keepalive.err"
check "keep-alive: two GETs over one connection" "" \
    grep -qi "Re-using existing connection" "$TMP/keepalive.err"
curl -sv --max-time 20 -o /dev/null -H 'Content-Type: application/ocsp-request' \
    --data-binary "@$TMP/req.der" "$URL" --next -o /dev/null \
    -H 'Content-Type: application/ocsp-request' \
    --data-binary "@$TMP/req.der" "$URL" 2>"$TMP/keepalive2.err"
check "keep-alive: two POSTs over one connection" "" \
    grep -qi "Re-using existing connection" "$TMP/keepalive2.err"

# bad input, each with its exact answer.
LEN=$(wc -c <"$TMP/req.der")
: >"$TMP/empty.bin"
printf 'this is not DER at all' >"$TMP/garbage.bin"
head -c $((LEN - 1)) "$TMP/req.der" >"$TMP/trunc.bin"
{ cat "$TMP/req.der"; printf '\0'; } >"$TMP/trailing.bin"
{ cat "$TMP/req.der"; cat "$TMP/req.der"; } >"$TMP/twice.bin"
head -c 10240 /dev/zero >"$TMP/at-limit.bin"
head -c 10241 /dev/zero >"$TMP/over-limit.bin"
head -c 1048576 /dev/zero >"$TMP/huge.bin"
while IFS='|' read -r name body want extra; do
	# shellcheck disable=SC2086 # extra is a list of curl words
	code=$(http POST / "$TMP/bad.resp" \
	    -H 'Content-Type: application/ocsp-request' \
	    --data-binary "@$TMP/$body" $extra)
	case $want in
	HTTP*)
		check "$name: ${want/HTTP/HTTP }" "HTTP $code" test "$code" = "${want#HTTP}"
		;;
	*)
		st=$(resp_status "$TMP/bad.resp")
		check "$name: $want" "HTTP $code, $st" test "$st" = "$want"
		;;
	esac
done <<EOF
empty POST body|empty.bin|malformedRequest|
garbage bytes|garbage.bin|malformedRequest|
truncated request|trunc.bin|malformedRequest|
request with a trailing byte|trailing.bin|malformedRequest|
request twice over|twice.bin|malformedRequest|
body of max_request_bytes zeros|at-limit.bin|malformedRequest|
body one byte over max_request_bytes|over-limit.bin|HTTP413|
body of 1 MiB|huge.bin|HTTP413|
chunked body over max_request_bytes|over-limit.bin|HTTP413|-H Transfer-Encoding:chunked
EOF

# every truncation of a valid request.
bad=""
NO_ANSWER=0
for n in $(seq 0 $((LEN - 1))); do
	head -c "$n" "$TMP/req.der" >"$TMP/cut.bin"
	code=$(post "$TMP/cut.bin" / "$TMP/cut.resp")
	st=$(resp_status "$TMP/cut.resp")
	[ "$st" = malformedRequest ] || bad="$bad $n:HTTP$code:$st"
	gave_up "$code" && break
done
check "every truncation ($LEN) of a request: malformedRequest" "$bad" \
    test -z "$bad"

# one bit flipped in each byte: an error status or a verified answer,
# never a crash.
HEX=$(hex_of "$TMP/req.der")
bad=""
NO_ANSWER=0
n_malformed=0 n_unauthorized=0 n_verified=0
for i in $(seq 0 $((LEN - 1))); do
	byte=$((0x${HEX:$((2 * i)):2} ^ (1 << (i % 8))))
	flipped=${HEX:0:$((2 * i))}$(printf '%02x' "$byte")${HEX:$((2 * i + 2))}
	unhex "$flipped" >"$TMP/flip.bin"
	code=$(post "$TMP/flip.bin" / "$TMP/flip.resp")
	st=$(resp_status "$TMP/flip.resp")
	case $st in
	malformedRequest) n_malformed=$((n_malformed + 1)) ;;
	unauthorized) n_unauthorized=$((n_unauthorized + 1)) ;;
	successful)
		if verify_resp "$TMP/flip.resp"; then
			n_verified=$((n_verified + 1))
		else
			bad="$bad $i:unverified"
		fi
		;;
	*) bad="$bad $i:HTTP$code:$st" ;;
	esac
	gave_up "$code" && break
done
echo "# bit flips: $n_malformed malformedRequest, $n_unauthorized unauthorized, $n_verified verified answers"
check "a bit flipped in each of the $LEN bytes: error status or verified" \
    "$bad" test -z "$bad"
check "the responder survives the malformed requests" "" kill -0 "$EC_PID"

# GET with bad paths.
while IFS='|' read -r name path want; do
	code=$(http GET "$path" "$TMP/badget.resp")
	st=$(resp_status "$TMP/badget.resp")
	check "GET $name: $want" "HTTP $code, $st" test "$st" = "$want"
done <<EOF
with bad base64|/MEIwQDA+MDwwOjAJBgUrDgMCGgUABBT!!!!|malformedRequest
with base64 of no DER|/aGVsbG8gd29ybGQ%3D|malformedRequest
with a truncated request|/$(head -c $((LEN - 1)) "$TMP/req.der" | base64 -w0 | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g')|malformedRequest
EOF
LONG=$(head -c 12000 /dev/zero | base64 -w0)
code=$(http GET "/$LONG" "$TMP/long.resp")
st=$(resp_status "$TMP/long.resp")
case $code:$st in
413:*|414:*|*:malformedRequest) ok "GET with a path over max_request_bytes: refused" ;;
*) fail "GET with a path over max_request_bytes: refused" "HTTP $code, $st" ;;
esac

# methods.
for method in PUT DELETE; do
	code=$(http "$method" / "$TMP/method.resp" \
	    -H 'Content-Type: application/ocsp-request' \
	    --data-binary "@$TMP/req.der")
	check "$method: HTTP 405" "HTTP $code" test "$code" = 405
done
allow=$(header "$TMP/method.resp" Allow)
check "405 names the allowed methods (Allow: GET, POST)" "Allow: $allow" \
    grep -q "GET.*POST\|POST.*GET" <<<"$allow"

# a revocation made while serving is answered at once.
"$CTL" -c "$CONF" import "$TMP/late.pem" >"$TMP/late-import.out" 2>&1
rc=$?
check "ocspctl import while serving" "exit $rc" test "$rc" -eq 0
LATE_SERIAL=$(serial_of "$TMP/late.pem")
ask "$TMP/late1.txt" -issuer "$CA" -cert "$TMP/late.pem"
check "a certificate imported while serving: good" "" \
    grep -qx "$TMP/late.pem: good" "$TMP/late1.txt"
"$CTL" -c "$CONF" revoke "$LATE_SERIAL" --reason superseded \
    --time 20250102030405Z >"$TMP/late-revoke.out" 2>&1
rc=$?
st=$("$CTL" -c "$CONF" status "$LATE_SERIAL" 2>&1)
check "ocspctl revoke --time: status shows it" "exit $rc; $st" \
    grep -q "status=revoked reason=superseded revoked_at=20250102030405Z" <<<"$st"
ask "$TMP/late2.txt" -issuer "$CA" -cert "$TMP/late.pem"
rtime=$(summary_field "$TMP/late2.txt" "$TMP/late.pem" "Revocation Time")
reason=$(summary_field "$TMP/late2.txt" "$TMP/late.pem" "Reason")
if verified "$TMP/late2.txt" &&
    grep -qx "$TMP/late.pem: revoked" "$TMP/late2.txt" &&
    [ "$reason" = superseded ] &&
    [ "$(epoch "$rtime")" = "$(gentime_epoch 20250102030405Z)" ]; then
	ok "a revocation made while serving is answered at once"
else
	fail "a revocation made while serving is answered at once" \
	    "$(grep -m1 "late.pem:" "$TMP/late2.txt"), '$reason', '$rtime'"
fi

check "the access log names the serials asked for" "" \
    grep -qi "$GOOD_SERIAL" "$LOG"
stop_responder "$EC_PID" TERM ec
check_log "$LOG" "$D" ec

########################################################################
# The RSA demo: a smaller run
########################################################################
D=$TMP/rsa
CA=$D/ca.pem
free_port || PORT=""
URL="http://127.0.0.1:$PORT/"
if [ -n "$PORT" ] && BUILD=$BUILD scripts/demo.sh --dir "$D" --port "$PORT" \
    --key rsa >"$TMP/demo-rsa.out" 2>"$TMP/demo-rsa.err"; then
	ok "demo.sh sets up the RSA demo"
	LOG=$TMP/responder-rsa.log
	start_responder "$D" "$PORT" "$LOG"
	RSA_PID=$RPID
	if wait_up "$PORT" "$RSA_PID"; then
		ok "rsa: the responder answers on 127.0.0.1:$PORT"
		ask "$TMP/rsa.txt" -issuer "$CA" -cert "$D/good.pem" \
		    -cert "$D/revoked.pem"
		if verified "$TMP/rsa.txt" &&
		    grep -qx "$D/good.pem: good" "$TMP/rsa.txt" &&
		    grep -qx "$D/revoked.pem: revoked" "$TMP/rsa.txt" &&
		    [ "$(summary_field "$TMP/rsa.txt" "$D/revoked.pem" Reason)" = keyCompromise ]; then
			ok "rsa: good and revoked, verified"
		else
			fail "rsa: good and revoked, verified" \
			    "$(grep -m1 -E 'rror|pem:' "$TMP/rsa.txt")"
		fi
		check "rsa: signed with sha256WithRSAEncryption" "" \
		    grep -q "Signature Algorithm: sha256WithRSAEncryption" \
		    "$TMP/rsa.txt"
		check "rsa: the key is RSA-2048" "" \
		    grep -q "Public-Key: (2048 bit)" "$TMP/rsa.txt"
		if env --default-signal=INT true 2>/dev/null; then
			stop_responder "$RSA_PID" INT rsa
		else
			stop_responder "$RSA_PID" TERM rsa
		fi
	else
		fail "rsa: the responder answers on 127.0.0.1:$PORT" \
		    "$(tail -n 5 "$LOG" | tr '\n' ' ')"
	fi
	check_log "$LOG" "$D" rsa
else
	fail "demo.sh sets up the RSA demo" \
	    "$(tail -n 3 "$TMP/demo-rsa.err" | tr '\n' ' ')"
fi

if [ "$FAILED" -gt 0 ]; then
	for log in "$TMP"/responder-*.log; do
		[ -f "$log" ] || continue
		echo "# last lines of $(basename "$log"):"
		tail -n 15 "$log" | sed 's/^/#   /'
	done
fi
summary
