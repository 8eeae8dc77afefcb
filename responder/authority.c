/* authority.c - the certificates this responder speaks with, checked
 * against each other and against the token's key before anything is
 * signed (RFC 6960 4.2.2.2, CA/B Forum BR 7.1.2.8, Mozilla policy 6). */
#include "responder/authority.h"

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "responder/log.h"

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
    struct authority *r, struct hsm *hsm, char *err, size_t err_len)
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
authority_new(const struct conf *conf, struct hsm *hsm, struct authority **out,
    char *err, size_t err_len)
{
	struct authority *r = NULL;
	unsigned char *p;
	int der_len, rc = -1;
	size_t i;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		(void)snprintf(err, err_len, "out of memory");
		goto out;
	}
	r->conf = conf;
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
	r->responder_cert_der_len = (size_t)der_len;
	r->signer.hsm = hsm;
	/* NSS, Java and nginx reject a delegated answer whose signer
	 * certificate is not in `certs`; leaving it out is for CAs that sign
	 * with the CA key itself. */
	if (conf->include_responder_cert) {
		r->signer.cert_der = r->responder_cert_der;
		r->signer.cert_der_len = r->responder_cert_der_len;
	}
	*out = r;
	r = NULL;
	rc = 0;
out:
	authority_free(r);
	ERR_clear_error();
	return rc;
}

void
authority_free(struct authority *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->n_issuers; i++)
		issuer_release(&a->issuers[i]);
	X509_free(a->responder_cert);
	free(a->responder_cert_der);
	free(a);
}

int64_t
authority_next_update(const struct authority *a, int64_t this_update)
{
	int64_t next_update = this_update + (int64_t)a->conf->validity_s - 1;

	return next_update > a->responder_not_after ? a->responder_not_after
						    : next_update;
}
