/*
 * Unit tests of index recovery: the version sidecars (cache/sidecar.c) and
 * mc_cache_rebuild_index() (cache/rebuild.c). Models are made by driving the pull callbacks
 * directly (test_cache.h), then the index is lost, garbled or damaged and rebuilt from the disk:
 * the rows must come back as they were, damage must be reported and kept (never dropped), and
 * nothing may run while another process has the cache open.
 */
#include "test_cache.h"

#include <jansson.h>
#include <stdarg.h>

#include "mc_banned.h"

#define MIB (1024u * 1024u)

struct fixture {
	char *dir;
	struct mc_cache *c;
	uint8_t *a, *b, *d;
	struct tc_obj m1[3]; /* model "m": a.bin, sub/b.bin, empty */
	struct tc_obj m2[1]; /* model "n": d.bin */
	int64_t v1, v2;
};

static void open_cache(struct fixture *fx)
{
	struct mc_err err;

	mc_err_init(&err);
	fx->c = NULL;
	if (mc_cache_open(&fx->c, fx->dir, &err))
		MC_TEST_FAILED_("open: %s", err.msg);
}

static void close_cache(struct fixture *fx)
{
	mc_cache_close(fx->c);
	fx->c = NULL;
}

/* Two models, pulled, and the cache closed. */
static void setup(struct fixture *fx)
{
	memset(fx, 0, sizeof(*fx));
	fx->dir = tc_mkdtemp();
	fx->a = tc_bytes(2 * MIB + 77, 11);
	fx->b = tc_bytes(5000, 12);
	fx->d = tc_bytes(MIB, 13);
	fx->m1[0] = (struct tc_obj){"http://origin/m/a.bin", "a.bin", fx->a, 2 * MIB + 77, "\"a\""};
	fx->m1[1] = (struct tc_obj){"http://origin/m/b.bin", "sub/b.bin", fx->b, 5000, "\"b\""};
	fx->m1[2] = (struct tc_obj){"http://origin/m/empty", "empty", (const uint8_t *)"", 0, ""};
	fx->m2[0] = (struct tc_obj){"http://other/n/d.bin", "d.bin", fx->d, MIB, "\"d\""};
	open_cache(fx);
	fx->v1 = tc_pull(fx->c, "m", fx->m1, 3);
	fx->v2 = tc_pull(fx->c, "n", fx->m2, 1);
	close_cache(fx);
}

static void teardown(struct fixture *fx)
{
	mc_cache_close(fx->c);
	tc_rm_rf(fx->dir);
	free(fx->dir);
	free(fx->a);
	free(fx->b);
	free(fx->d);
}

