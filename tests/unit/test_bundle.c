/*
 * Unit tests of cache/bundle.c: tar bundles built here with libarchive's writer, pulled through
 * cache/pull.c's callbacks as the engine would, then unpacked when the pull publishes.
 *
 * Good bundles (gzip, zstd, plain): every file byte-identical and read-only, setuid bits and
 * owners dropped, a hard link to an earlier file shares its blob, "./" prefixes stripped, the
 * archive kept as a blob that gc keeps while its version lives; a re-pull neither downloads nor
 * unpacks; include patterns select entries. Hostile bundles, each refused as a whole (exit 3
 * class, MC_E_ORIGIN) with nothing under models/ or trees/, nothing in tmp/, nothing written
 * outside the cache, and nothing left after gc: "../", absolute, "a/../../b", symbolic links
 * (also one written through), hard links outside or to a later entry, devices and FIFOs, a
 * path deeper than the limit, too many entries, too many bytes, a decompression bomb, a path
 * twice, a file that is also a directory, garbage and a truncated archive. A hostile re-pull
 * leaves the previous version current.
 */
#include "test_cache.h"

#include <archive.h>
#include <archive_entry.h>
#include <sys/sysmacros.h>

#include "mc_banned.h"

#define MIB (1024u * 1024u)

enum tb_filter { TB_GZIP, TB_ZSTD, TB_NONE };

/* One entry of a test archive. */
struct tb_entry {
	const char *path;
	mode_t type;	     /* AE_IFREG (0 means that too), AE_IFDIR, AE_IFLNK, ... */
	const uint8_t *data; /* NULL: @size zero bytes */
	uint64_t size;
	const char *link; /* symlink target, or hard link target when @hard */
	bool hard;
	mode_t perm; /* 0: 0644 */
};

/* A growing buffer for libarchive's writer. */
struct tb_buf {
	uint8_t *p;
	size_t n, cap;
};

static la_ssize_t tb_write(struct archive *a, void *ctx, const void *buf, size_t len)
{
	struct tb_buf *b = ctx;

	(void)a;
	if (b->n + len > b->cap) {
		b->cap = (b->n + len) * 2;
		b->p = realloc(b->p, b->cap);
		ASSERT_NOT_NULL(b->p);
	}
	memcpy(b->p + b->n, buf, len);
	b->n += len;
	return (la_ssize_t)len;
}

