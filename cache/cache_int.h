/*
 * Internals of the cache library, shared by its .c files and its unit tests (which drive the
 * pull callbacks directly). Nothing outside cache/ and tests/unit/ includes this header.
 *
 * index.c owns the SQLite connection and its cached prepared statements, store.c the directory
 * handles and every file-system step of the publish protocol, pull.c the fetch callbacks.
 */
#ifndef MC_CACHE_INT_H
#define MC_CACHE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "mc_cache.h"

/* PRAGMA application_id of every mcache index: "MCCH". */
#define MC_INDEX_APP_ID 0x4d434348
/* PRAGMA user_version this build writes; older indexes are migrated on open. */
#define MC_INDEX_VERSION 5
/*
 * A session that cannot be checked by its pid (another PID namespace or node) is alive while it
 * writes a heartbeat at least this often; live sessions write one every MC_HEARTBEAT_S.
 */
#define MC_LEASE_TTL_S 30
#define MC_HEARTBEAT_S 5
/* How often a pull waiting for another process's download looks at the index again. */
#define MC_WAIT_POLL_MS 200
/* "ab/" + 32 hex digits + NUL: a blob's path beneath blobs/. */
#define MC_BLOB_REL_MAX (3 + MC_DIGEST_HEX)

/* Every statement the library runs, prepared once per connection (index.c holds the SQL). */
enum mc_stmt {
	MC_STMT_BEGIN,
	MC_STMT_COMMIT,
	MC_STMT_ROLLBACK,
	MC_STMT_MODEL_UPSERT,
	MC_STMT_MODEL_GET,
	MC_STMT_MODEL_SET_CURRENT,
	MC_STMT_MODEL_TOUCH,
	MC_STMT_MODELS_LIST,
	MC_STMT_VERSION_INSERT,
	MC_STMT_VERSION_STATE,
	MC_STMT_VERSION_SET_TAG,
	MC_STMT_VERSION_DELETE,
	MC_STMT_VERSION_TOTALS,
	MC_STMT_VERSION_SAME,
	MC_STMT_REUSE_FIND,
	MC_STMT_KNOWN_FILE,
	MC_STMT_DOWNLOAD_GET,
	MC_STMT_DOWNLOAD_INSERT,
	MC_STMT_DOWNLOAD_SET_TMP,
	MC_STMT_DOWNLOAD_SET_DIGEST,
	MC_STMT_DOWNLOAD_CLAIM,
	MC_STMT_DOWNLOAD_DELETE,
	MC_STMT_DOWNLOAD_BY_TMP,
	MC_STMT_SPANS_GET,
	MC_STMT_SPAN_INSERT,
	MC_STMT_BLOB_GET,
	MC_STMT_BLOB_UPSERT,
	MC_STMT_FILE_INSERT,
	MC_STMT_FILES_OF_VERSION,
	MC_STMT_BUNDLE_REUSE_FIND,
	MC_STMT_BUNDLE_KNOWN,
	MC_STMT_BUNDLE_INSERT,
	MC_STMT_COUNT
};

struct mc_cache {
	char *dir;	  /* as given to mc_cache_open() */
	char *index_path; /* DIR/index.db, for messages */
	unsigned flags;	  /* MC_CACHE_* given to mc_cache_open2() */
	int dirfd;
	int blobs_fd;
	int tmp_fd;
	int trees_fd;
	int models_fd;
	int lock_fd; /* DIR/rebuild.lock, flock()ed shared while open (rebuild.c) */
	sqlite3 *db;
	sqlite3_stmt *stmt[MC_STMT_COUNT];
	char boot_id[40];     /* /proc/sys/kernel/random/boot_id, "" when unknown */
	uint64_t pid_ns;      /* inode of /proc/self/ns/pid, 0 when unknown */
	uint64_t start_ticks; /* this process's start time (/proc/self/stat field 22) */
	int64_t session_id;   /* our sessions row, 0 before mc_session_open() */
	int64_t heartbeat_at; /* unix seconds of our last heartbeat */
	bool unclean;	      /* a session of a process that died was found at open */
};

/* lease.c: sessions (one per process with the cache open) and the leases they hold. */

