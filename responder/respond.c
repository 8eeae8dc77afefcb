/* respond.c - what to answer: issuer and status of each CertID from the
 * index, validity from the configuration, the signature from the HSM.
 * Errors become RFC 6960 statuses; a client never sees our error text. */
#include "responder/respond.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "responder/issuer.h"
#include "responder/log.h"

struct respond {
	const struct authority *authority;
	struct db *db;
	struct ocsp_limits limits;
	respond_store_fn store;
	void *store_cls;
};

int
respond_new(const struct authority *authority, struct db *db,
    respond_store_fn store, void *store_cls, struct respond **out)
{
	struct respond *r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return -1;
	r->authority = authority;
	r->db = db;
	r->store = store;
	r->store_cls = store_cls;
	r->limits.max_cert_ids = authority->conf->max_cert_ids;
	r->limits.max_nonce_len = authority->conf->max_nonce_len;
	*out = r;
	return 0;
}

void
respond_free(struct respond *r)
{
	free(r);
}

/* set_error turns *out into the constant answer status, keeping what it
 * says for the log. */
static void
set_error(enum ocsp_response_status status, const char *cause,
    struct respond_answer *out)
{
	out->der = ocsp_error_response(status, &out->der_len);
	out->status = status;
	out->cause = cause;
	out->source = "static";
}

void
respond_error(enum ocsp_response_status status, const char *cause,
    struct respond_answer *out)
{
	memset(out, 0, sizeof(*out));
	set_error(status, cause, out);
}

static void
append_text(char *buf, size_t buf_len, const char *text)
{
	size_t used = strlen(buf);

	if (used + strlen(text) + 2 >= buf_len) {
		if (used + 4 < buf_len && strstr(buf, "...") == NULL)
			memcpy(buf + used, "...", 4);
		return;
	}
	if (used > 0)
		buf[used++] = ',';
	memcpy(buf + used, text, strlen(text) + 1);
}

static const char *
cert_status_name(enum ocsp_cert_status status)
{
	switch (status) {
	case OCSP_CERT_GOOD:
		return "good";
	case OCSP_CERT_REVOKED:
		return "revoked";
	case OCSP_CERT_UNKNOWN:
		return "unknown";
	}
	return "?";
}

/* status_of_id fills *single from the index. Only a record the index
 * holds can make a certificate good. Returns 0, or the answer status to
 * send instead. */
static enum ocsp_response_status
status_of_id(const struct respond *r, const struct ocsp_cert_id *id,
    struct ocsp_single *single, struct db_key *key, bool *is_indexed)
{
	const struct issuer *issuer;
	struct db_cert cert;

	single->id = id;
	single->status = OCSP_CERT_UNKNOWN;
	single->revocation_reason = -1;
	*is_indexed = false;
	if ((issuer = issuer_find(
		 r->authority->issuers, r->authority->n_issuers, id)) == NULL)
		return OCSP_STATUS_UNAUTHORIZED;
	memcpy(key->issuer_id, issuer->id, sizeof(key->issuer_id));
	memcpy(key->serial, id->serial, id->serial_len);
	key->serial_len = id->serial_len;
	switch (db_lookup(r->db, key, &cert)) {
	case DB_OK:
		break;
	case DB_ERR_NOT_FOUND:
		return OCSP_STATUS_SUCCESSFUL; /* unknown, RFC 6960 2.2 */
	case DB_ERR_CORRUPT:
	case DB_ERR_IO:
	case DB_ERR_VERSION:
	case DB_ERR_FULL:
	case DB_ERR_READONLY:
	case DB_ERR_ARG:
	case DB_ERR_NOMEM:
	case DB_ERR_NO_INDEX:
		return OCSP_STATUS_INTERNAL_ERROR;
	}
	*is_indexed = true;
	switch (cert.state) {
	case DB_CERT_GOOD:
		single->status = OCSP_CERT_GOOD;
		return OCSP_STATUS_SUCCESSFUL;
	case DB_CERT_REVOKED:
		single->status = OCSP_CERT_REVOKED;
		single->revoked_at = cert.revoked_at;
		single->revocation_reason = cert.revocation_reason;
		return OCSP_STATUS_SUCCESSFUL;
	}
	return OCSP_STATUS_INTERNAL_ERROR;
}

