/* test_hsm.c - hsm/ against a real SoftHSM2 token made in a fresh temporary
 * directory: provisioning, the key's attributes read back independently,
 * signatures checked by OpenSSL, every error path, concurrent signing,
 * batches through the session pool, a token that vanishes mid-batch, and
 * batches spread over helper processes, one of them killed. */
/* NOLINTNEXTLINE(bugprone-reserved-identifier): feature macro for nftw() */
#define _XOPEN_SOURCE 700

#include "hsm/hsm.h"
#include "tests/test.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define EC_TOKEN       "ocsp-ec"
#define EC_KEY         "ocsp-ec-key"
#define EC_KEY_ID      "01"
#define RSA_TOKEN      "ocsp-rsa"
#define RSA_KEY        "ocsp-rsa-key"
#define RSA_KEY_ID     "0a0b"
#define N_THREADS      4
#define N_SIGNATURES   200
#define N_REOPENS      5
#define N_BATCH_JOBS   1000
#define N_PAIR_JOBS    300
#define N_LONG_JOBS    20000
#define N_HELPER_JOBS  3000
#define MAX_MSG_LEN    48

/* The layering check keeps <p11-kit/pkcs11.h> inside hsm/, and this reader
 * is meant to share nothing with hsm.c anyway: it declares the few
 * PKCS#11 v2.40 names it needs and calls the functions SoftHSM2 exports. */
#define CKF_RW_SESSION          0x2UL
#define CKF_SERIAL_SESSION      0x4UL
#define CKF_TOKEN_INITIALIZED   0x400UL
#define CKU_USER                1UL
#define CKO_PRIVATE_KEY         3UL
#define CKK_EC                  3UL
#define CKM_EC_KEY_PAIR_GEN     0x1040UL
#define CKA_CLASS               0x0UL
#define CKA_TOKEN               0x1UL
#define CKA_PRIVATE             0x2UL
#define CKA_LABEL               0x3UL
#define CKA_VALUE               0x11UL
#define CKA_PRIVATE_EXPONENT    0x123UL
#define CKA_KEY_TYPE            0x100UL
#define CKA_ID                  0x102UL
#define CKA_SENSITIVE           0x103UL
#define CKA_DECRYPT             0x105UL
#define CKA_UNWRAP              0x107UL
#define CKA_SIGN                0x108UL
#define CKA_VERIFY              0x10aUL
#define CKA_DERIVE              0x10cUL
#define CKA_EXTRACTABLE         0x162UL
#define CKA_NEVER_EXTRACTABLE   0x164UL
#define CKA_ALWAYS_SENSITIVE    0x165UL
#define CKA_EC_PARAMS           0x180UL
#define CKR_OK                  0UL
#define CKR_ATTRIBUTE_SENSITIVE 0x11UL

struct ck_attribute {
	unsigned long type;
	void *value;
	unsigned long value_len;
};

struct ck_mechanism {
	unsigned long mechanism;
	void *parameter;
	unsigned long parameter_len;
};

struct ck_token_info {
	unsigned char label[32];
	unsigned char manufacturer_id[32];
	unsigned char model[16];
	unsigned char serial_number[16];
	unsigned long flags;
	unsigned long counts[10];
	unsigned char versions[4];
	unsigned char utc_time[16];
};

/* struct p11 is a raw session on one token, logged in as the user. */
struct p11 {
	void *dl;
	bool is_initialized;
	unsigned long slot;
	unsigned long session;
	bool has_session;
	unsigned long (*initialize)(void *);
	unsigned long (*finalize)(void *);
	unsigned long (*get_slot_list)(
	    unsigned char, unsigned long *, unsigned long *);
	unsigned long (*get_token_info)(unsigned long, struct ck_token_info *);
	unsigned long (*open_session)(
	    unsigned long, unsigned long, void *, void *, unsigned long *);
	unsigned long (*close_session)(unsigned long);
	unsigned long (*login)(
	    unsigned long, unsigned long, unsigned char *, unsigned long);
	unsigned long (*find_objects_init)(
	    unsigned long, struct ck_attribute *, unsigned long);
	unsigned long (*find_objects)(
	    unsigned long, unsigned long *, unsigned long, unsigned long *);
	unsigned long (*find_objects_final)(unsigned long);
	unsigned long (*get_attribute_value)(
	    unsigned long, unsigned long, struct ck_attribute *, unsigned long);
	unsigned long (*generate_key_pair)(unsigned long, struct ck_mechanism *,
	    struct ck_attribute *, unsigned long, struct ck_attribute *,
	    unsigned long, unsigned long *, unsigned long *);
};

static const char *module_path;
static char dir[] = "/tmp/test_hsm.XXXXXX";
static char so_pin[32], user_pin[32];

/* path_in builds dir/name in a static buffer of the caller's choosing. */
static const char *
path_in(char *buf, size_t buf_len, const char *name)
{
	int n;

	n = snprintf(buf, buf_len, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= buf_len)
		abort();
	return buf;
}

