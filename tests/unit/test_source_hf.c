/*
 * Unit tests of the hf:// resolver's pure parts (fetcher/source_hf.h): URI parsing by the Hub's
 * naming rules, percent-encoding of revisions and paths, the HF_ENDPOINT and token lookups
 * (environment and token files), and turning Hub API answers into objects, including every
 * way an answer can be malformed or unsafe. The network half is tested against a Hub-shaped
 * nginx by tests/integration/it_hf.sh.
 */
#include "mc_test.h"

#include "mc_alloc.h"
#include "mc_source.h"
#include "source_hf.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mc_banned.h"

#define SHA_A "0123456789abcdef0123456789abcdef01234567"
#define SHA_B "89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
#define TOKEN "hf_unitTestSecret42"

static char tmpdir[] = "/tmp/mcache-test_source_hf.XXXXXX";

static void ok_uri(const char *uri, const char *override, const char *repo_id, const char *rev)
{
	struct mc_hf_ref ref;
	struct mc_err err;

	mc_err_init(&err);
	if (mc_hf_parse_uri(uri, override, &ref, &err) != 0) {
		fprintf(stderr, "'%s': %s\n", uri, err.msg);
		ASSERT_TRUE(false);
	}
	ASSERT_STR_EQ(ref.repo_id, repo_id);
	ASSERT_STR_EQ(ref.revision, rev);
}

static void bad_uri(const char *uri, const char *override)
{
	struct mc_hf_ref ref;
	struct mc_err err;

	mc_err_init(&err);
	if (mc_hf_parse_uri(uri, override, &ref, &err) != MC_E_USAGE) {
		fprintf(stderr, "'%s' was accepted\n", uri);
		ASSERT_TRUE(false);
	}
	ASSERT_TRUE(err.msg[0] != '\0');
	ASSERT_TRUE(strchr(err.msg, '\n') == NULL);
}

static void test_parse_uri(void)
{
	char longname[MC_HF_NAME_MAX + 16], uri[512], rev[MC_HF_REVISION_MAX + 2];

	ok_uri("hf://org/repo", NULL, "org/repo", "main");
	ok_uri("hf://meta-llama/Llama-3.1-8B-Instruct", NULL, "meta-llama/Llama-3.1-8B-Instruct",
	       "main");
	ok_uri("hf://org/repo@v1.0", NULL, "org/repo", "v1.0");
	ok_uri("hf://org/repo@refs/pr/1", NULL, "org/repo", "refs/pr/1");
	ok_uri("hf://org/repo@" SHA_A, NULL, "org/repo", SHA_A);
	ok_uri("hf://org/repo@v1", "dev", "org/repo", "dev"); /* the option wins */
	ok_uri("hf://org/repo", "refs/convert/parquet", "org/repo", "refs/convert/parquet");
	ok_uri("hf://gpt2", NULL, "gpt2", "main"); /* a legacy model without an org */
	ok_uri("hf://bert-base-uncased@main", NULL, "bert-base-uncased", "main");
	ok_uri("HF://Org_1/re.po_2", NULL, "Org_1/re.po_2", "main");
	ok_uri("hf://org/repo@rev@x", NULL, "org/repo", "rev@x");
	ok_uri("hf://org/repo@caf\xc3\xa9", NULL, "org/repo", "caf\xc3\xa9");

	memset(longname, 'a', MC_HF_NAME_MAX);
	longname[MC_HF_NAME_MAX] = '\0';
	snprintf(uri, sizeof(uri), "hf://%s/%s", longname, longname);
	ok_uri(uri, NULL, uri + 5, "main");
	longname[MC_HF_NAME_MAX] = 'a';
	longname[MC_HF_NAME_MAX + 1] = '\0';
	snprintf(uri, sizeof(uri), "hf://org/%s", longname);
	bad_uri(uri, NULL);

	memset(rev, 'r', MC_HF_REVISION_MAX);
	rev[MC_HF_REVISION_MAX] = '\0';
	ok_uri("hf://org/repo", rev, "org/repo", rev);
	rev[MC_HF_REVISION_MAX] = 'r';
	rev[MC_HF_REVISION_MAX + 1] = '\0';
	bad_uri("hf://org/repo", rev);

	bad_uri("s3://bucket/key", NULL);
	bad_uri("https://huggingface.co/org/repo", NULL);
	bad_uri("hf:/org/repo", NULL);
	bad_uri("hf://", NULL);
	bad_uri("hf://@main", NULL);
	bad_uri("hf:///repo", NULL);
	bad_uri("hf://org/", NULL);
	bad_uri("hf://org/repo/", NULL);
	bad_uri("hf://org/repo/file.bin", NULL);
	bad_uri("hf://datasets/org/repo", NULL);
	bad_uri("hf://org//repo", NULL);
	bad_uri("hf://../repo", NULL);
	bad_uri("hf://org/..", NULL);
	bad_uri("hf://org/.repo", NULL);
	bad_uri("hf://org/repo.", NULL);
	bad_uri("hf://org/-repo", NULL);
	bad_uri("hf://org/re..po", NULL);
	bad_uri("hf://org/re--po", NULL);
	bad_uri("hf://or g/repo", NULL);
	bad_uri("hf://org/re%2Fpo", NULL);
	bad_uri("hf://org/re\\po", NULL);
	bad_uri("hf://org/repo\n", NULL);
	bad_uri("hf://org/repo@", NULL);
	bad_uri("hf://org/repo@a b", NULL);
	bad_uri("hf://org/repo@a\tb", NULL);
	bad_uri("hf://org/repo@..", NULL);
	bad_uri("hf://org/repo@.", NULL);
	bad_uri("hf://org/repo", "");
	bad_uri("hf://org/repo", "with space");
	bad_uri("hf://org/repo", "line\nbreak");
	bad_uri(NULL, NULL);
}

