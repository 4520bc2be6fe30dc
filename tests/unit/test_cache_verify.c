/*
 * Unit tests of mc_cache_verify(): a clean cache has no findings (fast and deep); each kind of
 * damage is reported with the exact expected and actual values (a flipped byte found only by
 * the deep check, a truncated blob, a missing or unlinked tree entry, a writable blob, a wrong
 * or missing models/ symlink, orphans); an unknown name is MC_E_NOTFOUND; and verify changes
 * neither the disk nor the index. Then the audit: stray files, directories and symlinks in a
 * tree, a models/ link whose tree is gone, orphan links and trees; deep reading in several
 * threads agrees with one thread and with mc_digest_file() (a 65 MiB file in two parts, a byte
 * flipped in the second); the SHA-256 an origin published; a broken safetensors file found
 * despite its matching digest; MC_VERIFY_RECORD and what list and metrics read back; the pull
 * counters.
 */
#include "test_cache.h"

#include <sys/time.h>

#include "mc_banned.h"

#define MIB (1024u * 1024u)

#define MAXF 12

struct found {
	int n;
	char model[MAXF][32];
	char path[MAXF][256];
	char kind[MAXF][32];
	char expected[MAXF][256];
	char actual[MAXF][256];
};

static void on_finding(void *ctx, const struct mc_finding *f)
{
	struct found *s = ctx;

	if (s->n >= MAXF)
		MC_TEST_FAILED_("too many findings (last: %s %s)", f->kind, f->path);
	snprintf(s->model[s->n], 32, "%s", f->model);
	snprintf(s->path[s->n], 256, "%s", f->path);
	snprintf(s->kind[s->n], 32, "%s", f->kind);
	snprintf(s->expected[s->n], 256, "%s", f->expected);
	snprintf(s->actual[s->n], 256, "%s", f->actual);
	s->n++;
}

/* The index of the finding of @kind for @path, or fails. */
static int find(const struct found *s, const char *kind, const char *path)
{
	for (int i = 0; i < s->n; i++)
		if (!strcmp(s->kind[i], kind) && !strcmp(s->path[i], path))
			return i;
	MC_TEST_FAILED_("no '%s' finding for '%s' among %d", kind, path, s->n);
	return -1;
}

struct fixture {
	char *dir;
	struct mc_cache *c;
	uint8_t *a, *b;
	struct tc_obj o[2];
	int64_t version;
	char hex_a[MC_DIGEST_HEX], hex_b[MC_DIGEST_HEX];
	char blob_a[1024], blob_b[1024], tree_a[1024];
};

/* A cache with model "m": a.bin (2.5 MiB) and sub/b.bin (10 KiB). */
static void setup(struct fixture *fx)
{
	struct mc_err err;

	memset(fx, 0, sizeof(*fx));
	mc_err_init(&err);
	fx->dir = tc_mkdtemp();
	ASSERT_EQ(mc_cache_open(&fx->c, fx->dir, &err), 0);
	fx->a = tc_bytes(5 * MIB / 2, 21);
	fx->b = tc_bytes(10240, 22);
	fx->o[0] = (struct tc_obj){"http://origin/m/a.bin", "a.bin", fx->a, 5 * MIB / 2, "\"a\""};
	fx->o[1] = (struct tc_obj){"http://origin/m/b.bin", "sub/b.bin", fx->b, 10240, "\"b\""};
	fx->version = tc_pull(fx->c, "m", fx->o, 2);
	tc_digest_hex(fx->a, fx->o[0].size, fx->hex_a);
	tc_digest_hex(fx->b, fx->o[1].size, fx->hex_b);
	snprintf(fx->blob_a, sizeof(fx->blob_a), "%s/blobs/%.2s/%s", fx->dir, fx->hex_a, fx->hex_a);
	snprintf(fx->blob_b, sizeof(fx->blob_b), "%s/blobs/%.2s/%s", fx->dir, fx->hex_b, fx->hex_b);
	snprintf(fx->tree_a, sizeof(fx->tree_a), "%s/trees/m/%lld/a.bin", fx->dir,
		 (long long)fx->version);
}

static void teardown(struct fixture *fx)
{
	mc_cache_close(fx->c);
	tc_rm_rf(fx->dir);
	free(fx->dir);
	free(fx->a);
	free(fx->b);
}