/* write_file creates dir/name holding text, with exactly mode. */
static bool
write_file(const char *name, const char *text, mode_t mode)
{
	char path[256];
	size_t len = strlen(text);
	bool ok;
	int fd;

	fd = open(path_in(path, sizeof(path), name),
	    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return false;
	ok = write(fd, text, len) == (ssize_t)len && fchmod(fd, mode) == 0;
	return close(fd) == 0 && ok;
}

static void
random_pin(char *pin, size_t pin_size)
{
	unsigned char bytes[12];
	size_t i;

	if (pin_size < 2 * sizeof(bytes) + 1 ||
	    RAND_bytes(bytes, sizeof(bytes)) != 1)
		abort();
	for (i = 0; i < sizeof(bytes); i++)
		(void)snprintf(pin + 2 * i, 3, "%02x", bytes[i]);
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* setup makes the temporary directory, a SoftHSM2 configuration whose
 * tokens live there, and the PIN files; SOFTHSM2_CONF must be set before
 * the module is first loaded. */
static bool
setup(void)
{
	char path[256], conf[512], pin_line[64];
	bool ok = true;
	int n;

	module_path = getenv("TEST_HSM_MODULE");
	if (module_path == NULL)
		module_path = DEFAULT_MODULE;
	if (mkdtemp(dir) == NULL)
		return false;
	n = snprintf(conf, sizeof(conf),
	    "directories.tokendir = %s/tokens\n"
	    "objectstore.backend = file\n"
	    "log.level = ERROR\n",
	    dir);
	if (n < 0 || (size_t)n >= sizeof(conf))
		return false;
	ok &= write_file("softhsm2.conf", conf, 0600);
	ok &= mkdir(path_in(path, sizeof(path), "tokens"), 0700) == 0;
	ok &= setenv("SOFTHSM2_CONF",
		  path_in(path, sizeof(path), "softhsm2.conf"), 1) == 0;

	random_pin(so_pin, sizeof(so_pin));
	random_pin(user_pin, sizeof(user_pin));
	(void)snprintf(pin_line, sizeof(pin_line), "%s\n", so_pin);
	ok &= write_file("so.pin", pin_line, 0600);
	(void)snprintf(pin_line, sizeof(pin_line), "%s\n", user_pin);
	ok &= write_file("user.pin", pin_line, 0600);
	ok &= write_file("world.pin", pin_line, 0604);
	ok &= write_file("group.pin", pin_line, 0640);
	ok &= write_file("nonl.pin", user_pin, 0600);
	ok &= write_file("wrong.pin", "not-the-pin\n", 0600);
	ok &= write_file("empty.pin", "", 0600);
	ok &= write_file("newline.pin", "\n", 0600);
	ok &= mkdir(path_in(path, sizeof(path), "dir.pin"), 0700) == 0;
	return ok;
}

static void
cleanup(void)
{
	(void)nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static bool
load_symbol(void *dl, const char *name, void *fn, size_t fn_size)
{
	void *sym = dlsym(dl, name);

	if (sym == NULL)
		return false;
	memcpy(fn, &sym, fn_size);
	return true;
}

static void
p11_close(struct p11 *p)
{
	if (p->has_session)
		(void)p->close_session(p->session);
	if (p->is_initialized)
		(void)p->finalize(NULL);
	if (p->dl != NULL)
		(void)dlclose(p->dl);
	memset(p, 0, sizeof(*p));
}

/* p11_open logs in as the user on the token labelled token_label. Only one
 * user of the module at a time: no struct hsm may be open meanwhile. */
static bool
p11_open(struct p11 *p, const char *token_label)
{
	struct ck_token_info info;
	unsigned long slots[16], n_slots = 16, i;
	unsigned char label[32];
	bool ok = true;

	memset(p, 0, sizeof(*p));
	memset(label, ' ', sizeof(label));
	memcpy(label, token_label, strlen(token_label));
	if ((p->dl = dlopen(module_path, RTLD_NOW | RTLD_LOCAL)) == NULL)
		return false;
	ok &= load_symbol(
	    p->dl, "C_Initialize", &p->initialize, sizeof(p->initialize));
	ok &=
	    load_symbol(p->dl, "C_Finalize", &p->finalize, sizeof(p->finalize));
	ok &= load_symbol(p->dl, "C_GetSlotList", &p->get_slot_list,
	    sizeof(p->get_slot_list));
	ok &= load_symbol(p->dl, "C_GetTokenInfo", &p->get_token_info,
	    sizeof(p->get_token_info));
	ok &= load_symbol(
	    p->dl, "C_OpenSession", &p->open_session, sizeof(p->open_session));
	ok &= load_symbol(p->dl, "C_CloseSession", &p->close_session,
	    sizeof(p->close_session));
	ok &= load_symbol(p->dl, "C_Login", &p->login, sizeof(p->login));
	ok &= load_symbol(p->dl, "C_FindObjectsInit", &p->find_objects_init,
	    sizeof(p->find_objects_init));
	ok &= load_symbol(
	    p->dl, "C_FindObjects", &p->find_objects, sizeof(p->find_objects));
	ok &= load_symbol(p->dl, "C_FindObjectsFinal", &p->find_objects_final,
	    sizeof(p->find_objects_final));
	ok &= load_symbol(p->dl, "C_GetAttributeValue", &p->get_attribute_value,
	    sizeof(p->get_attribute_value));
	ok &= load_symbol(p->dl, "C_GenerateKeyPair", &p->generate_key_pair,
	    sizeof(p->generate_key_pair));
	if (!ok || p->initialize(NULL) != CKR_OK)
		goto fail;
	p->is_initialized = true;
	if (p->get_slot_list(1, slots, &n_slots) != CKR_OK)
		goto fail;
	for (i = 0; i < n_slots; i++) {
		if (p->get_token_info(slots[i], &info) != CKR_OK ||
		    (info.flags & CKF_TOKEN_INITIALIZED) == 0 ||
		    memcmp(info.label, label, sizeof(label)) != 0)
			continue;
		if (p->open_session(slots[i],
			CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
			&p->session) != CKR_OK)
			goto fail;
		p->has_session = true;
		p->slot = slots[i];
		break;
	}
	if (!p->has_session ||
	    p->login(p->session, CKU_USER, (unsigned char *)user_pin,
		strlen(user_pin)) != CKR_OK)
		goto fail;
	return true;
fail:
	p11_close(p);
	return false;
}

/* p11_find_private_key finds the one private key labelled label. */
static bool
p11_find_private_key(struct p11 *p, const char *label, unsigned long *out)
{
	unsigned long class = CKO_PRIVATE_KEY, objects[2] = {0, 0}, count = 0;
	struct ck_attribute template[] = {
	    {CKA_CLASS, &class, sizeof(class)},
	    {CKA_LABEL, (void *)label, strlen(label)},
	};

	if (p->find_objects_init(p->session, template, 2) != CKR_OK)
		return false;
	if (p->find_objects(p->session, objects, 2, &count) != CKR_OK)
		count = 0;
	(void)p->find_objects_final(p->session);
	*out = objects[0];
	return count == 1;
}

static bool
p11_get_bool(
    struct p11 *p, unsigned long object, unsigned long type, bool expected)
{
	unsigned char value = 2;
	struct ck_attribute attr = {type, &value, sizeof(value)};

	if (p->get_attribute_value(p->session, object, &attr, 1) != CKR_OK)
		return false;
	return value == (expected ? 1 : 0);
}

/* check_key_attributes reads the private key's policy straight from the
 * token: hsm_provision() must have made it sensitive from birth, never
 * extractable, and good only for signing; reading secret_type, its secret
 * value, must fail. */
static void
check_key_attributes(
    const char *token_label, const char *key_label, unsigned long secret_type)
{
	struct p11 p;
	unsigned long key = 0;
	unsigned char value[512];
	struct ck_attribute attr = {secret_type, value, sizeof(value)};

	CHECK(p11_open(&p, token_label));
	if (p.dl == NULL)
		return;
	CHECK(p11_find_private_key(&p, key_label, &key));
	CHECK(p11_get_bool(&p, key, CKA_TOKEN, true));
	CHECK(p11_get_bool(&p, key, CKA_PRIVATE, true));
	CHECK(p11_get_bool(&p, key, CKA_SENSITIVE, true));
	CHECK(p11_get_bool(&p, key, CKA_EXTRACTABLE, false));
	CHECK(p11_get_bool(&p, key, CKA_ALWAYS_SENSITIVE, true));
	CHECK(p11_get_bool(&p, key, CKA_NEVER_EXTRACTABLE, true));
	CHECK(p11_get_bool(&p, key, CKA_SIGN, true));
	CHECK(p11_get_bool(&p, key, CKA_DECRYPT, false));
	CHECK(p11_get_bool(&p, key, CKA_UNWRAP, false));
	CHECK(p11_get_bool(&p, key, CKA_DERIVE, false));
	CHECK(p.get_attribute_value(p.session, key, &attr, 1) ==
	    CKR_ATTRIBUTE_SENSITIVE);
	p11_close(&p);
}

/* p11_generate_ec makes an EC key pair on curve (DER OID params) whose
 * private key has CKA_ID id and public key public_id: keys that
 * hsm_provision() would not make. */
static bool
p11_generate_ec(struct p11 *p, unsigned char *params, size_t params_len,
    const char *label, unsigned char id, unsigned char public_id)
{
	unsigned char yes = 1;
	unsigned long public_key, private_key;
	struct ck_mechanism mechanism = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	struct ck_attribute public_template[] = {
	    {CKA_TOKEN, &yes, 1},
	    {CKA_VERIFY, &yes, 1},
	    {CKA_EC_PARAMS, params, params_len},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_ID, &public_id, 1},
	};
	struct ck_attribute private_template[] = {
	    {CKA_TOKEN, &yes, 1},
	    {CKA_PRIVATE, &yes, 1},
	    {CKA_SENSITIVE, &yes, 1},
	    {CKA_SIGN, &yes, 1},
	    {CKA_LABEL, (void *)label, strlen(label)},
	    {CKA_ID, &id, 1},
	};

	return p->generate_key_pair(p->session, &mechanism, public_template, 5,
		   private_template, 6, &public_key, &private_key) == CKR_OK;
}

static EVP_PKEY *
decode_public_key(const struct hsm *hsm)
{
	const uint8_t *spki, *p;
	size_t spki_len;
	EVP_PKEY *key;

	hsm_get0_public_key(hsm, &spki, &spki_len);
	p = spki;
	key = d2i_PUBKEY(NULL, &p, (long)spki_len);
	if (key != NULL && p != spki + spki_len) {
		EVP_PKEY_free(key);
		key = NULL;
	}
	return key;
}

static bool
verify(EVP_PKEY *key, const void *msg, size_t msg_len, const uint8_t *sig,
    size_t sig_len)
{
	EVP_MD_CTX *ctx;
	bool ok = false;

	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return false;
	if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1)
		ok = EVP_DigestVerify(ctx, sig, sig_len, msg, msg_len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

static struct hsm_params
params_for(const char *token, const char *key_label, const char *key_id,
    const char *pin_name)
{
	static char pin_path[256];
	struct hsm_params params = {
	    .module_path = module_path,
	    .token_label = token,
	    .key_label = key_label,
	    .key_id = key_id,
	    .pin_file = path_in(pin_path, sizeof(pin_path), pin_name),
	};

	return params;
}

static int
open_with(const char *token, const char *key_label, const char *key_id,
    const char *pin_name)
{
	struct hsm_params params;
	struct hsm *hsm = NULL;
	int rc;

	params = params_for(token, key_label, key_id, pin_name);
	rc = hsm_open(&params, &hsm);
	hsm_close(hsm);
	return rc;
}

static int
provision(const char *token, const char *so_pin_name, const char *pin_name,
    const char *key_label, const char *key_id, enum hsm_key_type type)
{
	char so_pin_path[256], pin_path[256];

	return hsm_provision(module_path, token,
	    path_in(so_pin_path, sizeof(so_pin_path), so_pin_name),
	    path_in(pin_path, sizeof(pin_path), pin_name), key_label, key_id,
	    type);
}

static void
test_provision(void)
{
	char long_label[34];

	memset(long_label, 'x', 33);
	long_label[33] = '\0';

	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", EC_KEY, EC_KEY_ID,
		  HSM_KEY_EC_P256) == HSM_OK);
	/* The token exists now: it is reused, and nothing is overwritten. */
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", EC_KEY, EC_KEY_ID,
		  HSM_KEY_EC_P256) == HSM_ERR_EXISTS);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", EC_KEY, "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_EXISTS);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", "other", EC_KEY_ID,
		  HSM_KEY_EC_P256) == HSM_ERR_EXISTS);
	CHECK(provision(EC_TOKEN, "so.pin", "wrong.pin", "other", "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_LOGIN);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", "ocsp-ec-key2", "05",
		  HSM_KEY_EC_P256) == HSM_OK);
	CHECK(provision(RSA_TOKEN, "so.pin", "user.pin", RSA_KEY, RSA_KEY_ID,
		  HSM_KEY_RSA_2048) == HSM_OK);

	CHECK(provision(EC_TOKEN, "missing.pin", "user.pin", "other", "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_PIN_FILE);
	CHECK(provision(EC_TOKEN, "so.pin", "world.pin", "other", "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_PIN_FILE);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", "other", "7",
		  HSM_KEY_EC_P256) == HSM_ERR_ARG);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", "other", "zz",
		  HSM_KEY_EC_P256) == HSM_ERR_ARG);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", "", "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_ARG);
	CHECK(provision(long_label, "so.pin", "user.pin", "other", "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_ARG);
	CHECK(provision(EC_TOKEN, "so.pin", "user.pin", "other", "7f",
		  (enum hsm_key_type)42) == HSM_ERR_ARG);
	CHECK(hsm_provision("/nonexistent/module.so", EC_TOKEN,
		  path_in((char[256]){0}, 256, "so.pin"),
		  path_in((char[256]){0}, 256, "user.pin"), "other", "7f",
		  HSM_KEY_EC_P256) == HSM_ERR_MODULE);

	check_key_attributes(EC_TOKEN, EC_KEY, CKA_VALUE);
	check_key_attributes(EC_TOKEN, "ocsp-ec-key2", CKA_VALUE);
	check_key_attributes(RSA_TOKEN, RSA_KEY, CKA_PRIVATE_EXPONENT);
}

/* add_foreign_keys puts keys hsm_open() must refuse into the EC token: one
 * on P-384, two that share a label, and two whose public keys carry each
 * other's CKA_ID, so libp11 pairs each private key with the wrong public
 * key. */
static void
add_foreign_keys(void)
{
	/* secp384r1 and prime256v1 as DER OBJECT IDENTIFIERs */
	unsigned char p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
	unsigned char p256[] = {
	    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
	struct p11 p;

	CHECK(p11_open(&p, EC_TOKEN));
	if (p.dl == NULL)
		return;
	CHECK(p11_generate_ec(&p, p384, sizeof(p384), "p384", 0x02, 0x02));
	CHECK(p11_generate_ec(&p, p256, sizeof(p256), "dup", 0x03, 0x03));
	CHECK(p11_generate_ec(&p, p256, sizeof(p256), "dup", 0x04, 0x04));
	CHECK(p11_generate_ec(&p, p256, sizeof(p256), "swap-a", 0x06, 0x07));
	CHECK(p11_generate_ec(&p, p256, sizeof(p256), "swap-b", 0x07, 0x06));
	p11_close(&p);
}

/* check_signing signs with the key and has OpenSSL judge the result. */
static void
check_signing(const char *token, const char *key_label, const char *key_id,
    enum hsm_sig_alg sig_alg, size_t max_sig_len)
{
	static const char msg[] = "tbsResponseData";
	struct hsm_params params;
	struct hsm *hsm = NULL;
	EVP_PKEY *key = NULL;
	uint8_t sig[HSM_MAX_SIGNATURE_LEN], flipped[sizeof(msg)];
	size_t sig_len = 0;

	params = params_for(token, key_label, key_id, "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_OK);
	if (hsm == NULL)
		return;
	CHECK(hsm_get_sig_alg(hsm) == sig_alg);
	CHECK(hsm_get_in_flight(hsm) == HSM_DEFAULT_IN_FLIGHT);
	CHECK((key = decode_public_key(hsm)) != NULL);
	CHECK(
	    EVP_PKEY_is_a(key, sig_alg == HSM_SIG_ECDSA_SHA256 ? "EC" : "RSA"));

	CHECK(hsm_sign(hsm, (const uint8_t *)msg, sizeof(msg) - 1, sig,
		  &sig_len) == HSM_OK);
	CHECK(sig_len > 0 && sig_len <= max_sig_len);
	CHECK(verify(key, msg, sizeof(msg) - 1, sig, sig_len));
	memcpy(flipped, msg, sizeof(msg));
	flipped[0] ^= 0x01;
	CHECK(!verify(key, flipped, sizeof(msg) - 1, sig, sig_len));
	sig[sig_len / 2] ^= 0x01;
	CHECK(!verify(key, msg, sizeof(msg) - 1, sig, sig_len));

	CHECK(hsm_sign(hsm, NULL, 0, sig, &sig_len) == HSM_OK);
	CHECK(verify(key, "", 0, sig, sig_len));
	CHECK(hsm_sign(hsm, NULL, 1, sig, &sig_len) == HSM_ERR_ARG);
	CHECK(hsm_sign(hsm, (const uint8_t *)msg, HSM_MAX_MESSAGE_LEN + 1, sig,
		  &sig_len) == HSM_ERR_ARG);
	CHECK(hsm_sign(hsm, (const uint8_t *)msg, 1, NULL, &sig_len) ==
	    HSM_ERR_ARG);
	CHECK(hsm_sign(hsm, (const uint8_t *)msg, 1, sig, NULL) == HSM_ERR_ARG);
	CHECK(hsm_sign(NULL, (const uint8_t *)msg, 1, sig, &sig_len) ==
	    HSM_ERR_ARG);
	CHECK(ERR_peek_error() == 0);

	EVP_PKEY_free(key);
	hsm_close(hsm);
}

static void
test_open_errors(void)
{
	struct hsm_params params;
	struct hsm *hsm = NULL;

	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "wrong.pin") == HSM_ERR_LOGIN);
	CHECK(open_with("no-such-token", EC_KEY, NULL, "user.pin") ==
	    HSM_ERR_TOKEN);
	CHECK(open_with(EC_TOKEN, "no-such-key", NULL, "user.pin") ==
	    HSM_ERR_KEY);
	CHECK(open_with(EC_TOKEN, NULL, "7f", "user.pin") == HSM_ERR_KEY);
	CHECK(open_with(EC_TOKEN, EC_KEY, "05", "user.pin") == HSM_ERR_KEY);
	CHECK(open_with(EC_TOKEN, "dup", NULL, "user.pin") == HSM_ERR_KEY);
	CHECK(open_with(EC_TOKEN, "dup", "04", "user.pin") == HSM_OK);
	CHECK(
	    open_with(EC_TOKEN, "p384", NULL, "user.pin") == HSM_ERR_KEY_TYPE);
	CHECK(open_with(EC_TOKEN, "swap-a", NULL, "user.pin") == HSM_ERR_KEY);
	CHECK(open_with(EC_TOKEN, "swap-b", NULL, "user.pin") == HSM_ERR_KEY);
	/* The RSA key's own label, in the wrong token. */
	CHECK(open_with(EC_TOKEN, RSA_KEY, NULL, "user.pin") == HSM_ERR_KEY);

	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "missing.pin") ==
	    HSM_ERR_PIN_FILE);
	CHECK(
	    open_with(EC_TOKEN, EC_KEY, NULL, "empty.pin") == HSM_ERR_PIN_FILE);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "newline.pin") ==
	    HSM_ERR_PIN_FILE);
	CHECK(
	    open_with(EC_TOKEN, EC_KEY, NULL, "world.pin") == HSM_ERR_PIN_FILE);
	CHECK(
	    open_with(EC_TOKEN, EC_KEY, NULL, "long.pin") == HSM_ERR_PIN_FILE);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "nul.pin") == HSM_ERR_PIN_FILE);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "dir.pin") == HSM_ERR_PIN_FILE);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "group.pin") == HSM_OK);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "nonl.pin") == HSM_OK);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "maxlen.pin") == HSM_ERR_LOGIN);

	params = params_for(EC_TOKEN, EC_KEY, NULL, "user.pin");
	params.module_path = "/nonexistent/module.so";
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_MODULE && hsm == NULL);
	params.module_path = "/etc/passwd";
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_MODULE && hsm == NULL);

	params = params_for(EC_TOKEN, NULL, NULL, "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG);
	params = params_for(EC_TOKEN, NULL, "0", "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG);
	params = params_for(EC_TOKEN, NULL, "0g", "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG);
	params = params_for(NULL, EC_KEY, NULL, "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG);
	params = params_for(EC_TOKEN, EC_KEY, NULL, "user.pin");
	params.pin_file = NULL;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_PIN_FILE);
	CHECK(hsm_open(NULL, &hsm) == HSM_ERR_ARG);
	CHECK(hsm_open(&params, NULL) == HSM_ERR_ARG);
	CHECK(hsm == NULL);
	CHECK(ERR_peek_error() == 0);
}

/* write_odd_pin_files writes PIN files at and beyond the length limit, and
 * one with a NUL inside the right PIN. */
static void
write_odd_pin_files(void)
{
	char pin[HSM_MAX_PIN_LEN + 3];
	char path[256];
	int fd;

	memset(pin, 'a', sizeof(pin));
	pin[HSM_MAX_PIN_LEN] = '\n';
	pin[HSM_MAX_PIN_LEN + 1] = '\0';
	CHECK(write_file("maxlen.pin", pin, 0600));
	pin[HSM_MAX_PIN_LEN] = 'a';
	CHECK(write_file("long.pin", pin, 0600));

	fd = open(path_in(path, sizeof(path), "nul.pin"),
	    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd != -1);
	if (fd == -1)
		return;
	CHECK(write(fd, user_pin, 4) == 4);
	CHECK(write(fd, "", 1) == 1);
	CHECK(write(fd, user_pin + 4, strlen(user_pin) - 4) ==
	    (ssize_t)(strlen(user_pin) - 4));
	CHECK(close(fd) == 0);
}

/* Each hsm_close() must finalize the module, or the next hsm_open() in
 * this process would find SoftHSM2 held by a context that is gone. */
static void
test_reopen(void)
{
	int i;

	for (i = 0; i < N_REOPENS; i++) {
		CHECK(open_with(EC_TOKEN, EC_KEY, EC_KEY_ID, "user.pin") ==
		    HSM_OK);
		CHECK(
		    open_with(RSA_TOKEN, RSA_KEY, NULL, "user.pin") == HSM_OK);
	}
}

struct worker {
	pthread_t thread;
	struct hsm *hsm;
	EVP_PKEY *key;
	int id;
	int n_good;
	bool is_started;
};

static void *
sign_many(void *arg)
{
	struct worker *w = arg;
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	char msg[64];
	size_t sig_len;
	int i, msg_len;

	for (i = 0; i < N_SIGNATURES; i++) {
		msg_len = snprintf(
		    msg, sizeof(msg), "thread %d message %d", w->id, i);
		if (hsm_sign(w->hsm, (const uint8_t *)msg, (size_t)msg_len, sig,
			&sig_len) != HSM_OK)
			continue;
		if (verify(w->key, msg, (size_t)msg_len, sig, sig_len))
			w->n_good++;
	}
	return NULL;
}

static void
test_threads(const char *token, const char *key_label)
{
	struct worker workers[N_THREADS];
	struct hsm_params params;
	struct hsm *hsm = NULL;
	EVP_PKEY *key;
	int i;

	params = params_for(token, key_label, NULL, "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_OK);
	if (hsm == NULL)
		return;
	CHECK((key = decode_public_key(hsm)) != NULL);
	for (i = 0; i < N_THREADS; i++) {
		workers[i] = (struct worker){.hsm = hsm, .key = key, .id = i};
		workers[i].is_started = pthread_create(&workers[i].thread, NULL,
					    sign_many, &workers[i]) == 0;
		CHECK(workers[i].is_started);
	}
	for (i = 0; i < N_THREADS; i++) {
		if (!workers[i].is_started)
			continue;
		CHECK(pthread_join(workers[i].thread, NULL) == 0);
		CHECK(workers[i].n_good == N_SIGNATURES);
	}
	EVP_PKEY_free(key);
	hsm_close(hsm);
}

/* test_token_gone takes the token's files away under an open handle: the
 * signature fails as HSM_ERR_UNAVAILABLE and leaves no OpenSSL error
 * behind for the thread's next request. */
static void
test_token_gone(void)
{
	struct hsm_params params;
	struct hsm *hsm = NULL;
	char tokens[256], moved[256];
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	size_t sig_len;

	params = params_for(EC_TOKEN, EC_KEY, NULL, "user.pin");
	CHECK(hsm_open(&params, &hsm) == HSM_OK);
	if (hsm == NULL)
		return;
	CHECK(hsm_sign(hsm, (const uint8_t *)"a", 1, sig, &sig_len) == HSM_OK);
	CHECK(rename(path_in(tokens, sizeof(tokens), "tokens"),
		  path_in(moved, sizeof(moved), "tokens.gone")) == 0);
	CHECK(hsm_sign(hsm, (const uint8_t *)"a", 1, sig, &sig_len) ==
	    HSM_ERR_UNAVAILABLE);
	CHECK(ERR_peek_error() == 0);
	CHECK(rename(moved, tokens) == 0);
	hsm_close(hsm);
	CHECK(open_with(EC_TOKEN, EC_KEY, NULL, "user.pin") == HSM_OK);
}

/* struct job_set is a batch's jobs and the messages they borrow. */
struct job_set {
	struct hsm_job *jobs;
	char (*msgs)[MAX_MSG_LEN];
	size_t n;
};

static bool
job_set_init(struct job_set *set, size_t n, const char *tag)
{
	size_t i;
	int len;

	set->n = n;
	set->jobs = calloc(n, sizeof(*set->jobs));
	set->msgs = calloc(n, sizeof(*set->msgs));
	if (set->jobs == NULL || set->msgs == NULL)
		return false;
	for (i = 0; i < n; i++) {
		len = snprintf(set->msgs[i], MAX_MSG_LEN, "%s job %zu", tag, i);
		if (len < 0 || len >= MAX_MSG_LEN)
			return false;
		set->jobs[i].msg = (const uint8_t *)set->msgs[i];
		set->jobs[i].msg_len = (size_t)len;
	}
	return true;
}

static void
job_set_release(struct job_set *set)
{
	free(set->jobs);
	free(set->msgs);
	memset(set, 0, sizeof(*set));
}

/* count_verified counts the jobs that succeeded with a signature OpenSSL
 * accepts; *out_unavailable, if not NULL, counts those that failed as the
 * API says they may. */
static size_t
count_verified(
    EVP_PKEY *key, const struct job_set *set, size_t *out_unavailable)
{
	const struct hsm_job *job;
	size_t i, n_good = 0, n_unavailable = 0;

	for (i = 0; i < set->n; i++) {
		job = &set->jobs[i];
		if (job->rc == HSM_ERR_UNAVAILABLE)
			n_unavailable++;
		if (job->rc == HSM_OK && job->sig_len > 0 &&
		    job->sig_len <= HSM_MAX_SIGNATURE_LEN &&
		    verify(key, job->msg, job->msg_len, job->sig, job->sig_len))
			n_good++;
	}
	if (out_unavailable != NULL)
		*out_unavailable = n_unavailable;
	return n_good;
}

/* sign_batch signs n jobs as one batch and counts the good signatures. */
static size_t
sign_batch(struct hsm *hsm, EVP_PKEY *key, size_t n, const char *tag)
{
	struct job_set set;
	struct hsm_batch *batch = NULL;
	size_t n_good = 0;

	CHECK(job_set_init(&set, n, tag));
	if (set.jobs != NULL && set.msgs != NULL) {
		CHECK(hsm_batch_start(hsm, set.jobs, set.n, &batch) == HSM_OK);
		CHECK(hsm_batch_wait(batch) == HSM_OK);
		n_good = count_verified(key, &set, NULL);
	}
	job_set_release(&set);
	return n_good;
}

static struct hsm *
open_pool(const char *token, const char *key_label, unsigned int sessions,
    unsigned int in_flight)
{
	struct hsm_params params;
	struct hsm *hsm = NULL;

	params = params_for(token, key_label, NULL, "user.pin");
	params.sessions = sessions;
	params.in_flight = in_flight;
	CHECK(hsm_open(&params, &hsm) == HSM_OK);
	return hsm;
}

/* test_batch_args feeds hsm_batch_start() what it must refuse, and the
 * edge cases it must take. */
static void
test_batch_args(struct hsm *hsm, EVP_PKEY *key)
{
	struct hsm_batch *batch = NULL;
	struct hsm_job jobs[2];

	memset(jobs, 0, sizeof(jobs));
	jobs[0].msg = (const uint8_t *)"x";
	jobs[0].msg_len = 1;
	jobs[1].msg_len = 1;              /* NULL msg */
	batch = (struct hsm_batch *)jobs; /* must be reset to NULL */
	CHECK(hsm_batch_start(hsm, jobs, 2, &batch) == HSM_ERR_ARG &&
	    batch == NULL);
	CHECK(hsm_batch_start(NULL, jobs, 1, &batch) == HSM_ERR_ARG &&
	    batch == NULL);
	CHECK(hsm_batch_start(hsm, NULL, 1, &batch) == HSM_ERR_ARG &&
	    batch == NULL);
	CHECK(hsm_batch_start(hsm, jobs, 1, NULL) == HSM_ERR_ARG);
	CHECK(hsm_batch_wait(NULL) == HSM_ERR_ARG);
	/* Refused before a byte of msg is read. */
	jobs[1].msg = (const uint8_t *)"x";
	jobs[1].msg_len = HSM_MAX_MESSAGE_LEN + 1;
	CHECK(hsm_batch_start(hsm, jobs, 2, &batch) == HSM_ERR_ARG &&
	    batch == NULL);

	CHECK(hsm_batch_start(hsm, NULL, 0, &batch) == HSM_OK);
	CHECK(batch != NULL && hsm_batch_wait(batch) == HSM_OK);
	/* An empty message is a message. */
	jobs[1].msg_len = 0;
	CHECK(hsm_batch_start(hsm, jobs, 2, &batch) == HSM_OK);
	CHECK(hsm_batch_wait(batch) == HSM_OK);
	CHECK(jobs[0].rc == HSM_OK &&
	    verify(key, "x", 1, jobs[0].sig, jobs[0].sig_len));
	CHECK(jobs[1].rc == HSM_OK &&
	    verify(key, "", 0, jobs[1].sig, jobs[1].sig_len));
}

/* test_batch signs through a pool smaller than the workers: one big
 * batch, two queued at once and waited for in reverse order, and
 * hsm_sign() from several threads while a batch runs. */
static void
test_batch(const char *token, const char *key_label)
{
	struct worker workers[N_THREADS];
	struct job_set sets[2];
	struct hsm_batch *batches[2] = {NULL, NULL};
	struct hsm *hsm;
	EVP_PKEY *key = NULL;
	int i;

	if ((hsm = open_pool(token, key_label, 4, 8)) == NULL)
		return;
	CHECK(hsm_get_in_flight(hsm) == 8);
	CHECK((key = decode_public_key(hsm)) != NULL);
	test_batch_args(hsm, key);
	CHECK(sign_batch(hsm, key, N_BATCH_JOBS, "single") == N_BATCH_JOBS);

	CHECK(job_set_init(&sets[0], N_PAIR_JOBS, "first"));
	CHECK(job_set_init(&sets[1], N_PAIR_JOBS, "second"));
	for (i = 0; i < 2; i++)
		CHECK(hsm_batch_start(
			  hsm, sets[i].jobs, sets[i].n, &batches[i]) == HSM_OK);
	for (i = 1; i >= 0; i--) {
		CHECK(hsm_batch_wait(batches[i]) == HSM_OK);
		CHECK(count_verified(key, &sets[i], NULL) == N_PAIR_JOBS);
	}
	job_set_release(&sets[0]);
	job_set_release(&sets[1]);

	/* hsm_sign()'s urgent jobs overtake the batch's. */
	CHECK(job_set_init(&sets[0], N_BATCH_JOBS, "bulk"));
	CHECK(hsm_batch_start(hsm, sets[0].jobs, sets[0].n, &batches[0]) ==
	    HSM_OK);
	for (i = 0; i < N_THREADS; i++) {
		workers[i] = (struct worker){.hsm = hsm, .key = key, .id = i};
		workers[i].is_started = pthread_create(&workers[i].thread, NULL,
					    sign_many, &workers[i]) == 0;
		CHECK(workers[i].is_started);
	}
	for (i = 0; i < N_THREADS; i++) {
		if (!workers[i].is_started)
			continue;
		CHECK(pthread_join(workers[i].thread, NULL) == 0);
		CHECK(workers[i].n_good == N_SIGNATURES);
	}
	CHECK(hsm_batch_wait(batches[0]) == HSM_OK);
	CHECK(count_verified(key, &sets[0], NULL) == N_BATCH_JOBS);
	job_set_release(&sets[0]);
	EVP_PKEY_free(key);
	hsm_close(hsm);
}

/* test_small_pools: one worker on one session, and many workers taking
 * turns on one session. */
static void
test_small_pools(void)
{
	static const unsigned int sizes[][2] = {{1, 1}, {1, 8}, {3, 1}};
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	size_t i, sig_len = 0;
	struct hsm *hsm;
	EVP_PKEY *key;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		hsm = open_pool(EC_TOKEN, EC_KEY, sizes[i][0], sizes[i][1]);
		if (hsm == NULL)
			continue;
		CHECK(hsm_get_in_flight(hsm) == sizes[i][1]);
		CHECK((key = decode_public_key(hsm)) != NULL);
		CHECK(sign_batch(hsm, key, 50, "small") == 50);
		CHECK(hsm_sign(hsm, (const uint8_t *)"a", 1, sig, &sig_len) ==
		    HSM_OK);
		CHECK(verify(key, "a", 1, sig, sig_len));
		EVP_PKEY_free(key);
		hsm_close(hsm);
	}
}

/* test_pool_limits: sizes over our caps, and a pool the token cannot
 * hold. */
static void
test_pool_limits(void)
{
	struct ck_token_info info;
	struct hsm_params params;
	struct hsm *hsm = NULL;
	unsigned long max_sessions = 0;
	struct p11 p;

	params = params_for(EC_TOKEN, EC_KEY, NULL, "user.pin");
	params.sessions = HSM_MAX_SESSIONS + 1;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG && hsm == NULL);
	params.sessions = 0;
	params.in_flight = HSM_MAX_IN_FLIGHT + 1;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG && hsm == NULL);
	params.in_flight = 0;
	params.processes = HSM_MAX_PROCESSES + 1;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG && hsm == NULL);
	params.processes = 0;

	CHECK(p11_open(&p, EC_TOKEN));
	if (p.dl == NULL)
		return;
	CHECK(p.get_token_info(p.slot, &info) == CKR_OK);
	max_sessions = info.counts[0]; /* ulMaxSessionCount */
	p11_close(&p);
	/* SoftHSM2 says CK_EFFECTIVELY_INFINITE (0); a module that states
	 * no limit, or none at all (~0), cannot be tested here. */
	if (max_sessions == 0 || max_sessions == ~0UL)
		return;
	/* max_sessions of our own would make one too many with libp11's. */
	params.in_flight = 0;
	params.sessions = (unsigned int)max_sessions;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_ARG && hsm == NULL);
}

