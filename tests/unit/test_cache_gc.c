/*
 * Unit tests of cache/gc.c: usage with shared blobs, pins, rm, and gc. Models are made by
 * driving the pull callbacks directly (test_cache.h), so no server is needed. Checked: what is
 * garbage goes whatever the budget (superseded and failed versions, orphan temp and blob
 * files, abandoned downloads, stray trees, a blob a dead gc left aside comes back), what is
 * not stays (locked temp files, young downloads, a live process's pull); over budget, LRU
 * eviction skips pinned models, the model to keep and leased ones, and reports what it
 * evicted; a dry run changes nothing; removal never follows a symlink out of the cache; the
 * budget's sources; gc after a pull; a hopeless shortfall evicts nothing.
 */
#include "test_cache.h"

#include <sys/file.h>
#include <sys/statvfs.h>

#include "mc_banned.h"

#define MIB (1024u * 1024u)

/* A session id no process has: leases naming it are dead. */
#define DEAD_SESSION 987654321

struct fixture {
	char *dir;
	struct mc_cache *c;
};

static void setup(struct fixture *fx)
{
	struct mc_err err;

	mc_err_init(&err);
	unsetenv("MCACHE_MAX_BYTES");
	fx->dir = tc_mkdtemp();
	fx->c = NULL;
	ASSERT_EQ(mc_cache_open(&fx->c, fx->dir, &err), 0);
}

static void teardown(struct fixture *fx)
{
	mc_cache_close(fx->c);
	tc_rm_rf(fx->dir);
	free(fx->dir);
}

static void path_in(const struct fixture *fx, char *buf, size_t len, const char *rel)
{
	snprintf(buf, len, "%s/%s", fx->dir, rel);
}

static bool exists(const struct fixture *fx, const char *rel)
{
	char path[1024];
	struct stat st;

	path_in(fx, path, sizeof(path), rel);
	return lstat(path, &st) == 0;
}

static void sql(struct mc_cache *c, const char *s)
{
	char *msg = NULL;

	if (sqlite3_exec(c->db, s, NULL, NULL, &msg) != SQLITE_OK)
		MC_TEST_FAILED_("%s: %s", s, msg ? msg : "?");
}

/* Writes a file of @len bytes at @rel in the cache, mode @mode. */
static void put_file(const struct fixture *fx, const char *rel, size_t len, mode_t mode)
{
	char path[1024];
	uint8_t *data = tc_bytes(len, 99);
	int fd;

	path_in(fx, path, sizeof(path), rel);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, data, len), (ssize_t)len);
	close(fd);
	free(data);
}

/* The blob path "blobs/ab/<hex>" of @size bytes at @data. */
static void blob_rel(const uint8_t *data, uint64_t size, char *rel, size_t len)
{
	char hex[MC_DIGEST_HEX];

	tc_digest_hex(data, size, hex);
	snprintf(rel, len, "blobs/%.2s/%s", hex, hex);
}

static void verify_clean(struct mc_cache *c)
{
	struct mc_err err;
	uint64_t n = 99;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_verify(c, NULL, 0, MC_VERIFY_DEEP, NULL, NULL, &n, &err), 0);
	ASSERT_UINT_EQ(n, 0);
}

static int gc(struct mc_cache *c, uint64_t max, const char *keep, bool dry, struct mc_gc_result *r)
{
	struct mc_gc_opts o = {.max_bytes = max, .keep = keep, .dry_run = dry};
	struct mc_err err;
	int ret;

	mc_err_init(&err);
	ret = mc_cache_gc(c, &o, r, &err);
	if (ret)
		fprintf(stderr, "# gc: %s\n", err.msg);
	return ret;
}

/* Two models sharing a file hold one blob; usage counts it once, temp files by allocation. */
static void test_usage_counts_shared_once(void)
{
	struct fixture fx;
	uint8_t *s = tc_bytes(2 * MIB, 1), *a = tc_bytes(MIB, 2), *b = tc_bytes(3000, 3);
	const struct tc_obj ma[] = {{"http://o/a/shared", "shared", s, 2 * MIB, "\"s\""},
				    {"http://o/a/own", "own", a, MIB, "\"a\""}};
	const struct tc_obj mb[] = {{"http://o/b/shared", "w/shared", s, 2 * MIB, "\"s2\""},
				    {"http://o/b/own", "own", b, 3000, "\"b\""}};
	struct mc_err err;
	uint64_t u = 0;

	setup(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_usage(fx.c, &u, &err), 0);
	ASSERT_UINT_EQ(u, 0);
	tc_pull(fx.c, "a", ma, 2);
	tc_pull(fx.c, "b", mb, 2);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM blobs"), 3);
	ASSERT_EQ(mc_cache_usage(fx.c, &u, &err), 0);
	ASSERT_UINT_EQ(u, 2 * MIB + MIB + 3000);
	put_file(&fx, "tmp/77.part", 4096, 0600);
	ASSERT_EQ(mc_cache_usage(fx.c, &u, &err), 0);
	ASSERT_UINT_EQ(u, 2 * MIB + MIB + 3000 + 4096);
	teardown(&fx);
	free(s);
	free(a);
	free(b);
}

