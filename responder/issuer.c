/* issuer.c - issuing CAs: loaded once, hashed under every CertID hash, so
 * that matching a request costs a few memcmp()s. */
#include "responder/issuer.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

static const EVP_MD *
hash_md(enum ocsp_hash hash)
{
	switch (hash) {
	case OCSP_HASH_SHA1:
		return EVP_sha1();
	case OCSP_HASH_SHA256:
		return EVP_sha256();
	case OCSP_HASH_SHA384:
		return EVP_sha384();
	case OCSP_HASH_SHA512:
		return EVP_sha512();
	}
	return NULL;
}

X509 *
issuer_read_cert(const char *path)
{
	X509 *cert = NULL;
	BIO *bio;

	if ((bio = BIO_new_file(path, "rb")) == NULL)
		return NULL;
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	if (cert == NULL) {
		/* Not PEM: try DER from the start. */
		ERR_clear_error();
		if (BIO_reset(bio) == 0)
			cert = d2i_X509_bio(bio, NULL);
	}
	BIO_free(bio);
	ERR_clear_error();
	return cert;
}

int
issuer_key_hash(X509 *cert, uint8_t out[20])
{
	const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(cert);
	unsigned int len = 0;

	if (key == NULL)
		return -1;
	if (EVP_Digest(ASN1_STRING_get0_data(key),
		(size_t)ASN1_STRING_length(key), out, &len, EVP_sha1(),
		NULL) != 1 ||
	    len != 20)
		return -1;
	return 0;
}

int
issuer_load(const char *path, struct issuer *out, char *err, size_t err_len)
{
	const ASN1_BIT_STRING *key;
	unsigned char *name_der = NULL;
	unsigned int len;
	int name_len, h, rc = -1;
	X509 *cert = NULL;

	memset(out, 0, sizeof(*out));
	if ((cert = issuer_read_cert(path)) == NULL) {
		(void)snprintf(
		    err, err_len, "cannot read issuer certificate %s", path);
		goto out;
	}
	if (X509_check_ca(cert) == 0) {
		(void)snprintf(err, err_len,
		    "issuer certificate %s is not a CA certificate", path);
		goto out;
	}
	key = X509_get0_pubkey_bitstr(cert);
	name_len = i2d_X509_NAME(X509_get_subject_name(cert), &name_der);
	if (key == NULL || name_len <= 0) {
		(void)snprintf(
		    err, err_len, "cannot encode issuer certificate %s", path);
		goto out;
	}
	for (h = 0; h < ISSUER_N_HASHES; h++) {
		if (EVP_Digest(name_der, (size_t)name_len, out->name_hash[h],
			&len, hash_md((enum ocsp_hash)h), NULL) != 1 ||
		    EVP_Digest(ASN1_STRING_get0_data(key),
			(size_t)ASN1_STRING_length(key), out->key_hash[h], &len,
			hash_md((enum ocsp_hash)h), NULL) != 1) {
			(void)snprintf(
			    err, err_len, "cannot hash issuer %s", path);
			goto out;
		}
	}
	/* The index names an issuer by its SHA-1 key hash: stable across
	 * re-issued CA certificates of the same key. */
	memcpy(out->id, out->key_hash[OCSP_HASH_SHA1], DB_ISSUER_ID_LEN);
	(void)X509_NAME_oneline(
	    X509_get_subject_name(cert), out->subject, sizeof(out->subject));
	out->cert = cert;
	cert = NULL;
	rc = 0;
out:
	OPENSSL_free(name_der);
	X509_free(cert);
	ERR_clear_error();
	return rc;
}

void
issuer_release(struct issuer *issuer)
{
	if (issuer == NULL)
		return;
	X509_free(issuer->cert);
	issuer->cert = NULL;
}

const struct issuer *
issuer_find(const struct issuer *set, size_t n, const struct ocsp_cert_id *id)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (memcmp(set[i].key_hash[id->hash], id->key_hash,
			id->hash_len) == 0 &&
		    memcmp(set[i].name_hash[id->hash], id->name_hash,
			id->hash_len) == 0)
			return &set[i];
	}
	return NULL;
}

const struct issuer *
issuer_of_cert(const struct issuer *set, size_t n, X509 *cert)
{
	EVP_PKEY *key;
	size_t i;

	for (i = 0; i < n; i++) {
		if (X509_check_issued(set[i].cert, cert) != X509_V_OK)
			continue;
		key = X509_get0_pubkey(set[i].cert);
		if (key != NULL && X509_verify(cert, key) == 1) {
			ERR_clear_error();
			return &set[i];
		}
	}
	ERR_clear_error();
	return NULL;
}
