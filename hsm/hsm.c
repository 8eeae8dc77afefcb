/* hsm.c - the signing service over a PKCS#11 token: libp11 loads the
 * module, finds the token and the key and logs in; signing and provisioning
 * speak raw PKCS#11, as libp11 0.4.12 neither lets us choose its sessions
 * nor generates EC keys. Batches may also go to helper processes over a
 * socket. Nothing here prints; callers log hsm_strerror(). */
/* NOLINTNEXTLINE(bugprone-reserved-identifier): close_range() is GNU's */
#define _GNU_SOURCE

#include "hsm/hsm.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
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

/* The helpers' protocol; see put_u32(). */
#define HELLO_ID           UINT32_MAX /* a helper's first reply: no job's */
#define REQUEST_HEADER_LEN 8          /* job id, message length */
#define REPLY_HEADER_LEN   12         /* job id, rc, signature length */
#define MAX_HELLO_LEN      4096       /* the SubjectPublicKeyInfo in it */
#define RECEIVE_BUF_LEN    65536
#define MAX_IOV            512   /* per sendmsg(); Linux takes 1024 */
#define WINDOW_PER_WORKER  2     /* a helper's jobs in flight per worker */
#define MIN_WINDOW         32    /* and at least, so replies go in bunches */
#define MAX_CLOSED_FD      65536 /* without close_range(), close up to it */

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
	/* A helper's requests, a batch no one waits for: the worker calls
	 * on_done, without the lock, once each job is signed, and the
	 * last call may free the batch. Such a batch has no done
	 * condition, and its owner lets every one finish before
	 * hsm_close(). */
	void (*on_done)(struct hsm_batch *batch, struct hsm_job *job);
};

/* struct remote_slot is one place in a helper's window: the job whose
 * id is its index, or NULL. */
struct remote_slot {
	struct hsm_batch *batch;
	struct hsm_job *job;
};

/* struct helper is a helper process seen from the parent: its socket, a
 * sender that keeps its window of jobs full from the bulk queue and a
 * receiver that completes them. The fields after fd belong to hsm->lock. */
struct helper {
	struct hsm *hsm;
	pid_t pid;     /* 0: never started */
	int fd;        /* -1: closed */
	bool is_ready; /* it said hello with HSM_OK */
	bool is_cond_ready;
	uint8_t *spki; /* the public key it found, from its hello */
	size_t spki_len;
	bool has_sender;
	bool has_receiver;
	pthread_t sender;
	pthread_t receiver;
	/* wake: room in the window or a bulk job for the sender, is_dead,
	 * hsm->is_stopping, or is_sending gone for a dying receiver. */
	pthread_cond_t wake;
	struct remote_slot *slots; /* [window] */
	uint32_t *free_ids;        /* [window], free_ids[0..n_free_ids) */
	unsigned int window;
	unsigned int n_free_ids;
	struct iovec *iov;                      /* [2 * window], the sender's */
	uint8_t (*headers)[REQUEST_HEADER_LEN]; /* [window], the sender's */
	bool is_sending; /* the sender reads the messages of its jobs */
	bool is_dead;    /* not to be used again */
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

