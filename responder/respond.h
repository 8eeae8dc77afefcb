/* respond.h - OCSP policy: one request's DER in, the answer to send out.
 * Decides each certificate's status from the index, never `good` for a
 * serial the index does not hold, and signs through the HSM. */
#ifndef RESPONDER_RESPOND_H
#define RESPONDER_RESPOND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "db/db.h"
#include "hsm/hsm.h"
#include "responder/authority.h"
#include "responder/ocsp.h"

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

/* struct respond_answer is one answer; release it with
 * respond_answer_release(). */
struct respond_answer {
	const uint8_t *der; /* the OCSPResponse; into owned or static */
	size_t der_len;
	uint8_t *owned;
	enum ocsp_response_status status;
	const char *cause;  /* why the status, for the log: "ok", ... */
	const char *source; /* "ondemand" or "static" (an error answer) */
	bool has_nonce;
	int64_t this_update; /* successful answers: the validity */
	int64_t next_update;
	uint8_t etag[32]; /* SHA-256 of der, when has_etag */
	bool has_etag;
	char serials[96];  /* hex serials asked for, for the log */
	char statuses[64]; /* their statuses, comma-separated */
};

struct respond;

/* respond_store_fn receives each answer signed on demand that the
 * pre-signer would have made (one indexed CertID, no nonce), to store it
 * for the next client. It is called on a request thread and must not
 * block; every pointer is borrowed for the call. */
typedef void (*respond_store_fn)(void *cls, const struct db_key *key,
    enum db_hash hash, const struct db_cert *signed_for, const uint8_t *der,
    size_t der_len, int64_t this_update, int64_t next_update);

/* respond_new makes the answering policy over authority and db, both
 * borrowed until respond_free(). store (may be NULL) with store_cls gets
 * the answers worth keeping. On success *out is shared read-only by every
 * thread. Returns 0 or -1 (out of memory). */
int respond_new(const struct authority *authority, struct db *db,
    respond_store_fn store, void *store_cls, struct respond **out) MUST_CHECK;

/* respond_free releases r. Accepts NULL. */
void respond_free(struct respond *r);

/* respond_query answers the OCSPRequest der (der_len bytes, untrusted).
 * It always fills *out with an answer to send: malformedRequest,
 * unauthorized, internalError or tryLater when it cannot say more.
 * Thread-safe. */
void respond_query(const struct respond *r, const uint8_t *der, size_t der_len,
    struct respond_answer *out);

/* respond_answer_release frees what *answer owns. Accepts NULL. */
void respond_answer_release(struct respond_answer *answer);

/* respond_error fills *out with the constant answer status, for errors
 * found before any OCSP parsing (an oversized body, say). */
void respond_error(enum ocsp_response_status status, const char *cause,
    struct respond_answer *out);

#endif
