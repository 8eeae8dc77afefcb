/* ocsp.h - OCSP on the wire (RFC 6960, RFC 9654 nonces): untrusted request
 * DER in, a struct ocsp_query out; a BasicOCSPResponse built and signed by
 * the HSM out. No OpenSSL ASN.1 type travels past ocsp.c. */
#ifndef RESPONDER_OCSP_H
#define RESPONDER_OCSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hsm/hsm.h"

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

#define OCSP_MAX_REQUEST_LEN (1024 * 1024) /* a hard cap over any config */
#define OCSP_MAX_CERT_IDS    64
#define OCSP_MAX_NONCE_LEN   128
#define OCSP_MAX_HASH_LEN    64
#define OCSP_MAX_SERIAL_LEN  20 /* RFC 5280 4.1.2.2 */
#define OCSP_MAX_CERT_ID_DER 256
#define OCSP_KEY_HASH_LEN    20 /* SHA-1, for ResponderID byKey */

enum ocsp_err {
	OCSP_OK = 0,
	OCSP_ERR_MALFORMED = -1, /* not a request we accept: malformedRequest */
	OCSP_ERR_TOO_MANY = -2,  /* more CertIDs than allowed */
	OCSP_ERR_BAD_NONCE = -3, /* a nonce outside RFC 9654's rules */
	OCSP_ERR_UNSUPPORTED = -4, /* a critical extension we do not know */
	OCSP_ERR_SIGN = -5,        /* the HSM failed: tryLater */
	OCSP_ERR_INTERNAL = -6,    /* encoding failed: internalError */
};

/* OCSPResponseStatus, RFC 6960 4.2.1. */
enum ocsp_response_status {
	OCSP_STATUS_SUCCESSFUL = 0,
	OCSP_STATUS_MALFORMED_REQUEST = 1,
	OCSP_STATUS_INTERNAL_ERROR = 2,
	OCSP_STATUS_TRY_LATER = 3,
	OCSP_STATUS_SIG_REQUIRED = 5,
	OCSP_STATUS_UNAUTHORIZED = 6,
};

enum ocsp_hash {
	OCSP_HASH_SHA1,
	OCSP_HASH_SHA256,
	OCSP_HASH_SHA384,
	OCSP_HASH_SHA512,
};

/* struct ocsp_cert_id is one CertID, copied out of the request: the parsed
 * fields to look it up, and its exact DER to echo in the answer. */
struct ocsp_cert_id {
	enum ocsp_hash hash;
	size_t hash_len;
	uint8_t name_hash[OCSP_MAX_HASH_LEN];
	uint8_t key_hash[OCSP_MAX_HASH_LEN];
	uint8_t serial[OCSP_MAX_SERIAL_LEN]; /* magnitude, big-endian */
	size_t serial_len;
	uint8_t der[OCSP_MAX_CERT_ID_DER];
	size_t der_len;
};

/* struct ocsp_query is everything we use from one OCSPRequest. */
struct ocsp_query {
	struct ocsp_cert_id ids[OCSP_MAX_CERT_IDS];
	size_t n_ids;
	bool has_nonce;
	uint8_t nonce[OCSP_MAX_NONCE_LEN];
	size_t nonce_len;
};

/* struct ocsp_limits bounds what a request may ask for. */
struct ocsp_limits {
	size_t max_cert_ids;  /* 1..OCSP_MAX_CERT_IDS */
	size_t max_nonce_len; /* 1..OCSP_MAX_NONCE_LEN */
};

/* ocsp_query_parse parses der (der_len bytes, untrusted) strictly: a
 * complete OCSPRequest and nothing after it, 1..max_cert_ids CertIDs with
 * a hash we index and 1..20-byte positive serials, an optional nonce of
 * 1..max_nonce_len bytes, no unknown critical extension; the optional
 * request signature is ignored. On failure *out is unspecified. Returns
 * OCSP_OK, OCSP_ERR_MALFORMED, OCSP_ERR_TOO_MANY, OCSP_ERR_BAD_NONCE or
 * OCSP_ERR_UNSUPPORTED; every failure means malformedRequest. */
