/* test_db.c - db/ against real LMDB files in a temporary directory: round
 * trips, every error code, damaged records and files, concurrent readers
 * and a full map. Raw LMDB plays the damaged or foreign writer. */
/* NOLINTNEXTLINE(bugprone-reserved-identifier): nftw() is X/Open */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "db/db.h"
#include "tests/test.h"

#define PATH_LEN    512
#define RECORD_LEN  20
#define N_READERS   4
#define N_SHARED    32 /* records the readers watch */
#define N_COMMITS   100
#define MAX_RECORDS 100000 /* bounds the loops that fill the map */
#define N_BITS      ((size_t)RECORD_LEN * 8)
#define SMALL_MAP   ((uint64_t)64 << 10)
#define LARGER_MAP  ((uint64_t)1 << 20)

static char tmp_dir[] = "/tmp/test_db.XXXXXX";

/* tmp_path names name inside the test's temporary directory. */
static void
tmp_path(char *buf, const char *name)
{
	int n;

	n = snprintf(buf, PATH_LEN, "%s/%s", tmp_dir, name);
	if (n < 0 || n >= PATH_LEN)
		abort();
}

static int
remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	return remove(path);
}

/* remove_tree deletes path and all below it, children first. */
static int
remove_tree(const char *path)
{
	return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* fill_key makes a distinct key per (issuer, n); the serial's first byte
 * is nonzero, as the contract requires. */
static void
fill_key(struct db_key *key, uint8_t issuer, uint32_t n)
{
	memset(key, 0, sizeof(*key));
	memset(key->issuer_id, issuer, sizeof(key->issuer_id));
	key->serial[0] = 0x01;
	key->serial[1] = (uint8_t)(n >> 24);
	key->serial[2] = (uint8_t)(n >> 16);
	key->serial[3] = (uint8_t)(n >> 8);
	key->serial[4] = (uint8_t)n;
	key->serial_len = 5;
}

static struct db_cert
good_cert(int64_t not_after)
{
	struct db_cert cert = {DB_CERT_GOOD, 0, -1, not_after};

	return cert;
}

static struct db_cert
revoked_cert(int64_t revoked_at, int reason, int64_t not_after)
{
	struct db_cert cert = {DB_CERT_REVOKED, revoked_at, reason, not_after};

	return cert;
}

static bool
cert_equal(const struct db_cert *a, const struct db_cert *b)
{
	return a->state == b->state && a->revoked_at == b->revoked_at &&
	    a->revocation_reason == b->revocation_reason &&
	    a->not_after == b->not_after;
}

/* A value no lookup produces, to show that a failed one left *out alone. */
static const struct db_cert sentinel = {DB_CERT_REVOKED, -42, 3, -43};

/* put_one stores one record in its own transaction. */
static int
put_one(struct db *db, const struct db_key *key, const struct db_cert *cert)
{
	struct db_txn *txn;
	int rc;

	if ((rc = db_txn_begin(db, &txn)) != DB_OK)
		return rc;
	if ((rc = db_txn_put(txn, key, cert)) != DB_OK) {
		db_txn_abort(txn);
		return rc;
	}
	return db_txn_commit(txn);
}

/* raw_begin opens dir with LMDB directly and starts a write transaction. */
static int
raw_begin(const char *dir, MDB_env **env, MDB_txn **txn)
{
	int rc;

	*txn = NULL;
	if ((rc = mdb_env_create(env)) != MDB_SUCCESS)
		return rc;
	if ((rc = mdb_env_set_maxdbs(*env, 4)) != MDB_SUCCESS ||
	    (rc = mdb_env_open(*env, dir, 0, 0600)) != MDB_SUCCESS ||
	    (rc = mdb_txn_begin(*env, NULL, 0, txn)) != MDB_SUCCESS) {
		mdb_env_close(*env);
		*env = NULL;
	}
	return rc;
}

static int
raw_commit(MDB_env *env, MDB_txn *txn)
{
	int rc;

	rc = mdb_txn_commit(txn);
	mdb_env_close(env);
	return rc;
}

static int
raw_put(MDB_txn *txn, const char *db_name, const void *key, size_t key_len,
    const void *val, size_t val_len)
{
	MDB_dbi dbi;
	MDB_val k = {key_len, (void *)key}, v = {val_len, (void *)val};
	int rc;

	if ((rc = mdb_dbi_open(txn, db_name, MDB_CREATE, &dbi)) != MDB_SUCCESS)
		return rc;
	return mdb_put(txn, dbi, &k, &v, 0);
}

static int
raw_get(MDB_txn *txn, const char *db_name, const void *key, size_t key_len,
    MDB_val *out)
{
	MDB_dbi dbi;
	MDB_val k = {key_len, (void *)key};
	int rc;

	if ((rc = mdb_dbi_open(txn, db_name, 0, &dbi)) != MDB_SUCCESS)
		return rc;
	return mdb_get(txn, dbi, &k, out);
}

static int
raw_del(MDB_txn *txn, const char *db_name, const void *key, size_t key_len)
{
	MDB_dbi dbi;
	MDB_val k = {key_len, (void *)key};
	int rc;

	if ((rc = mdb_dbi_open(txn, db_name, 0, &dbi)) != MDB_SUCCESS)
		return rc;
	return mdb_del(txn, dbi, &k, NULL);
}

/* raw_key lays out key as db.c does: issuer_id || serial. */
static size_t
raw_key(const struct db_key *key, uint8_t buf[DB_ISSUER_ID_LEN + DB_SERIAL_MAX])
{
	memcpy(buf, key->issuer_id, DB_ISSUER_ID_LEN);
	memcpy(buf + DB_ISSUER_ID_LEN, key->serial, key->serial_len);
	return DB_ISSUER_ID_LEN + key->serial_len;
}

/* raw_put_cert stores bytes as the record for key, bypassing the encoder. */
static int
raw_put_cert(
    MDB_txn *txn, const struct db_key *key, const void *val, size_t val_len)
{
	uint8_t buf[DB_ISSUER_ID_LEN + DB_SERIAL_MAX];

	return raw_put(txn, "certs", buf, raw_key(key, buf), val, val_len);
}

/* make_index creates an index at dir holding n revoked records. */
static int
make_index(const char *dir, uint32_t n)
{
	struct db *db = NULL;
	struct db_txn *txn = NULL;
	struct db_key key;
	struct db_cert cert;
	uint32_t i;
	int rc;

	if ((rc = db_open(dir, DB_MODE_CREATE, 0, &db)) != DB_OK)
		goto out;
	if ((rc = db_txn_begin(db, &txn)) != DB_OK)
		goto out;
	for (i = 0; i < n; i++) {
		fill_key(&key, 0xaa, i);
		cert = revoked_cert(1000 + i, 1, 2000 + i);
		if ((rc = db_txn_put(txn, &key, &cert)) != DB_OK)
			goto out;
	}
	rc = db_txn_commit(txn);
	txn = NULL;
out:
	db_txn_abort(txn);
	db_close(db);
	return rc;
}

static void
test_missing_index(void)
{
	char dir[PATH_LEN], deep[PATH_LEN];
	struct db *db = (struct db *)&db;

	tmp_path(dir, "missing");
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_NO_INDEX);
	CHECK(db == NULL);
	CHECK(db_open(dir, DB_MODE_WRITE, 0, &db) == DB_ERR_NO_INDEX);
	CHECK(db == NULL);
	/* Neither mode may leave a directory or file behind. */
	CHECK(access(dir, F_OK) != 0 && errno == ENOENT);

	/* An empty directory is no index either. */
	tmp_path(dir, "empty");
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_NO_INDEX);
	CHECK(db_open(dir, DB_MODE_WRITE, 0, &db) == DB_ERR_NO_INDEX);
	CHECK(db == NULL);

	/* CREATE makes one directory, not its parents; errno says why. */
	tmp_path(deep, "no/such/dir");
	CHECK(db_open(deep, DB_MODE_CREATE, 0, &db) == DB_ERR_IO);
	CHECK(errno == ENOENT);
	CHECK(strcmp(db_errno_str(ENOENT), strerror(ENOENT)) == 0);
	CHECK(db == NULL);

	CHECK(db_open(dir, (enum db_mode)42, 0, &db) == DB_ERR_ARG);
	CHECK(db == NULL);
}