/* test_token_gone_mid_batch takes the token's files away while a long
 * batch runs: the jobs left fail as HSM_ERR_UNAVAILABLE, those done before
 * verify, and nothing hangs. Once the files are back, SoftHSM2 knows the
 * key by a new handle: finding it again is for the recovery still to
 * come, so signing then may fail, but only as HSM_ERR_UNAVAILABLE. */
static void
test_token_gone_mid_batch(void)
{
	struct job_set first, second;
	struct hsm_batch *batches[2] = {NULL, NULL};
	struct hsm *hsm;
	EVP_PKEY *key = NULL;
	char tokens[256], moved[256];
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	size_t sig_len = 0, n_good, n_unavailable = 0;
	bool is_moved;
	int rc;

	if ((hsm = open_pool(EC_TOKEN, EC_KEY, 4, 8)) == NULL)
		return;
	CHECK((key = decode_public_key(hsm)) != NULL);
	CHECK(job_set_init(&first, 100, "before"));
	CHECK(job_set_init(&second, N_LONG_JOBS, "during"));
	CHECK(hsm_batch_start(hsm, first.jobs, first.n, &batches[0]) == HSM_OK);
	CHECK(
	    hsm_batch_start(hsm, second.jobs, second.n, &batches[1]) == HSM_OK);
	/* The second batch has just begun when the first is done. */
	CHECK(hsm_batch_wait(batches[0]) == HSM_OK);
	is_moved = rename(path_in(tokens, sizeof(tokens), "tokens"),
		       path_in(moved, sizeof(moved), "tokens.gone")) == 0;
	CHECK(is_moved);
	CHECK(hsm_batch_wait(batches[1]) == HSM_ERR_UNAVAILABLE);
	n_good = count_verified(key, &second, &n_unavailable);
	CHECK(n_unavailable > 0);
	CHECK(n_good + n_unavailable == N_LONG_JOBS);
	CHECK(hsm_sign(hsm, (const uint8_t *)"a", 1, sig, &sig_len) ==
	    HSM_ERR_UNAVAILABLE);
	CHECK(ERR_peek_error() == 0);

	if (is_moved)
		CHECK(rename(moved, tokens) == 0);
	rc = hsm_sign(hsm, (const uint8_t *)"b", 1, sig, &sig_len);
	CHECK(rc == HSM_ERR_UNAVAILABLE ||
	    (rc == HSM_OK && verify(key, "b", 1, sig, sig_len)));
	job_set_release(&first);
	job_set_release(&second);
	EVP_PKEY_free(key);
	hsm_close(hsm);
}

