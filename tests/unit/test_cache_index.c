/*
 * Unit tests of the cache's index and layout (cache/index.c, cache/store.c): a new cache gets
 * its directories and schema, a reopen keeps what was recorded, and an index.db that is not
 * ours (garbage, a foreign SQLite database, a newer schema) is refused with MC_E_INDEX and left
 * byte for byte as it was. Allocation failures during open fail cleanly.
 */
#include "test_cache.h"

#include "mc_banned.h"

static void write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void sql_file(const char *path, const char *sql)
{
	sqlite3 *db = NULL;

	ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
	ASSERT_EQ(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	ASSERT_EQ(sqlite3_close(db), SQLITE_OK);
}

/* Opening must fail with MC_E_INDEX and @msg, and leave DIR/index.db exactly as it was. */
static void expect_refused(const char *dir, const char *msg)
{
	struct mc_cache *c = NULL;
	struct mc_err err;
	char path[512];
	uint8_t *before, *after;
	size_t nbefore, nafter;

	snprintf(path, sizeof(path), "%s/index.db", dir);
	before = tc_read_file(path, &nbefore);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, dir, &err), MC_E_INDEX);
	ASSERT_NULL(c);
	ASSERT_NOT_NULL(strstr(err.msg, msg));
	ASSERT_NOT_NULL(strstr(err.msg, path));
	ASSERT_NULL(strchr(err.msg, '\n'));
	after = tc_read_file(path, &nafter);
	ASSERT_UINT_EQ(nafter, nbefore);
	ASSERT_MEM_EQ(after, before, nbefore);
	free(before);
	free(after);
}

static void test_create(void)
{
	char *tmp = tc_mkdtemp(), dir[512], sub[600], slash[520];
	struct mc_cache *c = NULL;
	struct mc_err err;
	struct stat st;
	const char *const subdirs[] = {"blobs", "tmp", "trees", "models"};
	const char *const tables[] = {"models", "versions",  "files",
				      "blobs",	"downloads", "download_spans"};
	sqlite3_stmt *s = NULL;

	snprintf(dir, sizeof(dir), "%s/a/b/cache", tmp);
	snprintf(slash, sizeof(slash), "%s//", dir);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, slash, &err), 0);
	ASSERT_STR_EQ(mc_cache_dir(c), dir);
	for (size_t i = 0; i < 4; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, subdirs[i]);
		ASSERT_EQ(stat(sub, &st), 0);
		ASSERT_TRUE(S_ISDIR(st.st_mode));
	}
	ASSERT_EQ(tc_query(c, "PRAGMA application_id"), MC_INDEX_APP_ID);
	ASSERT_EQ(tc_query(c, "PRAGMA user_version"), MC_INDEX_VERSION);
	ASSERT_EQ(tc_query(c, "PRAGMA foreign_keys"), 1);
	ASSERT_EQ(tc_query(c, "PRAGMA synchronous"), 2); /* FULL */
	ASSERT_EQ(sqlite3_prepare_v2(c->db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
	ASSERT_STR_EQ((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	for (size_t i = 0; i < 6; i++) {
		char sql[128];

		snprintf(sql, sizeof(sql),
			 "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '%s'",
			 tables[i]);
		ASSERT_EQ(tc_query(c, sql), 1);
	}
	mc_cache_close(c);
	mc_cache_close(NULL);
	tc_rm_rf(tmp);
	free(tmp);
}

static void test_reopen(void)
{
	char *dir = tc_mkdtemp();
	struct mc_cache *c = NULL;
	struct mc_pull p;
	struct mc_err err;

	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, dir, &err), 0);
	ASSERT_EQ(mc_pull_begin(&p, c, "kept", "http://h/kept.bin", 1, &err), 0);
	ASSERT_GT(p.version, 0);
	mc_pull_release(&p);
	mc_cache_close(c);

	c = NULL;
	ASSERT_EQ(mc_cache_open(&c, dir, &err), 0);
	ASSERT_EQ(tc_query(c, "SELECT count(*) FROM models WHERE name = 'kept'"), 1);
	ASSERT_EQ(tc_query(c, "SELECT count(*) FROM versions WHERE state = 'pulling'"), 1);
	ASSERT_EQ(tc_query(c, "PRAGMA user_version"), MC_INDEX_VERSION);
	mc_cache_close(c);
	tc_rm_rf(dir);
	free(dir);
}

static void test_refuse_garbage(void)
{
	char *dir = tc_mkdtemp(), path[512];
	uint8_t *junk = tc_bytes(8192, 7);

	snprintf(path, sizeof(path), "%s/index.db", dir);
	write_file(path, junk, 8192);
	expect_refused(dir, "not an mcache index");
	/* A text file that happens to be short. */
	write_file(path, "hello\n", 6);
	expect_refused(dir, "not an mcache index");
	free(junk);
	tc_rm_rf(dir);
	free(dir);
}

static void test_refuse_foreign(void)
{
	char *dir = tc_mkdtemp(), path[512];

	snprintf(path, sizeof(path), "%s/index.db", dir);
	/* Someone else's database, with data, in rollback-journal mode. */
	sql_file(path, "CREATE TABLE notes(x TEXT); INSERT INTO notes VALUES('precious');");
	expect_refused(dir, "not an mcache index");
	unlink(path);
	/* Empty, but claimed by another application. */
	sql_file(path, "PRAGMA application_id = 1234; PRAGMA user_version = 1;");
	expect_refused(dir, "not an mcache index");
	unlink(path);
	/* Ours, from a newer mcache. */
	sql_file(path, "PRAGMA application_id = 1296253768; PRAGMA user_version = 99;");
	ASSERT_EQ(MC_INDEX_APP_ID, 1296253768);
	expect_refused(dir, "schema 99");
	tc_rm_rf(dir);
	free(dir);
}

/* A truncated index: a valid header page whose tables are gone. */
static void test_refuse_damaged(void)
{
	char *dir = tc_mkdtemp(), path[512];
	struct mc_cache *c = NULL;
	struct mc_err err;

	snprintf(path, sizeof(path), "%s/index.db", dir);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, dir, &err), 0);
	mc_cache_close(c);
	sql_file(path, "PRAGMA foreign_keys = OFF; DROP TABLE models;");
	c = NULL;
	ASSERT_EQ(mc_cache_open(&c, dir, &err), MC_E_INDEX);
	ASSERT_NOT_NULL(strstr(err.msg, "damaged index"));
	tc_rm_rf(dir);
	free(dir);
}

