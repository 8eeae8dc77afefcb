/* test_conf.c - conf/ against real files in a temporary directory: each
 * key, each error with its line and key, the shipped sample, and every
 * truncation and bit flip of a good file. Run from the top of the checkout. */
#include "conf/conf.h"
#include "tests/test.h"

#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SAMPLE "conf/responder.conf"

/* Every required key and nothing else: six lines. */
#define REQUIRED                                                               \
	"index /var/lib/ocsp/index\n"                                          \
	"token_label ocsp\n"                                                   \
	"key_label signer\n"                                                   \
	"pin_file /etc/ocsp/pin\n"                                             \
	"responder_cert /etc/ocsp/responder.pem\n"                             \
	"issuer_cert /etc/ocsp/ca.pem\n"

/* Every key, with comments in each place they may go: the sweeps' input. */
static const char full[] = "# responder\n"
			   "\n"
			   "listen [::1]:9090 # loopback only\n"
			   "index idx\n"
			   "index_map_size 512M\n"
			   "pkcs11_module /opt/hsm/lib.so\n"
			   "  token_label\tocsp token  \n"
			   "key_label sign#er\n"
			   "key_id 0A1b\n"
			   "pin_file ../pin\n"
			   "responder_cert /etc/r.pem\n"
			   "issuer_cert ca1.pem\n"
			   "issuer_cert /etc/ca2.pem\n"
			   "validity 12h\n"
			   "include_responder_cert no\n"
			   "max_cert_ids 64\n"
			   "max_nonce_len 128\n"
			   "max_request_bytes 1M\n"
			   "threads 16\n"
			   "log_requests off\n";

static char tmpdir[] = "/tmp/test_conf.XXXXXX";
static char conf_path[PATH_MAX];

static bool
write_file(const char *path, const char *data, size_t len)
{
	int fd;
	bool ok;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return false;
	ok = write(fd, data, len) == (ssize_t)len;
	return close(fd) == 0 && ok;
}

/* load writes len bytes of text to the test file and loads it. */
static int
load_bytes(
    const char *text, size_t len, struct conf **out, struct conf_error *err)
{
	if (!write_file(conf_path, text, len)) {
		fprintf(stderr, "cannot write %s\n", conf_path);
		exit(1);
	}
	return conf_load(conf_path, out, err);
}

static int
load(const char *text, struct conf **out, struct conf_error *err)
{
	return load_bytes(text, strlen(text), out, err);
}

/* fails_with loads text and says whether it failed with rc on line and key,
 * with *out NULL and a message containing message_part (if not NULL). */
static bool
fails_with(const char *text, int rc, unsigned line, const char *key,
    const char *message_part)
{
	struct conf *c = (struct conf *)&c; /* must be reset to NULL */
	struct conf_error err;
	int got;
	bool ok;

	got = load(text, &c, &err);
	ok = got == rc && c == NULL && err.line == line &&
	    strcmp(err.key, key) == 0 && err.message[0] != '\0' &&
	    (message_part == NULL || strstr(err.message, message_part) != NULL);
	if (!ok) {
		fprintf(stderr, "  got %d (%s) line %u key \"%s\": %s\n", got,
		    conf_strerror(got), err.line, err.key, err.message);
		if (got == CONF_OK)
			conf_free(c);
	}
	return ok;
}

/* loads says whether text loads; *out gets the result, or NULL. */
static bool
loads(const char *text, struct conf **out)
{
	struct conf_error err;
	int rc;

	rc = load(text, out, &err);
	if (rc != CONF_OK)
		fprintf(stderr, "  unexpected %s line %u key \"%s\": %s\n",
		    conf_strerror(rc), err.line, err.key, err.message);
	return rc == CONF_OK && *out != NULL;
}

/* value_fails says whether `key value` after the required keys is refused
 * as CONF_ERR_VALUE on line 7, naming key. */
static bool
value_fails(const char *key, const char *value, const char *message_part)
{
	char text[8192];

	(void)snprintf(text, sizeof(text), REQUIRED "%s %s\n", key, value);
	return fails_with(text, CONF_ERR_VALUE, 7, key, message_part);
}

