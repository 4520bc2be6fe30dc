/*
 * The SQLite index: opening it without harming a file that is not ours, the schema and its
 * migrations, the cached prepared statements, and the mapping of SQLite errors to mcache codes.
 *
 * The index is the truth of the cache; the directories are derived from it. An existing
 * index.db is only read until its application_id says it is an mcache index (or it is a brand
 * new, empty database), so a foreign or corrupt file is refused and never modified. Every
 * schema change is a migration from user_version N to N + 1; creating the schema is the
 * migration from 0. Statements are prepared once per connection and reused.
 */
#include "cache_int.h"

#include "mc_alloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

/* SQLite 3.31 and later refuse a database path that is a symlink; older ones get store.c's
 * lstat check alone. */
#ifdef SQLITE_OPEN_NOFOLLOW
#define OPEN_NOFOLLOW SQLITE_OPEN_NOFOLLOW
#else
#define OPEN_NOFOLLOW 0
#endif

/*
 * migrations[v] upgrades schema v to v + 1. Tables are built for what later features need:
 * chunk-level resume (download_spans), several processes sharing one cache (downloads.owner_*,
 * heartbeat_at), versions, LRU eviction (last_used_at) and pins. Digests are lowercase hex.
 */
static const char *const migrations[MC_INDEX_VERSION] = {
    "CREATE TABLE models("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " source TEXT NOT NULL,"
    " current_version INTEGER REFERENCES versions(id) ON DELETE SET NULL,"
    " pinned INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " last_used_at INTEGER NOT NULL);"
    "CREATE TABLE versions("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " model_id INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,"
    " state TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " completed_at INTEGER,"
    " checked_at INTEGER,"
    " tag TEXT);"
    "CREATE INDEX versions_model ON versions(model_id);"
    "CREATE TABLE blobs("
    " digest TEXT PRIMARY KEY,"
    " size INTEGER NOT NULL,"
    " sha256 TEXT,"
    " inode INTEGER NOT NULL,"
    " mtime_ns INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE files("
    " version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,"
    " path TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " etag TEXT NOT NULL DEFAULT '',"
    " last_modified TEXT NOT NULL DEFAULT '',"
    " digest TEXT NOT NULL REFERENCES blobs(digest),"
    " sha256 TEXT,"
    " PRIMARY KEY(version_id, path)) WITHOUT ROWID;"
    "CREATE INDEX files_digest ON files(digest);"
    "CREATE INDEX files_source ON files(source, etag);"
    "CREATE TABLE downloads("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " source TEXT NOT NULL UNIQUE,"
    " size INTEGER NOT NULL,"
    " etag TEXT NOT NULL DEFAULT '',"
    " last_modified TEXT NOT NULL DEFAULT '',"
    " tmp_name TEXT UNIQUE,"
    " owner_pid INTEGER,"
    " owner_boot_id TEXT,"
    " heartbeat_at INTEGER,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE download_spans("
    " download_id INTEGER NOT NULL REFERENCES downloads(id) ON DELETE CASCADE,"
    " first_block INTEGER NOT NULL,"
    " nblocks INTEGER NOT NULL CHECK(nblocks > 0),"
    " digests BLOB NOT NULL CHECK(length(digests) = nblocks * 16),"
    " PRIMARY KEY(download_id, first_block)) WITHOUT ROWID;",
    /*
     * 1 → 2: a download's digest, recorded before its temp file is renamed into blobs/, so
     * that a run killed between that rename and the index commit adopts the published blob
     * instead of downloading the object again.
     */
    "ALTER TABLE downloads ADD COLUMN digest TEXT;",
    /*
     * 2 → 3: processes sharing the cache. A session is one process with the index open; a
     * download or a version in the making is leased to a session (see lease.c). A session row
     * left by a process that died tells the next one that the last run did not close cleanly.
     */
    "CREATE TABLE sessions("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " pid INTEGER NOT NULL,"
    " boot_id TEXT NOT NULL,"
    " pid_ns INTEGER NOT NULL,"
    " start_ticks INTEGER NOT NULL,"
    " started_at INTEGER NOT NULL,"
    " heartbeat_at INTEGER NOT NULL);"
    "ALTER TABLE downloads DROP COLUMN owner_pid;"
    "ALTER TABLE downloads DROP COLUMN owner_boot_id;"
    "ALTER TABLE downloads DROP COLUMN heartbeat_at;"
    "ALTER TABLE downloads ADD COLUMN session_id INTEGER;"
    "ALTER TABLE versions ADD COLUMN session_id INTEGER;"
    "CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
    /*
     * 3 → 4: the audit. Each model's last recorded verify (time, its findings in that model,
     * deep or fast), and `stats`, integers for the metrics: totals of pulls (counters, updated
     * at the end of each pull) and the last verify of the whole cache (verify.c, metrics.c).
     */
    "ALTER TABLE models ADD COLUMN verified_at INTEGER;"
    "ALTER TABLE models ADD COLUMN verify_findings INTEGER;"
    "ALTER TABLE models ADD COLUMN verify_deep INTEGER;"
    "CREATE TABLE stats(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;",
    /*
     * 4 → 5: tar bundles (bundle.c). The archive a version's files were unpacked from stays a
     * blob, referenced here rather than by a files row (consumers see only its entries), so
     * that a re-pull of the same object neither downloads nor unpacks it again. `filter` is
     * the entry selection it was unpacked with; `entries` the files it gave, NULL until then.
     */
    "CREATE TABLE bundles("
    " version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,"
    " source TEXT NOT NULL,"
    " size INTEGER NOT NULL,"
    " etag TEXT NOT NULL DEFAULT '',"
    " last_modified TEXT NOT NULL DEFAULT '',"
    " digest TEXT NOT NULL REFERENCES blobs(digest),"
    " sha256 TEXT,"
    " filter TEXT NOT NULL DEFAULT '',"
    " entries INTEGER,"
    " PRIMARY KEY(version_id, source)) WITHOUT ROWID;"
    "CREATE INDEX bundles_source ON bundles(source, etag);"
    "CREATE INDEX bundles_digest ON bundles(digest);",
};

