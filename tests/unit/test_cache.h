/*
 * Helpers shared by the cache unit tests (test_cache_*.c): a scratch directory, objects made of
 * pseudo-random bytes, and a stand-in for the fetch engine that drives cache/pull.c's callbacks
 * (open, blocks_durable, done) directly, the way mc_fetch_run() would, without a network.
 */
#ifndef TEST_CACHE_H
#define TEST_CACHE_H

#include "cache_int.h"
#include "mc_alloc.h"
#include "mc_test.h"
#include "mc_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

/* A remote object as the origin would describe it. */
struct tc_obj {
	const char *url;
	const char *path;
	const uint8_t *data;
	uint64_t size;
	const char *etag;
};

static int tc_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Removes @dir and everything beneath it. */
static void __attribute__((unused)) tc_rm_rf(const char *dir)
{
	nftw(dir, tc_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh scratch directory; the caller removes it with tc_rm_rf() and frees the string. */
static __attribute__((unused)) char *tc_mkdtemp(void)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char *dir = malloc(strlen(base) + 32);

	ASSERT_NOT_NULL(dir);
	snprintf(dir, strlen(base) + 32, "%s/mc-test-cache.XXXXXX", base);
	ASSERT_NOT_NULL(mkdtemp(dir));
	return dir;
}

/* @size pseudo-random bytes from @seed (xorshift), freed with free(). */
static __attribute__((unused)) uint8_t *tc_bytes(uint64_t size, uint64_t seed)
{
	uint8_t *p = malloc(size ? size : 1);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	ASSERT_NOT_NULL(p);
	for (uint64_t i = 0; i < size; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	return p;
}

/* The file digest of @size bytes at @data, as the engine computes it, in hex. */
static void __attribute__((unused)) tc_digest_hex(const uint8_t *data, uint64_t size, char *hex)
{
	uint64_t nblocks = (size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
	uint8_t *blocks = calloc(nblocks ? nblocks : 1, MC_DIGEST_LEN);
	uint8_t digest[MC_DIGEST_LEN];
	XXH128_canonical_t c;

	ASSERT_NOT_NULL(blocks);
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t off = b * MC_HASH_BLOCK;
		uint64_t len = size - off < MC_HASH_BLOCK ? size - off : MC_HASH_BLOCK;

		XXH128_canonicalFromHash(&c, XXH3_128bits(data + off, len));
		memcpy(blocks + b * MC_DIGEST_LEN, c.digest, MC_DIGEST_LEN);
	}
	mc_digest_combine(blocks, nblocks, size, digest);
	mc_hex(digest, MC_DIGEST_LEN, hex);
	free(blocks);
}

/* What the engine does after the probe: remote info and zeroed block maps. */
static void __attribute__((unused)) tc_probe(struct mc_fetch_file *f, const struct tc_obj *o)
{
	memset(&f->remote, 0, sizeof(f->remote));
	f->remote.size = o->size;
	f->remote.ranges = true;
	snprintf(f->remote.etag, sizeof(f->remote.etag), "%s", o->etag ? o->etag : "");
	snprintf(f->remote.last_modified, sizeof(f->remote.last_modified), "%s",
		 "Mon, 01 Jan 2024 00:00:00 GMT");
	f->nblocks = (o->size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
	f->block_done = calloc(f->nblocks ? f->nblocks : 1, 1);
	f->block_digests = calloc(f->nblocks ? f->nblocks : 1, MC_DIGEST_LEN);
	ASSERT_NOT_NULL(f->block_done);
	ASSERT_NOT_NULL(f->block_digests);
}

static void __attribute__((unused)) tc_unprobe(struct mc_fetch_file *f)
{
	free(f->block_done);
	free(f->block_digests);
	f->block_done = NULL;
	f->block_digests = NULL;
}

/* Writes blocks [first, first + count) of @o into f->fd, syncs, and reports them durable. */
static void __attribute__((unused)) tc_write(struct mc_pull *p, struct mc_fetch_file *f,
					     const struct tc_obj *o, uint64_t first, uint64_t count)
{
	struct mc_block_span span = {first, count};
	XXH128_canonical_t c;
	struct mc_err err;

	mc_err_init(&err);
	for (uint64_t b = first; b < first + count; b++) {
		uint64_t off = b * MC_HASH_BLOCK;
		uint64_t len = o->size - off < MC_HASH_BLOCK ? o->size - off : MC_HASH_BLOCK;

		ASSERT_EQ(pwrite(f->fd, o->data + off, len, (off_t)off), (ssize_t)len);
		XXH128_canonicalFromHash(&c, XXH3_128bits(o->data + off, len));
		memcpy(f->block_digests + b * MC_DIGEST_LEN, c.digest, MC_DIGEST_LEN);
		f->block_done[b] = 1;
	}
	ASSERT_EQ(fdatasync(f->fd), 0);
	ASSERT_EQ(mc_pull_ops.blocks_durable(p, f, &span, 1, &err), 0);
}

/* Writes every block not yet done, then calls ops->done as the engine would. */
static void __attribute__((unused))
tc_finish(struct mc_pull *p, struct mc_fetch_file *f, const struct tc_obj *o)
{
	struct mc_err err;

	mc_err_init(&err);
	for (uint64_t b = 0; b < f->nblocks; b++)
		if (!f->block_done[b])
			tc_write(p, f, o, b, 1);
	mc_digest_combine(f->block_digests, f->nblocks, f->remote.size, f->digest);
	f->bytes_fetched = o->size;
	if (mc_pull_ops.done(p, f, &err))
		MC_TEST_FAILED_("done: %s", err.msg);
}

/* Fills file @i of @p from @o. */
static void __attribute__((unused)) tc_file_set(struct mc_pull *p, size_t i, const struct tc_obj *o)
{
	struct mc_err err;
	char *source = mc_url_redact(o->url);

	mc_err_init(&err);
	ASSERT_NOT_NULL(source);
	ASSERT_EQ(mc_pull_file_set(p, i, o->url, source, o->path, &err), 0);
	mc_free(source);
}

/* Calls ops->open for file @f, failing the test on an error. */
static void __attribute__((unused)) tc_open(struct mc_pull *p, struct mc_fetch_file *f)
{
	struct mc_err err;

	mc_err_init(&err);
	if (mc_pull_ops.open(p, f, &err))
		MC_TEST_FAILED_("open: %s", err.msg);
}

/* A whole pull of @o[0..n) into model @name; returns the version now current. */
static int64_t __attribute__((unused))
tc_pull(struct mc_cache *c, const char *name, const struct tc_obj *o, size_t n)
{
	struct mc_pull p;
	struct mc_err err;
	int64_t version;

	mc_err_init(&err);
	if (mc_pull_begin(&p, c, name, o[0].url, n, &err))
		MC_TEST_FAILED_("begin: %s", err.msg);
	for (size_t i = 0; i < n; i++) {
		struct mc_fetch_file *f = &p.file[i].f;

		tc_file_set(&p, i, &o[i]);
		tc_probe(f, &o[i]);
		tc_open(&p, f);
		if (!f->skip)
			tc_finish(&p, f, &o[i]);
		tc_unprobe(f);
	}
	if (mc_pull_publish(&p, &err))
		MC_TEST_FAILED_("publish: %s", err.msg);
	version = p.version;
	mc_pull_release(&p);
	return version;
}

/* Runs a one-value integer query on the index. */
static int64_t __attribute__((unused)) tc_query(struct mc_cache *c, const char *sql)
{
	sqlite3_stmt *s = NULL;
	int64_t v = -1;

	ASSERT_EQ(sqlite3_prepare_v2(c->db, sql, -1, &s, NULL), SQLITE_OK);
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

/* Counts the entries of @dir other than "." and "..". */
static int __attribute__((unused)) tc_count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	ASSERT_NOT_NULL(d);
	while ((e = readdir(d)) != NULL)
		n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
	closedir(d);
	return n;
}

/* Truncates a read-only file, as its owner without root would have to. */
static void __attribute__((unused)) tc_truncate(const char *path, off_t len)
{
	struct stat st;

	ASSERT_EQ(stat(path, &st), 0);
	ASSERT_EQ(chmod(path, 0644), 0);
	ASSERT_EQ(truncate(path, len), 0);
	ASSERT_EQ(chmod(path, st.st_mode & 07777), 0);
}

/* The number of open file descriptors of this process, to catch leaks. */
static int __attribute__((unused)) tc_open_fds(void)
{
	return tc_count_entries("/proc/self/fd") - 1; /* less the one opendir() holds */
}

/* Reads a whole file into a malloc'd buffer; *len gets its size. */
static __attribute__((unused)) uint8_t *tc_read_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ASSERT_GE(fd, 0);
	ASSERT_EQ(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ASSERT_NOT_NULL(buf);
	ASSERT_EQ(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

#endif