/* Runs verify on @names (all when NULL) and returns what it found. */
static struct found run(struct fixture *fx, const char *name, unsigned flags)
{
	const char *names[1] = {name};
	struct found s = {0};
	struct mc_err err;
	uint64_t n = 99;

	mc_err_init(&err);
	if (mc_cache_verify(fx->c, names, name ? 1 : 0, flags, on_finding, &s, &n, &err))
		MC_TEST_FAILED_("verify: %s", err.msg);
	ASSERT_UINT_EQ(n, s.n);
	return s;
}

static void test_clean(void)
{
	struct fixture fx;
	struct found s;

	setup(&fx);
	s = run(&fx, NULL, 0);
	ASSERT_EQ(s.n, 0);
	s = run(&fx, NULL, MC_VERIFY_DEEP);
	ASSERT_EQ(s.n, 0);
	s = run(&fx, "m", MC_VERIFY_DEEP);
	ASSERT_EQ(s.n, 0);
	teardown(&fx);
}

/* A flipped byte with its mtime put back: only the deep check can see it. */
static void test_flipped_byte(void)
{
	struct fixture fx;
	struct stat st;
	struct timespec ts[2];
	uint8_t byte;
	struct found s;
	int fd;

	setup(&fx);
	ASSERT_EQ(stat(fx.blob_a, &st), 0);
	ASSERT_EQ(chmod(fx.blob_a, 0644), 0);
	fd = open(fx.blob_a, O_RDWR | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(pread(fd, &byte, 1, 1234567), 1);
	byte ^= 0x40;
	ASSERT_EQ(pwrite(fd, &byte, 1, 1234567), 1);
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	ASSERT_EQ(futimens(fd, ts), 0);
	close(fd);
	ASSERT_EQ(chmod(fx.blob_a, 0444), 0);

	s = run(&fx, NULL, 0);
	ASSERT_EQ(s.n, 0);
	s = run(&fx, "m", MC_VERIFY_DEEP);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "digest");
	ASSERT_STR_EQ(s.model[0], "m");
	ASSERT_STR_EQ(s.path[0], "a.bin");
	ASSERT_STR_EQ(s.expected[0], fx.hex_a);
	ASSERT_EQ(strlen(s.actual[0]), 32);
	ASSERT_STR_NE(s.actual[0], fx.hex_a);
	teardown(&fx);
}

static void test_truncated(void)
{
	struct fixture fx;
	struct found s;

	setup(&fx);
	tc_truncate(fx.blob_b, 5000);
	s = run(&fx, NULL, MC_VERIFY_DEEP);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "size");
	ASSERT_STR_EQ(s.path[0], "sub/b.bin");
	ASSERT_STR_EQ(s.expected[0], "10240");
	ASSERT_STR_EQ(s.actual[0], "5000");
	teardown(&fx);
}

/* A blob rewritten (new mtime, same size) is "changed" in the fast check. */
static void test_changed(void)
{
	struct fixture fx;
	struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 5}};
	char want[128];
	struct stat st;
	struct found s;

	setup(&fx);
	ASSERT_EQ(stat(fx.blob_b, &st), 0);
	ASSERT_EQ(utimensat(AT_FDCWD, fx.blob_b, ts, 0), 0);
	s = run(&fx, NULL, 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "changed");
	snprintf(want, sizeof(want), "inode %llu mtime_ns %lld", (unsigned long long)st.st_ino,
		 (long long)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	ASSERT_STR_EQ(s.expected[0], want);
	snprintf(want, sizeof(want), "inode %llu mtime_ns 1000000000000000005",
		 (unsigned long long)st.st_ino);
	ASSERT_STR_EQ(s.actual[0], want);
	teardown(&fx);
}

static void test_missing_tree_entry(void)
{
	struct fixture fx;
	char want[1200];
	struct found s;

	setup(&fx);
	ASSERT_EQ(unlink(fx.tree_a), 0);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "missing");
	ASSERT_STR_EQ(s.path[0], "a.bin");
	snprintf(want, sizeof(want), "trees/m/%lld/a.bin", (long long)fx.version);
	ASSERT_STR_EQ(s.expected[0], want);
	ASSERT_STR_EQ(s.actual[0], "");
	teardown(&fx);
}

