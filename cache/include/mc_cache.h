/*
 * cache: the node cache. A directory with a SQLite index (the truth), content-addressed blobs,
 * partial downloads under tmp/, and per-model trees of hard links that consumers read. See
 * cache/README.md for the on-disk layout and the publish protocol.
 *
 * Front ends (cmd/, initcontainer/) use only this header. It re-exports the fetcher's options
 * (struct mc_fetch_opts) because a pull is configured with them.
 */
#ifndef MC_CACHE_H
#define MC_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mc_err.h"
#include "mc_fetch.h"

#define MC_DEFAULT_CACHE_DIR "/var/cache/mcache"

struct mc_cache;

/*
 * Opens the cache at @dir, creating the directory, its layout and the index when missing, and
 * upgrading an older index schema. A directory that another user could write in is refused
 * (see MC_CACHE_ALLOW_SHARED_DIR). Returns 0 and sets *out, or a negative code with @err set
 * (-errno for the directory, MC_E_INDEX for an index that is not ours or corrupt).
 */
int mc_cache_open(struct mc_cache **out, const char *dir, struct mc_err *err);

enum {
	/*
	 * Accept a cache directory, or one of its blobs/, tmp/, trees/, models/, that is
	 * world-writable or owned by another user. Without it such a directory is refused, since
	 * whoever else can write there could plant files or symlinks (a hostPath shared by pods).
	 */
	MC_CACHE_ALLOW_SHARED_DIR = 1 << 0,
};

/*
 * mc_cache_open() with MC_CACHE_* @flags. Whatever the flags, nothing beneath @dir is
 * followed through a symlink (@dir itself may be one: the operator chose it), and an index.db
 * (or -wal, -shm, -journal) that is a symlink or has other hard links is refused. Refusals
 * return -EPERM (ownership, mode), -ELOOP (a symlink), -ENOTDIR or MC_E_INDEX, with @err set.
 */
int mc_cache_open2(struct mc_cache **out, const char *dir, unsigned flags, struct mc_err *err);

/* Closes the index and frees @c; NULL is fine. */
void mc_cache_close(struct mc_cache *c);

struct mc_pull_opts {
	/*
	 * Model name (mc_name_is_valid). NULL: derived from the first URI's file name without its
	 * last extension, other characters turned into '-' ("model.safetensors" gives "model").
	 */
	const char *name;
	const char *const *uris; /* http(s) URLs; the file name is the URL path's basename */
	size_t nuris;
	struct mc_fetch_opts fetch; /* connections, chunk size, rate, TLS, writer, progress */
	/* Only files whose path in the model matches an include (all when none) and no exclude. */
	const char *const *include;
	size_t ninclude;
	const char *const *exclude;
	size_t nexclude;
	/*
	 * Called once when this pull starts waiting for a file another process is downloading
	 * (@label names it); may be NULL. Progress keeps being reported while it waits.
	 */
	void (*notice)(void *ctx, const char *label);
	void *notice_ctx;
};

struct mc_pull_result {
	char name[129];		/* the model name used */
	int64_t version;	/* the version id now current */
	uint64_t files;		/* files in the model */
	uint64_t bytes;		/* bytes in the model */
	uint64_t bytes_fetched; /* bytes received from origins in this run */
	uint64_t files_reused;	/* files already in the cache (same object, or same digest) */
	/* The writer backend used, "io_uring" or "pwrite"; NULL when nothing was written. */
	const char *writer;
};

/*
 * Pulls every URI into the model @o->name: downloads what the cache lacks, publishes each file
 * as a read-only blob, builds the model's tree and makes it current atomically. A file appears
 * under models/NAME/ only complete, size-checked, checksummed and fsynced.
 * Returns 0 and fills @res, or a negative code with @err set; nothing already cached is lost.
 */
int mc_cache_pull(struct mc_cache *c, const struct mc_pull_opts *o, struct mc_pull_result *res,
		  struct mc_err *err);

/* One file of a model, as listed by mc_cache_list(). Strings live until the callback returns. */
struct mc_file_info {
	const char *path; /* relative to the model's tree */
	uint64_t size;
	const char *digest; /* hex XXH3-128 file digest */
	const char *source; /* redacted URL */
	const char *etag;   /* "" when none */
};

struct mc_model_info {
	const char *name;
	const char *state; /* "complete", or "pulling"/"failed" for a model never completed */
	int64_t version;
	uint64_t files;
	uint64_t bytes;
	bool pinned;
	int64_t created_at;		 /* unix seconds */
	int64_t last_used_at;		 /* unix seconds */
	const struct mc_file_info *file; /* the files of the current version */
	size_t nfile;
};

/*
 * Calls @cb for each model, by name. Stops and returns @cb's value when it is non-zero.
 * Returns 0 or a negative code with @err set.
 */
int mc_cache_list(struct mc_cache *c, int (*cb)(void *ctx, const struct mc_model_info *m),
		  void *ctx, struct mc_err *err);

enum {
	MC_VERIFY_DEEP = 1 << 0, /* also rehash every blob (XXH3-128) and compare the digest */
};

/*
 * One problem found by verify. Strings live until the callback returns. Kinds, with what
 * expected/actual hold ("" where not applicable):
 *   missing       a tree entry or blob is gone: expected its path in the cache
 *                 ("trees/NAME/V/PATH", "blobs/ab/HEX"); path "models/NAME" for the symlink
 *   not-linked    a tree entry is not the blob: "inode N" each; or models/NAME points
 *                 elsewhere: the link targets
 *   size          the blob's size: bytes as decimal numbers
 *   changed       the blob's inode or mtime: "inode N mtime_ns T" each
 *   not-readonly  the blob's mode: "0444" and the octal mode found
 *   digest        (MC_VERIFY_DEEP) hex digests, or "unreadable: REASON"
 *   orphan-blob   a file under blobs/ the index does not know (whole-cache checks only)
 *   orphan-tmp    a file under tmp/ no download owns (whole-cache checks only)
 */
struct mc_finding {
	const char *model; /* "" for cache-wide findings (orphan-blob, orphan-tmp) */
	const char *path;  /* file path in the model, or a path in the cache (see above) */
	const char *kind;
	const char *expected;
	const char *actual;
};

/*
 * Checks the current version of @names[0..n) (every model when n == 0, then also orphans)
 * against the disk. Calls @cb (may be NULL) for each finding, sets *nfindings. Never changes the
 * index or the disk; a model never completed has nothing to check. Returns 0 (findings or not),
 * or a negative code with @err set when the check itself could not run (MC_E_NOTFOUND for an
 * unknown name, before any finding).
 */
int mc_cache_verify(struct mc_cache *c, const char *const *names, size_t n, unsigned flags,
		    void (*cb)(void *ctx, const struct mc_finding *f), void *ctx,
		    uint64_t *nfindings, struct mc_err *err);

/* The cache directory @c was opened on. */
const char *mc_cache_dir(const struct mc_cache *c);

#endif
