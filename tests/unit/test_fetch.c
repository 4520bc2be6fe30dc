/*
 * Unit tests of fetcher/ pieces that need no origin: the digest (the streaming definition and
 * the reading twin must agree), both writer backends (data lands at its offsets, errors come
 * back through completions), and URL checks (schemes, file names, no secret in messages).
 * The engine itself is tested against a real nginx by tests/integration.
 */
#include "mc_test.h"

#include "mc_alloc.h"
#include "mc_fetch.h"
#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

static char tmpdir[] = "/tmp/mc_test_fetch.XXXXXX";

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static int make_file(const char *name, const uint8_t *data, size_t n)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, data, n), (ssize_t)n);
	return fd;
}

/* The digest by its definition in mc_fetch.h, written out independently of digest.c. */
static void digest_by_definition(const uint8_t *data, uint64_t size, uint8_t out[16])
{
	uint64_t nblocks = (size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
	uint8_t *cat = malloc((size_t)nblocks * 16 + 8);
	XXH128_canonical_t c;

	ASSERT_NOT_NULL(cat);
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t off = b * MC_HASH_BLOCK;
		size_t len = (size_t)(size - off < MC_HASH_BLOCK ? size - off : MC_HASH_BLOCK);

		XXH128_canonicalFromHash(&c, XXH3_128bits(data + off, len));
		memcpy(cat + b * 16, c.digest, 16);
	}
	for (int i = 0; i < 8; i++)
		cat[nblocks * 16 + (uint64_t)i] = (uint8_t)(size >> (8 * i));
	XXH128_canonicalFromHash(&c, XXH3_128bits(cat, (size_t)nblocks * 16 + 8));
	memcpy(out, c.digest, 16);
	free(cat);
}

static void test_digest_agrees(void)
{
	static const uint64_t sizes[] = {
	    0, 1, MC_HASH_BLOCK - 1, MC_HASH_BLOCK, MC_HASH_BLOCK + 1, 3 * MC_HASH_BLOCK + 7};
	size_t max = 3 * MC_HASH_BLOCK + 7;
	uint8_t *data = malloc(max), want[16], got[16], prev[16] = {0};

	ASSERT_NOT_NULL(data);
	fill(data, max, 42);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int fd = make_file("d", data, (size_t)sizes[i]);

		digest_by_definition(data, sizes[i], want);
		ASSERT_EQ(mc_digest_file(fd, sizes[i], got), 0);
		ASSERT_MEM_EQ(got, want, 16);
		/* Every size here gives a different digest: the size is part of it. */
		ASSERT_TRUE(memcmp(got, prev, 16) != 0);
		memcpy(prev, got, 16);
		close(fd);
	}
	free(data);
}

static void test_digest_detects_change(void)
{
	size_t n = 2 * MC_HASH_BLOCK + 100;
	uint8_t *data = malloc(n), a[16], b[16];
	int fd;

	ASSERT_NOT_NULL(data);
	fill(data, n, 7);
	fd = make_file("c", data, n);
	ASSERT_EQ(mc_digest_file(fd, n, a), 0);
	data[MC_HASH_BLOCK + 5] ^= 1;
	ASSERT_EQ(pwrite(fd, data + MC_HASH_BLOCK + 5, 1, MC_HASH_BLOCK + 5), 1);
	ASSERT_EQ(mc_digest_file(fd, n, b), 0);
	ASSERT_TRUE(memcmp(a, b, 16) != 0);
	/* A file shorter than the size asked for is reported, not hashed as if padded. */
	ASSERT_EQ(mc_digest_file(fd, n + 1, b), -ENODATA);
	close(fd);
	free(data);
}

struct reaped {
	int n;
	int last_res;
};

static void on_done(void *ctx, struct mc_wreq *r, int res)
{
	struct reaped *rp = ctx;

	(void)r;
	rp->n++;
	if (res < 0)
		rp->last_res = res;
}

static void reap_all(struct mc_writer *w, struct reaped *rp)
{
	ASSERT_EQ(mc_writer_submit(w), 0);
	while (mc_writer_inflight(w))
		ASSERT_GE(mc_writer_reap(w, true, on_done, rp), 0);
}

