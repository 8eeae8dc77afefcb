/* db.h - the certificate status index (LMDB): one writer, many lock-free
 * readers, in one process or several. One struct db serves all threads. */
#ifndef DB_DB_H
#define DB_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

#define DB_ISSUER_ID_LEN 20 /* SHA-1 of the issuer's subjectPublicKey */
#define DB_SERIAL_MAX    20 /* RFC 5280 4.1.2.2 */
#define DB_FORMAT        1  /* the record layout this code reads and writes */

enum db_err {
	DB_OK = 0,
	DB_ERR_NOT_FOUND = -1, /* the index has no such certificate */
	DB_ERR_CORRUPT = -2,   /* a record failed to decode */
	DB_ERR_IO = -3,        /* LMDB failed; see db_strerror() */
	DB_ERR_VERSION = -4,   /* the index was written in another format */
	DB_ERR_FULL = -5,      /* the map is full: raise index_map_size */
	DB_ERR_READONLY = -6,  /* a write on an index opened read-only */
	DB_ERR_ARG = -7,       /* a malformed key or record argument */
	DB_ERR_NOMEM = -8,
	DB_ERR_NO_INDEX = -9, /* no index exists at the path */
};

enum db_mode {
	DB_MODE_READ,   /* open an existing index; writes fail */
	DB_MODE_WRITE,  /* open an existing index for reading and writing */
	DB_MODE_CREATE, /* as DB_MODE_WRITE, creating an empty index if none */
};

enum db_cert_state {
	DB_CERT_GOOD = 0,
	DB_CERT_REVOKED = 1,
};

/* struct db_key names one certificate: its issuer and its serial number as
 * the magnitude bytes of the INTEGER (big-endian, no leading zero byte). */
struct db_key {
	uint8_t issuer_id[DB_ISSUER_ID_LEN];
	uint8_t serial[DB_SERIAL_MAX];
	size_t serial_len; /* 1..DB_SERIAL_MAX */
};

/* struct db_cert is what the index knows of one certificate. Times are
 * seconds since the epoch (UTC). */
struct db_cert {
	enum db_cert_state state;
	int64_t revoked_at;    /* when state is DB_CERT_REVOKED */
	int revocation_reason; /* RFC 5280 CRLReason 0..10, or -1 for none */
	int64_t not_after;     /* the certificate's notAfter, 0 if not known */
};

struct db;
struct db_txn;

/* db_open opens the index directory at path, creating the directory and
 * an empty index with DB_MODE_CREATE. map_size is the most the index may
 * grow to, in bytes (0: the default, 4 GiB). On success *out owns the
 * handle; release it with db_close(). Call it after any fork(), in the
 * process that uses it, and never twice at once for one path in one
 * process (LMDB's locks are per process). Returns DB_OK, DB_ERR_NO_INDEX,
 * DB_ERR_VERSION, DB_ERR_CORRUPT, DB_ERR_IO, DB_ERR_NOMEM or DB_ERR_ARG
 * (a bad mode or map_size). As no handle survives a failure, errno then
 * keeps the errno or LMDB code behind DB_ERR_IO; see db_errno_str(). */
int db_open(const char *path, enum db_mode mode, uint64_t map_size,
    struct db **out) MUST_CHECK;

/* db_close releases db. Every transaction must have ended. Accepts NULL. */
void db_close(struct db *db);

/* db_lookup copies the record for key into *out; nothing in *out points
 * into the database. Thread-safe, lock-free. Returns DB_OK,
 * DB_ERR_NOT_FOUND, DB_ERR_CORRUPT, DB_ERR_ARG or DB_ERR_IO. */
int db_lookup(
    struct db *db, const struct db_key *key, struct db_cert *out) MUST_CHECK;

/* db_generation reads the index's generation number, which every committed
 * write transaction advances by one, into *out. A new index starts at 0.
 * Thread-safe. Returns DB_OK, DB_ERR_CORRUPT or DB_ERR_IO. */
int db_generation(struct db *db, uint64_t *out) MUST_CHECK;

/* db_txn_begin starts the write transaction; only one runs at a time across
 * every process (a second waits). On success *out owns it until
 * db_txn_commit() or db_txn_abort(); the thread that began it must end it,
 * and may not call db_lookup() or db_generation() meanwhile (LMDB allows a
 * thread one transaction at a time). Returns DB_OK, DB_ERR_READONLY,
 * DB_ERR_NOMEM or DB_ERR_IO. */
int db_txn_begin(struct db *db, struct db_txn **out) MUST_CHECK;

/* db_txn_get reads key inside txn, seeing txn's own writes. Returns as
 * db_lookup(). */
int db_txn_get(struct db_txn *txn, const struct db_key *key,
    struct db_cert *out) MUST_CHECK;

/* db_txn_put stores cert under key, replacing any record. A good cert has
 * revoked_at 0 and revocation_reason -1; a revoked one has a reason of
 * 0..10 other than 7 (unused in RFC 5280), or -1. Returns DB_OK,
 * DB_ERR_ARG (txn is unchanged and still usable), DB_ERR_FULL or
 * DB_ERR_IO; after DB_ERR_FULL or DB_ERR_IO, abort txn. */
int db_txn_put(struct db_txn *txn, const struct db_key *key,
    const struct db_cert *cert) MUST_CHECK;

/* db_txn_commit makes every write of txn durable and visible at once, and
 * advances the generation. txn is freed whatever the result. Returns
 * DB_OK, DB_ERR_FULL, DB_ERR_CORRUPT (the stored generation is damaged) or
 * DB_ERR_IO; after an error nothing of txn was written. */