/* Builds a pax tar of @e[0..n) through @filter; the caller frees b->p. */
static void tb_build(struct tb_buf *b, enum tb_filter filter, const struct tb_entry *e, size_t n)
{
	struct archive *a = archive_write_new();
	static const uint8_t zero[64 * 1024];

	memset(b, 0, sizeof(*b));
	ASSERT_NOT_NULL(a);
	ASSERT_EQ(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	if (filter == TB_GZIP)
		ASSERT_EQ(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	else if (filter == TB_ZSTD)
		ASSERT_EQ(archive_write_add_filter_zstd(a), ARCHIVE_OK);
	/* No zero padding after the compressed stream (what bsdtar does): zstd rejects it. */
	ASSERT_EQ(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
	ASSERT_EQ(archive_write_open(a, b, NULL, tb_write, NULL), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		mode_t type = e[i].type ? e[i].type : AE_IFREG;
		uint64_t size = type == AE_IFREG && !e[i].hard ? e[i].size : 0;

		archive_entry_set_pathname(ae, e[i].path);
		archive_entry_set_filetype(ae, type);
		archive_entry_set_perm(ae, e[i].perm ? e[i].perm : 0644);
		archive_entry_set_uid(ae, 0);
		archive_entry_set_uname(ae, "root");
		archive_entry_set_size(ae, (la_int64_t)size);
		if (type == AE_IFLNK)
			archive_entry_set_symlink(ae, e[i].link);
		if (e[i].hard)
			archive_entry_set_hardlink(ae, e[i].link);
		if (type == AE_IFCHR || type == AE_IFBLK)
			archive_entry_set_rdev(ae, makedev(1, 3));
		ASSERT_EQ(archive_write_header(a, ae), ARCHIVE_OK);
		for (uint64_t off = 0; off < size;) {
			size_t len =
			    size - off < sizeof(zero) ? (size_t)(size - off) : sizeof(zero);
			const void *src = e[i].data ? (const void *)(e[i].data + off) : zero;

			ASSERT_EQ(archive_write_data(a, src, len), (la_ssize_t)len);
			off += len;
		}
		archive_entry_free(ae);
	}
	ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

struct fixture {
	char *root; /* the test's directory: cache/ and outside/ beneath it */
	char dir[1024];
	char outside[1024];
	struct mc_cache *c;
};

static void setup(struct fixture *fx)
{
	struct mc_err err;

	mc_err_init(&err);
	fx->root = tc_mkdtemp();
	snprintf(fx->dir, sizeof(fx->dir), "%s/cache", fx->root);
	snprintf(fx->outside, sizeof(fx->outside), "%s/outside", fx->root);
	ASSERT_EQ(mkdir(fx->outside, 0755), 0);
	fx->c = NULL;
	ASSERT_EQ(mc_cache_open(&fx->c, fx->dir, &err), 0);
}

static void teardown(struct fixture *fx)
{
	mc_cache_close(fx->c);
	tc_rm_rf(fx->root);
	free(fx->root);
}

/* One object of a pull: a bundle (@bundle) or a plain file. */
struct tb_obj {
	struct tc_obj o;
	bool bundle;
};

struct tb_opts {
	struct mc_bundle_limits lim;
	const char *const *include;
	size_t ninclude;
};

/* What a pull did. */
struct tb_result {
	int ret;
	char msg[MC_ERR_MAX];
	int64_t version;
	bool unpacked;
	bool downloaded; /* the bundle's bytes were fetched (not reused) */
	uint64_t entries;
};

/* A whole pull of @ob[0..n) into @name, through the callbacks, failing the version on error. */
static struct tb_result tb_pull(struct fixture *fx, const char *name, const struct tb_obj *ob,
				size_t n, const struct tb_opts *opts)
{
	struct tb_result r = {0};
	struct mc_pull p;
	struct mc_err err;

	mc_err_init(&err);
	if (mc_pull_begin(&p, fx->c, name, ob[0].o.url, n, &err))
		MC_TEST_FAILED_("begin: %s", err.msg);
	if (opts) {
		p.limits = opts->lim;
		p.include = opts->include;
		p.ninclude = opts->ninclude;
	}
	for (size_t i = 0; i < n; i++) {
		struct mc_fetch_file *f = &p.file[i].f;

		p.file[i].bundle = ob[i].bundle;
		tc_file_set(&p, i, &ob[i].o);
		tc_probe(f, &ob[i].o);
		tc_open(&p, f);
		if (!f->skip) {
			tc_finish(&p, f, &ob[i].o);
			r.downloaded |= ob[i].bundle;
		}
		tc_unprobe(f);
	}
	r.ret = mc_pull_publish(&p, &err);
	if (r.ret)
		mc_pull_fail(&p);
	snprintf(r.msg, sizeof(r.msg), "%s", err.msg);
	r.version = p.version;
	for (size_t i = 0; i < n; i++) {
		r.unpacked |= p.file[i].unpacked;
		r.entries += p.file[i].entries;
	}
	mc_pull_release(&p);
	return r;
}

/* A pull of one bundle archive @b. */
static struct tb_result tb_pull_bundle(struct fixture *fx, const char *name, const struct tb_buf *b,
				       const char *etag, const struct tb_opts *opts)
{
	struct tb_obj ob = {
	    {"http://origin/b/model.tar.gz?sig=secret", "model.tar.gz", b->p, b->n, etag}, true};

	return tb_pull(fx, name, &ob, 1, opts);
}

/* The number of regular files beneath @dir (recursively, not following links). */
static int count_files(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[2048];
	struct stat st;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		ASSERT_EQ(lstat(path, &st), 0);
		n += S_ISDIR(st.st_mode) ? count_files(path) : 1;
	}
	closedir(d);
	return n;
}

/* Asserts that a refused pull of @name left nothing a consumer or anyone outside could see. */
static void expect_nothing(struct fixture *fx, const char *name)
{
	char path[1200];
	struct stat st;

	snprintf(path, sizeof(path), "%s/models/%s", fx->dir, name);
	ASSERT_EQ(lstat(path, &st), -1);
	snprintf(path, sizeof(path), "%s/trees/%s", fx->dir, name);
	ASSERT_EQ(count_files(path), 0);
	snprintf(path, sizeof(path), "%s/tmp", fx->dir);
	ASSERT_EQ(tc_count_entries(path), 0);
	ASSERT_EQ(tc_count_entries(fx->outside), 0);
	ASSERT_EQ(lstat("/tmp/mc-test-bundle-escape", &st), -1);
}

/* gc with no budget: afterwards no blob, row or tree of the refused pulls may remain. */
static void expect_collected(struct fixture *fx)
{
	struct mc_gc_opts o = {0};
	struct mc_gc_result r;
	struct mc_err err;
	char path[1200];

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_gc(fx->c, &o, &r, &err), 0);
	snprintf(path, sizeof(path), "%s/blobs", fx->dir);
	ASSERT_EQ(count_files(path), 0);
	snprintf(path, sizeof(path), "%s/trees", fx->dir);
	ASSERT_EQ(count_files(path), 0);
	ASSERT_EQ(tc_query(fx->c, "SELECT count(*) FROM blobs"), 0);
	ASSERT_EQ(tc_query(fx->c, "SELECT count(*) FROM files"), 0);
	ASSERT_EQ(tc_query(fx->c, "SELECT count(*) FROM bundles"), 0);
	ASSERT_EQ(tc_query(fx->c, "SELECT count(*) FROM models"), 0);
}

/* Asserts models/@name/@path holds @size bytes of @data (NULL: zeros), read-only. */
static void expect_file(struct fixture *fx, const char *name, const char *path, const uint8_t *data,
			uint64_t size, struct stat *out)
{
	char full[1200];
	uint8_t *got;
	size_t len;

	snprintf(full, sizeof(full), "%s/models/%s/%s", fx->dir, name, path);
	got = tc_read_file(full, &len);
	ASSERT_UINT_EQ(len, size);
	if (data) {
		ASSERT_MEM_EQ(got, data, len);
	} else {
		for (size_t i = 0; i < len; i++)
			ASSERT_EQ(got[i], 0);
	}
	free(got);
	ASSERT_EQ(stat(full, out), 0);
	ASSERT_EQ(out->st_mode & 07777, 0444);
}

static void test_names(void)
{
	struct mc_bundle_limits in = {0}, out;
	struct mc_err err;

	ASSERT_TRUE(mc_bundle_uri_is_bundle("https://h/m/model.tar.gz"));
	ASSERT_TRUE(mc_bundle_uri_is_bundle("https://h/model.tar.zst?X-Amz-Signature=a.b"));
	ASSERT_TRUE(mc_bundle_uri_is_bundle("https://h/model.tgz#frag"));
	ASSERT_TRUE(mc_bundle_uri_is_bundle("s3://bucket/key.tar"));
	ASSERT_FALSE(mc_bundle_uri_is_bundle("https://h/model.gz"));
	ASSERT_FALSE(mc_bundle_uri_is_bundle("https://h/model.safetensors?x=.tar"));
	ASSERT_FALSE(mc_bundle_uri_is_bundle("s3://bucket/prefix/"));
	ASSERT_EQ(mc_bundle_ext_len("a.tar.gz"), 7);
	ASSERT_EQ(mc_bundle_ext_len("a.tgz"), 4);
	ASSERT_EQ(mc_bundle_ext_len("a.tar.zst"), 8);
	ASSERT_EQ(mc_bundle_ext_len("a.zst"), 0);

	/* Fields over variables over defaults; a bad variable is a usage error. */
	unsetenv("MCACHE_BUNDLE_MAX_ENTRIES");
	unsetenv("MCACHE_BUNDLE_MAX_BYTES");
	unsetenv("MCACHE_BUNDLE_MAX_RATIO");
	unsetenv("MCACHE_BUNDLE_MAX_DEPTH");
	mc_err_init(&err);
	ASSERT_EQ(mc_bundle_limits_resolve(&in, &out, &err), 0);
	ASSERT_UINT_EQ(out.max_entries, 100000);
	ASSERT_UINT_EQ(out.max_bytes, 4ull << 40);
	ASSERT_UINT_EQ(out.max_ratio, 100);
	ASSERT_UINT_EQ(out.ratio_slack, 1u << 30);
	ASSERT_UINT_EQ(out.max_depth, 32);
	setenv("MCACHE_BUNDLE_MAX_ENTRIES", "7", 1);
	setenv("MCACHE_BUNDLE_MAX_BYTES", "2G", 1);
	ASSERT_EQ(mc_bundle_limits_resolve(&in, &out, &err), 0);
	ASSERT_UINT_EQ(out.max_entries, 7);
	ASSERT_UINT_EQ(out.max_bytes, 2ull << 30);
	in.max_entries = 9;
	ASSERT_EQ(mc_bundle_limits_resolve(&in, &out, &err), 0);
	ASSERT_UINT_EQ(out.max_entries, 9);
	setenv("MCACHE_BUNDLE_MAX_DEPTH", "0", 1);
	ASSERT_EQ(mc_bundle_limits_resolve(&in, &out, &err), MC_E_USAGE);
	ASSERT_TRUE(strstr(err.msg, "MCACHE_BUNDLE_MAX_DEPTH") != NULL);
	mc_err_init(&err);
	setenv("MCACHE_BUNDLE_MAX_DEPTH", "deep", 1);
	ASSERT_EQ(mc_bundle_limits_resolve(&in, &out, &err), MC_E_USAGE);
	unsetenv("MCACHE_BUNDLE_MAX_ENTRIES");
	unsetenv("MCACHE_BUNDLE_MAX_BYTES");
	unsetenv("MCACHE_BUNDLE_MAX_DEPTH");
}

/* Unpacks a model bundle through @filter and checks every file, then a re-pull and gc. */
static void check_good(enum tb_filter filter)
{
	struct fixture fx;
	uint8_t *w = tc_bytes(3 * MIB + 123, 7), *cfg = tc_bytes(300, 8);
	const struct tb_entry e[] = {
	    {"./", AE_IFDIR, NULL, 0, NULL, false, 0755},
	    {"./m/", AE_IFDIR, NULL, 0, NULL, false, 0755},
	    {"./m/config.json", 0, cfg, 300, NULL, false, 0},
	    {"./m/weights.bin", 0, w, 3 * MIB + 123, NULL, false, 0},
	    {"./m/empty", 0, NULL, 0, NULL, false, 0},
	    {"./m/alias.bin", 0, NULL, 0, "./m/weights.bin", true, 0},
	    {"bin/tool", 0, cfg, 100, NULL, false, 04755},
	    {"zeros/z.bin", 0, NULL, 2 * MIB, NULL, false, 0},
	};
	char hex[MC_DIGEST_HEX], blob[1200], sql[256];
	struct stat st, st2, bst;
	struct tb_buf b;
	struct tb_result r, r2;

	setup(&fx);
	tb_build(&b, filter, e, sizeof(e) / sizeof(e[0]));
	r = tb_pull_bundle(&fx, "m", &b, "\"b1\"", NULL);
	if (r.ret)
		MC_TEST_FAILED_("pull: %s", r.msg);
	ASSERT_TRUE(r.unpacked);
	ASSERT_UINT_EQ(r.entries, 6);
	expect_file(&fx, "m", "m/config.json", cfg, 300, &st);
	expect_file(&fx, "m", "m/weights.bin", w, 3 * MIB + 123, &st);
	expect_file(&fx, "m", "m/alias.bin", w, 3 * MIB + 123, &st2);
	ASSERT_UINT_EQ(st.st_ino, st2.st_ino); /* the hard link is the same blob */
	expect_file(&fx, "m", "m/empty", NULL, 0, &st);
	expect_file(&fx, "m", "bin/tool", cfg, 100, &st); /* 0444: no setuid, no owner kept */
	expect_file(&fx, "m", "zeros/z.bin", NULL, 2 * MIB, &st);
	tc_digest_hex(w, 3 * MIB + 123, hex);
	snprintf(blob, sizeof(blob), "%s/blobs/%.2s/%s", fx.dir, hex, hex);
	ASSERT_EQ(stat(blob, &bst), 0);
	ASSERT_UINT_EQ(bst.st_ino, st2.st_ino);
	/* The archive itself is a blob too, referenced by `bundles`, not a file of the model. */
	tc_digest_hex(b.p, b.n, hex);
	snprintf(blob, sizeof(blob), "%s/blobs/%.2s/%s", fx.dir, hex, hex);
	ASSERT_EQ(stat(blob, &bst), 0);
	ASSERT_UINT_EQ(bst.st_size, b.n);
	snprintf(sql, sizeof(sql), "SELECT entries FROM bundles WHERE digest = '%s'", hex);
	ASSERT_EQ(tc_query(fx.c, sql), 6);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE source ="
				 " 'http://origin/b/model.tar.gz#' || path"),
		  6);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE source LIKE '%secret%'"), 0);
	snprintf(blob, sizeof(blob), "%s/tmp", fx.dir);
	ASSERT_EQ(tc_count_entries(blob), 0);

	/* Re-pull, same ETag: no download, no unpack, the same version stays. */
	r2 = tb_pull_bundle(&fx, "m", &b, "\"b1\"", NULL);
	if (r2.ret)
		MC_TEST_FAILED_("re-pull: %s", r2.msg);
	ASSERT_FALSE(r2.downloaded);
	ASSERT_FALSE(r2.unpacked);
	ASSERT_EQ(r2.version, r.version);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM versions"), 1);

	/* A new ETag for the same bytes: downloaded again, but the earlier unpack is copied. */
	r2 = tb_pull_bundle(&fx, "m", &b, "\"b2\"", NULL);
	if (r2.ret)
		MC_TEST_FAILED_("re-pull with a new ETag: %s", r2.msg);
	ASSERT_TRUE(r2.downloaded);
	ASSERT_FALSE(r2.unpacked);
	ASSERT_EQ(r2.version, r.version);

	/* gc keeps the archive while its version lives; rm then gc takes everything. */
	{
		struct mc_gc_opts o = {0};
		struct mc_gc_result gr;
		struct mc_err err;

		mc_err_init(&err);
		ASSERT_EQ(mc_cache_gc(fx.c, &o, &gr, &err), 0);
		snprintf(blob, sizeof(blob), "%s/blobs/%.2s/%s", fx.dir, hex, hex);
		ASSERT_EQ(stat(blob, &bst), 0);
		ASSERT_EQ(mc_cache_rm(fx.c, "m", &gr, &err), 0);
		ASSERT_EQ(mc_cache_gc(fx.c, &o, &gr, &err), 0);
		ASSERT_EQ(stat(blob, &bst), -1);
		ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM blobs"), 0);
	}
	free(b.p);
	free(w);
	free(cfg);
	teardown(&fx);
}