static void test_empty_file_is_new(void)
{
	char *dir = tc_mkdtemp(), path[512];
	struct mc_cache *c = NULL;
	struct mc_err err;

	snprintf(path, sizeof(path), "%s/index.db", dir);
	write_file(path, "", 0);
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, dir, &err), 0);
	ASSERT_EQ(tc_query(c, "PRAGMA application_id"), MC_INDEX_APP_ID);
	mc_cache_close(c);
	tc_rm_rf(dir);
	free(dir);
}

static void test_not_a_directory(void)
{
	char *dir = tc_mkdtemp(), path[512];
	struct mc_cache *c = NULL;
	struct mc_err err;
	int ret;

	snprintf(path, sizeof(path), "%s/file", dir);
	write_file(path, "x", 1);
	mc_err_init(&err);
	ret = mc_cache_open(&c, path, &err);
	ASSERT_TRUE(ret == -ENOTDIR || ret == -EEXIST);
	ASSERT_NOT_NULL(strstr(err.msg, path));
	mc_err_init(&err);
	ASSERT_EQ(mc_cache_open(&c, "", &err), MC_E_USAGE);
	tc_rm_rf(dir);
	free(dir);
}

/* Failing each allocation in turn: open either fails with -ENOMEM or works, never crashes. */
static void test_alloc_failures(void)
{
	char *dir = tc_mkdtemp();
	struct mc_cache *c;
	struct mc_err err;
	int ret, failures = 0;

	for (unsigned long n = 1; n < 40; n++) {
		c = NULL;
		mc_err_init(&err);
		mc_alloc_fail_at(n);
		ret = mc_cache_open(&c, dir, &err);
		mc_alloc_fail_at(0);
		ASSERT_TRUE(ret == 0 || ret == -ENOMEM);
		if (ret) {
			ASSERT_NULL(c);
			failures++;
		}
		mc_cache_close(c);
	}
	ASSERT_GT(failures, 0);
	tc_rm_rf(dir);
	free(dir);
}

int main(void)
{
	int fds = tc_open_fds();

	MC_RUN(test_create);
	MC_RUN(test_reopen);
	MC_RUN(test_refuse_garbage);
	MC_RUN(test_refuse_foreign);
	MC_RUN(test_refuse_damaged);
	MC_RUN(test_empty_file_is_new);
	MC_RUN(test_not_a_directory);
	MC_RUN(test_alloc_failures);
	ASSERT_EQ(tc_open_fds(), fds);
	return 0;
}