/*
 * Records this process as a session, reaps the sessions of processes that died (their leases
 * become free) and sets c->unclean when there were any; then runs mc_index_quick_check() before
 * committing, so that a damaged index keeps failing every open until it is rebuilt.
 */
int mc_session_open(struct mc_cache *c, struct mc_err *err);
/* Deletes our session row: a clean close. */
void mc_session_close(struct mc_cache *c);
/* Writes our heartbeat when the last one is MC_HEARTBEAT_S old (or @force). */
int mc_session_heartbeat(struct mc_cache *c, bool force, struct mc_err *err);
/*
 * True when session @id belongs to a live process: by its pid and start time when it runs in
 * our boot and PID namespace, else by a heartbeat younger than MC_LEASE_TTL_S. Our own session
 * is alive; id 0 or a reaped session is not. Errors reading the index count as alive (the safe
 * answer: wait rather than take over).
 */
bool mc_session_alive(struct mc_cache *c, int64_t id);

/* index.c */

/* Opens or creates DIR/index.db, refusing a file that is not an mcache index. */
int mc_index_open(struct mc_cache *c, struct mc_err *err);
/*
 * PRAGMA quick_check, run when the last process did not close cleanly: MC_E_INDEX, naming
 * `mcache rebuild-index`, when the index is damaged.
 */
int mc_index_quick_check(struct mc_cache *c, struct mc_err *err);
/*
 * Commits are synchronous=FULL: what they record (published blobs, progress) must survive a
 * power cut. Bookkeeping that may be lost with the machine (session rows, access times) is
 * written between mc_index_durable(c, false) and mc_index_durable(c, true): no fsync on its
 * commits, which is most of a warm start's cost.
 */
void mc_index_durable(struct mc_cache *c, bool full);
/* Finalizes the cached statements and closes the connection. */
void mc_index_close(struct mc_cache *c);
/* Returns in *out the cached statement @id, reset and with its bindings cleared. */
int mc_index_stmt(struct mc_cache *c, enum mc_stmt id, sqlite3_stmt **out, struct mc_err *err);
/*
 * Turns the SQLite result @rc into a code (-ENOSPC, -EIO, -EBUSY, -ENOMEM, MC_E_INDEX...) and
 * records "cannot <what> in 'DIR/index.db': <sqlite message>" in @err.
 */
