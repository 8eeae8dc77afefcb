/* conf.c - reads the responder's `key value` file into one struct conf.
 * Every key, with its type, default and bounds, is a row of keys[] below;
 * nothing here prints, and nothing outside conf/ is included. */
#include "conf/conf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define NITEMS(a)   (sizeof(a) / sizeof((a)[0]))
#define MAX_KEY_LEN 32 /* longer names are not worth a suggestion */
#define BLANKS      " \t"

enum conf_type {
	CONF_T_LISTEN,   /* HOST:PORT or [IPv6]:PORT; also sets listen_port */
	CONF_T_PATH,     /* joined to the directory of the config file */
	CONF_T_STRING,   /* any text */
	CONF_T_HEX,      /* an even number of hex digits */
	CONF_T_BOOL,     /* yes/no, true/false, on/off */
	CONF_T_COUNT,    /* a decimal integer */
	CONF_T_BYTES,    /* an integer with an optional K, M or G (x1024) */
	CONF_T_DURATION, /* integers with units d, h, m, s; bare is seconds */
};

/* struct conf_key describes one key. min and max bound a number's value,
 * or a string's length in bytes; a repeatable key's member is an array and
 * size / sizeof(char *) bounds how often the key may appear. */
struct conf_key {
	const char *key;
	const char *default_value; /* NULL: none; parsed like a file's value */
	size_t offset;             /* of the member in struct conf */
	size_t size;               /* of that member */
	uint64_t min;
	uint64_t max;
	size_t count_offset; /* repeatable: of the member counting them */
	enum conf_type type;
	bool is_repeatable;
	bool is_required;
};

#define MEMBER(m) offsetof(struct conf, m), sizeof(((struct conf *)NULL)->m)
#define KIB       ((uint64_t)1024)
#define MIB       (1024 * KIB)
#define GIB       (1024 * MIB)
#define PATH_LEN  (PATH_MAX - 1)
#define LABEL_LEN 32 /* PKCS#11 CK_TOKEN_INFO.label */

/* The one place defaults live: key, default, member, min, max, count
 * member, type, is_repeatable, is_required. key_label or key_id must be
 * given too; check_required() enforces that, as no row can say it. */
