/* test_ocsp.c - request parsing against real clients' requests (the
 * corpus), CertID matching against the certificates beside them, and
 * every truncation and bit flip of a known-good request. */
#include <dirent.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "responder/issuer.h"
#include "responder/ocsp.h"
#include "tests/test.h"

#define CORPUS "tests/data/corpus/ocsp-requests/"

static const struct ocsp_limits wide = {OCSP_MAX_CERT_IDS, OCSP_MAX_NONCE_LEN};
static struct ocsp_query query;

static size_t
read_file(const char *path, uint8_t *out, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL)
		return 0;
	n = fread(out, 1, cap, f);
	(void)fclose(f);
	return n;
}

static X509 *
corpus_cert(const char *name)
{
	char path[256];

	(void)snprintf(path, sizeof(path), CORPUS "%s", name);
	return issuer_read_cert(path);
}

static bool
serial_is(const struct ocsp_cert_id *id, X509 *cert)
{
	const ASN1_INTEGER *serial = X509_get0_serialNumber(cert);

	return (size_t)ASN1_STRING_length(serial) == id->serial_len &&
	    memcmp(ASN1_STRING_get0_data(serial), id->serial, id->serial_len) ==
	    0;
}

/* Every corpus request parses; its CertIDs find the right CA among two
 * that share a subject, and name the certificates the README lists. */
static void
test_corpus(void)
{
	struct issuer issuers[2];
	X509 *good_rsa, *revoked_rsa, *serial16, *good_ec, *revoked_ec, *want;
	const struct issuer *found, *want_issuer;
	char err[256], path[512];
	uint8_t der[4096];
	struct dirent *entry;
	size_t len, i;
	DIR *dir;
	int n_files = 0;

	CHECK(issuer_load(CORPUS "ca-rsa.pem", &issuers[0], err, sizeof(err)) ==
	    0);
	CHECK(issuer_load(CORPUS "ca-ec.pem", &issuers[1], err, sizeof(err)) ==
	    0);
	good_rsa = corpus_cert("good-rsa.pem");
	revoked_rsa = corpus_cert("revoked-rsa.pem");
	serial16 = corpus_cert("serial16-rsa.pem");
	good_ec = corpus_cert("good-ec.pem");
	revoked_ec = corpus_cert("revoked-ec.pem");
	CHECK(good_rsa && revoked_rsa && serial16 && good_ec && revoked_ec);

	/* The README's expected hashes. */
	CHECK(memcmp(issuers[0].key_hash[OCSP_HASH_SHA1],
		  "\x40\x72\x45\xba\x17\x84\xe3\x5a\x4f\x09\x56\x5d\x6c\xbd"
		  "\x68\xd2\x7a\x14\x23\xde",
		  20) == 0);
	CHECK(memcmp(issuers[1].key_hash[OCSP_HASH_SHA1],
		  "\x08\xbb\x3a\x5d\xa7\x25\xa3\xb1\x5a\xa5\xbd\x64\x4c\x1f"
		  "\xfa\x0b\x31\x04\xa7\xbe",
		  20) == 0);
	CHECK(memcmp(issuers[0].name_hash[OCSP_HASH_SHA1],
		  issuers[1].name_hash[OCSP_HASH_SHA1], 20) == 0);

	dir = opendir(CORPUS);
	CHECK(dir != NULL);
	while (dir != NULL && (entry = readdir(dir)) != NULL) {
		const char *name = entry->d_name;
		bool is_ec = strstr(name, "-ec.") != NULL;

		len = strlen(name);
		if (len < 5 || strcmp(name + len - 4, ".der") != 0)
			continue;
		n_files++;
		(void)snprintf(path, sizeof(path), CORPUS "%s", name);
		len = read_file(path, der, sizeof(der));
		CHECK(len > 0);
		if (ocsp_query_parse(der, len, &wide, &query) != OCSP_OK) {
			fprintf(stderr, "corpus: %s does not parse\n", name);
			CHECK(false);
			continue;
		}
		want_issuer = is_ec ? &issuers[1] : &issuers[0];
		for (i = 0; i < query.n_ids; i++) {
			found = issuer_find(issuers, 2, &query.ids[i]);
			CHECK(found == want_issuer);
			if (strstr(name, "serial16") != NULL)
				want = serial16;
			else if (i == 1)
				want = is_ec ? revoked_ec : revoked_rsa;
			else
				want = is_ec ? good_ec : good_rsa;
			CHECK(serial_is(&query.ids[i], want));
		}
		CHECK(query.n_ids ==
		    (strstr(name, "two-certids") != NULL ? 2u : 1u));
		CHECK(query.has_nonce == (strstr(name, "nonce") != NULL));
		if (strstr(name, "sha256") != NULL &&
		    strstr(name, "mixed") == NULL)
			CHECK(query.ids[0].hash == OCSP_HASH_SHA256);
	}
	if (dir != NULL)
		(void)closedir(dir);
	CHECK(n_files == 68);
	X509_free(good_rsa);
	X509_free(revoked_rsa);
	X509_free(serial16);
	X509_free(good_ec);
	X509_free(revoked_ec);
	issuer_release(&issuers[0]);
	issuer_release(&issuers[1]);
}

