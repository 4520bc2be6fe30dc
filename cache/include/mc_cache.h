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

/*
 * What a tar bundle may hold (see cache/README.md, "Bundles"). A field left 0 takes its
 * MCACHE_BUNDLE_* variable when set, else the default in brackets. Exceeding any fails the
 * whole pull with MC_E_ORIGIN before the offending entry is written.
 */
struct mc_bundle_limits {
	uint64_t max_entries; /* entries of any kind [100000]: MCACHE_BUNDLE_MAX_ENTRIES */
	uint64_t max_bytes;   /* bytes of all files together [4 TiB]: MCACHE_BUNDLE_MAX_BYTES */
	/*
	 * Bytes the archive may expand to, relative to its own size: at most max_ratio times
	 * the archive plus ratio_slack [100, 1 GiB]: MCACHE_BUNDLE_MAX_RATIO. Catches a
	 * decompression bomb after a few of its headers, long before max_bytes.
	 */
	uint64_t max_ratio;
	uint64_t ratio_slack;
	uint64_t max_depth; /* path components of an entry [32]: MCACHE_BUNDLE_MAX_DEPTH */
};

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
	/*
	 * Every object is a tar bundle (plain, gzip or zstd) whose regular files become the
	 * model's files. Without it, only a URI whose path ends in .tar, .tar.gz, .tgz or
	 * .tar.zst is one. The include and exclude patterns select a bundle's entries, not the
	 * bundle.
	 */
	bool unpack;
	struct mc_bundle_limits bundle_limits;
};

/* What mc_cache_gc() or mc_cache_rm() did (or, for a dry run, would do). */
struct mc_gc_result {
	uint64_t max_bytes;    /* the budget gc worked to; 0 for none */
	uint64_t bytes_before; /* usage (mc_cache_usage()) when it began */
	uint64_t bytes_after;  /* usage when it ended */
	uint64_t bytes_freed;  /* bytes of the blobs and temp files removed, orphans included */
	uint64_t models;       /* models evicted or removed */
	uint64_t versions;     /* superseded, failed or abandoned versions removed */
	uint64_t blobs;	       /* blob files removed: no longer referenced, or orphans */
	uint64_t tmp_files;    /* temp files removed: orphans and abandoned downloads */
	uint64_t downloads;    /* abandoned partial downloads forgotten (rows) */
	bool budget_met;       /* usage is within max_bytes; always true without a budget */
};

struct mc_pull_result {
	char name[129];		   /* the model name used */
	int64_t version;	   /* the version id now current */
	uint64_t files;		   /* files in the model */
	uint64_t bytes;		   /* bytes in the model */
	uint64_t bytes_fetched;	   /* bytes received from origins in this run */
	uint64_t files_reused;	   /* files already in the cache (same object, or same digest) */
	uint64_t bundles_unpacked; /* bundles unpacked by this run (0: none, or copied) */
	/* The writer backend used, "io_uring" or "pwrite"; NULL when nothing was written. */
	const char *writer;
	/*
	 * With a budget configured (mc_cache_budget()), gc ran after the pull keeping this model:
	 * gc_ran, what it did, and gc_error, its message if it failed ("" otherwise). The pull
	 * succeeded either way.
	 */
	bool gc_ran;
	struct mc_gc_result gc;
	char gc_error[MC_ERR_MAX];
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
	const char *state; /* "complete"; never completed: "pulling", "partial" or "failed" */
	int64_t version;
	uint64_t files;
	uint64_t bytes;
	bool pinned;
	int64_t created_at;		 /* unix seconds */
	int64_t last_used_at;		 /* unix seconds */
	const struct mc_file_info *file; /* the files of the current version */
	size_t nfile;
	/* The last verify recorded for it (mc_cache_verify2() with MC_VERIFY_RECORD). */
	int64_t verified_at;	 /* unix seconds, 0 for never */
	int64_t verify_findings; /* findings in this model then, -1 for never */
	bool verify_deep;	 /* that verify was deep */
};

/*
 * Calls @cb for each model, by name. Stops and returns @cb's value when it is non-zero.
 * Returns 0 or a negative code with @err set.
 */
int mc_cache_list(struct mc_cache *c, int (*cb)(void *ctx, const struct mc_model_info *m),
		  void *ctx, struct mc_err *err);