/* list_children counts this process's children, zombies included, from
 * /proc, and stores up to max of their pids in pids. */
static size_t
list_children(pid_t *pids, size_t max)
{
	DIR *proc;
	struct dirent *entry;
	char path[300], stat[512], *end, state;
	size_t n = 0;
	ssize_t len;
	long ppid;
	int fd;

	if ((proc = opendir("/proc")) == NULL)
		return 0;
	while ((entry = readdir(proc)) != NULL) {
		if (entry->d_name[0] < '1' || entry->d_name[0] > '9')
			continue;
		(void)snprintf(
		    path, sizeof(path), "/proc/%s/stat", entry->d_name);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
			continue;
		len = read(fd, stat, sizeof(stat) - 1);
		(void)close(fd);
		if (len <= 0)
			continue;
		stat[len] = '\0';
		/* pid (comm) state ppid ...: comm may hold anything. */
		if ((end = strrchr(stat, ')')) == NULL ||
		    sscanf(end + 1, " %c %ld", &state, &ppid) != 2 ||
		    ppid != (long)getpid())
			continue;
		if (n < max)
			pids[n] = (pid_t)atol(entry->d_name);
		n++;
	}
	(void)closedir(proc);
	return n;
}

/* has_no_children: every helper was reaped, none is left running. */
static bool
has_no_children(void)
{
	pid_t pids[1];

	return list_children(pids, 1) == 0 &&
	    waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD;
}