/*
 * A failed version goes at once; a superseded one after a grace period for readers of its tree
 * (10 minutes after its successor became current), or at once over budget, before any model.
 * The blobs only they used go with them; a blob the current version shares stays.
 */
static void test_old_versions(void)
{
	struct fixture fx;
	uint8_t *a1 = tc_bytes(MIB, 4), *a2 = tc_bytes(MIB, 5), *k = tc_bytes(500, 6);
	const struct tc_obj v1[] = {{"http://o/m/a", "a", a1, MIB, "\"1\""},
				    {"http://o/m/k", "k", k, 500, "\"k\""}};
	const struct tc_obj v2[] = {{"http://o/m/a", "a", a2, MIB, "\"2\""},
				    {"http://o/m/k", "k", k, 500, "\"k\""}};
	char rel[256], old_tree[64], old_blob[256], q[128];
	struct mc_gc_result r;
	struct mc_pull p;
	struct mc_err err;
	int64_t first, second, third, failed;

	setup(&fx);
	mc_err_init(&err);
	first = tc_pull(fx.c, "m", v1, 2);
	second = tc_pull(fx.c, "m", v2, 2);
	ASSERT_GT(second, first);
	ASSERT_EQ(mc_pull_begin(&p, fx.c, "m", "http://o/m/a", 1, &err), 0);
	failed = p.version;
	mc_pull_fail(&p);
	mc_pull_release(&p);
	snprintf(old_tree, sizeof(old_tree), "trees/m/%lld", (long long)first);
	blob_rel(a1, MIB, old_blob, sizeof(old_blob));
	ASSERT_TRUE(exists(&fx, old_tree));
	ASSERT_TRUE(exists(&fx, old_blob));

	/* No budget: the failed version goes; the superseded one is in its grace period. */
	ASSERT_EQ(gc(fx.c, 0, NULL, false, &r), 0);
	ASSERT_UINT_EQ(r.versions, 1);
	ASSERT_UINT_EQ(r.blobs, 0);
	ASSERT_TRUE(exists(&fx, old_tree));
	ASSERT_TRUE(exists(&fx, old_blob));
	/* Over budget it goes at once, and the model itself is not needed. */
	ASSERT_EQ(gc(fx.c, MIB + 500, NULL, false, &r), 0);
	ASSERT_UINT_EQ(r.versions, 1);
	ASSERT_UINT_EQ(r.blobs, 1); /* a1; k is shared with the current version */
	ASSERT_UINT_EQ(r.bytes_freed, MIB);
	ASSERT_UINT_EQ(r.models, 0);
	ASSERT_UINT_EQ(r.bytes_before - r.bytes_after, MIB);
	ASSERT_TRUE(r.budget_met);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM versions"), 1);
	ASSERT_EQ(tc_query(fx.c, "SELECT current_version FROM models"), second);
	ASSERT_FALSE(exists(&fx, old_tree));
	snprintf(rel, sizeof(rel), "trees/m/%lld.json", (long long)first);
	ASSERT_FALSE(exists(&fx, rel)); /* its sidecar, where sidecars are written */
	ASSERT_FALSE(exists(&fx, old_blob));
	snprintf(rel, sizeof(rel), "trees/m/%lld", (long long)failed);
	ASSERT_FALSE(exists(&fx, rel));
	ASSERT_TRUE(exists(&fx, "models/m/a"));
	verify_clean(fx.c);

	/* Back to v1's bytes; once v3 has been current for 11 minutes, v2 goes without a budget. */
	third = tc_pull(fx.c, "m", v1, 2);
	snprintf(q, sizeof(q),
		 "UPDATE versions SET completed_at = completed_at - 660 WHERE id = %lld",
		 (long long)third);
	sql(fx.c, q);
	ASSERT_EQ(gc(fx.c, 0, NULL, false, &r), 0);
	ASSERT_UINT_EQ(r.versions, 1);
	ASSERT_UINT_EQ(r.blobs, 1); /* a2 */
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM versions"), 1);
	snprintf(rel, sizeof(rel), "trees/m/%lld", (long long)second);
	ASSERT_FALSE(exists(&fx, rel));
	blob_rel(a2, MIB, rel, sizeof(rel));
	ASSERT_FALSE(exists(&fx, rel));
	verify_clean(fx.c);
	/* Nothing more to do: a second run finds nothing. */
	ASSERT_EQ(gc(fx.c, 0, NULL, false, &r), 0);
	ASSERT_UINT_EQ(r.versions + r.blobs + r.tmp_files + r.models + r.downloads, 0);
	teardown(&fx);
	free(a1);
	free(a2);
	free(k);
}

