/* db.c - the certificate status index on LMDB: the environment, its
 * transactions, the key layout and the record encoding. It never logs; it
 * returns an enum db_err and keeps LMDB's code for db_errno(). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <lmdb.h>

#include "db/db.h"

#define DEFAULT_MAP_SIZE ((uint64_t)4 << 30)
#define KEY_MAX_LEN      (DB_ISSUER_ID_LEN + DB_SERIAL_MAX)
#define RECORD_VERSION   1
#define RECORD_LEN       20
#define REASON_NONE      0xff
#define FORMAT_LEN       4
#define GENERATION_LEN   8

static const char certs_name[] = "certs";
static const char responses_name[] = "responses";
static const char due_name[] = "due";
static const char meta_name[] = "meta";
static const char format_name[] = "format";
static const char generation_name[] = "generation";

struct db {
	MDB_env *env;
	MDB_dbi certs;
	MDB_dbi meta;
	MDB_dbi responses; /* absent in an older index opened read-only */
	MDB_dbi due;
	bool has_responses;
	bool is_read_only;
	/* Any thread that meets an I/O error stores its code here, so it is
	 * atomic: a plain int would be a data race. */
	atomic_int last_errno;
};

struct db_txn {
	struct db *db;
	MDB_txn *txn;
};

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void
put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static uint64_t
get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* convert_rc turns an LMDB result into ours. Only an I/O error keeps its
 * code: the other results already say all there is to say. */
static int
convert_rc(struct db *db, int mdb_rc)
{
	if (mdb_rc == MDB_SUCCESS)
		return DB_OK;
	if (mdb_rc == MDB_NOTFOUND)
		return DB_ERR_NOT_FOUND;
	if (mdb_rc == MDB_MAP_FULL)
		return DB_ERR_FULL;
	if (mdb_rc == ENOMEM)
		return DB_ERR_NOMEM;
	atomic_store_explicit(&db->last_errno, mdb_rc, memory_order_relaxed);
	return DB_ERR_IO;
}

/* is_crl_reason accepts the RFC 5280 5.3.1 CRLReason values; 7 is unused
 * there, so a record holding it was not written by us. */
static bool
is_crl_reason(int reason)
{
	return reason >= 0 && reason <= 10 && reason != 7;
}

/* Key layout: issuer_id (20 bytes) || serial magnitude (1..20 bytes).
 * The issuer comes first so that one issuer's certificates sort together.
 * A leading zero byte is refused so that each serial has one key. */
static int
encode_key(const struct db_key *key, uint8_t buf[KEY_MAX_LEN], MDB_val *out)
{
	int rc = DB_ERR_ARG;

	if (key == NULL || key->serial_len == 0 ||
	    key->serial_len > DB_SERIAL_MAX || key->serial[0] == 0x00)
		goto out;
	memcpy(buf, key->issuer_id, DB_ISSUER_ID_LEN);
	memcpy(buf + DB_ISSUER_ID_LEN, key->serial, key->serial_len);
	out->mv_data = buf;
	out->mv_size = DB_ISSUER_ID_LEN + key->serial_len;
	rc = DB_OK;
out:
	return rc;
}

/* Record layout, version 1, exactly 20 bytes:
 *
 *	byte  0      record version, 1
 *	byte  1      state: 0 good, 1 revoked
 *	byte  2      CRLReason 0..10 (not 7), or 0xff for none
 *	byte  3      0, reserved
 *	bytes 4..11  revoked_at, int64 big-endian (0 when good)
 *	bytes 12..19 not_after, int64 big-endian (0 if not known)
 *
 * The version byte comes first so that a later format can change or
 * extend the record and old code can refuse it instead of misreading it. */
static int
encode_cert(const struct db_cert *cert, uint8_t out[RECORD_LEN])
{
	bool is_valid = false;
	int rc = DB_ERR_ARG;

	if (cert == NULL)
		goto out;
	/* Fail closed: a state outside the enum matches no case. */
	switch (cert->state) {
	case DB_CERT_GOOD:
		is_valid =
		    cert->revoked_at == 0 && cert->revocation_reason == -1;
		break;
	case DB_CERT_REVOKED:
		is_valid = cert->revocation_reason == -1 ||
		    is_crl_reason(cert->revocation_reason);
		break;
	}
	if (!is_valid)
		goto out;
	out[0] = RECORD_VERSION;
	out[1] = (uint8_t)cert->state;
	out[2] = cert->revocation_reason == -1
	    ? REASON_NONE
	    : (uint8_t)cert->revocation_reason;
	out[3] = 0;
	put_be64(out + 4, (uint64_t)cert->revoked_at);
	put_be64(out + 12, (uint64_t)cert->not_after);
	rc = DB_OK;
out:
	return rc;
}

