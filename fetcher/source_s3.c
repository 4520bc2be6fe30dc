/*
 * s3://bucket/prefix/ and s3://bucket/key: ListObjectsV2 (paginated, parsed with libxml2) turned
 * into presigned GET URLs, one per object (sigv4.c), so that the engine fetches S3 objects like
 * any other URL, ranges and all.
 *
 * Configuration is the standard AWS environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN (none: anonymous, unsigned requests), AWS_REGION or AWS_DEFAULT_REGION
 * (default us-east-1), AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for on-prem stores (MinIO, Ceph),
 * addressed path-style; without an endpoint, AWS itself, virtual-hosted style.
 *
 * A key becomes a file path relative to the prefix; a key that is not a safe relative path
 * (absolute, "..", control characters) fails the pull rather than being skipped or rewritten:
 * nothing is ever written outside the model's tree, and nothing is silently left out.
 */
#include "sigv4.h"
#include "source_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mc_banned.h"

#define MAX_LIST_PAGE (32u << 20) /* bytes of one ListObjectsV2 answer */
#define MAX_OBJECTS   1000000u	  /* objects in one source */
#define MAX_KEY	      1024u	  /* S3's own limit on a key, in bytes */

struct s3 {
	struct mc_s3_creds creds;
	const char *scheme; /* "http" or "https" */
	char host[512];	    /* as the Host header carries it */
	char base[256];	    /* endpoint path prefix, "" or "/something" */
	bool path_style;
	char bucket[256];
	char key[MAX_KEY + 1];
	char region[64];
};

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && *v ? v : NULL;
}

static bool bucket_is_valid(const char *b)
{
	size_t n = strlen(b);

	if (n < 1 || n > 255)
		return false;
	for (const char *p = b; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
			return false;
	return true;
}

/* The endpoint URL: scheme, Host header value, and an optional path prefix. */
static int parse_endpoint(struct s3 *s, const char *url, struct mc_err *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	int ret = 0;

	if (!u)
		return mc_err_set(err, -ENOMEM, "out of memory");
	if (curl_url_set(u, CURLUPART_URL, url, 0) ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) ||
	    (strcmp(scheme, "http") && strcmp(scheme, "https"))) {
		ret = mc_err_set(err, MC_E_USAGE, "invalid S3 endpoint URL (AWS_ENDPOINT_URL)");
		goto out;
	}
	s->scheme = strcmp(scheme, "https") ? "http" : "https";
	/* curl sends the port in Host only when it is not the scheme's default. */
	if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK &&
	    strcmp(port, strcmp(scheme, "https") ? "80" : "443"))
		snprintf(s->host, sizeof(s->host), "%s:%s", host, port);
	else
		snprintf(s->host, sizeof(s->host), "%s", host);
	if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/"))
		snprintf(s->base, sizeof(s->base), "%.*s",
			 (int)(strlen(path) - (path[strlen(path) - 1] == '/')), path);
	s->path_style = true;
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return ret;
}

static int configure(struct s3 *s, const char *uri, struct mc_err *err)
{
	const char *rest = uri + 5, *slash, *ep;
	const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
	const char *region = env("AWS_REGION");

	slash = strchr(rest, '/');
	snprintf(s->bucket, sizeof(s->bucket), "%.*s",
		 (int)(slash ? (size_t)(slash - rest) : strlen(rest)), rest);
	if (!bucket_is_valid(s->bucket) || (slash && strlen(slash + 1) > MAX_KEY))
		return mc_err_set(err, MC_E_USAGE,
				  "invalid S3 URI '%.300s': use s3://BUCKET/PREFIX/", uri);
	snprintf(s->key, sizeof(s->key), "%s", slash ? slash + 1 : "");
	if (!ak != !sk)
		return mc_err_set(
		    err, MC_E_USAGE,
		    "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither "
		    "for anonymous access");
	if (!region)
		region = env("AWS_DEFAULT_REGION");
	snprintf(s->region, sizeof(s->region), "%s", region ? region : "us-east-1");
	s->creds.access_key = ak;
	s->creds.secret = sk;
	s->creds.token = ak ? env("AWS_SESSION_TOKEN") : NULL;
	s->creds.region = s->region;
	ep = env("AWS_ENDPOINT_URL_S3");
	if (!ep)
		ep = env("AWS_ENDPOINT_URL");
	if (ep)
		return parse_endpoint(s, ep, err);
	/* AWS itself. Buckets with dots do not match the wildcard certificate: path-style. */
	s->scheme = "https";
	s->path_style = strchr(s->bucket, '.') != NULL;
	if (s->path_style)
		snprintf(s->host, sizeof(s->host), "s3.%s.amazonaws.com", s->region);
	else
		snprintf(s->host, sizeof(s->host), "%s.s3.%s.amazonaws.com", s->bucket, s->region);
	return 0;
}

