/* hsm.c - the signing service over a PKCS#11 token: libp11 loads the
 * module, finds the token and the key and logs in; signing and provisioning
 * speak raw PKCS#11, as libp11 0.4.12 neither lets us choose its sessions
 * nor generates EC keys. Nothing here prints; callers log hsm_strerror(). */
#include "hsm/hsm.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libp11.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

/* A PIN, one optional newline, and one byte more so that a file too long
 * to hold a PIN fills the buffer and is refused, then the NUL. */
#define PIN_BUF_LEN (HSM_MAX_PIN_LEN + 3)

#define MAX_KEY_ID_LEN      64 /* bytes of CKA_ID; libp11 keeps at most 255 */
#define TOKEN_LABEL_LEN     32 /* PKCS#11 CK_TOKEN_INFO.label, blank-padded */
#define RSA_MIN_BITS        2048
#define RSA_MAX_BITS        4096
#define PROBE_MESSAGE       "hsm_open: does the public key match?"
#define PROBE_MESSAGE_LEN   (sizeof(PROBE_MESSAGE) - 1)
#define RSA_PUBLIC_EXPONENT 0x01, 0x00, 0x01 /* 65537 */
#define SHA256_LEN          32
#define MAX_EC_FIELD_LEN    66 /* P-521; hsm_open() accepts only P-256 */

/* RFC 8017 §9.2 note 1: the DER DigestInfo of a SHA-256 digest is this
 * prefix, then the 32 bytes of the digest. */
static const uint8_t sha256_digest_info[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09,
    0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
    0x20};

/* struct queue is a FIFO of batches with jobs not yet taken. */
struct queue {
	struct hsm_batch *head;
	struct hsm_batch *tail;
};

/* struct hsm_batch is a run of jobs that completes as one. The jobs are
 * the caller's; the counters belong to hsm->lock. */
struct hsm_batch {
	struct hsm *hsm;
	struct hsm_job *jobs;
	size_t n_jobs;
	size_t n_taken; /* jobs[0..n_taken) were handed to workers */
	size_t n_done;
	bool is_failed;         /* some job's rc is not HSM_OK */
	pthread_cond_t done;    /* n_done reached n_jobs */
	struct hsm_batch *next; /* in its queue */
};

struct hsm {
	PKCS11_CTX *ctx;
	PKCS11_SLOT *slots;
	PKCS11_SLOT *slot;     /* borrowed from slots */
	EVP_PKEY *private_key; /* libp11's, for the public half and the type */
	EVP_PKEY *public_key;  /* decoded from spki, to check the probe */
	uint8_t *spki;
	size_t spki_len;
	unsigned int n_slots;
	enum hsm_sig_alg sig_alg;
	bool is_module_loaded;
	bool is_logged_in;
	bool is_lock_ready;

	/* Signing goes around libp11, through the function list of the
	 * module it loaded, on sessions of our own. */
	void *dl; /* our reference to that module */
	CK_FUNCTION_LIST_PTR fl;
	CK_SLOT_ID slot_id;
	CK_OBJECT_HANDLE key;
	EVP_MD *sha256; /* fetched once, not on every signature */
	pthread_t *workers;
	unsigned int n_workers; /* started */

	/* lock guards the queues, the pool and is_stopping. Workers wait on
	 * work for a job and a free session together, or for is_stopping. */
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct queue urgent; /* hsm_sign()'s jobs, taken first */
	struct queue bulk;   /* hsm_batch_start()'s */
	/* pool[0..n_free) are the free sessions; a worker holds the others.
	 * CK_INVALID_HANDLE stands for one retired after a failure, to be
	 * opened again before it is used. */
	CK_SESSION_HANDLE *pool;
	unsigned int n_sessions;
	unsigned int n_free;
	bool is_stopping;
};

/* read_pin copies the PIN stored in path into pin (PIN_BUF_LEN bytes) as a
 * C string. It reads with read(2), not stdio, so that no buffer we cannot
 * wipe ever holds the PIN; the caller wipes pin. */
