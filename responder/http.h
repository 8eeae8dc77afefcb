/* http.h - the HTTP front end (libmicrohttpd): RFC 6960 appendix A POST and
 * RFC 9919 GET in, application/ocsp-response out. */
#ifndef RESPONDER_HTTP_H
#define RESPONDER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "responder/respond.h"

#ifndef MUST_CHECK
#define MUST_CHECK __attribute__((warn_unused_result))
#endif

struct http_params {
	const char *host; /* numeric address to bind */
	uint16_t port;
	unsigned threads;         /* worker threads */
	size_t max_request_bytes; /* POST body and decoded GET cap */
	bool log_requests;        /* one access-log line per request */
};

struct http;

/* http_start binds host:port and serves in background threads until
 * http_stop(). params is copied; responder is borrowed until http_stop().
 * On success *out owns the server. Returns 0, or -1 with the reason in
 * err. */
int http_start(const struct http_params *params,
    const struct respond *responder, struct http **out, char *err,
    size_t err_len) MUST_CHECK;

/* http_stop stops accepting, closes every connection and frees server.
 * Accepts NULL. */
void http_stop(struct http *server);

/* http_decode_get_path finds the request in a GET path that MHD has
 * already percent-decoded: the base64 (standard or URL-safe alphabet,
 * padding optional) after the last path prefix, which may end in `//`.
 * Writes at most out_cap bytes of DER into out. Returns the DER length, or
 * 0 when the path holds no well-formed request. */
size_t http_decode_get_path(const char *path, uint8_t *out, size_t out_cap);

#endif