	/* The helper processes, with processes > 1. */
	struct helper *helpers;
	unsigned int n_helpers;
	atomic_uint n_helpers_live; /* not lost */
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

/* take_job hands out the next job of queue, which has one, and returns
 * its batch. Call it with hsm->lock held. */
static struct hsm_batch *
take_job(struct queue *queue, struct hsm_job **out)
{
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
	void (*on_done)(struct hsm_batch *, struct hsm_job *);
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
		batch = take_job(
		    hsm->urgent.head != NULL ? &hsm->urgent : &hsm->bulk, &job);
		session = hsm->pool[--hsm->n_free];
		(void)pthread_mutex_unlock(&hsm->lock);

		rc = sign_job(hsm, &session, job);
		job->rc = rc;
		/* Set before the batch was queued, so read without the lock;
		 * the batch may be gone after the call. */
		on_done = batch->on_done;
		if (on_done != NULL)
			on_done(batch, job);

		(void)pthread_mutex_lock(&hsm->lock);
		hsm->pool[hsm->n_free++] = session;
		if (on_done == NULL)
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
 * signatures they are making, and joins them. The helpers' senders stop
 * too; stop_helpers() joins them. */
static void
stop_workers(struct hsm *hsm)
{
	unsigned int i;

	(void)pthread_mutex_lock(&hsm->lock);
	hsm->is_stopping = true;
	fail_queue(&hsm->urgent);
	fail_queue(&hsm->bulk);
	(void)pthread_cond_broadcast(&hsm->work);
	for (i = 0; i < hsm->n_helpers; i++)
		if (hsm->helpers[i].is_cond_ready)
			(void)pthread_cond_broadcast(&hsm->helpers[i].wake);
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
	unsigned int i;
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
	/* Bulk work is the helpers' too; a live one's sender alone waits
	 * on its wake. */
	for (i = 0; queue == &hsm->bulk && i < hsm->n_helpers; i++)
		if (!hsm->helpers[i].is_dead)
			(void)pthread_cond_signal(&hsm->helpers[i].wake);
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

/* check_jobs refuses a job whose message is missing, or too long to
 * send to a helper. */
static bool
check_jobs(const struct hsm_job *jobs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((jobs[i].msg == NULL && jobs[i].msg_len > 0) ||
		    jobs[i].msg_len > HSM_MAX_MESSAGE_LEN)
			return false;
	return true;
}

/* check_params checks params and works out the sizes and the key id that
 * hsm_open() uses. */
static int
check_params(const struct hsm_params *params, unsigned int *out_sessions,
    unsigned int *out_workers, uint8_t *id, size_t *id_len)
{
	int rc = HSM_ERR_ARG;

	if (params == NULL || params->module_path == NULL ||
	    params->token_label == NULL ||
	    (params->key_label == NULL && params->key_id == NULL))
		goto out;
	*out_sessions =
	    params->sessions != 0 ? params->sessions : HSM_DEFAULT_SESSIONS;
	*out_workers =
	    params->in_flight != 0 ? params->in_flight : HSM_DEFAULT_IN_FLIGHT;
	if (*out_sessions > HSM_MAX_SESSIONS ||
	    *out_workers > HSM_MAX_IN_FLIGHT ||
	    params->processes > HSM_MAX_PROCESSES)
		goto out;
	*id_len = 0;
	if (params->key_id != NULL &&
	    (rc = parse_key_id(params->key_id, id, id_len)) != HSM_OK)
		goto out;
	rc = HSM_OK;
out:
	return rc;
}

/* open_local opens the token in this process, as hsm_open() describes,
 * leaving params->processes aside: the parent does so, and each helper. */
static int
open_local(const struct hsm_params *params, struct hsm **out)
{
	struct hsm *hsm = NULL;
	PKCS11_KEY *key = NULL;
	CK_C_GetFunctionList get_function_list;
	unsigned int n_sessions, n_workers;
	uint8_t id[MAX_KEY_ID_LEN];
	size_t id_len = 0;
	char pin[PIN_BUF_LEN];
	int rc;

	if ((rc = check_params(params, &n_sessions, &n_workers, id, &id_len)) !=
	    HSM_OK)
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

/* The helpers' protocol runs on a stream socket, each number a u32 in
 * big-endian order, an rc (an enum hsm_err) in two's complement:
 *   request: job id, message length, message
 *   reply:   job id, rc, signature length, signature
 * A helper's first reply is its hello: HELLO_ID, the rc of its own
 * open_local(), and then, for HSM_OK, the key's SubjectPublicKeyInfo
 * in place of a signature. A job id is a slot of the helper's window,
 * used again once answered. The PIN never travels: a helper reads it. */
static void
put_u32(uint8_t *out, uint32_t value)
{
	out[0] = (uint8_t)(value >> 24);
	out[1] = (uint8_t)(value >> 16);
	out[2] = (uint8_t)(value >> 8);
	out[3] = (uint8_t)value;
}

static uint32_t
get_u32(const uint8_t *in)
{
	return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 |
	    (uint32_t)in[2] << 8 | (uint32_t)in[3];
}

/* get_rc reads an rc that put_u32() wrote, converted to uint32_t. */
static int
get_rc(const uint8_t *in)
{
	uint32_t value = get_u32(in);

	if (value <= INT32_MAX)
		return (int)value;
	return -(int)(UINT32_MAX - value) - 1;
}

/* send_all sends the n_iov buffers of iov, whatever it takes; it changes
 * iov as it goes. MSG_NOSIGNAL: a peer gone is EPIPE, not SIGPIPE. */
static bool
send_all(int fd, struct iovec *iov, size_t n_iov)
{
	struct msghdr msg;
	ssize_t n;
	size_t sent;

	while (n_iov > 0) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = n_iov < MAX_IOV ? n_iov : MAX_IOV;
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return false;
		sent = (size_t)n;
		while (n_iov > 0 && sent >= iov->iov_len) {
			sent -= iov->iov_len;
			iov++;
			n_iov--;
		}
		if (sent > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + sent;
			iov->iov_len -= sent;
		}
	}
	return true;
}

/* read_full reads exactly len bytes into buf; false on EOF or error. */
static bool
read_full(int fd, uint8_t *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = read(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= (size_t)n;
	}
	return true;
}

/* window_len is how many jobs a helper with n_workers workers is given
 * at once: enough that none of them waits for the next between two
 * signatures, and that replies can go in bunches. */
static unsigned int
window_len(unsigned int n_workers)
{
	unsigned int n = n_workers * WINDOW_PER_WORKER;

	return n > MIN_WINDOW ? n : MIN_WINDOW;
}

/* struct server is a helper's end of its socket. The reader queues the
 * requests of each read() as one batch; the workers buffer their replies
 * and send them half a window at a time, or as soon as no request is left
 * pending, so each side wakes up once a bunch, not once a signature. */
struct server {
	struct hsm *hsm;
	int fd;
	pthread_mutex_t lock; /* all that follows */
	pthread_cond_t idle;  /* n_pending reached 0 */
	uint8_t *replies;     /* flush_at replies at most */
	size_t replies_len;
	size_t n_replies;
	size_t flush_at;
	size_t n_pending; /* requests queued, not yet answered */
	bool is_broken;   /* replies cannot be sent: the parent is gone */
};

/* struct remote_batch is the requests of one read(), as one batch. */
struct remote_batch {
	struct hsm_batch batch; /* first: on_done is given &batch */
	struct server *server;
	uint32_t *ids; /* of batch.jobs[i] */
	uint8_t *msgs;
	size_t n_left; /* jobs not yet answered; server->lock */
};

static void
free_remote_batch(struct remote_batch *remote)
{
	if (remote == NULL)
		return;
	free(remote->batch.jobs);
	free(remote->ids);
	free(remote->msgs);
	free(remote);
}

/* add_reply buffers the reply to id, with rc and, for HSM_OK, the
 * signature, and sends what is buffered once it is flush_at replies or
 * no request is left pending. Call it with server->lock held. */
static void
add_reply(struct server *server, uint32_t id, int rc, const uint8_t *sig,
    size_t sig_len)
{
	uint8_t *reply = server->replies + server->replies_len;
	struct iovec iov;

	if (rc != HSM_OK)
		sig_len = 0;
	put_u32(reply, id);
	put_u32(reply + 4, (uint32_t)rc);
	put_u32(reply + 8, (uint32_t)sig_len);
	if (sig_len > 0)
		memcpy(reply + REPLY_HEADER_LEN, sig, sig_len);
	server->replies_len += REPLY_HEADER_LEN + sig_len;
	server->n_replies++;
	if (server->n_replies < server->flush_at && server->n_pending > 0)
		return;
	iov = (struct iovec){server->replies, server->replies_len};
	if (!server->is_broken && !send_all(server->fd, &iov, 1))
		server->is_broken = true;
	server->replies_len = 0;
	server->n_replies = 0;
}

/* reply_remote_job is a remote batch's on_done: it answers job, and
 * frees the batch after its last job. */
static void
reply_remote_job(struct hsm_batch *batch, struct hsm_job *job)
{
	struct remote_batch *remote = (struct remote_batch *)batch;
	struct server *server = remote->server;
	bool is_last;

	(void)pthread_mutex_lock(&server->lock);
	server->n_pending--;
	add_reply(server, remote->ids[job - batch->jobs], job->rc, job->sig,
	    job->sig_len);
	if (server->n_pending == 0)
		(void)pthread_cond_signal(&server->idle);
	is_last = --remote->n_left == 0;
	(void)pthread_mutex_unlock(&server->lock);
	if (is_last)
		free_remote_batch(remote);
}

/* scan_requests finds the whole requests at the start of buf (len bytes):
 * *out_n of them, with *out_msgs_len bytes of messages in *out_used
 * bytes. *out_next_len is the length of the next request, whole or not,
 * 0 if its header is not all there. False for a request that no parent
 * of ours sends. */
static bool
scan_requests(const uint8_t *buf, size_t len, size_t *out_used, size_t *out_n,
    size_t *out_msgs_len, size_t *out_next_len)
{
	size_t pos = 0, n = 0, msgs_len = 0, frame_len = 0;
	uint32_t msg_len;

	while (len - pos >= REQUEST_HEADER_LEN) {
		msg_len = get_u32(buf + pos + 4);
		if (msg_len > HSM_MAX_MESSAGE_LEN)
			return false;
		frame_len = REQUEST_HEADER_LEN + msg_len;
		if (len - pos < frame_len)
			break;
		pos += frame_len;
		msgs_len += msg_len;
		n++;
		frame_len = 0;
	}
	*out_used = pos;
	*out_n = n;
	*out_msgs_len = msgs_len;
	*out_next_len = frame_len;
	return true;
}

/* queue_requests queues the n requests in buf (used bytes, msgs_len of
 * them messages, copied) as one batch on the helper's own workers. If
 * they cannot be queued, each is answered HSM_ERR_UNAVAILABLE at once, as
 * the parent's workers would fail it. */
static void
queue_requests(struct server *server, const uint8_t *buf, size_t used, size_t n,
    size_t msgs_len)
{
	struct remote_batch *remote = NULL;
	struct hsm_job *jobs;
	size_t pos, i, offset = 0;
	uint32_t msg_len;

	if ((remote = calloc(1, sizeof(*remote))) == NULL ||
	    (remote->batch.jobs = calloc(n, sizeof(*jobs))) == NULL ||
	    (remote->ids = calloc(n, sizeof(*remote->ids))) == NULL ||
	    (remote->msgs = malloc(msgs_len + 1)) == NULL)
		goto out_fail;
	jobs = remote->batch.jobs;
	for (pos = 0, i = 0; pos < used; i++) {
		msg_len = get_u32(buf + pos + 4);
		remote->ids[i] = get_u32(buf + pos);
		memcpy(remote->msgs + offset, buf + pos + REQUEST_HEADER_LEN,
		    msg_len);
		jobs[i].msg = remote->msgs + offset;
		jobs[i].msg_len = msg_len;
		offset += msg_len;
		pos += REQUEST_HEADER_LEN + msg_len;
	}
	remote->batch.hsm = server->hsm;
	remote->batch.n_jobs = n;
	remote->batch.on_done = reply_remote_job;
	remote->server = server;
	remote->n_left = n;
	(void)pthread_mutex_lock(&server->lock);
	server->n_pending += n;
	(void)pthread_mutex_unlock(&server->lock);
	if (batch_queue(&remote->batch, &server->hsm->bulk) != HSM_OK) {
		/* The last call frees remote. */
		for (i = 0; i < n; i++) {
			jobs[i].rc = HSM_ERR_UNAVAILABLE;
			reply_remote_job(&remote->batch, &jobs[i]);
		}
	}
	return;
out_fail:
	free_remote_batch(remote);
	(void)pthread_mutex_lock(&server->lock);
	for (pos = 0; pos < used; pos += REQUEST_HEADER_LEN + msg_len) {
		msg_len = get_u32(buf + pos + 4);
		add_reply(
		    server, get_u32(buf + pos), HSM_ERR_UNAVAILABLE, NULL, 0);
	}
	(void)pthread_mutex_unlock(&server->lock);
}

/* serve reads requests from fd and has hsm sign them, until the parent
 * closes the socket, dies, or sends what no parent of ours sends; then it
 * lets every job queued finish. */
static void
serve(struct hsm *hsm, int fd)
{
	struct server server = {.hsm = hsm, .fd = fd};
	uint8_t *buf = NULL, *grown;
	size_t cap = RECEIVE_BUF_LEN, len = 0, used, n_requests, msgs_len;
	size_t next_len;
	ssize_t n;

	server.flush_at = window_len(hsm->n_workers) / 2;
	if (pthread_mutex_init(&server.lock, NULL) != 0)
		return;
	if (pthread_cond_init(&server.idle, NULL) != 0)
		goto out_destroy_lock;
	server.replies = malloc(
	    server.flush_at * (REPLY_HEADER_LEN + HSM_MAX_SIGNATURE_LEN));
	if (server.replies == NULL || (buf = malloc(cap)) == NULL)
		goto out;
	for (;;) {
		n = read(fd, buf + len, cap - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (!scan_requests(
			buf, len, &used, &n_requests, &msgs_len, &next_len))
			break;
		if (n_requests > 0)
			queue_requests(
			    &server, buf, used, n_requests, msgs_len);
		memmove(buf, buf + used, len - used);
		len -= used;
		/* A request bigger than the buffer: make room for it. */
		if (next_len > cap) {
			if ((grown = realloc(buf, next_len)) == NULL)
				break;
			buf = grown;
			cap = next_len;
		}
	}
out:
	(void)pthread_mutex_lock(&server.lock);
	while (server.n_pending > 0)
		(void)pthread_cond_wait(&server.idle, &server.lock);
	(void)pthread_mutex_unlock(&server.lock);
	free(buf);
	free(server.replies);
	(void)pthread_cond_destroy(&server.idle);
out_destroy_lock:
	(void)pthread_mutex_destroy(&server.lock);
}

/* send_hello tells the parent how open_local() went: rc, and the public
 * key hsm found, which the parent checks against its own. True if the
 * helper is to serve. */
static bool
send_hello(int fd, int rc, const struct hsm *hsm)
{
	uint8_t header[REPLY_HEADER_LEN];
	struct iovec iov[2] = {{header, sizeof(header)}, {NULL, 0}};

	if (rc == HSM_OK && hsm->spki_len <= MAX_HELLO_LEN)
		iov[1] = (struct iovec){hsm->spki, hsm->spki_len};
	else if (rc == HSM_OK)
		rc = HSM_ERR_KEY; /* larger than any key we take */
	put_u32(header, HELLO_ID);
	put_u32(header + 4, (uint32_t)rc);
	put_u32(header + 8, (uint32_t)iov[1].iov_len);
	return send_all(fd, iov, 2) && rc == HSM_OK;
}

/* close_other_fds closes every descriptor but 0, 1, 2 and keep: the
 * parent's other sockets, its index, its listening socket. */
static void
close_other_fds(int keep)
{
	struct rlimit limit;
	int fd, max = MAX_CLOSED_FD;

	if ((keep <= 3 || close_range(3, (unsigned int)keep - 1, 0) == 0) &&
	    close_range(keep < 3 ? 3 : (unsigned int)keep + 1, ~0U, 0) == 0)
		return;
	/* A kernel before Linux 5.9 */
	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 &&
	    limit.rlim_cur < (rlim_t)max)
		max = (int)limit.rlim_cur;
	for (fd = 3; fd < max; fd++)
		if (fd != keep)
			(void)close(fd);
}

/* run_helper is a helper process, just forked from parent: it opens the
 * token on its own, says hello on fd and serves it. It never returns, and
 * leaves with _exit(): the parent's atexit() handlers and stdio buffers
 * are the parent's. */
static void __attribute__((noreturn))
run_helper(const struct hsm_params *params, int fd, pid_t parent)
{
	struct sigaction action;
	struct hsm *hsm = NULL;
	sigset_t none;
	int rc;

	/* Die with the parent; it may have died before prctl(). */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent)
		_exit(1);
	/* SIGTERM kills us, while the parent handles SIGINT and SIGHUP,
	 * which a terminal sends to us too, and closes our socket. The
	 * mask comes from the parent, which may block them to sigwait(). */
	memset(&action, 0, sizeof(action));
	action.sa_handler = SIG_DFL;
	(void)sigaction(SIGTERM, &action, NULL);
	action.sa_handler = SIG_IGN;
	(void)sigaction(SIGINT, &action, NULL);
	(void)sigaction(SIGHUP, &action, NULL);
	(void)sigaction(SIGPIPE, &action, NULL);
	(void)sigemptyset(&none);
	(void)pthread_sigmask(SIG_SETMASK, &none, NULL);
	close_other_fds(fd);

	rc = open_local(params, &hsm);
	if (send_hello(fd, rc, hsm))
		serve(hsm, fd);
	hsm_close(hsm);
	_exit(rc == HSM_OK ? 0 : 1);
}

/* read_hello reads a helper's hello and keeps the public key it names.
 * Returns HSM_OK if it opened the token, its error if it could not, or
 * HSM_ERR_UNAVAILABLE if it died or said what no helper of ours says. */
static int
read_hello(struct helper *helper)
{
	uint8_t header[REPLY_HEADER_LEN];
	uint32_t len;
	int rc = HSM_ERR_UNAVAILABLE, helper_rc;

	if (!read_full(helper->fd, header, sizeof(header)) ||
	    get_u32(header) != HELLO_ID)
		goto out;
	helper_rc = get_rc(header + 4);
	len = get_u32(header + 8);
	if (len > MAX_HELLO_LEN || (helper_rc == HSM_OK && len == 0))
		goto out;
	rc = HSM_ERR_NOMEM;
	if (len > 0 && (helper->spki = malloc(len)) == NULL)
		goto out;
	rc = HSM_ERR_UNAVAILABLE;
	if (!read_full(helper->fd, helper->spki, len))
		goto out;
	helper->spki_len = len;
	if (helper_rc != HSM_OK) {
		if (helper_rc < HSM_OK && helper_rc >= HSM_ERR_EXISTS)
			rc = helper_rc;
		goto out;
	}
	helper->is_ready = true;
	rc = HSM_OK;
out:
	return rc;
}

/* spawn_helpers forks n helpers into *out, which close_helpers()
 * releases, even on failure. One opens the token only once the one before
 * has: SoftHSM2 2.6 rewrites the token's file at every C_Login(), and a
 * process that reads it meanwhile may find no token at all. Returns
 * HSM_OK, or the first helper's error, and then forks no more. */
static int
spawn_helpers(
    const struct hsm_params *params, unsigned int n, struct helper **out)
{
	struct helper *helper;
	pid_t parent = getpid();
	unsigned int i;
	int fds[2], rc = HSM_ERR_NOMEM;

	if ((*out = calloc(n, sizeof(**out))) == NULL)
		goto out;
	for (i = 0; i < n; i++)
		(*out)[i].fd = -1;
	for (i = 0; i < n; i++) {
		helper = &(*out)[i];
		/* Out of descriptors or processes: "resources", as close to
		 * out of memory as our errors come. */
		rc = HSM_ERR_NOMEM;
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) !=
		    0)
			goto out;
		helper->pid = fork();
		if (helper->pid == 0) {
			(void)close(fds[0]);
			run_helper(params, fds[1], parent);
		}
		(void)close(fds[1]);
		helper->fd = fds[0];
		if (helper->pid == -1) {
			helper->pid = 0;
			goto out;
		}
		if ((rc = read_hello(helper)) != HSM_OK)
			goto out;
	}
	rc = HSM_OK;
out:
	return rc;
}

