# lib.sh - helpers shared by the integration suites (sourced, not run):
# counting and printing checks, free loopback ports, reading openssl's
# output. They use the suite's globals (PASS, FAIL, TMP, BUILD, ...).

ok() {
	PASSED=$((PASSED + 1))
	echo "ok - $1"
}

fail() {
	FAILED=$((FAILED + 1))
	echo "FAIL - $1 (${2:-})"
}

# check NAME DETAIL COMMAND...: ok if COMMAND succeeds, else FAIL.
check() {
	local name=$1 detail=$2
	shift 2
	if "$@"; then
		ok "$name"
	else
		fail "$name" "$detail"
	fi
}

summary() {
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ] && [ "$PASSED" -gt 0 ]
}

# free_port sets PORT to a loopback port nothing listens on, one this run
# has not used yet, below the ephemeral range so that no client socket of
# ours takes it meanwhile.
free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 12000))
		case $USED_PORTS in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED_PORTS="$USED_PORTS$p "
			PORT=$p
			return 0
		fi
	done
	return 1
}

# epoch DATE prints DATE (as openssl prints times) in seconds since 1970.
epoch() {
	date -u -d "$1" +%s 2>/dev/null
}

# summary_field FILE CERT LABEL prints the value of LABEL in the summary
# block `openssl ocsp` prints for CERT (the -cert or -serial argument).
summary_field() {
	awk -v cert="$2: " -v label="$TAB$3: " '
	    index($0, cert) == 1 { inside = 1; next }
	    inside && index($0, label) == 1 { print substr($0, length(label) + 1); exit }
	    inside && index($0, "\t") != 1 { inside = 0 }' "$1"
}

# resp_status FILE prints the OCSPResponseStatus of the response in FILE
# (successful, malformedRequest, unauthorized...) or `none`. OpenSSL
# prints `OCSP Response Status: malformedRequest (0x1)` or, for errors in
# 3.0, `Responder Error: malformedrequest (1)`: go by the number.
resp_status() {
	local n
	n=$(openssl ocsp -respin "$1" -resp_text -noverify 2>/dev/null |
	    sed -n -e 's/^ *OCSP Response Status: [A-Za-z]* (0x\([0-9]\))$/\1/p' \
		-e 's/^Responder Error: [A-Za-z]* (\([0-9]\))$/\1/p' | head -n 1)
	case $n in
	0) echo successful ;;
	1) echo malformedRequest ;;
	2) echo internalError ;;
	3) echo tryLater ;;
	5) echo sigRequired ;;
	6) echo unauthorized ;;
	*) echo none ;;
	esac
}

# ask OUT ARGS...: one `openssl ocsp` exchange with the responder; its
# output goes to OUT, stdout first (kept apart so that no line is split).
ask() {
	local out=$1 rc
	shift
	openssl ocsp -url "$URL" -timeout 10 -CAfile "$CA" -resp_text "$@" \
	    >"$out.stdout" 2>"$out.stderr"
	rc=$?
	cat "$out.stdout" "$out.stderr" >"$out"
	return "$rc"
}

# verified OUT: the exchange in OUT verified, with a matching nonce.
verified() {
	grep -qx "Response verify OK" "$1" &&
	    ! grep -q "WARNING: no nonce in response" "$1" &&
	    ! grep -q "Nonce Verify error" "$1"
}

# header OUT NAME prints the value of header NAME in OUT.h.
header() {
	tr -d '\r' <"$1.h" | sed -n "s/^$2: *//Ip" | tail -n 1
}

serial_of() {
	openssl x509 -in "$1" -noout -serial | sed 's/^serial=//'
}