/* Every strict prefix and every trailing addition fails; every single-bit
 * flip either fails or parses into something sane, and never crashes. */
static void
test_truncations_and_flips(void)
{
	uint8_t der[4096], copy[4097];
	size_t len, cut, bit;
	int rc, n_bad = 0;

	len = read_file(
	    CORPUS "openssl-post-nonce-two-certids.der", der, sizeof(der));
	CHECK(len > 0);
	CHECK(ocsp_query_parse(der, len, &wide, &query) == OCSP_OK);
	for (cut = 0; cut < len; cut++) {
		if (ocsp_query_parse(der, cut, &wide, &query) == OCSP_OK)
			n_bad++;
	}
	CHECK(n_bad == 0);
	memcpy(copy, der, len);
	copy[len] = 0;
	CHECK(ocsp_query_parse(copy, len + 1, &wide, &query) ==
	    OCSP_ERR_MALFORMED);
	for (bit = 0; bit < len * 8; bit++) {
		memcpy(copy, der, len);
		copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		rc = ocsp_query_parse(copy, len, &wide, &query);
		if (rc == OCSP_OK)
			CHECK(query.n_ids >= 1 && query.n_ids <= 2 &&
			    query.ids[0].serial_len >= 1 &&
			    query.ids[0].serial_len <= OCSP_MAX_SERIAL_LEN);
	}
	CHECK(ocsp_query_parse(NULL, 0, &wide, &query) == OCSP_ERR_MALFORMED);
	CHECK(ocsp_query_parse(der, 0, &wide, &query) == OCSP_ERR_MALFORMED);
}

/* build_request encodes a request for n CertIDs of serials 1..n, with a
 * nonce of nonce_len bytes (0 for none). Returns the DER length. */
static size_t
build_request(size_t n, size_t nonce_len, bool add_critical, uint8_t *out)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	X509 *ca = corpus_cert("ca-rsa.pem");
	unsigned char nonce[256], *p = out;
	X509_EXTENSION *ext;
	ASN1_OCTET_STRING *value;
	ASN1_INTEGER *serial;
	OCSP_CERTID *id;
	size_t i;
	int len;

	for (i = 0; i < n; i++) {
		serial = ASN1_INTEGER_new();
		(void)ASN1_INTEGER_set(serial, (long)(i + 1));
		id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca),
		    X509_get0_pubkey_bitstr(ca), serial);
		(void)OCSP_request_add0_id(req, id);
		ASN1_INTEGER_free(serial);
	}
	memset(nonce, 0x5a, sizeof(nonce));
	if (nonce_len > 0)
		(void)OCSP_request_add1_nonce(req, nonce, (int)nonce_len);
	if (add_critical) {
		value = ASN1_OCTET_STRING_new();
		(void)ASN1_OCTET_STRING_set(
		    value, (const unsigned char *)"\x05\x00", 2);
		ext = X509_EXTENSION_create_by_NID(
		    NULL, NID_id_pkix_OCSP_serviceLocator, 1, value);
		(void)OCSP_REQUEST_add_ext(req, ext, -1);
		X509_EXTENSION_free(ext);
		ASN1_OCTET_STRING_free(value);
	}
	len = i2d_OCSP_REQUEST(req, &p);
	OCSP_REQUEST_free(req);
	X509_free(ca);
	return len > 0 ? (size_t)len : 0;
}

