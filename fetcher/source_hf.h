/*
 * Internal to fetcher/: the pieces of the hf:// resolver (source_hf.c) that do no network I/O,
 * exposed so that tests/unit/test_source_hf.c can test them one by one: URI parsing,
 * percent-encoding, the endpoint and token lookups, and turning a Hub API answer into objects.
 */
#ifndef MC_SOURCE_HF_H
#define MC_SOURCE_HF_H

#include <stdbool.h>
#include <stddef.h>

#include "mc_source.h"

#define MC_HF_DEFAULT_ENDPOINT "https://huggingface.co"
#define MC_HF_NAME_MAX	       96     /* characters in an org or a repo name (the Hub's rule) */
#define MC_HF_REVISION_MAX     255    /* bytes in a revision (branch, tag, commit, refs/pr/N) */
#define MC_HF_MAX_FILES	       100000 /* siblings in one answer */
#define MC_HF_API_MAX	       (64u << 20) /* bytes in one API answer */
#define MC_HF_TOKEN_MAX	       4096	   /* bytes in a token */

/* A parsed hf:// URI. */
struct mc_hf_ref {
	char repo_id[2 * MC_HF_NAME_MAX + 2]; /* "org/repo", or "repo" for a legacy model */
	char revision[MC_HF_REVISION_MAX + 1];
};

/*
 * Parses "hf://org/repo[@revision]" (also "hf://repo[@revision]": the Hub still serves the
 * models that predate organisations, such as "gpt2", by their bare name). Org and repo follow
 * the Hub's rules: 1-96 characters from [A-Za-z0-9._-], starting and ending with a letter, a
 * digit or '_', without "--" or "..". The revision is everything after the first '@' (a branch,
 * a tag, a commit sha, "refs/pr/1"): 1-255 bytes, no control characters or spaces; "main" when
 * absent. @revision, when not NULL, overrides the URI's. Returns 0 or MC_E_USAGE.
 */
int mc_hf_parse_uri(const char *uri, const char *revision, struct mc_hf_ref *ref,
		    struct mc_err *err);

/*
 * Returns a newly allocated copy of @s with every byte except RFC 3986's unreserved characters
 * (letters, digits, "-._~") percent-encoded, and '/' kept as well when @keep_slash (a file path
 * whose segments are encoded one by one), as huggingface_hub's quote() does. NULL when out of
 * memory.
 */
char *mc_hf_quote(const char *s, bool keep_slash);

/*
 * Sets *endpoint to a newly allocated HF_ENDPOINT with its trailing slashes removed, or to
 * MC_HF_DEFAULT_ENDPOINT when unset or empty. Returns 0, MC_E_USAGE for an endpoint that is not
 * an http(s) URL without query or fragment, or -ENOMEM.
 */
int mc_hf_endpoint(char **endpoint, struct mc_err *err);

/*
 * Finds the Hub token as huggingface_hub does: HF_TOKEN, else HUGGING_FACE_HUB_TOKEN (its older
 * name), else the first line of the file HF_TOKEN_PATH names, else of $HF_HOME/token (HF_HOME
 * defaults to $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface); surrounding blanks
 * trimmed. Sets *token to a newly allocated string (wipe it with explicit_bzero() before
 * mc_free()), or to NULL when there is none, and *from to a static description of where it
 * came from ("HF_TOKEN", "HF_TOKEN_PATH", "$HF_HOME/token", ...) for messages, or to NULL. A
 * missing default file means no token; a file named by HF_TOKEN_PATH that cannot be read is an
 * error. Returns 0, MC_E_USAGE (unreadable file, a token with characters a header cannot carry, or
 * longer than MC_HF_TOKEN_MAX), or -ENOMEM.
 */
int mc_hf_token(char **token, const char **from, struct mc_err *err);

/*
 * Turns the answer of GET {endpoint}/api/models/{repo_id}/revision/{rev}?blobs=true (@body,
 * @len bytes) into objects appended to @list: one per sibling that o->include admits, with
 * url {endpoint}/{repo_id}/resolve/{sha}/{path, each segment percent-encoded}, source
 * "hf://{repo_id}@{sha}/{path}", @headers (may be NULL), the size from lfs.size or size, and
 * the SHA-256 from lfs.sha256. Sets list->revision to the commit sha. Validates the whole answer
 * before appending anything. Returns 0; MC_E_ORIGIN for an answer that is not the documented
 * shape, a sha that is not 40 hex digits, a file name that mc_relpath_is_valid() refuses or
 * that appears twice, more than MC_HF_MAX_FILES files; MC_E_NOTFOUND when no file is left;
 * -ENOMEM (then @list may hold some of the objects: the caller releases it).
 */
int mc_hf_parse_listing(const char *body, size_t len, const char *endpoint,
			const struct mc_hf_ref *ref, const char *const *headers,
			const struct mc_source_opts *o, struct mc_object_list *list,
			struct mc_err *err);

#endif
