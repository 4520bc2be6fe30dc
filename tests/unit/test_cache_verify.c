/*
 * Unit tests of mc_cache_verify(): a clean cache has no findings (fast and deep); each kind of
 * damage is reported with the exact expected and actual values (a flipped byte found only by
 * the deep check, a truncated blob, a missing or unlinked tree entry, a writable blob, a wrong
 * or missing models/ symlink, orphans); an unknown name is MC_E_NOTFOUND; and verify changes
 * neither the disk nor the index.
 */
#include "test_cache.h"

#include <sys/time.h>

#include "mc_banned.h"

#define MIB (1024u * 1024u)

struct found {
	int n;
	char model[8][32];
	char path[8][256];
	char kind[8][32];
	char expected[8][128];
	char actual[8][128];
};

static void on_finding(void *ctx, const struct mc_finding *f)
{
	struct found *s = ctx;

	if (s->n >= 8)
		MC_TEST_FAILED_("too many findings (last: %s %s)", f->kind, f->path);
	snprintf(s->model[s->n], 32, "%s", f->model);
	snprintf(s->path[s->n], 256, "%s", f->path);
	snprintf(s->kind[s->n], 32, "%s", f->kind);
	snprintf(s->expected[s->n], 128, "%s", f->expected);
	snprintf(s->actual[s->n], 128, "%s", f->actual);
	s->n++;
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
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