static const char *const stmt_sql[MC_STMT_COUNT] = {
    [MC_STMT_BEGIN] = "BEGIN IMMEDIATE",
    [MC_STMT_COMMIT] = "COMMIT",
    [MC_STMT_ROLLBACK] = "ROLLBACK",
    [MC_STMT_MODEL_UPSERT] = "INSERT INTO models(name, source, created_at, last_used_at)"
			     " VALUES(?1, ?2, ?3, ?3)"
			     " ON CONFLICT(name) DO UPDATE SET source = excluded.source",
    [MC_STMT_MODEL_GET] = "SELECT id, coalesce(current_version, 0) FROM models WHERE name = ?1",
    [MC_STMT_MODEL_SET_CURRENT] = "UPDATE models SET current_version = ?2, last_used_at = ?3"
				  " WHERE id = ?1",
    [MC_STMT_MODEL_TOUCH] = "UPDATE models SET last_used_at = ?2 WHERE id = ?1",
    /* The current version, or for a model never completed its latest attempt. */
    [MC_STMT_MODELS_LIST] =
	"SELECT m.name, m.pinned, m.created_at, m.last_used_at,"
	" coalesce(m.current_version, 0), coalesce(v.id, 0), coalesce(v.state, 'pulling'),"
	" coalesce(m.verified_at, 0), coalesce(m.verify_findings, -1), coalesce(m.verify_deep, 0)"
	" FROM models m LEFT JOIN versions v ON v.id = coalesce(m.current_version,"
	"  (SELECT max(id) FROM versions WHERE model_id = m.id))"
	" ORDER BY m.name",
    [MC_STMT_VERSION_INSERT] = "INSERT INTO versions(model_id, state, created_at, session_id)"
			       " VALUES(?1, 'pulling', ?2, ?3)",
    [MC_STMT_VERSION_STATE] = "UPDATE versions SET state = ?2, completed_at = ?3,"
			      " checked_at = coalesce(?3, checked_at), session_id = NULL"
			      " WHERE id = ?1",
    [MC_STMT_VERSION_SET_TAG] = "UPDATE versions SET tag = ?2 WHERE id = ?1",
    [MC_STMT_VERSION_DELETE] = "DELETE FROM versions WHERE id = ?1",
    [MC_STMT_VERSION_TOTALS] = "SELECT count(*), coalesce(sum(size), 0) FROM files"
			       " WHERE version_id = ?1",
    [MC_STMT_VERSION_SAME] = "SELECT count(*) FROM files a JOIN files b"
			     " ON b.version_id = ?2 AND b.path = a.path AND b.digest = a.digest"
			     " WHERE a.version_id = ?1",
    /*
     * The same object as a file already cached: same source and size, and the same strong
     * validator (a non-empty ETag), or (?5: the origin answered 304 to If-Modified-Since) the
     * same Last-Modified.
     */
    [MC_STMT_REUSE_FIND] = "SELECT b.digest, b.size, b.inode, b.mtime_ns"
			   " FROM files f JOIN blobs b ON b.digest = f.digest"
			   " WHERE f.source = ?1 AND f.size = ?3 AND b.size = ?3 AND f.etag = ?2"
			   " AND (?2 <> '' OR (?5 AND ?4 <> '' AND f.last_modified = ?4))"
			   " ORDER BY f.version_id DESC LIMIT 1",
    [MC_STMT_KNOWN_FILE] = "SELECT f.size, f.etag, f.last_modified, b.digest, b.inode,"
			   " b.mtime_ns FROM files f JOIN blobs b ON b.digest = f.digest"
			   " WHERE f.source = ?1 AND (f.etag <> '' OR f.last_modified <> '')"
			   " ORDER BY f.version_id DESC LIMIT 1",
    [MC_STMT_DOWNLOAD_GET] = "SELECT id, size, etag, last_modified, coalesce(tmp_name, ''),"
			     " coalesce(session_id, 0), coalesce(digest, '')"
			     " FROM downloads WHERE source = ?1",
    [MC_STMT_DOWNLOAD_INSERT] = "INSERT INTO downloads(source, size, etag, last_modified,"
				" session_id, created_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    [MC_STMT_DOWNLOAD_SET_TMP] = "UPDATE downloads SET tmp_name = ?2 WHERE id = ?1",
    [MC_STMT_DOWNLOAD_SET_DIGEST] = "UPDATE downloads SET digest = ?2"
				    " WHERE id = ?1 AND session_id = ?3",
    /* Compare and swap: only the lease seen dead (?3) is taken over. */
    [MC_STMT_DOWNLOAD_CLAIM] = "UPDATE downloads SET session_id = ?2"
			       " WHERE id = ?1 AND coalesce(session_id, 0) = ?3",
    [MC_STMT_DOWNLOAD_DELETE] = "DELETE FROM downloads WHERE id = ?1",
    [MC_STMT_DOWNLOAD_BY_TMP] = "SELECT 1 FROM downloads WHERE tmp_name = ?1",
    [MC_STMT_SPANS_GET] = "SELECT first_block, nblocks, digests FROM download_spans"
			  " WHERE download_id = ?1 ORDER BY first_block",
    [MC_STMT_SPAN_INSERT] = "INSERT OR REPLACE INTO download_spans"
			    "(download_id, first_block, nblocks, digests) VALUES(?1, ?2, ?3, ?4)",
    [MC_STMT_BLOB_GET] = "SELECT size, inode, mtime_ns FROM blobs WHERE digest = ?1",
    [MC_STMT_BLOB_UPSERT] = "INSERT INTO blobs(digest, size, inode, mtime_ns, created_at)"
			    " VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(digest) DO UPDATE SET"
			    " size = excluded.size, inode = excluded.inode,"
			    " mtime_ns = excluded.mtime_ns",
    [MC_STMT_FILE_INSERT] = "INSERT OR REPLACE INTO files(version_id, path, source, size, etag,"
			    " last_modified, digest, sha256) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7,"
			    " nullif(?8, ''))",
    [MC_STMT_FILES_OF_VERSION] = "SELECT f.path, f.size, f.digest, f.source, f.etag,"
				 " b.inode, b.mtime_ns"
				 " FROM files f JOIN blobs b ON b.digest = f.digest"
				 " WHERE f.version_id = ?1 ORDER BY f.path",
    /* MC_STMT_REUSE_FIND and MC_STMT_KNOWN_FILE for a bundle: same bindings, same columns. */
    [MC_STMT_BUNDLE_REUSE_FIND] =
	"SELECT b.digest, b.size, b.inode, b.mtime_ns"
	" FROM bundles u JOIN blobs b ON b.digest = u.digest"
	" WHERE u.source = ?1 AND u.size = ?3 AND b.size = ?3 AND u.etag = ?2"
	" AND (?2 <> '' OR (?5 AND ?4 <> '' AND u.last_modified = ?4))"
	" ORDER BY u.version_id DESC LIMIT 1",
    [MC_STMT_BUNDLE_KNOWN] = "SELECT u.size, u.etag, u.last_modified, b.digest, b.inode,"
			     " b.mtime_ns FROM bundles u JOIN blobs b ON b.digest = u.digest"
			     " WHERE u.source = ?1 AND (u.etag <> '' OR u.last_modified <> '')"
			     " ORDER BY u.version_id DESC LIMIT 1",
    [MC_STMT_BUNDLE_INSERT] = "INSERT OR REPLACE INTO bundles(version_id, source, size, etag,"
			      " last_modified, digest, sha256, filter) VALUES(?1, ?2, ?3, ?4, ?5,"
			      " ?6, nullif(?7, ''), ?8)",
};