static const struct conf_key keys[] = {
    {"listen", "127.0.0.1:8080", MEMBER(listen_host), 0, 0, 0, CONF_T_LISTEN,
	false, false},
    {"index", NULL, MEMBER(index_path), 1, PATH_LEN, 0, CONF_T_PATH, false,
	true},
    {"index_map_size", "4G", MEMBER(index_map_size), MIB, SIZE_MAX, 0,
	CONF_T_BYTES, false, false},
    {"pkcs11_module", "/usr/lib/softhsm/libsofthsm2.so", MEMBER(pkcs11_module),
	1, PATH_LEN, 0, CONF_T_PATH, false, false},
    {"token_label", NULL, MEMBER(token_label), 1, LABEL_LEN, 0, CONF_T_STRING,
	false, true},
    {"key_label", NULL, MEMBER(key_label), 1, CONF_MAX_LINE, 0, CONF_T_STRING,
	false, false},
    {"key_id", NULL, MEMBER(key_id), 2, CONF_MAX_LINE, 0, CONF_T_HEX, false,
	false},
    {"pin_file", NULL, MEMBER(pin_file), 1, PATH_LEN, 0, CONF_T_PATH, false,
	true},
    {"responder_cert", NULL, MEMBER(responder_cert), 1, PATH_LEN, 0,
	CONF_T_PATH, false, true},
    {"issuer_cert", NULL, MEMBER(issuer_certs), 1, PATH_LEN,
	offsetof(struct conf, n_issuer_certs), CONF_T_PATH, true, true},
    {"validity", "1d", MEMBER(validity_s), (uint64_t)CONF_MIN_VALIDITY_S,
	(uint64_t)CONF_MAX_VALIDITY_S, 0, CONF_T_DURATION, false, false},
    {"include_responder_cert", "yes", MEMBER(include_responder_cert), 0, 1, 0,
	CONF_T_BOOL, false, false},
    {"max_cert_ids", "8", MEMBER(max_cert_ids), 1, CONF_MAX_CERT_IDS, 0,
	CONF_T_COUNT, false, false},
    {"max_nonce_len", "32", MEMBER(max_nonce_len), 1, CONF_MAX_NONCE_LEN, 0,
	CONF_T_COUNT, false, false},
    {"max_request_bytes", "10240", MEMBER(max_request_bytes), 512, MIB, 0,
	CONF_T_BYTES, false, false},
    {"threads", "4", MEMBER(threads), 1, 256, 0, CONF_T_COUNT, false, false},
    {"log_requests", "yes", MEMBER(log_requests), 0, 1, 0, CONF_T_BOOL, false,
	false},
    {"presign", "yes", MEMBER(presign), 0, 1, 0, CONF_T_BOOL, false, false},
    {"presign_sha256", "no", MEMBER(presign_sha256), 0, 1, 0, CONF_T_BOOL,
	false, false},
    {"refresh_percent", "50", MEMBER(refresh_percent), 1, 90, 0, CONF_T_COUNT,
	false, false},
    {"refresh_jitter_percent", "10", MEMBER(refresh_jitter_percent), 0, 50, 0,
	CONF_T_COUNT, false, false},
    {"sign_batch", "256", MEMBER(sign_batch), 1, 1024, 0, CONF_T_COUNT, false,
	false},
    {"hsm_sessions", "4", MEMBER(hsm_sessions), 1, 1024, 0, CONF_T_COUNT, false,
	false},
    {"hsm_in_flight", "4", MEMBER(hsm_in_flight), 1, 1024, 0, CONF_T_COUNT,
	false, false},
    {"hsm_processes", "1", MEMBER(hsm_processes), 1, 64, 0, CONF_T_COUNT,
	false, false},
};

/* struct parser is the state of one conf_load() call. */
struct parser {
	struct conf *conf;
	struct conf_error *err;
	char *dir; /* of the config file; NULL when its path has no slash */
	unsigned first_line[NITEMS(keys)]; /* where each key was first seen */
	size_t count[NITEMS(keys)];        /* how often each key was seen */
};

/* Number parsers tell a malformed value from one too large to represent,
 * so that the latter gets the range message like any other big value. */
enum parse_result {
	PARSE_OK,
	PARSE_FORM,
	PARSE_RANGE,
};

static int set_error(struct conf_error *err, int rc, unsigned line,
    const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* set_error fills err and returns rc, so callers write rc = set_error(). */
static int
set_error(struct conf_error *err, int rc, unsigned line, const char *key,
    const char *fmt, ...)
{
	va_list ap;
	size_t key_len = strlen(key);

	if (key_len >= sizeof(err->key))
		key_len = sizeof(err->key) - 1;
	memcpy(err->key, key, key_len);
	err->key[key_len] = '\0';
	err->line = line;
	va_start(ap, fmt);
	(void)vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return rc;
}

static bool
is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

static int
find_key(const char *name)
{
	size_t i;

	for (i = 0; i < NITEMS(keys); i++)
		if (strcmp(keys[i].key, name) == 0)
			return (int)i;
	return -1;
}

/* edit_distance counts the insertions, deletions, substitutions and swaps
 * of neighbours that turn a into b (optimal string alignment). */
static unsigned
edit_distance(const char *a, const char *b)
{
	unsigned d[MAX_KEY_LEN + 1][MAX_KEY_LEN + 1], best;
	size_t i, j, n = strlen(a), m = strlen(b);

	if (n > MAX_KEY_LEN || m > MAX_KEY_LEN)
		return UINT_MAX;
	for (i = 0; i <= n; i++)
		d[i][0] = (unsigned)i;
	for (j = 0; j <= m; j++)
		d[0][j] = (unsigned)j;
	for (i = 1; i <= n; i++) {
		for (j = 1; j <= m; j++) {
			best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if (d[i - 1][j] + 1 < best)
				best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] &&
			    a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[n][m];
}

/* closest_key returns the known key at most two edits from name, or NULL:
 * a typo such as "listne" deserves a hint, not just a rejection. */
static const char *
closest_key(const char *name)
{
	const char *found = NULL;
	unsigned distance, best = 3;
	size_t i;

	for (i = 0; i < NITEMS(keys); i++) {
		distance = edit_distance(name, keys[i].key);
		if (distance < best) {
			best = distance;
			found = keys[i].key;
		}
	}
	return found;
}

/* parse_digits reads one or more decimal digits at *s and advances *s past
 * them. A sign, a space or an empty string is PARSE_FORM. */
static enum parse_result
parse_digits(const char **s, uint64_t *out)
{
	const char *p = *s;
	uint64_t v = 0;
	unsigned digit;
	bool is_overflow = false;

	if (*p < '0' || *p > '9')
		return PARSE_FORM;
	for (; *p >= '0' && *p <= '9'; p++) {
		digit = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - digit) / 10)
			is_overflow = true;
		else
			v = v * 10 + digit;
	}
	*s = p;
	*out = v;
	return is_overflow ? PARSE_RANGE : PARSE_OK;
}