int ocsp_query_parse(const uint8_t *der, size_t der_len,
    const struct ocsp_limits *limits, struct ocsp_query *out) MUST_CHECK;

enum ocsp_cert_status {
	OCSP_CERT_GOOD,
	OCSP_CERT_REVOKED,
	OCSP_CERT_UNKNOWN,
};

/* struct ocsp_single is one SingleResponse to encode; id is borrowed. */
struct ocsp_single {
	const struct ocsp_cert_id *id;
	enum ocsp_cert_status status;
	int64_t revoked_at;    /* OCSP_CERT_REVOKED: seconds since the epoch */
	int revocation_reason; /* CRLReason 0..10, or -1 to omit it */
	int64_t this_update;   /* seconds since the epoch */
	int64_t next_update;
};

/* struct ocsp_signer is what signing needs; all borrowed, shared by every
 * thread. cert_der may be NULL to leave certs out of the response. */
struct ocsp_signer {
	struct hsm *hsm;
	uint8_t key_hash[OCSP_KEY_HASH_LEN]; /* SHA-1 of subjectPublicKey */
	const uint8_t *cert_der;
	size_t cert_der_len;
};

/* ocsp_response_sign builds a successful OCSPResponse holding a
 * BasicOCSPResponse with one SingleResponse per singles[i] (n 1..
 * OCSP_MAX_CERT_IDS), producedAt produced_at, the nonce echoed when nonce
 * is not NULL, signed through signer->hsm. On success *out is the DER,
 * which the caller frees with free(), and *out_len its length. Returns
 * OCSP_OK, OCSP_ERR_SIGN (the HSM failed) or OCSP_ERR_INTERNAL. */
int ocsp_response_sign(const struct ocsp_signer *signer,
    const struct ocsp_single *singles, size_t n, const uint8_t *nonce,
    size_t nonce_len, int64_t produced_at, uint8_t **out,
    size_t *out_len) MUST_CHECK;

/* ocsp_tbs_encode encodes the ResponseData that ocsp_response_sign()
 * signs, for callers that sign in batches. On success *out is the DER,
 * freed with free(). Returns OCSP_OK or OCSP_ERR_INTERNAL. */
int ocsp_tbs_encode(const struct ocsp_signer *signer,
    const struct ocsp_single *singles, size_t n, const uint8_t *nonce,
    size_t nonce_len, int64_t produced_at, uint8_t **out,
    size_t *out_len) MUST_CHECK;

/* ocsp_response_assemble wraps tbs and its signature (made by
 * signer->hsm's key) into a successful OCSPResponse. On success *out is
 * the DER, freed with free(). Returns OCSP_OK or OCSP_ERR_INTERNAL. */
int ocsp_response_assemble(const struct ocsp_signer *signer, const uint8_t *tbs,
    size_t tbs_len, const uint8_t *signature, size_t signature_len,
    uint8_t **out, size_t *out_len) MUST_CHECK;

/* ocsp_cert_id_encode fills *out with the CertID of serial under the
 * issuer hashes given (hash_len bytes each, SHA-1 or SHA-256 only), its
 * DER as clients encode it. Returns OCSP_OK or OCSP_ERR_INTERNAL. */
int ocsp_cert_id_encode(enum ocsp_hash hash, const uint8_t *name_hash,
    const uint8_t *key_hash, const uint8_t *serial, size_t serial_len,
    struct ocsp_cert_id *out) MUST_CHECK;

/* ocsp_error_response returns the constant DER of an unsuccessful
 * OCSPResponse with status (not OCSP_STATUS_SUCCESSFUL), *out_len its
 * length; the bytes are static. */
const uint8_t *ocsp_error_response(
    enum ocsp_response_status status, size_t *out_len);

/* ocsp_strerror describes err, an enum ocsp_err, in a few words. */
const char *ocsp_strerror(int err);

#endif
