/* presign.c - the batch pre-signer: read what is due from the index,
 * encode the responses, sign them as HSM batches that overlap the encoding
 * of the next batch and the index write of the last, and write each batch
 * in one transaction. Memory is bounded by the batch size, never by the
 * number of certificates. */
#include "responder/presign.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "responder/log.h"

#define MAX_BATCH          1024
#define MAX_QUEUED_STORES  1024
#define RELEASE_EVERY      1 /* batches between db_release_pages() */
#define BR_MAX_REFRESH_S   (4 * 24 * 3600) /* BR 4.9.10: within 4 days */
#define BR_MIN_BEFORE_NEXT (8 * 3600)      /* and 8 hours before expiry */

/* struct batch is one batch in flight: what was due, its encoding, and
 * the HSM jobs signing it. */
struct batch {
	size_t n;
	int64_t this_update;
	int64_t next_update;
	struct db_due due[MAX_BATCH];
	struct ocsp_cert_id ids[MAX_BATCH];
	uint8_t *tbs[MAX_BATCH];
	struct hsm_job jobs[MAX_BATCH];
	struct hsm_batch *signing;
};

/* struct stored is one on-demand answer waiting to be written. */
struct stored {
	struct stored *next;
	struct db_key key;
	enum db_hash hash;
	struct db_cert signed_for;
	int64_t this_update, next_update;
	size_t der_len;
	uint8_t der[];
};

struct presign {
	const struct authority *authority;
	struct db *db;
	size_t batch_size;
	struct batch *batches[2];
	uint64_t jitter_state;

	pthread_mutex_t lock; /* guards the fields below */
	pthread_cond_t wake;
	struct stored *stored;
	size_t n_stored;
	bool is_stopping;
	bool is_running;
	volatile sig_atomic_t stop_run; /* ends a long presign_run() */
	pthread_t thread;
	unsigned poll_ms;
};

int
presign_new(
    const struct authority *authority, struct db *db, struct presign **out)
{
	struct presign *p;
	size_t i;

	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -1;
	p->authority = authority;
	p->db = db;
	p->batch_size = authority->conf->sign_batch;
	if (p->batch_size < 1 || p->batch_size > MAX_BATCH)
		p->batch_size = MAX_BATCH;
	p->jitter_state = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
	    (uint64_t)(uintptr_t)p;
	(void)pthread_mutex_init(&p->lock, NULL);
	(void)pthread_cond_init(&p->wake, NULL);
	for (i = 0; i < 2; i++) {
		if ((p->batches[i] = calloc(1, sizeof(*p->batches[i]))) ==
		    NULL) {
			presign_free(p);
			return -1;
		}
	}
	*out = p;
	return 0;
}

/* next_random is xorshift64*: jitter needs spread, not secrecy. */
static uint64_t
next_random(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 2685821657736338717ULL;
}

int64_t
presign_refresh_at(struct presign *p, int64_t this_update, int64_t next_update)
{
	const struct conf *conf = p->authority->conf;
	int64_t validity = next_update - this_update;
	int64_t after = validity * (int64_t)conf->refresh_percent / 100;
	int64_t jitter_max =
	    validity * (int64_t)conf->refresh_jitter_percent / 100;
	int64_t before_next;

	/* BR 4.9.10: under sixteen hours of validity, update at least half
	 * of it before nextUpdate; from sixteen hours, at least eight hours
	 * before nextUpdate and within four days of thisUpdate. */
	before_next = validity < 2 * BR_MIN_BEFORE_NEXT ? validity / 2
							: BR_MIN_BEFORE_NEXT;
	if (after > BR_MAX_REFRESH_S)
		after = BR_MAX_REFRESH_S;
	if (after > validity - before_next)
		after = validity - before_next;
	if (jitter_max > 0)
		after -= (int64_t)(next_random(&p->jitter_state) %
		    (uint64_t)jitter_max);
	if (after < 1)
		after = 1;
	return this_update + after;
}

static const struct issuer *
issuer_by_id(const struct authority *a, const uint8_t *id)
{
	size_t i;

	for (i = 0; i < a->n_issuers; i++) {
		if (memcmp(a->issuers[i].id, id, DB_ISSUER_ID_LEN) == 0)
			return &a->issuers[i];
	}
	return NULL;
}

static void
release_batch(struct batch *b)
{
	size_t i;

	for (i = 0; i < b->n; i++) {
		free(b->tbs[i]);
		b->tbs[i] = NULL;
	}
	b->n = 0;
}