static void quote_is(const char *in, bool keep_slash, const char *want)
{
	char *q = mc_hf_quote(in, keep_slash);

	ASSERT_NOT_NULL(q);
	ASSERT_STR_EQ(q, want);
	mc_free(q);
}

static void test_quote(void)
{
	quote_is("main", false, "main");
	quote_is("refs/pr/1", false, "refs%2Fpr%2F1");
	quote_is("v1.0-rc_2~x", false, "v1.0-rc_2~x");
	quote_is("a b+c=d&e?f#g%h", false, "a%20b%2Bc%3Dd%26e%3Ff%23g%25h");
	quote_is("caf\xc3\xa9", false, "caf%C3%A9");
	quote_is("", false, "");
	quote_is("model-00001-of-00002.safetensors", true, "model-00001-of-00002.safetensors");
	quote_is("sub dir/a#b?.json", true, "sub%20dir/a%23b%3F.json");
	quote_is("x/y/z", true, "x/y/z");
}

static void endpoint_is(const char *env, int want_ret, const char *want)
{
	struct mc_err err;
	char *ep = NULL;

	if (env)
		setenv("HF_ENDPOINT", env, 1);
	else
		unsetenv("HF_ENDPOINT");
	mc_err_init(&err);
	ASSERT_EQ(mc_hf_endpoint(&ep, &err), want_ret);
	ASSERT_STR_EQ(ep, want);
	if (want_ret)
		ASSERT_TRUE(strstr(err.msg, "HF_ENDPOINT") != NULL);
	mc_free(ep);
}

static void test_endpoint(void)
{
	endpoint_is(NULL, 0, "https://huggingface.co");
	endpoint_is("", 0, "https://huggingface.co");
	endpoint_is("http://127.0.0.1:8080", 0, "http://127.0.0.1:8080");
	endpoint_is("http://127.0.0.1:8080///", 0, "http://127.0.0.1:8080");
	endpoint_is("https://hub.example/mirror/", 0, "https://hub.example/mirror");
	endpoint_is("ftp://hub.example", MC_E_USAGE, NULL);
	endpoint_is("hub.example", MC_E_USAGE, NULL);
	endpoint_is("https://", MC_E_USAGE, NULL);
	endpoint_is("https:///path", MC_E_USAGE, NULL);
	endpoint_is("https://hub.example/?x=1", MC_E_USAGE, NULL);
	endpoint_is("https://hub example", MC_E_USAGE, NULL);
	endpoint_is("https://hub.example\n", MC_E_USAGE, NULL);
	unsetenv("HF_ENDPOINT");
}