/* decode_cert checks every field of a stored record, as laid out above
 * encode_cert(), before it touches *out: anyone who can write the file can
 * put any bytes here, and a bad record must never read as good. */
static int
decode_cert(const MDB_val *val, struct db_cert *out)
{
	const uint8_t *p = val->mv_data;
	struct db_cert cert;
	int rc = DB_ERR_CORRUPT;

	if (val->mv_size < RECORD_LEN || p[0] != RECORD_VERSION)
		goto out;
	/* Version 1 has no optional tail: a longer value is not ours. */
	if (val->mv_size != RECORD_LEN || p[3] != 0)
		goto out;
	cert.revoked_at = (int64_t)get_be64(p + 4);
	cert.not_after = (int64_t)get_be64(p + 12);
	cert.revocation_reason = p[2] == REASON_NONE ? -1 : p[2];
	if (p[1] == DB_CERT_GOOD) {
		if (cert.revoked_at != 0 || cert.revocation_reason != -1)
			goto out;
		cert.state = DB_CERT_GOOD;
	} else if (p[1] == DB_CERT_REVOKED) {
		if (cert.revocation_reason != -1 &&
		    !is_crl_reason(cert.revocation_reason))
			goto out;
		cert.state = DB_CERT_REVOKED;
	} else
		goto out;
	*out = cert;
	rc = DB_OK;
out:
	return rc;
}

/* get_cert reads and decodes one record inside txn. The value points into
 * the map only until txn ends, so it is decoded (copied) here. */
static int
get_cert(
    struct db *db, MDB_txn *txn, const struct db_key *key, struct db_cert *out)
{
	uint8_t key_buf[KEY_MAX_LEN];
	MDB_val k, v;
	int rc;

	if ((rc = encode_key(key, key_buf, &k)) != DB_OK)
		goto out;
	if (out == NULL) {
		rc = DB_ERR_ARG;
		goto out;
	}
	if ((rc = convert_rc(db, mdb_get(txn, db->certs, &k, &v))) != DB_OK)
		goto out;
	rc = decode_cert(&v, out);
out:
	return rc;
}

/* read_generation reads the 8-byte big-endian "generation" record. */
static int
read_generation(struct db *db, MDB_txn *txn, uint64_t *out)
{
	MDB_val k, v;
	int mdb_rc, rc = DB_ERR_CORRUPT;

	k.mv_data = (void *)generation_name;
	k.mv_size = strlen(generation_name);
	mdb_rc = mdb_get(txn, db->meta, &k, &v);
	if (mdb_rc == MDB_NOTFOUND)
		goto out;
	if (mdb_rc != MDB_SUCCESS) {
		rc = convert_rc(db, mdb_rc);
		goto out;
	}
	if (v.mv_size != GENERATION_LEN)
		goto out;
	*out = get_be64(v.mv_data);
	rc = DB_OK;
out:
	return rc;
}

static int
write_generation(struct db *db, MDB_txn *txn, uint64_t generation)
{
	uint8_t buf[GENERATION_LEN];
	MDB_val k, v;

	put_be64(buf, generation);
	k.mv_data = (void *)generation_name;
	k.mv_size = strlen(generation_name);
	v.mv_data = buf;
	v.mv_size = sizeof(buf);
	return convert_rc(db, mdb_put(txn, db->meta, &k, &v, 0));
}

/* init_meta writes the records that make an empty environment an index. */
static int
init_meta(struct db *db, MDB_txn *txn)
{
	uint8_t buf[FORMAT_LEN];
	MDB_val k, v;
	int rc;

	put_be32(buf, DB_FORMAT);
	k.mv_data = (void *)format_name;
	k.mv_size = strlen(format_name);
	v.mv_data = buf;
	v.mv_size = sizeof(buf);
	if ((rc = convert_rc(db, mdb_put(txn, db->meta, &k, &v, 0))) != DB_OK)
		goto out;
	rc = write_generation(db, txn, 0);
out:
	return rc;
}

/* check_format refuses an index written in another format before anything
 * else of it is read. */
static int
check_format(struct db *db, MDB_txn *txn)
{
	MDB_val k, v;
	int mdb_rc, rc = DB_ERR_CORRUPT;

	k.mv_data = (void *)format_name;
	k.mv_size = strlen(format_name);
	mdb_rc = mdb_get(txn, db->meta, &k, &v);
	if (mdb_rc == MDB_NOTFOUND)
		goto out;
	if (mdb_rc != MDB_SUCCESS) {
		rc = convert_rc(db, mdb_rc);
		goto out;
	}
	if (v.mv_size != FORMAT_LEN)
		goto out;
	if (get_be32(v.mv_data) != DB_FORMAT) {
		rc = DB_ERR_VERSION;
		goto out;
	}
	rc = DB_OK;
out:
	return rc;
}