/* close_helpers closes the sockets of helpers[0..n), which lets each
 * helper that said hello finish and exit; any other gets SIGTERM, in case
 * it is still opening the token. It reaps them all and frees helpers.
 * The helpers' threads are gone. Accepts NULL. */
static void
close_helpers(struct helper *helpers, unsigned int n)
{
	struct helper *helper;
	unsigned int i;

	if (helpers == NULL)
		return;
	for (i = 0; i < n; i++) {
		helper = &helpers[i];
		if (helper->fd != -1)
			(void)close(helper->fd);
		if (helper->pid > 0 && !helper->is_ready)
			(void)kill(helper->pid, SIGTERM);
	}
	for (i = 0; i < n; i++) {
		helper = &helpers[i];
		while (helper->pid > 0 && waitpid(helper->pid, NULL, 0) == -1 &&
		    errno == EINTR)
			;
		if (helper->is_cond_ready)
			(void)pthread_cond_destroy(&helper->wake);
		free(helper->spki);
		free(helper->slots);
		free(helper->free_ids);
		free(helper->iov);
		free(helper->headers);
	}
	free(helpers);
}

/* run_sender keeps the helper's window full: it takes bulk jobs while
 * there are free ids, and sends them at once. The messages are read after
 * the lock is dropped: is_sending keeps the receiver of a dead helper from
 * completing those jobs, and thus their batches, meanwhile. */