static struct hsm *
open_processes(const char *token, const char *key_label, unsigned int processes,
    unsigned int in_flight)
{
	struct hsm_params params;
	struct hsm *hsm = NULL;

	params = params_for(token, key_label, NULL, "user.pin");
	params.in_flight = in_flight;
	params.processes = processes;
	CHECK(hsm_open(&params, &hsm) == HSM_OK);
	return hsm;
}

/* sign_big_batch signs n messages of len bytes, the last of them
 * HSM_MAX_MESSAGE_LEN bytes, as one batch, and counts the good
 * signatures. */
static size_t
sign_big_batch(struct hsm *hsm, EVP_PKEY *key, size_t n, size_t len)
{
	struct hsm_batch *batch = NULL;
	struct hsm_job *jobs;
	uint8_t *msgs;
	size_t i, n_good = 0;

	jobs = calloc(n, sizeof(*jobs));
	msgs = malloc((n - 1) * len + HSM_MAX_MESSAGE_LEN);
	CHECK(jobs != NULL && msgs != NULL);
	if (jobs == NULL || msgs == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		jobs[i].msg = msgs + i * len;
		jobs[i].msg_len = i + 1 < n ? len : HSM_MAX_MESSAGE_LEN;
		memset(msgs + i * len, (int)(i & 0xff), jobs[i].msg_len);
	}
	CHECK(hsm_batch_start(hsm, jobs, n, &batch) == HSM_OK);
	CHECK(hsm_batch_wait(batch) == HSM_OK);
	for (i = 0; i < n; i++)
		if (jobs[i].rc == HSM_OK &&
		    verify(key, jobs[i].msg, jobs[i].msg_len, jobs[i].sig,
			jobs[i].sig_len))
			n_good++;
out:
	free(jobs);
	free(msgs);
	return n_good;
}

