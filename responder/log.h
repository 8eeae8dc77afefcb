/* log.h - the only code that writes log lines: stderr (default) or syslog.
 * Lines are lowercase, no final period, and name what failed first. */
#ifndef RESPONDER_LOG_H
#define RESPONDER_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_LEVEL_ERR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* log_init sets the program name shown on each line, the most verbose
 * level written, and whether lines go to syslog instead of stderr. Call it
 * once before any thread starts. */
void log_init(const char *progname, enum log_level level, bool use_syslog);

void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* fatal logs at error level and exits with status 1: startup only. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

/* log_openssl_errors logs OpenSSL's error queue for this thread, each entry
 * prefixed by what, then clears it so the thread's next request starts
 * clean. */
void log_openssl_errors(const char *what);

/* log_hex writes at most out_len - 1 characters of the hex of bytes into
 * out, ending with "..." when truncated: untrusted bytes are never logged
 * raw. Returns out. */
char *log_hex(
    const unsigned char *bytes, size_t len, char *out, size_t out_len);

#endif
