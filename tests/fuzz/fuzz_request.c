/* fuzz_request.c - libFuzzer target: untrusted request DER through
 * ocsp_query_parse() and, on success, issuer_find() against the corpus's
 * two CAs; aborts when a parsed query breaks ocsp.h's contract. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "responder/issuer.h"
#include "responder/ocsp.h"

#define CORPUS "tests/data/corpus/ocsp-requests/"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct issuer issuers[2];

/* The widest limits ocsp.h allows, so that every check is reachable. */
static const struct ocsp_limits limits = {
    .max_cert_ids = OCSP_MAX_CERT_IDS,
    .max_nonce_len = OCSP_MAX_NONCE_LEN,
};

static size_t
hash_len_of(enum ocsp_hash hash)
{
	switch (hash) {
	case OCSP_HASH_SHA1:
		return 20;
	case OCSP_HASH_SHA256:
		return 32;
	case OCSP_HASH_SHA384:
		return 48;
	case OCSP_HASH_SHA512:
		return 64;
	}
	return 0;
}

static bool
is_issuer_of(const struct issuer *issuer, const struct ocsp_cert_id *id)
{
	return memcmp(issuer->name_hash[id->hash], id->name_hash,
		   id->hash_len) == 0 &&
	    memcmp(issuer->key_hash[id->hash], id->key_hash, id->hash_len) == 0;
}

static void
check_cert_id(const struct ocsp_cert_id *id)
{
	const struct issuer *found;

	if (id->hash_len == 0 || id->hash_len != hash_len_of(id->hash))
		abort();
	if (id->serial_len < 1 || id->serial_len > OCSP_MAX_SERIAL_LEN ||
	    id->serial[0] == 0)
		abort();
	if (id->der_len < 2 || id->der_len > OCSP_MAX_CERT_ID_DER ||
	    id->der[0] != 0x30)
		abort();
	found = issuer_find(issuers, 2, id);
	if (found != NULL &&
	    (found < issuers || found >= issuers + 2 ||
		!is_issuer_of(found, id)))
		abort();
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const paths[2] = {
	    CORPUS "ca-rsa.pem", CORPUS "ca-ec.pem"};
	char err[256];
	size_t i;

	(void)argc;
	(void)argv;
	for (i = 0; i < 2; i++) {
		if (issuer_load(paths[i], &issuers[i], err, sizeof(err)) != 0) {
			(void)fprintf(stderr,
			    "fuzz_request: %s (run from the top of the "
			    "checkout)\n",
			    err);
			exit(1);
		}
	}
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ocsp_query *query;
	size_t i;
	int rc;

	/* On the heap, so that ASan sees past its end. */
	if ((query = malloc(sizeof(*query))) == NULL)
		abort();
	rc = ocsp_query_parse(data, size, &limits, query);
	if (rc == OCSP_OK) {
		if (query->n_ids < 1 || query->n_ids > limits.max_cert_ids)
			abort();
		for (i = 0; i < query->n_ids; i++)
			check_cert_id(&query->ids[i]);
		if (query->has_nonce &&
		    (query->nonce_len < 1 ||
			query->nonce_len > limits.max_nonce_len))
			abort();
	} else if (rc != OCSP_ERR_MALFORMED && rc != OCSP_ERR_TOO_MANY &&
	    rc != OCSP_ERR_BAD_NONCE && rc != OCSP_ERR_UNSUPPORTED) {
		abort();
	}
	free(query);
	return 0;
}
