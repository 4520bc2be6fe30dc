/*
 * Unit tests of the cache's path safety (cache/store.c, cache/index.c, cache/pull.c), for a
 * cache directory shared with other tenants (a hostPath): a root or layout directory that
 * others can write is refused unless MC_CACHE_ALLOW_SHARED_DIR says so; a symlink planted for
 * blobs/, tmp/, trees/, models/, trees/NAME, blobs/ab or index.db (and its -wal) is refused,
 * never followed; a planted models/NAME symlink is replaced, not followed; a temp file given a
 * second name by a hard link is not resumed into. In every case the directory the symlinks and
 * links point at ("outside") is left exactly as it was.
 */
#include "test_cache.h"

#include "mc_banned.h"

#define MIB (1024u * 1024u)

/* A cache directory and an "outside" directory next to it, which must stay untouched. */
struct fixture {
	char *root; /* scratch directory holding both */
	char dir[512];
	char out[512];
};

static void setup(struct fixture *fx)
{
	fx->root = tc_mkdtemp();
	snprintf(fx->dir, sizeof(fx->dir), "%s/cache", fx->root);
	snprintf(fx->out, sizeof(fx->out), "%s/outside", fx->root);
	ASSERT_EQ(mkdir(fx->dir, 0755), 0);
	ASSERT_EQ(mkdir(fx->out, 0755), 0);
}

static void teardown(struct fixture *fx)
{
	tc_rm_rf(fx->root);
	free(fx->root);
}

/* Opens the cache once (creating its layout) and closes it. */
static void make_layout(const struct fixture *fx)
{
	struct mc_cache *c = NULL;
	struct mc_err err;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, fx->dir, &err), 0);
	mc_cache_close(c);
}

/* Opening @fx's cache with @flags fails with @code and a message containing @msg. */
static void expect_open_fails(const struct fixture *fx, unsigned flags, int code, const char *msg)
{
	struct mc_cache *c = NULL;
	struct mc_err err;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open2(&c, fx->dir, flags, &err), code);
	ASSERT_NULL(c);
	if (!strstr(err.msg, msg))
		MC_TEST_FAILED_("message '%s' lacks '%s'", err.msg, msg);
}

static void path_in(const struct fixture *fx, char *buf, size_t len, const char *rel)
{
	snprintf(buf, len, "%s/%s", fx->dir, rel);
}

/* Replaces the directory @rel of the cache with a symlink to the outside directory. */
static void plant_dir_link(const struct fixture *fx, const char *rel)
{
	char path[1024];

	path_in(fx, path, sizeof(path), rel);
	ASSERT_EQ(rmdir(path), 0);
	ASSERT_EQ(symlink(fx->out, path), 0);
}

static void test_shared_root(void)
{
	struct fixture fx;
	struct mc_cache *c = NULL;
	struct mc_err err;
	char path[1024];

	setup(&fx);
	/* World-writable, as /tmp is: refused before anything is created in it. */
	ASSERT_EQ(chmod(fx.dir, 01777), 0);
	expect_open_fails(&fx, 0, -EPERM, "world-writable (mode 1777)");
	ASSERT_EQ(tc_count_entries(fx.dir), 0);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open2(&c, fx.dir, MC_CACHE_ALLOW_SHARED_DIR, &err), 0);
	mc_cache_close(c);
	ASSERT_EQ(chmod(fx.dir, 0755), 0);

	/* A layout directory found world-writable is refused the same way. */
	path_in(&fx, path, sizeof(path), "tmp");
	ASSERT_EQ(chmod(path, 0777), 0);
	expect_open_fails(&fx, 0, -EPERM, "/tmp': it is world-writable (mode 0777)");
	ASSERT_EQ(chmod(path, 0755), 0);
	make_layout(&fx);

	/* Owned by another user: made so as root; otherwise "/" is one (not ours, not writable). */
	if (geteuid() == 0) {
		ASSERT_EQ(chown(fx.dir, 65534, 65534), 0);
		expect_open_fails(&fx, 0, -EPERM, "owned by uid 65534, not by this user (uid 0)");
		mc_err_init(&err);
		ASSERT_EQ(mc_cache_open2(&c, fx.dir, MC_CACHE_ALLOW_SHARED_DIR, &err), 0);
		mc_cache_close(c);
		ASSERT_EQ(chown(fx.dir, 0, 0), 0);
		path_in(&fx, path, sizeof(path), "models");
		ASSERT_EQ(chown(path, 65534, 65534), 0);
		expect_open_fails(&fx, 0, -EPERM, "/models': it is owned by uid 65534");
		ASSERT_EQ(chown(path, 0, 0), 0);
	} else {
		mc_err_init(&err);
		ASSERT_EQ(mc_cache_open(&c, "/", &err), -EPERM);
		if (!strstr(err.msg, "owned by uid 0"))
			MC_TEST_FAILED_("message '%s' lacks 'owned by uid 0'", err.msg);
	}
	make_layout(&fx);
	teardown(&fx);
}

