/* test_presign.c - the refresh schedule keeps CA/B Forum BR 4.9.10 for
 * every validity the configuration allows, and its jitter spreads a CA's
 * refreshes without ever making one late. */
#include <string.h>

#include "responder/presign.h"
#include "tests/test.h"

#define HOUR 3600
#define DAY  (24 * HOUR)

static struct conf conf;
static struct authority authority;

static struct presign *
new_presign(
    uint32_t validity_s, unsigned refresh_percent, unsigned jitter_percent)
{
	struct presign *p = NULL;

	memset(&conf, 0, sizeof(conf));
	conf.validity_s = validity_s;
	conf.refresh_percent = refresh_percent;
	conf.refresh_jitter_percent = jitter_percent;
	conf.sign_batch = 16;
	authority.conf = &conf;
	CHECK(presign_new(&authority, NULL, &p) == 0);
	return p;
}

/* Every refresh point, over many draws of the jitter, lies after
 * thisUpdate and within the BR's limits. */
static void
check_bounds(
    uint32_t validity_s, unsigned refresh_percent, unsigned jitter_percent)
{
	struct presign *p =
	    new_presign(validity_s, refresh_percent, jitter_percent);
	const int64_t this_update = 1800000000;
	const int64_t next_update = this_update + validity_s - 1;
	int64_t at, lowest = next_update, highest = this_update;
	int64_t validity = next_update - this_update;
	int64_t before_next = validity < 16 * HOUR ? validity / 2 : 8 * HOUR;
	int i, n_bad = 0;

	if (p == NULL)
		return;
	for (i = 0; i < 10000; i++) {
		at = presign_refresh_at(p, this_update, next_update);
		if (at <= this_update || at > this_update + 4 * DAY ||
		    at > next_update - before_next)
			n_bad++;
		if (at < lowest)
			lowest = at;
		if (at > highest)
			highest = at;
	}
	CHECK(n_bad == 0);
	/* The jitter spreads: with 10% of validity the draws span most of
	 * that window. */
	if (jitter_percent > 0)
		CHECK(highest - lowest >
		    validity * (int64_t)jitter_percent / 100 * 9 / 10);
	else
		CHECK(highest == lowest);
	presign_free(p);
}

static void
test_refresh_points(void)
{
	struct presign *p;
	const int64_t t = 1800000000;

	check_bounds(8 * HOUR, 50, 10);
	check_bounds(16 * HOUR, 50, 10);
	check_bounds(DAY, 50, 10);
	check_bounds(DAY, 90, 0);
	check_bounds(4 * DAY, 50, 10);
	check_bounds(10 * DAY, 50, 10);
	check_bounds(10 * DAY, 90, 30);

	/* Without jitter: half of a day's validity, exactly. */
	p = new_presign(DAY, 50, 0);
	if (p != NULL) {
		CHECK(
		    presign_refresh_at(p, t, t + DAY - 1) == t + (DAY - 1) / 2);
		presign_free(p);
	}
	/* Ten days at 50% would be five days: the BR's four win. */
	p = new_presign(10 * DAY, 50, 0);
	if (p != NULL) {
		CHECK(
		    presign_refresh_at(p, t, t + 10 * DAY - 1) == t + 4 * DAY);
		presign_free(p);
	}
	/* Eight hours at 90% would leave under four hours: half wins. */
	p = new_presign(8 * HOUR, 90, 0);
	if (p != NULL) {
		CHECK(presign_refresh_at(p, t, t + 8 * HOUR - 1) ==
		    t + (8 * HOUR - 1) - (8 * HOUR - 1) / 2);
		presign_free(p);
	}
}

int
main(void)
{
	test_refresh_points();
	presign_free(NULL);
	return test_summary();
}
