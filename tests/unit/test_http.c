/* test_http.c - GET path decoding: every GET in the corpus decodes from
 * its exact request path, and the tolerated variants (prefix, `//`,
 * base64url, no padding) give the same DER; junk gives none. */
#include <ctype.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "responder/http.h"
#include "tests/test.h"

#define CORPUS "tests/data/corpus/ocsp-requests/"

static size_t
read_file(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL)
		return 0;
	n = fread(out, 1, cap - 1, f);
	out[n] = '\0';
	(void)fclose(f);
	return n;
}

/* percent_decode does what libmicrohttpd does to a URL before the
 * handler sees it. */
static void
percent_decode(const char *in, char *out)
{
	char hex[3] = {0};

	while (*in != '\0') {
		if (in[0] == '%' && isxdigit((unsigned char)in[1]) &&
		    isxdigit((unsigned char)in[2])) {
			hex[0] = in[1];
			hex[1] = in[2];
			*out++ = (char)strtol(hex, NULL, 16);
			in += 3;
		} else {
			*out++ = *in++;
		}
	}
	*out = '\0';
}

static bool
decodes_to(const char *path, const uint8_t *want, size_t want_len)
{
	uint8_t der[4096];
	size_t len = http_decode_get_path(path, der, sizeof(der));

	return len == want_len && memcmp(der, want, len) == 0;
}

static void
test_corpus_gets(void)
{
	char name_path[512], target[1024], path[1024], variant[1200];
	uint8_t want[4096];
	size_t want_len, len, i, j;
	struct dirent *entry;
	DIR *dir = opendir(CORPUS);
	int n_gets = 0;

	CHECK(dir != NULL);
	while (dir != NULL && (entry = readdir(dir)) != NULL) {
		len = strlen(entry->d_name);
		if (len < 9 || strcmp(entry->d_name + len - 8, ".get.txt") != 0)
			continue;
		n_gets++;
		(void)snprintf(
		    name_path, sizeof(name_path), CORPUS "%s", entry->d_name);
		CHECK(read_file(name_path, target, sizeof(target)) > 0);
		(void)snprintf(name_path, sizeof(name_path), CORPUS "%.*s.der",
		    (int)(len - 8), entry->d_name);
		want_len = read_file(name_path, (char *)want, sizeof(want));
		CHECK(want_len > 0);
		percent_decode(target, path);
		CHECK(decodes_to(path, want, want_len));

		/* A path prefix, and a prefix ending in `//`. */
		(void)snprintf(variant, sizeof(variant), "/ocsp%s", path);
		CHECK(decodes_to(variant, want, want_len));
		(void)snprintf(variant, sizeof(variant), "/a/b//%s", path + 1);
		CHECK(decodes_to(variant, want, want_len));
		/* base64url without padding. */
		for (i = 0, j = 0; path[i] != '\0'; i++) {
			if (path[i] == '=')
				continue;
			variant[j++] = path[i] == '+' ? '-'
			    : path[i] == '/' && i > 0 ? '_'
						      : path[i];
		}
		variant[j] = '\0';
		CHECK(decodes_to(variant, want, want_len));
		/* Truncated: no request. */
		path[strlen(path) - 3] = '\0';
		CHECK(http_decode_get_path(path, want, sizeof(want)) == 0);
	}
	if (dir != NULL)
		(void)closedir(dir);
	CHECK(n_gets == 25);
}

static void
test_junk(void)
{
	uint8_t der[64];

	CHECK(http_decode_get_path("", der, sizeof(der)) == 0);
	CHECK(http_decode_get_path("/", der, sizeof(der)) == 0);
	CHECK(http_decode_get_path("//", der, sizeof(der)) == 0);
	CHECK(http_decode_get_path("/M", der, sizeof(der)) == 0);
	CHECK(http_decode_get_path("/M!!!", der, sizeof(der)) == 0);
	CHECK(http_decode_get_path("/favicon.ico", der, sizeof(der)) == 0);
	/* "MAA=" is 30 00: an empty SEQUENCE, structurally whole. */
	CHECK(http_decode_get_path("/MAA=", der, sizeof(der)) == 2);
	/* Larger than the output buffer: refused, not overrun. */
	CHECK(http_decode_get_path(
		  "/MIIBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		  "AAAAAAAAAAAAAAAAAAAAAAAA",
		  der, 16) == 0);
}

int
main(void)
{
	test_corpus_gets();
	test_junk();
	return test_summary();
}