static void test_gzip(void)
{
	check_good(TB_GZIP);
}

static void test_zstd(void)
{
	check_good(TB_ZSTD);
}

static void test_plain_tar(void)
{
	check_good(TB_NONE);
}

/* A hostile archive: @e[0..n) with limits @lim (NULL: defaults), refused with @code. */
struct hostile {
	const char *what;
	struct tb_entry e[6];
	size_t n;
	struct mc_bundle_limits lim;
	int code;
	const char *says; /* a word the message must hold */
};

static void test_hostile(void)
{
	static uint8_t small[64 * 1024];
	/* The "outside" path is filled in at run time: entries point at the real directory. */
	static char outside_abs[1100], outside_file[1200];
	const struct hostile cases[] = {
	    {"dot-dot", {{"../escape", 0, small, 10}}, 1, {0}, MC_E_ORIGIN, "safe relative"},
	    {"dot-dot deep",
	     {{"../../../../../../../../tmp/mc-test-bundle-escape", 0, small, 10}},
	     1,
	     {0},
	     MC_E_ORIGIN,
	     "safe relative"},
	    {"absolute",
	     {{"/tmp/mc-test-bundle-escape", 0, small, 10}},
	     1,
	     {0},
	     MC_E_ORIGIN,
	     "safe relative"},
	    {"absolute outside", {{outside_file, 0, small, 10}}, 1, {0}, MC_E_ORIGIN, "safe"},
	    {"a/../../b", {{"a/../../b", 0, small, 10}}, 1, {0}, MC_E_ORIGIN, "safe relative"},
	    {"a/./b", {{"a/./b", 0, small, 10}}, 1, {0}, MC_E_ORIGIN, "safe relative"},
	    {"a//b", {{"a//b", 0, small, 10}}, 1, {0}, MC_E_ORIGIN, "safe relative"},
	    {"backslash", {{"a\\..\\b", 0, small, 10}}, 1, {0}, MC_E_ORIGIN, "safe relative"},
	    {"symlink",
	     {{"link", AE_IFLNK, NULL, 0, "/etc/passwd"}},
	     1,
	     {0},
	     MC_E_ORIGIN,
	     "symbolic link"},
	    {"symlink then write through",
	     {{"link", AE_IFLNK, NULL, 0, outside_abs}, {"link/evil", 0, small, 10}},
	     2,
	     {0},
	     MC_E_ORIGIN,
	     "symbolic link"},
	    {"symlink to a sibling",
	     {{"a", 0, small, 10}, {"b", AE_IFLNK, NULL, 0, "a"}},
	     2,
	     {0},
	     MC_E_ORIGIN,
	     "symbolic link"},
	    {"hard link outside",
	     {{"h", 0, NULL, 0, "../outside/f", true}},
	     1,
	     {0},
	     MC_E_ORIGIN,
	     "outside the bundle"},
	    {"hard link absolute",
	     {{"h", 0, NULL, 0, "/etc/passwd", true}},
	     1,
	     {0},
	     MC_E_ORIGIN,
	     "outside the bundle"},
	    {"hard link to a later entry",
	     {{"h", 0, NULL, 0, "later", true}, {"later", 0, small, 10}},
	     2,
	     {0},
	     MC_E_ORIGIN,
	     "not an earlier file"},
	    {"hard link then write through",
	     {{"a", 0, small, 10}, {"d", 0, NULL, 0, "a", true}, {"d/evil", 0, small, 10}},
	     3,
	     {0},
	     MC_E_ORIGIN,
	     "which is a file"},
	    {"character device", {{"dev", AE_IFCHR}}, 1, {0}, MC_E_ORIGIN, "device"},
	    {"block device", {{"blk", AE_IFBLK}}, 1, {0}, MC_E_ORIGIN, "device"},
	    {"fifo", {{"fifo", AE_IFIFO}}, 1, {0}, MC_E_ORIGIN, "FIFO"},
	    {"depth",
	     {{"a/b/c", 0, small, 10}},
	     1,
	     {.max_depth = 2},
	     MC_E_ORIGIN,
	     "MCACHE_BUNDLE_MAX_DEPTH"},
	    {"directory depth",
	     {{"a/b/c/", AE_IFDIR}},
	     1,
	     {.max_depth = 2},
	     MC_E_ORIGIN,
	     "MCACHE_BUNDLE_MAX_DEPTH"},
	    {"size",
	     {{"big", 0, NULL, 4 * MIB}},
	     1,
	     {.max_bytes = MIB},
	     MC_E_ORIGIN,
	     "MCACHE_BUNDLE_MAX_BYTES"},
	    {"size over two files",
	     {{"a", 0, NULL, MIB / 2 + 1}, {"b", 0, NULL, MIB / 2}},
	     2,
	     {.max_bytes = MIB},
	     MC_E_ORIGIN,
	     "MCACHE_BUNDLE_MAX_BYTES"},
	    {"bomb",
	     {{"bomb", 0, NULL, 32 * MIB}},
	     1,
	     {.max_ratio = 10, .ratio_slack = 1},
	     MC_E_ORIGIN,
	     "MCACHE_BUNDLE_MAX_RATIO"},
	    {"twice", {{"a", 0, small, 10}, {"./a", 0, small, 20}}, 2, {0}, MC_E_ORIGIN, "twice"},
	    {"file then beneath it",
	     {{"a", 0, small, 10}, {"a/b", 0, small, 10}},
	     2,
	     {0},
	     MC_E_ORIGIN,
	     "which is a file"},
	    {"file after files beneath it",
	     {{"a/b", 0, small, 10}, {"a", 0, small, 10}},
	     2,
	     {0},
	     MC_E_ORIGIN,
	     "beneath it"},
	    {"good then bad",
	     {{"good.bin", 0, small, sizeof(small)}, {"../bad", 0, small, 10}},
	     2,
	     {0},
	     MC_E_ORIGIN,
	     "safe relative"},
	};
	char name[16];

	snprintf(outside_abs, sizeof(outside_abs), "%s", "/");
	for (size_t i = 0; i < sizeof(small); i++)
		small[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hostile *h = &cases[i];
		struct tb_opts opts = {.lim = h->lim};
		struct fixture fx;
		struct tb_buf b;
		struct tb_result r;

		setup(&fx);
		snprintf(outside_abs, sizeof(outside_abs), "%s", fx.outside);
		snprintf(outside_file, sizeof(outside_file), "%s/pwned", fx.outside);
		tb_build(&b, i % 2 ? TB_ZSTD : TB_GZIP, h->e, h->n);
		snprintf(name, sizeof(name), "h%zu", i);
		r = tb_pull_bundle(&fx, name, &b, "\"h\"", &opts);
		printf("   %s: %d %s\n", h->what, r.ret, r.msg);
		ASSERT_EQ(r.ret, h->code);
		ASSERT_TRUE(strstr(r.msg, h->says) != NULL);
		ASSERT_TRUE(strstr(r.msg, "refusing bundle 'http://origin/b/model.tar.gz'") !=
			    NULL);
		ASSERT_TRUE(strchr(r.msg, '\n') == NULL);
		ASSERT_TRUE(strstr(r.msg, "secret") == NULL);
		expect_nothing(&fx, name);
		expect_collected(&fx);
		free(b.p);
		teardown(&fx);
	}
}

