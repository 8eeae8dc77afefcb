/* presign.h - batch pre-signing: every certificate's response signed ahead
 * of time at the HSM's full speed and stored in the index, re-signed when
 * it passes its refresh point or its status changes. Shared by
 * `ocspctl sign` and the responder's background refresher. */
#ifndef RESPONDER_PRESIGN_H
#define RESPONDER_PRESIGN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "responder/authority.h"

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

struct presign_stats {
	uint64_t n_signed;  /* responses signed and stored */
	uint64_t n_skipped; /* status changed while signing: left due */
	uint64_t n_failed;  /* the HSM failed: left due */
	uint64_t n_stored;  /* on-demand answers kept (refresher only) */
};

/* presign_progress_fn is called now and then during presign_run() with
 * the running totals. */
typedef void (*presign_progress_fn)(
    void *cls, const struct presign_stats *stats);

struct presign;

/* presign_new prepares pre-signing over authority and db (borrowed until
 * presign_free()); db must be writable. Returns 0 or -1 (out of memory). */
int presign_new(const struct authority *authority, struct db *db,
    struct presign **out) MUST_CHECK;

/* presign_free stops the refresher if it runs and releases p. Accepts
 * NULL. */
void presign_free(struct presign *p);

/* presign_run signs every response due at or before now, earliest first,
 * in batches that keep the HSM busy while the next batch is encoded and
 * the last one is written; each batch is one index transaction, so an
 * interrupted run leaves only whole batches behind. It stops early when
 * *stop becomes non-zero, or after the first batch in which every
 * signature failed. Adds to *stats. Returns 0, or a negative enum db_err
 * when the index failed. */
int presign_run(struct presign *p, int64_t now, volatile sig_atomic_t *stop,
    presign_progress_fn progress, void *progress_cls,
    struct presign_stats *stats) MUST_CHECK;

/* presign_refresh_at returns when a response produced at this_update and
 * valid until next_update falls due: at the configured fraction of its
 * validity, at the latest 4 days after this_update and 8 hours before
 * next_update (CA/B Forum BR 4.9.10), moved earlier by a random jitter so
 * that a whole CA does not fall due at once. */
int64_t presign_refresh_at(
    struct presign *p, int64_t this_update, int64_t next_update);

/* presign_start_refresher runs presign_run() in a background thread every
 * poll_ms, and writes what presign_store() queued. */
int presign_start_refresher(struct presign *p, unsigned poll_ms) MUST_CHECK;

/* presign_store queues an answer signed on demand for the refresher to
 * write (a respond_store_fn; cls is the struct presign). It never blocks:
 * when the queue is full the answer is dropped, as the refresher will sign
 * it anyway. */
void presign_store(void *cls, const struct db_key *key, enum db_hash hash,
    const struct db_cert *signed_for, const uint8_t *der, size_t der_len,
    int64_t this_update, int64_t next_update);

#endif