/* open_dbi opens a named database. In an existing index a missing one, or a
 * main-database key of that name that is no database, means damage. */
static int
open_dbi(struct db *db, MDB_txn *txn, const char *name, unsigned int flags,
    MDB_dbi *out)
{
	int mdb_rc;

	mdb_rc = mdb_dbi_open(txn, name, flags, out);
	if (mdb_rc == MDB_NOTFOUND || mdb_rc == MDB_INCOMPATIBLE)
		return DB_ERR_CORRUPT;
	return convert_rc(db, mdb_rc);
}

/* open_dbs opens "meta" and "certs" and checks the meta records, first
 * initialising an empty environment if may_create. */
static int
open_dbs(struct db *db, bool may_create)
{
	MDB_txn *txn = NULL;
	MDB_dbi main_dbi;
	MDB_stat st;
	uint64_t generation;
	unsigned int dbi_flags = 0;
	unsigned int txn_flags = db->is_read_only ? MDB_RDONLY : 0;
	bool is_new = false;
	int rc;

	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, txn_flags, &txn));
	if (rc != DB_OK)
		goto out;
	if (may_create) {
		/* Only an empty environment is initialised: one holding
		 * anything else but no meta is damaged or not ours. */
		rc = convert_rc(db, mdb_dbi_open(txn, NULL, 0, &main_dbi));
		if (rc != DB_OK)
			goto out;
		rc = convert_rc(db, mdb_stat(txn, main_dbi, &st));
		if (rc != DB_OK)
			goto out;
		is_new = st.ms_entries == 0;
	}
	if (is_new)
		dbi_flags = MDB_CREATE;
	rc = open_dbi(db, txn, meta_name, dbi_flags, &db->meta);
	if (rc != DB_OK)
		goto out;
	if (is_new && (rc = init_meta(db, txn)) != DB_OK)
		goto out;
	if ((rc = check_format(db, txn)) != DB_OK)
		goto out;
	if ((rc = read_generation(db, txn, &generation)) != DB_OK)
		goto out;
	rc = open_dbi(db, txn, certs_name, dbi_flags, &db->certs);
	if (rc != DB_OK)
		goto out;
	/* Pre-signed responses came after the first indexes were written:
	 * a writer adds their databases, a reader does without them. */
	rc = open_dbi(db, txn, responses_name,
	    db->is_read_only ? 0 : MDB_CREATE, &db->responses);
	if (rc == DB_OK)
		rc = open_dbi(db, txn, due_name,
		    db->is_read_only ? 0 : MDB_CREATE, &db->due);
	if (rc == DB_ERR_CORRUPT && db->is_read_only)
		rc = DB_OK;
	else if (rc == DB_OK)
		db->has_responses = true;
	if (rc != DB_OK)
		goto out;
	/* Committing, even a read-only transaction, is what makes the dbi
	 * handles usable by later transactions (lmdb.h, mdb_dbi_open). */
	rc = convert_rc(db, mdb_txn_commit(txn));
	txn = NULL;
out:
	mdb_txn_abort(txn);
	return rc;
}

/* check_index_exists tells a missing index (DB_ERR_NO_INDEX) from an
 * unreadable one: LMDB itself would make a new file when writable, or fail
 * with a bare ENOENT when not. */
static int
check_index_exists(struct db *db, const char *path)
{
	static const char data_name[] = "/data.mdb";
	struct stat sb;
	char *data_path = NULL;
	size_t path_len;
	int rc = DB_ERR_NOMEM;

	path_len = strlen(path);
	if ((data_path = malloc(path_len + sizeof(data_name))) == NULL)
		goto out;
	memcpy(data_path, path, path_len);
	memcpy(data_path + path_len, data_name, sizeof(data_name));
	if (stat(data_path, &sb) != 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			rc = DB_ERR_NO_INDEX;
		else
			rc = convert_rc(db, errno);
		goto out;
	}
	/* LMDB would take an empty file for a new environment: it fails
	 * read-only with a baffling EBADF, and writable it starts over. */
	rc = sb.st_size == 0 ? DB_ERR_CORRUPT : DB_OK;
out:
	free(data_path);
	return rc;
}