static void path_in(const struct fixture *fx, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void path_in(const struct fixture *fx, char *buf, size_t len, const char *fmt, ...)
{
	char rel[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(buf, len, "%s/%s", fx->dir, rel);
}

/* Every row a rebuild must restore, as text (completion times aside: see cache/README.md). */
static char *snapshot(struct mc_cache *c)
{
	static const char *const queries[] = {
	    "SELECT name, source, coalesce(current_version, 0), pinned, created_at FROM models"
	    " ORDER BY name",
	    "SELECT v.id, m.name, v.state, v.created_at, coalesce(v.tag, '') FROM versions v"
	    " JOIN models m ON m.id = v.model_id ORDER BY v.id",
	    "SELECT version_id, path, source, size, etag, last_modified, digest,"
	    " coalesce(sha256, '') FROM files ORDER BY version_id, path",
	    "SELECT digest, size, inode, mtime_ns FROM blobs ORDER BY digest",
	};
	size_t len = 0, cap = 4096;
	char *out = malloc(cap);
	sqlite3_stmt *s;

	ASSERT_NOT_NULL(out);
	out[0] = '\0';
	for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
		ASSERT_EQ(sqlite3_prepare_v2(c->db, queries[q], -1, &s, NULL), SQLITE_OK);
		while (sqlite3_step(s) == SQLITE_ROW) {
			for (int i = 0; i < sqlite3_column_count(s); i++) {
				const char *t = (const char *)sqlite3_column_text(s, i);
				size_t n = strlen(t ? t : "") + 2;

				if (len + n + 1 > cap) {
					cap = 2 * (len + n + 1);
					out = realloc(out, cap);
					ASSERT_NOT_NULL(out);
				}
				len +=
				    (size_t)snprintf(out + len, cap - len, "%s%c", t ? t : "",
						     i + 1 < sqlite3_column_count(s) ? '|' : '\n');
			}
		}
		sqlite3_finalize(s);
	}
	return out;
}

static void rebuild_ok(struct fixture *fx, struct mc_rebuild_result *res)
{
	struct mc_err err;

	mc_err_init(&err);
	if (mc_cache_rebuild_index(fx->dir, 0, res, &err))
		MC_TEST_FAILED_("rebuild: %s", err.msg);
}

/* The note of @kind whose path contains @path, or NULL. */
static const struct mc_rebuild_note *find_note(const struct mc_rebuild_result *res,
					       const char *kind, const char *path)
{
	for (size_t i = 0; i < res->nnote; i++)
		if (!strcmp(res->note[i].kind, kind) && strstr(res->note[i].path, path))
			return &res->note[i];
	return NULL;
}

static void expect_open_refused(struct fixture *fx, const char *msg)
{
	struct mc_cache *c = NULL;
	struct mc_err err;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, fx->dir, &err), MC_E_INDEX);
	ASSERT_NULL(c);
	ASSERT_NOT_NULL(strstr(err.msg, msg));
	ASSERT_NOT_NULL(strstr(err.msg, "mcache rebuild-index"));
	ASSERT_NULL(strchr(err.msg, '\n'));
}

struct found {
	int n;
	char kinds[512];
};

static void on_finding(void *ctx, const struct mc_finding *f)
{
	struct found *s = ctx;
	size_t len = strlen(s->kinds);

	s->n++;
	snprintf(s->kinds + len, sizeof(s->kinds) - len, "%s:%s:%s ", f->kind, f->path,
		 f->expected);
}

static struct found verify(struct fixture *fx, unsigned flags)
{
	struct found s = {0};
	struct mc_err err;
	uint64_t n = 0;

	mc_err_init(&err);
	if (mc_cache_verify(fx->c, NULL, 0, flags, on_finding, &s, &n, &err))
		MC_TEST_FAILED_("verify: %s", err.msg);
	return s;
}

/* The sidecar is written beside the tree, describes the version, and reads back. */
static void test_sidecar(void)
{
	struct fixture fx;
	char path[1024], hex[MC_DIGEST_HEX], why[200];
	struct mc_sidecar_file f;
	struct mc_sidecar m;
	json_error_t jerr;
	json_t *root;
	int mfd;

	setup(&fx);
	path_in(&fx, path, sizeof(path), "trees/m/%lld.json", (long long)fx.v1);
	root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		MC_TEST_FAILED_("%s: %s", path, jerr.text);
	ASSERT_STR_EQ(json_string_value(json_object_get(root, "model")), "m");
	ASSERT_EQ(json_integer_value(json_object_get(root, "version")), fx.v1);
	ASSERT_STR_EQ(json_string_value(json_object_get(root, "source")), "http://origin/m/a.bin");
	ASSERT_EQ(json_array_size(json_object_get(root, "files")), 3);
	json_decref(root);
	/* Not inside the tree that consumers read. */
	path_in(&fx, path, sizeof(path), "models/m/%lld.json", (long long)fx.v1);
	ASSERT_NE(access(path, F_OK), 0);
	path_in(&fx, path, sizeof(path), "trees/m");
	mfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(mc_sidecar_read(mfd, "m", fx.v1, &m, why, sizeof(why)), 0);
	ASSERT_STR_EQ(m.source, "http://origin/m/a.bin");
	ASSERT_TRUE(mc_sidecar_file_get(json_object_get(m.by_path, "sub/b.bin"), &f));
	tc_digest_hex(fx.b, 5000, hex);
	ASSERT_STR_EQ(f.digest, hex);
	ASSERT_UINT_EQ(f.size, 5000);
	ASSERT_STR_EQ(f.etag, "\"b\"");
	ASSERT_STR_EQ(f.source, "http://origin/m/b.bin");
	ASSERT_STR_EQ(f.last_modified, "Mon, 01 Jan 2024 00:00:00 GMT");
	mc_sidecar_release(&m);
	/* A sidecar of another model or version is not taken for this one. */
	ASSERT_EQ(mc_sidecar_read(mfd, "n", fx.v1, &m, why, sizeof(why)), MC_E_INDEX);
	ASSERT_NOT_NULL(strstr(why, "not the sidecar"));
	ASSERT_EQ(mc_sidecar_read(mfd, "m", fx.v1 + 100, &m, why, sizeof(why)), -ENOENT);
	close(mfd);
	teardown(&fx);
}