int db_txn_commit(struct db_txn *txn) MUST_CHECK;

/* db_txn_abort discards txn's writes and frees it. Accepts NULL. */
void db_txn_abort(struct db_txn *txn);

/* db_errno returns the errno or LMDB code of db's last DB_ERR_IO, for
 * messages; 0 if none. Not meaningful across threads. */
int db_errno(const struct db *db);

/* db_strerror describes err, an enum db_err, in a few words. The string is
 * static. */
const char *db_strerror(int err);

/* db_errno_str describes code, a value from db_errno() or from errno after
 * db_open() failed: an LMDB code or an errno value. The string is static;
 * callers need not include <lmdb.h>. */
const char *db_errno_str(int code);

/* Pre-signed responses. Each certificate may hold one signed OCSP response
 * per CertID hash, stored with the status it was signed for, so that a
 * response never outlives a change of that status unnoticed, and indexed
 * by the time it is due for refresh. */

#define DB_MAX_RESPONSE_LEN 8192
#define DB_ETAG_LEN         32 /* SHA-256 of the response DER */

enum db_hash {
	DB_HASH_SHA1 = 0,
	DB_HASH_SHA256 = 1,
};

/* struct db_response is one pre-signed response and what serving it
 * needs: no part of it is parsed on the request path. */
struct db_response {
	struct db_cert signed_for; /* the status the response states */
	int64_t this_update;
	int64_t next_update;
	int64_t refresh_at; /* when the refresher re-signs it */
	uint8_t etag[DB_ETAG_LEN];
	size_t der_len;
	uint8_t der[DB_MAX_RESPONSE_LEN];
};

/* struct db_due is one response due for (re-)signing: its certificate, the
 * hash, when it fell due, and the certificate's current status. */
struct db_due {
	struct db_key key;
	enum db_hash hash;
	int64_t due_at;
	struct db_cert cert;
};

/* db_lookup_answer reads, in one snapshot, the certificate's record into
 * *cert and its pre-signed response for hash into *response, setting
 * *has_response. Returns as db_lookup(); with DB_OK and no response,
 * *has_response is false. Thread-safe, lock-free. */
int db_lookup_answer(struct db *db, const struct db_key *key, enum db_hash hash,
    struct db_cert *cert, struct db_response *response,
    bool *has_response) MUST_CHECK;

/* db_txn_get_response reads key's response for hash inside txn. Returns
 * DB_OK, DB_ERR_NOT_FOUND, DB_ERR_CORRUPT, DB_ERR_ARG or DB_ERR_IO. */
int db_txn_get_response(struct db_txn *txn, const struct db_key *key,
    enum db_hash hash, struct db_response *out) MUST_CHECK;

/* db_txn_put_response stores response for key and hash, replacing any,
 * and moves its entry in the refresh schedule to response->refresh_at.
 * Returns DB_OK, DB_ERR_ARG, DB_ERR_FULL or DB_ERR_IO. */
int db_txn_put_response(struct db_txn *txn, const struct db_key *key,
    enum db_hash hash, const struct db_response *response) MUST_CHECK;

/* db_txn_schedule makes key's response for hash due at due_at (0: at once,
 * ahead of everything), keeping any stored response until it is
 * replaced. A status change schedules with 0. Returns as
 * db_txn_put_response(). */
int db_txn_schedule(struct db_txn *txn, const struct db_key *key,
    enum db_hash hash, int64_t due_at) MUST_CHECK;

/* db_due_pos remembers where db_due_list() stopped. Zero it to start. */
struct db_due_pos {
	uint8_t key[8 + DB_ISSUER_ID_LEN + DB_SERIAL_MAX + 1];
	size_t key_len;
};

/* db_due_list copies up to max entries due at or before now, in due order
 * (earliest first), after *pos, into out, sets *n_out and advances *pos.
 * Each call is its own short read transaction, so a long run pins no old
 * pages. Entries whose certificate is gone are skipped. Returns DB_OK
 * (with *n_out 0 when nothing more is due), DB_ERR_CORRUPT or DB_ERR_IO. */
int db_due_list(struct db *db, int64_t now, struct db_due_pos *pos,
    struct db_due *out, size_t max, size_t *n_out) MUST_CHECK;

/* db_txn_done_due removes the schedule entry (due_at, key, hash) once it
 * has been handled; a missing entry is not an error. */
int db_txn_done_due(struct db_txn *txn, const struct db_due *due) MUST_CHECK;

/* db_count_due counts entries due at or before now (for progress). */
int db_count_due(struct db *db, int64_t now, uint64_t *out) MUST_CHECK;

/* db_cursor walks every certificate in key order in short read
 * transactions; zero db_cursor_pos to start. */
struct db_cursor_pos {
	struct db_key last;
	bool is_started;
};

/* db_list_certs copies up to max certificates after *pos into keys and
 * certs, sets *n_out (0 at the end) and advances *pos. */
int db_list_certs(struct db *db, struct db_cursor_pos *pos, struct db_key *keys,
    struct db_cert *certs, size_t max, size_t *n_out) MUST_CHECK;

/* db_release_pages unmaps from this process the index pages it has read,
 * which the kernel keeps in its page cache: a pass over a large index then
 * leaves this process's resident memory as it found it. Safe while other
 * threads read. Returns DB_OK or DB_ERR_IO. */
int db_release_pages(struct db *db) MUST_CHECK;

#endif