/* with_line loads the required keys plus `line`; *out gets the result. */
static bool
with_line(const char *line, struct conf **out)
{
	char text[8192];

	(void)snprintf(text, sizeof(text), REQUIRED "%s\n", line);
	return loads(text, out);
}

static void
test_defaults(void)
{
	struct conf *c = NULL;

	CHECK(loads(REQUIRED, &c));
	if (c == NULL)
		return;
	CHECK(strcmp(c->listen_host, "127.0.0.1") == 0);
	CHECK(c->listen_port == 8080);
	CHECK(strcmp(c->index_path, "/var/lib/ocsp/index") == 0);
	CHECK(c->index_map_size == 4ULL * 1024 * 1024 * 1024);
	CHECK(strcmp(c->pkcs11_module, "/usr/lib/softhsm/libsofthsm2.so") == 0);
	CHECK(strcmp(c->token_label, "ocsp") == 0);
	CHECK(strcmp(c->key_label, "signer") == 0);
	CHECK(c->key_id == NULL);
	CHECK(strcmp(c->pin_file, "/etc/ocsp/pin") == 0);
	CHECK(strcmp(c->responder_cert, "/etc/ocsp/responder.pem") == 0);
	CHECK(c->n_issuer_certs == 1);
	CHECK(strcmp(c->issuer_certs[0], "/etc/ocsp/ca.pem") == 0);
	CHECK(c->issuer_certs[1] == NULL);
	CHECK(c->validity_s == 86400);
	CHECK(c->include_responder_cert);
	CHECK(c->max_cert_ids == 8);
	CHECK(c->max_nonce_len == 32);
	CHECK(c->max_request_bytes == 10240);
	CHECK(c->threads == 4);
	CHECK(c->log_requests);
	conf_free(c);
}

static void
test_every_key(void)
{
	char want[PATH_MAX];
	struct conf *c = NULL;

	CHECK(loads(full, &c));
	if (c == NULL)
		return;
	CHECK(strcmp(c->listen_host, "::1") == 0);
	CHECK(c->listen_port == 9090);
	(void)snprintf(want, sizeof(want), "%s/idx", tmpdir);
	CHECK(strcmp(c->index_path, want) == 0);
	CHECK(c->index_map_size == 512ULL * 1024 * 1024);
	CHECK(strcmp(c->pkcs11_module, "/opt/hsm/lib.so") == 0);
	CHECK(strcmp(c->token_label, "ocsp token") == 0);
	CHECK(strcmp(c->key_label, "sign#er") == 0);
	CHECK(strcmp(c->key_id, "0A1b") == 0);
	(void)snprintf(want, sizeof(want), "%s/../pin", tmpdir);
	CHECK(strcmp(c->pin_file, want) == 0);
	CHECK(strcmp(c->responder_cert, "/etc/r.pem") == 0);
	CHECK(c->n_issuer_certs == 2);
	(void)snprintf(want, sizeof(want), "%s/ca1.pem", tmpdir);
	CHECK(strcmp(c->issuer_certs[0], want) == 0);
	CHECK(strcmp(c->issuer_certs[1], "/etc/ca2.pem") == 0);
	CHECK(c->validity_s == 12 * 3600);
	CHECK(!c->include_responder_cert);
	CHECK(c->max_cert_ids == CONF_MAX_CERT_IDS);
	CHECK(c->max_nonce_len == CONF_MAX_NONCE_LEN);
	CHECK(c->max_request_bytes == 1048576);
	CHECK(c->threads == 16);
	CHECK(!c->log_requests);
	conf_free(c);
}

