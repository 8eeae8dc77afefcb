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
	char serials[96];  /* hex serials asked for, for the log */
	char statuses[64]; /* their statuses, comma-separated */
};

struct respond;

/* respond_new loads the responder and issuer certificates named by conf
 * and checks them against each other and against the HSM's key (the
 * responder certificate matches the key, is valid now, has the OCSPSigning
 * EKU and id-pkix-ocsp-nocheck, and was issued by every issuer, unless it
 * is the issuer itself). conf, db and hsm are borrowed until
 * respond_free(). On success *out owns the policy, shared read-only by
 * every thread. On failure, returns -1 with the rule that failed in err. */
int respond_new(const struct conf *conf, struct db *db, struct hsm *hsm,
    struct respond **out, char *err, size_t err_len) MUST_CHECK;

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