int
db_open(const char *path, enum db_mode mode, uint64_t map_size, struct db **out)
{
	struct db *db = NULL;
	unsigned int env_flags = 0;
	bool is_valid_mode = false, may_create = false;
	int io_code = 0, rc = DB_ERR_ARG;

	if (out == NULL)
		goto out;
	*out = NULL;
	if (path == NULL)
		goto out;
	switch (mode) {
	case DB_MODE_READ:
		env_flags = MDB_RDONLY;
		is_valid_mode = true;
		break;
	case DB_MODE_WRITE:
		is_valid_mode = true;
		break;
	case DB_MODE_CREATE:
		may_create = true;
		is_valid_mode = true;
		break;
	}
	if (!is_valid_mode)
		goto out;
	if (map_size == 0)
		map_size = DEFAULT_MAP_SIZE;
#if SIZE_MAX < UINT64_MAX
	if (map_size > SIZE_MAX)
		goto out;
#endif
	if ((db = calloc(1, sizeof(*db))) == NULL) {
		rc = DB_ERR_NOMEM;
		goto out;
	}
	atomic_init(&db->last_errno, 0);
	db->is_read_only = mode == DB_MODE_READ;

	if (may_create) {
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			rc = convert_rc(db, errno);
			goto out;
		}
	} else if ((rc = check_index_exists(db, path)) != DB_OK)
		goto out;

	if ((rc = convert_rc(db, mdb_env_create(&db->env))) != DB_OK)
		goto out;
	/* "certs", "meta", "responses" and "due" */
	if ((rc = convert_rc(db, mdb_env_set_maxdbs(db->env, 4))) != DB_OK)
		goto out;
	rc = convert_rc(db, mdb_env_set_mapsize(db->env, (size_t)map_size));
	if (rc != DB_OK)
		goto out;
	rc = convert_rc(db, mdb_env_open(db->env, path, env_flags, 0600));
	if (rc != DB_OK)
		goto out;
	if (!db->is_read_only) {
		/* A reader that crashed keeps its slot and pins old pages, so
		 * the file would grow until the map is full. */
		rc = convert_rc(db, mdb_reader_check(db->env, NULL));
		if (rc != DB_OK)
			goto out;
	}
	if ((rc = open_dbs(db, may_create)) != DB_OK)
		goto out;

	*out = db;
	db = NULL;
	rc = DB_OK;
out:
	if (rc == DB_ERR_IO && db != NULL)
		io_code =
		    atomic_load_explicit(&db->last_errno, memory_order_relaxed);
	db_close(db);
	/* No handle survives for db_errno(), so errno carries the code. */
	if (rc == DB_ERR_IO)
		errno = io_code;
	return rc;
}

void
db_close(struct db *db)
{
	if (db == NULL)
		return;
	/* mdb_env_close() also closes the dbi handles; it must be called
	 * even after mdb_env_open() failed. */
	if (db->env != NULL)
		mdb_env_close(db->env);
	free(db);
}

int
db_lookup(struct db *db, const struct db_key *key, struct db_cert *out)
{
	MDB_txn *txn = NULL;
	int rc;

	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn));
	if (rc != DB_OK)
		goto out;
	rc = get_cert(db, txn, key, out);
out:
	/* Ending a read transaction by abort releases its snapshot just as
	 * commit would, without the commit bookkeeping. */
	mdb_txn_abort(txn);
	return rc;
}

int
db_generation(struct db *db, uint64_t *out)
{
	MDB_txn *txn = NULL;
	int rc;

	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn));
	if (rc != DB_OK)
		goto out;
	rc = read_generation(db, txn, out);
out:
	mdb_txn_abort(txn);
	return rc;
}

int
db_txn_begin(struct db *db, struct db_txn **out)
{
	struct db_txn *txn = NULL;
	int rc = DB_ERR_READONLY;

	*out = NULL;
	if (db->is_read_only)
		goto out;
	if ((txn = calloc(1, sizeof(*txn))) == NULL) {
		rc = DB_ERR_NOMEM;
		goto out;
	}
	txn->db = db;
	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, 0, &txn->txn));
	if (rc != DB_OK)
		goto out;
	*out = txn;
	txn = NULL;
out:
	free(txn);
	return rc;
}

int
db_txn_get(struct db_txn *txn, const struct db_key *key, struct db_cert *out)
{
	return get_cert(txn->db, txn->txn, key, out);
}

int
db_txn_put(
    struct db_txn *txn, const struct db_key *key, const struct db_cert *cert)
{
	uint8_t key_buf[KEY_MAX_LEN], record[RECORD_LEN];
	MDB_val k, v;
	int rc;