/* Positive twins of the limits: exactly at them passes. */
static void test_at_limits(void)
{
	struct fixture fx;
	const struct tb_entry e[] = {
	    {"a/b", 0, NULL, MIB / 2},
	    {"a/c", 0, NULL, MIB / 2},
	    {"a/", AE_IFDIR},
	};
	struct tb_opts opts = {.lim = {.max_depth = 2, .max_bytes = MIB, .max_entries = 3}};
	struct tb_buf b;
	struct tb_result r;

	setup(&fx);
	tb_build(&b, TB_GZIP, e, 3);
	r = tb_pull_bundle(&fx, "ok", &b, "\"x\"", &opts);
	if (r.ret)
		MC_TEST_FAILED_("pull at the limits: %s", r.msg);
	ASSERT_UINT_EQ(r.entries, 2);
	free(b.p);
	teardown(&fx);
}

/* Too many entries: a count bomb of tiny files and directories. */
static void test_count_bomb(void)
{
	struct tb_entry e[200];
	char names[200][16];
	struct tb_opts opts = {.lim = {.max_entries = 150}};
	struct fixture fx;
	struct tb_buf b;
	struct tb_result r;

	for (size_t i = 0; i < 200; i++) {
		if (i % 2)
			snprintf(names[i], sizeof(names[i]), "f%zu", i);
		else
			snprintf(names[i], sizeof(names[i]), "d%zu/", i);
		e[i] = (struct tb_entry){names[i], i % 2 ? 0 : AE_IFDIR, NULL, i % 2};
	}
	setup(&fx);
	tb_build(&b, TB_ZSTD, e, 200);
	r = tb_pull_bundle(&fx, "cb", &b, "\"c\"", &opts);
	ASSERT_EQ(r.ret, MC_E_ORIGIN);
	ASSERT_TRUE(strstr(r.msg, "more than 150 entries") != NULL);
	expect_nothing(&fx, "cb");
	expect_collected(&fx);
	/* The same archive under the default limit unpacks. */
	r = tb_pull_bundle(&fx, "cb", &b, "\"c\"", NULL);
	if (r.ret)
		MC_TEST_FAILED_("pull: %s", r.msg);
	ASSERT_UINT_EQ(r.entries, 100);
	free(b.p);
	teardown(&fx);
}

