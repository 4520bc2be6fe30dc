/*
 * AWS Signature Version 4 for S3, query-string form (presigned URLs), with OpenSSL's HMAC and
 * SHA-256. Internal to fetcher/.
 *
 * Presigned URLs keep the engine ignorant of S3: every object becomes a plain GET URL whose
 * query carries the signature (and the session token), valid for MC_S3_PRESIGN_EXPIRES. The
 * engine already treats URLs as secrets. Range, If-Match and If-None-Match are not signed, which
 * S3 allows for presigned requests.
 */
#ifndef MC_SIGV4_H
#define MC_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "mc_err.h"

#define MC_S3_PRESIGN_EXPIRES 43200 /* seconds: 12 h, longer than any single pull */

struct mc_s3_creds {
	const char *access_key; /* NULL: anonymous, no signing */
	const char *secret;
	const char *token; /* AWS_SESSION_TOKEN, or NULL */
	const char *region;
	unsigned expires; /* seconds the URL stays valid; 0 → MC_S3_PRESIGN_EXPIRES */
};

/* One query parameter, not yet encoded. */
struct mc_query_param {
	const char *key;
	const char *value;
};

/*
 * Appends to @out (a buffer of @cap bytes) the URI encoding of @s as SigV4 wants it: every byte
 * but A-Z a-z 0-9 - _ . ~ as %XX (uppercase), and '/' kept when @keep_slash. Returns 0, or
 * -ENAMETOOLONG when it does not fit.
 */
int mc_sigv4_encode(const char *s, int keep_slash, char *out, size_t cap);

/*
 * Builds a presigned GET URL: @scheme "http" or "https", @host as the Host header will carry it
 * (with ":port" when not the scheme's default), @path the canonical, already-encoded path
 * ("/bucket/key"), @params the request's own query parameters. With anonymous @c the URL is
 * unsigned. @now is the signing time. Returns 0 and *url (mc_free()), or -ENOMEM / -EIO.
 */
int mc_sigv4_presign(const struct mc_s3_creds *c, const char *scheme, const char *host,
		     const char *path, const struct mc_query_param *params, size_t nparams,
		     time_t now, char **url, struct mc_err *err);

#endif