enum {
	/*
	 * Also read every blob: its XXH3-128 digest, the SHA-256 the origin published (where the
	 * index has one), and the structure of each *.safetensors file.
	 */
	MC_VERIFY_DEEP = 1 << 0,
	/*
	 * Record the result in the index: each checked model's time, findings and depth (ls,
	 * metrics) and, when every model was checked, the cache-wide result (metrics). This
	 * bookkeeping is the only write verify ever makes; without the flag it writes nothing.
	 */
	MC_VERIFY_RECORD = 1 << 1,
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
 *   stray         a tree entry the index does not list: "" and what it is ("file of N bytes",
 *                 "directory", "symlink to T", "other")
 *   dangling-link a symlink in the tree whose target does not exist: "" and "symlink to T"; or
 *                 models/NAME (path) points at its tree, which is gone: the target and ""
 *   digest        (MC_VERIFY_DEEP) hex digests, or "unreadable: REASON"
 *   sha256        (MC_VERIFY_DEEP) the SHA-256 the origin published and the file's, in hex
 *   safetensors   (MC_VERIFY_DEEP) a *.safetensors file whose structure is broken (header
 *                 length, JSON, dtype, shape against byte span, spans not tiling the data up
 *                 to the end of the file): what the format wants and what the file has,
 *                 naming the tensor; reported whatever the digest says
 *   orphan-blob   a file under blobs/ the index does not know (whole-cache checks only)
 *   orphan-tmp    a file under tmp/ no download owns (whole-cache checks only)
 *   orphan-link   an entry of models/ that names no model (whole-cache): its link target
 *   orphan-tree   trees/NAME of no model, or trees/NAME/V (or V.json) of no version of it
 *                 (whole-cache checks only)
 * Names starting with '.' in models/ and trees/ are temp names of a publish in progress and
 * are not reported.
 */
struct mc_finding {
	const char *model; /* "" for cache-wide findings (orphan-*) */
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

struct mc_verify_opts {
	const char *const *names; /* the models to check; every model when n is 0 */
	size_t n;
	unsigned flags; /* MC_VERIFY_* */
	/* MC_VERIFY_DEEP: threads reading blobs; 0 for the default (the CPUs, from 2 to 4). */
	unsigned threads;
	void (*cb)(void *ctx, const struct mc_finding *f); /* may be NULL */
	void *ctx;
};

struct mc_verify_result {
	uint64_t findings;
	uint64_t models;       /* models checked (those with a complete version) */
	uint64_t files;	       /* their files */
	uint64_t bytes_hashed; /* MC_VERIFY_DEEP: bytes read and hashed */
	uint64_t hash_ms;      /* MC_VERIFY_DEEP: wall time spent reading and hashing */
	unsigned threads;      /* MC_VERIFY_DEEP: threads that read */
	int64_t at;	       /* when it began (unix seconds), what MC_VERIFY_RECORD records */
};

/*
 * mc_cache_verify() with options and a result. Deep checks read blobs in o->threads threads,
 * each file in parts of 64 MiB with 4 MiB sequential reads (one whole-file pass where a SHA-256
 * is to be checked too); findings are still reported from the calling thread, model by model,
 * in path order. Stops with MC_E_INTERRUPTED once mc_fetch_interrupt() was called, recording
 * nothing. With MC_VERIFY_RECORD the result is written to the index (see above) after the
 * check; a failure to write it is an error. Otherwise as mc_cache_verify(). Fills @res.
 */
int mc_cache_verify2(struct mc_cache *c, const struct mc_verify_opts *o,
		     struct mc_verify_result *res, struct mc_err *err);

/* One model as the metrics see it. */
struct mc_metrics_model {
	char *name;
	const char *state; /* as mc_model_info */
	uint64_t files;
	uint64_t bytes; /* of its current version */
	bool pinned;
	int64_t last_used_at;
	int64_t verified_at;	 /* 0 for never */
	int64_t verify_findings; /* -1 for never */
	bool verify_deep;
};

/* The numbers of a cache at one moment, for `mcache metrics` (metrics.c). */
struct mc_metrics {
	uint64_t usage_bytes;  /* mc_cache_usage(): blobs and temp files */
	uint64_t blobs;	       /* blob rows */
	uint64_t blob_bytes;   /* their bytes, each counted once */
	uint64_t budget_bytes; /* mc_cache_budget(), 0 for none */
	uint64_t downloads;    /* partial downloads (rows) */
	uint64_t models_pinned;
	/* The last verify of the whole cache recorded (MC_VERIFY_RECORD with every model). */
	int64_t verified_at;	 /* 0 for never */
	int64_t verify_findings; /* -1 for never */
	bool verify_deep;
	/* Totals over every pull into this index (counters; a rebuilt index starts at 0). */
	uint64_t pulls_ok;
	uint64_t pulls_failed; /* failed for any reason but usage errors and interruption */
	uint64_t pulls_interrupted;
	uint64_t download_bytes;	/* body bytes received from origins */
	uint64_t download_requests;	/* HTTP requests started */
	uint64_t download_retries;	/* of which retries after a transient failure */
	struct mc_metrics_model *model; /* by name; owned */
	size_t nmodel;
};

/*
 * Reads the numbers of the cache into @m (release it with mc_cache_metrics_release(), also
 * after a failure). Only reads. Returns 0 or a negative code with @err set (MC_E_USAGE for a
 * bad $MCACHE_MAX_BYTES).
 */
int mc_cache_metrics(struct mc_cache *c, struct mc_metrics *m, struct mc_err *err);
void mc_cache_metrics_release(struct mc_metrics *m);

/*
 * Capacity management (gc.c). Usage is the bytes of the cache's blobs (each counted once, however
 * many models share it) plus the space allocated to temp files. A budget caps it: gc evicts
 * least recently used models until usage fits, never a pinned one, the one it is told to keep,
 * or one that a live process is pulling. See cache/README.md, "Garbage collection".
 */

/*
 * Pins (@pinned true) or unpins the model @name: gc never evicts a pinned model (rm still
 * removes it). Returns 0, MC_E_NOTFOUND for an unknown name, or a negative code with @err set.
 */
int mc_cache_pin(struct mc_cache *c, const char *name, bool pinned, struct mc_err *err);

/* Sets *bytes to the cache's usage. Returns 0 or a negative code with @err set. */
int mc_cache_usage(struct mc_cache *c, uint64_t *bytes, struct mc_err *err);

/*
 * Sets *bytes to the configured budget, 0 for none: $MCACHE_MAX_BYTES when set and not empty (a
 * size such as "100G"; anything else is MC_E_USAGE), else the one mc_cache_set_budget() saved
 * in the index. Returns 0 or a negative code with @err set.
 */
int mc_cache_budget(struct mc_cache *c, uint64_t *bytes, struct mc_err *err);

/* Saves @bytes as the cache's budget in the index; 0 removes it. Returns 0 or a code. */
int mc_cache_set_budget(struct mc_cache *c, uint64_t bytes, struct mc_err *err);

/* A model evicted by mc_cache_gc() or removed by mc_cache_rm(); lives until the callback ends. */
struct mc_gc_model {
	const char *name;
	uint64_t bytes;	      /* the bytes of its current version */
	uint64_t freed;	      /* blob bytes freed with it (blobs other models share stay) */
	int64_t last_used_at; /* unix seconds */
};

struct mc_gc_opts {
	uint64_t max_bytes; /* the budget; 0 for none: only garbage is collected */
	const char *keep;   /* a model never evicted (the one just pulled); NULL for none */
	bool dry_run;	    /* change nothing; report what would be removed */
	/* Called for each model evicted (or, in a dry run, that would be); may be NULL. */
	void (*evicted)(void *ctx, const struct mc_gc_model *m);
	void *ctx;
};

/*
 * Collects the cache's garbage, then evicts models while usage exceeds @o->max_bytes.
 * Garbage, always: temp files no download owns, partial downloads abandoned (their process
 * dead) for over 24 hours, versions that are not current and not being pulled by a live
 * process (a superseded one 10 minutes after its successor became current: its readers), and
 * blobs no file references. Then, over budget: the partial downloads of dead processes, oldest
 * first, superseded versions still in those 10 minutes, then whole models least recently used
 * first, skipping pinned models, @o->keep and models a live process is pulling. Fills @res
 * (res->budget_met false when what may not be evicted alone exceeds the budget: not an
 * error). Safe while other processes pull into the same cache. Returns 0 or a negative code
 * with @err set.
 */
int mc_cache_gc(struct mc_cache *c, const struct mc_gc_opts *o, struct mc_gc_result *res,
		struct mc_err *err);

/*
 * Removes the model @name (pinned or not): its models/NAME link, its versions, its trees, then
 * the blobs no other model references. Fills @res. Returns 0, MC_E_NOTFOUND for an unknown
 * name, -EBUSY when another live process is pulling it, or a negative code with @err set.
 */
int mc_cache_rm(struct mc_cache *c, const char *name, struct mc_gc_result *res, struct mc_err *err);

/*
 * Something rebuild-index did or found that the counts alone do not say. Kinds, with path and
 * detail:
 *   moved-aside  "index.db" (or -wal, -shm, -journal): the name it was moved to
 *   quarantined  "blobs/ab/HEX", a blob whose bytes do not match its name: where it was moved
 *                (beneath DIR/quarantine/) and the digest of its content
 *   damaged      "trees/NAME/V/PATH", a file whose bytes are wrong (its blob was quarantined,
 *                or its digest differs from the sidecar's): kept in the index with the digest
 *                it should have, so verify reports it and the next pull fetches it again
 *   missing      "trees/NAME/V/PATH", a file the version's sidecar lists that is not in the
 *                tree: kept in the index the same way
 *   adopted      "trees/NAME/V/PATH", a file that was no blob's link: rehashed and linked into
 *                blobs/ ("blobs/ab/HEX")
 *   no-sidecar   "trees/NAME/V.json" unusable (the reason): sources and validators are lost
 *   skipped      a path left as it is, not in the index (the reason): not a regular file, not
 *                a valid name, a version id another model has, a models/ link that points at
 *                no rebuilt version, a temp file in use
 */
struct mc_rebuild_note {
	const char *kind;
	char *path;
	char *detail;
};

struct mc_rebuild_result {
	/* The old index.db's new name (its -wal/-shm beside it); "" when there was none. */
	char moved_aside[64];
	uint64_t models;
	uint64_t versions;
	uint64_t files;
	uint64_t blobs;		/* blob rows: blobs whose bytes match their name, adopted too */
	uint64_t blobs_adopted; /* tree files that were no blob's link, now blobs */
	uint64_t sidecars;	/* versions whose sources and validators came from a sidecar */
	uint64_t quarantined;	/* blobs moved to DIR/quarantine/: bytes not matching the name */
	uint64_t damaged;	/* files whose bytes are wrong, kept in the index (see notes) */
	uint64_t missing;	/* files a sidecar lists that the tree lacks, kept likewise */
	uint64_t tmp_removed;	/* partial downloads deleted from tmp/ */
	struct mc_rebuild_note *note; /* owned; freed by mc_rebuild_result_release() */
	size_t nnote;
};

/*
 * Rebuilds DIR/index.db from what is on disk, for an index that is missing, not a database, or
 * damaged (mc_cache_open() then fails with MC_E_INDEX naming `mcache rebuild-index`). Works
 * without reading the old index: takes DIR/rebuild.lock exclusively (-EBUSY when another
 * process has the cache open), rehashes every blob (one whose bytes do not match its name is
 * moved to DIR/quarantine/), walks trees/NAME/V/ without following symlinks (a file that is no
 * blob's link is rehashed and linked into blobs/), takes sources and validators from each
 * version's sidecar where its paths and digests agree with the disk, and the current version
 * from models/NAME. The new index is built beside the old one and swapped in; the old index.db
 * (and -wal, -shm) is moved aside to index.db.corrupt-<unix time>, never deleted. Partial
 * downloads in tmp/ are deleted. Nothing cached is dropped: a file whose bytes are gone or wrong
 * stays in the index with the digest it should have (verify reports it; a pull fetches it).
 * @flags: MC_CACHE_* as for mc_cache_open2(). Fills @res (release it with
 * mc_rebuild_result_release(), also after a failure). Returns 0 or a negative code with @err
 * set; on failure before the swap the old index is untouched.
 */
int mc_cache_rebuild_index(const char *dir, unsigned flags, struct mc_rebuild_result *res,
			   struct mc_err *err);

/* Frees the notes of @res; @res may be zeroed or filled. */
void mc_rebuild_result_release(struct mc_rebuild_result *res);

struct mc_tree_entry;

/*
 * One model's current version, opened for materialising elsewhere (mc_cache_open_model). The
 * entries are the version's files (path, size, hex digest, source, etag); tree_fd is a read-only
 * handle on its tree directory, opened beneath the cache without following symlinks: open the
 * files beneath it (mc_fs_open_parent / mc_fs_open_beneath), never through models/NAME.
 */
struct mc_model_view {
	int64_t model_id;
	int64_t version;
	char *source; /* the model's first source, redacted */
	struct mc_tree_entry *entry;
	size_t nentry;
	uint64_t bytes;
	int tree_fd;
};

/* Fields of an entry, for front ends (the struct itself is the cache's). */
const char *mc_model_view_path(const struct mc_model_view *v, size_t i);
uint64_t mc_model_view_size(const struct mc_model_view *v, size_t i);

/*
 * Opens the current version of @name. MC_E_NOTFOUND when the model is unknown or never
 * completed. Release with mc_cache_model_release().
 */
int mc_cache_open_model(struct mc_cache *c, const char *name, struct mc_model_view *v,
			struct mc_err *err);
void mc_cache_model_release(struct mc_model_view *v);
/* Records that the model was used now (LRU for gc): the index's access time, not atime. */
int mc_cache_touch_model(struct mc_cache *c, const struct mc_model_view *v, struct mc_err *err);

/* The cache directory @c was opened on. */
const char *mc_cache_dir(const struct mc_cache *c);

#endif