/* encode_batch turns due entries into HSM jobs. An entry it cannot encode
 * (its issuer is no longer configured) is dropped from the batch and
 * stays due. */
static void
encode_batch(struct presign *p, struct batch *b, const struct db_due *due,
    size_t n_due, int64_t now)
{
	const struct issuer *issuer;
	struct ocsp_single single;
	enum ocsp_hash hash;
	size_t i, tbs_len;

	b->n = 0;
	b->this_update = now;
	b->next_update = authority_next_update(p->authority, now);
	for (i = 0; i < n_due; i++) {
		if ((issuer = issuer_by_id(
			 p->authority, due[i].key.issuer_id)) == NULL)
			continue;
		hash = due[i].hash == DB_HASH_SHA256 ? OCSP_HASH_SHA256
						     : OCSP_HASH_SHA1;
		if (ocsp_cert_id_encode(hash, issuer->name_hash[hash],
			issuer->key_hash[hash], due[i].key.serial,
			due[i].key.serial_len, &b->ids[b->n]) != OCSP_OK)
			continue;
		memset(&single, 0, sizeof(single));
		single.id = &b->ids[b->n];
		single.this_update = b->this_update;
		single.next_update = b->next_update;
		single.revocation_reason = -1;
		switch (due[i].cert.state) {
		case DB_CERT_GOOD:
			single.status = OCSP_CERT_GOOD;
			break;
		case DB_CERT_REVOKED:
			single.status = OCSP_CERT_REVOKED;
			single.revoked_at = due[i].cert.revoked_at;
			single.revocation_reason =
			    due[i].cert.revocation_reason;
			break;
		}
		if (ocsp_tbs_encode(&p->authority->signer, &single, 1, NULL, 0,
			now, &b->tbs[b->n], &tbs_len) != OCSP_OK)
			continue;
		b->due[b->n] = due[i];
		b->jobs[b->n].msg = b->tbs[b->n];
		b->jobs[b->n].msg_len = tbs_len;
		b->n++;
	}
}

static bool
is_same_status(const struct db_cert *a, const struct db_cert *b)
{
	return a->state == b->state && a->revoked_at == b->revoked_at &&
	    a->revocation_reason == b->revocation_reason;
}

/* put_checked stores response for key unless the certificate's status
 * changed since it was signed: that response would state the old status,
 * so the entry stays due for the next pass. */
static int
put_checked(struct presign *p, struct db_txn *txn, const struct db_key *key,
    enum db_hash hash, struct db_response *response, bool *is_stored)
{
	struct db_cert current;
	unsigned int etag_len;
	int rc;

	*is_stored = false;
	rc = db_txn_get(txn, key, &current);
	if (rc == DB_ERR_NOT_FOUND)
		return DB_OK;
	if (rc != DB_OK)
		return rc;
	if (!is_same_status(&current, &response->signed_for))
		return DB_OK;
	response->refresh_at =
	    presign_refresh_at(p, response->this_update, response->next_update);
	if (EVP_Digest(response->der, response->der_len, response->etag,
		&etag_len, EVP_sha256(), NULL) != 1)
		return DB_ERR_NOMEM;
	if ((rc = db_txn_put_response(txn, key, hash, response)) != DB_OK)
		return rc;
	*is_stored = true;
	return DB_OK;
}

/* write_batch waits for b's signatures, assembles the responses and
 * writes them, with their schedule, in one transaction. */
static int
write_batch(struct presign *p, struct batch *b, struct presign_stats *stats)
{
	struct db_response *response = NULL;
	struct db_txn *txn = NULL;
	uint8_t *der = NULL;
	size_t i, der_len;
	bool is_stored;
	int rc;

	(void)hsm_batch_wait(b->signing);
	b->signing = NULL;
	if ((response = malloc(sizeof(*response))) == NULL) {
		rc = DB_ERR_NOMEM;
		goto out;
	}
	if ((rc = db_txn_begin(p->db, &txn)) != DB_OK)
		goto out;
	for (i = 0; i < b->n; i++) {
		if (b->jobs[i].rc != HSM_OK) {
			stats->n_failed++;
			continue;
		}
		if (ocsp_response_assemble(&p->authority->signer, b->tbs[i],
			b->jobs[i].msg_len, b->jobs[i].sig, b->jobs[i].sig_len,
			&der, &der_len) != OCSP_OK ||
		    der_len > DB_MAX_RESPONSE_LEN) {
			free(der);
			der = NULL;
			stats->n_failed++;
			continue;
		}
		response->signed_for = b->due[i].cert;
		response->this_update = b->this_update;
		response->next_update = b->next_update;
		memcpy(response->der, der, der_len);
		response->der_len = der_len;
		free(der);
		der = NULL;
		rc = put_checked(p, txn, &b->due[i].key, b->due[i].hash,
		    response, &is_stored);
		if (rc != DB_OK)
			goto out;
		if (!is_stored) {
			stats->n_skipped++;
			continue;
		}
		if ((rc = db_txn_done_due(txn, &b->due[i])) != DB_OK)
			goto out;
		stats->n_signed++;
	}
	rc = db_txn_commit(txn);
	txn = NULL;
out:
	db_txn_abort(txn);
	free(response);
	release_batch(b);
	return rc;
}