int mc_index_fail(struct mc_cache *c, int rc, struct mc_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Steps @s, which must finish (SQLITE_DONE), and resets it. */
int mc_index_exec(struct mc_cache *c, sqlite3_stmt *s, const char *what, struct mc_err *err);
/* BEGIN IMMEDIATE, COMMIT, and a ROLLBACK that cannot fail the caller further. */
int mc_index_begin(struct mc_cache *c, struct mc_err *err);
int mc_index_commit(struct mc_cache *c, struct mc_err *err);
void mc_index_rollback(struct mc_cache *c);
/* Text column @i of the current row, "" for NULL. */
const char *mc_index_text(sqlite3_stmt *s, int i);

/* store.c */

/* Writes "ab/<hex>" for @digest into @rel (MC_BLOB_REL_MAX bytes) and the hex into @hex. */
void mc_store_blob_rel(const uint8_t digest[MC_DIGEST_LEN], char *hex, char *rel);
/* Same from a hex digest, which must be 32 hex digits; returns 0 or MC_E_INDEX. */
int mc_store_blob_rel_hex(const char *hex, char *rel);
/*
 * Opens the directory @name (one component) beneath @dirfd without following symlinks, creating
 * it first when @create; *created tells whether this call made it. Returns an fd or -errno.
 */
int mc_store_open_dir(int dirfd, const char *name, bool create, bool *created);
/*
 * Opens the parent directory of the relative path @path beneath @dirfd, component by component,
 * never following a symlink (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where the kernel has
 * it). Sets *leaf to the last component inside @path. Returns an fd (a dup of @dirfd for a
 * one-component path) or -errno.
 */
int mc_store_open_parent(int dirfd, const char *path, const char **leaf);
/* Creates tmp/@name (O_EXCL, 0600) preallocated to @size bytes; returns 0 and *fd, or -errno. */
int mc_store_tmp_create(struct mc_cache *c, const char *name, uint64_t size, const char *label,
			int *fd, struct mc_err *err);
/*
 * Publishes the complete, fsynced tmp/@tmp_name (open as @fd) as blobs/ab/<hex>: read-only,
 * renamed, directories fsynced. When a blob the index vouches for (@indexed, its row matched by
 * stat) already holds these bytes the temp file is removed instead and *dedup set. *st receives
 * the stat of the blob now in place.
 */
int mc_store_blob_publish(struct mc_cache *c, int fd, const char *tmp_name,
			  const uint8_t digest[MC_DIGEST_LEN], bool indexed, struct stat *st,
			  bool *dedup, struct mc_err *err);
/* True when blobs/@rel exists as a regular file with this size, inode and mtime. */
bool mc_store_blob_matches(struct mc_cache *c, const char *rel, uint64_t size, uint64_t inode,
			   int64_t mtime_ns);
/* st_mtim as nanoseconds since the epoch. */
int64_t mc_store_mtime_ns(const struct stat *st);

/* One file of a version's tree: its path in the model and the blob it links to. */
struct mc_tree_entry {
	char *path;
	char *source; /* redacted URL or s3:// / hf:// identity */
	char *etag;   /* "" when none */
	char hex[MC_DIGEST_HEX];
	uint64_t size;
	uint64_t inode;
	int64_t mtime_ns;
};

/*
 * Builds trees/@name/@version/ from @e[0..n): hard links to the blobs, every directory created
 * then fsynced. On failure removes what it made.
 */
int mc_store_tree_build(struct mc_cache *c, const char *name, int64_t version,
			const struct mc_tree_entry *e, size_t n, struct mc_err *err);
/* Removes trees/@name/@version/ as built from @e[0..n), best effort. */
void mc_store_tree_remove(struct mc_cache *c, const char *name, int64_t version,
			  const struct mc_tree_entry *e, size_t n);
/* True when trees/@name/@version/ holds every entry, linked to its blob, and models/@name
 * points at it. */
bool mc_store_tree_is_intact(struct mc_cache *c, const char *name, int64_t version,
			     const struct mc_tree_entry *e, size_t n);
/* Points models/@name at ../trees/@name/@version atomically and fsyncs models/. */
int mc_store_link_swap(struct mc_cache *c, const char *name, int64_t version, struct mc_err *err);
/* Writes the symlink target models/@name should have into @buf. */
void mc_store_link_target(const char *name, int64_t version, char *buf, size_t len);

/* A model as listed: its current version, or for one never completed its latest attempt. */
struct mc_model_row {
	char *name;
	char *state; /* of the version below */
	bool pinned;
	int64_t created_at;
	int64_t last_used_at;
	int64_t current; /* 0 when the model never completed */
	int64_t version;
	int64_t verified_at;	 /* the last recorded verify (unix seconds), 0 for never */
	int64_t verify_findings; /* its findings in this model, -1 for never */
	bool verify_deep;	 /* it was a deep one */
};

/* Reads every model, by name, into *out (freed with mc_model_rows_free). */
int mc_index_models(struct mc_cache *c, struct mc_model_row **out, size_t *n, struct mc_err *err);
void mc_model_rows_free(struct mc_model_row *r, size_t n);

/* Reads the entries of @version ordered by path into *out (freed with mc_tree_entries_free). */
int mc_index_tree_entries(struct mc_cache *c, int64_t version, struct mc_tree_entry **out,
			  size_t *n, struct mc_err *err);
void mc_tree_entries_free(struct mc_tree_entry *e, size_t n);

/* pull.c: the fetch callbacks and the steps of a pull, callable one by one from tests. */

/* One remote object of a pull; f.user points back at it. */
struct mc_pull_file {
	struct mc_fetch_file f;
	char *source;	     /* redacted URL: the identity of the object in the index */
	char *path;	     /* file path in the model */
	int64_t download_id; /* the downloads row in use, 0 for none */
	char tmp_name[32];   /* its file beneath tmp/ */
	bool recorded;	     /* a files row exists for this version */
	bool reused;	     /* the bytes came from a blob already in the cache */
	bool resumed;	     /* open found durable blocks of an earlier run */
	bool deferred;	     /* another live process is downloading it: wait, then look again */
	bool taken_over;     /* resumed from a process presumed dead: rehash before publish */
	uint64_t fetched;    /* bytes received in earlier rounds of this pull */
	bool size_listed;    /* the source listed the object's size: listed_size */
	uint64_t listed_size;
	char sha256[65]; /* the SHA-256 the origin publishes, checked before publishing */
	/*
	 * A tar bundle (bundle.c): its blob is recorded in `bundles`, not `files`, and its
	 * entries become the model's files when the pull publishes.
	 */
	bool bundle;
	bool unpacked;			/* its entries were unpacked by this run (not copied) */
	char bundle_hex[MC_DIGEST_HEX]; /* its blob, once recorded */
	uint64_t entries;		/* files rows its entries gave this version */
	uint64_t entries_reused;	/* of those, files whose bytes were already cached */
};

struct mc_pull {
	struct mc_cache *c;
	char name[129];
	int64_t model_id;
	int64_t version;
	int64_t prev_version; /* the current version when the pull began, 0 for none */
	struct mc_pull_file *file;
	size_t nfile;
	/* For bundles (bundle.c): limits (zero fields: the defaults) and the entries wanted. */
	struct mc_bundle_limits limits;
	const char *const *include;
	size_t ninclude;
	const char *const *exclude;
	size_t nexclude;
};

extern const struct mc_fetch_ops mc_pull_ops;

/*
 * Upserts the model @name (first source @source) and inserts a 'pulling' version; @p owns
 * @nfile zeroed files (fd -1) to be filled by mc_pull_file_set().
 */
int mc_pull_begin(struct mc_pull *p, struct mc_cache *c, const char *name, const char *source,
		  size_t nfile, struct mc_err *err);
/*
 * Fills file @i of @p: @url (kept, not copied), its redacted @source and @path (copied), and
 * f.known from the index (a complete copy, else a partial download) for a conditional probe.
 */
int mc_pull_file_set(struct mc_pull *p, size_t i, const char *url, const char *source,
		     const char *path, struct mc_err *err);
/*
 * After every file is done or skipped: builds the tree, swaps models/NAME and makes the
 * version current, or keeps the current version when it already has the same files, intact.
 */
int mc_pull_publish(struct mc_pull *p, struct mc_err *err);
/* Marks the version failed; download rows and temp files stay for a resume. */
void mc_pull_fail(struct mc_pull *p);
/* Sets *indexed when the index has a row for blob @hex and blobs/@rel still matches it. */
int mc_pull_blob_is_indexed(struct mc_pull *p, const char *hex, const char *rel, bool *indexed,
			    struct mc_err *err);

/* bundle.c: tar bundles, unpacked into the model's tree (see cache/README.md, "Bundles"). */

/* The length of @path's bundle extension (.tar, .tar.gz, .tgz, .tar.zst), 0 for none. */
size_t mc_bundle_ext_len(const char *path);
/* True when the URI @uri (its path, without query or fragment) names a bundle by extension. */
bool mc_bundle_uri_is_bundle(const char *uri);
/*
 * The limits a pull applies: each field of @in when set, else its MCACHE_BUNDLE_* variable,
 * else the default. Returns 0 or MC_E_USAGE for a bad variable.
 */
int mc_bundle_limits_resolve(const struct mc_bundle_limits *in, struct mc_bundle_limits *out,
			     struct mc_err *err);
/* Records the blob @hex of the bundle @pf for this version (a `bundles` row), in a transaction. */
int mc_bundle_record(struct mc_pull *p, struct mc_pull_file *pf, const char *hex,
		     struct mc_err *err);
/*
 * After every object arrived: gives the version the files of each bundle, copied from an
 * earlier unpack of the same blob (same entry filter) whose files are intact, else unpacked
 * from the blob with every check of cache/README.md. MC_E_ORIGIN names the first entry refused;
 * what was published for earlier entries is left to gc (the version is not current).
 */
int mc_bundle_unpack_all(struct mc_pull *p, struct mc_err *err);

/* Records @tag (the source's resolved revision, e.g. an HF commit) on the pull's version. */
int mc_pull_set_tag(struct mc_pull *p, const char *tag, struct mc_err *err);
/* Closes any fd still open and frees @p's memory. */
void mc_pull_release(struct mc_pull *p);

/* gc.c: what pull.c asks of capacity management. */

/*
 * mc_store_tmp_create(); when the filesystem lacks room for @size bytes, one gc that keeps the
 * model @keep and frees the shortfall (if a dry run says it can), then one more try.
 */
int mc_gc_tmp_create(struct mc_cache *c, const char *keep, const char *name, uint64_t size,
		     const char *label, int *fd, struct mc_err *err);
/* After a successful pull of @res->name: with a budget configured, gc keeping that model. */
void mc_gc_after_pull(struct mc_cache *c, struct mc_pull_result *res);

/* sidecar.c: the sidecar trees/NAME/<version>.json of each version (see cache/README.md). */

struct json_t;

/*
 * Writes trees/@name/@version.json beneath @mfd (the open trees/@name) atomically, from the
 * index's rows of that version and its model: sources, validators, digests, SHA-256, tag,
 * times, pin. Called when the version's tree is built.
 */
int mc_sidecar_write(struct mc_cache *c, int mfd, const char *name, int64_t version,
		     struct mc_err *err);
/*
 * Rewrites the sidecar of @name's current version (none: nothing to do), for a change of what
 * it records after the tree was built, such as the pin.
 */
int mc_sidecar_rewrite(struct mc_cache *c, const char *name, struct mc_err *err);

/* A sidecar as read back; strings point into @root and live until mc_sidecar_release(). */
struct mc_sidecar {
	struct json_t *root;
	struct json_t *by_path; /* path -> file entry; the rebuild deletes the ones it used */
	const char *source;	/* the model's source */
	const char *tag;
	bool pinned;
	int64_t model_created_at;
	int64_t created_at;
	int64_t completed_at;
};

/* One file entry of a sidecar. */
struct mc_sidecar_file {
	const char *path, *source, *etag, *last_modified, *digest, *sha256;
	uint64_t size;
};

/*
 * Reads trees/@name/@version.json beneath @mfd into @m. Returns 0; -ENOENT (or another -errno)
 * when it cannot be read; MC_E_INDEX when it is not a valid sidecar of that version; -ENOMEM.
 * On failure @why says why (for a report) and @m holds nothing.
 */
int mc_sidecar_read(int mfd, const char *name, int64_t version, struct mc_sidecar *m, char *why,
		    size_t whylen);
void mc_sidecar_release(struct mc_sidecar *m);
/* Fills @f from the file entry @o; false when @o is not a valid entry. */
bool mc_sidecar_file_get(const struct json_t *o, struct mc_sidecar_file *f);

/* rebuild.c: the lock that keeps every other process out while rebuild-index runs. */

/*
 * mc_cache_open2() flag for rebuild.c only: open the directory and its layout, take the rebuild
 * lock exclusively (-EBUSY when any other process has the cache open), and stop before the index.
 */
#define MC_CACHE_LAYOUT_ONLY (1u << 31)

/*
 * Takes DIR/rebuild.lock: shared (@exclusive false), waiting while a rebuild runs, as every
 * mc_cache_open() does; then refuses, naming `mcache rebuild-index`, to create a fresh index
 * when index.db is missing or empty but trees/ holds models (the index was lost, not new).
 * Exclusive (rebuild-index itself): at once, or -EBUSY.
 */
int mc_rebuild_guard(struct mc_cache *c, bool exclusive, struct mc_err *err);

/* metrics.c: counters in the index's `stats` table, for `mcache metrics`. */

/*
 * Adds one pull's outcome (@ret: ok, interrupted or failed; a usage error is not counted) and
 * its transfer stats @st (may be NULL) to the counters. Best effort and without fsync: a
 * pull's result never depends on its bookkeeping. Called at the end of mc_cache_pull().
 */
void mc_metrics_count_pull(struct mc_cache *c, const struct mc_fetch_stats *st, int ret);

/*
 * list.c: the state of the model of row @r as ls and metrics show it: "complete" (it has a
 * current version), else its latest attempt's: "pulling" (a live process pulls it), "partial"
 * (the process pulling it died: its downloads wait for a resume) or "failed". A static string.
 */
const char *mc_model_state(struct mc_cache *c, const struct mc_model_row *r);

#endif
