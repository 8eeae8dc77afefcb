/* ocsp.c - OCSP requests parsed strictly with OpenSSL and copied into our
 * own structs; responses encoded here as DER directly, so that building an
 * answer costs a few memcpy()s and the one signature the HSM makes. */
#include "responder/ocsp.h"

#include <openssl/asn1.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* id-pkix-ocsp-nonce, RFC 6960 4.4.1 */
static const uint8_t nonce_oid[] = {
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02};
/* id-pkix-ocsp-basic, RFC 6960 4.2.1 */
static const uint8_t basic_oid[] = {
    0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01};
/* ecdsa-with-SHA256, RFC 5758 3.2: parameters absent */
static const uint8_t alg_ecdsa_sha256[] = {
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
/* sha256WithRSAEncryption, RFC 4055 5: parameters NULL */
static const uint8_t alg_rsa_sha256[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86,
    0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00};

/* Request parsing */

static int
hash_of_oid(const ASN1_OBJECT *oid, enum ocsp_hash *out, size_t *out_len)
{
	switch (OBJ_obj2nid(oid)) {
	case NID_sha1:
		*out = OCSP_HASH_SHA1, *out_len = 20;
		return 0;
	case NID_sha256:
		*out = OCSP_HASH_SHA256, *out_len = 32;
		return 0;
	case NID_sha384:
		*out = OCSP_HASH_SHA384, *out_len = 48;
		return 0;
	case NID_sha512:
		*out = OCSP_HASH_SHA512, *out_len = 64;
		return 0;
	default:
		return OCSP_ERR_MALFORMED;
	}
}

/* CertID ::= SEQUENCE {
 *     hashAlgorithm       AlgorithmIdentifier,
 *     issuerNameHash      OCTET STRING, -- Hash of issuer's DN
 *     issuerKeyHash       OCTET STRING, -- Hash of issuer's public key
 *     serialNumber        CertificateSerialNumber } */
static int
copy_cert_id(OCSP_CERTID *cid, struct ocsp_cert_id *out)
{
	ASN1_OCTET_STRING *name_hash = NULL, *key_hash = NULL;
	ASN1_OBJECT *md_oid = NULL;
	ASN1_INTEGER *serial = NULL;
	unsigned char *p;
	int der_len, serial_len;

	if (OCSP_id_get0_info(&name_hash, &md_oid, &key_hash, &serial, cid) !=
	    1)
		return OCSP_ERR_MALFORMED;
	if (hash_of_oid(md_oid, &out->hash, &out->hash_len) != 0)
		return OCSP_ERR_MALFORMED;
	if ((size_t)ASN1_STRING_length(name_hash) != out->hash_len ||
	    (size_t)ASN1_STRING_length(key_hash) != out->hash_len)
		return OCSP_ERR_MALFORMED;
	memcpy(out->name_hash, ASN1_STRING_get0_data(name_hash), out->hash_len);
	memcpy(out->key_hash, ASN1_STRING_get0_data(key_hash), out->hash_len);

	/* RFC 5280 4.1.2.2: a positive integer of at most 20 octets. OpenSSL
	 * keeps the magnitude without leading zeros and has already refused
	 * non-minimal encodings. */
	serial_len = ASN1_STRING_length(serial);
	if (ASN1_STRING_type(serial) != V_ASN1_INTEGER || serial_len < 1 ||
	    serial_len > OCSP_MAX_SERIAL_LEN)
		return OCSP_ERR_MALFORMED;
	memcpy(out->serial, ASN1_STRING_get0_data(serial), (size_t)serial_len);
	out->serial_len = (size_t)serial_len;
	if (out->serial[0] == 0)
		return OCSP_ERR_MALFORMED;

	/* The answer echoes the CertID as asked (RFC 6960 4.2.1). */
	der_len = i2d_OCSP_CERTID(cid, NULL);
	if (der_len <= 0 || der_len > OCSP_MAX_CERT_ID_DER)
		return OCSP_ERR_MALFORMED;
	p = out->der;
	if (i2d_OCSP_CERTID(cid, &p) != der_len)
		return OCSP_ERR_MALFORMED;
	out->der_len = (size_t)der_len;
	return OCSP_OK;
}

/* RFC 9654 2.1: Nonce ::= OCTET STRING (SIZE(1..32)), DER inside
 * extnValue; a responder may accept longer ones, up to our limit. */
static int
check_nonce(X509_EXTENSION *ext, const struct ocsp_limits *limits,
    struct ocsp_query *out)
{
	const ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(ext);
	const unsigned char *p = ASN1_STRING_get0_data(value);
	long value_len = ASN1_STRING_length(value);
	ASN1_OCTET_STRING *nonce = NULL;
	int rc = OCSP_ERR_BAD_NONCE;
	int len;

	if (out->has_nonce)
		goto out; /* two nonces */
	nonce = d2i_ASN1_OCTET_STRING(NULL, &p, value_len);
	if (nonce == NULL || p != ASN1_STRING_get0_data(value) + value_len)
		goto out;
	len = ASN1_STRING_length(nonce);
	if (len < 1 || (size_t)len > limits->max_nonce_len ||
	    (size_t)len > OCSP_MAX_NONCE_LEN)
		goto out;
	memcpy(out->nonce, ASN1_STRING_get0_data(nonce), (size_t)len);
	out->nonce_len = (size_t)len;
	out->has_nonce = true;
	rc = OCSP_OK;
out:
	ASN1_OCTET_STRING_free(nonce);
	return rc;
}

/* OCSPRequest ::= SEQUENCE {
 *     tbsRequest                  TBSRequest,
 *     optionalSignature   [0]     EXPLICIT Signature OPTIONAL }
 * TBSRequest ::= SEQUENCE {
 *     version             [0]     EXPLICIT Version DEFAULT v1,
 *     requestorName       [1]     EXPLICIT GeneralName OPTIONAL,
 *     requestList                 SEQUENCE OF Request,
 *     requestExtensions   [2]     EXPLICIT Extensions OPTIONAL }
 * Request ::= SEQUENCE {
 *     reqCert                     CertID,
 *     singleRequestExtensions [0] EXPLICIT Extensions OPTIONAL } */
int
ocsp_query_parse(const uint8_t *der, size_t der_len,
    const struct ocsp_limits *limits, struct ocsp_query *out)
{
	const unsigned char *p = der;
	OCSP_REQUEST *req = NULL;
	OCSP_ONEREQ *one;
	X509_EXTENSION *ext;
	int i, j, n, n_ext, rc = OCSP_ERR_MALFORMED;

	if (der == NULL || der_len == 0 || der_len > OCSP_MAX_REQUEST_LEN)
		goto out;
	req = d2i_OCSP_REQUEST(NULL, &p, (long)der_len);
	if (req == NULL || p != der + der_len) /* trailing bytes */
		goto out;
	out->n_ids = 0;
	out->has_nonce = false;
	n = OCSP_request_onereq_count(req);
	if (n < 1)
		goto out;
	if ((size_t)n > limits->max_cert_ids || n > OCSP_MAX_CERT_IDS) {
		rc = OCSP_ERR_TOO_MANY;
		goto out;
	}
	for (i = 0; i < n; i++) {
		one = OCSP_request_onereq_get0(req, i);
		if ((rc = copy_cert_id(
			 OCSP_onereq_get0_id(one), &out->ids[i])) != OCSP_OK)
			goto out;
		/* NSS adds a non-critical Service Locator here: ignore what
		 * is not critical, refuse what is (RFC 5280 4.2). */
		n_ext = OCSP_ONEREQ_get_ext_count(one);
		for (j = 0; j < n_ext; j++) {
			ext = OCSP_ONEREQ_get_ext(one, j);
			if (X509_EXTENSION_get_critical(ext)) {
				rc = OCSP_ERR_UNSUPPORTED;
				goto out;
			}
		}
	}
	out->n_ids = (size_t)n;

	n_ext = OCSP_REQUEST_get_ext_count(req);
	for (j = 0; j < n_ext; j++) {
		ext = OCSP_REQUEST_get_ext(req, j);
		if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) ==
		    NID_id_pkix_OCSP_Nonce) {
			if ((rc = check_nonce(ext, limits, out)) != OCSP_OK)
				goto out;
		} else if (X509_EXTENSION_get_critical(ext)) {
			rc = OCSP_ERR_UNSUPPORTED;
			goto out;
		}
	}
	rc = OCSP_OK;