int
presign_run(struct presign *p, int64_t now, volatile sig_atomic_t *stop,
    presign_progress_fn progress, void *progress_cls,
    struct presign_stats *stats)
{
	struct db_due *due = NULL;
	struct db_due_pos pos = {0};
	struct batch *current, *previous = NULL;
	uint64_t failed_before, n_written = 0;
	size_t n_due;
	int which = 0, rc = DB_ERR_NOMEM;
	bool is_done = false;

	if ((due = calloc(p->batch_size, sizeof(*due))) == NULL)
		goto out;
	while (!is_done) {
		current = p->batches[which];
		rc = db_due_list(p->db, now, &pos, due, p->batch_size, &n_due);
		if (rc != DB_OK)
			goto out;
		if (n_due == 0 || (stop != NULL && *stop))
			is_done = true;
		else
			encode_batch(
			    p, current, due, n_due, (int64_t)time(NULL));
		/* Two batches in the HSM's queue: it never waits for us. */
		if (!is_done && current->n > 0 &&
		    hsm_batch_start(p->authority->signer.hsm, current->jobs,
			current->n, &current->signing) != HSM_OK) {
			release_batch(current);
			rc = DB_ERR_NOMEM;
			goto out;
		}
		if (previous != NULL) {
			failed_before = stats->n_failed;
			if ((rc = write_batch(p, previous, stats)) != DB_OK)
				goto out;
			/* Memory stays flat however large the index: what a
			 * pass has read stays in the page cache, not in us. */
			if (++n_written % RELEASE_EVERY == 0 &&
			    (rc = db_release_pages(p->db)) != DB_OK)
				goto out;
			if (progress != NULL)
				progress(progress_cls, stats);
			/* A token that fails every signature is down: stop
			 * rather than spin through the whole index. */
			if (previous->n > 0 &&
			    stats->n_failed - failed_before == previous->n)
				is_done = true;
			previous = NULL;
		}
		if (current->signing != NULL)
			previous = current;
		which ^= 1;
	}
	rc = DB_OK;
out:
	/* Never leave a batch in the HSM's hands: wait for it, keep what
	 * it signed if the index still works. */
	if (previous != NULL && previous->signing != NULL) {
		if (rc == DB_OK)
			rc = write_batch(p, previous, stats);
		else {
			(void)hsm_batch_wait(previous->signing);
			previous->signing = NULL;
			release_batch(previous);
		}
	}
	free(due);
	return rc;
}

void
presign_store(void *cls, const struct db_key *key, enum db_hash hash,
    const struct db_cert *signed_for, const uint8_t *der, size_t der_len,
    int64_t this_update, int64_t next_update)
{
	struct presign *p = cls;
	struct stored *s;

	if (der_len > DB_MAX_RESPONSE_LEN)
		return;
	(void)pthread_mutex_lock(&p->lock);
	if (p->n_stored >= MAX_QUEUED_STORES || !p->is_running) {
		(void)pthread_mutex_unlock(&p->lock);
		return;
	}
	(void)pthread_mutex_unlock(&p->lock);
	if ((s = malloc(sizeof(*s) + der_len)) == NULL)
		return;
	s->key = *key;
	s->hash = hash;
	s->signed_for = *signed_for;
	s->this_update = this_update;
	s->next_update = next_update;
	s->der_len = der_len;
	memcpy(s->der, der, der_len);
	(void)pthread_mutex_lock(&p->lock);
	s->next = p->stored;
	p->stored = s;
	p->n_stored++;
	(void)pthread_cond_signal(&p->wake);
	(void)pthread_mutex_unlock(&p->lock);
}