static void
test_round_trip(void)
{
	char dir[PATH_LEN];
	struct db *db = NULL;
	struct db_txn *txn = NULL;
	struct db_key keys[4], other;
	struct db_cert certs[4], got;
	struct stat sb;
	uint64_t generation = 99;
	size_t i;
	int rc;

	tmp_path(dir, "round-trip");
	rc = db_open(dir, DB_MODE_CREATE, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	CHECK(stat(dir, &sb) == 0 && (sb.st_mode & 0777) == 0700);
	CHECK(db_errno(db) == 0);
	CHECK(db_generation(db, &generation) == DB_OK && generation == 0);

	fill_key(&keys[0], 0x11, 1);
	certs[0] = good_cert(1893456000);
	fill_key(&keys[1], 0x11, 2);
	certs[1] = revoked_cert(1700000000, 1, 1893456000);
	fill_key(&keys[2], 0x11, 3);
	certs[2] = revoked_cert(1700000001, -1, 0);
	/* Extremes: a one-byte and a 20-byte serial, and times whose sign
	 * bit and top byte the encoding must carry. */
	memset(&keys[3], 0, sizeof(keys[3]));
	memset(keys[3].issuer_id, 0x11, sizeof(keys[3].issuer_id));
	memset(keys[3].serial, 0xff, DB_SERIAL_MAX);
	keys[3].serial_len = DB_SERIAL_MAX;
	certs[3] = revoked_cert(INT64_MAX, 10, INT64_MIN);

	CHECK(db_txn_begin(db, &txn) == DB_OK);
	for (i = 0; i < 4; i++)
		CHECK(db_txn_put(txn, &keys[i], &certs[i]) == DB_OK);
	/* The transaction sees its own writes before commit. */
	for (i = 0; i < 4; i++) {
		got = sentinel;
		CHECK(db_txn_get(txn, &keys[i], &got) == DB_OK);
		CHECK(cert_equal(&got, &certs[i]));
	}
	fill_key(&other, 0x11, 4);
	CHECK(db_txn_get(txn, &other, &got) == DB_ERR_NOT_FOUND);
	CHECK(db_txn_commit(txn) == DB_OK);
	CHECK(db_generation(db, &generation) == DB_OK && generation == 1);
	db_close(db);

	rc = db_open(dir, DB_MODE_READ, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	for (i = 0; i < 4; i++) {
		got = sentinel;
		CHECK(db_lookup(db, &keys[i], &got) == DB_OK);
		CHECK(cert_equal(&got, &certs[i]));
	}
	got = sentinel;
	CHECK(db_lookup(db, &other, &got) == DB_ERR_NOT_FOUND);
	CHECK(cert_equal(&got, &sentinel));
	/* The same serial under another issuer is another certificate. */
	fill_key(&other, 0x22, 1);
	CHECK(db_lookup(db, &other, &got) == DB_ERR_NOT_FOUND);
	/* A one-byte serial differs from the same bytes with more after. */
	memset(&other, 0, sizeof(other));
	memset(other.issuer_id, 0x11, sizeof(other.issuer_id));
	other.serial[0] = 0x01;
	other.serial_len = 1;
	CHECK(db_lookup(db, &other, &got) == DB_ERR_NOT_FOUND);

	txn = (struct db_txn *)&txn;
	CHECK(db_txn_begin(db, &txn) == DB_ERR_READONLY);
	CHECK(txn == NULL);
	CHECK(db_generation(db, &generation) == DB_OK && generation == 1);
	db_close(db);

	/* WRITE opens what CREATE made, and CREATE reopens without reset. */
	CHECK(db_open(dir, DB_MODE_WRITE, 0, &db) == DB_OK);
	db_close(db);
	db = NULL;
	CHECK(db_open(dir, DB_MODE_CREATE, 0, &db) == DB_OK);
	CHECK(db != NULL && db_generation(db, &generation) == DB_OK &&
	    generation == 1);
	CHECK(db != NULL && db_lookup(db, &keys[1], &got) == DB_OK &&
	    cert_equal(&got, &certs[1]));
	db_close(db);
}

static void
test_generation_and_abort(void)
{
	char dir[PATH_LEN];
	struct db *db = NULL;
	struct db_txn *txn = NULL;
	struct db_key key;
	struct db_cert cert, got;
	uint64_t generation = 0, before = 0;
	uint32_t i;
	int rc;

	tmp_path(dir, "generation");
	rc = db_open(dir, DB_MODE_CREATE, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	for (i = 0; i < 5; i++) {
		fill_key(&key, 0x33, i);
		cert = good_cert(i);
		CHECK(put_one(db, &key, &cert) == DB_OK);
		CHECK(db_generation(db, &generation) == DB_OK);
		CHECK(generation == i + 1);
	}

	/* An empty commit still counts. */
	CHECK(db_txn_begin(db, &txn) == DB_OK);
	CHECK(db_txn_commit(txn) == DB_OK);
	CHECK(db_generation(db, &generation) == DB_OK && generation == 6);

	/* Abort discards the writes and leaves the generation alone. */
	fill_key(&key, 0x33, 100);
	cert = revoked_cert(5, 4, 6);
	CHECK(db_txn_begin(db, &txn) == DB_OK);
	CHECK(db_txn_put(txn, &key, &cert) == DB_OK);
	CHECK(db_txn_get(txn, &key, &got) == DB_OK && cert_equal(&got, &cert));
	db_txn_abort(txn);
	CHECK(db_lookup(db, &key, &got) == DB_ERR_NOT_FOUND);
	CHECK(db_generation(db, &before) == DB_OK && before == 6);

	/* A put replaces the record, good to revoked. */
	fill_key(&key, 0x33, 2);
	cert = revoked_cert(1700000000, 4, 2);
	CHECK(put_one(db, &key, &cert) == DB_OK);
	CHECK(db_lookup(db, &key, &got) == DB_OK && cert_equal(&got, &cert));
	CHECK(db_generation(db, &generation) == DB_OK && generation == 7);

	db_txn_abort(NULL);
	db_close(db);
	db_close(NULL);
}

static void
test_bad_arguments(void)
{
	static const size_t bad_lens[] = {0, DB_SERIAL_MAX + 1, SIZE_MAX};
	char dir[PATH_LEN];
	struct db *db = NULL;
	struct db_txn *txn = NULL;
	struct db_key key, good_key;
	struct db_cert cert, got, bad_certs[7];
	uint64_t generation = 0;
	size_t i;
	int rc;

	tmp_path(dir, "arguments");
	rc = db_open(dir, DB_MODE_CREATE, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	cert = good_cert(1);
	fill_key(&good_key, 0x44, 1);
	CHECK(db_txn_begin(db, &txn) == DB_OK);
	if (txn == NULL) {
		db_close(db);
		return;
	}
	for (i = 0; i < sizeof(bad_lens) / sizeof(bad_lens[0]); i++) {
		fill_key(&key, 0x44, 1);
		key.serial_len = bad_lens[i];
		got = sentinel;
		CHECK(db_lookup(db, &key, &got) == DB_ERR_ARG);
		CHECK(db_txn_get(txn, &key, &got) == DB_ERR_ARG);
		CHECK(db_txn_put(txn, &key, &cert) == DB_ERR_ARG);
		CHECK(cert_equal(&got, &sentinel));
	}
	/* A leading zero byte would give one serial two keys. */
	fill_key(&key, 0x44, 1);
	key.serial[0] = 0x00;
	CHECK(db_lookup(db, &key, &got) == DB_ERR_ARG);
	CHECK(db_txn_get(txn, &key, &got) == DB_ERR_ARG);
	CHECK(db_txn_put(txn, &key, &cert) == DB_ERR_ARG);
	CHECK(db_lookup(db, NULL, &got) == DB_ERR_ARG);
	CHECK(db_txn_put(txn, &good_key, NULL) == DB_ERR_ARG);

	bad_certs[0] = good_cert(1);
	bad_certs[0].state = (enum db_cert_state)2;
	bad_certs[1] = good_cert(1);
	bad_certs[1].revocation_reason = 0;
	bad_certs[2] = good_cert(1);
	bad_certs[2].revoked_at = 5;
	bad_certs[3] = revoked_cert(5, 7, 1); /* unused in RFC 5280 */
	bad_certs[4] = revoked_cert(5, 11, 1);
	bad_certs[5] = revoked_cert(5, -2, 1);
	bad_certs[6] = revoked_cert(5, 0xff, 1);
	for (i = 0; i < sizeof(bad_certs) / sizeof(bad_certs[0]); i++)
		CHECK(db_txn_put(txn, &good_key, &bad_certs[i]) == DB_ERR_ARG);

	/* None of that spoiled the transaction. */
	CHECK(db_txn_put(txn, &good_key, &cert) == DB_OK);
	CHECK(db_txn_commit(txn) == DB_OK);
	CHECK(
	    db_lookup(db, &good_key, &got) == DB_OK && cert_equal(&got, &cert));
	CHECK(db_generation(db, &generation) == DB_OK && generation == 1);
	db_close(db);
}

static void
test_version(void)
{
	static const uint8_t format_2[] = {0, 0, 0, 2};
	static const uint8_t format_1[] = {0, 0, 0, 1};
	static const uint8_t short_format[] = {0, 0, 1};
	char dir[PATH_LEN];
	struct db *db = NULL;
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_val v = {0, NULL};

	tmp_path(dir, "version");
	CHECK(make_index(dir, 3) == DB_OK);

	/* The stored format is 4 bytes, big-endian. */
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_get(txn, "meta", "format", 6, &v) == MDB_SUCCESS &&
	    v.mv_size == 4 && memcmp(v.mv_data, format_1, 4) == 0);
	CHECK(raw_put(txn, "meta", "format", 6, format_2, 4) == MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_VERSION);
	CHECK(db_open(dir, DB_MODE_WRITE, 0, &db) == DB_ERR_VERSION);
	CHECK(db_open(dir, DB_MODE_CREATE, 0, &db) == DB_ERR_VERSION);
	CHECK(db == NULL);

	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(
	    raw_put(txn, "meta", "format", 6, short_format, 3) == MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);

	/* The right format without a generation is damage too. */
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_put(txn, "meta", "format", 6, format_1, 4) == MDB_SUCCESS);
	CHECK(raw_get(txn, "meta", "generation", 10, &v) == MDB_SUCCESS &&
	    v.mv_size == 8);
	CHECK(raw_del(txn, "meta", "generation", 10) == MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);
	CHECK(db_open(dir, DB_MODE_CREATE, 0, &db) == DB_ERR_CORRUPT);

	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_put(txn, "meta", "generation", 10, "1234567", 7) ==
	    MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);

	/* Repaired by hand, it opens again: the tests above broke only what
	 * they meant to. */
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_put(txn, "meta", "generation", 10, "\0\0\0\0\0\0\0\x07", 8) ==
	    MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_OK);
	if (db != NULL) {
		uint64_t generation = 0;

		CHECK(
		    db_generation(db, &generation) == DB_OK && generation == 7);
	}
	db_close(db);
}

