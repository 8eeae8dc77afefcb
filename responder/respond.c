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

#include "responder/issuer.h"
#include "responder/log.h"

struct respond {
	const struct conf *conf;
	struct db *db;
	struct issuer issuers[CONF_MAX_ISSUERS];
	size_t n_issuers;
	X509 *responder_cert;
	uint8_t *responder_cert_der;
	int64_t responder_not_after;
	struct ocsp_signer signer;
	struct ocsp_limits limits;
};

static int
asn1_time_to_epoch(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1)
		return -1;
	*out = (int64_t)timegm(&tm);
	return 0;
}

/* The checks a delegated responder certificate must pass (RFC 6960
 * 4.2.2.2, CA/B Forum BR 7.1.2.8, Mozilla policy 6); a CA signing its own
 * answers needs none of them. */
static int
check_responder_cert(
    struct respond *r, struct hsm *hsm, char *err, size_t err_len)
{
	X509 *cert = r->responder_cert;
	const uint8_t *hsm_spki;
	unsigned char *cert_spki = NULL;
	size_t hsm_spki_len;
	int cert_spki_len, rc = -1;
	int64_t not_before;
	time_t now = time(NULL);
	size_t i;
	bool is_issuer;

	hsm_get0_public_key(hsm, &hsm_spki, &hsm_spki_len);
	cert_spki_len = i2d_PUBKEY(X509_get0_pubkey(cert), &cert_spki);
	if (cert_spki_len <= 0 || (size_t)cert_spki_len != hsm_spki_len ||
	    memcmp(cert_spki, hsm_spki, hsm_spki_len) != 0) {
		(void)snprintf(err, err_len,
		    "responder certificate %s does not hold the public key of "
		    "the signing key in the token",
		    r->conf->responder_cert);
		goto out;
	}
	if (asn1_time_to_epoch(X509_get0_notBefore(cert), &not_before) != 0 ||
	    asn1_time_to_epoch(
		X509_get0_notAfter(cert), &r->responder_not_after) != 0 ||
	    not_before > now || r->responder_not_after <= now) {
		(void)snprintf(err, err_len,
		    "responder certificate %s is not valid now",
		    r->conf->responder_cert);
		goto out;
	}
	for (i = 0; i < r->n_issuers; i++) {
		is_issuer = X509_cmp(cert, r->issuers[i].cert) == 0;
		if (is_issuer)
			continue;
		if (issuer_of_cert(&r->issuers[i], 1, cert) == NULL) {
			(void)snprintf(err, err_len,
			    "responder certificate %s was not issued by %s "
			    "(RFC 6960 4.2.2.2)",
			    r->conf->responder_cert, r->conf->issuer_certs[i]);
			goto out;
		}
		if ((X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) == 0 ||
		    (X509_get_extended_key_usage(cert) & XKU_OCSP_SIGN) == 0) {
			(void)snprintf(err, err_len,
			    "responder certificate %s lacks the OCSPSigning "
			    "extended key usage (RFC 6960 4.2.2.2)",
			    r->conf->responder_cert);
			goto out;
		}
		if (X509_get_ext_by_NID(cert, NID_id_pkix_OCSP_noCheck, -1) <
		    0) {
			(void)snprintf(err, err_len,
			    "responder certificate %s lacks "
			    "id-pkix-ocsp-nocheck "
			    "(CA/B Forum BR 7.1.2.8)",
			    r->conf->responder_cert);
			goto out;
		}
	}
	if (r->responder_not_after - now < (int64_t)r->conf->validity_s)
		log_warn("responder certificate %s expires within one validity "
			 "period: answers end at its notAfter",
		    r->conf->responder_cert);
	rc = 0;
out:
	OPENSSL_free(cert_spki);
	ERR_clear_error();
	return rc;
}

int
respond_new(const struct conf *conf, struct db *db, struct hsm *hsm,
    struct respond **out, char *err, size_t err_len)
{
	struct respond *r = NULL;
	unsigned char *p;
	int der_len, rc = -1;
	size_t i;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		(void)snprintf(err, err_len, "out of memory");
		goto out;
	}
	r->conf = conf;
	r->db = db;
	r->limits.max_cert_ids = conf->max_cert_ids;
	r->limits.max_nonce_len = conf->max_nonce_len;
	for (i = 0; i < conf->n_issuer_certs; i++) {
		if (issuer_load(conf->issuer_certs[i], &r->issuers[i], err,
			err_len) != 0)
			goto out;
		r->n_issuers++;
	}
	if ((r->responder_cert = issuer_read_cert(conf->responder_cert)) ==
	    NULL) {
		(void)snprintf(err, err_len,
		    "cannot read responder certificate %s",
		    conf->responder_cert);
		goto out;
	}
	if (check_responder_cert(r, hsm, err, err_len) != 0)
		goto out;
	der_len = i2d_X509(r->responder_cert, NULL);
	if (der_len <= 0 ||
	    (r->responder_cert_der = malloc((size_t)der_len)) == NULL) {
		(void)snprintf(
		    err, err_len, "cannot encode %s", conf->responder_cert);
		goto out;
	}
	p = r->responder_cert_der;
	if (i2d_X509(r->responder_cert, &p) != der_len ||
	    issuer_key_hash(r->responder_cert, r->signer.key_hash) != 0) {
		(void)snprintf(
		    err, err_len, "cannot encode %s", conf->responder_cert);
		goto out;
	}
	r->signer.hsm = hsm;
	/* NSS, Java and nginx reject a delegated answer whose signer
	 * certificate is not in `certs`; leaving it out is for CAs that sign
	 * with the CA key itself. */
	if (conf->include_responder_cert) {
		r->signer.cert_der = r->responder_cert_der;
		r->signer.cert_der_len = (size_t)der_len;
	}
	*out = r;
	r = NULL;
	rc = 0;
out:
	respond_free(r);
	ERR_clear_error();
	return rc;
}

void
respond_free(struct respond *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->n_issuers; i++)
		issuer_release(&r->issuers[i]);
	X509_free(r->responder_cert);
	free(r->responder_cert_der);
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
    struct ocsp_single *single)
{
	const struct issuer *issuer;
	struct db_key key;
	struct db_cert cert;

	single->id = id;
	single->status = OCSP_CERT_UNKNOWN;
	single->revocation_reason = -1;
	if ((issuer = issuer_find(r->issuers, r->n_issuers, id)) == NULL)
		return OCSP_STATUS_UNAUTHORIZED;
	memcpy(key.issuer_id, issuer->id, sizeof(key.issuer_id));
	memcpy(key.serial, id->serial, id->serial_len);
	key.serial_len = id->serial_len;
	switch (db_lookup(r->db, &key, &cert)) {
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
	/* CA/B Forum BR 4.9.10 counts the validity interval inclusively, so
	 * the last second of `validity` is thisUpdate + validity - 1; and no
	 * answer outlives the certificate that vouches for it. */
	next_update = now + (int64_t)r->conf->validity_s - 1;
	if (next_update > r->responder_not_after)
		next_update = r->responder_not_after;
	for (i = 0; i < query->n_ids; i++) {
		status = status_of_id(r, &query->ids[i], &singles[i]);
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
	rc = ocsp_response_sign(&r->signer, singles, query->n_ids,
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