static int code_of(sqlite3 *db, int rc)
{
	int sys = db ? sqlite3_system_errno(db) : 0;
	int code;

	switch (rc & 0xff) {
	case SQLITE_FULL:
		code = -ENOSPC;
		break;
	case SQLITE_NOMEM:
		code = -ENOMEM;
		break;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		code = -EBUSY;
		break;
	case SQLITE_PERM:
	case SQLITE_AUTH:
	case SQLITE_READONLY:
		code = -EACCES;
		break;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN:
		code = sys > 0 ? -sys : -EIO;
		break;
	default:
		code = MC_E_INDEX;
		break;
	}
	return code;
}

int mc_index_fail(struct mc_cache *c, int rc, struct mc_err *err, const char *fmt, ...)
{
	char what[MC_ERR_MAX];
	const char *msg = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	/* A stale message from an earlier call would mislead; SQLite's own text for @rc will not.
	 */
	if (c->db && sqlite3_errcode(c->db) != rc)
		msg = sqlite3_errstr(rc);
	return mc_err_set(err, code_of(c->db, rc), "cannot %s in '%s': %s", what, c->index_path,
			  msg);
}

const char *mc_index_text(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);

	return t ? (const char *)t : "";
}

int mc_index_stmt(struct mc_cache *c, enum mc_stmt id, sqlite3_stmt **out, struct mc_err *err)
{
	int rc, ret = 0;

	if (!c->stmt[id]) {
		rc = sqlite3_prepare_v3(c->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT,
					&c->stmt[id], NULL);
		if (rc != SQLITE_OK) {
			ret = mc_index_fail(c, rc, err, "prepare a statement");
			goto out;
		}
	}
	sqlite3_reset(c->stmt[id]);
	sqlite3_clear_bindings(c->stmt[id]);
	*out = c->stmt[id];
out:
	return ret;
}

