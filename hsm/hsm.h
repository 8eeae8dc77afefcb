/* hsm.h - the signing service: bytes in, signature out, with a key that
 * never leaves the PKCS#11 token. No PKCS#11 or libp11 type crosses this
 * header, so the signer could move behind a socket. */
#ifndef HSM_HSM_H
#define HSM_HSM_H

#include <stddef.h>
#include <stdint.h>

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

#define HSM_MAX_SIGNATURE_LEN 512 /* RSA-4096 */
#define HSM_MAX_PIN_LEN       255
#define HSM_DEFAULT_SESSIONS  4
#define HSM_DEFAULT_IN_FLIGHT 4
#define HSM_MAX_SESSIONS      1024
#define HSM_MAX_IN_FLIGHT     1024
#define HSM_MAX_PROCESSES     64
#define HSM_MAX_MESSAGE_LEN   1048576 /* bytes of a message to sign: 1 MiB */

enum hsm_err {
	HSM_OK = 0,
	HSM_ERR_MODULE = -1,      /* the PKCS#11 module failed to load */
	HSM_ERR_TOKEN = -2,       /* no token with that label, or several */
	HSM_ERR_PIN_FILE = -3,    /* the PIN file is unreadable or empty */
	HSM_ERR_LOGIN = -4,       /* the token refused the PIN */
	HSM_ERR_KEY = -5,         /* no such private key, or several */
	HSM_ERR_KEY_TYPE = -6,    /* a key type we cannot sign OCSP with */
	HSM_ERR_UNAVAILABLE = -7, /* the token failed or is gone: try later */
	HSM_ERR_ARG = -8,         /* a bad parameter (buffer too small...) */
	HSM_ERR_NOMEM = -9,
	HSM_ERR_EXISTS = -10, /* provisioning: the token or key exists */
};

/* enum hsm_sig_alg is the signature hsm_sign() makes; the caller writes
 * the matching AlgorithmIdentifier. */
enum hsm_sig_alg {
	HSM_SIG_ECDSA_SHA256,     /* ecdsa-with-SHA256, DER Ecdsa-Sig-Value */
	HSM_SIG_RSA_PKCS1_SHA256, /* sha256WithRSAEncryption */
};

enum hsm_key_type {
	HSM_KEY_EC_P256,
	HSM_KEY_RSA_2048,
};

/* struct hsm_params locates the key; the strings are borrowed for the call.
 * key_label or key_id (hex CKA_ID) names the key; if both, both must match.
 * pin_file is a regular file holding the PIN, one trailing newline allowed;
 * a file others may read is refused, but its group may read it (so
 * root:ocsp 0640 works). hsm_provision() reads its PIN files the same way.
 *
 * Signatures are made by in_flight worker threads, each on a session it
 * takes from a pool of sessions, so the token has min(in_flight, sessions)
 * signatures to make at once. Size in_flight by the token's latency, not
 * by the cores: a network HSM that answers in 5 ms needs 50 in flight to
 * make 10,000 signatures a second. 0 means the default for either; more
 * than HSM_MAX_SESSIONS or HSM_MAX_IN_FLIGHT is HSM_ERR_ARG, as is a pool
 * the token cannot hold: libp11 keeps one session of its own, so sessions
 * + 1 must not exceed the token's CK_TOKEN_INFO.ulMaxSessionCount, when it
 * states one.
 *
 * processes is how many processes sign. 0 or 1: this one alone. N > 1:
 * this one and N - 1 helper processes, each opening the token as this one
 * does (its own module, login, pool of sessions and in_flight workers) and
 * reading pin_file itself, so the PIN never travels. It is for a module
 * that signs one signature at a time per process, as SoftHSM2 does; a
 * network HSM wants more in_flight instead. Batches are spread over all N;
 * hsm_sign() stays in this process, for latency. hsm_open() forks the
 * helpers before it loads the module, so call it before the process starts
 * threads of its own, from a thread that lives as long as the handle (a
 * helper gets SIGTERM when the thread that forked it ends). A helper talks
 * to this process over a socket and exits when the handle is closed or
 * this process ends. More than HSM_MAX_PROCESSES is HSM_ERR_ARG.
 */
struct hsm_params {
	const char *module_path;
	const char *token_label;
	const char *key_label;
	const char *key_id;
	const char *pin_file;
	unsigned int sessions;  /* 0: HSM_DEFAULT_SESSIONS */
	unsigned int in_flight; /* 0: HSM_DEFAULT_IN_FLIGHT */
	unsigned int processes; /* 0 or 1: sign in this process only */
};

/* struct hsm_job is one signature to make: msg (at most
 * HSM_MAX_MESSAGE_LEN bytes) is borrowed until the job completes. hsm/
 * writes sig, sig_len and rc. */
struct hsm_job {
	const uint8_t *msg;
	size_t msg_len;
	uint8_t sig[HSM_MAX_SIGNATURE_LEN];
	size_t sig_len;
	int rc; /* HSM_OK or HSM_ERR_UNAVAILABLE once done */
};

struct hsm_batch;

struct hsm;

