/*
 * fetcher: bytes from origins onto disk.
 *
 * mc_fetch_run() downloads a set of files concurrently over one libcurl multi handle: each file
 * is split into chunks of opts->chunk_size bytes, at most opts->connections ranges are in flight
 * across all files, and the bytes go through a writer (io_uring, or pwrite where io_uring is
 * unavailable) into file descriptors the caller provides. The fetcher knows nothing of the
 * cache: it asks the caller, through struct mc_fetch_ops, where bytes go and tells it when they
 * are durable.
 *
 * Digest (content identity, independent of chunk size and connection count):
 *   every file is cut into blocks of MC_HASH_BLOCK bytes at fixed offsets (the last one short);
 *   each block's XXH3-128 is computed while its bytes stream in; the file digest is
 *   XXH3-128( block_digest[0] || block_digest[1] || ... || le64(file size) ),
 *   each block digest in XXH3's canonical (big-endian) 16-byte form. An empty file has no
 *   blocks, so its digest is XXH3-128(le64(0)). mc_digest_file() computes the same by reading.
 * Chunk sizes (the size of one range request) are multiples of MC_HASH_BLOCK, so a range
 * always covers whole blocks.
 */
#ifndef MC_FETCH_H
#define MC_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mc_err.h"

#define MC_HASH_BLOCK (1u << 20)
#define MC_DIGEST_LEN 16
#define MC_DIGEST_HEX (2 * MC_DIGEST_LEN + 1)

#define MC_DEFAULT_CONNECTIONS 16
#define MC_DEFAULT_CHUNK_SIZE  (16u << 20)
#define MC_MAX_CONNECTIONS     256
#define MC_DEFAULT_RETRIES     5
#define MC_DEFAULT_STALL_S     5

enum mc_writer_kind {
	MC_WRITER_AUTO = 0, /* io_uring if io_uring_queue_init() works, else pwrite */
	MC_WRITER_URING,
	MC_WRITER_PWRITE,
};

/* Returns "io_uring" or "pwrite" for a resolved kind, "auto" for MC_WRITER_AUTO. */
const char *mc_writer_kind_name(enum mc_writer_kind k);

/* Parses "auto", "io_uring"/"uring" or "pwrite". Returns 0 or MC_E_USAGE. */
int mc_writer_kind_parse(const char *s, enum mc_writer_kind *out);

struct mc_fetch_opts {
	unsigned connections; /* ranges in flight across all files; 0 → default */
	uint64_t chunk_size;  /* bytes per range, a multiple of MC_HASH_BLOCK; 0 → default */
	uint64_t max_rate;    /* bytes per second across all transfers; 0 → unlimited */
	const char *ca_file;  /* PEM bundle; NULL → SSL_CERT_FILE, else libcurl's default */
	bool insecure;	      /* TLS not verified: only when the user asked for it by name */
	enum mc_writer_kind writer;
	unsigned connect_timeout_s; /* 0 → 30 */
	/*
	 * A transfer with no byte for this long is aborted and retried; 0 → MC_DEFAULT_STALL_S.
	 * A transfer paused for want of a buffer is not stalled.
	 */
	unsigned stall_timeout_s;
	/*
	 * Further tries of a range after a transient failure (5xx, 408, 429, resets, timeouts,
	 * short bodies, garbled ranges), each on a new connection after a backoff with jitter, or
	 * after the origin's Retry-After (at most 120 s). 0: no retry. mc_fetch_opts_init() sets
	 * MC_DEFAULT_RETRIES.
	 */
	unsigned retries;
	/* When not NULL, filled by mc_fetch_run(), also when it fails. */
	struct mc_fetch_stats *stats;
	/* Called at most a few times per second from the transfer loop; may be NULL. */
	void (*progress)(void *ctx, uint64_t bytes_done, uint64_t bytes_total);
	void *progress_ctx;
};