static enum parse_result
parse_count(const char *s, uint64_t *out)
{
	enum parse_result r;

	if ((r = parse_digits(&s, out)) != PARSE_OK)
		return r;
	return *s == '\0' ? PARSE_OK : PARSE_FORM;
}

/* parse_bytes reads "10240", "64K", "512M" or "4G"; the suffixes are powers
 * of 1024, as LMDB's map size is counted in pages of memory. */
static enum parse_result
parse_bytes(const char *s, uint64_t *out)
{
	enum parse_result r;
	uint64_t v, scale;

	if ((r = parse_digits(&s, &v)) == PARSE_FORM)
		return r;
	switch (*s) {
	case '\0':
		scale = 1;
		break;
	case 'K':
	case 'k':
		scale = KIB;
		break;
	case 'M':
	case 'm':
		scale = MIB;
		break;
	case 'G':
	case 'g':
		scale = GIB;
		break;
	default:
		return PARSE_FORM;
	}
	if (*s != '\0' && s[1] != '\0')
		return PARSE_FORM;
	if (r == PARSE_RANGE || v > UINT64_MAX / scale)
		return PARSE_RANGE;
	*out = v * scale;
	return PARSE_OK;
}

/* parse_duration reads "86400", "86400s", "24h", "1d" or "7h59m59s": a bare
 * number is seconds, otherwise each number has a unit and the units run
 * from days down to seconds, each at most once. */
static enum parse_result
parse_duration(const char *s, uint64_t *out)
{
	static const struct {
		char unit;
		uint64_t seconds;
	} units[] = {{'d', 86400}, {'h', 3600}, {'m', 60}, {'s', 1}};
	enum parse_result r, result = PARSE_OK;
	uint64_t total = 0, n;
	size_t u = 0;

	if ((r = parse_digits(&s, &n)) == PARSE_FORM)
		return r;
	if (*s == '\0') {
		*out = n;
		return r;
	}
	for (;;) {
		while (u < NITEMS(units) && units[u].unit != *s)
			u++;
		if (u == NITEMS(units))
			return PARSE_FORM;
		if (r == PARSE_RANGE ||
		    n > (UINT64_MAX - total) / units[u].seconds)
			result = PARSE_RANGE;
		else
			total += n * units[u].seconds;
		s++;
		u++;
		if (*s == '\0')
			break;
		if ((r = parse_digits(&s, &n)) == PARSE_FORM)
			return r;
	}
	*out = total;
	return result;
}

/* format_number writes v as the file would say it, so that a range message
 * reads "between 8h and 10d" rather than "between 28800 and 864000". */