/* 32 writes of 64 KiB at shuffled offsets and a datasync; the file must read back exactly. */
static void writer_roundtrip(enum mc_writer_kind kind)
{
	enum { N = 32, LEN = 64 << 10 };
	static uint8_t src[N * LEN], back[N * LEN];
	struct mc_wreq req[N + 1];
	struct reaped rp = {0};
	struct mc_writer *w = NULL;
	struct mc_err err;
	int fd, order[N];

	mc_err_init(&err);
	ASSERT_EQ(mc_writer_new(&w, kind, 8, &err), 0);
	ASSERT_EQ(mc_writer_kind(w), kind);
	fill(src, sizeof(src), (uint32_t)kind);
	fd = make_file("w", (const uint8_t *)"", 0);
	for (int i = 0; i < N; i++)
		order[i] = (i * 7) % N;
	for (int i = 0; i < N; i++) {
		memset(&req[i], 0, sizeof(req[i]));
		req[i].fd = fd;
		req[i].buf = (const char *)src + order[i] * LEN;
		req[i].len = LEN;
		req[i].off = (uint64_t)order[i] * LEN;
		/* The depth bounds what is in flight: a full writer says -EBUSY, never loses one.
		 */
		while (mc_writer_queue(w, &req[i]) == -EBUSY) {
			ASSERT_EQ(mc_writer_submit(w), 0);
			ASSERT_GE(mc_writer_reap(w, true, on_done, &rp), 0);
		}
	}
	memset(&req[N], 0, sizeof(req[N]));
	req[N].fd = fd;
	req[N].sync = true;
	while (mc_writer_queue(w, &req[N]) == -EBUSY) {
		ASSERT_EQ(mc_writer_submit(w), 0);
		ASSERT_GE(mc_writer_reap(w, true, on_done, &rp), 0);
	}
	reap_all(w, &rp);
	ASSERT_EQ(rp.n, N + 1);
	ASSERT_EQ(rp.last_res, 0);
	ASSERT_EQ(pread(fd, back, sizeof(back), 0), (ssize_t)sizeof(back));
	ASSERT_MEM_EQ(back, src, sizeof(src));
	close(fd);
	mc_writer_free(w);
}

/* Errors come back through the completion, with the errno of the failing call. */
static void writer_errors(enum mc_writer_kind kind)
{
	static const char data[4096];
	struct mc_wreq req;
	struct reaped rp = {0};
	struct mc_writer *w = NULL;
	struct mc_err err;
	int fd;

	mc_err_init(&err);
	ASSERT_EQ(mc_writer_new(&w, kind, 4, &err), 0);
	fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	memset(&req, 0, sizeof(req));
	req.fd = fd;
	req.buf = data;
	req.len = sizeof(data);
	ASSERT_EQ(mc_writer_queue(w, &req), 0);
	reap_all(w, &rp);
	ASSERT_EQ(rp.last_res, -ENOSPC);
	close(fd);

	rp.last_res = 0;
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ASSERT_GE(fd, 0);
	memset(&req, 0, sizeof(req));
	req.fd = fd;
	req.buf = data;
	req.len = sizeof(data);
	ASSERT_EQ(mc_writer_queue(w, &req), 0);
	reap_all(w, &rp);
	ASSERT_EQ(rp.last_res, -EBADF);
	close(fd);
	mc_writer_free(w);
}

static void test_writer_pwrite(void)
{
	writer_roundtrip(MC_WRITER_PWRITE);
	writer_errors(MC_WRITER_PWRITE);
}

static void test_writer_uring(void)
{
	struct mc_writer *w = NULL;
	struct mc_err err;

	mc_err_init(&err);
	/* io_uring is required on the machines CI runs on: its absence fails, never skips. */
	ASSERT_EQ(mc_writer_new(&w, MC_WRITER_URING, 4, &err), 0);
	mc_writer_free(w);
	writer_roundtrip(MC_WRITER_URING);
	writer_errors(MC_WRITER_URING);
}

static void test_writer_kind_names(void)
{
	enum mc_writer_kind k;

	ASSERT_EQ(mc_writer_kind_parse("pwrite", &k), 0);
	ASSERT_EQ(k, MC_WRITER_PWRITE);
	ASSERT_EQ(mc_writer_kind_parse("io_uring", &k), 0);
	ASSERT_EQ(k, MC_WRITER_URING);
	ASSERT_EQ(mc_writer_kind_parse("auto", &k), 0);
	ASSERT_EQ(k, MC_WRITER_AUTO);
	ASSERT_EQ(mc_writer_kind_parse("mmap", &k), MC_E_USAGE);
	ASSERT_STR_EQ(mc_writer_kind_name(MC_WRITER_URING), "io_uring");
}

static void test_url_check(void)
{
	struct mc_err err;
	char *base = NULL, *red = NULL;

	mc_err_init(&err);
	ASSERT_EQ(mc_url_check("https://h.example:8443/m/a%20b.safetensors?X-Amz-Signature=SECRET",
			       &base, &red, &err),
		  0);
	ASSERT_STR_EQ(base, "a b.safetensors");
	ASSERT_STR_EQ(red, "https://h.example:8443/m/a%20b.safetensors");
	mc_free(base);
	mc_free(red);

	static const char *const bad[] = {
	    "ftp://h/x.bin?sig=SECRET", "file:///etc/passwd", "h/x.bin",     "",
	    "http://h/?sig=SECRET",	"http://h/dir/",      "http://h/..", "http:///x.bin",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		mc_err_init(&err);
		ASSERT_EQ(mc_url_check(bad[i], NULL, NULL, &err), MC_E_USAGE);
		ASSERT_TRUE(err.msg[0] != '\0');
		ASSERT_NULL(strstr(err.msg, "SECRET"));
	}
}

int main(void)
{
	ASSERT_NOT_NULL(mkdtemp(tmpdir));
	MC_RUN(test_digest_agrees);
	MC_RUN(test_digest_detects_change);
	MC_RUN(test_writer_kind_names);
	MC_RUN(test_writer_pwrite);
	MC_RUN(test_writer_uring);
	MC_RUN(test_url_check);
	{
		char p[300];
		snprintf(p, sizeof(p), "rm -rf '%s'", tmpdir);
		ASSERT_EQ(system(p), 0);
	}
	return 0;
}
