/* http.c - libmicrohttpd glue: the request lifecycle, size limits, HTTP
 * codes and headers, and the access log. OCSP itself is respond.c's. */
#include "responder/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "responder/log.h"

#define HTTP_TIMEOUT_S    10
#define HTTP_CONN_LIMIT   4096
#define HTTP_MEMORY_LIMIT (64 * 1024)

struct http {
	struct MHD_Daemon *daemon;
	struct http_params params;
	const struct respond *responder;
};

/* struct request is one HTTP request: allocated by the first callback,
 * freed only by the completion callback. */
struct request {
	struct timespec started;
	uint8_t *body;
	size_t body_len;
	bool is_too_large;
	bool is_answered;
	struct respond_answer answer;
};

/* Base64 value of c in either alphabet, or -1. A space stands for a `+`
 * that a form encoder turned into one. */
static int
base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-' || c == ' ')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* decode_base64 decodes text (padding optional) into out. Returns the
 * length, or 0 on any character outside the alphabets or too much data. */
static size_t
decode_base64(const char *text, size_t text_len, uint8_t *out, size_t out_cap)
{
	uint32_t bits = 0;
	size_t i, n_bits = 0, n = 0;
	int v;

	while (text_len > 0 && text[text_len - 1] == '=')
		text_len--;
	if (text_len % 4 == 1)
		return 0;
	for (i = 0; i < text_len; i++) {
		if ((v = base64_value(text[i])) < 0)
			return 0;
		bits = (bits << 6) | (uint32_t)v;
		n_bits += 6;
		if (n_bits >= 8) {
			n_bits -= 8;
			if (n == out_cap)
				return 0;
			out[n++] = (uint8_t)(bits >> n_bits);
		}
	}
	return n;
}

/* is_whole_sequence tells whether der is exactly one DER SEQUENCE header
 * plus the contents it announces: a cheap test that tells the request
 * from a path prefix before any real parsing. */
static bool
is_whole_sequence(const uint8_t *der, size_t len)
{
	size_t content_len = 0, header_len = 2, i, n;

	if (len < 2 || der[0] != 0x30)
		return false;
	if (der[1] < 0x80) {
		content_len = der[1];
	} else {
		n = der[1] & 0x7f;
		if (n == 0 || n > 3 || len < 2 + n)
			return false;
		for (i = 0; i < n; i++)
			content_len = (content_len << 8) | der[2 + i];
		header_len += n;
	}
	return header_len + content_len == len;
}

size_t
http_decode_get_path(const char *path, uint8_t *out, size_t out_cap)
{
	const char *candidate = path;
	size_t len;

	/* RFC 9919 2.1: the request follows the responder's URL, which may
	 * have a path of its own; a base64 request starts with `M` (0x30),
	 * so try each segment start from the left, longest first. */
	while (candidate != NULL && *candidate != '\0') {
		while (*candidate == '/')
			candidate++;
		if (*candidate == 'M') {
			len = decode_base64(
			    candidate, strlen(candidate), out, out_cap);
			if (len > 0 && is_whole_sequence(out, len))
				return len;
		}
		candidate = strchr(candidate, '/');
	}
	return 0;
}