static int
read_pin(const char *path, char *pin)
{
	struct stat st;
	size_t len = 0;
	ssize_t n;
	int fd = -1, rc = HSM_ERR_PIN_FILE;

	if (path == NULL)
		goto out;
	/* O_NONBLOCK: a FIFO planted at path must not hang startup; it is
	 * refused below as it is not a regular file. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1)
		goto out;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
		goto out;
	/* Only world-readable files are refused: deployments give the PIN
	 * to the service through its group (root:ocsp 0640), so group
	 * access is how it is meant to be read. */
	if ((st.st_mode & S_IROTH) != 0)
		goto out;
	while (len < PIN_BUF_LEN - 1) {
		n = read(fd, pin + len, PIN_BUF_LEN - 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto out;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > 0 && pin[len - 1] == '\n')
		len--;
	if (len == 0 || len > HSM_MAX_PIN_LEN)
		goto out;
	/* libp11 measures the PIN with strlen(): a NUL inside would cut it
	 * short without anyone noticing. */
	if (memchr(pin, '\0', len) != NULL)
		goto out;
	pin[len] = '\0';
	rc = HSM_OK;
out:
	if (fd != -1)
		(void)close(fd);
	return rc;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* parse_key_id decodes hex (an even number of digits, no separators) into
 * id, which holds MAX_KEY_ID_LEN bytes, and sets *id_len. */
static int
parse_key_id(const char *hex, uint8_t *id, size_t *id_len)
{
	size_t i, hex_len;
	int high, low, rc = HSM_ERR_ARG;

	hex_len = strlen(hex);
	if (hex_len == 0 || hex_len % 2 != 0 || hex_len / 2 > MAX_KEY_ID_LEN)
		goto out;
	for (i = 0; i < hex_len / 2; i++) {
		high = hex_digit(hex[2 * i]);
		low = hex_digit(hex[2 * i + 1]);
		if (high < 0 || low < 0)
			goto out;
		id[i] = (uint8_t)(high << 4 | low);
	}
	*id_len = hex_len / 2;
	rc = HSM_OK;
out:
	return rc;
}

/* find_slot points hsm->slot at the one initialised token labelled label.
 * Two tokens with one label would leave the choice of key to slot order,
 * so that is refused as well. */
static int
find_slot(struct hsm *hsm, const char *label)
{
	PKCS11_TOKEN *token;
	unsigned int i;
	int rc = HSM_ERR_TOKEN;

	for (i = 0; i < hsm->n_slots; i++) {
		token = hsm->slots[i].token;
		if (token == NULL || !token->initialized ||
		    token->label == NULL || strcmp(token->label, label) != 0)
			continue;
		if (hsm->slot != NULL) {
			hsm->slot = NULL;
			goto out;
		}
		hsm->slot = &hsm->slots[i];
	}
	if (hsm->slot == NULL)
		goto out;
	rc = HSM_OK;
out:
	return rc;
}

/* find_key sets *out to the one private key in the token that matches
 * key_label and the CKA_ID id (id_len bytes; 0 matches any). */
static int
find_key(struct hsm *hsm, const char *key_label, const uint8_t *id,
    size_t id_len, PKCS11_KEY **out)
{
	PKCS11_KEY *keys = NULL, *found = NULL;
	unsigned int i, n_keys = 0;
	int rc = HSM_ERR_KEY;

	/* libp11 0.4.12 fails the whole listing when the token holds a
	 * private key of a type it does not know (Ed25519, ...). */
	if (PKCS11_enumerate_keys(hsm->slot->token, &keys, &n_keys) != 0)
		goto out;
	for (i = 0; i < n_keys; i++) {
		if (key_label != NULL &&
		    (keys[i].label == NULL ||
			strcmp(keys[i].label, key_label) != 0))
			continue;
		if (id_len > 0 &&
		    (keys[i].id_len != id_len ||
			memcmp(keys[i].id, id, id_len) != 0))
			continue;
		if (found != NULL)
			goto out; /* ambiguous: refuse to guess */
		found = &keys[i];
	}
	if (found == NULL)
		goto out;
	*out = found;
	rc = HSM_OK;
out:
	return rc;
}

/* copy_public_key stores the key's SubjectPublicKeyInfo in hsm->spki. It
 * takes the public half libp11 attached to the private key (RSA keeps it
 * in the private key object; for EC libp11 reads the point from the public
 * key object with the same CKA_ID). PKCS11_get_public_key() is avoided:
 * in libp11 0.4.12 it leaks the object, the slot and the slot's copy of
 * the PIN, and dereferences NULL when there is no public key object. */
static int
copy_public_key(struct hsm *hsm)
{
	const unsigned char *p;
	unsigned char *der = NULL;
	int der_len, rc = HSM_ERR_KEY;

	if ((der_len = i2d_PUBKEY(hsm->private_key, &der)) <= 0)
		goto out;
	/* Decode our own copy: a provider key that OpenSSL can describe,
	 * where libp11's key is only a handle for signing. */
	p = der;
	hsm->public_key = d2i_PUBKEY(NULL, &p, der_len);
	if (hsm->public_key == NULL || p != der + der_len)
		goto out;
	hsm->spki = der;
	hsm->spki_len = (size_t)der_len;
	der = NULL;
	rc = HSM_OK;
out:
	OPENSSL_free(der);
	return rc;
}

/* choose_sig_alg accepts the keys an OCSP client can be expected to
 * verify: EC P-256, or RSA of 2048 to 4096 bits. */
static int
choose_sig_alg(struct hsm *hsm)
{
	char group[64];
	int bits, rc = HSM_ERR_KEY_TYPE;

	if (EVP_PKEY_is_a(hsm->public_key, "EC")) {
		if (EVP_PKEY_get_base_id(hsm->private_key) != EVP_PKEY_EC)
			goto out;
		if (EVP_PKEY_get_group_name(
			hsm->public_key, group, sizeof(group), NULL) != 1 ||
		    strcmp(group, SN_X9_62_prime256v1) != 0)
			goto out;
		hsm->sig_alg = HSM_SIG_ECDSA_SHA256;
	} else if (EVP_PKEY_is_a(hsm->public_key, "RSA")) {
		if (EVP_PKEY_get_base_id(hsm->private_key) != EVP_PKEY_RSA)
			goto out;
		bits = EVP_PKEY_get_bits(hsm->public_key);
		if (bits < RSA_MIN_BITS || bits > RSA_MAX_BITS)
			goto out;
		hsm->sig_alg = HSM_SIG_RSA_PKCS1_SHA256;
	} else {
		goto out;
	}
	rc = HSM_OK;
out:
	return rc;
}

/* check_probe signs a fixed message as any job is signed and verifies it
 * with the public key libp11 found, so that a public key object that does
 * not belong to the private key, or a key handle of find_key_handle()'s
 * that is not libp11's key, fails at startup rather than in every client. */
static int
check_probe(struct hsm *hsm)
{
	EVP_MD_CTX *md_ctx = NULL;
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	size_t sig_len;
	int rc;

	rc = hsm_sign(hsm, (const uint8_t *)PROBE_MESSAGE, PROBE_MESSAGE_LEN,
	    sig, &sig_len);
	if (rc != HSM_OK)
		goto out;
	rc = HSM_ERR_NOMEM;
	if ((md_ctx = EVP_MD_CTX_new()) == NULL)
		goto out;
	rc = HSM_ERR_KEY;
	if (EVP_DigestVerifyInit(
		md_ctx, NULL, EVP_sha256(), NULL, hsm->public_key) != 1)
		goto out;
	if (EVP_DigestVerify(md_ctx, sig, sig_len,
		(const unsigned char *)PROBE_MESSAGE, PROBE_MESSAGE_LEN) != 1)
		goto out;
	rc = HSM_OK;
out:
	EVP_MD_CTX_free(md_ctx);
	return rc;
}

/* open_library dlopens the PKCS#11 module at path and finds its
 * C_GetFunctionList; the caller dlcloses *out_dl, set even on failure. */
static int
open_library(const char *path, void **out_dl,
    CK_C_GetFunctionList *out_get_function_list)
{
	void *sym;
	int rc = HSM_ERR_MODULE;

	if ((*out_dl = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL)
		goto out;
	if ((sym = dlsym(*out_dl, "C_GetFunctionList")) == NULL)
		goto out;
	/* ISO C has no cast from object to function pointer; POSIX
	 * guarantees that dlsym()'s result converts. */
	memcpy(out_get_function_list, &sym, sizeof(*out_get_function_list));
	rc = HSM_OK;
out:
	return rc;
}

/* map_rv names a PKCS#11 failure in our terms, or otherwise. */
static int
map_rv(CK_RV rv, int otherwise)
{
	switch (rv) {
	case CKR_HOST_MEMORY:
		return HSM_ERR_NOMEM;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
		return HSM_ERR_LOGIN;
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_MEMORY:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_WRITE_PROTECTED:
	case CKR_SESSION_COUNT:
		return HSM_ERR_UNAVAILABLE;
	default:
		return otherwise;
	}
}

/* open_session opens a session for signing into *out. Read-only is
 * enough to sign, and it is logged in already: PKCS#11 logs in the
 * application, not the session, and libp11's session keeps that state. */
static int
open_session(struct hsm *hsm, CK_SESSION_HANDLE *out)
{
	CK_RV rv;
	int rc = HSM_OK;

	rv = hsm->fl->C_OpenSession(
	    hsm->slot_id, CKF_SERIAL_SESSION, NULL, NULL, out);
	if (rv != CKR_OK) {
		*out = CK_INVALID_HANDLE;
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
	}
	return rc;
}

/* retire_session drops *session after a call on it failed with rv; the
 * next job to take it opens a fresh one. Any failure retires it, as one
 * may leave a signing operation active (CKR_OPERATION_ACTIVE,
 * CKR_BUFFER_TOO_SMALL) and a new session costs one C_OpenSession(). A
 * handle the module says is gone is not closed: after a token reset the
 * module may have handed the same number to a session just opened. */
static void
retire_session(struct hsm *hsm, CK_SESSION_HANDLE *session, CK_RV rv)
{
	switch (rv) {
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		break;
	default:
		(void)hsm->fl->C_CloseSession(*session);
		break;
	}
	*session = CK_INVALID_HANDLE;
}

/* find_key_handle sets hsm->key to the one private key object that
 * matches key_label and the CKA_ID id (id_len bytes; 0 matches any), as
 * find_key() did through libp11. Object handles hold for every session
 * of the application, so the workers share it. */
static int
find_key_handle(struct hsm *hsm, CK_SESSION_HANDLE session,
    const char *key_label, uint8_t *id, size_t id_len)
{
	CK_OBJECT_CLASS class = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE template[3] = {{CKA_CLASS, &class, sizeof(class)}};
	CK_OBJECT_HANDLE objects[2];
	CK_ULONG n_template = 1, n_found = 0, count;
	CK_RV rv;
	int rc = HSM_ERR_UNAVAILABLE;

	if (key_label != NULL)
		template[n_template++] = (CK_ATTRIBUTE){
		    CKA_LABEL, (void *)key_label, strlen(key_label)};
	if (id_len > 0)
		template[n_template++] = (CK_ATTRIBUTE){CKA_ID, id, id_len};
	if ((rv = hsm->fl->C_FindObjectsInit(session, template, n_template)) !=
	    CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	/* A module may return fewer objects than asked for: ask until it
	 * has none left, or two, which is one too many. */
	do {
		count = 0;
		rv = hsm->fl->C_FindObjects(
		    session, objects + n_found, 2 - n_found, &count);
		n_found += count;
	} while (rv == CKR_OK && count > 0 && n_found < 2);
	(void)hsm->fl->C_FindObjectsFinal(session);
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	/* Several: a key libp11 cannot list shares the label or CKA_ID. */
	rc = HSM_ERR_KEY;
	if (n_found != 1)
		goto out;
	hsm->key = objects[0];
	rc = HSM_OK;
out:
	return rc;
}

/* open_pool checks the pool's size against the token's limit, opens the
 * sessions and finds the key in the first of them. */
static int
open_pool(struct hsm *hsm, unsigned int n_sessions, const char *key_label,
    uint8_t *id, size_t id_len)
{
	CK_TOKEN_INFO info;
	CK_RV rv;
	int rc = HSM_ERR_UNAVAILABLE;

	hsm->slot_id = PKCS11_get_slotid_from_slot(hsm->slot);
	if ((rv = hsm->fl->C_GetTokenInfo(hsm->slot_id, &info)) != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	/* The limit is per application, and libp11 keeps one session of
	 * its own to stay logged in. */
	rc = HSM_ERR_ARG;
	if (info.ulMaxSessionCount != CK_EFFECTIVELY_INFINITE &&
	    info.ulMaxSessionCount != CK_UNAVAILABLE_INFORMATION &&
	    (CK_ULONG)n_sessions + 1 > info.ulMaxSessionCount)
		goto out;

	rc = HSM_ERR_NOMEM;
	if ((hsm->pool = calloc(n_sessions, sizeof(*hsm->pool))) == NULL)
		goto out;
	while (hsm->n_sessions < n_sessions) {
		if ((rc = open_session(hsm, &hsm->pool[hsm->n_sessions])) !=
		    HSM_OK)
			goto out;
		hsm->n_sessions++;
		hsm->n_free++;
	}
	rc = find_key_handle(hsm, hsm->pool[0], key_label, id, id_len);
out:
	return rc;
}

/* close_pool closes the sessions, all back in the pool once the workers
 * are gone. */
static void
close_pool(struct hsm *hsm)
{
	unsigned int i;

	if (hsm->pool == NULL || hsm->fl == NULL)
		return;
	for (i = 0; i < hsm->n_free; i++)
		if (hsm->pool[i] != CK_INVALID_HANDLE)
			(void)hsm->fl->C_CloseSession(hsm->pool[i]);
	free(hsm->pool);
	hsm->pool = NULL;
	hsm->n_sessions = hsm->n_free = 0;
}

/* put_integer writes the unsigned big-endian n (len bytes, len > 0) at
 * out as a DER INTEGER: minimal, so leading zero bytes go, and positive,
 * so 0x00 goes before a first byte with its high bit set. out holds
 * len + 3 bytes; returns the bytes written. */
static size_t
put_integer(const uint8_t *n, size_t len, uint8_t *out)
{
	size_t pos = 0;

	while (len > 1 && n[0] == 0) {
		n++;
		len--;
	}
	out[pos++] = 0x02;
	out[pos++] = (uint8_t)(len + (n[0] >> 7));
	if ((n[0] & 0x80) != 0)
		out[pos++] = 0x00;
	memcpy(out + pos, n, len);
	return pos + len;
}

/* CKM_ECDSA returns r || s, each as long as the group order (PKCS#11
 * v2.40 §2.3.1); X.509 and OCSP want (RFC 3279 §2.2.3)
 *   Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
 * encode_ecdsa_sig writes that DER for raw (raw_len bytes) at out, which
 * holds HSM_MAX_SIGNATURE_LEN bytes, and sets *out_len. */
static int
encode_ecdsa_sig(
    const uint8_t *raw, size_t raw_len, uint8_t *out, size_t *out_len)
{
	uint8_t body[2 * (MAX_EC_FIELD_LEN + 3)];
	size_t half = raw_len / 2, body_len, pos = 0;
	int rc = HSM_ERR_UNAVAILABLE;

	if (raw_len == 0 || raw_len % 2 != 0 || half > MAX_EC_FIELD_LEN)
		goto out;
	body_len = put_integer(raw, half, body);
	body_len += put_integer(raw + half, half, body + body_len);
	out[pos++] = 0x30;
	if (body_len >= 0x80)
		out[pos++] = 0x81; /* at most 138 bytes: one length byte */
	out[pos++] = (uint8_t)body_len;
	memcpy(out + pos, body, body_len);
	*out_len = pos + body_len;
	rc = HSM_OK;
out:
	return rc;
}

/* sign_job hashes the job's message and has the token sign it on
 * *session, which it opens first if it was retired and retires if the
 * token fails. We hash, not the token: a network HSM then gets 32 bytes,
 * whatever the message's size. */
static int
sign_job(struct hsm *hsm, CK_SESSION_HANDLE *session, struct hsm_job *job)
{
	CK_MECHANISM mechanism = {CKM_ECDSA, NULL, 0};
	CK_BYTE data[sizeof(sha256_digest_info) + SHA256_LEN];
	CK_BYTE raw[HSM_MAX_SIGNATURE_LEN];
	CK_BYTE *digest = data;
	CK_ULONG data_len = SHA256_LEN, raw_len = sizeof(raw);
	unsigned int digest_len = 0;
	bool is_ecdsa = false, is_known_alg = false;
	CK_RV rv;
	int rc = HSM_ERR_UNAVAILABLE;

	switch (hsm->sig_alg) {
	case HSM_SIG_ECDSA_SHA256:
		/* CKM_ECDSA signs the digest it is given as it is. */
		mechanism.mechanism = CKM_ECDSA;
		is_ecdsa = true;
		is_known_alg = true;
		break;
	case HSM_SIG_RSA_PKCS1_SHA256:
		/* CKM_RSA_PKCS only pads: EMSA-PKCS1-v1_5 (RFC 8017 §9.2)
		 * wants the digest wrapped in its DigestInfo first. */
		mechanism.mechanism = CKM_RSA_PKCS;
		memcpy(data, sha256_digest_info, sizeof(sha256_digest_info));
		digest = data + sizeof(sha256_digest_info);
		data_len += sizeof(sha256_digest_info);
		is_known_alg = true;
		break;
	}
	if (!is_known_alg)
		goto out;
	if (EVP_Digest(job->msg, job->msg_len, digest, &digest_len, hsm->sha256,
		NULL) != 1 ||
	    digest_len != SHA256_LEN)
		goto out;

	/* Recovery from a token restart is still to come: logging in again
	 * (CKR_USER_NOT_LOGGED_IN on a fresh session) and finding the key's
	 * new handle (CKR_OBJECT_HANDLE_INVALID, CKR_KEY_HANDLE_INVALID),
	 * checked against spki as at hsm_open(). Until then each job fails
	 * with HSM_ERR_UNAVAILABLE, on a session opened afresh. */
	if (*session == CK_INVALID_HANDLE &&
	    open_session(hsm, session) != HSM_OK)
		goto out;
	rv = hsm->fl->C_SignInit(*session, &mechanism, hsm->key);
	if (rv == CKR_OK)
		rv = hsm->fl->C_Sign(*session, data, data_len, raw, &raw_len);
	if (rv != CKR_OK) {
		retire_session(hsm, session, rv);
		goto out;
	}
	if (is_ecdsa) {
		rc = encode_ecdsa_sig(raw, raw_len, job->sig, &job->sig_len);
		goto out;
	}
	if (raw_len == 0 || raw_len > sizeof(job->sig))
		goto out;
	memcpy(job->sig, raw, raw_len);
	job->sig_len = raw_len;
	rc = HSM_OK;
out:
	/* The token's errors are not the next job's business. */
	if (rc != HSM_OK)
		ERR_clear_error();
	return rc;
}

/* finish_jobs records that n more jobs of batch are done, with rc, and
 * wakes its waiter once all are. Call it with hsm->lock held. */
static void
finish_jobs(struct hsm_batch *batch, size_t n, int rc)
{
	batch->n_done += n;
	if (rc != HSM_OK)
		batch->is_failed = true;
	if (batch->n_done == batch->n_jobs)
		(void)pthread_cond_signal(&batch->done);
}

/* take_job hands out the next job, urgent ones first, and returns its
 * batch. Call it with hsm->lock held and a job queued. */
static struct hsm_batch *
take_job(struct hsm *hsm, struct hsm_job **out)
{
	struct queue *queue =
	    hsm->urgent.head != NULL ? &hsm->urgent : &hsm->bulk;
	struct hsm_batch *batch = queue->head;

	*out = &batch->jobs[batch->n_taken++];
	if (batch->n_taken == batch->n_jobs) {
		queue->head = batch->next;
		if (queue->head == NULL)
			queue->tail = NULL;
		batch->next = NULL;
	}
	return batch;
}

/* run_worker is one signature in flight: it waits until a job is queued
 * and a session is free, takes both, signs, and puts the session back. A
 * worker giving back a session needs to wake no one: it goes on to the
 * next job with that session itself. */
static void *
run_worker(void *arg)
{
	struct hsm *hsm = arg;
	struct hsm_batch *batch;
	struct hsm_job *job;
	CK_SESSION_HANDLE session;
	int rc;

	(void)pthread_mutex_lock(&hsm->lock);
	for (;;) {
		while (!hsm->is_stopping &&
		    (hsm->n_free == 0 ||
			(hsm->urgent.head == NULL && hsm->bulk.head == NULL)))
			(void)pthread_cond_wait(&hsm->work, &hsm->lock);
		if (hsm->is_stopping)
			break;
		batch = take_job(hsm, &job);
		session = hsm->pool[--hsm->n_free];
		(void)pthread_mutex_unlock(&hsm->lock);

		rc = sign_job(hsm, &session, job);
		job->rc = rc;

		(void)pthread_mutex_lock(&hsm->lock);
		hsm->pool[hsm->n_free++] = session;
		finish_jobs(batch, 1, rc);
	}
	(void)pthread_mutex_unlock(&hsm->lock);
	return NULL;
}

/* start_workers starts n worker threads. They block every signal: the
 * process's signals belong to whoever waits for them (main.c's
 * sigwait()), not to a thread inside a PKCS#11 call. */
static int
start_workers(struct hsm *hsm, unsigned int n)
{
	sigset_t all, old;
	int rc = HSM_ERR_NOMEM;

	if ((hsm->workers = calloc(n, sizeof(*hsm->workers))) == NULL)
		goto out;
	(void)sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &old) != 0)
		goto out;
	while (hsm->n_workers < n &&
	    pthread_create(
		&hsm->workers[hsm->n_workers], NULL, run_worker, hsm) == 0)
		hsm->n_workers++;
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (hsm->n_workers < n)
		goto out;
	rc = HSM_OK;
out:
	return rc;
}

/* fail_queue fails every job of queue not yet taken. Call it with
 * hsm->lock held. */
static void
fail_queue(struct queue *queue)
{
	struct hsm_batch *batch, *next;
	size_t i;

	for (batch = queue->head; batch != NULL; batch = next) {
		next = batch->next;
		batch->next = NULL;
		for (i = batch->n_taken; i < batch->n_jobs; i++)
			batch->jobs[i].rc = HSM_ERR_UNAVAILABLE;
		i = batch->n_jobs - batch->n_taken;
		batch->n_taken = batch->n_jobs;
		finish_jobs(batch, i, HSM_ERR_UNAVAILABLE);
	}
	queue->head = queue->tail = NULL;
}

/* stop_workers fails the jobs still queued, lets the workers finish the
 * signatures they are making, and joins them. */
static void
stop_workers(struct hsm *hsm)
{
	unsigned int i;

	(void)pthread_mutex_lock(&hsm->lock);
	hsm->is_stopping = true;
	fail_queue(&hsm->urgent);
	fail_queue(&hsm->bulk);
	(void)pthread_cond_broadcast(&hsm->work);
	(void)pthread_mutex_unlock(&hsm->lock);
	for (i = 0; i < hsm->n_workers; i++)
		(void)pthread_join(hsm->workers[i], NULL);
	free(hsm->workers);
	hsm->workers = NULL;
	hsm->n_workers = 0;
}

/* batch_init readies batch for jobs[0..n): each fails until it is done. */
static int
batch_init(
    struct hsm_batch *batch, struct hsm *hsm, struct hsm_job *jobs, size_t n)
{
	size_t i;

	*batch = (struct hsm_batch){.hsm = hsm, .jobs = jobs, .n_jobs = n};
	for (i = 0; i < n; i++) {
		jobs[i].sig_len = 0;
		jobs[i].rc = HSM_ERR_UNAVAILABLE;
	}
	return pthread_cond_init(&batch->done, NULL) == 0 ? HSM_OK
							  : HSM_ERR_NOMEM;
}

/* batch_queue appends batch to queue and wakes workers for its jobs. */
static int
batch_queue(struct hsm_batch *batch, struct queue *queue)
{
	struct hsm *hsm = batch->hsm;
	int rc = HSM_ERR_UNAVAILABLE;

	if (batch->n_jobs == 0)
		return HSM_OK; /* done already */
	(void)pthread_mutex_lock(&hsm->lock);
	if (hsm->is_stopping)
		goto out;
	if (queue->tail != NULL)
		queue->tail->next = batch;
	else
		queue->head = batch;
	queue->tail = batch;
	if (batch->n_jobs == 1)
		(void)pthread_cond_signal(&hsm->work);
	else
		(void)pthread_cond_broadcast(&hsm->work);
	rc = HSM_OK;
out:
	(void)pthread_mutex_unlock(&hsm->lock);
	return rc;
}

/* batch_wait blocks until every job of batch is done and releases what
 * batch_init() made, but not batch itself. */
static int
batch_wait(struct hsm_batch *batch)
{
	struct hsm *hsm = batch->hsm;
	bool is_failed;

	(void)pthread_mutex_lock(&hsm->lock);
	while (batch->n_done < batch->n_jobs)
		(void)pthread_cond_wait(&batch->done, &hsm->lock);
	is_failed = batch->is_failed;
	(void)pthread_mutex_unlock(&hsm->lock);
	(void)pthread_cond_destroy(&batch->done);
	return is_failed ? HSM_ERR_UNAVAILABLE : HSM_OK;
}

/* check_jobs refuses a job whose message is missing. */
static bool
check_jobs(const struct hsm_job *jobs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (jobs[i].msg == NULL && jobs[i].msg_len > 0)
			return false;
	return true;
}

int
hsm_open(const struct hsm_params *params, struct hsm **out)
{
	struct hsm *hsm = NULL;
	PKCS11_KEY *key = NULL;
	CK_C_GetFunctionList get_function_list;
	unsigned int n_sessions, n_workers;
	uint8_t id[MAX_KEY_ID_LEN];
	size_t id_len = 0;
	char pin[PIN_BUF_LEN];
	int rc = HSM_ERR_ARG;

	if (out == NULL || params == NULL || params->module_path == NULL ||
	    params->token_label == NULL ||
	    (params->key_label == NULL && params->key_id == NULL))
		goto out;
	n_sessions =
	    params->sessions != 0 ? params->sessions : HSM_DEFAULT_SESSIONS;
	n_workers =
	    params->in_flight != 0 ? params->in_flight : HSM_DEFAULT_IN_FLIGHT;
	if (n_sessions > HSM_MAX_SESSIONS || n_workers > HSM_MAX_IN_FLIGHT)
		goto out;
	if (params->key_id != NULL &&
	    (rc = parse_key_id(params->key_id, id, &id_len)) != HSM_OK)
		goto out;
	if ((rc = read_pin(params->pin_file, pin)) != HSM_OK)
		goto out;

	rc = HSM_ERR_NOMEM;
	if ((hsm = calloc(1, sizeof(*hsm))) == NULL)
		goto out;
	if (pthread_mutex_init(&hsm->lock, NULL) != 0)
		goto out;
	if (pthread_cond_init(&hsm->work, NULL) != 0) {
		(void)pthread_mutex_destroy(&hsm->lock);
		goto out;
	}
	hsm->is_lock_ready = true;
	if ((hsm->sha256 = EVP_MD_fetch(NULL, "SHA2-256", NULL)) == NULL)
		goto out;
	if ((hsm->ctx = PKCS11_CTX_new()) == NULL)
		goto out;

	/* Load the module first ourselves: libp11 0.4.12 prints dlerror()
	 * to stderr when it cannot, and we never print. Our reference is
	 * kept for signing, and dropped after libp11's in hsm_close(). */
	if ((rc = open_library(
		 params->module_path, &hsm->dl, &get_function_list)) != HSM_OK)
		goto out;
	rc = HSM_ERR_MODULE;
	if (PKCS11_CTX_load(hsm->ctx, params->module_path) != 0)
		goto out;
	hsm->is_module_loaded = true;
	/* The same dlopen() handle, so the module libp11 has initialised:
	 * C_GetFunctionList() hands us its function list. */
	if (get_function_list(&hsm->fl) != CKR_OK || hsm->fl == NULL)
		goto out;
	rc = HSM_ERR_UNAVAILABLE;
	if (PKCS11_enumerate_slots(hsm->ctx, &hsm->slots, &hsm->n_slots) != 0)
		goto out;
	if ((rc = find_slot(hsm, params->token_label)) != HSM_OK)
		goto out;

	rc = HSM_ERR_UNAVAILABLE;
	if (PKCS11_open_session(hsm->slot, 0) != 0)
		goto out;
	rc = HSM_ERR_LOGIN;
	/* libp11 keeps its own copy of the PIN to log in again after a
	 * fork(); it wipes that copy when the slots are released. */
	if (PKCS11_login(hsm->slot, 0, pin) != 0)
		goto out;
	hsm->is_logged_in = true;
	OPENSSL_cleanse(pin, sizeof(pin));

	if ((rc = find_key(hsm, params->key_label, id, id_len, &key)) != HSM_OK)
		goto out;
	rc = HSM_ERR_KEY;
	if ((hsm->private_key = PKCS11_get_private_key(key)) == NULL)
		goto out;
	if ((rc = copy_public_key(hsm)) != HSM_OK)
		goto out;
	if ((rc = choose_sig_alg(hsm)) != HSM_OK)
		goto out;
	if ((rc = open_pool(hsm, n_sessions, params->key_label, id, id_len)) !=
	    HSM_OK)
		goto out;
	if ((rc = start_workers(hsm, n_workers)) != HSM_OK)
		goto out;
	if ((rc = check_probe(hsm)) != HSM_OK)
		goto out;

	*out = hsm;
	hsm = NULL;
	rc = HSM_OK;
out:
	OPENSSL_cleanse(pin, sizeof(pin));
	hsm_close(hsm);
	if (rc != HSM_OK)
		ERR_clear_error();
	return rc;
}

void
hsm_close(struct hsm *hsm)
{
	if (hsm == NULL)
		return;
	/* Our sessions go before libp11 logs out on its own. */
	if (hsm->is_lock_ready)
		stop_workers(hsm);
	close_pool(hsm);
	/* Our reference to the key goes first: libp11 frees the key objects
	 * behind it on logout and when the slots are released. */
	EVP_PKEY_free(hsm->private_key);
	EVP_PKEY_free(hsm->public_key);
	OPENSSL_free(hsm->spki);
	if (hsm->is_logged_in)
		(void)PKCS11_logout(hsm->slot);
	if (hsm->slots != NULL)
		PKCS11_release_all_slots(hsm->ctx, hsm->slots, hsm->n_slots);
	/* Unloading calls C_Finalize, so the module can be opened again in
	 * this process, as some modules (SoftHSM2) allow one user at once. */
	if (hsm->is_module_loaded)
		PKCS11_CTX_unload(hsm->ctx);
	if (hsm->ctx != NULL)
		PKCS11_CTX_free(hsm->ctx);
	/* After libp11's, so the module is not unloaded and loaded again
	 * in between. */
	if (hsm->dl != NULL)
		(void)dlclose(hsm->dl);
	EVP_MD_free(hsm->sha256);
	if (hsm->is_lock_ready) {
		(void)pthread_cond_destroy(&hsm->work);
		(void)pthread_mutex_destroy(&hsm->lock);
	}
	free(hsm);
	ERR_clear_error();
}

enum hsm_sig_alg
hsm_get_sig_alg(const struct hsm *hsm)
{
	return hsm->sig_alg;
}

unsigned int
hsm_get_in_flight(const struct hsm *hsm)
{
	return hsm->n_workers;
}

void
hsm_get0_public_key(const struct hsm *hsm, const uint8_t **out, size_t *out_len)
{
	*out = hsm->spki;
	*out_len = hsm->spki_len;
}

int
hsm_sign(struct hsm *hsm, const uint8_t *msg, size_t msg_len, uint8_t *sig,
    size_t *sig_len)
{
	struct hsm_job job = {.msg = msg, .msg_len = msg_len};
	struct hsm_batch batch;
	int rc = HSM_ERR_ARG;

	if (hsm == NULL || (msg == NULL && msg_len > 0) || sig == NULL ||
	    sig_len == NULL)
		goto out;
	/* One urgent job: the next worker to be free takes it before any
	 * batch's next job, so a live request never queues behind a batch. */
	rc = HSM_ERR_UNAVAILABLE;
	if (batch_init(&batch, hsm, &job, 1) != HSM_OK)
		goto out;
	if ((rc = batch_queue(&batch, &hsm->urgent)) == HSM_OK)
		rc = batch_wait(&batch);
	else
		(void)pthread_cond_destroy(&batch.done);
	if (rc != HSM_OK)
		goto out;
	memcpy(sig, job.sig, job.sig_len);
	*sig_len = job.sig_len;
out:
	return rc;
}

int
hsm_batch_start(
    struct hsm *hsm, struct hsm_job *jobs, size_t n, struct hsm_batch **out)
{
	struct hsm_batch *batch = NULL;
	int rc = HSM_ERR_ARG;

	if (out != NULL)
		*out = NULL;
	if (hsm == NULL || out == NULL || (jobs == NULL && n > 0) ||
	    !check_jobs(jobs, n))
		goto out;
	rc = HSM_ERR_NOMEM;
	if ((batch = malloc(sizeof(*batch))) == NULL)
		goto out;
	if ((rc = batch_init(batch, hsm, jobs, n)) != HSM_OK)
		goto out;
	if ((rc = batch_queue(batch, &hsm->bulk)) != HSM_OK) {
		(void)pthread_cond_destroy(&batch->done);
		goto out;
	}
	*out = batch;
	batch = NULL;
out:
	free(batch);
	return rc;
}

int
hsm_batch_wait(struct hsm_batch *batch)
{
	int rc = HSM_ERR_ARG;

	if (batch == NULL)
		goto out;
	rc = batch_wait(batch);
	free(batch);
out:
	return rc;
}

/* struct module is a PKCS#11 module loaded by hand, for provisioning. */
struct module {
	void *dl;
	CK_FUNCTION_LIST_PTR fl;
	bool is_initialized; /* we called C_Initialize, so we finalize */
};

static int
module_load(struct module *m, const char *path)
{
	CK_C_INITIALIZE_ARGS args;
	CK_C_GetFunctionList get_function_list;
	CK_RV rv;
	int rc;

	if ((rc = open_library(path, &m->dl, &get_function_list)) != HSM_OK)
		goto out;
	rc = HSM_ERR_MODULE;
	if (get_function_list(&m->fl) != CKR_OK || m->fl == NULL)
		goto out;
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = m->fl->C_Initialize(&args);
	/* Someone else in this process holds the module (an open struct
	 * hsm): share it, and leave finalizing to them. */
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		goto out;
	m->is_initialized = rv == CKR_OK;
	rc = HSM_OK;
out:
	return rc;
}

static void
module_unload(struct module *m)
{
	if (m->is_initialized)
		(void)m->fl->C_Finalize(NULL);
	if (m->dl != NULL)
		(void)dlclose(m->dl);
	memset(m, 0, sizeof(*m));
}

/* find_token_slot sets *out to the slot whose token is labelled label
 * (TOKEN_LABEL_LEN bytes, blank-padded). With no such token it takes the
 * first slot whose token is not yet initialised and sets *out_is_new.
 * Returns HSM_ERR_TOKEN if there is neither, or the label is on several
 * tokens. */
static int
find_token_slot(struct module *m, const CK_UTF8CHAR *label, CK_SLOT_ID *out,
    bool *out_is_new)
{
	CK_SLOT_ID *slots = NULL;
	CK_TOKEN_INFO info;
	CK_ULONG i, n_slots = 0;
	bool is_found = false, is_free_found = false;
	CK_SLOT_ID free_slot = 0;
	CK_RV rv;
	int rc = HSM_ERR_UNAVAILABLE;

	if ((rv = m->fl->C_GetSlotList(CK_TRUE, NULL, &n_slots)) != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rc = HSM_ERR_TOKEN;
	if (n_slots == 0)
		goto out;
	rc = HSM_ERR_NOMEM;
	if ((slots = calloc(n_slots, sizeof(*slots))) == NULL)
		goto out;
	if ((rv = m->fl->C_GetSlotList(CK_TRUE, slots, &n_slots)) != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rc = HSM_ERR_TOKEN;
	for (i = 0; i < n_slots; i++) {
		if (m->fl->C_GetTokenInfo(slots[i], &info) != CKR_OK)
			continue; /* removed meanwhile */
		if ((info.flags & CKF_TOKEN_INITIALIZED) == 0) {
			if (!is_free_found)
				free_slot = slots[i];
			is_free_found = true;
			continue;
		}
		if (memcmp(info.label, label, TOKEN_LABEL_LEN) != 0)
			continue;
		if (is_found)
			goto out; /* several: hsm_open would refuse them too */
		*out = slots[i];
		is_found = true;
	}
	if (!is_found) {
		if (!is_free_found)
			goto out;
		*out = free_slot;
	}
	*out_is_new = !is_found;
	rc = HSM_OK;
out:
	free(slots);
	return rc;
}

/* init_token initialises the token in slot with the SO PIN and label,
 * then has the SO set the user PIN. */
static int
init_token(struct module *m, CK_SLOT_ID slot, CK_UTF8CHAR *label, char *so_pin,
    char *pin)
{
	CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
	bool is_logged_in = false;
	CK_RV rv;
	int rc = HSM_ERR_UNAVAILABLE;

	rv = m->fl->C_InitToken(
	    slot, (CK_UTF8CHAR *)so_pin, strlen(so_pin), label);
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rv = m->fl->C_OpenSession(
	    slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session);
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rv = m->fl->C_Login(
	    session, CKU_SO, (CK_UTF8CHAR *)so_pin, strlen(so_pin));
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_LOGIN);
		goto out;
	}
	is_logged_in = true;
	rv = m->fl->C_InitPIN(session, (CK_UTF8CHAR *)pin, strlen(pin));
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rc = HSM_OK;
out:
	if (is_logged_in)
		(void)m->fl->C_Logout(session);
	if (session != CK_INVALID_HANDLE)
		(void)m->fl->C_CloseSession(session);
	return rc;
}

/* check_unused returns HSM_OK if no object in the token matches the one
 * attribute attr, HSM_ERR_EXISTS if one does. */
static int
check_unused(struct module *m, CK_SESSION_HANDLE session, CK_ATTRIBUTE *attr)
{
	CK_OBJECT_HANDLE object;
	CK_ULONG count = 0;
	CK_RV rv;
	int rc = HSM_ERR_UNAVAILABLE;

	if ((rv = m->fl->C_FindObjectsInit(session, attr, 1)) != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rv = m->fl->C_FindObjects(session, &object, 1, &count);
	(void)m->fl->C_FindObjectsFinal(session);
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rc = count == 0 ? HSM_OK : HSM_ERR_EXISTS;
out:
	return rc;
}

/* generate_key_pair makes the responder's key pair in the token: the
 * private key is sensitive, never extractable, and may only sign, so
 * neither a bug nor an operator can turn it into a decryption oracle or
 * read it out. */
static int
generate_key_pair(struct module *m, CK_SESSION_HANDLE session,
    enum hsm_key_type type, const char *key_label, uint8_t *id, size_t id_len)
{
	/* prime256v1 as a DER OBJECT IDENTIFIER (RFC 5480 §2.1.1.1) */
	CK_BYTE ec_params[] = {
	    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	CK_BYTE public_exponent[] = {RSA_PUBLIC_EXPONENT};
	CK_ULONG modulus_bits = RSA_MIN_BITS;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_UTF8CHAR *label = (CK_UTF8CHAR *)key_label;
	CK_ULONG label_len = strlen(key_label);
	CK_MECHANISM mechanism = {0, NULL, 0};
	bool is_known_type = false;
	CK_ATTRIBUTE public_template[8] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_VERIFY, &yes, sizeof(yes)},
	    {CKA_ENCRYPT, &no, sizeof(no)},
	    {CKA_WRAP, &no, sizeof(no)},
	    {CKA_LABEL, label, label_len},
	    {CKA_ID, id, id_len},
	};
	CK_ATTRIBUTE private_template[] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},
	    {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)},
	    {CKA_EXTRACTABLE, &no, sizeof(no)},
	    {CKA_SIGN, &yes, sizeof(yes)},
	    {CKA_DECRYPT, &no, sizeof(no)},
	    {CKA_UNWRAP, &no, sizeof(no)},
	    {CKA_DERIVE, &no, sizeof(no)},
	    {CKA_LABEL, label, label_len},
	    {CKA_ID, id, id_len},
	};
	CK_ULONG n_public = 6;
	CK_OBJECT_HANDLE public_key, private_key;
	CK_RV rv;
	int rc = HSM_ERR_ARG;

	switch (type) {
	case HSM_KEY_EC_P256:
		mechanism.mechanism = CKM_EC_KEY_PAIR_GEN;
		is_known_type = true;
		public_template[n_public++] =
		    (CK_ATTRIBUTE){CKA_EC_PARAMS, ec_params, sizeof(ec_params)};
		break;
	case HSM_KEY_RSA_2048:
		mechanism.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		is_known_type = true;
		public_template[n_public++] = (CK_ATTRIBUTE){
		    CKA_MODULUS_BITS, &modulus_bits, sizeof(modulus_bits)};
		public_template[n_public++] =
		    (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, public_exponent,
			sizeof(public_exponent)};
		break;
	}
	if (!is_known_type)
		goto out; /* a value outside enum hsm_key_type */
	rv = m->fl->C_GenerateKeyPair(session, &mechanism, public_template,
	    n_public, private_template,
	    sizeof(private_template) / sizeof(private_template[0]), &public_key,
	    &private_key);
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rc = HSM_OK;
out:
	return rc;
}