/* index.db deleted: open refuses, and the rebuild restores every row. */
static void test_missing_index(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	char path[1024], *before, *after;
	int64_t v3;
	uint8_t *a2;

	setup(&fx);
	open_cache(&fx);
	before = snapshot(fx.c);
	close_cache(&fx);
	/* The index is gone, WAL and all (the WAL outlives processes: no checkpoint on close). */
	path_in(&fx, path, sizeof(path), "index.db-wal");
	unlink(path);
	path_in(&fx, path, sizeof(path), "index.db-shm");
	unlink(path);
	path_in(&fx, path, sizeof(path), "index.db");
	ASSERT_EQ(unlink(path), 0);
	expect_open_refused(&fx, "is missing");
	ASSERT_NE(access(path, F_OK), 0); /* the refusal created nothing */
	rebuild_ok(&fx, &res);
	ASSERT_UINT_EQ(res.models, 2);
	ASSERT_UINT_EQ(res.versions, 2);
	ASSERT_UINT_EQ(res.files, 4);
	ASSERT_UINT_EQ(res.blobs, 4);
	ASSERT_UINT_EQ(res.sidecars, 2);
	ASSERT_UINT_EQ(res.quarantined + res.damaged + res.missing + res.blobs_adopted, 0);
	ASSERT_STR_EQ(res.moved_aside, "");
	ASSERT_EQ(res.nnote, 0);
	mc_rebuild_result_release(&res);
	open_cache(&fx);
	after = snapshot(fx.c);
	ASSERT_STR_EQ(after, before);
	ASSERT_EQ(verify(&fx, MC_VERIFY_DEEP).n, 0);
	/* A re-pull of the same objects reuses everything and keeps the version. */
	ASSERT_EQ(tc_pull(fx.c, "m", fx.m1, 3), fx.v1);
	/* A new version gets an id never used before. */
	a2 = tc_bytes(1000, 99);
	fx.m1[0].data = a2;
	fx.m1[0].size = 1000;
	fx.m1[0].etag = "\"a2\"";
	v3 = tc_pull(fx.c, "m", fx.m1, 3);
	ASSERT_GT(v3, fx.v2);
	free(a2);
	free(before);
	free(after);
	teardown(&fx);
}

