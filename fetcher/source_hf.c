/*
 * hf://org/repo[@revision]: the files of a Hugging Face Hub model repository at one commit.
 *
 * One request resolves the revision and lists the files: GET
 * {HF_ENDPOINT}/api/models/{org}/{repo}/revision/{rev}?blobs=true, the call huggingface_hub's
 * HfApi.model_info(revision=..., files_metadata=True) makes, with the revision percent-encoded
 * whole ("refs/pr/1" → "refs%2Fpr%2F1"). Its JSON answer, parsed with jansson, holds "sha" (the
 * commit the revision names now) and "siblings", one object per file:
 *   {"rfilename": "path/in/repo", "size": N, "blobId": "<git oid>",
 *    "lfs": {"sha256": "<64 hex>", "size": N, "pointerSize": N}}
 * where "lfs" is present only for files stored with Git LFS (the weights). Each file is then
 * fetched from {HF_ENDPOINT}/{org}/{repo}/resolve/{sha}/{path} (each path segment
 * percent-encoded): pinned to the commit, so a branch that moves during a pull cannot mix two
 * versions. The Hub answers LFS files there with a redirect to its CDN.
 *
 * The token (HF_TOKEN, or a token file, see mc_hf_token()) travels only in the
 * "Authorization: Bearer" request header of the API call and of every object, which libcurl
 * drops when a redirect changes host, scheme or port: the CDN never sees it. It is never put in
 * a URL, a `source`, a message or anything stored, and its copies are wiped before being freed.
 */
#include "source_hf.h"
#include "source_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mc_banned.h"

#define HF_SHOWN_MAX 200 /* bytes of an outside string quoted in a message */

static bool hf_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool hf_hexdigit(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static char hf_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* True when @s has no control character, so that quoting it keeps a message on one line. */
static bool hf_printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* @s for a message: itself when printable, else a placeholder. */
static const char *hf_shown(const char *s)
{
	return hf_printable(s) ? s : "(unprintable)";
}

/* An org or repo name of @n bytes, by the Hub's rules (huggingface_hub's validate_repo_id). */
static bool hf_name_is_valid(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > MC_HF_NAME_MAX)
		return false;
	if (!(hf_alnum(s[0]) || s[0] == '_') || !(hf_alnum(s[n - 1]) || s[n - 1] == '_'))
		return false;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!hf_alnum(c) && c != '.' && c != '_' && c != '-')
			return false;
		if ((c == '.' || c == '-') &&
		    s[i - 1] == c) /* "..", "--"; i > 0 by the check above */
			return false;
	}
	return true;
}

/*
 * A revision: any bytes but blanks and control characters. "." and ".." are refused because
 * libcurl would fold them as dot segments of the API path and so ask for another resource.
 */
static bool hf_revision_is_valid(const char *r)
{
	size_t n = strlen(r), i;

	if (n == 0 || n > MC_HF_REVISION_MAX || !strcmp(r, ".") || !strcmp(r, ".."))
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char)r[i] <= 0x20 || r[i] == 0x7f)
			return false;
	return true;
}

int mc_hf_parse_uri(const char *uri, const char *revision, struct mc_hf_ref *ref,
		    struct mc_err *err)
{
	const char *id, *at, *slash, *rev;
	size_t idlen;

	memset(ref, 0, sizeof(*ref));
	if (!uri || strncasecmp(uri, "hf://", 5))
		return mc_err_set(err, MC_E_USAGE, "not an hf:// URI");
	if (!hf_printable(uri) || strlen(uri) > 1024)
		return mc_err_set(
		    err, MC_E_USAGE,
		    "invalid hf:// URI: control characters or longer than 1024 bytes");
	id = uri + 5;
	at = strchr(id, '@');
	idlen = at ? (size_t)(at - id) : strlen(id);
	slash = memchr(id, '/', idlen);
	if (slash ? !hf_name_is_valid(id, (size_t)(slash - id)) ||
			!hf_name_is_valid(slash + 1, idlen - (size_t)(slash - id) - 1)
		  : !hf_name_is_valid(id, idlen))
		return mc_err_set(
		    err, MC_E_USAGE,
		    "invalid hf:// URI '%.*s': want hf://org/repo[@revision], names of "
		    "letters, digits, '.', '_' and '-'",
		    HF_SHOWN_MAX, uri);
	memcpy(ref->repo_id, id, idlen);
	ref->repo_id[idlen] = '\0';

