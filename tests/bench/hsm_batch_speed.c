/* hsm_batch_speed.c - how fast hsm/ signs through hsm_batch_start(): N
 * synthetic 200-byte messages, two batches always queued so the workers
 * never idle, against a real token, from this process alone or with
 * helper processes (--processes). Prints `sigs=N seconds=T rate=R/s`;
 * the time leaves hsm_open() out. */
#include "hsm/hsm.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG_LEN   200
#define N_QUEUED  2
#define MAX_COUNT 100000000UL
#define MAX_BATCH 1000000UL

/* struct slot is one batch in the pipeline: its jobs and their messages. */
struct slot {
	struct hsm_job *jobs;
	uint8_t *msgs;
	size_t n;
	struct hsm_batch *batch;
};

static void
usage(void)
{
	(void)fprintf(stderr,
	    "usage: hsm_batch_speed --module PATH --token LABEL --key LABEL "
	    "--pin-file F --count N --in-flight M --sessions S --batch B "
	    "[--processes P]\n");
	exit(2);
}

/* parse_count reads a decimal number from min to max, or exits. */
static unsigned long
parse_count(const char *text, unsigned long min, unsigned long max)
{
	unsigned long value;
	char *end;

	if (text[0] < '0' || text[0] > '9')
		usage();
	value = strtoul(text, &end, 10);
	if (*end != '\0' || value < min || value > max)
		usage();
	return value;
}

/* slot_start fills the slot's messages with the n messages from first on
 * and queues them as one batch. */
static int
slot_start(struct hsm *hsm, struct slot *slot, size_t first, size_t n)
{
	uint8_t *msg;
	size_t i;

	for (i = 0; i < n; i++) {
		msg = slot->msgs + i * MSG_LEN;
		memset(msg, 'm', MSG_LEN);
		(void)snprintf((char *)msg, MSG_LEN, "message %zu", first + i);
		slot->jobs[i].msg = msg;
		slot->jobs[i].msg_len = MSG_LEN;
	}
	slot->n = n;
	return hsm_batch_start(hsm, slot->jobs, n, &slot->batch);
}

/* slot_wait waits for the slot's batch and returns its failed jobs. */
static size_t
slot_wait(struct slot *slot)
{
	size_t i, n_failed = 0;

	if (hsm_batch_wait(slot->batch) != HSM_OK)
		for (i = 0; i < slot->n; i++)
			if (slot->jobs[i].rc != HSM_OK)
				n_failed++;
	slot->batch = NULL;
	slot->n = 0;
	return n_failed;
}

static double
now_s(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		abort();
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	struct hsm_params params;
	struct slot slots[N_QUEUED];
	struct hsm *hsm = NULL;
	unsigned long count = 0, batch_len = 0;
	size_t queued = 0, n_failed = 0, n_batch;
	double start, seconds;
	int i, cur, rc, status = 1;

	memset(&params, 0, sizeof(params));
	memset(slots, 0, sizeof(slots));
	for (i = 1; i < argc; i += 2) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--module") == 0)
			params.module_path = argv[i + 1];
		else if (strcmp(argv[i], "--token") == 0)
			params.token_label = argv[i + 1];
		else if (strcmp(argv[i], "--key") == 0)
			params.key_label = argv[i + 1];
		else if (strcmp(argv[i], "--pin-file") == 0)
			params.pin_file = argv[i + 1];
		else if (strcmp(argv[i], "--count") == 0)
			count = parse_count(argv[i + 1], 1, MAX_COUNT);
		else if (strcmp(argv[i], "--in-flight") == 0)
			params.in_flight = (unsigned int)parse_count(
			    argv[i + 1], 0, HSM_MAX_IN_FLIGHT);
		else if (strcmp(argv[i], "--sessions") == 0)
			params.sessions = (unsigned int)parse_count(
			    argv[i + 1], 0, HSM_MAX_SESSIONS);
		else if (strcmp(argv[i], "--batch") == 0)
			batch_len = parse_count(argv[i + 1], 1, MAX_BATCH);
		else if (strcmp(argv[i], "--processes") == 0)
			params.processes = (unsigned int)parse_count(
			    argv[i + 1], 0, HSM_MAX_PROCESSES);
		else
			usage();
	}
	if (params.module_path == NULL || params.token_label == NULL ||
	    params.key_label == NULL || params.pin_file == NULL || count == 0 ||
	    batch_len == 0)
		usage();

	for (i = 0; i < N_QUEUED; i++) {
		slots[i].jobs = calloc(batch_len, sizeof(*slots[i].jobs));
		slots[i].msgs = calloc(batch_len, MSG_LEN);
		if (slots[i].jobs == NULL || slots[i].msgs == NULL) {
			(void)fprintf(
			    stderr, "hsm_batch_speed: out of memory\n");
			goto out;
		}
	}
	if ((rc = hsm_open(&params, &hsm)) != HSM_OK) {
		(void)fprintf(stderr,
		    "hsm_batch_speed: cannot open token %s: %s\n",
		    params.token_label, hsm_strerror(rc));
		goto out;
	}

	start = now_s();
	for (cur = 0;; cur = (cur + 1) % N_QUEUED) {
		/* Refill every empty slot, then wait for the oldest. */
		for (i = 0; i < N_QUEUED && queued < count; i++) {
			if (slots[(cur + i) % N_QUEUED].batch != NULL)
				continue;
			n_batch = count - queued < batch_len ? count - queued
							     : batch_len;
			if ((rc = slot_start(hsm, &slots[(cur + i) % N_QUEUED],
				 queued, n_batch)) != HSM_OK) {
				(void)fprintf(stderr,
				    "hsm_batch_speed: cannot start a batch: "
				    "%s\n",
				    hsm_strerror(rc));
				goto out;
			}
			queued += n_batch;
		}
		if (slots[cur].batch == NULL)
			break; /* all done: the oldest slot is empty */
		n_failed += slot_wait(&slots[cur]);
	}
	seconds = now_s() - start;

	(void)printf("sigs=%lu seconds=%.3f rate=%.0f/s\n", count, seconds,
	    (double)count / seconds);
	if (n_failed > 0) {
		(void)fprintf(stderr,
		    "hsm_batch_speed: %zu signatures failed\n", n_failed);
		goto out;
	}
	status = 0;
out:
	for (i = 0; i < N_QUEUED; i++) {
		if (slots[i].batch != NULL)
			(void)slot_wait(&slots[i]);
		free(slots[i].jobs);
		free(slots[i].msgs);
	}
	hsm_close(hsm);
	return status;
}