static void *
run_sender(void *arg)
{
	struct helper *helper = arg;
	struct hsm *hsm = helper->hsm;
	struct remote_slot *slot;
	uint32_t id;
	size_t n;
	bool is_sent;

	(void)pthread_mutex_lock(&hsm->lock);
	for (;;) {
		while (!hsm->is_stopping && !helper->is_dead &&
		    (helper->n_free_ids == 0 || hsm->bulk.head == NULL))
			(void)pthread_cond_wait(&helper->wake, &hsm->lock);
		if (hsm->is_stopping || helper->is_dead)
			break;
		for (n = 0; helper->n_free_ids > 0 && hsm->bulk.head != NULL;
		     n++) {
			id = helper->free_ids[--helper->n_free_ids];
			slot = &helper->slots[id];
			slot->batch = take_job(&hsm->bulk, &slot->job);
			put_u32(helper->headers[n], id);
			put_u32(helper->headers[n] + 4,
			    (uint32_t)slot->job->msg_len);
			helper->iov[2 * n] = (struct iovec){
			    helper->headers[n], REQUEST_HEADER_LEN};
			helper->iov[2 * n + 1] = (struct iovec){
			    (void *)slot->job->msg, slot->job->msg_len};
		}
		helper->is_sending = true;
		(void)pthread_mutex_unlock(&hsm->lock);

		is_sent = send_all(helper->fd, helper->iov, 2 * n);

		(void)pthread_mutex_lock(&hsm->lock);
		helper->is_sending = false;
		if (!is_sent) {
			/* Wake the receiver, which fails the jobs. */
			helper->is_dead = true;
			(void)shutdown(helper->fd, SHUT_RDWR);
		}
		if (helper->is_dead)
			(void)pthread_cond_broadcast(&helper->wake);
	}
	(void)pthread_mutex_unlock(&hsm->lock);
	return NULL;
}