/* db_hash_of tells which stored response could answer id: only the hashes
 * we pre-sign, and only a CertID encoded byte for byte as we encode it,
 * since the answer echoes the CertID exactly. */
static bool
db_hash_of(const struct ocsp_cert_id *id, enum db_hash *out)
{
	struct ocsp_cert_id canonical;

	switch (id->hash) {
	case OCSP_HASH_SHA1:
		*out = DB_HASH_SHA1;
		break;
	case OCSP_HASH_SHA256:
		*out = DB_HASH_SHA256;
		break;
	case OCSP_HASH_SHA384:
	case OCSP_HASH_SHA512:
		return false;
	}
	if (ocsp_cert_id_encode(id->hash, id->name_hash, id->key_hash,
		id->serial, id->serial_len, &canonical) != OCSP_OK)
		return false;
	return canonical.der_len == id->der_len &&
	    memcmp(canonical.der, id->der, id->der_len) == 0;
}

static bool
is_same_status(const struct db_cert *a, const struct db_cert *b)
{
	return a->state == b->state && a->revoked_at == b->revoked_at &&
	    a->revocation_reason == b->revocation_reason;
}

/* answer_presigned serves id from the index's pre-signed response when
 * there is one for exactly this status, still within its validity: the
 * stored bytes go out as they are, with no parsing and no signing.
 * Returns false when the caller must sign. */
static bool
answer_presigned(const struct respond *r, const struct ocsp_cert_id *id,
    int64_t now, struct respond_answer *out)
{
	const struct issuer *issuer;
	struct db_response *response = NULL;
	struct db_key key;
	struct db_cert cert;
	enum db_hash hash;
	bool has_response = false, is_served = false;

	if (!db_hash_of(id, &hash))
		goto out;
	if ((issuer = issuer_find(
		 r->authority->issuers, r->authority->n_issuers, id)) == NULL)
		goto out;
	memcpy(key.issuer_id, issuer->id, sizeof(key.issuer_id));
	memcpy(key.serial, id->serial, id->serial_len);
	key.serial_len = id->serial_len;
	if ((response = malloc(sizeof(*response))) == NULL)
		goto out;
	if (db_lookup_answer(
		r->db, &key, hash, &cert, response, &has_response) != DB_OK ||
	    !has_response)
		goto out;
	/* A revocation since signing makes the stored answer wrong: sign
	 * anew now rather than wait for the refresher. */
	if (!is_same_status(&cert, &response->signed_for) ||
	    now < response->this_update || now >= response->next_update)
		goto out;
	out->der = response->der;
	out->der_len = response->der_len;
	out->owned = (uint8_t *)response;
	out->status = OCSP_STATUS_SUCCESSFUL;
	out->cause = "ok";
	out->source = "presigned";
	out->this_update = response->this_update;
	out->next_update = response->next_update;
	memcpy(out->etag, response->etag, sizeof(out->etag));
	out->has_etag = true;
	(void)snprintf(out->statuses, sizeof(out->statuses), "%s",
	    cert.state == DB_CERT_GOOD ? "good" : "revoked");
	response = NULL;
	is_served = true;
out:
	free(response);
	return is_served;
}

void
respond_query(const struct respond *r, const uint8_t *der, size_t der_len,
    struct respond_answer *out)
{
	struct ocsp_single singles[OCSP_MAX_CERT_IDS];
	struct ocsp_query *query = NULL;
	enum ocsp_response_status status;
	char hex[2 * OCSP_MAX_SERIAL_LEN + 1];
	int64_t now, next_update;
	uint8_t *response = NULL;
	size_t response_len, i;
	struct db_key key;
	struct db_cert signed_for;
	enum db_hash hash;
	bool is_indexed = false;
	unsigned int etag_len;
	int rc;

