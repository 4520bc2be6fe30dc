/*
 * The file digest: XXH3-128 over the per-block XXH3-128 digests and the size (definition in
 * mc_fetch.h). A tree of fixed 1 MiB blocks lets many connections hash their own ranges while
 * the bytes stream, and still gives one digest per content whatever the chunk size was.
 * mc_digest_file() is the reading twin (rebuild-index), and mc_digest_blocks() the one deep verify
 * runs on parts of a file in several threads; all must agree (unit-tested).
 */
#include "mc_fetch.h"

#include "mc_alloc.h"

#include <errno.h>
#include <openssl/evp.h>
#include <string.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "mc_banned.h"

void mc_digest_combine(const uint8_t *block_digests, uint64_t nblocks, uint64_t size,
		       uint8_t digest[MC_DIGEST_LEN])
{
	XXH3_state_t st;
	XXH128_canonical_t c;
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(size >> (8 * i));
	XXH3_128bits_reset(&st);
	if (nblocks)
		XXH3_128bits_update(&st, block_digests, (size_t)nblocks * MC_DIGEST_LEN);
	XXH3_128bits_update(&st, le, sizeof(le));
	XXH128_canonicalFromHash(&c, XXH3_128bits_digest(&st));
	for (int i = 0; i < MC_DIGEST_LEN; i++)
		digest[i] = c.digest[i];
}

void mc_digest_block(const void *buf, size_t len, uint8_t digest[MC_DIGEST_LEN])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(buf, len));
	for (int i = 0; i < MC_DIGEST_LEN; i++)
		digest[i] = c.digest[i];
}

/*
 * Reads exactly @len bytes at @off. Returns 0, -errno, or -ENODATA when the file ends first
 * (shorter than its index says: a different content).
 */
static int read_exact(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		got += (size_t)n;
	}
	return 0;
}

int mc_digest_file(int fd, uint64_t size, uint8_t digest[MC_DIGEST_LEN])
{
	uint64_t nblocks = (size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
	uint8_t *blocks = NULL, *buf = NULL;
	int ret = 0;

	buf = mc_malloc(MC_HASH_BLOCK);
	blocks = mc_malloc(nblocks ? (size_t)nblocks * MC_DIGEST_LEN : 1);
	if (!buf || !blocks) {
		ret = -ENOMEM;
		goto out;
	}
	for (uint64_t b = 0; b < nblocks; b++) {
		uint64_t off = b * MC_HASH_BLOCK;
		size_t want = (size_t)(size - off < MC_HASH_BLOCK ? size - off : MC_HASH_BLOCK);

		ret = read_exact(fd, buf, want, off);
		if (ret)
			goto out;
		mc_digest_block(buf, want, blocks + b * MC_DIGEST_LEN);
	}
	mc_digest_combine(blocks, nblocks, size, digest);
out:
	mc_free(buf);
	mc_free(blocks);
	return ret;
}

int mc_digest_blocks(int fd, uint64_t size, uint64_t first, uint64_t count, uint8_t *digests,
		     uint8_t sha256[32], uint8_t *buf, size_t buflen)
{
	uint64_t nblocks = (size + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK, b = first;
	EVP_MD_CTX *ctx = NULL;
	XXH128_canonical_t c;
	unsigned int len = 32;
	int ret = 0;

	if (buflen < MC_HASH_BLOCK || buflen % MC_HASH_BLOCK || first > nblocks ||
	    count > nblocks - first || (sha256 && (first || count != nblocks)))
		return -EINVAL;
	if (sha256) {
		ctx = EVP_MD_CTX_new();
		if (!ctx || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
			ret = -ENOMEM;
			goto out;
		}
	}
	while (b < first + count) {
		uint64_t off = b * MC_HASH_BLOCK;
		uint64_t want = size - off < buflen ? size - off : buflen;
		uint64_t end = b + (want + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;

		if (end > first + count) {
			end = first + count;
			want = end * MC_HASH_BLOCK - off;
		}
		if (mc_fetch_interrupted()) {
			ret = MC_E_INTERRUPTED;
			goto out;
		}
		ret = read_exact(fd, buf, (size_t)want, off);
		if (ret)
			goto out;
		if (ctx && !EVP_DigestUpdate(ctx, buf, (size_t)want)) {
			ret = -EIO;
			goto out;
		}
		for (uint64_t i = 0; b < end; b++, i++) {
			uint64_t n = want - i * MC_HASH_BLOCK;

			XXH128_canonicalFromHash(
			    &c, XXH3_128bits(buf + i * MC_HASH_BLOCK,
					     n < MC_HASH_BLOCK ? n : MC_HASH_BLOCK));
			memcpy(digests + (b - first) * MC_DIGEST_LEN, c.digest, MC_DIGEST_LEN);
		}
	}
	if (ctx && !EVP_DigestFinal_ex(ctx, sha256, &len))
		ret = -EIO;
out:
	EVP_MD_CTX_free(ctx);
	return ret;
}

int mc_sha256_file(int fd, uint64_t size, uint8_t sum[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *buf = mc_malloc(MC_HASH_BLOCK);
	uint64_t off = 0;
	unsigned int len = 32;
	int ret = 0;

	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		ret = -ENOMEM;
		goto out;
	}
	while (off < size) {
		size_t want = (size_t)(size - off < MC_HASH_BLOCK ? size - off : MC_HASH_BLOCK);

		ret = read_exact(fd, buf, want, off);
		if (ret)
			goto out;
		if (!EVP_DigestUpdate(ctx, buf, want)) {
			ret = -EIO;
			goto out;
		}
		off += want;
	}
	if (!EVP_DigestFinal_ex(ctx, sum, &len))
		ret = -EIO;
out:
	EVP_MD_CTX_free(ctx);
	mc_free(buf);
	return ret;
}
