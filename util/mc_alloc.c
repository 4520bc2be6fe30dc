/*
 * Allocation wrapper with failure injection. The counter costs one increment per allocation;
 * mcache allocates little on its hot path (buffers are pooled), so it stays on in release builds,
 * which lets the fault tests run the real binary.
 */
#include "mc_alloc.h"

#include <stdlib.h>
#include <string.h>

static unsigned long fail_at;
static unsigned long count;

static int should_fail(void)
{
	return fail_at && ++count >= fail_at;
}

void *mc_malloc(size_t n)
{
	return should_fail() ? NULL : malloc(n ? n : 1);
}

void *mc_calloc(size_t nmemb, size_t size)
{
	return should_fail() ? NULL : calloc(nmemb ? nmemb : 1, size ? size : 1);
}

void *mc_realloc(void *p, size_t n)
{
	return should_fail() ? NULL : realloc(p, n ? n : 1);
}

char *mc_strndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *d = mc_malloc(len + 1);

	if (d) {
		memcpy(d, s, len);
		d[len] = '\0';
	}
	return d;
}

char *mc_strdup(const char *s)
{
	return mc_strndup(s, strlen(s));
}

void mc_free(void *p)
{
	free(p);
}

void mc_alloc_fail_at(unsigned long nth)
{
	fail_at = nth;
	count = 0;
}

void mc_alloc_init_from_env(void)
{
	const char *s = getenv("MCACHE_FAIL_ALLOC");
	char *end;
	unsigned long n;

	if (!s || !*s)
		return;
	n = strtoul(s, &end, 10);
	if (*end == '\0')
		mc_alloc_fail_at(n);
}