/* Garbage in index.db: refused; the rebuild moves it aside byte for byte. */
static void test_garbage_index(void)
{
	const struct mc_rebuild_note *note;
	struct mc_rebuild_result res;
	struct fixture fx;
	char path[1024], aside[1100];
	uint8_t *junk = tc_bytes(20000, 5), *kept;
	size_t len;
	int fd;

	setup(&fx);
	/*
	 * The WAL outlives processes (no checkpoint on close) and its pages override the main
	 * file's: garbage in index.db shows once the WAL is gone, as here.
	 */
	path_in(&fx, path, sizeof(path), "index.db-wal");
	unlink(path);
	path_in(&fx, path, sizeof(path), "index.db-shm");
	unlink(path);
	path_in(&fx, path, sizeof(path), "index.db");
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, junk, 20000), 20000);
	close(fd);
	expect_open_refused(&fx, "not an mcache index");
	rebuild_ok(&fx, &res);
	ASSERT_EQ(strncmp(res.moved_aside, "index.db.corrupt-", 17), 0);
	ASSERT_NOT_NULL(find_note(&res, "moved-aside", "index.db"));
	note = find_note(&res, "skipped", "index.db");
	ASSERT_NOT_NULL(note);
	ASSERT_NOT_NULL(strstr(note->detail, "settings"));
	ASSERT_UINT_EQ(res.models, 2);
	snprintf(aside, sizeof(aside), "%s/%s", fx.dir, res.moved_aside);
	kept = tc_read_file(aside, &len);
	ASSERT_UINT_EQ(len, 20000);
	ASSERT_MEM_EQ(kept, junk, len);
	free(kept);
	mc_rebuild_result_release(&res);
	/* A second rebuild in the same second keeps both. */
	rebuild_ok(&fx, &res);
	ASSERT_STR_NE(res.moved_aside, "");
	snprintf(aside, sizeof(aside), "%s/%s", fx.dir, res.moved_aside);
	ASSERT_EQ(access(aside, F_OK), 0);
	mc_rebuild_result_release(&res);
	kept = tc_read_file(path, &len); /* the new index is in place */
	free(kept);
	open_cache(&fx);
	ASSERT_EQ(verify(&fx, MC_VERIFY_DEEP).n, 0);
	free(junk);
	teardown(&fx);
}

/* A pin (and an unpin) made after the tree was built is in the sidecar and survives a rebuild. */
static void test_pin(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	struct mc_err err;
	char path[1024];

	setup(&fx);
	open_cache(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_pin(fx.c, "n", true, &err), 0);
	ASSERT_EQ(mc_cache_pin(fx.c, "m", true, &err), 0);
	ASSERT_EQ(mc_cache_pin(fx.c, "m", false, &err), 0);
	ASSERT_EQ(mc_sidecar_rewrite(fx.c, "nope", &err), 0); /* no model: nothing to write */
	close_cache(&fx);
	path_in(&fx, path, sizeof(path), "index.db");
	ASSERT_EQ(unlink(path), 0);
	rebuild_ok(&fx, &res);
	mc_rebuild_result_release(&res);
	open_cache(&fx);
	ASSERT_EQ(tc_query(fx.c, "SELECT pinned FROM models WHERE name = 'n'"), 1);
	ASSERT_EQ(tc_query(fx.c, "SELECT pinned FROM models WHERE name = 'm'"), 0);
	teardown(&fx);
}

/* While a cache is open (another process), a rebuild refuses and changes nothing. */
static void test_busy(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	struct mc_err err;
	char path[1024];
	uint8_t *before, *after;
	size_t n1, n2;

	setup(&fx);
	open_cache(&fx);
	path_in(&fx, path, sizeof(path), "index.db");
	before = tc_read_file(path, &n1);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_rebuild_index(fx.dir, 0, &res, &err), -EBUSY);
	ASSERT_NOT_NULL(strstr(err.msg, "another mcache process has the cache open"));
	mc_rebuild_result_release(&res);
	after = tc_read_file(path, &n2);
	ASSERT_UINT_EQ(n2, n1);
	ASSERT_MEM_EQ(after, before, n1);
	path_in(&fx, path, sizeof(path), "index.db.rebuild");
	ASSERT_NE(access(path, F_OK), 0);
	free(before);
	free(after);
	teardown(&fx);
}

