/* conf.h - the responder's configuration: one `key value` file, read once
 * into one immutable struct conf that every module borrows. */
#ifndef CONF_CONF_H
#define CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

#define CONF_MAX_ISSUERS    16
#define CONF_MAX_CERT_IDS   64  /* the most max_cert_ids may be set to */
#define CONF_MAX_NONCE_LEN  128 /* RFC 9654 allows a responder up to this */
#define CONF_MIN_VALIDITY_S (8 * 3600)       /* CA/B Forum BR 4.9.10 */
#define CONF_MAX_VALIDITY_S (10 * 24 * 3600) /* CA/B Forum BR 4.9.10 */
#define CONF_MAX_LINE       4096 /* bytes on one line, without its newline */

enum conf_err {
	CONF_OK = 0,
	CONF_ERR_IO = -1,        /* the file could not be read */
	CONF_ERR_SYNTAX = -2,    /* a line is not `key value` */
	CONF_ERR_UNKNOWN = -3,   /* a key this version does not know */
	CONF_ERR_VALUE = -4,     /* a value out of range or of the wrong form */
	CONF_ERR_DUPLICATE = -5, /* a key given more often than it may be */
	CONF_ERR_MISSING = -6,   /* a required key is absent */
	CONF_ERR_NOMEM = -7,
};

/* struct conf holds every setting; strings are owned by the struct and
 * live until conf_free(). A relative path in the file is joined to the
 * file's directory: `index index` in demo/responder.conf gives "demo/index";
 * absolute paths are kept as written. */
struct conf {
	char *listen_host;       /* listen: address, no brackets; 127.0.0.1 */
	uint16_t listen_port;    /* listen: port part, default 8080 */
	char *index_path;        /* index: LMDB directory (required) */
	uint64_t index_map_size; /* index_map_size: bytes, default 4 GiB */
	char *pkcs11_module;     /* pkcs11_module: path of the module */
	char *token_label;       /* token_label (required) */
	char *key_label;         /* key_label: CKA_LABEL of the signing key */
	char *key_id;         /* key_id: CKA_ID in hex; key_label or key_id */
	char *pin_file;       /* pin_file: path of the user PIN (required) */
	char *responder_cert; /* responder_cert: PEM of the signing cert */
	char *issuer_certs[CONF_MAX_ISSUERS]; /* issuer_cert: repeatable */
	size_t n_issuer_certs;
	uint32_t validity_s;         /* validity: 8h..10d, default 1d */
	bool include_responder_cert; /* include_responder_cert: default yes */
	size_t max_cert_ids;         /* max_cert_ids: default 8 */
	size_t max_nonce_len;        /* max_nonce_len: 1..128, default 32 */
	size_t max_request_bytes;    /* max_request_bytes: default 10240 */
	unsigned threads;    /* threads: HTTP worker threads, default 4 */
	bool log_requests;   /* log_requests: access log, default yes */
	bool presign;        /* presign: background pre-signing, default yes */
	bool presign_sha256; /* presign_sha256: also SHA-256 CertIDs, no */
	unsigned refresh_percent;        /* refresh_percent: of validity, 50 */
	unsigned refresh_jitter_percent; /* refresh_jitter_percent: 10 */
	size_t sign_batch;      /* sign_batch: signatures per batch, 256 */
	unsigned hsm_sessions;  /* hsm_sessions: PKCS#11 session pool, 4 */
	unsigned hsm_in_flight; /* hsm_in_flight: signatures in flight, 4 */
	unsigned hsm_processes; /* hsm_processes: signer processes, 1 */
};

/* struct conf_error says where a file failed: line is 0 when the failure is
 * not tied to one line (I/O, a missing key). */
struct conf_error {
	unsigned line;
	char key[64];
	char message[192];
};

/* conf_load reads path, which must be a regular file, into a new struct
 * conf. On success *out owns it; release it with conf_free(). On failure
 * *out is NULL, err (if not NULL) says which line and key and why, and the
 * return value is one of enum conf_err. Values are checked for form and
 * range only; whether files exist is the caller's concern. Never prints
 * anything. */
int conf_load(
    const char *path, struct conf **out, struct conf_error *err) MUST_CHECK;

/* conf_free releases c and every string it holds. Accepts NULL. */
void conf_free(struct conf *c);

/* conf_strerror names an enum conf_err value in a few words. */
const char *conf_strerror(int err);

#endif