out:
	OCSP_REQUEST_free(req);
	return rc;
}

/* Response encoding: a growing buffer in which a constructed value is
 * opened with its tag and a one-byte length, and closed by fixing the
 * length, moving the contents when the length needs more bytes. */

struct der {
	uint8_t *buf;
	size_t len, cap;
	bool failed;
};

static void
der_reserve(struct der *d, size_t more)
{
	uint8_t *grown;
	size_t cap;

	if (d->failed || d->len + more <= d->cap)
		return;
	cap = d->cap ? d->cap : 1024;
	while (cap < d->len + more)
		cap *= 2;
	if ((grown = realloc(d->buf, cap)) == NULL) {
		d->failed = true;
		return;
	}
	d->buf = grown;
	d->cap = cap;
}

static void
der_bytes(struct der *d, const void *bytes, size_t len)
{
	if (len == 0)
		return;
	der_reserve(d, len);
	if (d->failed)
		return;
	memcpy(d->buf + d->len, bytes, len);
	d->len += len;
}

static size_t
der_open(struct der *d, uint8_t tag)
{
	uint8_t header[2] = {tag, 0};

	der_bytes(d, header, sizeof(header));
	return d->len;
}

static void
der_close(struct der *d, size_t start)
{
	size_t content_len, n_len = 0, v;
	uint8_t len_bytes[9];
	int i;

	if (d->failed)
		return;
	content_len = d->len - start;
	if (content_len < 0x80) {
		d->buf[start - 1] = (uint8_t)content_len;
		return;
	}
	for (v = content_len; v != 0; v >>= 8)
		n_len++;
	len_bytes[0] = (uint8_t)(0x80 | n_len);
	for (i = 0; i < (int)n_len; i++)
		len_bytes[n_len - (size_t)i] =
		    (uint8_t)(content_len >> (8 * i));
	der_reserve(d, n_len);
	if (d->failed)
		return;
	memmove(d->buf + start + n_len, d->buf + start, content_len);
	memcpy(d->buf + start - 1, len_bytes, n_len + 1);
	d->len += n_len;
}