/* complete_remote_job fills in the job of the reply for id, and frees
 * the id. False for a reply that answers no job of ours. Call it with
 * hsm->lock held. */
static bool
complete_remote_job(struct helper *helper, uint32_t id, int rc,
    const uint8_t *sig, size_t sig_len)
{
	struct remote_slot *slot;

	if (id >= helper->window || helper->slots[id].job == NULL)
		return false;
	if (rc != HSM_OK && rc != HSM_ERR_UNAVAILABLE)
		return false;
	if (rc == HSM_OK && (sig_len == 0 || sig_len > HSM_MAX_SIGNATURE_LEN))
		return false;
	slot = &helper->slots[id];
	if (rc == HSM_OK)
		memcpy(slot->job->sig, sig, sig_len);
	slot->job->sig_len = rc == HSM_OK ? sig_len : 0;
	slot->job->rc = rc;
	finish_jobs(slot->batch, 1, rc);
	*slot = (struct remote_slot){NULL, NULL};
	helper->free_ids[helper->n_free_ids++] = id;
	return true;
}

/* lose_helper takes a helper out of service: once its sender is done
 * with the messages, every job it still has fails as
 * HSM_ERR_UNAVAILABLE. A helper that broke the protocol is killed; one
 * that closed its socket is gone already. */
