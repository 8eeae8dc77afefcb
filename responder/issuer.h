/* issuer.h - the issuing CAs this responder answers for, and how a CertID
 * or a certificate finds its issuer. Built at startup, then read-only. */
#ifndef RESPONDER_ISSUER_H
#define RESPONDER_ISSUER_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "responder/ocsp.h"

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

#define ISSUER_N_HASHES 4 /* one per enum ocsp_hash */

/* struct issuer is one issuing CA: its certificate and the CertID hashes
 * of its name and key under every hash a CertID may use. */
struct issuer {
	X509 *cert;
	char subject[256];            /* for messages */
	uint8_t id[DB_ISSUER_ID_LEN]; /* the index's issuer key */
	uint8_t name_hash[ISSUER_N_HASHES][OCSP_MAX_HASH_LEN];
	uint8_t key_hash[ISSUER_N_HASHES][OCSP_MAX_HASH_LEN];
};

/* issuer_load reads the PEM or DER certificate at path into *out and
 * computes its hashes. On success the caller releases *out with
 * issuer_release(). Returns 0, or -1 with a reason in err. */
int issuer_load(
    const char *path, struct issuer *out, char *err, size_t err_len) MUST_CHECK;

/* issuer_release frees what issuer_load() put in issuer. */
void issuer_release(struct issuer *issuer);

/* issuer_find returns the issuer of set (n entries) whose name and key
 * hashes match id, or NULL. Constant-time comparison is not needed: the
 * hashes are public. */
const struct issuer *issuer_find(
    const struct issuer *set, size_t n, const struct ocsp_cert_id *id);

/* issuer_of_cert returns the issuer of set that issued cert (names chain
 * and the signature verifies), or NULL. */
const struct issuer *issuer_of_cert(
    const struct issuer *set, size_t n, X509 *cert);

/* issuer_key_hash writes the SHA-1 hash of cert's subjectPublicKey (the
 * value of the BIT STRING, RFC 6960 4.2.1 KeyHash) into out. Returns 0 or
 * -1. */
int issuer_key_hash(X509 *cert, uint8_t out[20]) MUST_CHECK;

/* issuer_read_cert reads one PEM or DER certificate from path. Returns it,
 * owned by the caller (X509_free), or NULL. */
X509 *issuer_read_cert(const char *path);

#endif
