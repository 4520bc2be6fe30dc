/*
 * Sources: the dispatch of mc_source_resolve() by scheme, the object list, and the one small
 * GET that listings and APIs use (mc_source_get). The resolvers for each scheme live in
 * source_s3.c and source_hf.c; plain http(s) URLs are resolved here, as one object each.
 *
 * Error bodies matter to users ("SignatureDoesNotMatch" says what to fix, "HTTP 403" does not),
 * so an S3 XML <Error> or a Hub JSON {"error": ...} is parsed (libxml2, jansson) into the
 * message, bounded and stripped of control characters; nothing else from the body is echoed.
 */
#include "source_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <curl/curl.h>
#include <errno.h>
#include <fnmatch.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc_banned.h"

bool mc_source_known(const char *uri)
{
	return !strncmp(uri, "http://", 7) || !strncmp(uri, "https://", 8) ||
	       !strncmp(uri, "s3://", 5) || !strncmp(uri, "hf://", 5);
}

int mc_source_resolve(const char *uri, const struct mc_source_opts *o, struct mc_object_list *list,
		      struct mc_err *err)
{
	static const struct mc_source_opts none;

	if (!o)
		o = &none;
	if (!strncmp(uri, "s3://", 5))
		return mc_source_s3_resolve(uri, o, list, err);
	if (!strncmp(uri, "hf://", 5))
		return mc_source_hf_resolve(uri, o, list, err);
	return mc_source_http_resolve(uri, o, list, err);
}

bool mc_source_included(const struct mc_source_opts *o, const char *path)
{
	bool in = !o->ninclude;

	for (size_t i = 0; i < o->ninclude && !in; i++)
		in = fnmatch(o->include[i], path, 0) == 0;
	for (size_t i = 0; i < o->nexclude && in; i++)
		in = fnmatch(o->exclude[i], path, 0) != 0;
	return in;
}

/*
 * TLS and redirect policy shared by every request mcache makes: verification on unless
 * --insecure; CA from the option, SSL_CERT_FILE, SSL_CERT_DIR, else libcurl's default (Debian's
 * libcurl and the static build: /etc/ssl/certs/ca-certificates.crt). Without a readable bundle
 * verification fails (CURLE_SSL_CACERT_BADFILE, see mc_fetch_tls_hint); it is never skipped.
 * Only http(s), and once on https never back to http. libcurl (>= 7.83) drops Authorization on a
 * redirect to another host, port or scheme; mcache keeps no cookies.
 */
void mc_fetch_tls_policy(void *easy, const char *url, const char *ca_file, bool insecure)
{
	CURL *h = easy;
	const char *dir = getenv("SSL_CERT_DIR");

	if (!ca_file)
		ca_file = getenv("SSL_CERT_FILE");
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, insecure ? 0L : 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, insecure ? 0L : 2L);
	if (ca_file && *ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
	if (dir && *dir)
		curl_easy_setopt(h, CURLOPT_CAPATH, dir);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR,
			 strncmp(url, "https://", 8) ? "http,https" : "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
}

const char *mc_fetch_tls_hint(int curl_rc)
{
	return curl_rc == CURLE_SSL_CACERT_BADFILE
		   ? " (no CA certificates: set SSL_CERT_FILE or --ca-file to a PEM bundle)"
		   : "";
}

static void object_release(struct mc_object *ob)
{
	mc_free(ob->url);
	mc_free(ob->source);
	mc_free(ob->path);
	for (char **h = ob->headers; h && *h; h++)
		mc_free(*h);
	mc_free(ob->headers);
	memset(ob, 0, sizeof(*ob));
}

void mc_object_list_release(struct mc_object_list *list)
{
	for (size_t i = 0; i < list->n; i++)
		object_release(&list->obj[i]);
	mc_free(list->obj);
	memset(list, 0, sizeof(*list));
}

struct mc_object *mc_object_list_add(struct mc_object_list *list, const char *url,
				     const char *source, const char *path,
				     const char *const *headers)
{
	struct mc_object *ob;
	size_t nh = 0;

	if (list->n == list->cap) {
		size_t cap = list->cap ? 2 * list->cap : 16;
		struct mc_object *a = mc_realloc(list->obj, cap * sizeof(*a));

		if (!a)
			return NULL;
		list->obj = a;
		list->cap = cap;
	}
	ob = &list->obj[list->n];
	memset(ob, 0, sizeof(*ob));
	ob->url = mc_strdup(url);
	ob->source = mc_strdup(source);
	ob->path = mc_strdup(path);
	if (!ob->url || !ob->source || !ob->path)
		goto fail;
	while (headers && headers[nh])
		nh++;
	if (nh) {
		ob->headers = mc_calloc(nh + 1, sizeof(*ob->headers));
		if (!ob->headers)
			goto fail;
		for (size_t i = 0; i < nh; i++)
			if (!(ob->headers[i] = mc_strdup(headers[i])))
				goto fail;
	}
	list->n++;
	return ob;
fail:
	object_release(ob);
	return NULL;
}

int mc_source_http_resolve(const char *uri, const struct mc_source_opts *o,
			   struct mc_object_list *list, struct mc_err *err)
{
	char *base = NULL, *safe = NULL;
	int ret;