static void
test_paths(void)
{
	char sub[64], path[PATH_MAX], want[PATH_MAX];
	struct conf_error err;
	struct conf *c = NULL;
	const char *text = "index index\n"
			   "token_label t\n"
			   "key_id 01\n"
			   "pin_file ../pin\n"
			   "responder_cert /abs/r.pem\n"
			   "issuer_cert certs/ca.pem\n"
			   "pkcs11_module lib/p11.so\n";
	int cwd;

	(void)snprintf(sub, sizeof(sub), "%s/demo", tmpdir);
	CHECK(mkdir(sub, 0700) == 0);
	(void)snprintf(path, sizeof(path), "%s/responder.conf", sub);
	CHECK(write_file(path, text, strlen(text)));
	CHECK(conf_load(path, &c, &err) == CONF_OK);
	if (c != NULL) {
		(void)snprintf(want, sizeof(want), "%s/index", sub);
		CHECK(strcmp(c->index_path, want) == 0);
		(void)snprintf(want, sizeof(want), "%s/../pin", sub);
		CHECK(strcmp(c->pin_file, want) == 0);
		CHECK(strcmp(c->responder_cert, "/abs/r.pem") == 0);
		(void)snprintf(want, sizeof(want), "%s/certs/ca.pem", sub);
		CHECK(strcmp(c->issuer_certs[0], want) == 0);
		(void)snprintf(want, sizeof(want), "%s/lib/p11.so", sub);
		CHECK(strcmp(c->pkcs11_module, want) == 0);
		conf_free(c);
		c = NULL;
	}

	/* Repeated slashes before the file name do not double up. */
	(void)snprintf(path, sizeof(path), "%s//responder.conf", sub);
	CHECK(conf_load(path, &c, &err) == CONF_OK);
	if (c != NULL) {
		(void)snprintf(want, sizeof(want), "%s/index", sub);
		CHECK(strcmp(c->index_path, want) == 0);
		conf_free(c);
		c = NULL;
	}

	/* A config named without a directory keeps relative paths as they
	 * are: they already start from the current directory. */
	CHECK((cwd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1);
	CHECK(chdir(sub) == 0);
	CHECK(conf_load("responder.conf", &c, &err) == CONF_OK);
	CHECK(fchdir(cwd) == 0);
	CHECK(close(cwd) == 0);
	if (c != NULL) {
		CHECK(strcmp(c->index_path, "index") == 0);
		CHECK(strcmp(c->pin_file, "../pin") == 0);
		CHECK(strcmp(c->issuer_certs[0], "certs/ca.pem") == 0);
		conf_free(c);
	}
	CHECK(unlink(path) == 0);
	CHECK(rmdir(sub) == 0);
}

static void
test_errors(void)
{
	/* The example from the brief: line 7, key "validity". */
	CHECK(fails_with(REQUIRED "validity 7h\n", CONF_ERR_VALUE, 7,
	    "validity", "must be between 8h and 10d"));
	CHECK(fails_with("# a comment\n\nlistne 127.0.0.1:80\n" REQUIRED,
	    CONF_ERR_UNKNOWN, 3, "listne", "did you mean listen?"));
	CHECK(fails_with(REQUIRED "frobnicate 1\n", CONF_ERR_UNKNOWN, 7,
	    "frobnicate", "unknown key"));
	CHECK(fails_with(
	    REQUIRED "Threads 4\n", CONF_ERR_UNKNOWN, 7, "Threads", "threads"));
	CHECK(fails_with("index /x\nthreads\n", CONF_ERR_SYNTAX, 2, "threads",
	    "missing value"));
	CHECK(fails_with("index /x\nthreads   # none\n", CONF_ERR_SYNTAX, 2,
	    "threads", "missing value"));
	CHECK(fails_with("threads 4\n" REQUIRED "threads 5\n",
	    CONF_ERR_DUPLICATE, 8, "threads", "first on line 1"));
	CHECK(fails_with(
	    REQUIRED "index /y\n", CONF_ERR_DUPLICATE, 7, "index", "line 1"));
	CHECK(fails_with("", CONF_ERR_MISSING, 0, "index", "required"));
}

static void
test_missing(void)
{
	static const char *required[] = {"index", "token_label", "pin_file",
	    "responder_cert", "issuer_cert"};
	char text[1024], *line, *next;
	size_t i;

	/* Drop each required line in turn. */
	for (i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		(void)snprintf(text, sizeof(text), "%s", REQUIRED);
		line = strstr(text, required[i]);
		next = strchr(line, '\n') + 1;
		memmove(line, next, strlen(next) + 1);
		CHECK(fails_with(
		    text, CONF_ERR_MISSING, 0, required[i], "required"));
	}
	CHECK(fails_with("index /i\ntoken_label t\npin_file /p\n"
			 "responder_cert /r\nissuer_cert /c\n",
	    CONF_ERR_MISSING, 0, "key_label", "key_id"));
}

static void
test_issuers(void)
{
	char text[4096];
	struct conf *c = NULL;
	size_t len, i;

	len = (size_t)snprintf(text, sizeof(text), "%s", REQUIRED);
	for (i = 1; i < CONF_MAX_ISSUERS; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len,
		    "issuer_cert ca%zu.pem\n", i);
	CHECK(loads(text, &c));
	if (c != NULL) {
		CHECK(c->n_issuer_certs == CONF_MAX_ISSUERS);
		conf_free(c);
	}
	(void)snprintf(text + len, sizeof(text) - len, "issuer_cert x.pem\n");
	CHECK(fails_with(text, CONF_ERR_DUPLICATE, 6 + CONF_MAX_ISSUERS,
	    "issuer_cert", "more than 16"));
}

static void
test_validity(void)
{
	struct conf *c = NULL;
	static const struct {
		const char *text;
		uint32_t seconds;
	} good[] = {{"8h", 28800}, {"28800", 28800}, {"28800s", 28800},
	    {"480m", 28800}, {"7h60m", 28800}, {"10d", 864000},
	    {"864000s", 864000}, {"1d", 86400}, {"24h", 86400},
	    {"86400s", 86400}, {"1d1h1m1s", 90061}, {"09h", 32400}};
	char line[64];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		(void)snprintf(line, sizeof(line), "validity %s", good[i].text);
		c = NULL;
		CHECK(with_line(line, &c));
		CHECK(c != NULL && c->validity_s == good[i].seconds);
		conf_free(c);
	}
	CHECK(value_fails("validity", "28799s", "between 8h and 10d"));
	CHECK(value_fails("validity", "28799", "between 8h and 10d"));
	CHECK(value_fails("validity", "7h59m59s", "between 8h and 10d"));
	CHECK(value_fails("validity", "10d1s", "between 8h and 10d"));
	CHECK(value_fails("validity", "864001s", "between 8h and 10d"));
	CHECK(value_fails("validity", "0", "between 8h and 10d"));
	CHECK(value_fails("validity", "99999999999999999999s", "between"));
	CHECK(value_fails("validity", "999999999999999999d", "between"));
	CHECK(value_fails("validity", "1w", "duration"));
	CHECK(value_fails("validity", "1h30", "duration"));
	CHECK(value_fails("validity", "30m9h", "duration"));
	CHECK(value_fails("validity", "1d1d", "duration"));
	CHECK(value_fails("validity", "h", "duration"));
	CHECK(value_fails("validity", "-1d", "duration"));
	CHECK(value_fails("validity", "1 d", "duration"));
	CHECK(value_fails("validity", "1D", "duration"));
}