static void clear_token_env(void)
{
	unsetenv("HF_TOKEN");
	unsetenv("HUGGING_FACE_HUB_TOKEN");
	unsetenv("HF_TOKEN_PATH");
	unsetenv("HF_HOME");
	unsetenv("XDG_CACHE_HOME");
	setenv("HOME", tmpdir, 1); /* no ~/.cache/huggingface/token there */
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ASSERT_NOT_NULL(f);
	ASSERT_EQ(fputs(text, f) >= 0, 1);
	ASSERT_EQ(fclose(f), 0);
}

static void token_is(int want_ret, const char *want, const char *want_from)
{
	struct mc_err err;
	const char *from = NULL;
	char *tok = NULL;

	mc_err_init(&err);
	ASSERT_EQ(mc_hf_token(&tok, &from, &err), want_ret);
	ASSERT_STR_EQ(tok, want);
	ASSERT_STR_EQ(from, want_from);
	/* A message never carries the token, whatever went wrong. */
	ASSERT_TRUE(strstr(err.msg, TOKEN) == NULL);
	ASSERT_TRUE(strstr(err.msg, "hf_bad") == NULL);
	ASSERT_TRUE(strchr(err.msg, '\n') == NULL);
	mc_free(tok);
}

static void test_token(void)
{
	char path[600], dir[512];

	clear_token_env();
	token_is(0, NULL, NULL);

	setenv("HF_TOKEN", TOKEN, 1);
	token_is(0, TOKEN, "HF_TOKEN");
	setenv("HF_TOKEN", "  " TOKEN " \r\n", 1);
	token_is(0, TOKEN, "HF_TOKEN");
	setenv("HUGGING_FACE_HUB_TOKEN", "hf_older", 1);
	token_is(0, TOKEN, "HF_TOKEN");
	setenv("HF_TOKEN", "", 1); /* empty: as if unset */
	token_is(0, "hf_older", "HUGGING_FACE_HUB_TOKEN");
	unsetenv("HUGGING_FACE_HUB_TOKEN");
	setenv("HF_TOKEN", "   ", 1);
	token_is(0, NULL, NULL);
	setenv("HF_TOKEN", "hf_bad\x01token", 1);
	token_is(MC_E_USAGE, NULL, NULL);
	setenv("HF_TOKEN", "hf_bad token", 1);
	token_is(MC_E_USAGE, NULL, NULL);
	unsetenv("HF_TOKEN");

	/* HF_TOKEN_PATH: the first non-blank line, trimmed; a missing file is an error. */
	snprintf(path, sizeof(path), "%s/tok", tmpdir);
	write_file(path, "\n  " TOKEN "  \nsecond line\n");
	setenv("HF_TOKEN_PATH", path, 1);
	token_is(0, TOKEN, "HF_TOKEN_PATH");
	write_file(path, TOKEN); /* no newline */
	token_is(0, TOKEN, "HF_TOKEN_PATH");
	write_file(path, "\n\n");
	token_is(0, NULL, NULL);
	write_file(path, "hf_bad\x7ftoken\n");
	token_is(MC_E_USAGE, NULL, NULL);
	setenv("HF_TOKEN", "hf_env", 1); /* the environment wins over any file */
	token_is(0, "hf_env", "HF_TOKEN");
	unsetenv("HF_TOKEN");
	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	setenv("HF_TOKEN_PATH", path, 1);
	token_is(MC_E_USAGE, NULL, NULL);
	unsetenv("HF_TOKEN_PATH");

	/* $HF_HOME/token; a missing default file is no token. */
	snprintf(dir, sizeof(dir), "%s/hfhome", tmpdir);
	ASSERT_EQ(mkdir(dir, 0700), 0);
	setenv("HF_HOME", dir, 1);
	token_is(0, NULL, NULL);
	snprintf(path, sizeof(path), "%s/token", dir);
	write_file(path, TOKEN "\n");
	token_is(0, TOKEN, "$HF_HOME/token");
	unsetenv("HF_HOME");

	/* $XDG_CACHE_HOME/huggingface/token, then ~/.cache/huggingface/token. */
	setenv("XDG_CACHE_HOME", tmpdir, 1);
	snprintf(dir, sizeof(dir), "%s/huggingface", tmpdir);
	ASSERT_EQ(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/huggingface/token", tmpdir);
	write_file(path, "hf_xdg\n");
	token_is(0, "hf_xdg", "$XDG_CACHE_HOME/huggingface/token");
	unsetenv("XDG_CACHE_HOME");
	snprintf(dir, sizeof(dir), "%s/.cache", tmpdir);
	ASSERT_EQ(mkdir(dir, 0700), 0);
	snprintf(dir, sizeof(dir), "%s/.cache/huggingface", tmpdir);
	ASSERT_EQ(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/.cache/huggingface/token", tmpdir);
	write_file(path, "hf_home\n");
	token_is(0, "hf_home", "~/.cache/huggingface/token");
	clear_token_env();
}

/* An answer shaped like the Hub's, with three files: one in LFS, one not, one nested. */
static const char answer[] =
    "{\"_id\":\"x\",\"id\":\"org/repo\",\"private\":false,\"sha\":\"" SHA_A "\","
    "\"lastModified\":\"2024-01-01T00:00:00.000Z\",\"tags\":[],\"siblings\":["
    "{\"rfilename\":\".gitattributes\",\"size\":1519,"
    "\"blobId\":\"a6344aac8c09253b3b630fb776ae94478aa0275b\"},"
    "{\"rfilename\":\"config.json\",\"size\":665,"
    "\"blobId\":\"b0b3a8a1a2b3c4d5e6f708192a3b4c5d6e7f8091\"},"
    "{\"rfilename\":\"model.safetensors\",\"size\":548105171,"
    "\"blobId\":\"c1c2c3c4c5c6c7c8c9c0c1c2c3c4c5c6c7c8c9c0\","
    "\"lfs\":{\"sha256\":\"" SHA_B "\",\"size\":548105171,\"pointerSize\":135}},"
    "{\"rfilename\":\"sub dir/tokenizer #1.json\",\"size\":12}"
    "],\"spaces\":[],\"createdAt\":\"2022-03-02T23:29:04.000Z\",\"usedStorage\":548107367}";

static int parse(const char *json, const struct mc_source_opts *o, struct mc_object_list *list,
		 struct mc_err *err)
{
	static const char *const headers[] = {"Authorization: Bearer " TOKEN, NULL};
	struct mc_hf_ref ref;

	ASSERT_EQ(mc_hf_parse_uri("hf://org/repo@main", NULL, &ref, err), 0);
	mc_err_init(err);
	return mc_hf_parse_listing(json, strlen(json), "http://hub.test:8080", &ref, headers, o,
				   list, err);
}

static void test_listing(void)
{
	struct mc_object_list list = {0};
	struct mc_source_opts o = {0};
	const char *inc[] = {"*.safetensors", "sub dir/*"};
	struct mc_err err;
	const struct mc_object *ob;

	ASSERT_EQ(parse(answer, &o, &list, &err), 0);
	ASSERT_UINT_EQ(list.n, 4);
	ASSERT_STR_EQ(list.revision, SHA_A);

	ob = &list.obj[0];
	ASSERT_STR_EQ(ob->path, ".gitattributes");
	ASSERT_STR_EQ(ob->url, "http://hub.test:8080/org/repo/resolve/" SHA_A "/.gitattributes");
	ASSERT_STR_EQ(ob->source, "hf://org/repo@" SHA_A "/.gitattributes");
	ASSERT_TRUE(ob->size_known);
	ASSERT_UINT_EQ(ob->size, 1519);
	ASSERT_STR_EQ(ob->sha256, "");
	ASSERT_STR_EQ(ob->etag, "");
	ASSERT_NOT_NULL(ob->headers);
	ASSERT_STR_EQ(ob->headers[0], "Authorization: Bearer " TOKEN);
	ASSERT_NULL(ob->headers[1]);

	ob = &list.obj[2];
	ASSERT_STR_EQ(ob->path, "model.safetensors");
	ASSERT_STR_EQ(ob->url, "http://hub.test:8080/org/repo/resolve/" SHA_A "/model.safetensors");
	ASSERT_TRUE(ob->size_known);
	ASSERT_UINT_EQ(ob->size, 548105171);
	ASSERT_STR_EQ(ob->sha256, SHA_B);

	ob = &list.obj[3];
	ASSERT_STR_EQ(ob->path, "sub dir/tokenizer #1.json");
	ASSERT_STR_EQ(ob->url, "http://hub.test:8080/org/repo/resolve/" SHA_A
			       "/sub%20dir/tokenizer%20%231.json");
	ASSERT_STR_EQ(ob->source, "hf://org/repo@" SHA_A "/sub dir/tokenizer #1.json");
	for (size_t i = 0; i < list.n; i++)
		ASSERT_TRUE(strstr(list.obj[i].source, TOKEN) == NULL);
	mc_object_list_release(&list);

	/* Include patterns; the list may already hold objects of another URI. */
	ASSERT_NOT_NULL(mc_object_list_add(&list, "http://x/y", "http://x/y", "y", NULL));
	o.include = inc;
	o.ninclude = 2;
	ASSERT_EQ(parse(answer, &o, &list, &err), 0);
	ASSERT_UINT_EQ(list.n, 3);
	ASSERT_STR_EQ(list.obj[0].path, "y");
	ASSERT_STR_EQ(list.obj[1].path, "model.safetensors");
	ASSERT_STR_EQ(list.obj[2].path, "sub dir/tokenizer #1.json");
	mc_object_list_release(&list);

	inc[0] = "*.gguf";
	o.ninclude = 1;
	ASSERT_EQ(parse(answer, &o, &list, &err), MC_E_NOTFOUND);
	ASSERT_TRUE(strstr(err.msg, "include") != NULL);
	ASSERT_UINT_EQ(list.n, 0);
	ASSERT_STR_EQ(list.revision, "");
}

/* A listing the parser must refuse with @code, and a word its message must hold. */
static void refused(const char *json, int code, const char *word)
{
	struct mc_object_list list = {0};
	struct mc_err err;
	int ret = parse(json, NULL, &list, &err);

	if (ret != code || !strstr(err.msg, word)) {
		fprintf(stderr, "answer %.200s\n  gave %d '%s', want %d '...%s...'\n", json, ret,
			err.msg, code, word);
		ASSERT_TRUE(false);
	}
	ASSERT_UINT_EQ(list.n, 0); /* nothing appended from a refused answer */
	ASSERT_STR_EQ(list.revision, "");
	ASSERT_TRUE(strchr(err.msg, '\n') == NULL);
	mc_object_list_release(&list);
}

#define SIB(x) "{\"sha\":\"" SHA_A "\",\"siblings\":[" x "]}"

static void test_listing_refused(void)
{
	struct mc_object_list list = {0};
	struct mc_err err;
	char *big;
	size_t cap, n, i;

	refused("", MC_E_ORIGIN, "bad Hub API answer");
	refused("<html>gateway</html>", MC_E_ORIGIN, "not JSON");
	refused("{\"sha\":\"" SHA_A "\",\"siblings\":[", MC_E_ORIGIN, "not JSON");
	refused("[]", MC_E_ORIGIN, "not a JSON object");
	refused("{\"siblings\":[]}", MC_E_ORIGIN, "'sha'");
	refused("{\"sha\":\"0123abc\",\"siblings\":[]}", MC_E_ORIGIN, "'sha'");
	refused("{\"sha\":\"" SHA_A "0\",\"siblings\":[]}", MC_E_ORIGIN, "'sha'");
	refused("{\"sha\":\"g123456789abcdef0123456789abcdef01234567\",\"siblings\":[]}",
		MC_E_ORIGIN, "'sha'");
	refused("{\"sha\":42,\"siblings\":[]}", MC_E_ORIGIN, "'sha'");
	refused("{\"sha\":\"" SHA_A "\",\"sha\":\"" SHA_A "\",\"siblings\":[]}", MC_E_ORIGIN,
		"not JSON");
	refused("{\"sha\":\"" SHA_A "\"}", MC_E_ORIGIN, "'siblings'");
	refused("{\"sha\":\"" SHA_A "\",\"siblings\":{}}", MC_E_ORIGIN, "'siblings'");
	refused(SIB(""), MC_E_NOTFOUND, "has no files");
	refused(SIB("\"a.bin\""), MC_E_ORIGIN, "not an object");
	refused(SIB("{\"size\":1}"), MC_E_ORIGIN, "'rfilename'");
	refused(SIB("{\"rfilename\":7}"), MC_E_ORIGIN, "'rfilename'");
	refused(SIB("{\"rfilename\":\"../evil\"}"), MC_E_ORIGIN, "unsafe file name in listing");
	refused(SIB("{\"rfilename\":\"a/../../evil\"}"), MC_E_ORIGIN, "unsafe file name");
	refused(SIB("{\"rfilename\":\"/etc/passwd\"}"), MC_E_ORIGIN, "unsafe file name");
	refused(SIB("{\"rfilename\":\"\"}"), MC_E_ORIGIN, "unsafe file name");
	refused(SIB("{\"rfilename\":\"dir/\"}"), MC_E_ORIGIN, "unsafe file name");
	refused(SIB("{\"rfilename\":\"a\\\\b\"}"), MC_E_ORIGIN, "unsafe file name");
	refused(SIB("{\"rfilename\":\"a\\nb\"}"), MC_E_ORIGIN, "unsafe file name");
	/* jansson refuses "\u0000" in strings, so a name cannot hide a NUL. */
	refused(SIB("{\"rfilename\":\"ok\\u0000/../x\"}"), MC_E_ORIGIN, "not JSON");
	refused(SIB("{\"rfilename\":\"a\"},{\"rfilename\":\"b\"},{\"rfilename\":\"a\"}"),
		MC_E_ORIGIN, "listed twice");
	refused(SIB("{\"rfilename\":\"a\",\"size\":-1}"), MC_E_ORIGIN, "'size'");
	refused(SIB("{\"rfilename\":\"a\",\"size\":1.5}"), MC_E_ORIGIN, "'size'");
	refused(SIB("{\"rfilename\":\"a\",\"size\":\"12\"}"), MC_E_ORIGIN, "'size'");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":[]}"), MC_E_ORIGIN, "'lfs'");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":{\"size\":3}}"), MC_E_ORIGIN, "lfs.sha256");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":{\"sha256\":\"abc\",\"size\":3}}"), MC_E_ORIGIN,
		"lfs.sha256");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":{\"sha256\":\"" SHA_B "0\",\"size\":3}}"),
		MC_E_ORIGIN, "lfs.sha256");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":{\"sha256\":"
		    "\"z123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
		    "\"size\":3}}"),
		MC_E_ORIGIN, "lfs.sha256");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":{\"sha256\":\"" SHA_B "\"}}"), MC_E_ORIGIN,
		"lfs.size");
	refused(SIB("{\"rfilename\":\"a\",\"lfs\":{\"sha256\":\"" SHA_B "\",\"size\":-3}}"),
		MC_E_ORIGIN, "lfs.size");
	/* A bad entry anywhere refuses the whole answer, also after good ones. */
	refused(SIB("{\"rfilename\":\"good\"},{\"rfilename\":\"../bad\"}"), MC_E_ORIGIN,
		"unsafe file name");

	/* Optional fields: no size (no blobs=true), null lfs, uppercase hex normalised. */
	ASSERT_EQ(
	    parse(SIB("{\"rfilename\":\"a\"},{\"rfilename\":\"b\",\"size\":null,\"lfs\":null},"
		      "{\"rfilename\":\"c\",\"size\":135,\"lfs\":{\"sha256\":"
		      "\"89ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF01234567\","
		      "\"size\":0,\"pointerSize\":135}}"),
		  NULL, &list, &err),
	    0);
	ASSERT_UINT_EQ(list.n, 3);
	ASSERT_FALSE(list.obj[0].size_known);
	ASSERT_FALSE(list.obj[1].size_known);
	ASSERT_TRUE(list.obj[2].size_known);
	ASSERT_UINT_EQ(list.obj[2].size, 0); /* lfs.size, not the pointer's size */
	ASSERT_STR_EQ(list.obj[2].sha256, SHA_B);
	mc_object_list_release(&list);

	/* Uppercase commit ids are normalised too. */
	ASSERT_EQ(parse("{\"sha\":\"0123456789ABCDEF0123456789ABCDEF01234567\",\"siblings\":["
			"{\"rfilename\":\"a\"}]}",
			NULL, &list, &err),
		  0);
	ASSERT_STR_EQ(list.revision, SHA_A);
	ASSERT_STR_EQ(list.obj[0].url, "http://hub.test:8080/org/repo/resolve/" SHA_A "/a");
	mc_object_list_release(&list);

	/* The file count is bounded. */
	cap = 64 + (size_t)(MC_HF_MAX_FILES + 1) * 24;
	big = mc_malloc(cap);
	ASSERT_NOT_NULL(big);
	n = (size_t)snprintf(big, cap, "{\"sha\":\"%s\",\"siblings\":[", SHA_A);
	for (i = 0; i <= MC_HF_MAX_FILES; i++)
		n += (size_t)snprintf(big + n, cap - n, "%s{\"rfilename\":\"f%zu\"}", i ? "," : "",
				      i);
	n += (size_t)snprintf(big + n, cap - n, "]}");
	ASSERT_LT(n, cap);
	refused(big, MC_E_ORIGIN, "more than");
	mc_free(big);
}

