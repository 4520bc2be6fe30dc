/*
 * Sources: what a URI names, resolved into the objects to fetch.
 *
 *   http(s)://host/path/file   one object; its file name is the path's basename
 *   s3://bucket/prefix/        every object under the prefix (ListObjectsV2, paginated);
 *   s3://bucket/key            one object. SigV4 from the AWS_* environment (see mc_s3.h)
 *   hf://org/repo[@revision]   the files of a Hugging Face Hub repository at one commit
 *
 * Resolving talks to the origin (listings, the Hub API) but downloads no file. Each object comes
 * with what the origin already said about it (size, ETag, SHA-256) so that the engine can
 * refuse a body of another size and the cache can skip what it holds. URLs and request headers
 * may carry credentials (presigned query strings, bearer tokens): they are handed to the engine
 * and never logged or stored; `source` is the secret-free identity the index records.
 */
#ifndef MC_SOURCE_H
#define MC_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mc_err.h"
#include "mc_fetch.h"

/* One object to fetch. Every string is owned by the list it is in. */
struct mc_object {
	char *url;	/* what to GET; may carry secrets (presigned query) */
	char *source;	/* stable, secret-free identity: "https://h/p", "s3://b/k", "hf://o/r/p" */
	char *path;	/* relative path in the model tree, mc_relpath_is_valid() */
	char **headers; /* NULL-terminated "Name: value" request headers (secrets), or NULL */
	uint64_t size;	/* bytes, when size_known */
	bool size_known;
	char etag[256];	 /* the listing's ETag (a version marker, not a checksum), or "" */
	char sha256[65]; /* lowercase hex SHA-256 the origin publishes for the bytes, or "" */
};

struct mc_object_list {
	struct mc_object *obj;
	size_t n, cap;
	/*
	 * The version the whole source resolved to, when it has one (an HF commit sha), else "".
	 * Stored with the model version.
	 */
	char revision[128];
};

/* Options for resolving; zero is a usable default. */
struct mc_source_opts {
	const char *ca_file; /* as for the engine: NULL → SSL_CERT_FILE, else the system's */
	bool insecure;	     /* as for the engine */
	unsigned connect_timeout_s; /* 0 → 30 */
	unsigned timeout_s;	    /* one listing or API request, whole; 0 → 120 */
	const char *revision;	    /* hf: a revision overriding the URI's @revision, or NULL */
	/*
	 * Only objects whose path matches one of @include (all when none) and none of @exclude,
	 * fnmatch(3) patterns against the path in the model ("*.safetensors", "original/[^/]*").
	 */
	const char *const *include;
	size_t ninclude;
	const char *const *exclude;
	size_t nexclude;
};

/*
 * Resolves @uri into objects appended to @list (which may already hold some; initialise it to
 * all zeros). Returns 0, or MC_E_USAGE for a URI that is not one of the forms above,
 * MC_E_ORIGIN (with the origin's words: 403 SignatureDoesNotMatch, 404 NoSuchBucket, ...),
 * MC_E_NOTFOUND when a prefix or repository holds no object, -ENOMEM. Messages never carry
 * secrets.
 */
int mc_source_resolve(const char *uri, const struct mc_source_opts *o, struct mc_object_list *list,
		      struct mc_err *err);

/* Frees every object of @list and resets it to empty. */
void mc_object_list_release(struct mc_object_list *list);

/*
 * Appends an object to @list, taking copies of the strings (headers may be NULL). Returns a
 * pointer to it (valid until the next append) or NULL when out of memory. For source modules.
 */
struct mc_object *mc_object_list_add(struct mc_object_list *list, const char *url,
				     const char *source, const char *path,
				     const char *const *headers);

/* True when @uri starts with a scheme mc_source_resolve() knows: http, https, s3 or hf. */
bool mc_source_known(const char *uri);

/*
 * Fetches one small document (a listing page, an API answer) into memory: GET @url with
 * @headers, following redirects (http and https only), TLS verified, at most @max bytes.
 * Returns 0 with *body (NUL-terminated, mc_free()) and *len, or MC_E_ORIGIN with "HTTP N from
 * 'LABEL'" plus, when the body is an S3 or Hub error, its code and message. For source modules.
 */
int mc_source_get(const struct mc_source_opts *o, const char *url, const char *label,
		  const char *const *headers, size_t max, char **body, size_t *len, long *status,
		  struct mc_err *err);

#endif
