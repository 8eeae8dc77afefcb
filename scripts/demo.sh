#!/bin/sh
# demo.sh - sets up a complete demo deployment in one directory: a SoftHSM
# token holding the signing key, a demo CA, the delegated responder
# certificate for the token's key, one good and one revoked leaf, and the
# status index. A complete demo is reused; nothing is ever deleted.
#
# usage: scripts/demo.sh [--dir DIR] [--port PORT] [--key ec|rsa]
# Run it from the repository root; the binaries are in ${BUILD:-build}/.
set -eu

usage() {
	echo "usage: $0 [--dir DIR] [--port PORT] [--key ec|rsa]" >&2
	exit 2
}

say() {
	printf 'demo: %s\n' "$*" >&2
}

die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

DIR=demo
PORT=8080
KEY=ec
while [ $# -gt 0 ]; do
	case $1 in
	--dir)	[ $# -ge 2 ] || usage; DIR=$2; shift 2 ;;
	--port)	[ $# -ge 2 ] || usage; PORT=$2; shift 2 ;;
	--key)	[ $# -ge 2 ] || usage; KEY=$2; shift 2 ;;
	-h|--help) usage ;;
	*)	echo "demo: unknown argument: $1" >&2; usage ;;
	esac
done
[ -n "$DIR" ] || usage
case $PORT in
''|*[!0-9]*) die "--port needs a number, not '$PORT'" ;;
esac
if [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
	die "--port $PORT is out of range"
fi
case $KEY in
ec|rsa) ;;
*) die "--key is ec or rsa, not '$KEY'" ;;
esac

BUILD=${BUILD:-build}
OCSPCTL=$BUILD/ocspctl
umask 077

# The files that make up a demo, and those whose presence means one was
# (at least partly) made here.
COMPLETE="responder.conf tokens ca.pem responder.pem good.pem revoked.pem"
OURS="softhsm2.conf tokens pin so-pin responder.conf index ca.key ca.pem
responder.pem good.key good.pem revoked.key revoked.pem"

# conf_port prints the port of the listen line of a responder.conf.
conf_port() {
	sed -n 's/^[[:space:]]*listen[[:space:]]\{1,\}[^#]*:\([0-9]\{1,\}\).*$/\1/p' \
	    "$1" | head -n 1
}

# quote prints its argument quoted for a shell when it needs to be.
quote() {
	case $1 in
	*[!A-Za-z0-9_./:@%+=,-]*)
		printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
	*)	printf '%s' "$1" ;;
	esac
}

# print_usage_lines prints the two commands a person can paste.
print_usage_lines() {
	url="http://127.0.0.1:$PORT/"
	ca=$(quote "$DIR/ca.pem")
	for leaf in good revoked; do
		echo "openssl ocsp -issuer $ca -cert $(quote "$DIR/$leaf.pem") -CAfile $ca -url $url -resp_text"
	done
}

# --- reuse a complete demo, refuse a partial one ---------------------------
if [ -d "$DIR" ]; then
	missing=""
	for f in $COMPLETE; do
		[ -e "$DIR/$f" ] || missing="$missing $f"
	done
	if [ -z "$missing" ]; then
		say "reusing the demo in $DIR (remove that directory to start over)"
		old=$(conf_port "$DIR/responder.conf")
		if [ -n "$old" ] && [ "$old" != "$PORT" ]; then
			say "note: the demo was made for port $old; its certificates' AIA names http://127.0.0.1:$old/, while the commands below use port $PORT"
		fi
		algorithm=id-ecPublicKey
		[ "$KEY" = rsa ] && algorithm=rsaEncryption
		if ! openssl x509 -in "$DIR/responder.pem" -noout -text \
		    2>/dev/null | grep -q "Public Key Algorithm: $algorithm"; then
			say "note: the existing signing key is not of type '$KEY'; --key only applies to a new demo"
		fi
		print_usage_lines
		exit 0
	fi
	anything=$(ls -A "$DIR")
	if [ -n "$anything" ]; then
		ours=""
		for f in $OURS; do
			[ -e "$DIR/$f" ] && ours="$ours $f"
		done
		{
			echo "demo: $DIR holds an incomplete demo or other files; nothing was changed"
			[ -n "$ours" ] && echo "demo:   present:$ours"
			echo "demo:   missing:$missing"
			[ -e "$DIR/tokens" ] &&
			    echo "demo:   $DIR/tokens may hold a SoftHSM token with a signing key; this script never deletes keys"
			echo "demo: to start over, remove $DIR yourself (rm -r $DIR) or pass another --dir"
		} >&2
		exit 1
	fi
fi

[ -x "$OCSPCTL" ] || die "$OCSPCTL not found: build it first (make all, or set BUILD)"
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