static void
format_number(enum conf_type type, uint64_t v, char *out, size_t out_len)
{
	static const struct {
		char unit;
		uint64_t scale;
	} bytes[] = {{'G', GIB}, {'M', MIB}, {'K', KIB}},
	  durations[] = {{'d', 86400}, {'h', 3600}, {'m', 60}};
	size_t i;

	switch (type) {
	case CONF_T_BYTES:
		for (i = 0; i < NITEMS(bytes); i++) {
			if (v != 0 && v % bytes[i].scale == 0) {
				(void)snprintf(out, out_len, "%llu%c",
				    (unsigned long long)(v / bytes[i].scale),
				    bytes[i].unit);
				return;
			}
		}
		break;
	case CONF_T_DURATION:
		for (i = 0; i < NITEMS(durations); i++) {
			if (v != 0 && v % durations[i].scale == 0) {
				(void)snprintf(out, out_len, "%llu%c",
				    (unsigned long long)(v /
					durations[i].scale),
				    durations[i].unit);
				return;
			}
		}
		(void)snprintf(out, out_len, "%llus", (unsigned long long)v);
		return;
	case CONF_T_LISTEN:
	case CONF_T_PATH:
	case CONF_T_STRING:
	case CONF_T_HEX:
	case CONF_T_BOOL:
	case CONF_T_COUNT:
		break;
	}
	(void)snprintf(out, out_len, "%llu", (unsigned long long)v);
}

/* store_number writes v into the member k names, whatever its integer
 * type; the table's bounds keep v in range, and a row that does not is
 * caught here rather than truncated. */
static int
store_number(
    struct parser *p, const struct conf_key *k, uint64_t v, unsigned line)
{
	unsigned char *member = (unsigned char *)p->conf + k->offset;
	uint16_t v16;
	uint32_t v32;
	int rc = CONF_ERR_VALUE;

	switch (k->size) {
	case sizeof(uint16_t):
		if (v > UINT16_MAX)
			goto out;
		v16 = (uint16_t)v;
		memcpy(member, &v16, sizeof(v16));
		break;
	case sizeof(uint32_t):
		if (v > UINT32_MAX)
			goto out;
		v32 = (uint32_t)v;
		memcpy(member, &v32, sizeof(v32));
		break;
	case sizeof(uint64_t):
		memcpy(member, &v, sizeof(v));
		break;
	default:
		goto out;
	}
	rc = CONF_OK;
out:
	if (rc != CONF_OK)
		rc = set_error(p->err, CONF_ERR_VALUE, line, k->key,
		    "does not fit its field (a bug in the key table)");
	return rc;
}

/* set_number parses value with the parser for k's type and stores it. */
static int
set_number(struct parser *p, const struct conf_key *k, const char *value,
    unsigned line)
{
	enum parse_result r = PARSE_FORM;
	const char *form = "";
	char min[32], max[32];
	uint64_t v = 0;

	switch (k->type) {
	case CONF_T_COUNT:
		r = parse_count(value, &v);
		form = "must be a decimal number, without sign";
		break;
	case CONF_T_BYTES:
		r = parse_bytes(value, &v);
		form = "must be a size such as 10240, 64K, 512M or 4G";
		break;
	case CONF_T_DURATION:
		r = parse_duration(value, &v);
		form = "must be a duration such as 86400s, 24h, 1d or 1h30m";
		break;
	case CONF_T_LISTEN:
	case CONF_T_PATH:
	case CONF_T_STRING:
	case CONF_T_HEX:
	case CONF_T_BOOL:
		form = "is not a number (a bug in the key table)";
		break;
	}
	if (r == PARSE_FORM)
		return set_error(
		    p->err, CONF_ERR_VALUE, line, k->key, "%s", form);
	if (r == PARSE_RANGE || v < k->min || v > k->max) {
		format_number(k->type, k->min, min, sizeof(min));
		format_number(k->type, k->max, max, sizeof(max));
		if (k->max == SIZE_MAX || k->max == UINT64_MAX)
			return set_error(p->err, CONF_ERR_VALUE, line, k->key,
			    "must be at least %s", min);
		return set_error(p->err, CONF_ERR_VALUE, line, k->key,
		    "must be between %s and %s", min, max);
	}
	return store_number(p, k, v, line);
}