	/* Both are checked before LMDB sees them, so that DB_ERR_ARG leaves
	 * the transaction usable. */
	if ((rc = encode_key(key, key_buf, &k)) != DB_OK)
		goto out;
	if ((rc = encode_cert(cert, record)) != DB_OK)
		goto out;
	v.mv_data = record;
	v.mv_size = sizeof(record);
	rc = convert_rc(txn->db, mdb_put(txn->txn, txn->db->certs, &k, &v, 0));
out:
	return rc;
}

int
db_txn_commit(struct db_txn *txn)
{
	uint64_t generation;
	int rc;

	/* The generation moves in the same transaction as the writes, so a
	 * reader never sees new records under an old generation. */
	if ((rc = read_generation(txn->db, txn->txn, &generation)) != DB_OK)
		goto out;
	rc = write_generation(txn->db, txn->txn, generation + 1);
	if (rc != DB_OK)
		goto out;
	/* LMDB frees the transaction whether or not the commit succeeds. */
	rc = convert_rc(txn->db, mdb_txn_commit(txn->txn));
	txn->txn = NULL;
out:
	db_txn_abort(txn);
	return rc;
}

void
db_txn_abort(struct db_txn *txn)
{
	if (txn == NULL)
		return;
	mdb_txn_abort(txn->txn);
	free(txn);
}

int
db_errno(const struct db *db)
{
	if (db == NULL)
		return 0;
	return atomic_load_explicit(&db->last_errno, memory_order_relaxed);
}

const char *
db_strerror(int err)
{
	switch ((enum db_err)err) {
	case DB_OK:
		return "success";
	case DB_ERR_NOT_FOUND:
		return "no such certificate";
	case DB_ERR_CORRUPT:
		return "corrupt index";
	case DB_ERR_IO:
		return "index I/O error";
	case DB_ERR_VERSION:
		return "unsupported index format";
	case DB_ERR_FULL:
		return "index map full";
	case DB_ERR_READONLY:
		return "index opened read-only";
	case DB_ERR_ARG:
		return "invalid key or record";
	case DB_ERR_NOMEM:
		return "out of memory";
	case DB_ERR_NO_INDEX:
		return "no index at path";
	}
	return "unknown index error";
}

const char *
db_errno_str(int code)
{
	/* mdb_strerror() hands errno values on to strerror(). */
	return mdb_strerror(code);
}

/* Pre-signed responses and their refresh schedule. */

#define RESPONSE_VERSION    1
#define RESPONSE_HEADER_LEN (1 + RECORD_LEN + 3 * 8 + DB_ETAG_LEN)
#define RESPONSE_KEY_MAX    (KEY_MAX_LEN + 1)
#define DUE_KEY_MAX         (8 + RESPONSE_KEY_MAX)

/* Response key: the certificate's key, then one byte for the CertID hash.
 * Due key: due_at (uint64 big-endian, so LMDB's byte order is time order),
 * then the response key. */
static int
encode_response_key(const struct db_key *key, enum db_hash hash,
    uint8_t buf[RESPONSE_KEY_MAX], MDB_val *out)
{
	int rc;

	if (hash != DB_HASH_SHA1 && hash != DB_HASH_SHA256)
		return DB_ERR_ARG;
	if ((rc = encode_key(key, buf, out)) != DB_OK)
		return rc;
	buf[out->mv_size] = (uint8_t)hash;
	out->mv_size++;
	return DB_OK;
}

static int
encode_due_key(int64_t due_at, const struct db_key *key, enum db_hash hash,
    uint8_t buf[DUE_KEY_MAX], MDB_val *out)
{
	MDB_val response_key;
	int rc;

	if (due_at < 0)
		return DB_ERR_ARG;
	put_be64(buf, (uint64_t)due_at);
	if ((rc = encode_response_key(key, hash, buf + 8, &response_key)) !=
	    DB_OK)
		return rc;
	out->mv_data = buf;
	out->mv_size = 8 + response_key.mv_size;
	return DB_OK;
}

static int
decode_due_key(const MDB_val *k, struct db_due *out)
{
	const uint8_t *p = k->mv_data;
	size_t serial_len;

	if (k->mv_size < 8 + DB_ISSUER_ID_LEN + 2 || k->mv_size > DUE_KEY_MAX)
		return DB_ERR_CORRUPT;
	serial_len = k->mv_size - 8 - DB_ISSUER_ID_LEN - 1;
	out->due_at = (int64_t)get_be64(p);
	memcpy(out->key.issuer_id, p + 8, DB_ISSUER_ID_LEN);
	memcpy(out->key.serial, p + 8 + DB_ISSUER_ID_LEN, serial_len);
	out->key.serial_len = serial_len;
	switch (p[k->mv_size - 1]) {
	case DB_HASH_SHA1:
		out->hash = DB_HASH_SHA1;
		break;
	case DB_HASH_SHA256:
		out->hash = DB_HASH_SHA256;
		break;
	default:
		return DB_ERR_CORRUPT;
	}
	if (out->due_at < 0 || out->key.serial[0] == 0)
		return DB_ERR_CORRUPT;
	return DB_OK;
}