/* Flips one byte of @path (a read-only blob). */
static void flip_byte(const char *path, off_t at)
{
	uint8_t byte;
	int fd;

	ASSERT_EQ(chmod(path, 0644), 0);
	fd = open(path, O_RDWR | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(pread(fd, &byte, 1, at), 1);
	byte ^= 0x10;
	ASSERT_EQ(pwrite(fd, &byte, 1, at), 1);
	close(fd);
	ASSERT_EQ(chmod(path, 0444), 0);
}

/*
 * A blob whose bytes changed is quarantined and its file kept (damaged); a tree file whose blob
 * is gone is rehashed and adopted as the blob again.
 */
static void test_quarantine_and_adopt(void)
{
	struct mc_rebuild_result res;
	const struct mc_rebuild_note *note;
	struct fixture fx;
	char hexa[MC_DIGEST_HEX], hexd[MC_DIGEST_HEX], path[1024], q[1024];
	struct stat st, tst;
	struct found f;

	setup(&fx);
	tc_digest_hex(fx.a, fx.m1[0].size, hexa);
	tc_digest_hex(fx.d, fx.m2[0].size, hexd);
	path_in(&fx, path, sizeof(path), "blobs/%.2s/%s", hexa, hexa);
	flip_byte(path, MIB + 5);
	path_in(&fx, path, sizeof(path), "blobs/%.2s/%s", hexd, hexd);
	ASSERT_EQ(unlink(path), 0);
	rebuild_ok(&fx, &res);
	ASSERT_UINT_EQ(res.quarantined, 1);
	ASSERT_UINT_EQ(res.damaged, 1);
	ASSERT_UINT_EQ(res.blobs_adopted, 1);
	ASSERT_UINT_EQ(res.files, 4);
	note = find_note(&res, "quarantined", hexa);
	ASSERT_NOT_NULL(note);
	ASSERT_NOT_NULL(strstr(note->detail, "quarantine/"));
	ASSERT_NOT_NULL(find_note(&res, "damaged", "trees/m/"));
	ASSERT_NOT_NULL(find_note(&res, "adopted", "d.bin"));
	/* The damaged bytes are kept under quarantine/, not deleted. */
	path_in(&fx, q, sizeof(q), "quarantine/%s.", hexa);
	ASSERT_NOT_NULL(strstr(note->detail, strrchr(q, '/') + 1));
	path_in(&fx, path, sizeof(path), "quarantine");
	ASSERT_EQ(tc_count_entries(path), 1);
	/* The adopted blob is the tree's file, read-only. */
	path_in(&fx, path, sizeof(path), "blobs/%.2s/%s", hexd, hexd);
	ASSERT_EQ(lstat(path, &st), 0);
	ASSERT_EQ(st.st_mode & 0777, 0444);
	path_in(&fx, q, sizeof(q), "models/n/d.bin");
	ASSERT_EQ(stat(q, &tst), 0);
	ASSERT_UINT_EQ(tst.st_ino, st.st_ino);
	mc_rebuild_result_release(&res);
	open_cache(&fx);
	/* The damaged file is still listed: verify names its missing blob, and nothing else. */
	f = verify(&fx, 0);
	ASSERT_EQ(f.n, 1);
	ASSERT_NOT_NULL(strstr(f.kinds, "missing:a.bin:blobs/"));
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE path = 'a.bin'"), 1);
	ASSERT_EQ(tc_query(fx.c, "SELECT inode FROM blobs b JOIN files f ON f.digest = b.digest"
				 " WHERE f.path = 'a.bin'"),
		  0);
	/* The sidecar still gave the damaged file its validators, so a pull finds the object. */
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE path = 'a.bin'"
				 " AND etag = '\"a\"' AND source = 'http://origin/m/a.bin'"),
		  1);
	/* The next pull downloads a.bin again and repairs the model. */
	ASSERT_GT(tc_pull(fx.c, "m", fx.m1, 3), fx.v2);
	ASSERT_EQ(verify(&fx, MC_VERIFY_DEEP).n, 0);
	teardown(&fx);
}

/*
 * No sidecar: the files come back with their digests but no source or validators. A tree entry
 * the sidecar lists but the tree lacks is kept and reported missing.
 */