static void
test_limits(void)
{
	struct ocsp_limits limits = {8, 32};
	uint8_t der[8192];
	size_t len;

	len = build_request(8, 0, false, der);
	CHECK(ocsp_query_parse(der, len, &limits, &query) == OCSP_OK);
	CHECK(query.n_ids == 8 && !query.has_nonce);
	CHECK(query.ids[7].serial_len == 1 && query.ids[7].serial[0] == 8);
	len = build_request(9, 0, false, der);
	CHECK(ocsp_query_parse(der, len, &limits, &query) == OCSP_ERR_TOO_MANY);
	len = build_request(65, 0, false, der);
	CHECK(ocsp_query_parse(der, len, &wide, &query) == OCSP_ERR_TOO_MANY);

	/* RFC 9654: 1..32 by default, up to the configured maximum. */
	len = build_request(1, 1, false, der);
	CHECK(ocsp_query_parse(der, len, &limits, &query) == OCSP_OK);
	CHECK(query.has_nonce && query.nonce_len == 1);
	len = build_request(1, 32, false, der);
	CHECK(ocsp_query_parse(der, len, &limits, &query) == OCSP_OK);
	CHECK(query.nonce_len == 32 && query.nonce[31] == 0x5a);
	len = build_request(1, 33, false, der);
	CHECK(
	    ocsp_query_parse(der, len, &limits, &query) == OCSP_ERR_BAD_NONCE);
	limits.max_nonce_len = 128;
	len = build_request(1, 128, false, der);
	CHECK(ocsp_query_parse(der, len, &limits, &query) == OCSP_OK);
	len = build_request(1, 129, false, der);
	CHECK(
	    ocsp_query_parse(der, len, &limits, &query) == OCSP_ERR_BAD_NONCE);

	len = build_request(1, 0, true, der);
	CHECK(ocsp_query_parse(der, len, &limits, &query) ==
	    OCSP_ERR_UNSUPPORTED);
}

/* A zero-length nonce and a nonce that is not an OCTET STRING are
 * refused: both are hand-made, as OpenSSL would not encode them. */
static void
test_bad_nonce_encodings(void)
{
	OCSP_REQUEST *req;
	X509_EXTENSION *ext;
	ASN1_OCTET_STRING *value;
	unsigned char der[1024], *p;
	uint8_t base[1024];
	size_t base_len;
	const unsigned char *q;
	int len;
	static const unsigned char empty_nonce[] = {0x04, 0x00};
	static const unsigned char not_octets[] = {0x02, 0x01, 0x05};

	base_len = build_request(1, 0, false, base);
	const unsigned char *const values[] = {empty_nonce, not_octets};
	const int lens[] = {2, 3};
	for (int v = 0; v < 2; v++) {
		q = base;
		req = d2i_OCSP_REQUEST(NULL, &q, (long)base_len);
		value = ASN1_OCTET_STRING_new();
		(void)ASN1_OCTET_STRING_set(value, values[v], lens[v]);
		ext = X509_EXTENSION_create_by_NID(
		    NULL, NID_id_pkix_OCSP_Nonce, 0, value);
		(void)OCSP_REQUEST_add_ext(req, ext, -1);
		p = der;
		len = i2d_OCSP_REQUEST(req, &p);
		CHECK(len > 0);
		CHECK(ocsp_query_parse(der, (size_t)len, &wide, &query) ==
		    OCSP_ERR_BAD_NONCE);
		X509_EXTENSION_free(ext);
		ASN1_OCTET_STRING_free(value);
		OCSP_REQUEST_free(req);
	}
}

static void
test_error_responses(void)
{
	const uint8_t *der;
	size_t len;
	const unsigned char *p;
	OCSP_RESPONSE *resp;

	der = ocsp_error_response(OCSP_STATUS_UNAUTHORIZED, &len);
	p = der;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	CHECK(resp != NULL && p == der + len);
	CHECK(OCSP_response_status(resp) == OCSP_RESPONSE_STATUS_UNAUTHORIZED);
	OCSP_RESPONSE_free(resp);
	der = ocsp_error_response(OCSP_STATUS_MALFORMED_REQUEST, &len);
	p = der;
	resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
	CHECK(resp != NULL &&
	    OCSP_response_status(resp) ==
		OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
	OCSP_RESPONSE_free(resp);
}

int
main(void)
{
	test_corpus();
	test_truncations_and_flips();
	test_limits();
	test_bad_nonce_encodings();
	test_error_responses();
	return test_summary();
}