static void
log_access(struct MHD_Connection *connection, const char *method,
    const struct request *req, unsigned http_status)
{
	static const char *const names[] = {"successful", "malformedRequest",
	    "internalError", "tryLater", "unused", "sigRequired",
	    "unauthorized"};
	const union MHD_ConnectionInfo *info;
	char client[INET6_ADDRSTRLEN] = "-";
	struct timespec now;
	const struct sockaddr *sa;
	long micros;

	info = MHD_get_connection_info(
	    connection, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (info != NULL && (sa = info->client_addr) != NULL) {
		if (sa->sa_family == AF_INET)
			(void)inet_ntop(AF_INET,
			    &((const struct sockaddr_in *)(const void *)sa)
				 ->sin_addr,
			    client, sizeof(client));
		else if (sa->sa_family == AF_INET6)
			(void)inet_ntop(AF_INET6,
			    &((const struct sockaddr_in6 *)(const void *)sa)
				 ->sin6_addr,
			    client, sizeof(client));
	}
	(void)clock_gettime(CLOCK_MONOTONIC, &now);
	micros = (now.tv_sec - req->started.tv_sec) * 1000000L +
	    (now.tv_nsec - req->started.tv_nsec) / 1000L;
	log_info("ocsp: client=%s method=%s http=%u response=%s cause=%s "
		 "serials=%s status=%s nonce=%s source=%s us=%ld",
	    client, method, http_status, names[req->answer.status],
	    req->answer.cause,
	    req->answer.serials[0] ? req->answer.serials : "-",
	    req->answer.statuses[0] ? req->answer.statuses : "-",
	    req->answer.has_nonce ? "yes" : "no", req->answer.source, micros);
}

static void
format_http_date(int64_t t, char *out, size_t out_len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(out, out_len, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0)
		out[0] = '\0';
}

/* add_cache_headers lets caches keep a successful answer to a GET until
 * its nextUpdate (RFC 9919 5). Answers with a nonce are for one client. */
static void
add_cache_headers(
    struct MHD_Response *response, const struct respond_answer *answer)
{
	char value[96];
	int64_t now = (int64_t)time(NULL), max_age;

	if (answer->status != OCSP_STATUS_SUCCESSFUL || answer->has_nonce) {
		(void)MHD_add_response_header(
		    response, "Cache-Control", "no-store");
		return;
	}
	max_age = answer->next_update - now;
	if (max_age < 0)
		max_age = 0;
	(void)snprintf(value, sizeof(value),
	    "max-age=%lld, public, no-transform, must-revalidate",
	    (long long)max_age);
	(void)MHD_add_response_header(response, "Cache-Control", value);
	format_http_date(answer->this_update, value, sizeof(value));
	if (value[0] != '\0')
		(void)MHD_add_response_header(response, "Last-Modified", value);
	format_http_date(answer->next_update, value, sizeof(value));
	if (value[0] != '\0')
		(void)MHD_add_response_header(response, "Expires", value);
	if (answer->has_etag) {
		value[0] = '"';
		(void)log_hex(answer->etag, sizeof(answer->etag), value + 1,
		    2 * sizeof(answer->etag) + 1);
		(void)strcat(value, "\"");
		(void)MHD_add_response_header(response, "ETag", value);
	}
}

static enum MHD_Result
queue_answer(struct MHD_Connection *connection, const char *method,
    struct request *req, unsigned http_status, bool is_get,
    const struct http *server)
{
	struct MHD_Response *response;
	enum MHD_Result result;

	req->is_answered = true;
	response = MHD_create_response_from_buffer(req->answer.der_len,
	    (void *)(uintptr_t)req->answer.der, MHD_RESPMEM_MUST_COPY);
	if (response == NULL)
		return MHD_NO;
	(void)MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
	    "application/ocsp-response");
	if (is_get)
		add_cache_headers(response, &req->answer);
	else
		(void)MHD_add_response_header(
		    response, "Cache-Control", "no-store");
	result = MHD_queue_response(connection, http_status, response);
	MHD_destroy_response(response);
	if (server->params.log_requests)
		log_access(connection, method, req, http_status);
	return result;
}