/* hsm_open loads the module, finds the token and the private key, and logs
 * in with the PIN read from pin_file; our copies of the PIN are wiped
 * before hsm_open returns, and libp11's (kept to log in again after a
 * fork) by hsm_close(). It opens the pool of sessions and starts the
 * worker threads, which block every signal. It signs and verifies a
 * probe, so a public key object that does not match the private key fails
 * here (HSM_ERR_KEY). With params->processes > 1 it first starts the
 * helpers, one after another, and fails with a helper's error if one
 * cannot open the token, HSM_ERR_KEY if one finds another public key, or
 * HSM_ERR_NOMEM if it cannot start one (no process or descriptor left);
 * every helper is then reaped before it returns. On success *out owns the
 * handle; release it with hsm_close(). Open it after any fork(), in the
 * process that signs. Keep at most one handle per module open in a
 * process: closing one finalizes the module for all.
 * Returns HSM_OK or a negative enum hsm_err naming what failed. */
int hsm_open(const struct hsm_params *params, struct hsm **out) MUST_CHECK;

/* hsm_close stops the worker threads, closes the sessions, logs out and
 * releases everything; it closes the helpers' sockets and waits for them
 * to exit. Accepts NULL. Call it once every hsm_batch_wait() and
 * hsm_sign() has returned: no batch may be left un-waited. Should a job
 * still be queued, it fails with HSM_ERR_UNAVAILABLE; signatures under way
 * are finished first. */
void hsm_close(struct hsm *hsm);

/* hsm_sig_alg returns the algorithm hsm_sign() uses with this key. */
enum hsm_sig_alg hsm_get_sig_alg(const struct hsm *hsm);

/* hsm_get_in_flight returns how many signatures hsm keeps in flight: its
 * worker threads, times the processes that sign. A batch of a few times
 * as many jobs keeps them busy. */
unsigned int hsm_get_in_flight(const struct hsm *hsm);

/* hsm_get_processes returns how many processes sign for hsm: 1, plus the
 * helpers still in service. A helper that dies fails the jobs it had with
 * HSM_ERR_UNAVAILABLE and is not used again, so a value below
 * params->processes means one was lost. Thread-safe. */
unsigned int hsm_get_processes(const struct hsm *hsm);

/* hsm_get0_public_key points *out at the key's SubjectPublicKeyInfo DER,
 * borrowed until hsm_close(), and sets *out_len. */
void hsm_get0_public_key(
    const struct hsm *hsm, const uint8_t **out, size_t *out_len);

/* hsm_sign hashes msg (msg_len bytes) with SHA-256 and signs the digest
 * with the token's key. sig must hold HSM_MAX_SIGNATURE_LEN bytes;
 * *sig_len receives the signature's length. Thread-safe: any number of
 * threads may call it at once. It queues one urgent job, which this
 * process's workers take before any batch's next job, and waits for it.
 * Returns HSM_OK, HSM_ERR_UNAVAILABLE (the token failed: answer tryLater)
 * or HSM_ERR_ARG (msg_len over HSM_MAX_MESSAGE_LEN, or a NULL pointer).
 */
int hsm_sign(struct hsm *hsm, const uint8_t *msg, size_t msg_len, uint8_t *sig,
    size_t *sig_len) MUST_CHECK;

/* hsm_batch_start queues jobs[0..n) as bulk work and returns at once; the
 * caller may start further batches (keep two queued so the workers never
 * idle) and must wait for each with hsm_batch_wait(). The jobs are the
 * caller's, but only hsm/ touches them until that wait returns. On
 * success *out is the batch; otherwise it is NULL and nothing was queued.
 * Thread-safe. Returns HSM_OK, HSM_ERR_ARG (a NULL pointer, a job whose
 * msg is NULL with msg_len > 0 or longer than HSM_MAX_MESSAGE_LEN),
 * HSM_ERR_NOMEM or HSM_ERR_UNAVAILABLE (hsm_close() has begun). */
int hsm_batch_start(struct hsm *hsm, struct hsm_job *jobs, size_t n,
    struct hsm_batch **out) MUST_CHECK;

/* hsm_batch_wait blocks until every job of batch is done, frees the batch,
 * and returns HSM_OK if every job succeeded, else HSM_ERR_UNAVAILABLE
 * (each job's rc tells which). Batches may be waited for in any order,
 * each once, from any thread. Returns HSM_ERR_ARG for NULL. */
int hsm_batch_wait(struct hsm_batch *batch);

/* hsm_provision initialises a token for the responder: in the first free
 * slot of the module it creates a token labelled token_label whose SO PIN
 * and user PIN are read from so_pin_file and pin_file, then generates a key
 * pair of type inside it, labelled key_label with CKA_ID key_id (hex): the
 * private key is sensitive, never extractable, and signs only. If a token
 * with that label exists already it is reused (logging in with pin_file);
 * if it holds an object with that label or CKA_ID, HSM_ERR_EXISTS and
 * nothing changes. PINs never appear in any argument list or message. */
int hsm_provision(const char *module_path, const char *token_label,
    const char *so_pin_file, const char *pin_file, const char *key_label,
    const char *key_id, enum hsm_key_type type) MUST_CHECK;

/* hsm_strerror describes err, an enum hsm_err, in a few words. */
const char *hsm_strerror(int err);

#endif
