#!/bin/sh
# Rebuilds the seed corpora under tests/fuzz/corpus/ from the captured
# requests in tests/data/corpus/ocsp-requests/ and from conf/; run it from
# the top of the checkout. The hand-written configuration variants live in
# tests/fuzz/corpus/fuzz_conf/ and are kept.
set -eu
src=tests/data/corpus/ocsp-requests
out=tests/fuzz/corpus
mkdir -p "$out/fuzz_request" "$out/fuzz_get_path" "$out/fuzz_conf"

for f in "$src"/*.der; do
	cp "$f" "$out/fuzz_request/"
done

# Each GET twice: the path as the handler sees it, after libmicrohttpd's
# percent-decoding (perl-base is essential in Debian), and the
# request-target exactly as sent.
for f in "$src"/*.get.txt; do
	name=$(basename "$f" .get.txt)
	cp "$f" "$out/fuzz_get_path/$name.get.txt"
	perl -pe 's/%([0-9A-Fa-f]{2})/chr(hex($1))/ge' "$f" \
	    >"$out/fuzz_get_path/$name.path"
done

cp conf/responder.conf "$out/fuzz_conf/responder.conf"