static void test_planted_layout_links(void)
{
	static const char *const names[] = {"blobs", "tmp", "trees", "models"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		struct fixture fx;

		setup(&fx);
		make_layout(&fx);
		plant_dir_link(&fx, names[i]);
		/* Symlinks are refused even when sharing is allowed. */
		expect_open_fails(&fx, MC_CACHE_ALLOW_SHARED_DIR, -ELOOP, "is a symbolic link");
		ASSERT_EQ(tc_count_entries(fx.out), 0);
		teardown(&fx);
	}
}

static void test_planted_index_links(void)
{
	static const char *const names[] = {"index.db", "index.db-wal", "index.db-shm",
					    "index.db-journal"};
	char path[1024], target[1024];
	struct fixture fx;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		setup(&fx);
		make_layout(&fx);
		path_in(&fx, path, sizeof(path), names[i]);
		unlink(path);
		/* A dangling link: following it would create the file outside. */
		snprintf(target, sizeof(target), "%s/%s", fx.out, names[i]);
		ASSERT_EQ(symlink(target, path), 0);
		expect_open_fails(&fx, MC_CACHE_ALLOW_SHARED_DIR, -ELOOP, "is a symbolic link");
		ASSERT_EQ(tc_count_entries(fx.out), 0);
		teardown(&fx);
	}

	/* index.db with a second name outside: writes to the index would change that file too. */
	setup(&fx);
	make_layout(&fx);
	path_in(&fx, path, sizeof(path), "index.db");
	snprintf(target, sizeof(target), "%s/other.db", fx.out);
	ASSERT_EQ(link(path, target), 0);
	expect_open_fails(&fx, 0, MC_E_INDEX, "not a regular file with one link");
	teardown(&fx);
}

/* A model of one 2 MiB + 5 bytes file, and the steps of its pull up to publish. */
struct one_file {
	uint8_t *data;
	struct tc_obj o;
	struct mc_pull p;
};

static void begin_one(struct one_file *m, struct mc_cache *c, uint64_t seed)
{
	struct mc_err err;

	m->data = tc_bytes(2 * MIB + 5, seed);
	m->o = (struct tc_obj){"http://origin/m/w.bin", "sub/w.bin", m->data, 2 * MIB + 5, "\"w\""};
	mc_err_init(&err);
	ASSERT_EQ(mc_pull_begin(&m->p, c, "m", m->o.url, 1, &err), 0);
	tc_file_set(&m->p, 0, &m->o);
	tc_probe(&m->p.file[0].f, &m->o);
	tc_open(&m->p, &m->p.file[0].f);
}

static void end_one(struct one_file *m)
{
	tc_unprobe(&m->p.file[0].f);
	mc_pull_release(&m->p);
	free(m->data);
}

static void test_planted_tree_link(void)
{
	struct fixture fx;
	struct one_file m;
	struct mc_cache *c = NULL;
	struct mc_err err;
	char path[1024];

	setup(&fx);
	make_layout(&fx);
	path_in(&fx, path, sizeof(path), "trees/m");
	ASSERT_EQ(symlink(fx.out, path), 0);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, fx.dir, &err), 0);
	begin_one(&m, c, 41);
	tc_finish(&m.p, &m.p.file[0].f, &m.o);
	ASSERT_EQ(mc_pull_publish(&m.p, &err), -ELOOP);
	if (!strstr(err.msg, "trees/m': it is a symbolic link"))
		MC_TEST_FAILED_("message '%s' does not name the symlink", err.msg);
	mc_pull_fail(&m.p);
	end_one(&m);
	mc_cache_close(c);
	ASSERT_EQ(tc_count_entries(fx.out), 0);
	teardown(&fx);
}