static void
test_numbers(void)
{
	struct conf *c = NULL;

	CHECK(value_fails("threads", "12x", "decimal number"));
	CHECK(value_fails("threads", "-1", "decimal number"));
	CHECK(value_fails("threads", "+4", "decimal number"));
	CHECK(value_fails("threads", "0x10", "decimal number"));
	CHECK(value_fails("threads", "4 4", "decimal number"));
	CHECK(value_fails("threads", "1.5", "decimal number"));
	CHECK(value_fails("threads", "0", "between 1 and 256"));
	CHECK(value_fails("threads", "257", "between 1 and 256"));
	CHECK(value_fails("threads", "4294967300", "between 1 and 256"));
	CHECK(value_fails("threads", "18446744073709551616", "between"));
	CHECK(value_fails("threads", "99999999999999999999999999", "between"));
	CHECK(value_fails("max_cert_ids", "65", "between 1 and 64"));
	CHECK(value_fails("max_cert_ids", "0", "between 1 and 64"));
	CHECK(value_fails("max_nonce_len", "129", "between 1 and 128"));
	CHECK(value_fails("max_nonce_len", "0", "between 1 and 128"));
	CHECK(value_fails("max_request_bytes", "511", "between 512 and 1M"));
	CHECK(value_fails("max_request_bytes", "1048577", "between"));
	CHECK(value_fails("max_request_bytes", "2M", "between"));
	CHECK(value_fails("index_map_size", "1048575", "at least 1M"));
	CHECK(value_fails("index_map_size", "1023K", "at least 1M"));
	CHECK(value_fails("index_map_size", "1T", "size"));
	CHECK(value_fails("index_map_size", "4GB", "size"));
	CHECK(value_fails("index_map_size", "G", "size"));
	CHECK(value_fails("index_map_size", "-4G", "size"));
	CHECK(value_fails("index_map_size", "18446744073709551616", "least"));
	CHECK(value_fails("index_map_size", "17179869184G", "least"));

	CHECK(with_line("threads 256", &c) && c->threads == 256);
	conf_free(c);
	c = NULL;
	CHECK(with_line("threads 0001", &c) && c->threads == 1);
	conf_free(c);
	c = NULL;
	CHECK(with_line("max_request_bytes 512", &c) &&
	    c->max_request_bytes == 512);
	conf_free(c);
	c = NULL;
	CHECK(with_line("max_request_bytes 64k", &c) &&
	    c->max_request_bytes == 65536);
	conf_free(c);
	c = NULL;
	CHECK(
	    with_line("index_map_size 1M", &c) && c->index_map_size == 1048576);
	conf_free(c);
	c = NULL;
	CHECK(with_line("index_map_size 64G", &c) &&
	    c->index_map_size == 64ULL << 30);
	conf_free(c);
}