int
hsm_provision(const char *module_path, const char *token_label,
    const char *so_pin_file, const char *pin_file, const char *key_label,
    const char *key_id, enum hsm_key_type type)
{
	struct module m = {NULL, NULL, false};
	CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
	CK_UTF8CHAR label[TOKEN_LABEL_LEN];
	CK_ATTRIBUTE attr;
	CK_SLOT_ID slot = 0;
	CK_RV rv;
	uint8_t id[MAX_KEY_ID_LEN];
	size_t id_len = 0, token_label_len;
	char so_pin[PIN_BUF_LEN], pin[PIN_BUF_LEN];
	bool is_new = false, is_logged_in = false;
	int rc = HSM_ERR_ARG;

	if (module_path == NULL || token_label == NULL || key_label == NULL ||
	    key_label[0] == '\0' || key_id == NULL)
		goto out;
	token_label_len = strlen(token_label);
	if (token_label_len == 0 || token_label_len > TOKEN_LABEL_LEN)
		goto out;
	memset(label, ' ', sizeof(label));
	memcpy(label, token_label, token_label_len);
	if ((rc = parse_key_id(key_id, id, &id_len)) != HSM_OK)
		goto out;
	if ((rc = read_pin(so_pin_file, so_pin)) != HSM_OK)
		goto out;
	if ((rc = read_pin(pin_file, pin)) != HSM_OK)
		goto out;

	if ((rc = module_load(&m, module_path)) != HSM_OK)
		goto out;
	if ((rc = find_token_slot(&m, label, &slot, &is_new)) != HSM_OK)
		goto out;
	if (is_new && (rc = init_token(&m, slot, label, so_pin, pin)) != HSM_OK)
		goto out;
	OPENSSL_cleanse(so_pin, sizeof(so_pin));

	rv = m.fl->C_OpenSession(
	    slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &session);
	if (rv != CKR_OK) {
		rc = map_rv(rv, HSM_ERR_UNAVAILABLE);
		goto out;
	}
	rv = m.fl->C_Login(session, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
	/* Already logged in: an open struct hsm shares the module. */
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
		rc = map_rv(rv, HSM_ERR_LOGIN);
		goto out;
	}
	is_logged_in = rv == CKR_OK;
	OPENSSL_cleanse(pin, sizeof(pin));

	/* A label or CKA_ID already in use would make hsm_open() ambiguous
	 * and libp11 pair the private key with the wrong public key. */
	attr = (CK_ATTRIBUTE){CKA_LABEL, (void *)key_label, strlen(key_label)};
	if ((rc = check_unused(&m, session, &attr)) != HSM_OK)
		goto out;
	attr = (CK_ATTRIBUTE){CKA_ID, id, id_len};
	if ((rc = check_unused(&m, session, &attr)) != HSM_OK)
		goto out;
	rc = generate_key_pair(&m, session, type, key_label, id, id_len);
out:
	OPENSSL_cleanse(so_pin, sizeof(so_pin));
	OPENSSL_cleanse(pin, sizeof(pin));
	if (is_logged_in)
		(void)m.fl->C_Logout(session);
	if (session != CK_INVALID_HANDLE)
		(void)m.fl->C_CloseSession(session);
	module_unload(&m);
	return rc;
}

const char *
hsm_strerror(int err)
{
	switch ((enum hsm_err)err) {
	case HSM_OK:
		return "success";
	case HSM_ERR_MODULE:
		return "cannot load the PKCS#11 module";
	case HSM_ERR_TOKEN:
		return "no token with that label, or several";
	case HSM_ERR_PIN_FILE:
		return "unusable PIN file";
	case HSM_ERR_LOGIN:
		return "the token refused the PIN";
	case HSM_ERR_KEY:
		return "no such private key, or several";
	case HSM_ERR_KEY_TYPE:
		return "unsupported key type";
	case HSM_ERR_UNAVAILABLE:
		return "the token failed or is unavailable";
	case HSM_ERR_ARG:
		return "invalid argument";
	case HSM_ERR_NOMEM:
		return "out of memory";
	case HSM_ERR_EXISTS:
		return "the key exists already";
	}
	return "unknown error";
}