static void test_missing_blob(void)
{
	struct fixture fx;
	char want[128];
	struct found s;

	setup(&fx);
	ASSERT_EQ(unlink(fx.blob_b), 0);
	s = run(&fx, "m", MC_VERIFY_DEEP);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "missing");
	ASSERT_STR_EQ(s.path[0], "sub/b.bin");
	snprintf(want, sizeof(want), "blobs/%.2s/%s", fx.hex_b, fx.hex_b);
	ASSERT_STR_EQ(s.expected[0], want);
	teardown(&fx);
}

/* A tree entry replaced by a copy: same bytes, but no longer the blob. */
static void test_not_linked(void)
{
	struct fixture fx;
	struct stat bst, tst;
	char want[64];
	uint8_t *data;
	size_t len;
	struct found s;
	int fd;

	setup(&fx);
	data = tc_read_file(fx.tree_a, &len);
	ASSERT_EQ(unlink(fx.tree_a), 0);
	fd = open(fx.tree_a, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, data, len), (ssize_t)len);
	close(fd);
	free(data);
	ASSERT_EQ(stat(fx.blob_a, &bst), 0);
	ASSERT_EQ(stat(fx.tree_a, &tst), 0);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "not-linked");
	snprintf(want, sizeof(want), "inode %llu", (unsigned long long)bst.st_ino);
	ASSERT_STR_EQ(s.expected[0], want);
	snprintf(want, sizeof(want), "inode %llu", (unsigned long long)tst.st_ino);
	ASSERT_STR_EQ(s.actual[0], want);
	teardown(&fx);
}

static void test_writable(void)
{
	struct fixture fx;
	struct found s;

	setup(&fx);
	ASSERT_EQ(chmod(fx.blob_a, 0644), 0);
	s = run(&fx, NULL, 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "not-readonly");
	ASSERT_STR_EQ(s.expected[0], "0444");
	ASSERT_STR_EQ(s.actual[0], "0644");
	teardown(&fx);
}

static void test_symlink(void)
{
	struct fixture fx;
	char link[1024], want[64];
	struct found s;

	setup(&fx);
	snprintf(link, sizeof(link), "%s/models/m", fx.dir);
	snprintf(want, sizeof(want), "../trees/m/%lld", (long long)fx.version);
	ASSERT_EQ(unlink(link), 0);
	ASSERT_EQ(symlink("../trees/m/999", link), 0);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "not-linked");
	ASSERT_STR_EQ(s.path[0], "models/m");
	ASSERT_STR_EQ(s.expected[0], want);
	ASSERT_STR_EQ(s.actual[0], "../trees/m/999");
	ASSERT_EQ(unlink(link), 0);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "missing");
	ASSERT_STR_EQ(s.path[0], "models/m");
	teardown(&fx);
}