static void
test_listen(void)
{
	static const struct {
		const char *value;
		const char *host;
		uint16_t port;
	} good[] = {{"[::1]:8080", "::1", 8080},
	    {"0.0.0.0:443", "0.0.0.0", 443}, {"localhost:1", "localhost", 1},
	    {"[::]:65535", "::", 65535},
	    {"[fe80::1%eth0]:80", "fe80::1%eth0", 80}};
	struct conf *c;
	char line[128];
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		(void)snprintf(line, sizeof(line), "listen %s", good[i].value);
		c = NULL;
		CHECK(with_line(line, &c));
		CHECK(c != NULL && strcmp(c->listen_host, good[i].host) == 0 &&
		    c->listen_port == good[i].port);
		conf_free(c);
	}
	CHECK(value_fails("listen", "::1:8080", "brackets"));
	CHECK(value_fails("listen", "127.0.0.1:0", "between 1 and 65535"));
	CHECK(value_fails("listen", "127.0.0.1:65536", "between 1 and 65535"));
	CHECK(value_fails(
	    "listen", "127.0.0.1:99999999999999999999", "between 1 and 65535"));
	CHECK(value_fails("listen", "127.0.0.1", "HOST:PORT"));
	CHECK(value_fails("listen", "8080", "HOST:PORT"));
	CHECK(value_fails("listen", ":8080", "HOST:PORT"));
	CHECK(value_fails("listen", "127.0.0.1:", "HOST:PORT"));
	CHECK(value_fails("listen", "127.0.0.1:80x", "HOST:PORT"));
	CHECK(value_fails("listen", "127.0.0.1:-80", "HOST:PORT"));
	CHECK(value_fails("listen", "[::1]", "HOST:PORT"));
	CHECK(value_fails("listen", "[::1]8080", "HOST:PORT"));
	CHECK(value_fails("listen", "[]:8080", "HOST:PORT"));
	CHECK(value_fails("listen", "[[::1]]:8080", "HOST:PORT"));
	CHECK(value_fails("listen", "my host:80", "HOST:PORT"));
}

