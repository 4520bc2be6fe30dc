/*
 * libFuzzer target: what the command line and origins hand over as names and URLs: URL checks
 * and redaction (fetcher/uri.c, libcurl's parser), model names and relative paths (util/).
 * A redacted URL must never keep a query string or user info.
 */
#include "mc_alloc.h"
#include "mc_fetch.h"
#include "mc_util.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *base = NULL, *red = NULL;
	struct mc_err err;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	mc_err_init(&err);
	if (mc_url_check(s, &base, &red, &err) == 0) {
		/* A secret in the query never survives redaction. */
		if (strchr(red, '?'))
			abort();
		mc_free(base);
		mc_free(red);
	}
	mc_free(mc_url_redact(s));
	(void)mc_name_is_valid(s);
	(void)mc_relpath_is_valid(s);
	free(s);
	return 0;
}