/* Files the index does not know are reported for the whole cache only. */
static void test_orphans(void)
{
	struct fixture fx;
	char path[1024];
	struct found s;
	int fd;

	setup(&fx);
	snprintf(path, sizeof(path), "%s/blobs/ff", fx.dir);
	ASSERT_EQ(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/blobs/ff/ffffffffffffffffffffffffffffffff", fx.dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
	ASSERT_GE(fd, 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/tmp/123.part", fx.dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ASSERT_GE(fd, 0);
	close(fd);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 0);
	s = run(&fx, NULL, 0);
	ASSERT_EQ(s.n, 2);
	ASSERT_STR_EQ(s.kind[0], "orphan-blob");
	ASSERT_STR_EQ(s.model[0], "");
	ASSERT_STR_EQ(s.path[0], "blobs/ff/ffffffffffffffffffffffffffffffff");
	ASSERT_STR_EQ(s.kind[1], "orphan-tmp");
	ASSERT_STR_EQ(s.path[1], "tmp/123.part");
	teardown(&fx);
}

static void test_unknown_name(void)
{
	struct fixture fx;
	const char *names[] = {"m", "nope"};
	struct found s = {0};
	struct mc_err err;
	uint64_t n = 7;

	setup(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_verify(fx.c, names, 2, 0, on_finding, &s, &n, &err), MC_E_NOTFOUND);
	ASSERT_STR_EQ(err.msg, "no model 'nope' in the cache");
	ASSERT_EQ(s.n, 0);
	ASSERT_UINT_EQ(n, 0);
	teardown(&fx);
}

/* Verify writes nothing: the index files and the directories keep their bytes and times. */
static void test_read_only(void)
{
	struct fixture fx;
	const char *const files[] = {"index.db", "index.db-wal", "blobs",
				     "trees/m",	 "models",	 "tmp"};
	struct stat before[6], after[6];
	char path[1024];
	uint8_t *db1, *db2;
	size_t n1, n2;
	struct found s;

	setup(&fx);
	tc_truncate(fx.blob_b, 10);
	snprintf(path, sizeof(path), "%s/index.db", fx.dir);
	db1 = tc_read_file(path, &n1);
	for (size_t i = 0; i < 6; i++) {
		snprintf(path, sizeof(path), "%s/%s", fx.dir, files[i]);
		ASSERT_EQ(stat(path, &before[i]), 0);
	}
	s = run(&fx, NULL, MC_VERIFY_DEEP);
	ASSERT_EQ(s.n, 1);
	for (size_t i = 0; i < 6; i++) {
		snprintf(path, sizeof(path), "%s/%s", fx.dir, files[i]);
		ASSERT_EQ(stat(path, &after[i]), 0);
		ASSERT_UINT_EQ(after[i].st_size, before[i].st_size);
		ASSERT_EQ(after[i].st_mtim.tv_sec, before[i].st_mtim.tv_sec);
		ASSERT_EQ(after[i].st_mtim.tv_nsec, before[i].st_mtim.tv_nsec);
	}
	snprintf(path, sizeof(path), "%s/index.db", fx.dir);
	db2 = tc_read_file(path, &n2);
	ASSERT_UINT_EQ(n2, n1);
	ASSERT_MEM_EQ(db2, db1, n1);
	free(db1);
	free(db2);
	teardown(&fx);
}

/* Files, directories and symlinks in the tree that the index does not list. */
static void test_strays(void)
{
	struct fixture fx;
	char path[1200], tree[1100];
	struct found s;
	int fd;

	setup(&fx);
	snprintf(tree, sizeof(tree), "%s/trees/m/%lld", fx.dir, (long long)fx.version);
	snprintf(path, sizeof(path), "%s/extra.bin", tree);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, "12345", 5), 5);
	close(fd);
	snprintf(path, sizeof(path), "%s/sub/junk", tree);
	ASSERT_EQ(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/sub/gone", tree);
	ASSERT_EQ(symlink("nowhere", path), 0);
	snprintf(path, sizeof(path), "%s/alias", tree);
	ASSERT_EQ(symlink("a.bin", path), 0);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 4);
	ASSERT_STR_EQ(s.actual[find(&s, "stray", "extra.bin")], "file of 5 bytes");
	ASSERT_STR_EQ(s.actual[find(&s, "stray", "sub/junk")], "directory");
	ASSERT_STR_EQ(s.actual[find(&s, "dangling-link", "sub/gone")], "symlink to nowhere");
	ASSERT_STR_EQ(s.actual[find(&s, "stray", "alias")], "symlink to a.bin");
	ASSERT_STR_EQ(s.model[find(&s, "stray", "alias")], "m");
	teardown(&fx);
}

/* models/m still points at its tree, which is gone: the link dangles, every file is missing. */
static void test_dangling_model_link(void)
{
	struct fixture fx;
	char path[1100], want[64];
	struct found s;

	setup(&fx);
	snprintf(path, sizeof(path), "%s/trees/m/%lld", fx.dir, (long long)fx.version);
	tc_rm_rf(path);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 3);
	snprintf(want, sizeof(want), "../trees/m/%lld", (long long)fx.version);
	ASSERT_STR_EQ(s.expected[find(&s, "dangling-link", "models/m")], want);
	find(&s, "missing", "a.bin");
	find(&s, "missing", "sub/b.bin");
	teardown(&fx);
}

