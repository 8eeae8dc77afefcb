/* log.c - log lines to stderr or syslog, one write per line so that lines
 * from several threads never interleave. */
#include "responder/log.h"

#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

static const char *log_progname = "ocsp";
static enum log_level log_max_level = LOG_LEVEL_INFO;
static bool log_to_syslog;

void
log_init(const char *progname, enum log_level level, bool use_syslog)
{
	log_progname = progname;
	log_max_level = level;
	log_to_syslog = use_syslog;
	if (use_syslog)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

static void log_write(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
log_write(enum log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = {
	    "error", "warning", "info", "debug"};
	static const int priorities[] = {
	    LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	char message[2048], line[2200];
	struct tm tm;
	time_t now;
	int n;

	if (level > log_max_level)
		return;
	(void)vsnprintf(message, sizeof(message), fmt, ap);
	if (log_to_syslog) {
		syslog(priorities[level], "%s", message);
		return;
	}
	now = time(NULL);
	(void)gmtime_r(&now, &tm);
	n = snprintf(line, sizeof(line),
	    "%04d-%02d-%02dT%02d:%02d:%02dZ %s: %s: %s\n", tm.tm_year + 1900,
	    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    log_progname, names[level], message);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/* One fwrite per line: stdio locks the stream for each call. */
	(void)fwrite(line, 1, (size_t)n, stderr);
}

#define DEFINE_LOG(name, level)                                                \
	void name(const char *fmt, ...)                                        \
	{                                                                      \
		va_list ap;                                                    \
		va_start(ap, fmt);                                             \
		log_write(level, fmt, ap);                                     \
		va_end(ap);                                                    \
	}

DEFINE_LOG(log_err, LOG_LEVEL_ERR)
DEFINE_LOG(log_warn, LOG_LEVEL_WARN)
DEFINE_LOG(log_info, LOG_LEVEL_INFO)
DEFINE_LOG(log_debug, LOG_LEVEL_DEBUG)

void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(LOG_LEVEL_ERR, fmt, ap);
	va_end(ap);
	exit(1);
}

void
log_openssl_errors(const char *what)
{
	unsigned long e;
	char buf[256];

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_err("%s: %s", what, buf);
	}
	ERR_clear_error();
}

char *
log_hex(const unsigned char *bytes, size_t len, char *out, size_t out_len)
{
	static const char digits[] = "0123456789abcdef";
	size_t i, n = 0;

	if (out_len == 0)
		return out;
	for (i = 0; i < len; i++) {
		if (n + 2 >= out_len) {
			/* No room for this byte: end with "..." instead. */
			if (out_len >= 4) {
				memcpy(out + out_len - 4, "...", 3);
				n = out_len - 1;
			}
			break;
		}
		out[n++] = digits[bytes[i] >> 4];
		out[n++] = digits[bytes[i] & 15];
	}
	out[n] = '\0';
	return out;
}