static void
test_strings(void)
{
	static const char *yes[] = {"yes", "true", "on", "YES", "On"};
	static const char *no[] = {"no", "false", "off", "No", "FALSE"};
	char line[4200];
	struct conf *c;
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		(void)snprintf(line, sizeof(line),
		    "log_requests %s\ninclude_responder_cert %s", no[i],
		    yes[i]);
		c = NULL;
		CHECK(with_line(line, &c));
		CHECK(
		    c != NULL && !c->log_requests && c->include_responder_cert);
		conf_free(c);
	}
	CHECK(value_fails("log_requests", "1", "yes or no"));
	CHECK(value_fails("log_requests", "yess", "yes or no"));
	CHECK(value_fails("include_responder_cert", "maybe", "yes or no"));

	c = NULL;
	CHECK(with_line("key_id abcDEF09", &c));
	CHECK(c != NULL && strcmp(c->key_id, "abcDEF09") == 0);
	conf_free(c);
	CHECK(value_fails("key_id", "0", "even number of hex digits"));
	CHECK(value_fails("key_id", "0g", "hex"));
	CHECK(value_fails("key_id", "0x01", "hex"));
	CHECK(value_fails("key_id", "01 02", "hex"));

	/* PKCS#11 token labels are 32 bytes. */
	c = NULL;
	CHECK(loads("index /i\nkey_id 01\npin_file /p\nresponder_cert /r\n"
		    "issuer_cert /c\n"
		    "token_label 0123456789abcdef0123456789abcdef\n",
	    &c));
	conf_free(c);
	CHECK(fails_with("index /i\nkey_id 01\npin_file /p\nresponder_cert "
			 "/r\nissuer_cert /c\n"
			 "token_label 0123456789abcdef0123456789abcdefX\n",
	    CONF_ERR_VALUE, 6, "token_label", "32 bytes"));

	/* A path joined to the directory may exceed what the system takes. */
	memset(line, 'p', sizeof(line));
	memcpy(line, "issuer_cert ", 12);
	line[CONF_MAX_LINE] = '\0';
	CHECK(fails_with(line, CONF_ERR_VALUE, 1, "issuer_cert", "bytes long"));
}

static void
test_comments(void)
{
	struct conf *c = NULL;

	CHECK(loads("# leading comment\n"
		    "\n"
		    "   \t \n"
		    "   # indented comment\n"
		    "#threads 100\n"
		    "index /i # trailing comment\n"
		    "token_label a#b\n"
		    "key_label  spaced  value \t \n"
		    "key_id 01\t# tab before the hash\n"
		    "\tpin_file\t/p\r\n"
		    "responder_cert /r\r\n"
		    "issuer_cert /c",
	    &c));
	if (c == NULL)
		return;
	CHECK(strcmp(c->index_path, "/i") == 0);
	CHECK(strcmp(c->token_label, "a#b") == 0);
	CHECK(strcmp(c->key_label, "spaced  value") == 0);
	CHECK(strcmp(c->key_id, "01") == 0);
	CHECK(strcmp(c->pin_file, "/p") == 0);
	CHECK(strcmp(c->responder_cert, "/r") == 0);
	CHECK(strcmp(c->issuer_certs[0], "/c") == 0);
	CHECK(c->threads == 4);
	conf_free(c);
}

static void
test_bad_bytes(void)
{
	static const char nul[] = REQUIRED "threads 4\0\n";
	static const char ctrl[] = "index /i\ntoken\x01_label x\n";
	char text[2 * CONF_MAX_LINE];
	struct conf_error err;
	struct conf *c = NULL;
	size_t len;

	CHECK(load_bytes(nul, sizeof(nul) - 1, &c, &err) == CONF_ERR_SYNTAX);
	CHECK(c == NULL && err.line == 7 && strstr(err.message, "NUL"));
	CHECK(load_bytes(ctrl, sizeof(ctrl) - 1, &c, &err) == CONF_ERR_SYNTAX);
	CHECK(c == NULL && err.line == 2 && strstr(err.message, "control"));
	CHECK(fails_with("index /i\r\r\n", CONF_ERR_SYNTAX, 1, "", "control"));

	/* A line of exactly CONF_MAX_LINE bytes is fine, one more is not. */
	len = (size_t)snprintf(text, sizeof(text), REQUIRED);
	memset(text + len, '#', CONF_MAX_LINE);
	text[len + CONF_MAX_LINE] = '\n';
	CHECK(load_bytes(text, len + CONF_MAX_LINE + 1, &c, &err) == CONF_OK);
	conf_free(c);
	c = NULL;
	CHECK(load_bytes(text, len + CONF_MAX_LINE, &c, &err) == CONF_OK);
	conf_free(c);
	c = NULL;
	memset(text + len, '#', CONF_MAX_LINE + 1);
	text[len + CONF_MAX_LINE + 1] = '\n';
	CHECK(load_bytes(text, len + CONF_MAX_LINE + 2, &c, &err) ==
	    CONF_ERR_SYNTAX);
	CHECK(c == NULL && err.line == 7 && strstr(err.message, "4096"));
	/* The same without a final newline. */
	CHECK(load_bytes(text, len + CONF_MAX_LINE + 1, &c, &err) ==
	    CONF_ERR_SYNTAX);
	CHECK(c == NULL && err.line == 7);

	/* key_label of the largest length a line allows. */
	len = (size_t)snprintf(text, sizeof(text), "key_label ");
	memset(text + len, 'k', CONF_MAX_LINE - len);
	len =
	    (size_t)snprintf(text + CONF_MAX_LINE, sizeof(text) - CONF_MAX_LINE,
		"\nindex /i\ntoken_label t\npin_file /p\nresponder_cert /r\n"
		"issuer_cert /c\n");
	CHECK(load_bytes(text, CONF_MAX_LINE + len, &c, &err) == CONF_OK);
	CHECK(c != NULL && strlen(c->key_label) == CONF_MAX_LINE - 10);
	conf_free(c);
}