/* Response record, version 1:
 *
 *	byte  0        record version, 1
 *	bytes 1..20    the status it was signed for, as a certificate record
 *	bytes 21..28   thisUpdate, int64 big-endian
 *	bytes 29..36   nextUpdate
 *	bytes 37..44   refresh_at
 *	bytes 45..76   ETag: SHA-256 of the DER
 *	bytes 77..     the OCSPResponse DER, to the end of the value
 *
 * The DER goes last and unframed: serving copies it out in one memcpy. */
static int
decode_response(const MDB_val *val, struct db_response *out)
{
	const uint8_t *p = val->mv_data;
	MDB_val status;
	int rc;

	if (val->mv_size <= RESPONSE_HEADER_LEN ||
	    val->mv_size - RESPONSE_HEADER_LEN > DB_MAX_RESPONSE_LEN ||
	    p[0] != RESPONSE_VERSION)
		return DB_ERR_CORRUPT;
	status.mv_data = (void *)(p + 1);
	status.mv_size = RECORD_LEN;
	if ((rc = decode_cert(&status, &out->signed_for)) != DB_OK)
		return rc;
	out->this_update = (int64_t)get_be64(p + 21);
	out->next_update = (int64_t)get_be64(p + 29);
	out->refresh_at = (int64_t)get_be64(p + 37);
	if (out->next_update <= out->this_update || out->refresh_at < 0)
		return DB_ERR_CORRUPT;
	memcpy(out->etag, p + 45, DB_ETAG_LEN);
	out->der_len = val->mv_size - RESPONSE_HEADER_LEN;
	memcpy(out->der, p + RESPONSE_HEADER_LEN, out->der_len);
	return DB_OK;
}

static int
get_response(struct db *db, MDB_txn *txn, const struct db_key *key,
    enum db_hash hash, struct db_response *out)
{
	uint8_t key_buf[RESPONSE_KEY_MAX];
	MDB_val k, v;
	int rc;

	if ((rc = encode_response_key(key, hash, key_buf, &k)) != DB_OK)
		return rc;
	if (!db->has_responses)
		return DB_ERR_NOT_FOUND;
	if ((rc = convert_rc(db, mdb_get(txn, db->responses, &k, &v))) != DB_OK)
		return rc;
	return decode_response(&v, out);
}

int
db_lookup_answer(struct db *db, const struct db_key *key, enum db_hash hash,
    struct db_cert *cert, struct db_response *response, bool *has_response)
{
	MDB_txn *txn = NULL;
	int rc;

	*has_response = false;
	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn));
	if (rc != DB_OK)
		goto out;
	if ((rc = get_cert(db, txn, key, cert)) != DB_OK)
		goto out;
	rc = get_response(db, txn, key, hash, response);
	if (rc == DB_OK)
		*has_response = true;
	else if (rc == DB_ERR_NOT_FOUND)
		rc = DB_OK;
out:
	mdb_txn_abort(txn);
	return rc;
}

int
db_txn_get_response(struct db_txn *txn, const struct db_key *key,
    enum db_hash hash, struct db_response *out)
{
	return get_response(txn->db, txn->txn, key, hash, out);
}

static int
put_due(struct db_txn *txn, int64_t due_at, const struct db_key *key,
    enum db_hash hash)
{
	uint8_t key_buf[DUE_KEY_MAX];
	MDB_val k, v = {0, NULL};
	int rc;

	if ((rc = encode_due_key(due_at, key, hash, key_buf, &k)) != DB_OK)
		return rc;
	return convert_rc(txn->db, mdb_put(txn->txn, txn->db->due, &k, &v, 0));
}

static int
delete_due(struct db_txn *txn, int64_t due_at, const struct db_key *key,
    enum db_hash hash)
{
	uint8_t key_buf[DUE_KEY_MAX];
	MDB_val k;
	int rc;

	if ((rc = encode_due_key(due_at, key, hash, key_buf, &k)) != DB_OK)
		return rc;
	rc = convert_rc(txn->db, mdb_del(txn->txn, txn->db->due, &k, NULL));
	return rc == DB_ERR_NOT_FOUND ? DB_OK : rc;
}

int
db_txn_put_response(struct db_txn *txn, const struct db_key *key,
    enum db_hash hash, const struct db_response *response)
{
	uint8_t key_buf[RESPONSE_KEY_MAX], status[RECORD_LEN], *p;
	struct db_response *old = NULL;
	MDB_val k, v;
	int rc;