static int
set_bool(struct parser *p, const struct conf_key *k, const char *value,
    unsigned line)
{
	bool *member = (bool *)((unsigned char *)p->conf + k->offset);

	if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "true") == 0 ||
	    strcasecmp(value, "on") == 0)
		*member = true;
	else if (strcasecmp(value, "no") == 0 ||
	    strcasecmp(value, "false") == 0 || strcasecmp(value, "off") == 0)
		*member = false;
	else
		return set_error(
		    p->err, CONF_ERR_VALUE, line, k->key, "must be yes or no");
	return CONF_OK;
}

/* join_path returns value as seen from the directory of the config file,
 * so that a file in demo/ may say `index index`. Caller frees. */
static char *
join_path(const char *dir, const char *value)
{
	size_t dir_len, value_len = strlen(value);
	char *joined;

	if (dir == NULL || value[0] == '/')
		return strdup(value);
	dir_len = strlen(dir);
	if (dir[dir_len - 1] == '/') /* the root: no second slash */
		dir_len--;
	if ((joined = malloc(dir_len + 1 + value_len + 1)) == NULL)
		return NULL;
	memcpy(joined, dir, dir_len);
	joined[dir_len] = '/';
	memcpy(joined + dir_len + 1, value, value_len + 1);
	return joined;
}

/* set_string checks and copies value into k's member, or into the next
 * slot of a repeatable key's array. */
static int
set_string(struct parser *p, size_t i, const char *value, unsigned line)
{
	const struct conf_key *k = &keys[i];
	char **slot = (char **)((unsigned char *)p->conf + k->offset);
	char *copy = NULL;
	size_t len, n;
	int rc = CONF_ERR_VALUE;

	if (k->type == CONF_T_HEX) {
		len = strspn(value, "0123456789abcdefABCDEF");
		if (value[len] != '\0' || len % 2 != 0) {
			rc = set_error(p->err, CONF_ERR_VALUE, line, k->key,
			    "must be an even number of hex digits, as in 01 "
			    "or a1b2");
			goto out;
		}
	}
	if (k->type == CONF_T_PATH)
		copy = join_path(p->dir, value);
	else
		copy = strdup(value);
	if (copy == NULL) {
		rc = set_error(
		    p->err, CONF_ERR_NOMEM, line, k->key, "out of memory");
		goto out;
	}
	len = strlen(copy);
	if (len < k->min || len > k->max) {
		rc = set_error(p->err, CONF_ERR_VALUE, line, k->key,
		    "must be %llu to %llu bytes long",
		    (unsigned long long)k->min, (unsigned long long)k->max);
		goto out;
	}
	n = k->is_repeatable ? p->count[i] : 0;
	if (n >= k->size / sizeof(char *)) {
		rc = set_error(p->err, CONF_ERR_DUPLICATE, line, k->key,
		    "given more than %zu times", k->size / sizeof(char *));
		goto out;
	}
	free(slot[n]);
	slot[n] = copy;
	copy = NULL;
	if (k->is_repeatable)
		*(size_t *)((unsigned char *)p->conf + k->count_offset) = n + 1;
	rc = CONF_OK;
out:
	free(copy);
	return rc;
}

/* set_listen splits HOST:PORT; an IPv6 address needs brackets, as in
 * [::1]:8080, because its own colons would hide where the port starts.
 * listen_host keeps the address without the brackets. */