/* The canonical path of @key (or of the bucket when @key is NULL): encoded, '/' kept. */
static int object_path(const struct s3 *s, const char *key, char *out, size_t cap)
{
	snprintf(out, cap, "%s", s->base);
	if (s->path_style) {
		if (strlen(out) + 1 >= cap)
			return -ENAMETOOLONG;
		strncat(out, "/", cap - strlen(out) - 1);
		if (mc_sigv4_encode(s->bucket, 0, out, cap))
			return -ENAMETOOLONG;
	}
	if (strlen(out) + 1 >= cap)
		return -ENAMETOOLONG;
	strncat(out, "/", cap - strlen(out) - 1);
	return key ? mc_sigv4_encode(key, 1, out, cap) : 0;
}

/* The text of the child element @name of @n, or NULL (xmlFree it). */
static xmlChar *child_text(xmlNodePtr n, const char *name)
{
	for (xmlNodePtr c = n->children; c; c = c->next)
		if (c->type == XML_ELEMENT_NODE && !xmlStrcmp(c->name, (const xmlChar *)name))
			return xmlNodeGetContent(c);
	return NULL;
}

struct listing {
	const char *prefix; /* keys start with it; paths are what follows */
	const char *exact;  /* when not NULL: a key equal to it is the single object */
	bool found_exact;
	size_t added;
};

/* Adds the object @key (of @size bytes, @etag) to @list as a presigned GET. */
static int add_object(const struct s3 *s, struct mc_object_list *list, const char *key,
		      const char *path, uint64_t size, const char *etag,
		      const struct mc_source_opts *o, struct mc_err *err)
{
	char cpath[4 * MAX_KEY + 600], *url = NULL, *source = NULL;
	size_t slen = strlen(s->bucket) + strlen(key) + 7;
	struct mc_object *ob;
	int ret;

	if (!mc_relpath_is_valid(path))
		return mc_err_set(err, MC_E_ORIGIN,
				  "object key '%.300s' in s3://%s cannot be a file path", key,
				  s->bucket);
	if (!mc_source_included(o, path))
		return 0;
	if (list->n >= MAX_OBJECTS)
		return mc_err_set(err, MC_E_ORIGIN, "more than %u objects in s3://%s", MAX_OBJECTS,
				  s->bucket);
	cpath[0] = '\0';
	if (object_path(s, key, cpath, sizeof(cpath)))
		return mc_err_set(err, MC_E_USAGE, "S3 key too long: '%.300s'", key);
	ret =
	    mc_sigv4_presign(&s->creds, s->scheme, s->host, cpath, NULL, 0, time(NULL), &url, err);
	if (ret)
		goto out;
	source = mc_malloc(slen);
	if (!source) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	snprintf(source, slen, "s3://%s/%s", s->bucket, key);
	ob = mc_object_list_add(list, url, source, path, NULL);
	if (!ob) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ob->size = size;
	ob->size_known = true;
	snprintf(ob->etag, sizeof(ob->etag), "%s", etag ? etag : "");
out:
	mc_free(url);
	mc_free(source);
	return ret;
}