/* Entries of models/ and trees/ that no model or version owns; temp names are left alone. */
static void test_orphan_links_and_trees(void)
{
	struct fixture fx;
	char path[1100];
	struct found s;

	setup(&fx);
	snprintf(path, sizeof(path), "%s/models/zz", fx.dir);
	ASSERT_EQ(symlink("../trees/zz/1", path), 0);
	snprintf(path, sizeof(path), "%s/models/.m.tmp", fx.dir);
	ASSERT_EQ(symlink("../trees/m/1", path), 0);
	snprintf(path, sizeof(path), "%s/trees/zz", fx.dir);
	ASSERT_EQ(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/trees/m/999", fx.dir);
	ASSERT_EQ(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/trees/m/notaversion", fx.dir);
	ASSERT_EQ(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/trees/m/.%lld.json.1.tmp", fx.dir, (long long)fx.version);
	ASSERT_EQ(mkdir(path, 0755), 0);
	s = run(&fx, "m", 0);
	ASSERT_EQ(s.n, 0);
	s = run(&fx, NULL, 0);
	ASSERT_EQ(s.n, 4);
	ASSERT_STR_EQ(s.actual[find(&s, "orphan-link", "models/zz")], "../trees/zz/1");
	ASSERT_STR_EQ(s.model[find(&s, "orphan-link", "models/zz")], "");
	find(&s, "orphan-tree", "trees/zz");
	find(&s, "orphan-tree", "trees/m/999");
	find(&s, "orphan-tree", "trees/m/notaversion");
	teardown(&fx);
}

/* Runs verify2 on model @name with @threads deep threads. */
static struct found run2(struct mc_cache *c, const char *name, unsigned flags, unsigned threads,
			 struct mc_verify_result *res)
{
	const char *names[1] = {name};
	struct mc_verify_opts o = {names, name ? 1 : 0, flags, threads, on_finding, NULL};
	struct found s = {0};
	struct mc_err err;

	o.ctx = &s;
	mc_err_init(&err);
	if (mc_cache_verify2(c, &o, res, &err))
		MC_TEST_FAILED_("verify: %s", err.msg);
	ASSERT_UINT_EQ(res->findings, s.n);
	return s;
}

/*
 * A file of more than one 64 MiB part, read by several threads: the same digest as one thread
 * and as mc_digest_file(); a byte flipped in the second part is found either way.
 */
static void test_deep_parallel(void)
{
	const uint64_t size = 65 * MIB + 5;
	struct mc_verify_result r1, r3;
	uint8_t d1[MC_DIGEST_LEN], *blocks, *buf, *data = tc_bytes(size, 77);
	struct tc_obj o = {"http://origin/big/w.bin", "w.bin", data, size, "\"w\""};
	char *dir = tc_mkdtemp(), blob[1200], hex[MC_DIGEST_HEX];
	struct timespec ts[2];
	struct mc_cache *c;
	struct mc_err err;
	struct found s1, s3;
	struct stat st;
	uint8_t byte;
	int fd;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, dir, &err), 0);
	tc_pull(c, "big", &o, 1);
	tc_digest_hex(data, size, hex);
	snprintf(blob, sizeof(blob), "%s/blobs/%.2s/%s", dir, hex, hex);
	s1 = run2(c, "big", MC_VERIFY_DEEP, 1, &r1);
	s3 = run2(c, "big", MC_VERIFY_DEEP, 3, &r3);
	ASSERT_EQ(s1.n, 0);
	ASSERT_EQ(s3.n, 0);
	ASSERT_UINT_EQ(r1.bytes_hashed, size);
	ASSERT_UINT_EQ(r3.bytes_hashed, size);
	ASSERT_EQ(r1.threads, 1);
	ASSERT_EQ(r3.threads, 2); /* two parts: never more threads than jobs */
	ASSERT_UINT_EQ(r3.files, 1);

	/* mc_digest_blocks() in odd parts and read sizes agrees with mc_digest_file(). */
	fd = open(blob, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(mc_digest_file(fd, size, d1), 0);
	blocks = malloc(66 * MC_DIGEST_LEN);
	buf = malloc(3 * MIB);
	ASSERT_EQ(mc_digest_blocks(fd, size, 0, 7, blocks, NULL, buf, 3 * MIB), 0);
	ASSERT_EQ(mc_digest_blocks(fd, size, 7, 59, blocks + 7 * MC_DIGEST_LEN, NULL, buf, MIB), 0);
	ASSERT_EQ(mc_digest_blocks(fd, size, 66, 0, blocks + 66 * MC_DIGEST_LEN, NULL, buf, MIB),
		  0);
	{
		uint8_t d2[MC_DIGEST_LEN];

		mc_digest_combine(blocks, 66, size, d2);
		ASSERT_MEM_EQ(d2, d1, MC_DIGEST_LEN);
	}
	ASSERT_EQ(mc_digest_blocks(fd, size, 60, 7, blocks, NULL, buf, MIB), -EINVAL);
	ASSERT_EQ(mc_digest_blocks(fd, size, 0, 66, blocks, NULL, buf, MIB + 1), -EINVAL);
	{
		uint8_t sum[32];

		ASSERT_EQ(mc_digest_blocks(fd, size, 1, 65, blocks, sum, buf, MIB), -EINVAL);
	}
	close(fd);

	ASSERT_EQ(stat(blob, &st), 0);
	ASSERT_EQ(chmod(blob, 0644), 0);
	fd = open(blob, O_RDWR | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(pread(fd, &byte, 1, 64 * MIB + 3), 1);
	byte ^= 1;
	ASSERT_EQ(pwrite(fd, &byte, 1, 64 * MIB + 3), 1);
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	ASSERT_EQ(futimens(fd, ts), 0);
	close(fd);
	ASSERT_EQ(chmod(blob, 0444), 0);
	s1 = run2(c, "big", MC_VERIFY_DEEP, 1, &r1);
	s3 = run2(c, "big", MC_VERIFY_DEEP, 4, &r3);
	ASSERT_EQ(s1.n, 1);
	ASSERT_EQ(s3.n, 1);
	ASSERT_STR_EQ(s1.kind[0], "digest");
	ASSERT_STR_EQ(s1.expected[0], hex);
	ASSERT_STR_EQ(s3.actual[0], s1.actual[0]);
	ASSERT_STR_NE(s3.actual[0], hex);
	free(blocks);
	free(buf);
	free(data);
	mc_cache_close(c);
	tc_rm_rf(dir);
	free(dir);
}

/* The SHA-256 an origin published is checked by deep verify, from the same reads. */
static void test_sha256(void)
{
	struct mc_verify_result r;
	uint8_t sum[32];
	char hex[65], sql[256];
	struct fixture fx;
	struct found s;
	int fd;

	setup(&fx);
	fd = open(fx.blob_a, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(mc_sha256_file(fd, fx.o[0].size, sum), 0);
	close(fd);
	mc_hex(sum, 32, hex);
	/* Published in capitals: hex case does not matter. */
	snprintf(sql, sizeof(sql), "UPDATE files SET sha256 = upper('%s') WHERE path = 'a.bin'",
		 hex);
	ASSERT_EQ(sqlite3_exec(fx.c->db, sql, NULL, NULL, NULL), SQLITE_OK);
	s = run2(fx.c, "m", MC_VERIFY_DEEP, 2, &r);
	ASSERT_EQ(s.n, 0);
	s = run2(fx.c, "m", 0, 2, &r);
	ASSERT_UINT_EQ(r.bytes_hashed, 0);
	ASSERT_EQ(sqlite3_exec(fx.c->db,
			       "UPDATE files SET sha256 = '" /* the SHA-256 of "" */
			       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'"
			       " WHERE path = 'a.bin'",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	s = run2(fx.c, "m", MC_VERIFY_DEEP, 2, &r);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "sha256");
	ASSERT_STR_EQ(s.path[0], "a.bin");
	ASSERT_STR_EQ(s.expected[0],
		      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	ASSERT_STR_EQ(s.actual[0], hex);
	teardown(&fx);
}

/* A safetensors file with @header, padded with @data bytes; *len gets its size. */
static uint8_t *st_file(const char *header, size_t data, uint64_t *len)
{
	size_t n = strlen(header);
	uint8_t *p = calloc(1, 8 + n + data);

	ASSERT_NOT_NULL(p);
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)((uint64_t)n >> (8 * i));
	memcpy(p + 8, header, n);
	*len = 8 + n + data;
	return p;
}

/*
 * A structurally broken safetensors file whose digest is what the origin served: only the deep
 * check reports it, with the tensor named. A valid one and a non-safetensors name are quiet.
 */
static void test_safetensors(void)
{
	static const char good[] =
	    "{\"w\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]}}";
	static const char bad[] =
	    "{\"w\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[0,16]},"
	    "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}";
	struct mc_verify_result r;
	uint64_t lg, lb;
	uint8_t *g = st_file(good, 16, &lg), *b = st_file(bad, 20, &lb);
	struct tc_obj o[3] = {
	    {"http://origin/s/good.safetensors", "good.safetensors", g, lg, "\"g\""},
	    {"http://origin/s/bad.safetensors", "bad.safetensors", b, lb, "\"b\""},
	    {"http://origin/s/bad.bin", "bad.bin", b, lb, "\"b\""},
	};
	char *dir = tc_mkdtemp();
	struct mc_cache *c;
	struct mc_err err;
	struct found s;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, dir, &err), 0);
	tc_pull(c, "st", o, 3);
	s = run2(c, "st", 0, 0, &r);
	ASSERT_EQ(s.n, 0);
	s = run2(c, "st", MC_VERIFY_DEEP, 0, &r);
	ASSERT_EQ(s.n, 1);
	ASSERT_STR_EQ(s.kind[0], "safetensors");
	ASSERT_STR_EQ(s.path[0], "bad.safetensors");
	ASSERT_STR_EQ(s.expected[0], "tensor 'b' within the 20 data bytes");
	ASSERT_STR_EQ(s.actual[0], "tensor 'b' ends at 32, 12 bytes past the end of the file");
	ASSERT_GE(r.threads, 1);
	mc_cache_close(c);
	tc_rm_rf(dir);
	free(dir);
	free(g);
	free(b);
}

static int64_t stat_of(struct mc_cache *c, const char *key)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT value FROM stats WHERE key = '%s'", key);
	return tc_query(c, sql);
}

static int list_cb(void *ctx, const struct mc_model_info *m)
{
	*(struct mc_model_info *)ctx = *m;
	return 0;
}

/*
 * MC_VERIFY_RECORD: a named check records that model only; a whole-cache check records the
 * cache-wide result too. ls (mc_cache_list) and the metrics read them back.
 */
static void test_record(void)
{
	struct mc_verify_result r;
	struct mc_model_info m;
	struct mc_metrics mt;
	struct fixture fx;
	struct mc_err err;
	int64_t now = mc_now_unix();

	setup(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_list(fx.c, list_cb, &m, &err), 0);
	ASSERT_EQ(m.verified_at, 0);
	ASSERT_EQ(m.verify_findings, -1);
	tc_truncate(fx.blob_b, 10);
	run2(fx.c, "m", MC_VERIFY_RECORD, 0, &r);
	ASSERT_GE(r.at, now);
	ASSERT_EQ(tc_query(fx.c, "SELECT verified_at FROM models WHERE name = 'm'"), r.at);
	ASSERT_EQ(tc_query(fx.c, "SELECT verify_findings FROM models WHERE name = 'm'"), 1);
	ASSERT_EQ(tc_query(fx.c, "SELECT verify_deep FROM models WHERE name = 'm'"), 0);
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM stats"), 0);
	/* An orphan counts for the cache, not for the model. */
	snprintf(fx.tree_a, sizeof(fx.tree_a), "%s/tmp/77.part", fx.dir);
	close(open(fx.tree_a, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
	run2(fx.c, NULL, MC_VERIFY_RECORD | MC_VERIFY_DEEP, 0, &r);
	ASSERT_UINT_EQ(r.findings, 2);
	ASSERT_EQ(tc_query(fx.c, "SELECT verify_findings FROM models WHERE name = 'm'"), 1);
	ASSERT_EQ(tc_query(fx.c, "SELECT verify_deep FROM models WHERE name = 'm'"), 1);
	ASSERT_EQ(stat_of(fx.c, "verified_at"), r.at);
	ASSERT_EQ(stat_of(fx.c, "verify_findings"), 2);
	ASSERT_EQ(stat_of(fx.c, "verify_deep"), 1);
	ASSERT_EQ(mc_cache_list(fx.c, list_cb, &m, &err), 0);
	ASSERT_EQ(m.verified_at, r.at);
	ASSERT_EQ(m.verify_findings, 1);
	ASSERT_TRUE(m.verify_deep);
	if (mc_cache_metrics(fx.c, &mt, &err))
		MC_TEST_FAILED_("metrics: %s", err.msg);
	ASSERT_EQ(mt.verified_at, r.at);
	ASSERT_EQ(mt.verify_findings, 2);
	ASSERT_TRUE(mt.verify_deep);
	ASSERT_UINT_EQ(mt.nmodel, 1);
	ASSERT_EQ(mt.model[0].verify_findings, 1);
	mc_cache_metrics_release(&mt);
	teardown(&fx);
}

/* The numbers behind `mcache metrics`, and the pull counters. */
static void test_metrics(void)
{
	struct mc_fetch_stats st = {.requests = 7, .retries = 2, .bytes = 1000};
	struct mc_metrics m;
	struct fixture fx;
	struct mc_err err;

	setup(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_pin(fx.c, "m", true, &err), 0);
	ASSERT_EQ(mc_cache_metrics(fx.c, &m, &err), 0);
	ASSERT_UINT_EQ(m.blobs, 2);
	ASSERT_UINT_EQ(m.blob_bytes, fx.o[0].size + fx.o[1].size);
	ASSERT_GE(m.usage_bytes, m.blob_bytes);
	ASSERT_UINT_EQ(m.models_pinned, 1);
	ASSERT_EQ(m.verified_at, 0);
	ASSERT_EQ(m.verify_findings, -1);
	ASSERT_UINT_EQ(m.pulls_ok, 0);
	ASSERT_UINT_EQ(m.nmodel, 1);
	ASSERT_STR_EQ(m.model[0].name, "m");
	ASSERT_STR_EQ(m.model[0].state, "complete");
	ASSERT_UINT_EQ(m.model[0].files, 2);
	ASSERT_UINT_EQ(m.model[0].bytes, fx.o[0].size + fx.o[1].size);
	ASSERT_TRUE(m.model[0].pinned);
	mc_cache_metrics_release(&m);
	mc_metrics_count_pull(fx.c, &st, 0);
	mc_metrics_count_pull(fx.c, &st, MC_E_ORIGIN);
	mc_metrics_count_pull(fx.c, NULL, MC_E_INTERRUPTED);
	mc_metrics_count_pull(fx.c, &st, MC_E_USAGE); /* not a pull that ran */
	ASSERT_EQ(mc_cache_metrics(fx.c, &m, &err), 0);
	ASSERT_UINT_EQ(m.pulls_ok, 1);
	ASSERT_UINT_EQ(m.pulls_failed, 1);
	ASSERT_UINT_EQ(m.pulls_interrupted, 1);
	ASSERT_UINT_EQ(m.download_bytes, 2000);
	ASSERT_UINT_EQ(m.download_requests, 14);
	ASSERT_UINT_EQ(m.download_retries, 4);
	mc_cache_metrics_release(&m);
	teardown(&fx);
}

/*
 * After SIGTERM (mc_fetch_interrupt()), verify stops with MC_E_INTERRUPTED and records
 * nothing; the deep reader stops between reads. Runs last: the flag cannot be cleared.
 */
static void test_interrupted(void)
{
	const char *names[1] = {"m"};
	struct mc_verify_opts o = {names, 1, MC_VERIFY_DEEP | MC_VERIFY_RECORD, 2, NULL, NULL};
	struct mc_verify_result r;
	uint8_t digests[3 * MC_DIGEST_LEN], *buf = malloc(MIB);
	struct fixture fx;
	struct mc_err err;
	int fd;

	setup(&fx);
	mc_fetch_interrupt();
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_verify2(fx.c, &o, &r, &err), MC_E_INTERRUPTED);
	ASSERT_STR_EQ(err.msg, "interrupted");
	ASSERT_EQ(tc_query(fx.c, "SELECT count(*) FROM models WHERE verified_at IS NOT NULL"), 0);
	fd = open(fx.blob_a, O_RDONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(mc_digest_blocks(fd, fx.o[0].size, 0, 3, digests, NULL, buf, MIB),
		  MC_E_INTERRUPTED);
	close(fd);
	free(buf);
	teardown(&fx);
}

int main(void)
{
	int fds = tc_open_fds();

	MC_RUN(test_clean);
	MC_RUN(test_flipped_byte);
	MC_RUN(test_truncated);
	MC_RUN(test_changed);
	MC_RUN(test_missing_tree_entry);
	MC_RUN(test_missing_blob);
	MC_RUN(test_not_linked);
	MC_RUN(test_writable);
	MC_RUN(test_symlink);
	MC_RUN(test_orphans);
	MC_RUN(test_unknown_name);
	MC_RUN(test_read_only);
	MC_RUN(test_strays);
	MC_RUN(test_dangling_model_link);
	MC_RUN(test_orphan_links_and_trees);
	MC_RUN(test_deep_parallel);
	MC_RUN(test_sha256);
	MC_RUN(test_safetensors);
	MC_RUN(test_record);
	MC_RUN(test_metrics);
	MC_RUN(test_interrupted); /* last: it leaves the interrupt flag set */
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