static enum MHD_Result
queue_method_not_allowed(struct MHD_Connection *connection, struct request *req)
{
	static const char text[] = "method not allowed\n";
	struct MHD_Response *response;
	enum MHD_Result result;

	req->is_answered = true;
	response = MHD_create_response_from_buffer(
	    sizeof(text) - 1, (void *)(uintptr_t)text, MHD_RESPMEM_PERSISTENT);
	if (response == NULL)
		return MHD_NO;
	(void)MHD_add_response_header(
	    response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST");
	(void)MHD_add_response_header(
	    response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
	result = MHD_queue_response(
	    connection, MHD_HTTP_METHOD_NOT_ALLOWED, response);
	MHD_destroy_response(response);
	return result;
}

/* append_body copies one upload chunk, which MHD lends for this callback
 * only, and stops keeping bytes past the cap. */
static void
append_body(struct request *req, const char *data, size_t len, size_t max_len)
{
	uint8_t *grown;

	if (req->is_too_large)
		return;
	if (len > max_len - req->body_len) {
		req->is_too_large = true;
		return;
	}
	if ((grown = realloc(req->body, req->body_len + len)) == NULL) {
		req->is_too_large = true;
		return;
	}
	req->body = grown;
	memcpy(req->body + req->body_len, data, len);
	req->body_len += len;
}

static bool
declares_too_large(struct MHD_Connection *connection, size_t max_len)
{
	const char *value;
	unsigned long long declared;
	char *end;

	value = MHD_lookup_connection_value(
	    connection, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (value == NULL)
		return false;
	declared = strtoull(value, &end, 10);
	return end != value && declared > max_len;
}

static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *connection, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	const struct http *server = cls;
	struct request *req = *con_cls;
	bool is_get, is_post;
	uint8_t *der;
	size_t der_len, der_cap;

	(void)version;
	is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
	    strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
	is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
	if (req == NULL) {
		if ((req = calloc(1, sizeof(*req))) == NULL)
			return MHD_NO;
		(void)clock_gettime(CLOCK_MONOTONIC, &req->started);
		*con_cls = req;
		if (!is_get && !is_post)
			return queue_method_not_allowed(connection, req);
		/* Refuse a declared oversize at once, before its body. */
		if (is_post &&
		    declares_too_large(
			connection, server->params.max_request_bytes)) {
			respond_error(OCSP_STATUS_MALFORMED_REQUEST,
			    "body too large", &req->answer);
			return queue_answer(connection, method, req,
			    MHD_HTTP_CONTENT_TOO_LARGE, false, server);
		}
		return MHD_YES;
	}
	if (req->is_answered) {
		*upload_data_size = 0; /* discard what follows */
		return MHD_YES;
	}
	if (*upload_data_size != 0) {
		append_body(req, upload_data, *upload_data_size,
		    server->params.max_request_bytes);
		*upload_data_size = 0;
		return MHD_YES;
	}

	/* The whole request is in: answer it. */
	if (is_post) {
		if (req->is_too_large) {
			respond_error(OCSP_STATUS_MALFORMED_REQUEST,
			    "body too large", &req->answer);
			return queue_answer(connection, method, req,
			    MHD_HTTP_CONTENT_TOO_LARGE, false, server);
		}
		respond_query(
		    server->responder, req->body, req->body_len, &req->answer);
		return queue_answer(
		    connection, method, req, MHD_HTTP_OK, false, server);
	}
	der_cap = server->params.max_request_bytes;
	if (strlen(url) > 2 * der_cap || (der = malloc(der_cap)) == NULL) {
		respond_error(OCSP_STATUS_MALFORMED_REQUEST, "url too long",
		    &req->answer);
		return queue_answer(
		    connection, method, req, MHD_HTTP_OK, true, server);
	}
	der_len = http_decode_get_path(url, der, der_cap);
	if (der_len == 0)
		respond_error(OCSP_STATUS_MALFORMED_REQUEST, "bad get path",
		    &req->answer);
	else
		respond_query(server->responder, der, der_len, &req->answer);
	free(der);
	return queue_answer(connection, method, req, MHD_HTTP_OK, true, server);
}

static void
complete_request(void *cls, struct MHD_Connection *connection, void **con_cls,
    enum MHD_RequestTerminationCode code)
{
	struct request *req = *con_cls;

	(void)cls;
	(void)connection;
	(void)code;
	if (req == NULL)
		return;
	respond_answer_release(&req->answer);
	free(req->body);
	free(req);
	*con_cls = NULL;
}

static void log_mhd(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
log_mhd(void *cls, const char *fmt, va_list ap)
{
	char message[512];
	size_t len;

	(void)cls;
	(void)vsnprintf(message, sizeof(message), fmt, ap);
	len = strlen(message);
	while (len > 0 && message[len - 1] == '\n')
		message[--len] = '\0';
	log_warn("http: %s", message);
}

int
http_start(const struct http_params *params, const struct respond *responder,
    struct http **out, char *err, size_t err_len)
{
	struct addrinfo hints = {0}, *ai = NULL;
	struct http *server = NULL;
	char port[8];
	unsigned flags;
	int gai, rc = -1;

	if ((server = calloc(1, sizeof(*server))) == NULL) {
		(void)snprintf(err, err_len, "out of memory");
		goto out;
	}
	server->params = *params;
	server->responder = responder;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
	hints.ai_socktype = SOCK_STREAM;
	(void)snprintf(port, sizeof(port), "%u", (unsigned)params->port);
	if ((gai = getaddrinfo(params->host, port, &hints, &ai)) != 0) {
		(void)snprintf(err, err_len, "cannot use listen address %s: %s",
		    params->host, gai_strerror(gai));
		goto out;
	}
	flags =
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	server->daemon = MHD_start_daemon(flags, params->port, NULL, NULL,
	    handle_request, server, MHD_OPTION_EXTERNAL_LOGGER, log_mhd, server,
	    MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
	    params->threads, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned)HTTP_TIMEOUT_S, MHD_OPTION_CONNECTION_LIMIT,
	    (unsigned)HTTP_CONN_LIMIT, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
	    (size_t)HTTP_MEMORY_LIMIT, MHD_OPTION_NOTIFY_COMPLETED,
	    complete_request, server, MHD_OPTION_END);
	if (server->daemon == NULL) {
		(void)snprintf(err, err_len,
		    "cannot listen on %s port %u (in use, or not an address "
		    "of this host)",
		    params->host, (unsigned)params->port);
		goto out;
	}
	*out = server;
	server = NULL;
	rc = 0;
out:
	if (ai != NULL)
		freeaddrinfo(ai);
	http_stop(server);
	return rc;
}

void
http_stop(struct http *server)
{
	if (server == NULL)
		return;
	if (server->daemon != NULL)
		MHD_stop_daemon(server->daemon);
	free(server);
}