/* test_processes signs batches over this process and two helpers. */
static void
test_processes(void)
{
	pid_t pids[4];
	struct hsm *hsm;
	EVP_PKEY *key = NULL;

	CHECK(has_no_children());
	if ((hsm = open_processes(EC_TOKEN, EC_KEY, 3, 4)) == NULL)
		return;
	CHECK(list_children(pids, 4) == 2);
	CHECK(hsm_get_processes(hsm) == 3);
	CHECK(hsm_get_in_flight(hsm) == 3 * 4);
	CHECK((key = decode_public_key(hsm)) != NULL);
	test_batch_args(hsm, key);
	CHECK(sign_batch(hsm, key, N_HELPER_JOBS, "helpers") == N_HELPER_JOBS);
	/* Larger than a helper's first buffer, sent and read in parts. */
	CHECK(sign_big_batch(hsm, key, 48, 300 * 1000) == 48);
	CHECK(hsm_get_processes(hsm) == 3);
	EVP_PKEY_free(key);
	hsm_close(hsm);
	CHECK(has_no_children());

	/* processes 1 is this process alone. */
	if ((hsm = open_processes(EC_TOKEN, EC_KEY, 1, 2)) == NULL)
		return;
	CHECK(hsm_get_processes(hsm) == 1 && hsm_get_in_flight(hsm) == 2);
	CHECK(list_children(pids, 4) == 0);
	hsm_close(hsm);
}