mkdir -p "$DIR"
ABS=$(cd "$DIR" && pwd -P)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/demo.XXXXXX")
finish() {
	rc=$?
	rm -rf "$WORK"
	if [ "$rc" -ne 0 ]; then
		echo "demo: failed; $DIR is left as it is: remove it (rm -r $DIR) and run again" >&2
	fi
	exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# rand_serial prints 16 random bytes in hex with the top bit clear and the
# next one set: a positive INTEGER of exactly 16 bytes.
rand_serial() {
	r=$(openssl rand -hex 16)
	first=$(printf '%s' "$r" | cut -c1-2)
	rest=$(printf '%s' "$r" | cut -c3-)
	printf '%02X%s\n' $(( (0x$first & 0x3f) | 0x40 )) "$rest" |
	    tr 'abcdef' 'ABCDEF'
}

# --- SoftHSM, PINs, config --------------------------------------------------
mkdir -p "$ABS/tokens"
chmod 700 "$ABS/tokens"
cat >"$ABS/softhsm2.conf" <<EOF
# SoftHSM2 for the OCSP demo: tokens live next to this file.
directories.tokendir = $ABS/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF="$ABS/softhsm2.conf"

# PINs go straight from openssl into files readable by us alone, with no
# newline, so that they never reach a terminal or an argument list.
openssl rand -hex 16 | tr -d '\n' >"$ABS/pin"
openssl rand -hex 16 | tr -d '\n' >"$ABS/so-pin"
chmod 600 "$ABS/pin" "$ABS/so-pin"

cat >"$ABS/responder.conf" <<EOF
# OCSP responder demo configuration, made by scripts/demo.sh.
# Relative paths are relative to this file's directory.
listen 127.0.0.1:$PORT
index index
pkcs11_module $MODULE
token_label ocsp-demo
key_label ocsp-signer
key_id 01
pin_file pin
responder_cert responder.pem
issuer_cert ca.pem
validity 1d
include_responder_cert yes
max_cert_ids 8
max_nonce_len 32
max_request_bytes 10240
threads 4
log_requests yes
EOF
CONF=$ABS/responder.conf

if [ "$KEY" = rsa ]; then
	say "creating the SoftHSM token and an RSA-2048 signing key inside it"
else
	say "creating the SoftHSM token and a P-256 signing key inside it"
fi
"$OCSPCTL" -c "$CONF" provision --so-pin-file "$ABS/so-pin" --key "$KEY" >&2
"$OCSPCTL" -c "$CONF" pubkey >"$WORK/pub.pem"
openssl pkey -pubin -in "$WORK/pub.pem" -noout 2>/dev/null ||
    die "ocspctl pubkey did not print a PEM public key"

# --- the demo CA and the certificates ----------------------------------------
cat >"$WORK/openssl.cnf" <<EOF
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ responder ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = OCSPSigning
noCheck = ignored
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[ good ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:good.demo.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
authorityInfoAccess = OCSP;URI:http://127.0.0.1:$PORT/
[ revoked ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:revoked.demo.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
authorityInfoAccess = OCSP;URI:http://127.0.0.1:$PORT/
EOF
OSSL_CNF=$WORK/openssl.cnf

say "creating the demo CA"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$ABS/ca.key" 2>/dev/null
openssl req -new -x509 -config "$OSSL_CNF" -extensions ca -sha256 \
    -key "$ABS/ca.key" -subj "/CN=OCSP Demo CA" -days 3650 \
    -set_serial "0x$(rand_serial)" -out "$ABS/ca.pem"

# issue NAME SUBJECT EXTENSIONS DAYS PUBKEY: a certificate signed by the
# CA. The CSR carries a key of its own; PUBKEY, when given, replaces it.
issue() {
	name=$1 subject=$2 ext=$3 days=$4 pub=${5:-}
	if [ -n "$pub" ]; then
		keyfile=$WORK/$name-throwaway.key
	else
		keyfile=$ABS/$name.key
	fi
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	    -out "$keyfile" 2>/dev/null
	openssl req -new -config "$OSSL_CNF" -key "$keyfile" \
	    -subj "$subject" -out "$WORK/$name.csr"
	set -- x509 -req -in "$WORK/$name.csr" -CA "$ABS/ca.pem" \
	    -CAkey "$ABS/ca.key" -set_serial "0x$(rand_serial)" -days "$days" \
	    -sha256 -extfile "$OSSL_CNF" -extensions "$ext" \
	    -out "$ABS/$name.pem"
	[ -n "$pub" ] && set -- "$@" -force_pubkey "$pub"
	openssl "$@" 2>"$WORK/$name.err" || {
		cat "$WORK/$name.err" >&2
		die "cannot issue $name.pem"
	}
}

say "issuing the responder certificate for the token's key"
issue responder "/CN=OCSP Demo Responder" responder 365 "$WORK/pub.pem"
# The certificate must carry the token's key, not the CSR's.
[ "$(openssl x509 -in "$ABS/responder.pem" -noout -pubkey)" = \
    "$(openssl pkey -pubin -in "$WORK/pub.pem")" ] ||
    die "responder.pem does not carry the token's public key"

say "issuing good.pem and revoked.pem"
issue good "/CN=good.demo.test" good 90
issue revoked "/CN=revoked.demo.test" revoked 90
chmod 644 "$ABS/ca.pem" "$ABS/responder.pem" "$ABS/good.pem" \
    "$ABS/revoked.pem"

# --- the status index ---------------------------------------------------------
say "importing the leaves and revoking revoked.pem"
"$OCSPCTL" -c "$CONF" import "$ABS/good.pem" "$ABS/revoked.pem" >&2
serial=$(openssl x509 -in "$ABS/revoked.pem" -noout -serial | sed 's/^serial=//')
"$OCSPCTL" -c "$CONF" revoke "$serial" --reason keyCompromise >&2

say "done; start the responder with:"
say "  SOFTHSM2_CONF=$(quote "$ABS/softhsm2.conf") $BUILD/ocsp-responder -f $(quote "$DIR/responder.conf")"
say "then ask it about the good and the revoked certificate:"
print_usage_lines