static void
test_files(void)
{
	char path[PATH_MAX];
	struct conf_error err;
	struct conf *c = (struct conf *)&c;

	(void)snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
	CHECK(conf_load(path, &c, &err) == CONF_ERR_IO);
	CHECK(c == NULL && err.line == 0 && strstr(err.message, "cannot open"));

	CHECK(conf_load(tmpdir, &c, &err) == CONF_ERR_IO);
	CHECK(c == NULL && strstr(err.message, "not a regular file"));

	/* A FIFO must be refused at once, not wait for a writer. */
	(void)snprintf(path, sizeof(path), "%s/fifo", tmpdir);
	CHECK(mkfifo(path, 0600) == 0);
	CHECK(conf_load(path, &c, &err) == CONF_ERR_IO);
	CHECK(c == NULL && strstr(err.message, "not a regular file"));
	CHECK(unlink(path) == 0);

	CHECK(conf_load("/dev/null", &c, &err) == CONF_ERR_IO);
	CHECK(c == NULL && strstr(err.message, "not a regular file"));

	/* A symlink to a regular file is a regular file. */
	(void)snprintf(path, sizeof(path), "%s/link.conf", tmpdir);
	CHECK(write_file(conf_path, REQUIRED, strlen(REQUIRED)));
	CHECK(symlink(conf_path, path) == 0);
	CHECK(conf_load(path, &c, &err) == CONF_OK && c != NULL);
	conf_free(c);
	CHECK(unlink(path) == 0);

	/* err may be NULL. */
	c = NULL;
	CHECK(conf_load(conf_path, &c, NULL) == CONF_OK && c != NULL);
	conf_free(c);
	CHECK(write_file(conf_path, "bogus 1\n", 8));
	CHECK(conf_load(conf_path, &c, NULL) == CONF_ERR_UNKNOWN && c == NULL);

	conf_free(NULL);
	CHECK(strcmp(conf_strerror(CONF_ERR_MISSING), "required key missing") ==
	    0);
	CHECK(conf_strerror(CONF_OK)[0] != '\0');
	CHECK(conf_strerror(CONF_ERR_NOMEM)[0] != '\0');
	CHECK(conf_strerror(12345)[0] != '\0');
}