static void
der_tlv(struct der *d, uint8_t tag, const void *value, size_t len)
{
	size_t start = der_open(d, tag);

	der_bytes(d, value, len);
	der_close(d, start);
}

/* GeneralizedTime, RFC 6960 4.2.2.1 and RFC 5280 4.1.2.5.2: UTC, whole
 * seconds, YYYYMMDDHHMMSSZ. */
static void
der_time(struct der *d, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	char text[32];

	if (gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999 ||
	    tm.tm_year + 1900 < 1950) {
		d->failed = true;
		return;
	}
	(void)snprintf(text, sizeof(text), "%04d%02d%02d%02d%02d%02dZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec);
	der_tlv(d, V_ASN1_GENERALIZEDTIME, text, 15);
}

/* SingleResponse ::= SEQUENCE {
 *     certID                       CertID,
 *     certStatus                   CertStatus,
 *     thisUpdate                   GeneralizedTime,
 *     nextUpdate         [0]       EXPLICIT GeneralizedTime OPTIONAL,
 *     singleExtensions   [1]       EXPLICIT Extensions OPTIONAL }
 * CertStatus ::= CHOICE {
 *     good        [0]     IMPLICIT NULL,
 *     revoked     [1]     IMPLICIT RevokedInfo,
 *     unknown     [2]     IMPLICIT UnknownInfo }
 * RevokedInfo ::= SEQUENCE {
 *     revocationTime              GeneralizedTime,
 *     revocationReason    [0]     EXPLICIT CRLReason OPTIONAL } */
static void
der_single(struct der *d, const struct ocsp_single *s)
{
	size_t single, revoked, reason, next;
	uint8_t reason_value;

	single = der_open(d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	der_bytes(d, s->id->der, s->id->der_len);
	switch (s->status) {
	case OCSP_CERT_GOOD:
		der_tlv(d, V_ASN1_CONTEXT_SPECIFIC | 0, NULL, 0);
		break;
	case OCSP_CERT_REVOKED:
		revoked = der_open(
		    d, V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 1);
		der_time(d, s->revoked_at);
		if (s->revocation_reason >= 0 && s->revocation_reason <= 10) {
			reason_value = (uint8_t)s->revocation_reason;
			reason = der_open(d,
			    V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 0);
			der_tlv(d, V_ASN1_ENUMERATED, &reason_value, 1);
			der_close(d, reason);
		}
		der_close(d, revoked);
		break;
	case OCSP_CERT_UNKNOWN:
		der_tlv(d, V_ASN1_CONTEXT_SPECIFIC | 2, NULL, 0);
		break;
	}
	der_time(d, s->this_update);
	next = der_open(d, V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 0);
	der_time(d, s->next_update);
	der_close(d, next);
	der_close(d, single);
}

/* ResponseData ::= SEQUENCE {
 *     version              [0] EXPLICIT Version DEFAULT v1,
 *     responderID              ResponderID,
 *     producedAt               GeneralizedTime,
 *     responses                SEQUENCE OF SingleResponse,
 *     responseExtensions   [1] EXPLICIT Extensions OPTIONAL }
 * ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash } */
static void
der_response_data(struct der *d, const struct ocsp_signer *signer,
    const struct ocsp_single *singles, size_t n, const uint8_t *nonce,
    size_t nonce_len, int64_t produced_at)
{
	size_t data, responder_id, list, exts_tag, exts, ext, value, i;

	data = der_open(d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	responder_id =
	    der_open(d, V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 2);
	der_tlv(d, V_ASN1_OCTET_STRING, signer->key_hash, OCSP_KEY_HASH_LEN);
	der_close(d, responder_id);
	der_time(d, produced_at);
	list = der_open(d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	for (i = 0; i < n; i++)
		der_single(d, &singles[i]);
	der_close(d, list);
	if (nonce != NULL) {
		/* RFC 9654 2.1: echo the nonce exactly as it was sent. */
		exts_tag = der_open(
		    d, V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 1);
		exts = der_open(d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
		ext = der_open(d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
		der_bytes(d, nonce_oid, sizeof(nonce_oid));
		value = der_open(d, V_ASN1_OCTET_STRING);
		der_tlv(d, V_ASN1_OCTET_STRING, nonce, nonce_len);
		der_close(d, value);
		der_close(d, ext);
		der_close(d, exts);
		der_close(d, exts_tag);
	}
	der_close(d, data);
}

/* OCSPResponse ::= SEQUENCE {
 *     responseStatus         OCSPResponseStatus,
 *     responseBytes          [0] EXPLICIT ResponseBytes OPTIONAL }
 * ResponseBytes ::= SEQUENCE {
 *     responseType   OBJECT IDENTIFIER,
 *     response       OCTET STRING }
 * BasicOCSPResponse ::= SEQUENCE {
 *     tbsResponseData      ResponseData,
 *     signatureAlgorithm   AlgorithmIdentifier,
 *     signature            BIT STRING,
 *     certs            [0] EXPLICIT SEQUENCE OF Certificate OPTIONAL } */
int
ocsp_tbs_encode(const struct ocsp_signer *signer,
    const struct ocsp_single *singles, size_t n, const uint8_t *nonce,
    size_t nonce_len, int64_t produced_at, uint8_t **out, size_t *out_len)
{
	struct der d = {0};

	if (n < 1 || n > OCSP_MAX_CERT_IDS ||
	    (nonce != NULL &&
		(nonce_len < 1 || nonce_len > OCSP_MAX_NONCE_LEN))) {
		*out = NULL;
		return OCSP_ERR_INTERNAL;
	}
	der_response_data(
	    &d, signer, singles, n, nonce, nonce_len, produced_at);
	if (d.failed) {
		free(d.buf);
		*out = NULL;
		return OCSP_ERR_INTERNAL;
	}
	*out = d.buf;
	*out_len = d.len;
	return OCSP_OK;
}

int
ocsp_response_assemble(const struct ocsp_signer *signer, const uint8_t *tbs,
    size_t tbs_len, const uint8_t *signature, size_t signature_len,
    uint8_t **out, size_t *out_len)
{
	static const uint8_t successful[] = {V_ASN1_ENUMERATED, 1, 0};
	static const uint8_t no_unused_bits = 0;
	struct der d = {0};
	size_t response, bytes_tag, bytes, octets, basic, bits, certs_tag,
	    certs;
	int rc = OCSP_ERR_INTERNAL;

	/* Room for the whole answer at once: one allocation per answer. */
	der_reserve(&d, tbs_len + signature_len + signer->cert_der_len + 96);
	response = der_open(&d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	der_bytes(&d, successful, sizeof(successful));
	bytes_tag =
	    der_open(&d, V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 0);
	bytes = der_open(&d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	der_bytes(&d, basic_oid, sizeof(basic_oid));
	octets = der_open(&d, V_ASN1_OCTET_STRING);
	basic = der_open(&d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	der_bytes(&d, tbs, tbs_len);
	switch (hsm_get_sig_alg(signer->hsm)) {
	case HSM_SIG_ECDSA_SHA256:
		der_bytes(&d, alg_ecdsa_sha256, sizeof(alg_ecdsa_sha256));
		break;
	case HSM_SIG_RSA_PKCS1_SHA256:
		der_bytes(&d, alg_rsa_sha256, sizeof(alg_rsa_sha256));
		break;
	}
	bits = der_open(&d, V_ASN1_BIT_STRING);
	der_bytes(&d, &no_unused_bits, 1);
	der_bytes(&d, signature, signature_len);
	der_close(&d, bits);
	if (signer->cert_der != NULL) {
		certs_tag = der_open(
		    &d, V_ASN1_CONTEXT_SPECIFIC | V_ASN1_CONSTRUCTED | 0);
		certs = der_open(&d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
		der_bytes(&d, signer->cert_der, signer->cert_der_len);
		der_close(&d, certs);
		der_close(&d, certs_tag);
	}
	der_close(&d, basic);
	der_close(&d, octets);
	der_close(&d, bytes);
	der_close(&d, bytes_tag);
	der_close(&d, response);
	if (d.failed)
		goto out;
	*out = d.buf;
	*out_len = d.len;
	d.buf = NULL;
	rc = OCSP_OK;
out:
	free(d.buf);
	return rc;
}

int
ocsp_response_sign(const struct ocsp_signer *signer,
    const struct ocsp_single *singles, size_t n, const uint8_t *nonce,
    size_t nonce_len, int64_t produced_at, uint8_t **out, size_t *out_len)
{
	uint8_t signature[HSM_MAX_SIGNATURE_LEN];
	size_t signature_len = sizeof(signature), tbs_len;
	uint8_t *tbs = NULL;
	int rc;

	rc = ocsp_tbs_encode(
	    signer, singles, n, nonce, nonce_len, produced_at, &tbs, &tbs_len);
	if (rc != OCSP_OK)
		goto out;
	if (hsm_sign(signer->hsm, tbs, tbs_len, signature, &signature_len) !=
	    HSM_OK) {
		rc = OCSP_ERR_SIGN;
		goto out;
	}
	rc = ocsp_response_assemble(
	    signer, tbs, tbs_len, signature, signature_len, out, out_len);
out:
	free(tbs);
	return rc;
}

/* CertID as OpenSSL and every client in our corpus encode it: the hash's
 * AlgorithmIdentifier with explicit NULL parameters. */
int
ocsp_cert_id_encode(enum ocsp_hash hash, const uint8_t *name_hash,
    const uint8_t *key_hash, const uint8_t *serial, size_t serial_len,
    struct ocsp_cert_id *out)
{
	static const uint8_t sha1_alg[] = {
	    0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00};
	static const uint8_t sha256_alg[] = {0x30, 0x0d, 0x06, 0x09, 0x60, 0x86,
	    0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00};
	static const uint8_t zero = 0;
	struct der d = {0};
	size_t id, integer;
	int rc = OCSP_ERR_INTERNAL;

	switch (hash) {
	case OCSP_HASH_SHA1:
		out->hash_len = 20;
		break;
	case OCSP_HASH_SHA256:
		out->hash_len = 32;
		break;
	case OCSP_HASH_SHA384:
	case OCSP_HASH_SHA512:
		goto out; /* answered on demand only */
	}
	if (serial_len < 1 || serial_len > OCSP_MAX_SERIAL_LEN ||
	    serial[0] == 0)
		goto out;
	out->hash = hash;
	memcpy(out->name_hash, name_hash, out->hash_len);
	memcpy(out->key_hash, key_hash, out->hash_len);
	memcpy(out->serial, serial, serial_len);
	out->serial_len = serial_len;
	id = der_open(&d, V_ASN1_SEQUENCE | V_ASN1_CONSTRUCTED);
	if (hash == OCSP_HASH_SHA1)
		der_bytes(&d, sha1_alg, sizeof(sha1_alg));
	else
		der_bytes(&d, sha256_alg, sizeof(sha256_alg));
	der_tlv(&d, V_ASN1_OCTET_STRING, name_hash, out->hash_len);
	der_tlv(&d, V_ASN1_OCTET_STRING, key_hash, out->hash_len);
	/* A positive INTEGER whose first magnitude bit is set needs a zero
	 * octet in front (X.690 8.3.2). */
	integer = der_open(&d, V_ASN1_INTEGER);
	if (serial[0] & 0x80)
		der_bytes(&d, &zero, 1);
	der_bytes(&d, serial, serial_len);
	der_close(&d, integer);
	der_close(&d, id);
	if (d.failed || d.len > OCSP_MAX_CERT_ID_DER)
		goto out;
	memcpy(out->der, d.buf, d.len);
	out->der_len = d.len;
	rc = OCSP_OK;
out:
	free(d.buf);
	return rc;
}

const uint8_t *
ocsp_error_response(enum ocsp_response_status status, size_t *out_len)
{
	static const uint8_t responses[7][5] = {
	    {0x30, 0x03, 0x0a, 0x01, 0x00},
	    {0x30, 0x03, 0x0a, 0x01, 0x01},
	    {0x30, 0x03, 0x0a, 0x01, 0x02},
	    {0x30, 0x03, 0x0a, 0x01, 0x03},
	    {0x30, 0x03, 0x0a, 0x01, 0x04},
	    {0x30, 0x03, 0x0a, 0x01, 0x05},
	    {0x30, 0x03, 0x0a, 0x01, 0x06},
	};

	*out_len = sizeof(responses[0]);
	return responses[status];
}

const char *
ocsp_strerror(int err)
{
	switch ((enum ocsp_err)err) {
	case OCSP_OK:
		return "success";
	case OCSP_ERR_MALFORMED:
		return "malformed request";
	case OCSP_ERR_TOO_MANY:
		return "too many CertIDs";
	case OCSP_ERR_BAD_NONCE:
		return "invalid nonce";
	case OCSP_ERR_UNSUPPORTED:
		return "unsupported critical extension";
	case OCSP_ERR_SIGN:
		return "signing failed";
	case OCSP_ERR_INTERNAL:
		return "internal error";
	}
	return "unknown error";
}