/* Not an archive, and a truncated one: refused with the reader's words. */
static void test_not_an_archive(void)
{
	uint8_t *junk = tc_bytes(100000, 3);
	const struct tb_entry e[] = {{"w.bin", 0, NULL, 4 * MIB}};
	struct tb_buf g = {junk, 100000, 100000}, b;
	struct fixture fx;
	struct tb_result r;

	setup(&fx);
	r = tb_pull_bundle(&fx, "junk", &g, "\"j\"", NULL);
	printf("   junk: %s\n", r.msg);
	ASSERT_EQ(r.ret, MC_E_ORIGIN);
	expect_nothing(&fx, "junk");
	tb_build(&b, TB_GZIP, e, 1);
	b.n /= 2;
	r = tb_pull_bundle(&fx, "cut", &b, "\"t\"", NULL);
	printf("   truncated: %s\n", r.msg);
	ASSERT_EQ(r.ret, MC_E_ORIGIN);
	expect_nothing(&fx, "cut");
	expect_collected(&fx);
	free(b.p);
	free(junk);
	teardown(&fx);
}

/* A hostile re-pull leaves the previous version current and whole. */
static void test_hostile_update_keeps_current(void)
{
	uint8_t *d = tc_bytes(5000, 11);
	const struct tb_entry good[] = {{"w.bin", 0, d, 5000}};
	const struct tb_entry bad[] = {{"w.bin", 0, d, 100}, {"../x", 0, d, 10}};
	char path[1200], link1[256], link2[256];
	struct fixture fx;
	struct tb_buf b1, b2;
	struct tb_result r;
	struct stat st;

	setup(&fx);
	tb_build(&b1, TB_GZIP, good, 1);
	tb_build(&b2, TB_GZIP, bad, 2);
	r = tb_pull_bundle(&fx, "m", &b1, "\"1\"", NULL);
	ASSERT_EQ(r.ret, 0);
	snprintf(path, sizeof(path), "%s/models/m", fx.dir);
	memset(link1, 0, sizeof(link1));
	ASSERT_GT(readlink(path, link1, sizeof(link1) - 1), 0);
	r = tb_pull_bundle(&fx, "m", &b2, "\"2\"", NULL);
	ASSERT_EQ(r.ret, MC_E_ORIGIN);
	memset(link2, 0, sizeof(link2));
	ASSERT_GT(readlink(path, link2, sizeof(link2) - 1), 0);
	ASSERT_STR_EQ(link1, link2);
	expect_file(&fx, "m", "w.bin", d, 5000, &st);
	ASSERT_EQ(tc_count_entries(fx.outside), 0);
	free(b1.p);
	free(b2.p);
	free(d);
	teardown(&fx);
}

