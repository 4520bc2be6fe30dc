/*
 * URL checks for http(s) sources, with libcurl's own parser (CURLU) so that what we accept is
 * exactly what libcurl will fetch. Messages name the URL only in its redacted form: a presigned
 * URL's query string is a credential.
 */
#include "mc_fetch.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <curl/curl.h>
#include <errno.h>
#include <string.h>

#include "mc_banned.h"

int mc_url_check(const char *url, char **basename, char **redacted, struct mc_err *err)
{
	CURLU *h = NULL;
	char *scheme = NULL, *host = NULL, *path = NULL, *safe = NULL, *base = NULL;
	char *decoded = NULL;
	int dlen = 0;
	const char *slash;
	CURLUcode uc;
	int ret = MC_E_USAGE;

	safe = mc_url_redact(url);
	if (!safe)
		return mc_err_set(err, -ENOMEM, "cannot allocate a URL");
	h = curl_url();
	if (!h) {
		ret = mc_err_set(err, -ENOMEM, "cannot allocate a URL");
		goto out;
	}
	uc = curl_url_set(h, CURLUPART_URL, url, 0);
	if (uc == CURLUE_OUT_OF_MEMORY)
		goto out_nomem;
	if (uc != CURLUE_OK) {
		mc_err_set(err, ret, "invalid URL '%s'", safe);
		goto out;
	}
	uc = curl_url_get(h, CURLUPART_SCHEME, &scheme, 0);
	if (uc == CURLUE_OUT_OF_MEMORY)
		goto out_nomem;
	if (uc != CURLUE_OK || (strcmp(scheme, "http") && strcmp(scheme, "https"))) {
		mc_err_set(err, ret, "unsupported URL scheme in '%s' (http and https only)", safe);
		goto out;
	}
	uc = curl_url_get(h, CURLUPART_HOST, &host, 0);
	if (uc == CURLUE_OUT_OF_MEMORY)
		goto out_nomem;
	if (uc != CURLUE_OK || !*host) {
		mc_err_set(err, ret, "URL '%s' has no host", safe);
		goto out;
	}
	/*
	 * The raw path, decoded here: curl_url_get(CURLU_URLDECODE) reports an allocation failure
	 * as a decoding error, and only the last component matters.
	 */
	uc = curl_url_get(h, CURLUPART_PATH, &path, 0);
	if (uc == CURLUE_OUT_OF_MEMORY)
		goto out_nomem;
	if (uc != CURLUE_OK) {
		mc_err_set(err, ret, "URL '%s' has no usable path", safe);
		goto out;
	}
	slash = strrchr(path, '/');
	slash = slash ? slash + 1 : path;
	if (!*slash) {
		mc_err_set(err, ret, "URL '%s' names no file", safe);
		goto out;
	}
	decoded = curl_easy_unescape(NULL, slash, 0, &dlen);
	if (!decoded)
		goto out_nomem;
	/* A decoded NUL or '/' (from %00, %2F) would make the name something else. */
	if (memchr(decoded, '\0', (size_t)dlen) || strchr(decoded, '/') ||
	    !mc_relpath_is_valid(decoded)) {
		mc_err_set(err, ret, "URL '%s' names an unusable file name", safe);
		goto out;
	}
	slash = decoded;
	if (basename) {
		base = mc_strdup(slash);
		if (!base)
			goto out_nomem;
	}
	ret = 0;
	if (basename) {
		*basename = base;
		base = NULL;
	}
	if (redacted) {
		*redacted = safe;
		safe = NULL;
	}
	goto out;
out_nomem:
	ret = mc_err_set(err, -ENOMEM, "cannot allocate a URL");
out:
	mc_free(base);
	mc_free(safe);
	curl_free(scheme);
	curl_free(host);
	curl_free(path);
	curl_free(decoded);
	curl_url_cleanup(h);
	return ret;
}