static void test_no_sidecar_and_missing(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	char path[1024];
	struct found f;

	setup(&fx);
	path_in(&fx, path, sizeof(path), "trees/n/%lld.json", (long long)fx.v2);
	ASSERT_EQ(unlink(path), 0);
	path_in(&fx, path, sizeof(path), "trees/m/%lld/sub/b.bin", (long long)fx.v1);
	ASSERT_EQ(unlink(path), 0);
	rebuild_ok(&fx, &res);
	ASSERT_UINT_EQ(res.sidecars, 1);
	ASSERT_UINT_EQ(res.missing, 1);
	ASSERT_UINT_EQ(res.files, 4);
	ASSERT_NOT_NULL(find_note(&res, "no-sidecar", "trees/n/"));
	ASSERT_NOT_NULL(find_note(&res, "missing", "sub/b.bin"));
	mc_rebuild_result_release(&res);
	open_cache(&fx);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE path = 'd.bin'"
				 " AND source = '' AND etag = '' AND last_modified = ''"),
		  1);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models WHERE name = 'n' AND source = ''"),
		  1);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE path = 'sub/b.bin'"
				 " AND etag = '\"b\"'"),
		  1);
	f = verify(&fx, MC_VERIFY_DEEP);
	ASSERT_EQ(f.n, 1);
	ASSERT_NOT_NULL(strstr(f.kinds, "missing:sub/b.bin:trees/m/"));
	teardown(&fx);
}

/*
 * Partial downloads are deleted; version ids continue after every number under trees/, even a
 * sidecar whose tree is gone; a non-current version that lacks a file is failed.
 */
static void test_tmp_sequence_and_failed(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	char path[1024];
	uint8_t *a2 = tc_bytes(3000, 21);
	int64_t v3, v4;
	int fd;

	setup(&fx);
	/* A second version of m: v1 is then not current. */
	open_cache(&fx);
	fx.m1[0].data = a2;
	fx.m1[0].size = 3000;
	fx.m1[0].etag = "\"a2\"";
	v3 = tc_pull(fx.c, "m", fx.m1, 3);
	close_cache(&fx);
	path_in(&fx, path, sizeof(path), "trees/m/%lld/empty", (long long)fx.v1);
	ASSERT_EQ(unlink(path), 0);
	path_in(&fx, path, sizeof(path), "tmp/41.part");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ASSERT_GE(fd, 0);
	close(fd);
	path_in(&fx, path, sizeof(path), "trees/m/%lld.json", (long long)(v3 + 50));
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ASSERT_GE(fd, 0);
	close(fd);
	rebuild_ok(&fx, &res);
	ASSERT_UINT_EQ(res.tmp_removed, 1);
	ASSERT_UINT_EQ(res.versions, 3);
	ASSERT_UINT_EQ(res.missing, 1);
	mc_rebuild_result_release(&res);
	path_in(&fx, path, sizeof(path), "tmp");
	ASSERT_EQ(tc_count_entries(path), 0);
	open_cache(&fx);
	ASSERT_EQ(tc_query(fx.c, "SELECT current_version FROM models WHERE name = 'm'"), v3);
	{
		char sql[128];

		snprintf(sql, sizeof(sql), "SELECT state = 'failed' FROM versions WHERE id = %lld",
			 (long long)fx.v1);
		ASSERT_EQ(tc_query(fx.c, sql), 1);
		snprintf(sql, sizeof(sql),
			 "SELECT state = 'complete' FROM versions WHERE id = %lld", (long long)v3);
		ASSERT_EQ(tc_query(fx.c, sql), 1);
	}
	fx.m1[0].data = fx.a;
	fx.m1[0].size = 2 * MIB + 77;
	fx.m1[0].etag = "\"a\"";
	v4 = tc_pull(fx.c, "m", fx.m1, 3);
	ASSERT_GT(v4, v3 + 50);
	free(a2);
	teardown(&fx);
}