/* write_stored writes the queued on-demand answers in one transaction. */
static void
write_stored(
    struct presign *p, struct stored *list, struct presign_stats *stats)
{
	struct db_response *response = NULL;
	struct db_txn *txn = NULL;
	struct stored *s, *next;
	bool is_stored;
	int rc = DB_ERR_NOMEM;

	if ((response = malloc(sizeof(*response))) == NULL)
		goto out;
	if ((rc = db_txn_begin(p->db, &txn)) != DB_OK)
		goto out;
	for (s = list; s != NULL; s = s->next) {
		response->signed_for = s->signed_for;
		response->this_update = s->this_update;
		response->next_update = s->next_update;
		response->der_len = s->der_len;
		memcpy(response->der, s->der, s->der_len);
		rc =
		    put_checked(p, txn, &s->key, s->hash, response, &is_stored);
		if (rc != DB_OK)
			goto out;
		if (is_stored)
			stats->n_stored++;
	}
	rc = db_txn_commit(txn);
	txn = NULL;
out:
	if (rc != DB_OK)
		log_warn("presign: cannot keep on-demand answers: %s",
		    db_strerror(rc));
	db_txn_abort(txn);
	free(response);
	for (s = list; s != NULL; s = next) {
		next = s->next;
		free(s);
	}
}

static void *
refresh_loop(void *arg)
{
	struct presign *p = arg;
	struct presign_stats stats = {0}, last = {0};
	struct stored *list;
	struct timespec deadline;
	int rc;

	(void)pthread_mutex_lock(&p->lock);
	while (!p->is_stopping) {
		list = p->stored;
		p->stored = NULL;
		p->n_stored = 0;
		(void)pthread_mutex_unlock(&p->lock);

		if (list != NULL)
			write_stored(p, list, &stats);
		rc = presign_run(
		    p, (int64_t)time(NULL), &p->stop_run, NULL, NULL, &stats);
		if (rc != DB_OK)
			log_warn(
			    "presign: refresh stopped: %s", db_strerror(rc));
		if (stats.n_signed != last.n_signed ||
		    stats.n_failed != last.n_failed)
			log_info(
			    "presign: signed=%llu failed=%llu skipped=%llu "
			    "kept=%llu",
			    (unsigned long long)stats.n_signed,
			    (unsigned long long)stats.n_failed,
			    (unsigned long long)stats.n_skipped,
			    (unsigned long long)stats.n_stored);
		last = stats;

		(void)pthread_mutex_lock(&p->lock);
		if (p->is_stopping || p->stored != NULL)
			continue;
		(void)clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_nsec += (long)(p->poll_ms % 1000) * 1000000L;
		deadline.tv_sec += (time_t)(p->poll_ms / 1000) +
		    deadline.tv_nsec / 1000000000L;
		deadline.tv_nsec %= 1000000000L;
		(void)pthread_cond_timedwait(&p->wake, &p->lock, &deadline);
	}
	(void)pthread_mutex_unlock(&p->lock);
	return NULL;
}

int
presign_start_refresher(struct presign *p, unsigned poll_ms)
{
	int rc;

	p->poll_ms = poll_ms > 0 ? poll_ms : 500;
	(void)pthread_mutex_lock(&p->lock);
	p->is_running = true;
	(void)pthread_mutex_unlock(&p->lock);
	if ((rc = pthread_create(&p->thread, NULL, refresh_loop, p)) != 0) {
		p->is_running = false;
		errno = rc;
		return -1;
	}
	return 0;
}

void
presign_free(struct presign *p)
{
	struct stored *s, *next;
	size_t i;

	if (p == NULL)
		return;
	if (p->is_running) {
		(void)pthread_mutex_lock(&p->lock);
		p->is_stopping = true;
		p->stop_run = 1;
		(void)pthread_cond_signal(&p->wake);
		(void)pthread_mutex_unlock(&p->lock);
		(void)pthread_join(p->thread, NULL);
		(void)pthread_mutex_lock(&p->lock);
		p->is_running = false;
		(void)pthread_mutex_unlock(&p->lock);
	}
	for (s = p->stored; s != NULL; s = next) {
		next = s->next;
		free(s);
	}
	for (i = 0; i < 2; i++)
		free(p->batches[i]);
	(void)pthread_mutex_destroy(&p->lock);
	(void)pthread_cond_destroy(&p->wake);
	free(p);
}