/*
 * Orphans: a temp file without a download goes unless its writer holds the lock; a blob file
 * the index does not know goes; a blob a dead gc moved aside comes back while its row exists;
 * trees and links of versions and models the index lost go, and nothing outside the cache is
 * followed through a symlink planted in a tree.
 */
static void test_orphans(void)
{
	struct fixture fx;
	uint8_t *a = tc_bytes(5000, 7), *x = tc_bytes(777, 8);
	const struct tc_obj o[] = {{"http://o/m/a", "a", a, 5000, "\"a\""}};
	char rel[256], aside[256], path[1024], outside[1024], stray[256];
	struct mc_gc_result r;
	int held;

	setup(&fx);
	tc_pull(fx.c, "m", o, 1);
	put_file(&fx, "tmp/12345.part", 8192, 0600);
	put_file(&fx, "tmp/555.part", 100, 0600);
	path_in(&fx, path, sizeof(path), "tmp/555.part");
	held = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(held, 0);
	ASSERT_EQ(flock(held, LOCK_EX), 0);
	/* A blob file with no row, as a crash between rename and commit leaves. */
	blob_rel(x, 777, stray, sizeof(stray));
	snprintf(rel, sizeof(rel), "%.8s", stray); /* "blobs/ab" */
	path_in(&fx, path, sizeof(path), rel);
	mkdir(path, 0755);
	put_file(&fx, stray, 777, 0444);
	/* The model's own blob moved aside by a gc that died before its commit. */
	blob_rel(a, 5000, rel, sizeof(rel));
	snprintf(aside, sizeof(aside), "tmp/gc-%s", rel + 9);
	path_in(&fx, path, sizeof(path), rel);
	path_in(&fx, outside, sizeof(outside), aside);
	ASSERT_EQ(rename(path, outside), 0);
	/* Trees the index does not know, one holding a symlink to a directory outside. */
	path_in(&fx, path, sizeof(path), "trees/m/999");
	ASSERT_EQ(mkdir(path, 0755), 0);
	path_in(&fx, outside, sizeof(outside), "outside");
	ASSERT_EQ(mkdir(outside, 0755), 0);
	put_file(&fx, "outside/keep", 10, 0644);
	path_in(&fx, path, sizeof(path), "trees/m/999/link");
	ASSERT_EQ(symlink(outside, path), 0);
	path_in(&fx, path, sizeof(path), "trees/ghost");
	ASSERT_EQ(mkdir(path, 0755), 0);
	path_in(&fx, path, sizeof(path), "trees/ghost/5");
	ASSERT_EQ(mkdir(path, 0755), 0);
	put_file(&fx, "trees/ghost/5/f", 10, 0444);
	path_in(&fx, path, sizeof(path), "models/ghost");
	ASSERT_EQ(symlink("../trees/ghost/5", path), 0);

	ASSERT_EQ(gc(fx.c, 0, NULL, false, &r), 0);
	ASSERT_FALSE(exists(&fx, "tmp/12345.part"));
	ASSERT_TRUE(exists(&fx, "tmp/555.part")); /* locked: its writer is alive */
	ASSERT_UINT_EQ(r.tmp_files, 1);
	ASSERT_FALSE(exists(&fx, stray));
	ASSERT_UINT_EQ(r.blobs, 1);
	ASSERT_TRUE(exists(&fx, rel)); /* put back */
	ASSERT_FALSE(exists(&fx, aside));
	ASSERT_FALSE(exists(&fx, "trees/m/999"));
	ASSERT_FALSE(exists(&fx, "trees/ghost"));
	ASSERT_FALSE(exists(&fx, "models/ghost"));
	ASSERT_TRUE(exists(&fx, "outside/keep"));
	close(held);
	path_in(&fx, path, sizeof(path), "tmp/555.part");
	ASSERT_EQ(unlink(path), 0);
	path_in(&fx, path, sizeof(path), "outside/keep");
	ASSERT_EQ(unlink(path), 0);
	ASSERT_EQ(rmdir(outside), 0);
	verify_clean(fx.c);
	teardown(&fx);
	free(a);
	free(x);
}

