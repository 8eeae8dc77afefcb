/* fuzz_conf.c - libFuzzer target: untrusted bytes as a configuration file
 * through conf_load(); aborts when a result breaks conf.h's contract. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

#define MIB ((uint64_t)1024 * 1024)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One file per process, rewritten for each input: no file system churn. */
static char conf_path[] = "/tmp/fuzz_conf.XXXXXX";
static int conf_fd = -1;

static void
remove_conf_file(void)
{
	if (conf_fd != -1) {
		(void)close(conf_fd);
		(void)unlink(conf_path);
		conf_fd = -1;
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if ((conf_fd = mkstemp(conf_path)) == -1) {
		perror("fuzz_conf: mkstemp");
		exit(1);
	}
	if (atexit(remove_conf_file) != 0)
		abort();
	return 0;
}

static void
check_string(const char *s, size_t max_len)
{
	if (s != NULL && (s[0] == '\0' || strlen(s) > max_len))
		abort();
}

/* check_conf tests what conf.h promises about a loaded struct conf. */
static void
check_conf(const struct conf *c)
{
	size_t i;

	if (c->listen_host == NULL || c->listen_host[0] == '\0' ||
	    c->listen_port == 0)
		abort();
	if (c->index_path == NULL || c->token_label == NULL ||
	    c->pin_file == NULL || c->responder_cert == NULL ||
	    c->pkcs11_module == NULL)
		abort();
	check_string(c->token_label, 32);
	if (c->key_label == NULL && c->key_id == NULL)
		abort();
	check_string(c->key_label, CONF_MAX_LINE);
	if (c->key_id != NULL && strlen(c->key_id) % 2 != 0)
		abort();
	if (c->n_issuer_certs < 1 || c->n_issuer_certs > CONF_MAX_ISSUERS)
		abort();
	for (i = 0; i < CONF_MAX_ISSUERS; i++)
		if ((c->issuer_certs[i] != NULL) != (i < c->n_issuer_certs))
			abort();
	if (c->validity_s < CONF_MIN_VALIDITY_S ||
	    c->validity_s > CONF_MAX_VALIDITY_S)
		abort();
	if (c->max_cert_ids < 1 || c->max_cert_ids > CONF_MAX_CERT_IDS ||
	    c->max_nonce_len < 1 || c->max_nonce_len > CONF_MAX_NONCE_LEN)
		abort();
	if (c->max_request_bytes < 512 || c->max_request_bytes > MIB ||
	    c->threads < 1 || c->threads > 256 || c->index_map_size < MIB)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_error err;
	struct conf *c = (struct conf *)&err; /* must become NULL on failure */
	int rc;

	if (ftruncate(conf_fd, 0) != 0 ||
	    (size > 0 && pwrite(conf_fd, data, size, 0) != (ssize_t)size))
		abort();
	rc = conf_load(conf_path, &c, &err);
	if (rc == CONF_OK) {
		if (c == NULL)
			abort();
		check_conf(c);
		conf_free(c);
	} else {
		if (c != NULL || err.message[0] == '\0' ||
		    rc < CONF_ERR_NOMEM || rc > CONF_ERR_IO)
			abort();
		if (memchr(err.message, '\0', sizeof(err.message)) == NULL ||
		    memchr(err.key, '\0', sizeof(err.key)) == NULL)
			abort();
	}
	return 0;
}