/* Include patterns select entries; an unpack with other patterns is not reused. */
static void test_include(void)
{
	uint8_t *d = tc_bytes(4000, 5);
	const struct tb_entry e[] = {
	    {"config.json", 0, d, 100}, {"w.safetensors", 0, d, 4000}, {"notes/x.txt", 0, d, 50}};
	const char *inc[] = {"*.json"};
	struct tb_opts opts = {.include = inc, .ninclude = 1};
	char path[1200];
	struct fixture fx;
	struct tb_buf b;
	struct tb_result r;
	struct stat st;

	setup(&fx);
	tb_build(&b, TB_ZSTD, e, 3);
	r = tb_pull_bundle(&fx, "m", &b, "\"i\"", &opts);
	if (r.ret)
		MC_TEST_FAILED_("pull: %s", r.msg);
	ASSERT_UINT_EQ(r.entries, 1);
	expect_file(&fx, "m", "config.json", d, 100, &st);
	snprintf(path, sizeof(path), "%s/models/m/w.safetensors", fx.dir);
	ASSERT_EQ(stat(path, &st), -1);
	r = tb_pull_bundle(&fx, "m", &b, "\"i\"", NULL);
	if (r.ret)
		MC_TEST_FAILED_("pull: %s", r.msg);
	ASSERT_FALSE(r.downloaded);
	ASSERT_TRUE(r.unpacked);
	ASSERT_UINT_EQ(r.entries, 3);
	expect_file(&fx, "m", "w.safetensors", d, 4000, &st);
	expect_file(&fx, "m", "notes/x.txt", d, 50, &st);
	/* Patterns that select nothing: nothing to pull. */
	inc[0] = "*.bin";
	r = tb_pull_bundle(&fx, "n", &b, "\"i\"", &opts);
	ASSERT_EQ(r.ret, MC_E_NOTFOUND);
	free(b.p);
	free(d);
	teardown(&fx);
}