/*
 * Starts a pull of @o into @name on @c that leaves a partial download: its first block is
 * durable, the temp file closed (unlocked), the version failed. Returns the download's id.
 */
static int64_t leave_partial(struct mc_cache *c, const char *name, const struct tc_obj *o)
{
	struct mc_pull p;
	struct mc_err err;
	int64_t id;

	mc_err_init(&err);
	ASSERT_EQ(mc_pull_begin(&p, c, name, o->url, 1, &err), 0);
	tc_file_set(&p, 0, o);
	tc_probe(&p.file[0].f, o);
	tc_open(&p, &p.file[0].f);
	tc_write(&p, &p.file[0].f, o, 0, 1);
	id = p.file[0].download_id;
	tc_unprobe(&p.file[0].f);
	mc_pull_fail(&p);
	mc_pull_release(&p);
	return id;
}

/*
 * A partial download of a dead process stays a day for a resume, then goes; over budget it goes
 * at once, before any model. One of a live process stays whatever the budget.
 */
static void test_downloads(void)
{
	struct fixture fx;
	uint8_t *a = tc_bytes(3 * MIB, 9), *b = tc_bytes(2 * MIB, 10), *m = tc_bytes(MIB, 11);
	const struct tc_obj oa = {"http://o/p/a", "a", a, 3 * MIB, "\"a\""};
	const struct tc_obj ob = {"http://o/p/b", "b", b, 2 * MIB, "\"b\""};
	const struct tc_obj om[] = {{"http://o/m/m", "m", m, MIB, "\"m\""}};
	struct mc_gc_result r;
	char q[200];
	int64_t ida, idb;

	setup(&fx);
	tc_pull(fx.c, "m", om, 1);
	ida = leave_partial(fx.c, "pa", &oa);
	idb = leave_partial(fx.c, "pb", &ob);
	/* As if their process had died: a is two days old, b an hour. */
	snprintf(q, sizeof(q),
		 "UPDATE downloads SET session_id = %d, created_at = created_at - 172800"
		 " WHERE id = %lld",
		 DEAD_SESSION, (long long)ida);
	sql(fx.c, q);
	snprintf(q, sizeof(q),
		 "UPDATE downloads SET session_id = %d, created_at = created_at - 3600"
		 " WHERE id = %lld",
		 DEAD_SESSION, (long long)idb);
	sql(fx.c, q);
	snprintf(q, sizeof(q), "tmp/%lld.part", (long long)ida);
	ASSERT_TRUE(exists(&fx, q));

	ASSERT_EQ(gc(fx.c, 0, NULL, false, &r), 0);
	ASSERT_UINT_EQ(r.downloads, 1);
	ASSERT_UINT_EQ(r.tmp_files, 1);
	ASSERT_FALSE(exists(&fx, q));
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM downloads"), 1);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM download_spans"), 1);
	/* The failed versions of pa and pb went, and with them the models never completed. */
	ASSERT_UINT_EQ(r.versions, 2);
	ASSERT_UINT_EQ(r.models, 2);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models"), 1);

	/* Over budget: the young abandoned download goes before the model. */
	ASSERT_EQ(gc(fx.c, MIB + MIB / 2, NULL, false, &r), 0);
	ASSERT_UINT_EQ(r.downloads, 1);
	ASSERT_UINT_EQ(r.models, 0);
	ASSERT_TRUE(r.budget_met);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM downloads"), 0);
	snprintf(q, sizeof(q), "tmp/%lld.part", (long long)idb);
	ASSERT_FALSE(exists(&fx, q));
	ASSERT_TRUE(exists(&fx, "models/m/m"));

	/* A live process's partial download is never touched, even at a budget of 1 byte. */
	ida = leave_partial(fx.c, "pa", &oa);
	ASSERT_EQ(gc(fx.c, 1, "m", false, &r), 0);
	ASSERT_FALSE(r.budget_met);
	ASSERT_UINT_EQ(r.downloads, 0);
	snprintf(q, sizeof(q), "tmp/%lld.part", (long long)ida);
	ASSERT_TRUE(exists(&fx, q));
	teardown(&fx);
	free(a);
	free(b);
	free(m);
}