/* Allocation failures while listing: -ENOMEM and a list the caller can still release. */
static void test_listing_nomem(void)
{
	struct mc_object_list list = {0};
	struct mc_err err;
	unsigned long nth;
	int ret;

	for (nth = 1; nth < 10000; nth++) {
		mc_alloc_fail_at(nth);
		ret = parse(answer, NULL, &list, &err);
		mc_alloc_fail_at(0);
		mc_object_list_release(&list);
		if (ret == 0)
			break;
		if (ret != -ENOMEM) {
			fprintf(stderr, "allocation %lu failing gave %d '%s'\n", nth, ret, err.msg);
			ASSERT_TRUE(false);
		}
	}
	ASSERT_LT(nth, 10000);
	printf("   %lu allocation points\n", nth - 1);
}

/* Removes the temp dir at exit, also when an assertion fails (exit 1). */
static void remove_tmpdir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove '%s'\n", tmpdir);
}

int main(void)
{
	json_set_alloc_funcs(mc_malloc, mc_free); /* as cmd/main.c does */
	if (!mkdtemp(tmpdir))
		MC_SKIP("cannot make a temp dir");
	atexit(remove_tmpdir);
	MC_RUN(test_parse_uri);
	MC_RUN(test_quote);
	MC_RUN(test_endpoint);
	MC_RUN(test_token);
	MC_RUN(test_listing);
	MC_RUN(test_listing_refused);
	MC_RUN(test_listing_nomem);
	printf("%lu checks\n", mc_test_checks);
	return 0;
}