int mc_index_exec(struct mc_cache *c, sqlite3_stmt *s, const char *what, struct mc_err *err)
{
	int rc = sqlite3_step(s), ret = 0;

	if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "%s", what);
	sqlite3_reset(s);
	return ret;
}

static int run_simple(struct mc_cache *c, enum mc_stmt id, const char *what, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(c, id, &s, err);
	if (ret)
		goto out;
	ret = mc_index_exec(c, s, what, err);
out:
	return ret;
}

int mc_index_begin(struct mc_cache *c, struct mc_err *err)
{
	return run_simple(c, MC_STMT_BEGIN, "begin a transaction", err);
}

int mc_index_commit(struct mc_cache *c, struct mc_err *err)
{
	return run_simple(c, MC_STMT_COMMIT, "commit a transaction", err);
}

void mc_index_rollback(struct mc_cache *c)
{
	/* A failed COMMIT or statement may already have ended the transaction. */
	if (!sqlite3_get_autocommit(c->db))
		run_simple(c, MC_STMT_ROLLBACK, "roll back a transaction", NULL);
}

/* Runs a one-row integer query such as "PRAGMA user_version" into *out. */
static int query_int(struct mc_cache *c, const char *sql, int64_t *out)
{
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(c->db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		ret = rc;
		goto out;
	}
	*out = sqlite3_column_int64(s, 0);
out:
	sqlite3_finalize(s);
	return ret;
}