/* Three 1 MiB models with last uses 100, 200, 300 (a, b, c). */
static void three_models(struct fixture *fx, uint8_t **data)
{
	static const char *const names[] = {"a", "b", "c"};
	char url[64], q[128];

	for (int i = 0; i < 3; i++) {
		struct tc_obj o = {url, "w.bin", NULL, MIB, "\"e\""};

		data[i] = tc_bytes(MIB, 20 + (uint64_t)i);
		o.data = data[i];
		snprintf(url, sizeof(url), "http://o/%s/w.bin", names[i]);
		tc_pull(fx->c, names[i], &o, 1);
		snprintf(q, sizeof(q), "UPDATE models SET last_used_at = %d WHERE name = '%s'",
			 100 * (i + 1), names[i]);
		sql(fx->c, q);
	}
}

struct evicted {
	char names[4][16];
	uint64_t bytes[4], freed[4];
	int n;
};

static void on_evicted(void *ctx, const struct mc_gc_model *m)
{
	struct evicted *e = ctx;

	ASSERT_LT(e->n, 4);
	snprintf(e->names[e->n], sizeof(e->names[0]), "%s", m->name);
	e->bytes[e->n] = m->bytes;
	e->freed[e->n++] = m->freed;
}

/* Over budget, the least recently used unpinned model goes first, and only as many as needed. */
static void test_lru(void)
{
	struct fixture fx;
	uint8_t *d[3];
	struct evicted e = {0};
	struct mc_gc_opts o = {.max_bytes = 2 * MIB, .evicted = on_evicted, .ctx = &e};
	struct mc_gc_result r;
	struct mc_err err;

	setup(&fx);
	mc_err_init(&err);
	three_models(&fx, d);
	ASSERT_EQ(mc_cache_pin(fx.c, "a", true, &err), 0);
	ASSERT_EQ(tc_query(fx.c, "SELECT pinned FROM models WHERE name = 'a'"), 1);
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 1);
	ASSERT_STR_EQ(e.names[0], "b");
	ASSERT_UINT_EQ(e.bytes[0], MIB);
	ASSERT_UINT_EQ(e.freed[0], MIB);
	ASSERT_UINT_EQ(r.models, 1);
	ASSERT_UINT_EQ(r.bytes_before, 3 * MIB);
	ASSERT_UINT_EQ(r.bytes_after, 2 * MIB);
	ASSERT_UINT_EQ(r.max_bytes, 2 * MIB);
	ASSERT_TRUE(r.budget_met);
	ASSERT_FALSE(exists(&fx, "models/b"));
	ASSERT_FALSE(exists(&fx, "trees/b"));
	ASSERT_TRUE(exists(&fx, "models/a/w.bin"));
	ASSERT_TRUE(exists(&fx, "models/c/w.bin"));
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models WHERE name = 'b'"), 0);
	verify_clean(fx.c);

	/* Only c is left to evict, and it is the one to keep: the budget cannot be met. */
	e.n = 0;
	o.max_bytes = 1;
	o.keep = "c";
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 0);
	ASSERT_FALSE(r.budget_met);
	ASSERT_UINT_EQ(r.bytes_after, 2 * MIB);
	/* Unpinned, a goes (older than c), and c stays. */
	ASSERT_EQ(mc_cache_pin(fx.c, "a", false, &err), 0);
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 1);
	ASSERT_STR_EQ(e.names[0], "a");
	ASSERT_TRUE(exists(&fx, "models/c/w.bin"));
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models"), 1);
	verify_clean(fx.c);
	teardown(&fx);
	for (int i = 0; i < 3; i++)
		free(d[i]);
}

/*
 * A model whose files are hard-linked outside the cache (mcache init materialises a pod's
 * volume that way on the same filesystem) is in use: LRU eviction passes it by.
 */
static void test_linked_outside(void)
{
	struct fixture fx;
	uint8_t *d[3];
	struct evicted e = {0};
	struct mc_gc_opts o = {.max_bytes = 2 * MIB, .evicted = on_evicted, .ctx = &e};
	struct mc_gc_result r;
	struct mc_err err;
	char src[1024], dst[1024];

	setup(&fx);
	mc_err_init(&err);
	three_models(&fx, d);
	/* a is the least recently used; link its file outside, as a materialised target. */
	snprintf(src, sizeof(src), "%s/models/a/w.bin", fx.dir);
	snprintf(dst, sizeof(dst), "%s.outside", fx.dir);
	ASSERT_EQ(link(src, dst), 0);
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 1);
	ASSERT_STR_NE(e.names[0], "a");
	ASSERT_TRUE(exists(&fx, "models/a/w.bin"));
	ASSERT_TRUE(r.budget_met);
	/* Unlinked outside, it is an ordinary LRU candidate again. */
	ASSERT_EQ(unlink(dst), 0);
	e.n = 0;
	o.max_bytes = MIB;
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 1);
	ASSERT_STR_EQ(e.names[0], "a");
	verify_clean(fx.c);
	teardown(&fx);
	for (int i = 0; i < 3; i++)
		free(d[i]);
}