static void test_planted_blob_dirs(void)
{
	struct fixture fx;
	struct one_file m;
	struct mc_cache *c = NULL;
	struct mc_err err;
	char path[1024];

	setup(&fx);
	make_layout(&fx);
	/* Every blobs/ab the pull could publish into. */
	for (unsigned i = 0; i < 256; i++) {
		snprintf(path, sizeof(path), "%s/blobs/%02x", fx.dir, i);
		ASSERT_EQ(symlink(fx.out, path), 0);
	}
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, fx.dir, &err), 0);
	begin_one(&m, c, 42);
	for (uint64_t b = 0; b < m.p.file[0].f.nblocks; b++)
		tc_write(&m.p, &m.p.file[0].f, &m.o, b, 1);
	mc_digest_combine(m.p.file[0].f.block_digests, m.p.file[0].f.nblocks, m.o.size,
			  m.p.file[0].f.digest);
	ASSERT_EQ(mc_pull_ops.done(&m.p, &m.p.file[0].f, &err), -ELOOP);
	if (!strstr(err.msg, "is a symbolic link"))
		MC_TEST_FAILED_("message '%s' does not name the symlink", err.msg);
	mc_pull_fail(&m.p);
	end_one(&m);
	mc_cache_close(c);
	ASSERT_EQ(tc_count_entries(fx.out), 0);
	teardown(&fx);
}

/* models/NAME is ours to replace: a planted one is swapped out, never written through. */
static void test_planted_model_link(void)
{
	struct fixture fx;
	struct mc_cache *c = NULL;
	struct mc_err err;
	char path[1024], link[256], want[256];
	uint8_t *a = tc_bytes(MIB + 3, 43);
	const struct tc_obj o = {"http://origin/m/a.bin", "a.bin", a, MIB + 3, "\"a\""};
	int64_t v;
	ssize_t n;

	setup(&fx);
	make_layout(&fx);
	path_in(&fx, path, sizeof(path), "models/m");
	ASSERT_EQ(symlink(fx.out, path), 0);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, fx.dir, &err), 0);
	v = tc_pull(c, "m", &o, 1);
	mc_cache_close(c);
	n = readlink(path, link, sizeof(link) - 1);
	ASSERT_GT(n, 0);
	link[n] = '\0';
	snprintf(want, sizeof(want), "../trees/m/%lld", (long long)v);
	ASSERT_STR_EQ(link, want);
	ASSERT_EQ(tc_count_entries(fx.out), 0);
	teardown(&fx);
	free(a);
}

/*
 * A partial download whose temp file got a second name outside tmp/ (a hard link, same inode):
 * the next pull starts over in a new temp file, and the other name keeps its bytes and mode.
 */
static void test_resume_refuses_hard_link(void)
{
	struct fixture fx;
	struct one_file m;
	struct mc_cache *c = NULL;
	struct mc_err err;
	char tmp[1024], victim[1024];
	uint8_t *before, *after;
	size_t nbefore, nafter;
	struct stat st;
	int64_t id;

	setup(&fx);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, fx.dir, &err), 0);
	begin_one(&m, c, 44);
	id = m.p.file[0].download_id;
	tc_write(&m.p, &m.p.file[0].f, &m.o, 0, 1);
	mc_pull_fail(&m.p);
	end_one(&m);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%lld.part", fx.dir, (long long)id);
	snprintf(victim, sizeof(victim), "%s/victim", fx.out);
	ASSERT_EQ(link(tmp, victim), 0);
	ASSERT_EQ(chmod(victim, 0640), 0);
	before = tc_read_file(victim, &nbefore);

	begin_one(&m, c, 44);
	ASSERT_FALSE(m.p.file[0].resumed);
	ASSERT_NE(m.p.file[0].download_id, id);
	tc_finish(&m.p, &m.p.file[0].f, &m.o);
	ASSERT_EQ(mc_pull_publish(&m.p, &err), 0);
	end_one(&m);
	mc_cache_close(c);

	after = tc_read_file(victim, &nafter);
	ASSERT_UINT_EQ(nafter, nbefore);
	ASSERT_MEM_EQ(after, before, nbefore);
	ASSERT_EQ(stat(victim, &st), 0);
	ASSERT_EQ(st.st_mode & 07777, 0640);
	ASSERT_EQ(st.st_nlink, 1); /* the name under tmp/ was dropped */
	free(before);
	free(after);
	teardown(&fx);
}

int main(void)
{
	int fds = tc_open_fds();

	MC_RUN(test_shared_root);
	MC_RUN(test_planted_layout_links);
	MC_RUN(test_planted_index_links);
	MC_RUN(test_planted_tree_link);
	MC_RUN(test_planted_blob_dirs);
	MC_RUN(test_planted_model_link);
	MC_RUN(test_resume_refuses_hard_link);
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