	rev = revision ? revision : at ? at + 1 : "main";
	if (!hf_revision_is_valid(rev))
		return mc_err_set(
		    err, MC_E_USAGE,
		    "invalid revision '%.*s' for 'hf://%s': want a branch, tag or commit "
		    "of at most %d bytes, without blanks",
		    HF_SHOWN_MAX, hf_shown(rev), ref->repo_id, MC_HF_REVISION_MAX);
	memcpy(ref->revision, rev, strlen(rev) + 1);
	return 0;
}

char *mc_hf_quote(const char *s, bool keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s), i, j = 0;
	char *out;

	if (n > (SIZE_MAX - 1) / 3)
		return NULL;
	out = mc_malloc(3 * n + 1);
	if (!out)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (hf_alnum((char)c) || c == '-' || c == '.' || c == '_' || c == '~' ||
		    (keep_slash && c == '/')) {
			out[j++] = (char)c;
		} else {
			out[j++] = '%';
			out[j++] = hex[c >> 4];
			out[j++] = hex[c & 15];
		}
	}
	out[j] = '\0';
	return out;
}

int mc_hf_endpoint(char **endpoint, struct mc_err *err)
{
	const char *v = getenv("HF_ENDPOINT"), *host;
	char *safe;
	size_t n, i;
	int ret;

	*endpoint = NULL;
	if (!v || !*v)
		v = MC_HF_DEFAULT_ENDPOINT;
	n = strlen(v);
	while (n > 0 && v[n - 1] == '/')
		n--;
	if (!strncasecmp(v, "https://", 8))
		host = v + 8;
	else if (!strncasecmp(v, "http://", 7))
		host = v + 7;
	else
		goto out_bad;
	if ((size_t)(host - v) >= n || *host == '/')
		goto out_bad;
	for (i = 0; i < n; i++)
		if ((unsigned char)v[i] <= 0x20 || v[i] == 0x7f || v[i] == '?' || v[i] == '#')
			goto out_bad;
	*endpoint = mc_strndup(v, n);
	if (!*endpoint)
		return mc_err_set(err, -ENOMEM, "cannot allocate the Hub endpoint");
	return 0;

out_bad:
	if (!hf_printable(v))
		return mc_err_set(err, MC_E_USAGE, "invalid HF_ENDPOINT: control characters");
	safe = mc_url_redact(v);
	if (!safe)
		return mc_err_set(err, -ENOMEM, "cannot allocate the Hub endpoint");
	ret =
	    mc_err_set(err, MC_E_USAGE,
		       "invalid HF_ENDPOINT '%.*s': want an http(s) URL such as %s, without query "
		       "string",
		       HF_SHOWN_MAX, safe, MC_HF_DEFAULT_ENDPOINT);
	mc_free(safe);
	return ret;
}

static bool hf_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/*
 * Takes the token from @n bytes at @s: leading blanks (blank lines too) skipped, then up to the
 * end of that line, trailing blanks trimmed. Leaves *token NULL when nothing is left.
 */
static int hf_token_take(const char *s, size_t n, const char *from, char **token,
			 struct mc_err *err)
{
	const char *nl;
	size_t i;

	while (n > 0 && hf_blank(*s)) {
		s++;
		n--;
	}
	nl = memchr(s, '\n', n);
	if (nl)
		n = (size_t)(nl - s);
	while (n > 0 && hf_blank(s[n - 1]))
		n--;
	if (n == 0)
		return 0;
	if (n > MC_HF_TOKEN_MAX)
		return mc_err_set(err, MC_E_USAGE, "the Hub token from %s is longer than %d bytes",
				  from, MC_HF_TOKEN_MAX);
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return mc_err_set(err, MC_E_USAGE,
					  "the Hub token from %s holds characters that an HTTP "
					  "header cannot carry",
					  from);
	*token = mc_strndup(s, n);
	if (!*token)
		return mc_err_set(err, -ENOMEM, "cannot allocate the Hub token");
	return 0;
}

