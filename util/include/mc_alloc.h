/*
 * The one allocation wrapper every mcache module uses, so that a test can fail the Nth
 * allocation (SQLite's and curl's fault injection): MCACHE_FAIL_ALLOC=N in the environment,
 * read once by mc_alloc_init_from_env(), makes the Nth and later calls return NULL.
 */
#ifndef MC_ALLOC_H
#define MC_ALLOC_H

#include <stddef.h>

void *mc_malloc(size_t n);
void *mc_calloc(size_t nmemb, size_t size);
void *mc_realloc(void *p, size_t n);
char *mc_strdup(const char *s);
char *mc_strndup(const char *s, size_t n);
void mc_free(void *p);

/* Fails the @nth allocation from now on and every later one; 0 disables injection. */
void mc_alloc_fail_at(unsigned long nth);

/* Reads MCACHE_FAIL_ALLOC; called once by the front end. */
void mc_alloc_init_from_env(void);

#endif