/* A dry run reports what a real one would do and changes neither the index nor the disk. */
static void test_dry_run(void)
{
	struct fixture fx;
	uint8_t *d[3], *a2 = tc_bytes(MIB, 30);
	const struct tc_obj newer[] = {{"http://o/c/w.bin", "w.bin", a2, MIB, "\"new\""}};
	struct evicted e = {0};
	struct mc_gc_opts o = {.max_bytes = MIB, .dry_run = true, .evicted = on_evicted, .ctx = &e};
	struct mc_gc_result r, real;
	struct mc_err err;

	setup(&fx);
	mc_err_init(&err);
	three_models(&fx, d);
	tc_pull(fx.c, "c", newer, 1); /* c's first version is now garbage */
	put_file(&fx, "tmp/4242.part", 4096, 0600);
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 2);
	ASSERT_STR_EQ(e.names[0], "a");
	ASSERT_STR_EQ(e.names[1], "b");
	ASSERT_UINT_EQ(r.versions, 1);
	ASSERT_UINT_EQ(r.tmp_files, 1);
	ASSERT_UINT_EQ(r.models, 2);
	ASSERT_UINT_EQ(r.blobs, 3);
	ASSERT_UINT_EQ(r.bytes_after, MIB);
	ASSERT_TRUE(r.budget_met);
	/* Nothing changed. */
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models"), 3);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM versions"), 4);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM blobs"), 4);
	ASSERT_TRUE(exists(&fx, "tmp/4242.part"));
	ASSERT_TRUE(exists(&fx, "models/a/w.bin"));
	ASSERT_FALSE(sqlite3_get_autocommit(fx.c->db) == 0); /* no transaction left open */
	/* The real run does exactly that. */
	e.n = 0;
	o.dry_run = false;
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &real, &err), 0);
	ASSERT_EQ(e.n, 2);
	ASSERT_UINT_EQ(real.bytes_after, r.bytes_after);
	ASSERT_UINT_EQ(real.bytes_freed, r.bytes_freed);
	ASSERT_UINT_EQ(real.blobs, r.blobs);
	ASSERT_FALSE(exists(&fx, "tmp/4242.part"));
	verify_clean(fx.c);
	teardown(&fx);
	for (int i = 0; i < 3; i++)
		free(d[i]);
	free(a2);
}

/*
 * A model another live process is pulling (a second cache handle: a second session) is never
 * evicted, and rm refuses it; once that process is gone (its version's lease dead), both work.
 */
static void test_leased(void)
{
	struct fixture fx;
	uint8_t *d[3], *n = tc_bytes(2 * MIB, 40);
	const struct tc_obj on = {"http://o/b/next.bin", "next.bin", n, 2 * MIB, "\"n\""};
	struct mc_cache *c2 = NULL;
	struct evicted e = {0};
	struct mc_gc_opts o = {.max_bytes = 1, .evicted = on_evicted, .ctx = &e};
	struct mc_gc_result r;
	struct mc_pull p;
	struct mc_err err;
	char q[160];

	setup(&fx);
	mc_err_init(&err);
	three_models(&fx, d);
	ASSERT_EQ(mc_cache_open(&c2, fx.dir, &err), 0);
	/* c2 pulls a new version of b: one block durable, its temp file open and locked. */
	ASSERT_EQ(mc_pull_begin(&p, c2, "b", on.url, 1, &err), 0);
	tc_file_set(&p, 0, &on);
	tc_probe(&p.file[0].f, &on);
	tc_open(&p, &p.file[0].f);
	tc_write(&p, &p.file[0].f, &on, 0, 1);

	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_EQ(e.n, 2);
	ASSERT_STR_EQ(e.names[0], "a");
	ASSERT_STR_EQ(e.names[1], "c");
	ASSERT_FALSE(r.budget_met);
	ASSERT_TRUE(exists(&fx, "models/b/w.bin"));
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM downloads"), 1);
	snprintf(q, sizeof(q), "tmp/%s", p.file[0].tmp_name);
	ASSERT_TRUE(exists(&fx, q));
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_rm(fx.c, "b", &r, &err), -EBUSY);
	ASSERT_STR_EQ(err.msg, "model 'b' is being pulled by another process");
	ASSERT_TRUE(exists(&fx, "models/b/w.bin"));

	/* c2 finishes: its new version is current, and the old one is garbage. */
	tc_finish(&p, &p.file[0].f, &on);
	tc_unprobe(&p.file[0].f);
	mc_err_init(&err);
	ASSERT_EQ(mc_pull_publish(&p, &err), 0);
	mc_pull_release(&p);
	mc_cache_close(c2);
	sql(fx.c, "UPDATE versions SET completed_at = completed_at - 660"); /* past the grace */
	e.n = 0;
	o.max_bytes = 0;
	ASSERT_EQ(mc_cache_gc(fx.c, &o, &r, &err), 0);
	ASSERT_UINT_EQ(r.versions, 1);
	ASSERT_UINT_EQ(r.blobs, 1);
	ASSERT_UINT_EQ(r.bytes_after, 2 * MIB);
	verify_clean(fx.c);
	ASSERT_EQ(mc_cache_rm(fx.c, "b", &r, &err), 0);
	ASSERT_UINT_EQ(r.bytes_freed, 2 * MIB);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models"), 0);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM blobs"), 0);
	teardown(&fx);
	for (int i = 0; i < 3; i++)
		free(d[i]);
	free(n);
}