/* What is not the cache's is reported, never followed, never indexed. */
static void test_skipped(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	char path[1024], outside[1024];
	int fd;

	setup(&fx);
	path_in(&fx, outside, sizeof(outside), "outside.bin");
	fd = open(outside, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "secret", 6), 6);
	close(fd);
	path_in(&fx, path, sizeof(path), "trees/m/%lld/link", (long long)fx.v1);
	ASSERT_EQ(symlink(outside, path), 0);
	path_in(&fx, path, sizeof(path), "trees/-bad");
	ASSERT_EQ(mkdir(path, 0755), 0);
	path_in(&fx, path, sizeof(path), "models/ghost");
	ASSERT_EQ(symlink("../trees/ghost/7", path), 0);
	rebuild_ok(&fx, &res);
	ASSERT_NOT_NULL(find_note(&res, "skipped", "/link"));
	ASSERT_NOT_NULL(find_note(&res, "skipped", "trees/-bad"));
	ASSERT_NOT_NULL(find_note(&res, "skipped", "models/ghost"));
	ASSERT_UINT_EQ(res.files, 4);
	ASSERT_UINT_EQ(res.blobs_adopted, 0);
	mc_rebuild_result_release(&res);
	open_cache(&fx);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM files WHERE path = 'link'"), 0);
	teardown(&fx);
}

/*
 * A process that died with the cache open leaves its session row: the next open runs
 * quick_check, which finds damage that a clean open does not look for. The rebuild fixes it.
 */
static void test_unclean_quick_check(void)
{
	struct mc_rebuild_result res;
	struct fixture fx;
	char path[1024];
	sqlite3_stmt *s;
	sqlite3 *db;
	int64_t root = 0, page = 0;
	uint8_t *junk;
	int fd;

	setup(&fx);
	path_in(&fx, path, sizeof(path), "index.db");
	ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
	ASSERT_EQ(sqlite3_exec(db,
			       "INSERT INTO sessions(pid, boot_id, pid_ns, start_ticks, started_at,"
			       " heartbeat_at) VALUES(1, 'another boot', 1, 1, 0, 0);"
			       "INSERT INTO settings(key, value) VALUES('max_bytes', '12345')",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	ASSERT_EQ(sqlite3_prepare_v2(db,
				     "SELECT rootpage, (SELECT page_size FROM pragma_page_size)"
				     " FROM sqlite_schema WHERE name = 'files_source'",
				     -1, &s, NULL),
		  SQLITE_OK);
	ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
	root = sqlite3_column_int64(s, 0);
	page = sqlite3_column_int64(s, 1);
	sqlite3_finalize(s);
	ASSERT_EQ(sqlite3_close(db), SQLITE_OK); /* checkpoints: the page is in index.db */
	ASSERT_GT(root, 1);
	junk = tc_bytes((uint64_t)page, 3);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(pwrite(fd, junk, (size_t)page, (off_t)((root - 1) * page)), page);
	close(fd);
	free(junk);
	expect_open_refused(&fx, "is damaged");
	/* The refusal left the dead session: the next open checks, and refuses, again. */
	expect_open_refused(&fx, "is damaged");
	rebuild_ok(&fx, &res);
	ASSERT_UINT_EQ(res.models, 2);
	ASSERT_STR_NE(res.moved_aside, "");
	mc_rebuild_result_release(&res);
	open_cache(&fx);
	ASSERT_EQ(verify(&fx, MC_VERIFY_DEEP).n, 0);
	/* The settings, kept only in the index, were read from the damaged one. */
	ASSERT_EQ(tc_query(fx.c, "SELECT value FROM settings WHERE key = 'max_bytes'"), 12345);
	teardown(&fx);
}

int main(void)
{
	int fds = tc_open_fds();

	MC_RUN(test_sidecar);
	MC_RUN(test_missing_index);
	MC_RUN(test_garbage_index);
	MC_RUN(test_pin);
	MC_RUN(test_busy);
	MC_RUN(test_quarantine_and_adopt);
	MC_RUN(test_no_sidecar_and_missing);
	MC_RUN(test_tmp_sequence_and_failed);
	MC_RUN(test_skipped);
	MC_RUN(test_unclean_quick_check);
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
