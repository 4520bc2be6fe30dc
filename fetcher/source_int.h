/*
 * Internal to fetcher/: the resolvers behind mc_source_resolve(), one per scheme. Each appends
 * the objects its URI names to @list (mc_object_list_add) and follows mc_source_resolve()'s
 * contract for codes and messages.
 */
#ifndef MC_SOURCE_INT_H
#define MC_SOURCE_INT_H

#include "mc_source.h"

int mc_source_http_resolve(const char *uri, const struct mc_source_opts *o,
			   struct mc_object_list *list, struct mc_err *err);
int mc_source_s3_resolve(const char *uri, const struct mc_source_opts *o,
			 struct mc_object_list *list, struct mc_err *err);
int mc_source_hf_resolve(const char *uri, const struct mc_source_opts *o,
			 struct mc_object_list *list, struct mc_err *err);

/* True when @path matches one of o->include (or when there is no include list). */
bool mc_source_included(const struct mc_source_opts *o, const char *path);

/* Sets the TLS and redirect policy on a curl easy handle @easy about to GET @url. */
void mc_fetch_tls_policy(void *easy, const char *url, const char *ca_file, bool insecure);

/*
 * What to append to the message for a failed transfer's libcurl result @curl_rc: for "the CA
 * bundle cannot be read" (--ca-file or SSL_CERT_FILE names no readable file, or neither is
 * set and libcurl's compiled-in bundle is absent, as in a FROM-scratch image), a hint naming
 * SSL_CERT_FILE and --ca-file; "" for anything else. A static string.
 */
const char *mc_fetch_tls_hint(int curl_rc);

#endif