static int
set_listen(struct parser *p, const struct conf_key *k, const char *value,
    unsigned line)
{
	const char *host, *end, *port;
	enum parse_result r;
	char *copy = NULL;
	uint64_t v;
	int rc = CONF_ERR_VALUE;

	if (value[0] == '[') {
		host = value + 1;
		if ((end = strchr(host, ']')) == NULL || end[1] != ':')
			goto out_form;
		port = end + 2;
	} else {
		if ((end = strrchr(value, ':')) == NULL)
			goto out_form;
		host = value;
		port = end + 1;
		if (memchr(host, ':', (size_t)(end - host)) != NULL) {
			rc = set_error(p->err, CONF_ERR_VALUE, line, k->key,
			    "an IPv6 address needs brackets, as in "
			    "[::1]:8080");
			goto out;
		}
	}
	if (end == host || strcspn(host, BLANKS "[]") < (size_t)(end - host))
		goto out_form;
	if ((r = parse_digits(&port, &v)) == PARSE_FORM || *port != '\0')
		goto out_form;
	if (r == PARSE_RANGE || v < 1 || v > UINT16_MAX) {
		rc = set_error(p->err, CONF_ERR_VALUE, line, k->key,
		    "port must be between 1 and 65535");
		goto out;
	}
	if ((copy = strndup(host, (size_t)(end - host))) == NULL) {
		rc = set_error(
		    p->err, CONF_ERR_NOMEM, line, k->key, "out of memory");
		goto out;
	}
	free(p->conf->listen_host);
	p->conf->listen_host = copy;
	p->conf->listen_port = (uint16_t)v;
	rc = CONF_OK;
	goto out;
out_form:
	rc = set_error(p->err, CONF_ERR_VALUE, line, k->key,
	    "must be HOST:PORT, as in 127.0.0.1:8080 or [::1]:8080");
out:
	return rc;
}

/* set_value parses value, from line of the file or from the table's
 * default when line is 0, into the member keys[i] names. */
static int
set_value(struct parser *p, size_t i, const char *value, unsigned line)
{
	const struct conf_key *k = &keys[i];
	int rc = CONF_ERR_VALUE;

	switch (k->type) {
	case CONF_T_LISTEN:
		rc = set_listen(p, k, value, line);
		break;
	case CONF_T_PATH:
	case CONF_T_STRING:
	case CONF_T_HEX:
		rc = set_string(p, i, value, line);
		break;
	case CONF_T_BOOL:
		rc = set_bool(p, k, value, line);
		break;
	case CONF_T_COUNT:
	case CONF_T_BYTES:
	case CONF_T_DURATION:
		rc = set_number(p, k, value, line);
		break;
	}
	return rc;
}

/* parse_line handles one line of len bytes (its newline removed); the
 * buffer has room for a terminating NUL at line[len]. */
static int
parse_line(struct parser *p, char *line, size_t len, unsigned lineno)
{
	char *key, *value, *end, *s;
	const char *hint;
	unsigned char ch;
	size_t n;
	int i, rc = CONF_ERR_SYNTAX;

	if (len > 0 && line[len - 1] == '\r') /* written on Windows */
		len--;
	for (n = 0; n < len; n++) {
		ch = (unsigned char)line[n];
		if (ch == '\0') {
			rc = set_error(p->err, CONF_ERR_SYNTAX, lineno, "",
			    "contains a NUL byte");
			goto out;
		}
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			rc = set_error(p->err, CONF_ERR_SYNTAX, lineno, "",
			    "contains control character 0x%02x", ch);
			goto out;
		}
	}
	line[len] = '\0';

	key = line + strspn(line, BLANKS);
	if (*key == '\0' || *key == '#') {
		rc = CONF_OK;
		goto out;
	}
	/* A '#' after whitespace starts a comment; inside a word it is data,
	 * so that a label or path may contain one. key[0] is not '#'. */
	for (s = key + 1; *s != '\0'; s++) {
		if (*s == '#' && is_blank(s[-1])) {
			*s = '\0';
			break;
		}
	}
	for (end = key + strlen(key); is_blank(end[-1]); end--)
		end[-1] = '\0';
	end = key + strcspn(key, BLANKS);
	value = end + strspn(end, BLANKS);
	*end = '\0';

	if ((i = find_key(key)) < 0) {
		if ((hint = closest_key(key)) != NULL)
			rc = set_error(p->err, CONF_ERR_UNKNOWN, lineno, key,
			    "unknown key; did you mean %s?", hint);
		else
			rc = set_error(p->err, CONF_ERR_UNKNOWN, lineno, key,
			    "unknown key");
		goto out;
	}
	if (*value == '\0') {
		rc = set_error(
		    p->err, CONF_ERR_SYNTAX, lineno, key, "missing value");
		goto out;
	}
	if (p->count[i] > 0 && !keys[i].is_repeatable) {
		rc = set_error(p->err, CONF_ERR_DUPLICATE, lineno, key,
		    "given twice; first on line %u", p->first_line[i]);
		goto out;
	}
	if ((rc = set_value(p, (size_t)i, value, lineno)) != CONF_OK)
		goto out;
	if (p->count[i]++ == 0)
		p->first_line[i] = lineno;
	rc = CONF_OK;