static void
test_sample(void)
{
	static const char *keys[] = {"listen", "index", "index_map_size",
	    "pkcs11_module", "token_label", "key_label", "key_id", "pin_file",
	    "responder_cert", "issuer_cert", "validity",
	    "include_responder_cert", "max_cert_ids", "max_nonce_len",
	    "max_request_bytes", "threads", "log_requests"};
	char text[16384], needle[64], commented[64];
	struct conf_error err;
	struct conf *c = NULL;
	size_t len, i;
	FILE *fp;
	int rc;

	rc = conf_load(SAMPLE, &c, &err);
	if (rc != CONF_OK)
		fprintf(stderr, "  %s: line %u key \"%s\": %s\n", SAMPLE,
		    err.line, err.key, err.message);
	CHECK(rc == CONF_OK);
	if (c != NULL) {
		CHECK(strcmp(c->index_path, "conf/../demo/index") == 0);
		CHECK(strcmp(c->pin_file, "conf/../demo/pin") == 0);
		CHECK(strcmp(c->responder_cert, "conf/../demo/responder.pem") ==
		    0);
		CHECK(c->n_issuer_certs == 1);
		CHECK(strcmp(c->issuer_certs[0], "conf/../demo/ca.pem") == 0);
		CHECK(strcmp(c->token_label, "ocsp-demo") == 0);
		CHECK(strcmp(c->key_label, "ocsp-signer") == 0);
		CHECK(strcmp(c->key_id, "01") == 0);
		CHECK(strcmp(c->listen_host, "127.0.0.1") == 0);
		CHECK(c->listen_port == 8080);
		CHECK(c->validity_s == 86400);
		conf_free(c);
	}

	/* The sample documents every key, set or commented out. */
	CHECK((fp = fopen(SAMPLE, "r")) != NULL);
	if (fp == NULL)
		return;
	len = fread(text, 1, sizeof(text) - 1, fp);
	text[len] = '\0';
	CHECK(fclose(fp) == 0);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		(void)snprintf(needle, sizeof(needle), "\n%s ", keys[i]);
		(void)snprintf(commented, sizeof(commented), "\n#%s ", keys[i]);
		CHECK(strstr(text, needle) != NULL ||
		    strstr(text, commented) != NULL);
	}
	CHECK(strstr(text, "SOFTHSM2_CONF") != NULL);
	CHECK(strstr(text, "demo/softhsm2.conf") != NULL);
}

/* check_outcome says whether a load ended either in a struct conf or in an
 * error with a message, never anything in between. */
static bool
check_outcome(int rc, const struct conf *c, const struct conf_error *err)
{
	if (rc == CONF_OK)
		return c != NULL && c->index_path != NULL;
	return rc < 0 && rc >= CONF_ERR_NOMEM && c == NULL &&
	    err->message[0] != '\0';
}

/* Every prefix of a good file, and every single bit flip in it, either
 * loads or fails cleanly; ASan watches the rest. */
static void
test_sweeps(void)
{
	char text[sizeof(full)];
	struct conf_error err;
	struct conf *c;
	size_t len = sizeof(full) - 1, i, bad = 0, loaded = 0;
	unsigned bit;
	int rc;

	for (i = 0; i <= len; i++) {
		c = NULL;
		rc = load_bytes(full, i, &c, &err);
		if (!check_outcome(rc, c, &err)) {
			fprintf(stderr, "  truncated at %zu: %d\n", i, rc);
			bad++;
		}
		loaded += rc == CONF_OK;
		conf_free(c);
	}
	CHECK(bad == 0);
	CHECK(loaded > 0);   /* at least the whole file */
	CHECK(loaded < len); /* the required keys come late */

	bad = loaded = 0;
	for (i = 0; i < len; i++) {
		for (bit = 0; bit < 8; bit++) {
			memcpy(text, full, sizeof(full));
			text[i] = (char)(text[i] ^ (1u << bit));
			c = NULL;
			rc = load_bytes(text, len, &c, &err);
			if (!check_outcome(rc, c, &err)) {
				fprintf(
				    stderr, "  flip %zu.%u: %d\n", i, bit, rc);
				bad++;
			}
			loaded += rc == CONF_OK;
			conf_free(c);
		}
	}
	CHECK(bad == 0);
	CHECK(loaded > 0 && loaded < len * 8);
}

int
main(void)
{
	if (mkdtemp(tmpdir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	(void)snprintf(
	    conf_path, sizeof(conf_path), "%s/responder.conf", tmpdir);

	test_defaults();
	test_every_key();
	test_paths();
	test_errors();
	test_missing();
	test_issuers();
	test_validity();
	test_numbers();
	test_listen();
	test_strings();
	test_comments();
	test_bad_bytes();
	test_files();
	test_sample();
	test_sweeps();

	CHECK(unlink(conf_path) == 0);
	CHECK(rmdir(tmpdir) == 0);
	return test_summary();
}
