/* main.c - ocsp-responder: read the configuration, open the index and the
 * token, check the certificates, serve until SIGTERM or SIGINT. Only this
 * startup path may exit the process. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "db/db.h"
#include "hsm/hsm.h"
#include "responder/authority.h"
#include "responder/http.h"
#include "responder/log.h"
#include "responder/presign.h"
#include "responder/respond.h"

static void
usage(void)
{
	(void)fprintf(stderr,
	    "usage: ocsp-responder [-n] [-d] [-l host:port] -f config\n"
	    "  -f config     the configuration file\n"
	    "  -l host:port  listen here instead of the file's `listen`\n"
	    "  -n            check the configuration file and exit\n"
	    "  -d            log debug messages\n");
	exit(2);
}

/* parse_listen splits host:port or [v6]:port; host points into text. */
static int
parse_listen(char *text, char **host, uint16_t *port)
{
	char *colon, *end;
	unsigned long value;

	if ((colon = strrchr(text, ':')) == NULL)
		return -1;
	*colon = '\0';
	errno = 0;
	value = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || end == colon + 1 || value == 0 ||
	    value > 65535)
		return -1;
	if (text[0] == '[' && colon > text && colon[-1] == ']') {
		colon[-1] = '\0';
		text++;
	}
	*host = text;
	*port = (uint16_t)value;
	return 0;
}

/* open_token opens the HSM key and turns each failure into a message an
 * operator can act on. The PIN itself never appears. */
static struct hsm *
open_token(const struct conf *conf)
{
	struct hsm_params params = {
	    .module_path = conf->pkcs11_module,
	    .token_label = conf->token_label,
	    .key_label = conf->key_label,
	    .key_id = conf->key_id,
	    .pin_file = conf->pin_file,
	    .sessions = conf->hsm_sessions,
	    .in_flight = conf->hsm_in_flight,
	    .processes = conf->hsm_processes,
	};
	struct hsm *hsm = NULL;
	int rc;

	rc = hsm_open(&params, &hsm);
	switch ((enum hsm_err)rc) {
	case HSM_OK:
		return hsm;
	case HSM_ERR_MODULE:
		fatal("cannot load PKCS#11 module %s", conf->pkcs11_module);
	case HSM_ERR_TOKEN:
		fatal("cannot find token \"%s\" in PKCS#11 module %s (is "
		      "SOFTHSM2_CONF set for SoftHSM2?)",
		    conf->token_label, conf->pkcs11_module);
	case HSM_ERR_PIN_FILE:
		fatal("cannot use PIN file %s: missing, empty, too long or "
		      "readable by others",
		    conf->pin_file);
	case HSM_ERR_LOGIN:
		fatal("token \"%s\" refused the PIN in %s", conf->token_label,
		    conf->pin_file);
	case HSM_ERR_KEY:
		fatal("cannot find exactly one private key with label \"%s\" "
		      "id %s in token \"%s\"",
		    conf->key_label ? conf->key_label : "(any)",
		    conf->key_id ? conf->key_id : "(any)", conf->token_label);
	case HSM_ERR_KEY_TYPE:
		fatal("signing key in token \"%s\" is neither EC P-256 nor RSA",
		    conf->token_label);
	case HSM_ERR_UNAVAILABLE:
	case HSM_ERR_ARG:
	case HSM_ERR_NOMEM:
	case HSM_ERR_EXISTS:
		break;
	}
	fatal("cannot open token \"%s\": %s", conf->token_label,
	    hsm_strerror(rc));
}

int
main(int argc, char **argv)
{
	struct http_params http_params;
	struct conf_error conf_err;
	struct conf *conf = NULL;
	struct respond *responder = NULL;
	struct authority *authority = NULL;
	struct presign *presign = NULL;
	struct http *server = NULL;
	struct hsm *hsm = NULL;
	struct db *db = NULL;
	const char *conf_path = NULL;
	char *listen_override = NULL, *host;
	char err[512];
	uint16_t port;
	bool is_check_only = false, is_debug = false;
	sigset_t signals;
	int opt, sig, rc;

	while ((opt = getopt(argc, argv, "f:l:nd")) != -1) {
		switch (opt) {
		case 'f':
			conf_path = optarg;
			break;
		case 'l':
			listen_override = optarg;
			break;
		case 'n':
			is_check_only = true;
			break;
		case 'd':
			is_debug = true;
			break;
		default:
			usage();
		}
	}
	if (conf_path == NULL || optind != argc)
		usage();
	log_init("ocsp-responder", is_debug ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO,
	    false);

	if ((rc = conf_load(conf_path, &conf, &conf_err)) != CONF_OK) {
		if (conf_err.line > 0)
			fatal("%s:%u: %s: %s", conf_path, conf_err.line,
			    conf_err.key, conf_err.message);
		fatal("%s: %s%s%s", conf_path, conf_err.key,
		    conf_err.key[0] ? ": " : "", conf_err.message);
	}
	host = conf->listen_host;
	port = conf->listen_port;
	if (listen_override != NULL &&
	    parse_listen(listen_override, &host, &port) != 0)
		fatal("bad -l %s: expected host:port", listen_override);
	if (is_check_only) {
		(void)printf("%s: configuration ok\n", conf_path);
		conf_free(conf);
		return 0;
	}

	/* Signals are taken by sigwait() below; block them before any
	 * thread starts so that every thread inherits the mask. */
	(void)sigemptyset(&signals);
	(void)sigaddset(&signals, SIGINT);
	(void)sigaddset(&signals, SIGTERM);
	(void)sigaddset(&signals, SIGHUP);
	(void)pthread_sigmask(SIG_BLOCK, &signals, NULL);
	(void)signal(SIGPIPE, SIG_IGN);

	/* Writable: the refresher stores what it signs. Requests only read,
	 * lock-free, beside it and beside ocspctl. */
	if ((rc = db_open(conf->index_path, DB_MODE_WRITE, conf->index_map_size,
		 &db)) != DB_OK) {
		fatal("cannot open index %s: %s%s", conf->index_path,
		    db_strerror(rc),
		    rc == DB_ERR_NO_INDEX ? " (create it with ocspctl import)"
					  : "");
	}
	hsm = open_token(conf);
	if (authority_new(conf, hsm, &authority, err, sizeof(err)) != 0)
		fatal("%s", err);
	if (presign_new(authority, db, &presign) != 0 ||
	    respond_new(authority, db, conf->presign ? presign_store : NULL,
		presign, &responder) != 0)
		fatal("out of memory");
	if (conf->presign && presign_start_refresher(presign, 500) != 0)
		fatal(
		    "cannot start the pre-signing thread: %s", strerror(errno));

	http_params = (struct http_params){
	    .host = host,
	    .port = port,
	    .threads = conf->threads,
	    .max_request_bytes = conf->max_request_bytes,
	    .log_requests = conf->log_requests,
	};
	if (http_start(&http_params, responder, &server, err, sizeof(err)) != 0)
		fatal("%s", err);
	log_info("listening on http://%s%s%s:%u/ (index %s, token \"%s\")",
	    strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
	    (unsigned)port, conf->index_path, conf->token_label);

	for (;;) {
		if (sigwait(&signals, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			log_info("SIGHUP: reloading is not supported yet; "
				 "restart to apply changes");
			continue;
		}
		log_info("%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		break;
	}
	http_stop(server);
	presign_free(presign);
	respond_free(responder);
	authority_free(authority);
	hsm_close(hsm);
	db_close(db);
	conf_free(conf);
	return 0;
}