out:
	return rc;
}

/* read_lines feeds each line of fp to parse_line(). Bytes are read one at
 * a time so that an overlong line is refused without being stored and a
 * NUL byte cannot hide the rest of a line from the string functions. */
static int
read_lines(FILE *fp, struct parser *p)
{
	char line[CONF_MAX_LINE + 1];
	size_t len;
	unsigned lineno = 0;
	int ch, rc = CONF_ERR_SYNTAX;

	for (;;) {
		if (lineno == UINT_MAX) {
			rc = set_error(p->err, CONF_ERR_SYNTAX, lineno, "",
			    "too many lines");
			goto out;
		}
		lineno++;
		len = 0;
		while ((ch = getc(fp)) != EOF && ch != '\n') {
			if (len == CONF_MAX_LINE) {
				rc = set_error(p->err, CONF_ERR_SYNTAX, lineno,
				    "", "line longer than %d bytes",
				    CONF_MAX_LINE);
				goto out;
			}
			line[len++] = (char)ch;
		}
		if (ferror(fp)) {
			rc = set_error(p->err, CONF_ERR_IO, 0, "",
			    "cannot read: %s", strerror(errno));
			goto out;
		}
		if (ch == EOF && len == 0)
			break;
		if ((rc = parse_line(p, line, len, lineno)) != CONF_OK)
			goto out;
		if (ch == EOF)
			break;
	}
	rc = CONF_OK;
out:
	return rc;
}

/* apply_defaults gives each key the file left out its table default,
 * parsed by the same code as a line of the file. */
static int
apply_defaults(struct parser *p)
{
	size_t i;
	int rc = CONF_OK;

	for (i = 0; i < NITEMS(keys); i++) {
		if (p->count[i] > 0 || keys[i].default_value == NULL)
			continue;
		if ((rc = set_value(p, i, keys[i].default_value, 0)) != CONF_OK)
			break;
	}
	return rc;
}

static int
check_required(const struct parser *p)
{
	size_t i;

	for (i = 0; i < NITEMS(keys); i++)
		if (keys[i].is_required && p->count[i] == 0)
			return set_error(p->err, CONF_ERR_MISSING, 0,
			    keys[i].key, "is required");
	/* hsm/ finds the signing key by CKA_LABEL, CKA_ID or both. */
	if (p->conf->key_label == NULL && p->conf->key_id == NULL)
		return set_error(p->err, CONF_ERR_MISSING, 0, "key_label",
		    "key_label or key_id is required");
	return CONF_OK;
}

/* config_dir sets *out to the directory part of path without trailing
 * slashes ("/" for the root), or to NULL when path has no slash. */