/* What a run did, for summaries and benchmarks. */
struct mc_fetch_stats {
	enum mc_writer_kind writer; /* the backend used: MC_WRITER_URING or MC_WRITER_PWRITE */
	uint64_t requests;	    /* HTTP requests started (probes, ranges, retries) */
	uint64_t retries;	    /* of which retries after a transient failure */
	uint64_t steals;	    /* ranges split off slow transfers at the tail */
	uint64_t bytes;		    /* body bytes received */
	uint64_t held_checked;	    /* blocks held from an earlier run, reread and rehashed */
	uint64_t held_refetched;    /* ... of which did not match and were fetched again */
};

/* Fills @o with the defaults above, the writer from MCACHE_WRITER when set. */
void mc_fetch_opts_init(struct mc_fetch_opts *o);

/* What the origin told us about one object, from its first response. */
struct mc_remote_info {
	uint64_t size;		/* total bytes */
	bool ranges;		/* the origin answered a Range request with 206 */
	char etag[256];		/* "" when the origin sent none */
	char last_modified[64]; /* "" when the origin sent none */
};

struct mc_fetch_priv;

/* A run of whole hash blocks: blocks [first, first + count). */
struct mc_block_span {
	uint64_t first;
	uint64_t count;
};

/*
 * One file to fetch. The caller sets the fields marked (in) before mc_fetch_run(); the engine
 * fills the (probe) fields from the origin's first response before calling ops->open; ops->open
 * sets the (open) fields.
 *
 * Progress is tracked per hash block, not per chunk, so that a resume works whatever chunk size
 * either run used: the engine plans ranges over the blocks that are not done.
 */
struct mc_fetch_file {
	const char *url;   /* (in) full URL, may carry secrets: never logged or stored */
	const char *label; /* (in) printable and secret-free, used in messages */
	/* (in) extra "Name: value" request headers, NULL-terminated, may carry secrets; or NULL */
	const char *const *headers;
	void *user;	   /* (in) the caller's handle */
	uint64_t max_size; /* (in) refuse objects larger than this; 0 → no limit */
	/*
	 * (in) What the caller already holds of this object from an earlier run (a complete copy
	 * or a partial download), all zero when nothing. With a validator (etag or last_modified)
	 * the probe is conditional (If-None-Match, else If-Modified-Since): an origin answering
	 * 304 Not Modified sends no body, and ops->open then sees not_modified set and f->remote
	 * equal to f->known, so that checking a warm cache costs one empty response per file.
	 */
	struct mc_remote_info known;

	struct mc_remote_info remote; /* (probe) */
	bool not_modified;	      /* (probe) the origin answered 304 to the conditional probe */
	uint64_t nblocks;	      /* (probe) ceil(size / MC_HASH_BLOCK), 0 for an empty file */
	/*
	 * (probe) nblocks bytes and nblocks * MC_DIGEST_LEN bytes, allocated and zeroed by the
	 * engine. ops->open marks blocks it already holds durably with block_done[i] = 1 and copies
	 * their digests into block_digests; the engine then does not fetch them.
	 */
	uint8_t *block_done;
	uint8_t *block_digests;

	int fd; /* (open) where the file's bytes go, at their own offsets; the caller closes it */
	bool skip; /* (open) true: the caller already has this object; fetch nothing more of it */

	uint8_t digest[MC_DIGEST_LEN]; /* (out) the file digest, valid when ops->done is called */
	uint64_t bytes_fetched;	       /* (out) body bytes received from the origin */

	struct mc_fetch_priv *priv; /* engine-private */
};

struct mc_fetch_ops {
	/*
	 * The first response for @f has arrived; f->remote, nblocks, block_done and block_digests
	 * are set. Either set f->skip, or open the destination (preallocated to f->remote.size
	 * bytes), set f->fd and mark the blocks already present. Called from inside the transfer
	 * loop; keep it short. Return 0, or a negative code with @err set to fail the run.
	 */
	int (*open)(void *ctx, struct mc_fetch_file *f, struct mc_err *err);
	/*
	 * The blocks in @spans[0..n) of @f are written and fdatasync()ed, and their digests are in
	 * f->block_digests: record them, so that a resume can skip them. Called in batches (at most
	 * a few times per second per file, and before ops->done).
	 */
	int (*blocks_durable)(void *ctx, struct mc_fetch_file *f, const struct mc_block_span *spans,
			      size_t n, struct mc_err *err);
	/* Every block of @f is durable and f->digest is set: publish it. Not called when skipped.
	 */
	int (*done)(void *ctx, struct mc_fetch_file *f, struct mc_err *err);
};