	ret = mc_url_check(uri, &base, &safe, err);
	if (ret)
		goto out;
	if (!mc_source_included(o, base))
		goto out;
	if (!mc_object_list_add(list, uri, safe, base, NULL))
		ret = mc_err_set(err, -ENOMEM, "out of memory");
out:
	mc_free(base);
	mc_free(safe);
	return ret;
}

/* ---- One small GET ---- */

struct body {
	char *buf;
	size_t len, cap, max;
	bool too_big;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *ud)
{
	struct body *b = ud;
	size_t n = size * nmemb;

	if (b->len + n > b->max) {
		b->too_big = true;
		return 0;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 16384;
		char *q;

		while (cap < b->len + n + 1)
			cap *= 2;
		q = mc_realloc(b->buf, cap);
		if (!q)
			return 0;
		b->buf = q;
		b->cap = cap;
	}
	memcpy(b->buf + b->len, p, n);
	b->len += n;
	b->buf[b->len] = '\0';
	return n;
}

/* Copies @s into @out without control characters, at most @cap - 1 bytes. */
static void copy_printable(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; s && *s && n + 1 < cap; s++)
		out[n++] = (unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s;
	out[n] = '\0';
}

/* The code and message of an S3 <Error> document, if @body is one. */
static void s3_error(const char *body, size_t len, char *out, size_t cap)
{
	xmlDocPtr doc = xmlReadMemory(body, (int)len, NULL, NULL,
				      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	xmlNodePtr root = doc ? xmlDocGetRootElement(doc) : NULL;
	char code[128] = "", msg[256] = "";

	if (root && !xmlStrcmp(root->name, (const xmlChar *)"Error")) {
		for (xmlNodePtr n = root->children; n; n = n->next) {
			xmlChar *t;

			if (n->type != XML_ELEMENT_NODE)
				continue;
			if (xmlStrcmp(n->name, (const xmlChar *)"Code") &&
			    xmlStrcmp(n->name, (const xmlChar *)"Message"))
				continue;
			t = xmlNodeGetContent(n);
			if (!xmlStrcmp(n->name, (const xmlChar *)"Code"))
				copy_printable(code, sizeof(code), (const char *)t);
			else
				copy_printable(msg, sizeof(msg), (const char *)t);
			xmlFree(t);
		}
		snprintf(out, cap, "%s%s%s", code, code[0] && msg[0] ? ": " : "", msg);
	}
	xmlFreeDoc(doc);
}

/* The "error" of a Hub JSON answer, if @body is one. */
static void json_error(const char *body, size_t len, char *out, size_t cap)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	json_t *e = json_is_object(root) ? json_object_get(root, "error") : NULL;

	if (json_is_string(e))
		copy_printable(out, cap, json_string_value(e));
	json_decref(root);
}

int mc_source_get(const struct mc_source_opts *o, const char *url, const char *label,
		  const char *const *headers, size_t max, char **body, size_t *len, long *status,
		  struct mc_err *err)
{
	struct body b = {.max = max};
	struct curl_slist *hl = NULL;
	char errbuf[CURL_ERROR_SIZE] = "", why[400] = "";
	CURL *h = curl_easy_init();
	CURLcode rc;
	int ret = 0;

	*body = NULL;
	*len = 0;
	*status = 0;
	if (!h)
		return mc_err_set(err, -ENOMEM, "out of memory");
	for (const char *const *p = headers; p && *p; p++) {
		struct curl_slist *l = curl_slist_append(hl, *p);

		if (!l) {
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
		hl = l;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	mc_fetch_tls_policy(h, url, o->ca_file, o->insecure);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mcache/" MCACHE_VERSION);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
			 (long)(o->connect_timeout_s ? o->connect_timeout_s : 30));
	curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)(o->timeout_s ? o->timeout_s : 120));
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	rc = curl_easy_perform(h);
	if (b.too_big) {
		ret = mc_err_set(err, MC_E_ORIGIN, "the answer from '%s' is larger than %zu bytes",
				 label, max);
		goto out;
	}
	if (rc == CURLE_OUT_OF_MEMORY || (rc == CURLE_WRITE_ERROR && !b.too_big)) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	if (rc != CURLE_OK) {
		ret =
		    mc_err_set(err, MC_E_ORIGIN, "cannot fetch '%s': %s%s", label,
			       errbuf[0] ? errbuf : curl_easy_strerror(rc), mc_fetch_tls_hint(rc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (*status >= 300) {
		if (b.len && b.buf[0] == '<')
			s3_error(b.buf, b.len, why, sizeof(why));
		else if (b.len && b.buf[0] == '{')
			json_error(b.buf, b.len, why, sizeof(why));
		ret = mc_err_set(err, MC_E_ORIGIN, "HTTP %ld from '%s'%s%s", *status, label,
				 why[0] ? ": " : "", why);
		goto out;
	}
	if (!b.buf && !(b.buf = mc_calloc(1, 1))) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	*body = b.buf;
	*len = b.len;
	b.buf = NULL;
out:
	mc_free(b.buf);
	curl_slist_free_all(hl);
	curl_easy_cleanup(h);
	return ret;
}