	if (txn->db->is_read_only || !txn->db->has_responses)
		return DB_ERR_READONLY;
	if ((rc = encode_response_key(key, hash, key_buf, &k)) != DB_OK)
		return rc;
	if (response->der_len == 0 || response->der_len > DB_MAX_RESPONSE_LEN ||
	    response->next_update <= response->this_update ||
	    response->refresh_at < 0)
		return DB_ERR_ARG;
	if ((rc = encode_cert(&response->signed_for, status)) != DB_OK)
		return rc;
	if ((old = malloc(sizeof(*old))) == NULL)
		return DB_ERR_NOMEM;
	rc = get_response(txn->db, txn->txn, key, hash, old);
	if (rc == DB_OK)
		rc = delete_due(txn, old->refresh_at, key, hash);
	else if (rc == DB_ERR_NOT_FOUND || rc == DB_ERR_CORRUPT)
		rc = DB_OK; /* a damaged old record is simply replaced */
	free(old);
	if (rc != DB_OK)
		return rc;
	/* MDB_RESERVE: LMDB hands out the space and the record is written
	 * straight into the page, without a staging copy. */
	v.mv_size = RESPONSE_HEADER_LEN + response->der_len;
	v.mv_data = NULL;
	if ((rc = convert_rc(txn->db,
		 mdb_put(txn->txn, txn->db->responses, &k, &v, MDB_RESERVE))) !=
	    DB_OK)
		return rc;
	p = v.mv_data;
	p[0] = RESPONSE_VERSION;
	memcpy(p + 1, status, RECORD_LEN);
	put_be64(p + 21, (uint64_t)response->this_update);
	put_be64(p + 29, (uint64_t)response->next_update);
	put_be64(p + 37, (uint64_t)response->refresh_at);
	memcpy(p + 45, response->etag, DB_ETAG_LEN);
	memcpy(p + RESPONSE_HEADER_LEN, response->der, response->der_len);
	return put_due(txn, response->refresh_at, key, hash);
}

int
db_txn_schedule(struct db_txn *txn, const struct db_key *key, enum db_hash hash,
    int64_t due_at)
{
	if (txn->db->is_read_only || !txn->db->has_responses)
		return DB_ERR_READONLY;
	return put_due(txn, due_at, key, hash);
}

int
db_txn_done_due(struct db_txn *txn, const struct db_due *due)
{
	if (txn->db->is_read_only || !txn->db->has_responses)
		return DB_ERR_READONLY;
	return delete_due(txn, due->due_at, &due->key, due->hash);
}

int
db_due_list(struct db *db, int64_t now, struct db_due_pos *pos,
    struct db_due *out, size_t max, size_t *n_out)
{
	MDB_cursor *cursor = NULL;
	MDB_txn *txn = NULL;
	MDB_val k, v;
	MDB_cursor_op op;
	size_t n = 0;
	int mdb_rc, rc;

	*n_out = 0;
	if (!db->has_responses)
		return DB_OK;
	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn));
	if (rc != DB_OK)
		goto out;
	rc = convert_rc(db, mdb_cursor_open(txn, db->due, &cursor));
	if (rc != DB_OK)
		goto out;
	if (pos->key_len == 0) {
		op = MDB_FIRST;
	} else {
		k.mv_data = pos->key;
		k.mv_size = pos->key_len;
		op = MDB_SET_RANGE;
	}
	while (n < max) {
		mdb_rc = mdb_cursor_get(cursor, &k, &v, op);
		if (mdb_rc == MDB_NOTFOUND)
			break;
		if ((rc = convert_rc(db, mdb_rc)) != DB_OK)
			goto out;
		/* MDB_SET_RANGE lands on the last entry handed out. */
		if (op == MDB_SET_RANGE && k.mv_size == pos->key_len &&
		    memcmp(k.mv_data, pos->key, k.mv_size) == 0) {
			op = MDB_NEXT;
			continue;
		}
		op = MDB_NEXT;
		if ((rc = decode_due_key(&k, &out[n])) != DB_OK)
			goto out;
		if (out[n].due_at > now)
			break;
		memcpy(pos->key, k.mv_data, k.mv_size);
		pos->key_len = k.mv_size;
		rc = get_cert(db, txn, &out[n].key, &out[n].cert);
		if (rc == DB_ERR_NOT_FOUND)
			continue;
		if (rc != DB_OK)
			goto out;
		n++;
	}
	*n_out = n;
	rc = DB_OK;
out:
	mdb_cursor_close(cursor);
	mdb_txn_abort(txn);
	return rc;
}

