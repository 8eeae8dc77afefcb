/* fuzz_get_path.c - libFuzzer target: an untrusted, already percent-decoded
 * GET path through http_decode_get_path() and then ocsp_query_parse();
 * aborts when the decoder breaks http.h's contract. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "responder/http.h"
#include "responder/ocsp.h"

#define OUT_CAP 10240 /* max_request_bytes' default */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct ocsp_limits limits = {
    .max_cert_ids = OCSP_MAX_CERT_IDS,
    .max_nonce_len = OCSP_MAX_NONCE_LEN,
};

/* decode runs http_decode_get_path() into a heap buffer of exactly cap
 * bytes, so that ASan catches a write past it, and checks the result. */
static size_t
decode(const char *path, size_t cap, uint8_t **out)
{
	size_t len;

	if ((*out = malloc(cap > 0 ? cap : 1)) == NULL)
		abort();
	len = http_decode_get_path(path, *out, cap);
	if (len > cap || (len > 0 && (*out)[0] != 0x30))
		abort();
	return len;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ocsp_query *query = NULL;
	uint8_t *der = NULL, *small = NULL;
	char *path;
	size_t len;
	int rc;

	if ((path = malloc(size + 1)) == NULL)
		abort();
	memcpy(path, data, size);
	path[size] = '\0';

	len = decode(path, OUT_CAP, &der);
	if (len > 0) {
		/* One byte less room: the decoder must refuse this candidate
		 * rather than write past the buffer. */
		(void)decode(path, len - 1, &small);
		if ((query = malloc(sizeof(*query))) == NULL)
			abort();
		rc = ocsp_query_parse(der, len, &limits, query);
		if (rc == OCSP_OK &&
		    (query->n_ids < 1 || query->n_ids > limits.max_cert_ids))
			abort();
	}
	free(query);
	free(small);
	free(der);
	free(path);
	return 0;
}