/* test_processes_busy keeps two batches in flight over this process and
 * one helper while threads call hsm_sign(), with each key type. */
static void
test_processes_busy(const char *token, const char *key_label, size_t n_jobs)
{
	struct worker workers[N_THREADS];
	struct job_set sets[2];
	struct hsm_batch *batches[2] = {NULL, NULL};
	struct hsm *hsm;
	EVP_PKEY *key = NULL;
	int i;

	if ((hsm = open_processes(token, key_label, 2, 4)) == NULL)
		return;
	CHECK(hsm_get_processes(hsm) == 2);
	CHECK((key = decode_public_key(hsm)) != NULL);
	CHECK(job_set_init(&sets[0], n_jobs, "first"));
	CHECK(job_set_init(&sets[1], n_jobs, "second"));
	for (i = 0; i < 2; i++)
		CHECK(hsm_batch_start(
			  hsm, sets[i].jobs, sets[i].n, &batches[i]) == HSM_OK);
	for (i = 0; i < N_THREADS; i++) {
		workers[i] = (struct worker){.hsm = hsm, .key = key, .id = i};
		workers[i].is_started = pthread_create(&workers[i].thread, NULL,
					    sign_many, &workers[i]) == 0;
		CHECK(workers[i].is_started);
	}
	for (i = 0; i < N_THREADS; i++) {
		if (!workers[i].is_started)
			continue;
		CHECK(pthread_join(workers[i].thread, NULL) == 0);
		CHECK(workers[i].n_good == N_SIGNATURES);
	}
	for (i = 1; i >= 0; i--) {
		CHECK(hsm_batch_wait(batches[i]) == HSM_OK);
		CHECK(count_verified(key, &sets[i], NULL) == n_jobs);
	}
	job_set_release(&sets[0]);
	job_set_release(&sets[1]);
	EVP_PKEY_free(key);
	hsm_close(hsm);
	CHECK(has_no_children());
}