/* rm: shared blobs stay with the model that still uses them; unknown names are not found. */
static void test_rm(void)
{
	struct fixture fx;
	uint8_t *s = tc_bytes(MIB, 50), *a = tc_bytes(1234, 51);
	const struct tc_obj ma[] = {{"http://o/a/s", "s", s, MIB, "\"s\""},
				    {"http://o/a/a", "a", a, 1234, "\"a\""}};
	const struct tc_obj mb[] = {{"http://o/b/s", "s", s, MIB, "\"s\""}};
	char rel[256];
	struct mc_gc_result r;
	struct mc_err err;

	setup(&fx);
	mc_err_init(&err);
	tc_pull(fx.c, "a", ma, 2);
	tc_pull(fx.c, "b", mb, 1);
	ASSERT_EQ(mc_cache_pin(fx.c, "a", true, &err), 0);
	ASSERT_EQ(mc_cache_rm(fx.c, "a", &r, &err), 0); /* pinned: rm still removes it */
	ASSERT_UINT_EQ(r.models, 1);
	ASSERT_UINT_EQ(r.blobs, 1);
	ASSERT_UINT_EQ(r.bytes_freed, 1234);
	ASSERT_FALSE(exists(&fx, "models/a"));
	ASSERT_FALSE(exists(&fx, "trees/a"));
	blob_rel(s, MIB, rel, sizeof(rel));
	ASSERT_TRUE(exists(&fx, rel));
	blob_rel(a, 1234, rel, sizeof(rel));
	ASSERT_FALSE(exists(&fx, rel));
	verify_clean(fx.c);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_rm(fx.c, "a", &r, &err), MC_E_NOTFOUND);
	ASSERT_STR_EQ(err.msg, "no model 'a' in the cache");
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_pin(fx.c, "nope", true, &err), MC_E_NOTFOUND);
	ASSERT_STR_EQ(err.msg, "no model 'nope' in the cache");
	teardown(&fx);
	free(s);
	free(a);
}

/* The budget: none by default, saved in the index, overridden by $MCACHE_MAX_BYTES. */
static void test_budget(void)
{
	struct fixture fx;
	struct mc_err err;
	uint64_t b = 1;

	setup(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_budget(fx.c, &b, &err), 0);
	ASSERT_UINT_EQ(b, 0);
	ASSERT_EQ(mc_cache_set_budget(fx.c, 5 * MIB, &err), 0);
	ASSERT_EQ(mc_cache_budget(fx.c, &b, &err), 0);
	ASSERT_UINT_EQ(b, 5 * MIB);
	ASSERT_EQ(setenv("MCACHE_MAX_BYTES", "1G", 1), 0);
	ASSERT_EQ(mc_cache_budget(fx.c, &b, &err), 0);
	ASSERT_UINT_EQ(b, 1ull << 30);
	ASSERT_EQ(setenv("MCACHE_MAX_BYTES", "lots", 1), 0);
	ASSERT_EQ(mc_cache_budget(fx.c, &b, &err), MC_E_USAGE);
	ASSERT_NOT_NULL(strstr(err.msg, "MCACHE_MAX_BYTES 'lots'"));
	ASSERT_EQ(setenv("MCACHE_MAX_BYTES", "", 1), 0); /* empty: as if unset */
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_budget(fx.c, &b, &err), 0);
	ASSERT_UINT_EQ(b, 5 * MIB);
	unsetenv("MCACHE_MAX_BYTES");
	ASSERT_EQ(mc_cache_set_budget(fx.c, 0, &err), 0);
	ASSERT_EQ(mc_cache_budget(fx.c, &b, &err), 0);
	ASSERT_UINT_EQ(b, 0);
	teardown(&fx);
}