/* The header fields that tell whose database this is; returns 0 or a SQLite result code. */
struct header {
	int64_t app_id;
	int64_t version;
	int64_t objects;
};

/*
 * In one read transaction: another process creating the schema at the same moment must not be
 * seen half-way (tables there, application_id not yet).
 */
static int read_header(struct mc_cache *c, struct header *h)
{
	bool own = sqlite3_get_autocommit(c->db);
	int rc = SQLITE_OK;

	if (own)
		rc = sqlite3_exec(c->db, "BEGIN", NULL, NULL, NULL);
	if (!rc)
		rc = query_int(c, "PRAGMA application_id", &h->app_id);
	if (!rc)
		rc = query_int(c, "PRAGMA user_version", &h->version);
	if (!rc)
		rc = query_int(c, "SELECT count(*) FROM sqlite_schema", &h->objects);
	if (own && !sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, rc ? "ROLLBACK" : "COMMIT", NULL, NULL, NULL);
	return rc;
}

/* Refuses a database that is neither an mcache index nor brand new and empty. */
static int check_header(struct mc_cache *c, const struct header *h, struct mc_err *err)
{
	int ret = 0;

	if (h->app_id == 0 && h->version == 0 && h->objects == 0)
		goto out;
	if (h->app_id != MC_INDEX_APP_ID) {
		ret = mc_err_set(err, MC_E_INDEX, "cannot open '%s': not an mcache index",
				 c->index_path);
		goto out;
	}
	if (h->version > MC_INDEX_VERSION || h->version < 1)
		ret = mc_err_set(err, MC_E_INDEX,
				 "cannot open '%s': index schema %lld is not one this mcache "
				 "knows (1 to %d)",
				 c->index_path, (long long)h->version, MC_INDEX_VERSION);
out:
	return ret;
}

static int exec_sql(struct mc_cache *c, const char *sql, const char *what, struct mc_err *err)
{
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, NULL);

	return rc == SQLITE_OK ? 0 : mc_index_fail(c, rc, err, "%s", what);
}

/* Brings the schema to MC_INDEX_VERSION inside one write transaction. */
static int migrate(struct mc_cache *c, struct mc_err *err)
{
	struct header h = {0};
	char sql[96];
	int rc, ret;

	ret = exec_sql(c, "BEGIN IMMEDIATE", "lock the index to set up its schema", err);
	if (ret)
		goto out;
	/* Another process may have created or upgraded the schema while we waited. */
	rc = read_header(c, &h);
	if (rc) {
		ret = mc_index_fail(c, rc, err, "read the index header");
		goto out_rollback;
	}
	ret = check_header(c, &h, err);
	if (ret)
		goto out_rollback;
	for (int64_t v = h.version; v < MC_INDEX_VERSION; v++) {
		ret = exec_sql(c, migrations[v], "upgrade the index schema", err);
		if (ret)
			goto out_rollback;
	}
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %d; PRAGMA user_version = %d",
		 MC_INDEX_APP_ID, MC_INDEX_VERSION);
	ret = exec_sql(c, sql, "set the index version", err);
	if (ret)
		goto out_rollback;
	ret = exec_sql(c, "COMMIT", "commit the index schema", err);
	if (ret)
		goto out_rollback;
	goto out;