/*
 * Checks that @url is an absolute http:// or https:// URL that libcurl can parse, and returns in
 * *basename (if not NULL) the percent-decoded last component of its path, and in *redacted (if
 * not NULL) its secret-free form (mc_url_redact()). Both are freed with mc_free().
 * Returns 0, or MC_E_USAGE with a message that never contains the query string.
 */
int mc_url_check(const char *url, char **basename, char **redacted, struct mc_err *err);

/*
 * Fetches @files[0..n) to completion. Calls ops->open once per file, ops->blocks_durable as
 * ranges land, ops->done once per file not skipped. Returns 0 when every file is done; otherwise
 * the first error's code (MC_E_ORIGIN, MC_E_INTEGRITY, MC_E_CHANGED, -ENOSPC, -errno, MC_E_USAGE
 * for a refused URL or MC_E_INTERRUPTED after mc_fetch_interrupt()) with @err set, after stopping
 * the other transfers. Chunks already reported durable stay valid for a later resume. Only http://
 * and https:// URLs are accepted, also on redirects; TLS is verified.
 */
int mc_fetch_run(const struct mc_fetch_opts *opts, struct mc_fetch_file *const *files, size_t n,
		 const struct mc_fetch_ops *ops, void *ctx, struct mc_err *err);

/* Asks a running mc_fetch_run() to stop soon; async-signal-safe. */
void mc_fetch_interrupt(void);
/* True once mc_fetch_interrupt() was called: callers waiting outside a run stop too. */
bool mc_fetch_interrupted(void);

/*
 * Computes the digest of the open file @fd of @size bytes by reading it (pread), the same
 * value the engine computes while streaming. Used by deep verify. Returns 0 or -errno.
 */
int mc_digest_file(int fd, uint64_t size, uint8_t digest[MC_DIGEST_LEN]);

/*
 * Computes the SHA-256 of the first @size bytes of @fd by reading them, for origins that publish
 * one (the Hugging Face Hub for LFS files). Returns 0 or -errno (-ENODATA when shorter).
 */
int mc_sha256_file(int fd, uint64_t size, uint8_t sum[32]);

/*
 * The digest of one hash block (@len ≤ MC_HASH_BLOCK bytes, the last block of a file may be
 * shorter) as the engine computes it, for a writer that produces a file itself (a bundle's
 * entries) and combines the blocks with mc_digest_combine().
 */
void mc_digest_block(const void *buf, size_t len, uint8_t digest[MC_DIGEST_LEN]);

/* Combines @nblocks block digests and @size into the file digest (see the top of this file). */
void mc_digest_combine(const uint8_t *block_digests, uint64_t nblocks, uint64_t size,
		       uint8_t digest[MC_DIGEST_LEN]);

/*
 * Deep verify's reader: the digests of blocks [first, first + count) of the open file @fd (@size
 * bytes in all) into @digests (count * MC_DIGEST_LEN bytes), read up to @buflen bytes at a time
 * into the caller's @buf (a positive multiple of MC_HASH_BLOCK): large sequential reads and no
 * allocation, so that several threads can each hash a part of one file. With @sha256 not NULL
 * (@first 0 and @count every block) also the SHA-256 of the whole file, from the same reads.
 * Stops between reads once mc_fetch_interrupt() was called. Returns 0, -errno, -ENODATA when
 * the file is shorter than @size, -EINVAL for bad arguments, -ENOMEM, or MC_E_INTERRUPTED.
 */
int mc_digest_blocks(int fd, uint64_t size, uint64_t first, uint64_t count, uint8_t *digests,
		     uint8_t sha256[32], uint8_t *buf, size_t buflen);

/* One-time global init (curl_global_init); returns 0 or MC_E_ORIGIN. */
int mc_fetch_global_init(struct mc_err *err);
void mc_fetch_global_cleanup(void);

/* "mcache/VERSION libcurl/X liburing/Y" for --version. */
const char *mc_fetch_versions(void);

#endif