/* A bundle beside a plain file: their paths may not meet. */
static void test_clash_with_other_uri(void)
{
	uint8_t *d = tc_bytes(1000, 9);
	const struct tb_entry e[] = {{"config.json", 0, d, 100}, {"w.bin", 0, d, 1000}};
	struct fixture fx;
	struct tb_buf b;
	struct tb_result r;

	setup(&fx);
	tb_build(&b, TB_GZIP, e, 2);
	{
		const struct tb_obj ob[] = {
		    {{"http://origin/c/config.json", "config.json", d, 100, "\"c\""}, false},
		    {{"http://origin/b/model.tar.gz", "model.tar.gz", b.p, b.n, "\"b\""}, true},
		};

		r = tb_pull(&fx, "m", ob, 2, NULL);
		printf("   clash: %s\n", r.msg);
		ASSERT_EQ(r.ret, MC_E_USAGE);
		ASSERT_TRUE(strstr(r.msg, "config.json") != NULL);
		expect_nothing(&fx, "m");
	}
	{
		const struct tb_obj ob[] = {
		    {{"http://origin/c/tokenizer.json", "tokenizer.json", d, 100, "\"c\""}, false},
		    {{"http://origin/b/model.tar.gz", "model.tar.gz", b.p, b.n, "\"b\""}, true},
		};
		struct stat st;

		r = tb_pull(&fx, "m", ob, 2, NULL);
		if (r.ret)
			MC_TEST_FAILED_("pull: %s", r.msg);
		expect_file(&fx, "m", "tokenizer.json", d, 100, &st);
		expect_file(&fx, "m", "w.bin", d, 1000, &st);
		ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files f JOIN models m"
					 " ON m.current_version = f.version_id"),
			  3);
	}
	free(b.p);
	free(d);
	teardown(&fx);
}