out_rollback:
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
out:
	return ret;
}

/*
 * PRAGMA journal_mode = WAL. Processes opening a new index together may each hold a shared lock
 * and want the exclusive one to convert it: SQLite then answers SQLITE_BUSY at once instead of
 * calling the busy handler (waiting could deadlock), so the pragma is tried again, every 10 ms
 * for as long as the busy timeout. Once the file is in WAL mode the pragma takes no lock.
 */
static int switch_to_wal(struct mc_cache *c, struct mc_err *err)
{
	int rc;

	for (int i = 0; i < 1000; i++) {
		rc = sqlite3_exec(c->db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
		if ((rc & 0xff) != SQLITE_BUSY)
			break;
		usleep(10 * 1000);
	}
	return rc == SQLITE_OK ? 0 : mc_index_fail(c, rc, err, "switch the index to WAL");
}

int mc_index_open(struct mc_cache *c, struct mc_err *err)
{
	struct header h = {0};
	int64_t ignored;
	int rc, ret;

	/* A symlink planted as index.db must not carry the index's writes elsewhere (store.c). */
	rc = sqlite3_open_v2(c->index_path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX |
				 SQLITE_OPEN_EXRESCODE | OPEN_NOFOLLOW,
			     NULL);
	if (rc != SQLITE_OK) {
		ret = mc_index_fail(c, rc, err, "open the index");
		goto out;
	}
	sqlite3_busy_timeout(c->db, 10000);
	/*
	 * The last connection to close would checkpoint the WAL into index.db, with fsyncs: a warm
	 * `mcache init` would pay them every time. The WAL stays instead, and SQLite's automatic
	 * checkpoint (every 1000 pages, in whichever process commits) keeps it short.
	 */
	sqlite3_db_config(c->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	/* Read only, until the header proves the file is ours or new. */
	rc = read_header(c, &h);
	if (rc == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT) {
		ret = mc_err_set(err, MC_E_INDEX,
				 "cannot open '%s': not an mcache index (%s): run 'mcache "
				 "rebuild-index'",
				 c->index_path, sqlite3_errstr(rc));
		goto out;
	}
	if (rc) {
		ret = mc_index_fail(c, rc, err, "read the index header");
		goto out;
	}
	ret = check_header(c, &h, err);
	if (ret)
		goto out;
	ret = switch_to_wal(c, err);
	if (!ret)
		ret = exec_sql(c, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON",
			       "configure the index", err);
	if (ret)
		goto out;
	if (h.version < MC_INDEX_VERSION) {
		ret = migrate(c, err);
		if (ret)
			goto out;
	}
	/* Catch a damaged schema now, with a clear message, rather than at the first query. */
	rc = query_int(c, "SELECT count(*) FROM models", &ignored);
	if (rc)
		ret = mc_err_set(err, MC_E_INDEX,
				 "cannot open '%s': damaged index (%s): run 'mcache rebuild-index'",
				 c->index_path, sqlite3_errmsg(c->db));
out:
	return ret;
}

void mc_index_durable(struct mc_cache *c, bool full)
{
	sqlite3_exec(c->db, full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL",
		     NULL, NULL, NULL);
}

int mc_index_quick_check(struct mc_cache *c, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	const char *first = "";
	char what[201];
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(c->db, "PRAGMA quick_check", -1, &s, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		first = mc_index_text(s, 0);
	if (rc != SQLITE_ROW || strcmp(first, "ok")) {
		/* SQLite's report spans lines; a message is one. */
		snprintf(what, sizeof(what), "%s", rc == SQLITE_ROW ? first : sqlite3_errstr(rc));
		for (char *p = what; *p; p++)
			if (*p == '\n' || *p == '\r' || *p == '\t')
				*p = ' ';
		ret = mc_err_set(err, MC_E_INDEX,
				 "index '%s' is damaged (%s): run 'mcache rebuild-index'",
				 c->index_path, what);
	}
	sqlite3_finalize(s);
	return ret;
}

void mc_index_close(struct mc_cache *c)
{
	for (size_t i = 0; i < MC_STMT_COUNT; i++) {
		sqlite3_finalize(c->stmt[i]);
		c->stmt[i] = NULL;
	}
	sqlite3_close(c->db);
	c->db = NULL;
}

int mc_index_tree_entries(struct mc_cache *c, int64_t version, struct mc_tree_entry **out,
			  size_t *n, struct mc_err *err)
{
	struct mc_tree_entry *e = NULL, *grown;
	size_t len = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(c, MC_STMT_FILES_OF_VERSION, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, version);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? 2 * cap : 16;
			grown = mc_realloc(e, cap * sizeof(*e));
			if (!grown) {
				ret = mc_err_set(err, -ENOMEM, "out of memory");
				goto out_free;
			}
			e = grown;
		}
		memset(&e[len], 0, sizeof(e[len]));
		e[len].path = mc_strdup(mc_index_text(s, 0));
		e[len].source = mc_strdup(mc_index_text(s, 3));
		e[len].etag = mc_strdup(mc_index_text(s, 4));
		if (!e[len].path || !e[len].source || !e[len].etag) {
			len++; /* so that out_free frees what this row got */
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out_free;
		}
		e[len].size = (uint64_t)sqlite3_column_int64(s, 1);
		snprintf(e[len].hex, sizeof(e[len].hex), "%s", mc_index_text(s, 2));
		e[len].inode = (uint64_t)sqlite3_column_int64(s, 5);
		e[len].mtime_ns = sqlite3_column_int64(s, 6);
		len++;
	}
	if (rc != SQLITE_DONE) {
		ret =
		    mc_index_fail(c, rc, err, "read the files of version %lld", (long long)version);
		goto out_free;
	}
	*out = e;
	*n = len;
	e = NULL;
	len = 0;
out_free:
	sqlite3_reset(s);
	mc_tree_entries_free(e, len);
out:
	return ret;
}

void mc_tree_entries_free(struct mc_tree_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		mc_free(e[i].path);
		mc_free(e[i].source);
		mc_free(e[i].etag);
	}
	mc_free(e);
}