/* Reads the token from the file @path; a missing file is no token unless @required. */
static int hf_token_file(const char *path, bool required, const char *from, char **token,
			 struct mc_err *err)
{
	char buf[MC_HF_TOKEN_MAX + 256];
	size_t len = 0;
	ssize_t got;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (!required && (errno == ENOENT || errno == ENOTDIR))
			return 0;
		return mc_err_set(err, MC_E_USAGE, "cannot read the Hub token file '%.*s' (%s): %s",
				  HF_SHOWN_MAX, hf_shown(path), from, strerror(errno));
	}
	while (len < sizeof(buf)) {
		got = read(fd, buf + len, sizeof(buf) - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			ret = mc_err_set(err, MC_E_USAGE,
					 "cannot read the Hub token file '%.*s' (%s): %s",
					 HF_SHOWN_MAX, hf_shown(path), from, strerror(errno));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	ret = hf_token_take(buf, len, from, token, err);
out:
	explicit_bzero(buf, sizeof(buf));
	close(fd);
	return ret;
}

int mc_hf_token(char **token, const char **from, struct mc_err *err)
{
	static const char *const vars[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
	const char *v, *src;
	char path[4096];
	size_t i;
	int n, ret;

	*token = NULL;
	*from = NULL;
	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		v = getenv(vars[i]);
		if (!v || !*v)
			continue;
		ret = hf_token_take(v, strlen(v), vars[i], token, err);
		if (ret)
			return ret;
		if (*token) {
			*from = vars[i];
			return 0;
		}
	}
	if ((v = getenv("HF_TOKEN_PATH")) && *v) {
		src = "HF_TOKEN_PATH";
		ret = hf_token_file(v, true, src, token, err);
		goto out;
	}
	if ((v = getenv("HF_HOME")) && *v) {
		src = "$HF_HOME/token";
		n = snprintf(path, sizeof(path), "%s/token", v);
	} else if ((v = getenv("XDG_CACHE_HOME")) && *v) {
		src = "$XDG_CACHE_HOME/huggingface/token";
		n = snprintf(path, sizeof(path), "%s/huggingface/token", v);
	} else if ((v = getenv("HOME")) && *v) {
		src = "~/.cache/huggingface/token";
		n = snprintf(path, sizeof(path), "%s/.cache/huggingface/token", v);
	} else {
		return 0;
	}
	if (n < 0 || (size_t)n >= sizeof(path))
		return mc_err_set(err, MC_E_USAGE,
				  "cannot read the Hub token file %s: path too long", src);
	ret = hf_token_file(path, false, src, token, err);
out:
	if (!ret && *token)
		*from = src;
	return ret;
}

/* Concatenates the strings up to a NULL into a new string; NULL when out of memory. */
static char *hf_join(const char *first, ...)
{
	va_list ap;
	const char *s;
	size_t n = 0, k;
	char *out, *p;

	va_start(ap, first);
	for (s = first; s; s = va_arg(ap, const char *)) {
		k = strlen(s);
		if (k > SIZE_MAX - 1 - n) {
			va_end(ap);
			return NULL;
		}
		n += k;
	}
	va_end(ap);
	out = mc_malloc(n + 1);
	if (!out)
		return NULL;
	p = out;
	va_start(ap, first);
	for (s = first; s; s = va_arg(ap, const char *)) {
		k = strlen(s);
		memcpy(p, s, k);
		p += k;
	}
	va_end(ap);
	*p = '\0';
	return out;
}

/* A file of the listing, pointing into the parsed JSON. */
struct hf_file {
	const char *path;
	const char *sha256; /* as listed (either case), or NULL when the file is not in LFS */
	uint64_t size;
	bool size_known;
};

static int hf_bad(struct mc_err *err, const struct mc_hf_ref *ref, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* MC_E_ORIGIN, "bad Hub API answer for 'hf://...': <what>". */
static int hf_bad(struct mc_err *err, const struct mc_hf_ref *ref, const char *fmt, ...)
{
	char what[320];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return mc_err_set(err, MC_E_ORIGIN, "bad Hub API answer for 'hf://%s@%s': %s", ref->repo_id,
			  ref->revision, what);
}

/* A JSON byte count: a non-negative integer. */
static bool hf_json_size(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

static bool hf_hex_is_valid(const json_t *v, size_t digits)
{
	const char *s;
	size_t i;

	if (!json_is_string(v) || json_string_length(v) != digits)
		return false;
	s = json_string_value(v);
	for (i = 0; i < digits; i++)
		if (!hf_hexdigit(s[i]))
			return false;
	return true;
}

/*
 * jansson 2.14 reports a failed allocation inside a string token as a syntax error, so the
 * parse runs with an allocator that notes failures: an out-of-memory must be -ENOMEM (exit 6),
 * not a bad answer (exit 3). The allocator is jansson's process-wide setting (cmd/main.c points
 * it at mc_malloc); it is wrapped for the call and restored, the free function unchanged, so
 * values from before and after stay compatible. Resolving runs on one thread.
 */
static json_malloc_t hf_json_prev_malloc;
static bool hf_json_failed;

static void *hf_json_malloc(size_t n)
{
	void *p = hf_json_prev_malloc(n);

	if (!p)
		hf_json_failed = true;
	return p;
}

static json_t *hf_json_load(const char *body, size_t len, json_error_t *jerr, bool *oom)
{
	json_malloc_t prev_malloc;
	json_free_t prev_free;
	json_t *root;

	json_get_alloc_funcs(&prev_malloc, &prev_free);
	hf_json_prev_malloc = prev_malloc;
	hf_json_failed = false;
	json_set_alloc_funcs(hf_json_malloc, prev_free);
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, jerr);
	json_set_alloc_funcs(prev_malloc, prev_free);
	*oom = hf_json_failed;
	if (root && *oom) { /* never seen: a value built around a failed allocation */
		json_decref(root);
		root = NULL;
	}
	return root;
}

static int hf_path_cmp(const void *a, const void *b)
{
	return strcmp((*(const struct hf_file *const *)a)->path,
		      (*(const struct hf_file *const *)b)->path);
}

/* Checks one sibling @s (number @i) and fills @f; 0 or MC_E_ORIGIN. */
static int hf_sibling(const json_t *s, size_t i, const struct mc_hf_ref *ref, struct hf_file *f,
		      struct mc_err *err)
{
	const json_t *name, *v, *lfs;

	name = json_object_get(s, "rfilename");
	if (!json_is_string(name))
		return hf_bad(err, ref, "file %zu has no 'rfilename'", i);
	f->path = json_string_value(name);
	if (strlen(f->path) != json_string_length(name) || !mc_relpath_is_valid(f->path))
		return mc_err_set(err, MC_E_ORIGIN,
				  "unsafe file name in listing of 'hf://%s@%s': '%.*s'",
				  ref->repo_id, ref->revision, HF_SHOWN_MAX, hf_shown(f->path));
	v = json_object_get(s, "size");
	if (v && !json_is_null(v)) {
		if (!hf_json_size(v, &f->size))
			return hf_bad(err, ref, "'size' of '%.*s' is not a byte count",
				      HF_SHOWN_MAX, f->path);
		f->size_known = true;
	}
	lfs = json_object_get(s, "lfs");
	if (!lfs || json_is_null(lfs))
		return 0;
	if (!json_is_object(lfs))
		return hf_bad(err, ref, "'lfs' of '%.*s' is not an object", HF_SHOWN_MAX, f->path);
	v = json_object_get(lfs, "sha256");
	if (!hf_hex_is_valid(v, 64))
		return hf_bad(err, ref, "'lfs.sha256' of '%.*s' is not 64 hex digits", HF_SHOWN_MAX,
			      f->path);
	f->sha256 = json_string_value(v);
	if (!hf_json_size(json_object_get(lfs, "size"), &f->size))
		return hf_bad(err, ref, "'lfs.size' of '%.*s' is not a byte count", HF_SHOWN_MAX,
			      f->path);
	f->size_known = true; /* the file's size; "size" may be the pointer's on older Hubs */
	return 0;
}

/* Appends the object for @f. */
static int hf_add(const struct hf_file *f, const char *endpoint, const struct mc_hf_ref *ref,
		  const char *commit, const char *const *headers, struct mc_object_list *list,
		  struct mc_err *err)
{
	struct mc_object *obj;
	char *qpath = NULL, *url = NULL, *source = NULL;
	size_t i;
	int ret = 0;

	qpath = mc_hf_quote(f->path, true);
	if (!qpath)
		goto out_nomem;
	url = hf_join(endpoint, "/", ref->repo_id, "/resolve/", commit, "/", qpath, NULL);
	source = hf_join("hf://", ref->repo_id, "@", commit, "/", f->path, NULL);
	if (!url || !source)
		goto out_nomem;
	obj = mc_object_list_add(list, url, source, f->path, headers);
	if (!obj)
		goto out_nomem;
	obj->size = f->size_known ? f->size : 0;
	obj->size_known = f->size_known;
	obj->etag[0] = '\0';
	obj->sha256[0] = '\0';
	if (f->sha256) {
		for (i = 0; i < 64; i++)
			obj->sha256[i] = hf_lower(f->sha256[i]);
		obj->sha256[64] = '\0';
	}
	goto out;

out_nomem:
	ret = mc_err_set(err, -ENOMEM, "cannot allocate the objects of 'hf://%s@%s'", ref->repo_id,
			 ref->revision);
out:
	mc_free(qpath);
	mc_free(url);
	mc_free(source);
	return ret;
}

int mc_hf_parse_listing(const char *body, size_t len, const char *endpoint,
			const struct mc_hf_ref *ref, const char *const *headers,
			const struct mc_source_opts *o, struct mc_object_list *list,
			struct mc_err *err)
{
	struct hf_file *files = NULL, **sorted = NULL;
	const json_t *sha, *sibs, *s;
	json_error_t jerr;
	json_t *root;
	char commit[41];
	size_t nsib, nfiles = 0, i;
	bool oom;
	int ret = 0;

	root = hf_json_load(body, len, &jerr, &oom);
	if (!root) {
		if (oom)
			return mc_err_set(err, -ENOMEM, "cannot parse the Hub API answer");
		return hf_bad(err, ref, "not JSON (line %d, column %d)", jerr.line, jerr.column);
	}
	if (!json_is_object(root)) {
		ret = hf_bad(err, ref, "not a JSON object");
		goto out;
	}
	sha = json_object_get(root, "sha");
	if (!hf_hex_is_valid(sha, 40)) {
		ret = hf_bad(err, ref, "'sha' is not a 40-digit hex commit id");
		goto out;
	}
	for (i = 0; i < 40; i++)
		commit[i] = hf_lower(json_string_value(sha)[i]);
	commit[40] = '\0';
	sibs = json_object_get(root, "siblings");
	if (!json_is_array(sibs)) {
		ret = hf_bad(err, ref, "no 'siblings' list");
		goto out;
	}
	nsib = json_array_size(sibs);
	if (nsib > MC_HF_MAX_FILES) {
		ret =
		    hf_bad(err, ref, "%zu files, more than the %d allowed", nsib, MC_HF_MAX_FILES);
		goto out;
	}
	if (nsib == 0) {
		ret = mc_err_set(err, MC_E_NOTFOUND, "repository 'hf://%s@%s' has no files",
				 ref->repo_id, ref->revision);
		goto out;
	}
	files = mc_calloc(nsib, sizeof(*files));
	sorted = mc_calloc(nsib, sizeof(*sorted));
	if (!files || !sorted) {
		ret = mc_err_set(err, -ENOMEM, "cannot allocate the listing of 'hf://%s@%s'",
				 ref->repo_id, ref->revision);
		goto out;
	}

	/* Check everything before appending anything. */
	for (i = 0; i < nsib; i++) {
		s = json_array_get(sibs, i);
		if (!json_is_object(s)) {
			ret = hf_bad(err, ref, "file %zu is not an object", i);
			goto out;
		}
		/* Only listed files are checked for safety: an excluded odd name does no harm. */
		if (o && json_is_string(json_object_get(s, "rfilename")) &&
		    !mc_source_included(o, json_string_value(json_object_get(s, "rfilename"))))
			continue;
		ret = hf_sibling(s, i, ref, &files[nfiles], err);
		if (ret)
			goto out;
		sorted[nfiles] = &files[nfiles];
		nfiles++;
	}
	if (nfiles == 0) {
		ret = mc_err_set(err, MC_E_NOTFOUND,
				 "no file of 'hf://%s@%s' matches the include patterns",
				 ref->repo_id, ref->revision);
		goto out;
	}
	qsort(sorted, nfiles, sizeof(*sorted), hf_path_cmp);
	for (i = 1; i < nfiles; i++) {
		if (!strcmp(sorted[i - 1]->path, sorted[i]->path)) {
			ret = hf_bad(err, ref, "'%.*s' is listed twice", HF_SHOWN_MAX,
				     sorted[i]->path);
			goto out;
		}
	}

	for (i = 0; i < nfiles; i++) {
		ret = hf_add(&files[i], endpoint, ref, commit, headers, list, err);
		if (ret)
			goto out;
	}
	memcpy(list->revision, commit, sizeof(commit));
out:
	mc_free(sorted);
	mc_free(files);
	json_decref(root);
	return ret;
}

/* Turns a failed API request into the message and code that say what to do. */
static int hf_get_failed(int ret, long status, const char *label, const char *from,
			 const struct mc_err *got, struct mc_err *err)
{
	if (ret == MC_E_ORIGIN && (status == 401 || status == 403)) {
		if (!from)
			return mc_err_set(err, MC_E_ORIGIN,
					  "cannot resolve '%s': HTTP %ld: the repository is gated, "
					  "private or missing; set HF_TOKEN to a token with access",
					  label, status);
		return mc_err_set(
		    err, MC_E_ORIGIN,
		    "cannot resolve '%s': HTTP %ld: the token from %s was refused "
		    "(a gated repository: accept its terms on the Hub; private: use a "
		    "token with access)",
		    label, status, from);
	}
	if (ret == MC_E_ORIGIN && status == 404)
		return mc_err_set(
		    err, MC_E_NOTFOUND,
		    "cannot resolve '%s': repository or revision not found (HTTP 404)", label);
	if (got->msg[0])
		return mc_err_set(err, ret, "%s", got->msg);
	return mc_err_set(err, ret, "cannot resolve '%s'", label);
}

int mc_source_hf_resolve(const char *uri, const struct mc_source_opts *o,
			 struct mc_object_list *list, struct mc_err *err)
{
	static const struct mc_source_opts zero;
	const char *headers[2] = {NULL, NULL};
	char *endpoint = NULL, *token = NULL, *auth = NULL, *rev = NULL, *api = NULL;
	char *body = NULL, *label = NULL;
	const char *from = NULL;
	struct mc_hf_ref ref;
	struct mc_err got;
	size_t len = 0;
	long status = 0;
	int ret;

	if (!o)
		o = &zero;
	ret = mc_hf_parse_uri(uri, o->revision, &ref, err);
	if (ret)
		return ret;
	ret = mc_hf_endpoint(&endpoint, err);
	if (ret)
		goto out;
	ret = mc_hf_token(&token, &from, err);
	if (ret)
		goto out;
	if (token) {
		auth = hf_join("Authorization: Bearer ", token, NULL);
		if (!auth)
			goto out_nomem;
		headers[0] = auth;
	}
	rev = mc_hf_quote(ref.revision, false);
	label = hf_join("hf://", ref.repo_id, "@", ref.revision, NULL);
	if (!rev || !label)
		goto out_nomem;
	api =
	    hf_join(endpoint, "/api/models/", ref.repo_id, "/revision/", rev, "?blobs=true", NULL);
	if (!api)
		goto out_nomem;

	mc_err_init(&got);
	ret = mc_source_get(o, api, label, auth ? headers : NULL, MC_HF_API_MAX, &body, &len,
			    &status, &got);
	if (ret) {
		ret = hf_get_failed(ret, status, label, from, &got, err);
		goto out;
	}
	ret = mc_hf_parse_listing(body, len, endpoint, &ref, auth ? headers : NULL, o, list, err);
	goto out;

out_nomem:
	ret = mc_err_set(err, -ENOMEM, "cannot allocate the Hub request for '%s'", ref.repo_id);
out:
	if (token) {
		explicit_bzero(token, strlen(token));
		mc_free(token);
	}
	if (auth) {
		explicit_bzero(auth, strlen(auth));
		mc_free(auth);
	}
	mc_free(endpoint);
	mc_free(rev);
	mc_free(label);
	mc_free(api);
	mc_free(body);
	return ret;
}