static void
test_missing_meta(void)
{
	char dir[PATH_LEN];
	struct db *db = NULL;
	struct db_key key;
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	uint64_t generation = 99;
	int rc;

	/* An environment with records but no meta is not an index. */
	tmp_path(dir, "no-meta");
	CHECK(mkdir(dir, 0700) == 0);
	fill_key(&key, 0x55, 1);
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_put_cert(txn, &key, "x", 1) == MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);
	CHECK(db_open(dir, DB_MODE_WRITE, 0, &db) == DB_ERR_CORRUPT);
	CHECK(db_open(dir, DB_MODE_CREATE, 0, &db) == DB_ERR_CORRUPT);
	CHECK(db == NULL);

	/* Nor one whose "meta" is a plain key, not a database. */
	tmp_path(dir, "meta-not-db");
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_put(txn, NULL, "meta", 4, "x", 1) == MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);
	CHECK(db_open(dir, DB_MODE_CREATE, 0, &db) == DB_ERR_CORRUPT);

	/* An index that lost "certs". */
	tmp_path(dir, "no-certs");
	CHECK(make_index(dir, 1) == DB_OK);
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	if (txn != NULL) {
		MDB_dbi dbi;

		CHECK(mdb_dbi_open(txn, "certs", 0, &dbi) == MDB_SUCCESS);
		CHECK(mdb_drop(txn, dbi, 1) == MDB_SUCCESS);
		CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	}
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);

	/* An empty environment: only CREATE makes it an index. */
	tmp_path(dir, "empty-env");
	CHECK(mkdir(dir, 0700) == 0);
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_ERR_CORRUPT);
	CHECK(db_open(dir, DB_MODE_WRITE, 0, &db) == DB_ERR_CORRUPT);
	rc = db_open(dir, DB_MODE_CREATE, 0, &db);
	CHECK(rc == DB_OK);
	CHECK(db != NULL && db_generation(db, &generation) == DB_OK &&
	    generation == 0);
	db_close(db);
	db = NULL;
	CHECK(db_open(dir, DB_MODE_READ, 0, &db) == DB_OK);
	db_close(db);
}