static void
lose_helper(struct helper *helper, bool is_rogue)
{
	struct hsm *hsm = helper->hsm;
	struct remote_slot *slot;
	unsigned int id;

	if (is_rogue)
		(void)kill(helper->pid, SIGKILL);
	(void)pthread_mutex_lock(&hsm->lock);
	helper->is_dead = true;
	(void)pthread_cond_broadcast(&helper->wake);
	while (helper->is_sending)
		(void)pthread_cond_wait(&helper->wake, &hsm->lock);
	for (id = 0; id < helper->window; id++) {
		slot = &helper->slots[id];
		if (slot->job == NULL)
			continue;
		slot->job->sig_len = 0;
		slot->job->rc = HSM_ERR_UNAVAILABLE;
		finish_jobs(slot->batch, 1, HSM_ERR_UNAVAILABLE);
		*slot = (struct remote_slot){NULL, NULL};
		helper->free_ids[helper->n_free_ids++] = id;
	}
	if (!hsm->is_stopping)
		atomic_fetch_sub(&hsm->n_helpers_live, 1);
	(void)pthread_mutex_unlock(&hsm->lock);
}

/* run_receiver completes the helper's jobs as its replies come, until
 * it closes the socket or says what no helper of ours says. */
static void *
run_receiver(void *arg)
{
	struct helper *helper = arg;
	struct hsm *hsm = helper->hsm;
	uint8_t buf[RECEIVE_BUF_LEN];
	size_t len = 0, pos, frame_len;
	uint32_t sig_len;
	ssize_t n;
	bool is_rogue = false;

	while (!is_rogue) {
		n = read(helper->fd, buf + len, sizeof(buf) - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		(void)pthread_mutex_lock(&hsm->lock);
		for (pos = 0; len - pos >= REPLY_HEADER_LEN; pos += frame_len) {
			sig_len = get_u32(buf + pos + 8);
			if (sig_len > HSM_MAX_SIGNATURE_LEN) {
				is_rogue = true;
				break;
			}
			frame_len = REPLY_HEADER_LEN + sig_len;
			if (len - pos < frame_len)
				break;
			if (!complete_remote_job(helper, get_u32(buf + pos),
				get_rc(buf + pos + 4),
				buf + pos + REPLY_HEADER_LEN, sig_len)) {
				is_rogue = true;
				break;
			}
		}
		(void)pthread_cond_signal(&helper->wake);
		(void)pthread_mutex_unlock(&hsm->lock);
		memmove(buf, buf + pos, len - pos);
		len -= pos;
	}
	lose_helper(helper, is_rogue);
	return NULL;
}

/* start_helpers readies the window of each helper and starts its sender
 * and receiver. They block every signal, as the workers do. */
static int
start_helpers(struct hsm *hsm, unsigned int n_workers)
{
	struct helper *helper;
	sigset_t all, old;
	unsigned int i, id, window = window_len(n_workers);
	int rc = HSM_ERR_NOMEM;

	for (i = 0; i < hsm->n_helpers; i++) {
		helper = &hsm->helpers[i];
		helper->hsm = hsm;
		helper->window = window;
		helper->slots = calloc(window, sizeof(*helper->slots));
		helper->free_ids = calloc(window, sizeof(*helper->free_ids));
		helper->iov = calloc(2 * (size_t)window, sizeof(*helper->iov));
		helper->headers = calloc(window, sizeof(*helper->headers));
		if (helper->slots == NULL || helper->free_ids == NULL ||
		    helper->iov == NULL || helper->headers == NULL)
			goto out;
		/* Taken from the end: ids 0, 1, ... first. */
		for (id = 0; id < window; id++)
			helper->free_ids[id] = window - 1 - id;
		helper->n_free_ids = window;
		if (pthread_cond_init(&helper->wake, NULL) != 0)
			goto out;
		helper->is_cond_ready = true;
	}
	atomic_store(&hsm->n_helpers_live, hsm->n_helpers);
	(void)sigfillset(&all);
	if (pthread_sigmask(SIG_SETMASK, &all, &old) != 0)
		goto out;
	for (i = 0; i < hsm->n_helpers; i++) {
		helper = &hsm->helpers[i];
		helper->has_receiver = pthread_create(&helper->receiver, NULL,
					   run_receiver, helper) == 0;
		if (!helper->has_receiver)
			break;
		helper->has_sender = pthread_create(&helper->sender, NULL,
					 run_sender, helper) == 0;
		if (!helper->has_sender)
			break;
	}
	(void)pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (i < hsm->n_helpers)
		goto out;
	rc = HSM_OK;
out:
	return rc;
}

/* stop_helpers, after stop_workers(), joins the senders, closes the
 * sockets for writing, so each helper finishes and exits, joins the
 * receivers as the helpers go and reaps the helpers. */
static void
stop_helpers(struct hsm *hsm)
{
	struct helper *helper;
	unsigned int i;

	for (i = 0; i < hsm->n_helpers; i++) {
		helper = &hsm->helpers[i];
		if (helper->has_sender)
			(void)pthread_join(helper->sender, NULL);
		helper->has_sender = false;
		(void)shutdown(helper->fd, SHUT_WR);
	}
	for (i = 0; i < hsm->n_helpers; i++) {
		helper = &hsm->helpers[i];
		if (helper->has_receiver)
			(void)pthread_join(helper->receiver, NULL);
		helper->has_receiver = false;
	}
	close_helpers(hsm->helpers, hsm->n_helpers);
	hsm->helpers = NULL;
	hsm->n_helpers = 0;
}

/* hsm_open forks the helpers before the module is loaded here: PKCS#11
 * leaves a module that was initialised before a fork() undefined in the
 * child. They open the token first, one after another, then this process
 * does. */
int
hsm_open(const struct hsm_params *params, struct hsm **out)
{
	struct hsm *hsm = NULL;
	struct helper *helpers = NULL;
	unsigned int n_sessions, n_workers, n_helpers = 0, i;
	uint8_t id[MAX_KEY_ID_LEN];
	size_t id_len;
	int rc = HSM_ERR_ARG;

	if (out == NULL ||
	    (rc = check_params(params, &n_sessions, &n_workers, id, &id_len)) !=
		HSM_OK)
		goto out;
	if (params->processes > 1) {
		n_helpers = params->processes - 1;
		if ((rc = spawn_helpers(params, n_helpers, &helpers)) != HSM_OK)
			goto out;
	}
	if ((rc = open_local(params, &hsm)) != HSM_OK)
		goto out;
	/* Each signs with the key we found, or the token changed between. */
	rc = HSM_ERR_KEY;
	for (i = 0; i < n_helpers; i++)
		if (helpers[i].spki_len != hsm->spki_len ||
		    memcmp(helpers[i].spki, hsm->spki, hsm->spki_len) != 0)
			goto out;
	if (n_helpers > 0) {
		hsm->helpers = helpers;
		hsm->n_helpers = n_helpers;
		helpers = NULL;
		if ((rc = start_helpers(hsm, n_workers)) != HSM_OK)
			goto out;
	}
	*out = hsm;
	hsm = NULL;
	rc = HSM_OK;
out:
	hsm_close(hsm);
	close_helpers(helpers, n_helpers);
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
	stop_helpers(hsm);
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
	return hsm->n_workers * (1 + hsm->n_helpers);
}

unsigned int
hsm_get_processes(const struct hsm *hsm)
{
	return 1 + atomic_load(&hsm->n_helpers_live);
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

	if (hsm == NULL || (msg == NULL && msg_len > 0) ||
	    msg_len > HSM_MAX_MESSAGE_LEN || sig == NULL || sig_len == NULL)
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