/* Parses one ListObjectsV2 page; sets *next to the continuation token (xmlFree) or NULL. */
static int parse_page(const struct s3 *s, const char *body, size_t len, struct listing *l,
		      struct mc_object_list *list, const struct mc_source_opts *o, xmlChar **next,
		      struct mc_err *err)
{
	xmlDocPtr doc = xmlReadMemory(body, (int)len, NULL, NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	xmlChar *trunc = NULL;
	int ret = 0;

	*next = NULL;
	if (!root || xmlStrcmp(root->name, (const xmlChar *)"ListBucketResult")) {
		ret =
		    mc_err_set(err, MC_E_ORIGIN, "bad ListObjectsV2 answer for s3://%s", s->bucket);
		goto out;
	}
	for (xmlNodePtr n = root->children; n && !ret; n = n->next) {
		xmlChar *key, *size, *etag;
		uint64_t sz;

		if (n->type != XML_ELEMENT_NODE || xmlStrcmp(n->name, (const xmlChar *)"Contents"))
			continue;
		key = child_text(n, "Key");
		size = child_text(n, "Size");
		etag = child_text(n, "ETag");
		if (!key || !size || mc_parse_uint((const char *)size, 0, INT64_MAX, &sz)) {
			ret = mc_err_set(err, MC_E_ORIGIN,
					 "bad object entry in the listing of s3://%s", s->bucket);
		} else if (strncmp((const char *)key, l->prefix, strlen(l->prefix))) {
			/* Not under the prefix (the exact-key case lists its siblings too). */
		} else if (l->exact && !strcmp((const char *)key, l->exact)) {
			const char *base = strrchr(l->exact, '/');

			l->found_exact = true;
			ret = add_object(s, list, (const char *)key, base ? base + 1 : l->exact, sz,
					 (const char *)etag, o, err);
		} else if (!l->exact || l->prefix[0]) {
			const char *path = (const char *)key + strlen(l->prefix);

			/* "dir/" markers that consoles create are not files. */
			if (*path && path[strlen(path) - 1] != '/') {
				ret = add_object(s, list, (const char *)key, path, sz,
						 (const char *)etag, o, err);
				l->added++;
			}
		}
		xmlFree(key);
		xmlFree(size);
		xmlFree(etag);
	}
	trunc = child_text(root, "IsTruncated");
	if (!ret && trunc && !xmlStrcmp(trunc, (const xmlChar *)"true")) {
		*next = child_text(root, "NextContinuationToken");
		if (!*next || !**next)
			ret = mc_err_set(
			    err, MC_E_ORIGIN,
			    "truncated listing of s3://%s without a continuation token", s->bucket);
	}
out:
	xmlFree(trunc);
	xmlFreeDoc(doc);
	return ret;
}

/* Lists every key starting with @l->prefix (all pages) into @list. */
static int list_prefix(const struct s3 *s, const char *list_prefix_, struct listing *l,
		       struct mc_object_list *list, const struct mc_source_opts *o,
		       struct mc_err *err)
{
	char cpath[1024], label[600], *url = NULL, *body = NULL;
	xmlChar *token = NULL;
	size_t len;
	long status;
	int ret = 0;

	snprintf(label, sizeof(label), "s3://%s/%s", s->bucket, list_prefix_);
	cpath[0] = '\0';
	if (object_path(s, NULL, cpath, sizeof(cpath)))
		return mc_err_set(err, MC_E_USAGE, "S3 bucket name too long");
	do {
		struct mc_query_param q[3] = {{"list-type", "2"}, {"prefix", list_prefix_}};
		xmlChar *next = NULL;
		size_t nq = 2;

		if (token)
			q[nq++] =
			    (struct mc_query_param){"continuation-token", (const char *)token};
		ret = mc_sigv4_presign(&s->creds, s->scheme, s->host, cpath, q, nq, time(NULL),
				       &url, err);
		if (!ret)
			ret = mc_source_get(o, url, label, NULL, MAX_LIST_PAGE, &body, &len,
					    &status, err);
		mc_free(url);
		url = NULL;
		if (ret && status == 404)
			ret = MC_E_NOTFOUND; /* NoSuchBucket: the message says so */
		if (!ret)
			ret = parse_page(s, body, len, l, list, o, &next, err);
		mc_free(body);
		body = NULL;
		xmlFree(token);
		token = next;
	} while (!ret && token);
	xmlFree(token);
	return ret;
}

int mc_source_s3_resolve(const char *uri, const struct mc_source_opts *o,
			 struct mc_object_list *list, struct mc_err *err)
{
	struct s3 *s = mc_calloc(1, sizeof(*s));
	size_t before = list->n;
	char *dir = NULL;
	int ret;

	if (!s)
		return mc_err_set(err, -ENOMEM, "out of memory");
	ret = configure(s, uri, err);
	if (ret)
		goto out;
	if (!s->key[0] || s->key[strlen(s->key) - 1] == '/') {
		/* A prefix: every object under it, paths relative to it. */
		struct listing l = {.prefix = s->key};

		ret = list_prefix(s, s->key, &l, list, o, err);
	} else {
		/* One key; or, when no object has exactly that key, the "directory" KEY/. */
		size_t n = strlen(s->key) + 2;
		struct listing l = {.prefix = "", .exact = s->key};

		dir = mc_malloc(n);
		if (!dir) {
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		snprintf(dir, n, "%s/", s->key);
		ret = list_prefix(s, s->key, &l, list, o, err);
		if (!ret && !l.found_exact) {
			struct listing d = {.prefix = dir};

			ret = list_prefix(s, dir, &d, list, o, err);
		}
	}
	if (!ret && list->n == before)
		ret = mc_err_set(err, MC_E_NOTFOUND, "no object at '%.300s'", uri);
out:
	if (ret == MC_E_NOTFOUND && err && !err->msg[0])
		mc_err_set(err, ret, "no object at '%.300s'", uri);
	mc_free(dir);
	mc_free(s);
	return ret;
}