/* A damaged file of an earlier unpack is not copied: the bundle is unpacked again. */
static void test_damaged_entry_unpacks_again(void)
{
	uint8_t *d = tc_bytes(3000, 13);
	const struct tb_entry e[] = {{"w.bin", 0, d, 3000}};
	char hex[MC_DIGEST_HEX], blob[1200];
	struct fixture fx;
	struct tb_buf b;
	struct tb_result r;
	struct stat st;

	setup(&fx);
	tb_build(&b, TB_GZIP, e, 1);
	r = tb_pull_bundle(&fx, "m", &b, "\"d\"", NULL);
	ASSERT_EQ(r.ret, 0);
	tc_digest_hex(d, 3000, hex);
	snprintf(blob, sizeof(blob), "%s/blobs/%.2s/%s", fx.dir, hex, hex);
	tc_truncate(blob, 10);
	r = tb_pull_bundle(&fx, "m", &b, "\"d\"", NULL);
	if (r.ret)
		MC_TEST_FAILED_("re-pull: %s", r.msg);
	ASSERT_FALSE(r.downloaded);
	ASSERT_TRUE(r.unpacked);
	expect_file(&fx, "m", "w.bin", d, 3000, &st);
	free(b.p);
	free(d);
	teardown(&fx);
}

int main(void)
{
	int fds = tc_open_fds();

	MC_RUN(test_names);
	MC_RUN(test_gzip);
	MC_RUN(test_zstd);
	MC_RUN(test_plain_tar);
	MC_RUN(test_hostile);
	MC_RUN(test_at_limits);
	MC_RUN(test_count_bomb);
	MC_RUN(test_not_an_archive);
	MC_RUN(test_hostile_update_keeps_current);
	MC_RUN(test_include);
	MC_RUN(test_clash_with_other_uri);
	MC_RUN(test_damaged_entry_unpacks_again);
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