void mc_model_rows_free(struct mc_model_row *r, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		mc_free(r[i].name);
		mc_free(r[i].state);
	}
	mc_free(r);
}

int mc_index_models(struct mc_cache *c, struct mc_model_row **out, size_t *n, struct mc_err *err)
{
	struct mc_model_row *r = NULL, *grown;
	size_t len = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(c, MC_STMT_MODELS_LIST, &s, err);
	if (ret)
		goto out;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (len == cap) {
			cap = cap ? 2 * cap : 16;
			grown = mc_realloc(r, cap * sizeof(*r));
			if (!grown) {
				ret = mc_err_set(err, -ENOMEM, "out of memory");
				goto out_free;
			}
			r = grown;
		}
		memset(&r[len], 0, sizeof(r[len]));
		r[len].name = mc_strdup(mc_index_text(s, 0));
		r[len].state = mc_strdup(mc_index_text(s, 6));
		len++;
		if (!r[len - 1].name || !r[len - 1].state) {
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out_free;
		}
		r[len - 1].pinned = sqlite3_column_int(s, 1) != 0;
		r[len - 1].created_at = sqlite3_column_int64(s, 2);
		r[len - 1].last_used_at = sqlite3_column_int64(s, 3);
		r[len - 1].current = sqlite3_column_int64(s, 4);
		r[len - 1].version = sqlite3_column_int64(s, 5);
		r[len - 1].verified_at = sqlite3_column_int64(s, 7);
		r[len - 1].verify_findings = sqlite3_column_int64(s, 8);
		r[len - 1].verify_deep = sqlite3_column_int(s, 9) != 0;
	}
	if (rc != SQLITE_DONE) {
		ret = mc_index_fail(c, rc, err, "list the models");
		goto out_free;
	}
	*out = r;
	*n = len;
	r = NULL;
	len = 0;
out_free:
	sqlite3_reset(s);
	mc_model_rows_free(r, len);
out:
	return ret;
}