int
db_count_due(struct db *db, int64_t now, uint64_t *out)
{
	MDB_cursor *cursor = NULL;
	MDB_txn *txn = NULL;
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	uint64_t n = 0;
	int mdb_rc, rc;

	*out = 0;
	if (!db->has_responses)
		return DB_OK;
	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn));
	if (rc != DB_OK)
		goto out;
	rc = convert_rc(db, mdb_cursor_open(txn, db->due, &cursor));
	if (rc != DB_OK)
		goto out;
	for (;;) {
		mdb_rc = mdb_cursor_get(cursor, &k, &v, op);
		op = MDB_NEXT;
		if (mdb_rc == MDB_NOTFOUND)
			break;
		if ((rc = convert_rc(db, mdb_rc)) != DB_OK)
			goto out;
		if (k.mv_size < 8 || (int64_t)get_be64(k.mv_data) > now)
			break;
		n++;
	}
	*out = n;
	rc = DB_OK;
out:
	mdb_cursor_close(cursor);
	mdb_txn_abort(txn);
	return rc;
}

int
db_list_certs(struct db *db, struct db_cursor_pos *pos, struct db_key *keys,
    struct db_cert *certs, size_t max, size_t *n_out)
{
	uint8_t key_buf[KEY_MAX_LEN];
	MDB_cursor *cursor = NULL;
	MDB_txn *txn = NULL;
	MDB_val k, v;
	MDB_cursor_op op = MDB_FIRST;
	size_t n = 0;
	int mdb_rc, rc;

	*n_out = 0;
	rc = convert_rc(db, mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn));
	if (rc != DB_OK)
		goto out;
	rc = convert_rc(db, mdb_cursor_open(txn, db->certs, &cursor));
	if (rc != DB_OK)
		goto out;
	if (pos->is_started) {
		if ((rc = encode_key(&pos->last, key_buf, &k)) != DB_OK)
			goto out;
		op = MDB_SET_RANGE;
	}
	while (n < max) {
		mdb_rc = mdb_cursor_get(cursor, &k, &v, op);
		if (mdb_rc == MDB_NOTFOUND)
			break;
		if ((rc = convert_rc(db, mdb_rc)) != DB_OK)
			goto out;
		if (op == MDB_SET_RANGE) {
			op = MDB_NEXT;
			if (k.mv_size ==
				DB_ISSUER_ID_LEN + pos->last.serial_len &&
			    memcmp(k.mv_data, key_buf, k.mv_size) == 0)
				continue;
		}
		op = MDB_NEXT;
		if (k.mv_size <= DB_ISSUER_ID_LEN || k.mv_size > KEY_MAX_LEN) {
			rc = DB_ERR_CORRUPT;
			goto out;
		}
		memcpy(keys[n].issuer_id, k.mv_data, DB_ISSUER_ID_LEN);
		keys[n].serial_len = k.mv_size - DB_ISSUER_ID_LEN;
		memcpy(keys[n].serial,
		    (const uint8_t *)k.mv_data + DB_ISSUER_ID_LEN,
		    keys[n].serial_len);
		if ((rc = decode_cert(&v, &certs[n])) != DB_OK)
			goto out;
		pos->last = keys[n];
		pos->is_started = true;
		n++;
	}
	*n_out = n;
	rc = DB_OK;
out:
	mdb_cursor_close(cursor);
	mdb_txn_abort(txn);
	return rc;
}

int
db_release_pages(struct db *db)
{
	char line[4096 + 128], *path;
	unsigned long start, end;
	const char *data_path;
	int rc = DB_OK;
	FILE *maps;

	/* LMDB reports no address for a map it placed itself, so find it
	 * the way the kernel lists it. */
	if (mdb_env_get_path(db->env, &data_path) != MDB_SUCCESS ||
	    (maps = fopen("/proc/self/maps", "re")) == NULL)
		return convert_rc(db, EIO);
	while (fgets(line, sizeof(line), maps) != NULL) {
		if (sscanf(line, "%lx-%lx", &start, &end) != 2 ||
		    (path = strchr(line, '/')) == NULL)
			continue;
		path[strcspn(path, "\n")] = '\0';
		if (strncmp(path, data_path, strlen(data_path)) != 0 ||
		    strcmp(path + strlen(data_path), "/data.mdb") != 0)
			continue;
		/* LMDB maps the file shared and read-only (no
		 * MDB_WRITEMAP): a page dropped from this process's page
		 * tables is read back unchanged from the page cache. */
		if (madvise((void *)start, end - start, MADV_DONTNEED) != 0)
			rc = convert_rc(db, errno);
	}
	(void)fclose(maps);
	return rc;
}