static int
config_dir(const char *path, char **out)
{
	const char *slash = strrchr(path, '/');
	size_t len;

	*out = NULL;
	if (slash == NULL)
		return CONF_OK;
	for (len = (size_t)(slash - path); len > 0 && path[len - 1] == '/';)
		len--;
	*out = len == 0 ? strdup("/") : strndup(path, len);
	return *out == NULL ? CONF_ERR_NOMEM : CONF_OK;
}

/* open_config opens path for reading if it is a regular file. stat()
 * first keeps us from opening a device at all; O_NONBLOCK keeps a FIFO
 * swapped in between from blocking the open; fstat() decides. */
static int
open_config(const char *path, FILE **out, struct conf_error *err)
{
	struct stat st;
	FILE *fp = NULL;
	int fd = -1, flags, rc = CONF_ERR_IO;

	if (stat(path, &st) == -1) {
		rc = set_error(
		    err, rc, 0, "", "cannot open: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode))
		goto out_not_regular;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd == -1 || fstat(fd, &st) == -1) {
		rc = set_error(
		    err, rc, 0, "", "cannot open: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode))
		goto out_not_regular;
	if ((flags = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == -1 ||
	    (fp = fdopen(fd, "r")) == NULL) {
		rc = set_error(
		    err, rc, 0, "", "cannot open: %s", strerror(errno));
		goto out;
	}
	fd = -1;
	*out = fp;
	rc = CONF_OK;
	goto out;
out_not_regular:
	rc = set_error(err, CONF_ERR_IO, 0, "", "not a regular file");
out:
	if (fd != -1)
		(void)close(fd);
	return rc;
}

int
conf_load(const char *path, struct conf **out, struct conf_error *err)
{
	struct conf_error scratch;
	struct parser p;
	FILE *fp = NULL;
	int rc = CONF_ERR_NOMEM;

	if (err == NULL)
		err = &scratch;
	memset(err, 0, sizeof(*err));
	memset(&p, 0, sizeof(p));
	p.err = err;
	if (out == NULL || path == NULL) {
		rc = set_error(err, CONF_ERR_IO, 0, "", "no path given");
		goto out;
	}
	*out = NULL;
	if ((rc = open_config(path, &fp, err)) != CONF_OK)
		goto out;
	if ((p.conf = calloc(1, sizeof(*p.conf))) == NULL ||
	    config_dir(path, &p.dir) != CONF_OK) {
		rc = set_error(err, CONF_ERR_NOMEM, 0, "", "out of memory");
		goto out;
	}
	if ((rc = read_lines(fp, &p)) != CONF_OK ||
	    (rc = apply_defaults(&p)) != CONF_OK ||
	    (rc = check_required(&p)) != CONF_OK)
		goto out;
	*out = p.conf;
	p.conf = NULL;
	rc = CONF_OK;
out:
	if (fp != NULL)
		(void)fclose(fp);
	free(p.dir);
	conf_free(p.conf);
	return rc;
}

void
conf_free(struct conf *c)
{
	size_t i;

	if (c == NULL)
		return;
	free(c->listen_host);
	free(c->index_path);
	free(c->pkcs11_module);
	free(c->token_label);
	free(c->key_label);
	free(c->key_id);
	free(c->pin_file);
	free(c->responder_cert);
	for (i = 0; i < CONF_MAX_ISSUERS; i++)
		free(c->issuer_certs[i]);
	free(c);
}

const char *
conf_strerror(int err)
{
	switch ((enum conf_err)err) {
	case CONF_OK:
		return "success";
	case CONF_ERR_IO:
		return "cannot read the file";
	case CONF_ERR_SYNTAX:
		return "syntax error";
	case CONF_ERR_UNKNOWN:
		return "unknown key";
	case CONF_ERR_VALUE:
		return "bad value";
	case CONF_ERR_DUPLICATE:
		return "key given too often";
	case CONF_ERR_MISSING:
		return "required key missing";
	case CONF_ERR_NOMEM:
		return "out of memory";
	}
	return "unknown error";
}