/* bytes_of is the record layout db.c documents, built by hand so that the
 * test pins the format on disk. */
static void
bytes_of(const struct db_cert *cert, uint8_t out[RECORD_LEN])
{
	uint64_t revoked_at = (uint64_t)cert->revoked_at;
	uint64_t not_after = (uint64_t)cert->not_after;
	int i;

	out[0] = 1;
	out[1] = cert->state == DB_CERT_REVOKED ? 1 : 0;
	out[2] = cert->revocation_reason == -1
	    ? 0xff
	    : (uint8_t)cert->revocation_reason;
	out[3] = 0;
	for (i = 0; i < 8; i++) {
		out[4 + i] = (uint8_t)(revoked_at >> (56 - 8 * i));
		out[12 + i] = (uint8_t)(not_after >> (56 - 8 * i));
	}
}

static void
test_corrupt_records(void)
{
	struct bad_record {
		uint8_t bytes[RECORD_LEN + 1];
		size_t len;
	} bad[16];
	char dir[PATH_LEN];
	struct db *db = NULL;
	struct db_key key;
	struct db_cert revoked, good, got, want;
	uint8_t revoked_bytes[RECORD_LEN], good_bytes[RECORD_LEN];
	uint8_t raw[DB_ISSUER_ID_LEN + DB_SERIAL_MAX], flipped[RECORD_LEN];
	MDB_env *env = NULL;
	MDB_txn *txn = NULL;
	MDB_val v = {0, NULL};
	size_t i, n_bad = 0, byte, bit;
	int rc, reason;

	tmp_path(dir, "corrupt");
	rc = db_open(dir, DB_MODE_CREATE, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	revoked = revoked_cert(0x0102030405060708, 1, 0x1112131415161718);
	good = good_cert(-2);
	fill_key(&key, 0x66, 1);
	CHECK(put_one(db, &key, &revoked) == DB_OK);
	fill_key(&key, 0x66, 2);
	CHECK(put_one(db, &key, &good) == DB_OK);
	db_close(db);
	db = NULL;
	bytes_of(&revoked, revoked_bytes);
	bytes_of(&good, good_bytes);

	/* The key and record layouts are as documented. */
	CHECK(raw_begin(dir, &env, &txn) == MDB_SUCCESS);
	if (txn == NULL)
		return;
	fill_key(&key, 0x66, 1);
	CHECK(
	    raw_get(txn, "certs", raw, raw_key(&key, raw), &v) == MDB_SUCCESS);
	CHECK(v.mv_size == RECORD_LEN &&
	    memcmp(v.mv_data, revoked_bytes, RECORD_LEN) == 0);
	fill_key(&key, 0x66, 2);
	CHECK(
	    raw_get(txn, "certs", raw, raw_key(&key, raw), &v) == MDB_SUCCESS);
	CHECK(v.mv_size == RECORD_LEN &&
	    memcmp(v.mv_data, good_bytes, RECORD_LEN) == 0);

	/* Each of these must read as DB_ERR_CORRUPT. */
	memset(bad, 0, sizeof(bad));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(bad[i].bytes, revoked_bytes, RECORD_LEN);
		bad[i].len = RECORD_LEN;
	}
	bad[n_bad++].len = 0;
	bad[n_bad++].len = RECORD_LEN - 1;
	bad[n_bad++].len = RECORD_LEN + 1; /* version 1 has no tail */
	bad[n_bad++].bytes[0] = 0;
	bad[n_bad++].bytes[0] = 2;
	bad[n_bad++].bytes[1] = 2;
	bad[n_bad++].bytes[1] = 0xff;
	bad[n_bad++].bytes[2] = 7;
	bad[n_bad++].bytes[2] = 11;
	bad[n_bad++].bytes[2] = 0xfe;
	bad[n_bad++].bytes[3] = 1;
	bad[n_bad].bytes[1] = 0; /* good, yet revoked_at is set */
	bad[n_bad++].bytes[2] = 0xff;
	memcpy(bad[n_bad].bytes, good_bytes, RECORD_LEN);
	bad[n_bad++].bytes[2] = 1; /* good, yet has a reason */
	for (i = 0; i < n_bad; i++) {
		fill_key(&key, 0x66, 100 + (uint32_t)i);
		CHECK(raw_put_cert(txn, &key, bad[i].bytes, bad[i].len) ==
		    MDB_SUCCESS);
	}
	/* Every truncation, and every single bit flipped. */
	for (i = 0; i < RECORD_LEN; i++) {
		fill_key(&key, 0x66, 200 + (uint32_t)i);
		CHECK(raw_put_cert(txn, &key, revoked_bytes, i) == MDB_SUCCESS);
	}
	for (i = 0; i < N_BITS; i++) {
		memcpy(flipped, revoked_bytes, RECORD_LEN);
		flipped[i / 8] ^= (uint8_t)(1u << (i % 8));
		fill_key(&key, 0x66, 1000 + (uint32_t)i);
		CHECK(raw_put_cert(txn, &key, flipped, RECORD_LEN) ==
		    MDB_SUCCESS);
	}
	CHECK(raw_commit(env, txn) == MDB_SUCCESS);

	rc = db_open(dir, DB_MODE_READ, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	for (i = 0; i < n_bad; i++) {
		fill_key(&key, 0x66, 100 + (uint32_t)i);
		got = sentinel;
		CHECK(db_lookup(db, &key, &got) == DB_ERR_CORRUPT);
		CHECK(cert_equal(&got, &sentinel));
	}
	for (i = 0; i < RECORD_LEN; i++) {
		fill_key(&key, 0x66, 200 + (uint32_t)i);
		got = sentinel;
		CHECK(db_lookup(db, &key, &got) == DB_ERR_CORRUPT);
		CHECK(cert_equal(&got, &sentinel));
	}
	/* A flip in the times gives another valid record; a flip in the
	 * reason may give another valid reason; anything else is refused. */
	for (i = 0; i < N_BITS; i++) {
		byte = i / 8;
		bit = i % 8;
		want = revoked;
		reason = revoked.revocation_reason ^ (1 << bit);
		fill_key(&key, 0x66, 1000 + (uint32_t)i);
		got = sentinel;
		rc = db_lookup(db, &key, &got);
		if (byte >= 12) {
			want.not_after = (int64_t)((uint64_t)want.not_after ^
			    (uint64_t)1 << (8 * (19 - byte) + bit));
			CHECK(rc == DB_OK && cert_equal(&got, &want));
		} else if (byte >= 4) {
			want.revoked_at = (int64_t)((uint64_t)want.revoked_at ^
			    (uint64_t)1 << (8 * (11 - byte) + bit));
			CHECK(rc == DB_OK && cert_equal(&got, &want));
		} else if (byte == 2 && reason <= 10 && reason != 7) {
			want.revocation_reason = reason;
			CHECK(rc == DB_OK && cert_equal(&got, &want));
		} else {
			CHECK(rc == DB_ERR_CORRUPT &&
			    cert_equal(&got, &sentinel));
		}
	}
	/* The untouched records still read. */
	fill_key(&key, 0x66, 1);
	CHECK(db_lookup(db, &key, &got) == DB_OK && cert_equal(&got, &revoked));
	db_close(db);
}

/* damage_file rewrites data.mdb in dir in one of several ways. */
static int
damage_file(const char *dir, int how)
{
	char path[PATH_LEN];
	long page_size = sysconf(_SC_PAGESIZE);
	uint32_t state = 0x12345678;
	FILE *f;
	int i, n, rc = -1;

	n = snprintf(path, sizeof(path), "%s/data.mdb", dir);
	if (n < 0 || (size_t)n >= sizeof(path) || page_size <= 0)
		return -1;
	switch (how) {
	case 0:
		return truncate(path, 0);
	case 1:
		return truncate(path, 100); /* inside the first meta page */
	case 2:
		return truncate(path, page_size); /* the second meta is gone */
	case 3: /* the first meta page zeroed */
	case 4: /* garbage throughout */
		if ((f = fopen(path, "r+b")) == NULL)
			return -1;
		rc = 0;
		for (i = 0; i < (how == 3 ? page_size : 4 * page_size); i++) {
			state ^= state << 13;
			state ^= state >> 17;
			state ^= state << 5;
			if (fputc(how == 3 ? 0 : (int)(state & 0xff), f) == EOF)
				rc = -1;
		}
		if (fclose(f) != 0)
			rc = -1;
		return rc;
	}
	return rc;
}

static void
test_damaged_file(void)
{
	char dir[PATH_LEN], name[32];
	struct db *db;
	int how, n, rc;

	for (how = 0; how < 5; how++) {
		n = snprintf(name, sizeof(name), "damaged-%d", how);
		CHECK(n > 0 && (size_t)n < sizeof(name));
		tmp_path(dir, name);
		CHECK(make_index(dir, 200) == DB_OK);
		CHECK(damage_file(dir, how) == 0);
		db = (struct db *)&db;
		rc = db_open(dir, DB_MODE_READ, 0, &db);
		CHECK(how == 0 ? rc == DB_ERR_CORRUPT : rc != DB_OK);
		CHECK(db == NULL);
		db = (struct db *)&db;
		rc = db_open(dir, DB_MODE_WRITE, 0, &db);
		CHECK(how == 0 ? rc == DB_ERR_CORRUPT : rc != DB_OK);
		CHECK(db == NULL);
	}
}

/* Record i of the shared set in one of the writer's two versions. */
static struct db_cert
shared_cert(uint32_t i, unsigned int version)
{
	if (version % 2 == 0)
		return revoked_cert(1000 + i, 1, 5000 + i);
	return good_cert(6000 + i);
}

struct reader {
	struct db *db;
	const atomic_bool *is_writing;
	unsigned long passes;
	unsigned long wrong; /* answers that match no committed state */
};

static void *
read_loop(void *arg)
{
	struct reader *r = arg;
	struct db_key key;
	struct db_cert got, a, b;
	uint64_t generation, last_generation = 0;
	bool is_last_pass;
	uint32_t i;
	int rc;

	do {
		/* Read the flag first, so one whole pass follows the writer's
		 * last commit. */
		is_last_pass = !atomic_load(r->is_writing);
		for (i = 0; i < N_SHARED; i++) {
			fill_key(&key, 0x77, i);
			a = shared_cert(i, 0);
			b = shared_cert(i, 1);
			rc = db_lookup(r->db, &key, &got);
			if (rc != DB_OK ||
			    !(cert_equal(&got, &a) || cert_equal(&got, &b))) {
				fprintf(stderr, "reader: key %u: %s (%d)\n", i,
				    db_strerror(rc), db_errno(r->db));
				r->wrong++;
			}
		}
		rc = db_generation(r->db, &generation);
		if (rc != DB_OK || generation < last_generation) {
			fprintf(stderr, "reader: generation %llu after %llu: %s\n",
			    (unsigned long long)generation,
			    (unsigned long long)last_generation, db_strerror(rc));
			r->wrong++;
		}
		last_generation = generation;
		r->passes++;
	} while (!is_last_pass);
	return NULL;
}

static void
test_concurrent_readers(void)
{
	char dir[PATH_LEN];
	struct reader readers[N_READERS];
	pthread_t threads[N_READERS];
	atomic_bool is_writing;
	struct db *db = NULL;
	struct db_txn *txn;
	struct db_key key;
	struct db_cert cert;
	uint64_t generation = 0;
	unsigned int c, failed_writes = 0;
	bool is_started[N_READERS];
	uint32_t i;
	int rc;

	tmp_path(dir, "concurrent");
	rc = db_open(dir, DB_MODE_CREATE, 0, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	CHECK(db_txn_begin(db, &txn) == DB_OK);
	for (i = 0; i < N_SHARED; i++) {
		fill_key(&key, 0x77, i);
		cert = shared_cert(i, 0);
		CHECK(db_txn_put(txn, &key, &cert) == DB_OK);
	}
	CHECK(db_txn_commit(txn) == DB_OK);

	atomic_init(&is_writing, true);
	for (i = 0; i < N_READERS; i++) {
		readers[i].db = db;
		readers[i].is_writing = &is_writing;
		readers[i].passes = 0;
		readers[i].wrong = 0;
		is_started[i] = pthread_create(&threads[i], NULL, read_loop,
				    &readers[i]) == 0;
		CHECK(is_started[i]);
	}
	for (c = 1; c <= N_COMMITS; c++) {
		if (db_txn_begin(db, &txn) != DB_OK) {
			failed_writes++;
			continue;
		}
		for (i = 0; i < N_SHARED; i++) {
			fill_key(&key, 0x77, i);
			cert = shared_cert(i, c);
			if (db_txn_put(txn, &key, &cert) != DB_OK)
				failed_writes++;
		}
		if (db_txn_commit(txn) != DB_OK)
			failed_writes++;
	}
	atomic_store(&is_writing, false);
	for (i = 0; i < N_READERS; i++) {
		if (!is_started[i])
			continue;
		CHECK(pthread_join(threads[i], NULL) == 0);
		CHECK(readers[i].passes > 0);
		CHECK(readers[i].wrong == 0);
	}
	CHECK(failed_writes == 0);
	CHECK(db_generation(db, &generation) == DB_OK &&
	    generation == N_COMMITS + 1);
	db_close(db);
}

static void
test_map_full(void)
{
	char dir[PATH_LEN];
	struct db *db = NULL;
	struct db_txn *txn = NULL;
	struct db_key key;
	struct db_cert cert, got;
	uint64_t generation = 0;
	uint32_t i, n_committed = 10, n_commits = 1;
	int rc = DB_OK;

	tmp_path(dir, "full");
	rc = db_open(dir, DB_MODE_CREATE, SMALL_MAP, &db);
	CHECK(rc == DB_OK);
	if (rc != DB_OK)
		return;
	CHECK(db_txn_begin(db, &txn) == DB_OK);
	for (i = 0; i < n_committed; i++) {
		fill_key(&key, 0x88, i);
		cert = revoked_cert(i + 1, 0, i);
		CHECK(db_txn_put(txn, &key, &cert) == DB_OK);
	}
	CHECK(db_txn_commit(txn) == DB_OK);

	/* One transaction too big for the map. */
	CHECK(db_txn_begin(db, &txn) == DB_OK);
	for (i = n_committed; i < MAX_RECORDS && rc == DB_OK; i++) {
		fill_key(&key, 0x88, i);
		cert = revoked_cert(i + 1, 0, i);
		rc = db_txn_put(txn, &key, &cert);
	}
	CHECK(rc == DB_ERR_FULL);
	db_txn_abort(txn);
	fill_key(&key, 0x88, n_committed);
	CHECK(db_lookup(db, &key, &got) == DB_ERR_NOT_FOUND);

	/* Then one record per transaction until the map fills. */
	for (rc = DB_OK, i = n_committed; i < MAX_RECORDS && rc == DB_OK; i++) {
		fill_key(&key, 0x88, i);
		cert = revoked_cert(i + 1, 0, i);
		rc = put_one(db, &key, &cert);
		if (rc == DB_OK) {
			n_committed++;
			n_commits++;
		}
	}
	CHECK(rc == DB_ERR_FULL);
	CHECK(strcmp(db_strerror(rc), "index map full") == 0);
	CHECK(n_committed > 10);

	/* Everything committed before the failure is intact. */
	for (i = 0; i < n_committed; i++) {
		fill_key(&key, 0x88, i);
		cert = revoked_cert(i + 1, 0, i);
		got = sentinel;
		CHECK(db_lookup(db, &key, &got) == DB_OK &&
		    cert_equal(&got, &cert));
	}
	fill_key(&key, 0x88, n_committed);
	CHECK(db_lookup(db, &key, &got) == DB_ERR_NOT_FOUND);
	CHECK(
	    db_generation(db, &generation) == DB_OK && generation == n_commits);
	db_close(db);
	db = NULL;

	/* A larger map is the cure the error names. */
	CHECK(db_open(dir, DB_MODE_WRITE, LARGER_MAP, &db) == DB_OK);
	if (db == NULL)
		return;
	fill_key(&key, 0x88, n_committed);
	cert = good_cert(1);
	CHECK(put_one(db, &key, &cert) == DB_OK);
	CHECK(db_lookup(db, &key, &got) == DB_OK && cert_equal(&got, &cert));
	fill_key(&key, 0x88, 0);
	cert = revoked_cert(1, 0, 0);
	CHECK(db_lookup(db, &key, &got) == DB_OK && cert_equal(&got, &cert));
	db_close(db);
}

static void
test_strerror(void)
{
	static const int errs[] = {DB_OK, DB_ERR_NOT_FOUND, DB_ERR_CORRUPT,
	    DB_ERR_IO, DB_ERR_VERSION, DB_ERR_FULL, DB_ERR_READONLY, DB_ERR_ARG,
	    DB_ERR_NOMEM, DB_ERR_NO_INDEX};
	const char *text[sizeof(errs) / sizeof(errs[0]) + 1];
	size_t i, j, n = sizeof(errs) / sizeof(errs[0]);

	/* Each code has its own words, and none reads as unknown. */
	text[n] = db_strerror(12345);
	for (i = 0; i < n; i++)
		text[i] = db_strerror(errs[i]);
	for (i = 0; i <= n; i++) {
		CHECK(text[i] != NULL && text[i][0] != '\0');
		for (j = 0; j < i && text[i] != NULL && text[j] != NULL; j++)
			CHECK(strcmp(text[i], text[j]) != 0);
	}
	CHECK(
	    strcmp(db_errno_str(MDB_INVALID), mdb_strerror(MDB_INVALID)) == 0);
	CHECK(db_errno(NULL) == 0);
}

int
main(void)
{
	if (mkdtemp(tmp_dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	test_missing_index();
	test_round_trip();
	test_generation_and_abort();
	test_bad_arguments();
	test_version();
	test_missing_meta();
	test_corrupt_records();
	test_damaged_file();
	test_concurrent_readers();
	test_map_full();
	test_strerror();
	CHECK(remove_tree(tmp_dir) == 0);
	return test_summary();
}