/*
 * After a pull with a budget, gc keeps the model just pulled even when it is the least recently
 * used; without a budget it does not run at all. Listing the cache never counts as a use.
 */
static int count_models(void *ctx, const struct mc_model_info *m)
{
	(void)m;
	++*(int *)ctx;
	return 0;
}

static void test_after_pull(void)
{
	struct fixture fx;
	uint8_t *d[3];
	struct mc_pull_result res;
	struct mc_err err;
	int n = 0;

	setup(&fx);
	mc_err_init(&err);
	three_models(&fx, d);
	memset(&res, 0, sizeof(res));
	snprintf(res.name, sizeof(res.name), "a");
	mc_gc_after_pull(fx.c, &res);
	ASSERT_FALSE(res.gc_ran);
	ASSERT_EQ(mc_cache_list(fx.c, count_models, &n, &err), 0);
	ASSERT_EQ(n, 3);
	ASSERT_EQ(tc_query(fx.c, "SELECT last_used_at FROM models WHERE name = 'a'"), 100);
	ASSERT_EQ(setenv("MCACHE_MAX_BYTES", "2M", 1), 0);
	mc_gc_after_pull(fx.c, &res);
	unsetenv("MCACHE_MAX_BYTES");
	ASSERT_TRUE(res.gc_ran);
	ASSERT_STR_EQ(res.gc_error, "");
	ASSERT_UINT_EQ(res.gc.models, 1);
	ASSERT_TRUE(res.gc.budget_met);
	ASSERT_TRUE(exists(&fx, "models/a/w.bin"));
	ASSERT_FALSE(exists(&fx, "models/b"));
	ASSERT_TRUE(exists(&fx, "models/c/w.bin"));
	/* A broken budget is reported, not fatal. */
	ASSERT_EQ(setenv("MCACHE_MAX_BYTES", "x", 1), 0);
	memset(&res, 0, sizeof(res));
	mc_gc_after_pull(fx.c, &res);
	unsetenv("MCACHE_MAX_BYTES");
	ASSERT_FALSE(res.gc_ran);
	ASSERT_NOT_NULL(strstr(res.gc_error, "MCACHE_MAX_BYTES"));
	teardown(&fx);
	for (int i = 0; i < 3; i++)
		free(d[i]);
}

/* A download larger than the disk could ever hold fails at once, and evicts nothing for it. */
static void test_hopeless_shortfall(void)
{
	struct fixture fx;
	uint8_t *d[3];
	struct statvfs vfs;
	struct mc_err err;
	uint64_t size;
	int fd = -1;

	setup(&fx);
	three_models(&fx, d);
	ASSERT_EQ(statvfs(fx.dir, &vfs), 0);
	size = (uint64_t)vfs.f_bavail * vfs.f_frsize + (1ull << 30);
	mc_err_init(&err);
	ASSERT_EQ(mc_gc_tmp_create(fx.c, "c", "900.part", size, "http://o/huge", &fd, &err),
		  -ENOSPC);
	ASSERT_NOT_NULL(strstr(err.msg, "not enough space"));
	ASSERT_EQ(fd, -1);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models"), 3);
	ASSERT_FALSE(exists(&fx, "tmp/900.part"));
	/* With room, it is a plain create. */
	ASSERT_EQ(mc_gc_tmp_create(fx.c, "c", "901.part", 4096, "http://o/small", &fd, &err), 0);
	ASSERT_GE(fd, 0);
	close(fd);
	teardown(&fx);
	for (int i = 0; i < 3; i++)
		free(d[i]);
}

int main(void)
{
	int fds = tc_open_fds();

	MC_RUN(test_usage_counts_shared_once);
	MC_RUN(test_old_versions);
	MC_RUN(test_orphans);
	MC_RUN(test_downloads);
	MC_RUN(test_lru);
	MC_RUN(test_linked_outside);
	MC_RUN(test_dry_run);
	MC_RUN(test_leased);
	MC_RUN(test_rm);
	MC_RUN(test_budget);
	MC_RUN(test_after_pull);
	MC_RUN(test_hopeless_shortfall);
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
