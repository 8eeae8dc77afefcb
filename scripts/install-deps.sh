#!/bin/sh
# Installs the Debian packages the build, the demo and the tests need, and
# only those that are missing, so that a second run costs one dpkg query.
set -e
PKGS="make gcc clang libclang-rt-14-dev pkg-config openssl libssl-dev libp11-dev
      libp11-kit-dev libmicrohttpd-dev liblmdb-dev lmdb-utils softhsm2 curl
      ca-certificates faketime wrk time"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