	respond_error(OCSP_STATUS_INTERNAL_ERROR, "internal", out);
	/* From here on only set_error(): the log keeps the serials. */
	if ((query = malloc(sizeof(*query))) == NULL)
		goto out;
	if ((rc = ocsp_query_parse(der, der_len, &r->limits, query)) !=
	    OCSP_OK) {
		set_error(
		    OCSP_STATUS_MALFORMED_REQUEST, ocsp_strerror(rc), out);
		goto out;
	}
	out->has_nonce = query->has_nonce;
	now = (int64_t)time(NULL);
	append_text(out->serials, sizeof(out->serials),
	    log_hex(query->ids[0].serial, query->ids[0].serial_len, hex,
		sizeof(hex)));
	if (query->n_ids == 1 && !query->has_nonce &&
	    answer_presigned(r, &query->ids[0], now, out))
		goto out;
	out->serials[0] = '\0';
	next_update = authority_next_update(r->authority, now);
	for (i = 0; i < query->n_ids; i++) {
		status = status_of_id(
		    r, &query->ids[i], &singles[i], &key, &is_indexed);
		append_text(out->serials, sizeof(out->serials),
		    log_hex(query->ids[i].serial, query->ids[i].serial_len, hex,
			sizeof(hex)));
		if (status != OCSP_STATUS_SUCCESSFUL) {
			set_error(status,
			    status == OCSP_STATUS_UNAUTHORIZED
				? "unknown issuer"
				: "index error",
			    out);
			goto out;
		}
		singles[i].this_update = now;
		singles[i].next_update = next_update;
		append_text(out->statuses, sizeof(out->statuses),
		    cert_status_name(singles[i].status));
	}
	rc = ocsp_response_sign(&r->authority->signer, singles, query->n_ids,
	    query->has_nonce ? query->nonce : NULL, query->nonce_len, now,
	    &response, &response_len);
	switch (rc) {
	case OCSP_OK:
		break;
	case OCSP_ERR_SIGN:
		set_error(OCSP_STATUS_TRY_LATER, "hsm unavailable", out);
		goto out;
	default:
		set_error(OCSP_STATUS_INTERNAL_ERROR, "encoding failed", out);
		goto out;
	}
	out->owned = response;
	out->der = response;
	out->der_len = response_len;
	out->status = OCSP_STATUS_SUCCESSFUL;
	out->cause = "ok";
	out->source = "ondemand";
	out->this_update = now;
	out->next_update = next_update;
	if (EVP_Digest(response, response_len, out->etag, &etag_len,
		EVP_sha256(), NULL) == 1)
		out->has_etag = true;
	/* A plain answer about an indexed certificate is what the
	 * pre-signer would have made: keep it for the next client. */
	if (r->store != NULL && query->n_ids == 1 && !query->has_nonce &&
	    is_indexed && db_hash_of(&query->ids[0], &hash)) {
		signed_for.state = singles[0].status == OCSP_CERT_REVOKED
		    ? DB_CERT_REVOKED
		    : DB_CERT_GOOD;
		signed_for.revoked_at = signed_for.state == DB_CERT_REVOKED
		    ? singles[0].revoked_at
		    : 0;
		signed_for.revocation_reason = singles[0].revocation_reason;
		signed_for.not_after = 0;
		r->store(r->store_cls, &key, hash, &signed_for, response,
		    response_len, now, next_update);
	}
	response = NULL;
out:
	free(response);
	free(query);
	ERR_clear_error();
}

void
respond_answer_release(struct respond_answer *answer)
{
	if (answer == NULL)
		return;
	free(answer->owned);
	answer->owned = NULL;
	answer->der = NULL;
}
