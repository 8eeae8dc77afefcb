/* hsm.c - the signing service over a PKCS#11 token: libp11 finds the key,
 * logs in and signs; provisioning speaks raw PKCS#11 because libp11 0.4.12
 * cannot generate EC keys. Nothing here prints; callers log hsm_strerror(). */
#include "hsm/hsm.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libp11.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
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

struct hsm {
	/* Serialises the libp11 signing calls; see sign_digest(). */
	pthread_mutex_t sign_lock;
	bool is_lock_ready;
	PKCS11_CTX *ctx;
	bool is_module_loaded;
	PKCS11_SLOT *slots;
	unsigned int n_slots;
	PKCS11_SLOT *slot; /* borrowed from slots */
	bool is_logged_in;
	EVP_PKEY *private_key; /* a handle: the key itself stays in the token */
	EVP_PKEY *public_key;  /* decoded from spki, to check the probe */
	uint8_t *spki;
	size_t spki_len;
	enum hsm_sig_alg sig_alg;
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

/* check_probe signs a fixed message and verifies it with the public key,
 * so that a public key object that does not belong to the private key
 * fails at startup rather than in every client. */
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

int
hsm_open(const struct hsm_params *params, struct hsm **out)
{
	struct hsm *hsm = NULL;
	PKCS11_KEY *key = NULL;
	CK_C_GetFunctionList get_function_list;
	void *dl = NULL;
	uint8_t id[MAX_KEY_ID_LEN];
	size_t id_len = 0;
	char pin[PIN_BUF_LEN];
	int rc = HSM_ERR_ARG;

	if (out == NULL || params == NULL || params->module_path == NULL ||
	    params->token_label == NULL ||
	    (params->key_label == NULL && params->key_id == NULL))
		goto out;
	if (params->key_id != NULL &&
	    (rc = parse_key_id(params->key_id, id, &id_len)) != HSM_OK)
		goto out;
	if ((rc = read_pin(params->pin_file, pin)) != HSM_OK)
		goto out;

	rc = HSM_ERR_NOMEM;
	if ((hsm = calloc(1, sizeof(*hsm))) == NULL)
		goto out;
	if (pthread_mutex_init(&hsm->sign_lock, NULL) != 0)
		goto out;
	hsm->is_lock_ready = true;
	if ((hsm->ctx = PKCS11_CTX_new()) == NULL)
		goto out;

	/* Load the module first ourselves: libp11 0.4.12 prints dlerror()
	 * to stderr when it cannot, and we never print. */
	if ((rc = open_library(params->module_path, &dl, &get_function_list)) !=
	    HSM_OK)
		goto out;
	rc = HSM_ERR_MODULE;
	if (PKCS11_CTX_load(hsm->ctx, params->module_path) != 0)
		goto out;
	hsm->is_module_loaded = true;
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
	if ((rc = check_probe(hsm)) != HSM_OK)
		goto out;

	*out = hsm;
	hsm = NULL;
	rc = HSM_OK;
out:
	OPENSSL_cleanse(pin, sizeof(pin));
	hsm_close(hsm);
	/* After hsm_close(), so the library is not unloaded and loaded
	 * again in between; libp11 holds its own reference. */
	if (dl != NULL)
		(void)dlclose(dl);
	if (rc != HSM_OK)
		ERR_clear_error();
	return rc;
}

void
hsm_close(struct hsm *hsm)
{
	if (hsm == NULL)
		return;
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
	if (hsm->is_lock_ready)
		(void)pthread_mutex_destroy(&hsm->sign_lock);
	free(hsm);
	ERR_clear_error();
}

enum hsm_sig_alg
hsm_get_sig_alg(const struct hsm *hsm)
{
	return hsm->sig_alg;
}

void
hsm_get0_public_key(const struct hsm *hsm, const uint8_t **out, size_t *out_len)
{
	*out = hsm->spki;
	*out_len = hsm->spki_len;
}

/* sign_digest signs a SHA-256 digest with the token's key into sig.
 * It is the one place that takes sign_lock: for now the token makes one
 * signature at a time, whatever libp11 does inside, and keeping the lock
 * here alone means the session pool that replaces it changes only this
 * function. */
static int
sign_digest(struct hsm *hsm, const uint8_t *digest, size_t digest_len,
    uint8_t *sig, size_t *sig_len)
{
	EVP_PKEY_CTX *pkey_ctx = NULL;
	size_t len = HSM_MAX_SIGNATURE_LEN;
	int ret, rc = HSM_ERR_UNAVAILABLE;

	if ((pkey_ctx = EVP_PKEY_CTX_new(hsm->private_key, NULL)) == NULL)
		goto out;
	if (EVP_PKEY_sign_init(pkey_ctx) != 1)
		goto out;
	switch (hsm->sig_alg) {
	case HSM_SIG_ECDSA_SHA256:
		break;
	case HSM_SIG_RSA_PKCS1_SHA256:
		/* With the digest named, OpenSSL wraps it in a DigestInfo
		 * before the token pads and signs it (RFC 8017 §9.2). */
		if (EVP_PKEY_CTX_set_rsa_padding(pkey_ctx, RSA_PKCS1_PADDING) !=
		    1)
			goto out;
		if (EVP_PKEY_CTX_set_signature_md(pkey_ctx, EVP_sha256()) != 1)
			goto out;
		break;
	}
	if (pthread_mutex_lock(&hsm->sign_lock) != 0)
		goto out;
	ret = EVP_PKEY_sign(pkey_ctx, sig, &len, digest, digest_len);
	(void)pthread_mutex_unlock(&hsm->sign_lock);
	if (ret != 1 || len == 0 || len > HSM_MAX_SIGNATURE_LEN)
		goto out;
	*sig_len = len;
	rc = HSM_OK;
out:
	EVP_PKEY_CTX_free(pkey_ctx);
	return rc;
}

int
hsm_sign(struct hsm *hsm, const uint8_t *msg, size_t msg_len, uint8_t *sig,
    size_t *sig_len)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len;
	int rc = HSM_ERR_ARG;

	if (hsm == NULL || (msg == NULL && msg_len > 0) || sig == NULL ||
	    sig_len == NULL)
		goto out;
	rc = HSM_ERR_UNAVAILABLE;
	if (EVP_Digest(msg, msg_len, digest, &digest_len, EVP_sha256(), NULL) !=
	    1)
		goto out;
	rc = sign_digest(hsm, digest, digest_len, sig, sig_len);
out:
	/* The token's errors are not the next request's business. */
	if (rc != HSM_OK)
		ERR_clear_error();
	return rc;
}

/* struct module is a PKCS#11 module loaded by hand, for provisioning. */
struct module {
	void *dl;
	CK_FUNCTION_LIST_PTR fl;
	bool is_initialized; /* we called C_Initialize, so we finalize */
};

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