/* test_helper_killed kills a helper while a long batch runs: the jobs it
 * had fail as HSM_ERR_UNAVAILABLE, the others verify, nothing hangs, and
 * the signers left take every later job. The helper is stopped first, so
 * that it has jobs it cannot have answered when it dies. */
static void
test_helper_killed(void)
{
	struct timespec pause = {0, 200 * 1000 * 1000};
	struct job_set set;
	struct hsm_batch *batch = NULL;
	struct hsm *hsm;
	EVP_PKEY *key = NULL;
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	size_t sig_len = 0, n_good, n_unavailable = 0;
	pid_t pids[4];

	if ((hsm = open_processes(EC_TOKEN, EC_KEY, 3, 4)) == NULL)
		return;
	CHECK((key = decode_public_key(hsm)) != NULL);
	CHECK(list_children(pids, 4) == 2);
	CHECK(job_set_init(&set, N_LONG_JOBS, "killed"));
	CHECK(hsm_batch_start(hsm, set.jobs, set.n, &batch) == HSM_OK);
	(void)nanosleep(&pause, NULL);
	CHECK(kill(pids[0], SIGSTOP) == 0);
	(void)nanosleep(&pause, NULL);
	CHECK(kill(pids[0], SIGKILL) == 0);
	CHECK(hsm_batch_wait(batch) == HSM_ERR_UNAVAILABLE);
	n_good = count_verified(key, &set, &n_unavailable);
	CHECK(n_unavailable > 0);
	/* Its window, no more: hsm.c gives a helper at least 32 jobs. */
	CHECK(n_unavailable <= 64);
	CHECK(n_good + n_unavailable == N_LONG_JOBS);
	job_set_release(&set);

	CHECK(hsm_get_processes(hsm) == 2);
	CHECK(sign_batch(hsm, key, N_BATCH_JOBS, "after") == N_BATCH_JOBS);
	CHECK(hsm_sign(hsm, (const uint8_t *)"a", 1, sig, &sig_len) == HSM_OK);
	CHECK(verify(key, "a", 1, sig, sig_len));
	CHECK(hsm_get_processes(hsm) == 2);
	EVP_PKEY_free(key);
	hsm_close(hsm);
	CHECK(has_no_children());
}

/* test_helper_open_errors: helpers that cannot open the token make
 * hsm_open() fail with their error, and none of them is left behind. */
static void
test_helper_open_errors(void)
{
	struct hsm_params params;
	struct hsm *hsm = NULL;

	params = params_for(EC_TOKEN, EC_KEY, NULL, "wrong.pin");
	params.processes = 3;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_LOGIN && hsm == NULL);
	CHECK(has_no_children());
	params = params_for(EC_TOKEN, EC_KEY, NULL, "missing.pin");
	params.processes = 2;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_PIN_FILE && hsm == NULL);
	CHECK(has_no_children());
	params = params_for(EC_TOKEN, "no-such-key", NULL, "user.pin");
	params.processes = 2;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_KEY && hsm == NULL);
	CHECK(has_no_children());
	params = params_for("no-such-token", EC_KEY, NULL, "user.pin");
	params.processes = HSM_MAX_PROCESSES;
	CHECK(hsm_open(&params, &hsm) == HSM_ERR_TOKEN && hsm == NULL);
	CHECK(has_no_children());
	CHECK(ERR_peek_error() == 0);
}

static void
test_strerror(void)
{
	int err;

	for (err = HSM_ERR_EXISTS; err <= HSM_OK; err++)
		CHECK(hsm_strerror(err) != NULL &&
		    strcmp(hsm_strerror(err), "unknown error") != 0);
	CHECK(strcmp(hsm_strerror(1), "unknown error") == 0);
	CHECK(strcmp(hsm_strerror(-1000), "unknown error") == 0);
}

int
main(void)
{
	CHECK(setup());
	write_odd_pin_files();
	test_provision();
	add_foreign_keys();
	check_signing(EC_TOKEN, EC_KEY, NULL, HSM_SIG_ECDSA_SHA256, 72);
	check_signing(EC_TOKEN, NULL, EC_KEY_ID, HSM_SIG_ECDSA_SHA256, 72);
	check_signing(EC_TOKEN, "ocsp-ec-key2", "05", HSM_SIG_ECDSA_SHA256, 72);
	check_signing(
	    RSA_TOKEN, RSA_KEY, RSA_KEY_ID, HSM_SIG_RSA_PKCS1_SHA256, 256);
	test_open_errors();
	test_reopen();
	test_threads(EC_TOKEN, EC_KEY);
	test_threads(RSA_TOKEN, RSA_KEY);
	test_batch(EC_TOKEN, EC_KEY);
	test_batch(RSA_TOKEN, RSA_KEY);
	test_small_pools();
	test_pool_limits();
	test_token_gone();
	test_token_gone_mid_batch();
	test_processes();
	test_processes_busy(EC_TOKEN, EC_KEY, N_PAIR_JOBS * 4);
	test_processes_busy(RSA_TOKEN, RSA_KEY, N_PAIR_JOBS);
	test_helper_killed();
	test_helper_open_errors();
	test_strerror();
	hsm_close(NULL);
	cleanup();
	return test_summary();
}
