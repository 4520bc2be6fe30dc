/*
 * Capacity management: pins, rm, the budget, and garbage collection (cache/README.md,
 * "Garbage collection").
 *
 * gc removes, in this order:
 *  1. always, garbage: temp files no download owns and no writer holds locked; partial
 *     downloads whose process died more than 24 h ago; versions that are neither current nor
 *     being pulled by a live process (superseded, failed, abandoned), and models left with no
 *     version at all; tree directories and links the index no longer knows (a crash between
 *     a commit and the unlinks it allowed); blob files the index never knew; blobs no file
 *     references.
 *     A version superseded less than 10 minutes ago is kept that long for readers.
 *  2. while usage exceeds the budget: partial downloads of dead processes, oldest first; the
 *     superseded versions still in their grace period; then whole models, least recently used
 *     first, never a pinned one, the one to keep, or one a live process is pulling, each
 *     followed by the blobs it leaves unreferenced.
 *
 * Other processes may pull into the cache at the same time, so each decision is taken again
 * inside a BEGIN IMMEDIATE transaction (the write lock every step of a pull also takes), and a
 * file is only unlinked after the transaction that deleted its rows has committed. A blob is
 * referenced by a files row, a bundles row (the archive a version was unpacked from, deleted
 * with its version), or by the digest a download records just before its temp file is
 * renamed into blobs/, so a blob gc deletes is never one a publisher is about to reuse: the
 * publisher cannot record that digest while gc holds the lock. Inside the transaction a blob
 * file is moved aside to tmp/gc-<hex>, only if it is the inode its row names; after the commit
 * it is unlinked, after a rollback put back. A crash in between leaves tmp/gc-<hex>, which the
 * next gc puts back when its row still exists, and removes otherwise.
 *
 * A dry run takes the same steps inside one transaction that it rolls back at the end, and
 * touches no file, so it reports what a real run would have done at that moment.
 *
 * store.c owns the publish protocol's file-system steps; the removals live here, with the same
 * rules: directories are opened beneath their parent's fd without following symlinks, and
 * names are never joined into paths except for messages.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_fs.h"
#include "mc_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mc_banned.h"

/* A partial download whose process died is kept this long for a resume, budget permitting. */
#define STALE_DOWNLOAD_S (24 * 3600)
/*
 * A superseded version is kept this long after the version that replaced it became current:
 * a reader (a pod loading weights) that opened the old tree just before the swap still finds
 * every file. Over budget it goes at once, before any model.
 */
#define SUPERSEDED_GRACE_S (10 * 60)
/* tmp/gc-<hex>: a blob moved aside by a gc transaction that has not ended yet. */
#define GC_PREFIX   "gc-"
#define GC_NAME_MAX (sizeof(GC_PREFIX) + MC_DIGEST_HEX)
/* Room asked beyond a download's shortfall when gc makes space for it: filesystem metadata. */
#define ROOM_MARGIN (1u << 20)

/* Blob files moved aside in the open transaction (hex digests). */
struct trash {
	char (*hex)[MC_DIGEST_HEX];
	size_t n, cap;
};

struct gc {
	struct mc_cache *c;
	const struct mc_gc_opts *o;
	struct mc_gc_result *res;
	struct mc_err *err;
	bool dry;
	bool in_tx;		/* dry run: the one transaction, rolled back at the end */
	uint64_t tmp_dry_freed; /* dry run: temp bytes that would have been removed */
	struct trash trash;
	/* The first failure after a commit (a tree left behind): reported once gc is done. */
	int late;
	struct mc_err late_err;
};

static bool is_lower_hex(const char *s, size_t len)
{
	return strlen(s) == len && strspn(s, "0123456789abcdef") == len;
}

/* True for the "<digits>.part" names pull.c gives temp files. */
static bool is_part_name(const char *name)
{
	size_t n = strspn(name, "0123456789");

	return n > 0 && !strcmp(name + n, ".part");
}

static bool is_dot(const char *name)
{
	return !strcmp(name, ".") || !strcmp(name, "..");
}

static int oom(struct mc_err *err)
{
	return mc_err_set(err, -ENOMEM, "out of memory");
}

/* Grows the array *@p of *@cap elements of @size bytes so that one more fits after @n. */
static int grow(void *p, size_t *cap, size_t n, size_t size)
{
	void **arr = p, *bigger;
	size_t want;

	if (n < *cap)
		return 0;
	want = *cap ? 2 * *cap : 16;
	bigger = mc_realloc(*arr, want * size);
	if (!bigger)
		return -ENOMEM;
	*arr = bigger;
	*cap = want;
	return 0;
}

/* Opens a listing of the directory @name beneath @dirfd (NULL: @dirfd itself, afresh). */
static DIR *open_listing(int dirfd, const char *name, int *ret)
{
	DIR *d;
	int fd;

	fd = name ? mc_store_open_dir(dirfd, name, false, NULL)
		  : openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		*ret = name ? fd : -errno;
		return NULL;
	}
	/* A fresh open file description: its offset is not shared with @dirfd's. */
	d = fdopendir(fd);
	if (!d) {
		*ret = -errno;
		close(fd);
	}
	return d;
}

/* Records a failure that happens after a commit: gc goes on, and reports it at the end. */
static void note_late(struct gc *g, int code, const char *what, const char *name, const char *sub)
{
	if (g->late)
		return;
	g->late = mc_err_errno(&g->late_err, code, "cannot %s '%s/%s%s%s'", what, g->c->dir, name,
			       sub ? "/" : "", sub ? sub : "");
}

/* Transactions: a real run commits each step; a dry run keeps one open and rolls it back. */
static int tx_begin(struct gc *g)
{
	int ret;

	if (g->dry && g->in_tx)
		return 0;
	ret = mc_index_begin(g->c, g->err);
	g->in_tx = !ret;
	return ret;
}

static int tx_commit(struct gc *g)
{
	int ret;

	if (g->dry)
		return 0;
	ret = mc_index_commit(g->c, g->err);
	if (ret)
		mc_index_rollback(g->c);
	g->in_tx = false;
	return ret;
}

static void tx_abort(struct gc *g)
{
	if (g->dry)
		return;
	mc_index_rollback(g->c);
	g->in_tx = false;
}

static int prep(struct mc_cache *c, const char *sql, sqlite3_stmt **s, struct mc_err *err)
{
	int rc = sqlite3_prepare_v2(c->db, sql, -1, s, NULL);

	return rc == SQLITE_OK ? 0 : mc_index_fail(c, rc, err, "prepare a statement");
}

/*
 * Runs the statement @sql with ?1 = @a (text when @t is not NULL) and ?2 = @b; *changes (may
 * be NULL) gets the number of rows it changed.
 */
static int exec_sql(struct gc *g, const char *sql, const char *t, int64_t a, int64_t b,
		    int *changes, const char *what)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = prep(g->c, sql, &s, g->err);
	if (ret)
		goto out;
	if (t)
		sqlite3_bind_text(s, 1, t, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(s, 1, a);
	sqlite3_bind_int64(s, 2, b);
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(g->c, rc, g->err, "%s", what);
	else if (changes)
		*changes = sqlite3_changes(g->c->db);
out:
	sqlite3_finalize(s);
	return ret;
}

/*
 * Runs a one-row query with ?1 = @t (text, or @a when NULL) and ?2 = @b into *out; *found when
 * a row came.
 */
static int query_int(struct mc_cache *c, const char *sql, const char *t, int64_t a, int64_t b,
		     int64_t *out, bool *found, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*found = false;
	ret = prep(c, sql, &s, err);
	if (ret)
		goto out;
	if (t)
		sqlite3_bind_text(s, 1, t, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(s, 1, a);
	/* A statement without ?2 ignores it (the bind fails harmlessly with SQLITE_RANGE). */
	sqlite3_bind_int64(s, 2, b);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		*found = true;
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(c, rc, err, "read the index");
	}
out:
	sqlite3_finalize(s);
	return ret;
}

/*
 * Removes trees/@name/@version and its sidecar @version.json (sidecar.c), after the commit that
 * deleted the version's row.
 */
static void remove_version_tree(struct gc *g, const char *name, int64_t version)
{
	char vname[24], side[32], where[200];
	int mfd, ret, r;

	if (g->dry || !mc_name_is_valid(name))
		return;
	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	snprintf(side, sizeof(side), "%s.json", vname);
	mfd = mc_store_open_dir(g->c->trees_fd, name, false, NULL);
	if (mfd < 0) {
		if (mfd != -ENOENT)
			note_late(g, mfd, "open", "trees", name);
		return;
	}
	ret = mc_fs_remove_tree(mfd, vname);
	r = unlinkat(mfd, side, 0) && errno != ENOENT ? -errno : 0;
	close(mfd);
	if (ret || r) {
		snprintf(where, sizeof(where), "%s/%s", name, ret ? vname : side);
		note_late(g, ret ? ret : r, "remove", "trees", where);
	}
}

/* True when models/@name is a symlink to trees/@name/@version. */
static bool link_points_at(struct gc *g, const char *name, int64_t version)
{
	char want[200], got[200];
	ssize_t n;

	mc_store_link_target(name, version, want, sizeof(want));
	n = readlinkat(g->c->models_fd, name, got, sizeof(got) - 1);
	return n >= 0 && (size_t)n == strlen(want) && !memcmp(got, want, (size_t)n);
}

static int trash_add(struct gc *g, const char *hex)
{
	if (grow(&g->trash.hex, &g->trash.cap, g->trash.n, sizeof(*g->trash.hex)))
		return oom(g->err);
	snprintf(g->trash.hex[g->trash.n++], MC_DIGEST_HEX, "%s", hex);
	return 0;
}

/* Moves tmp/gc-@hex back to blobs/ab/@hex, or drops it when a blob is there again. */
static int put_back(struct gc *g, const char *hex)
{
	char rel[MC_BLOB_REL_MAX], name[GC_NAME_MAX];
	int abfd, ret = 0;

	if (mc_store_blob_rel_hex(hex, rel))
		return 0;
	snprintf(name, sizeof(name), GC_PREFIX "%s", rel + 3);
	rel[2] = '\0';
	abfd = mc_store_open_dir(g->c->blobs_fd, rel, true, NULL);
	if (abfd < 0)
		return mc_err_errno(g->err, abfd, "cannot open '%s/blobs/%s'", g->c->dir, rel);
	/* linkat never replaces: a blob published there since wins, and ours goes. */
	if (linkat(g->c->tmp_fd, name, abfd, rel + 3, 0) == 0 || errno == EEXIST)
		unlinkat(g->c->tmp_fd, name, 0);
	else if (errno != ENOENT)
		ret = mc_err_errno(g->err, -errno, "cannot put '%s/tmp/%s' back into blobs/%s",
				   g->c->dir, name, rel);
	close(abfd);
	return ret;
}

/* After the commit: the blobs moved aside go for good. */
static void trash_empty(struct gc *g)
{
	char name[GC_NAME_MAX];

	for (size_t i = 0; i < g->trash.n; i++) {
		snprintf(name, sizeof(name), GC_PREFIX "%s", g->trash.hex[i]);
		if (unlinkat(g->c->tmp_fd, name, 0) && errno != ENOENT)
			note_late(g, -errno, "remove", "tmp", name);
	}
	g->trash.n = 0;
}

/* After a rollback: they go back where they were. */
static void trash_restore(struct gc *g)
{
	for (size_t i = 0; i < g->trash.n; i++)
		put_back(g, g->trash.hex[i]);
	g->trash.n = 0;
}

/*
 * Inside the transaction that deletes its row (or finds it has none): moves blobs/ab/@hex
 * aside to tmp/gc-@hex when it is a regular file with inode @inode. Any other file there is
 * left alone (a blob published since, or something a later verify should show).
 */
static int blob_move_aside(struct gc *g, const char *hex, uint64_t inode)
{
	char rel[MC_BLOB_REL_MAX], name[GC_NAME_MAX];
	struct stat st;
	int abfd, ret = 0;

	if (g->dry || mc_store_blob_rel_hex(hex, rel))
		goto out;
	snprintf(name, sizeof(name), GC_PREFIX "%s", rel + 3);
	rel[2] = '\0';
	abfd = mc_store_open_dir(g->c->blobs_fd, rel, false, NULL);
	if (abfd < 0) {
		if (abfd != -ENOENT)
			ret =
			    mc_err_errno(g->err, abfd, "cannot open '%s/blobs/%s'", g->c->dir, rel);
		goto out;
	}
	if (fstatat(abfd, rel + 3, &st, AT_SYMLINK_NOFOLLOW)) {
		if (errno != ENOENT)
			ret = mc_err_errno(g->err, -errno, "cannot stat '%s/blobs/%s/%s'",
					   g->c->dir, rel, rel + 3);
		goto out_close;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_ino != inode)
		goto out_close;
	ret = trash_add(g, rel + 3);
	if (ret)
		goto out_close;
	if (renameat(abfd, rel + 3, g->c->tmp_fd, name)) {
		g->trash.n--;
		ret = mc_err_errno(g->err, -errno, "cannot move '%s/blobs/%s/%s' to tmp/%s",
				   g->c->dir, rel, rel + 3, name);
	}
out_close:
	close(abfd);
out:
	return ret;
}

/* Ends a step whose transaction moved blobs aside: commit, then unlink them; or undo. */
static int tx_finish(struct gc *g, int ret)
{
	if (!ret)
		ret = tx_commit(g);
	else
		tx_abort(g);
	if (!ret)
		trash_empty(g);
	else if (!g->dry)
		trash_restore(g);
	return ret;
}

/* Bytes of the blob rows plus the space allocated to temp files. */
static int measure(struct mc_cache *c, uint64_t dry_freed, uint64_t *out, struct mc_err *err)
{
	struct dirent *d;
	struct stat st;
	uint64_t tmp = 0;
	int64_t blobs = 0;
	bool found;
	DIR *dir;
	int ret;

	ret = query_int(c, "SELECT coalesce(sum(size), 0) FROM blobs", NULL, 0, 0, &blobs, &found,
			err);
	if (ret)
		return ret;
	dir = open_listing(c->tmp_fd, NULL, &ret);
	if (!dir)
		return mc_err_errno(err, ret, "cannot read '%s/tmp'", c->dir);
	while ((d = readdir(dir)) != NULL)
		if (!is_dot(d->d_name) &&
		    !fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) &&
		    S_ISREG(st.st_mode))
			tmp += (uint64_t)st.st_blocks * 512;
	closedir(dir);
	*out = (uint64_t)blobs + tmp - (dry_freed < tmp ? dry_freed : tmp);
	return 0;
}

static int usage(struct gc *g, uint64_t *out)
{
	return measure(g->c, g->tmp_dry_freed, out, g->err);
}

int mc_cache_usage(struct mc_cache *c, uint64_t *bytes, struct mc_err *err)
{
	return measure(c, 0, bytes, err);
}

/*
 * Removes tmp/@name unless a writer holds its lock; in a dry run only measures it. Counts it.
 * Anything that is not a regular file or a symlink is left alone.
 */
static int drop_tmp(struct gc *g, const char *name)
{
	struct stat st;
	uint64_t bytes;
	int fd, ret = 0;

	fd = openat(g->c->tmp_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == ELOOP) {
		if (!g->dry && unlinkat(g->c->tmp_fd, name, 0) && errno != ENOENT)
			return mc_err_errno(g->err, -errno, "cannot remove '%s/tmp/%s'", g->c->dir,
					    name);
		g->res->tmp_files++;
		return 0;
	}
	if (fd < 0)
		return errno == ENOENT ? 0
				       : mc_err_errno(g->err, -errno, "cannot open '%s/tmp/%s'",
						      g->c->dir, name);
	/* Its writer holds the lock while it lives: a file in use is never removed. */
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || flock(fd, LOCK_EX | LOCK_NB))
		goto out;
	bytes = (uint64_t)st.st_blocks * 512;
	if (!g->dry && unlinkat(g->c->tmp_fd, name, 0)) {
		if (errno != ENOENT)
			ret = mc_err_errno(g->err, -errno, "cannot remove '%s/tmp/%s'", g->c->dir,
					   name);
		goto out;
	}
	g->res->tmp_files++;
	g->res->bytes_freed += bytes;
	if (g->dry)
		g->tmp_dry_freed += bytes;
out:
	close(fd);
	return ret;
}

/* tmp/gc-@hex left by a gc that died: back into blobs/ while its row exists, else gone. */
static int recover_aside(struct gc *g, const char *hex)
{
	char rel[MC_BLOB_REL_MAX], name[GC_NAME_MAX];
	struct stat st;
	sqlite3_stmt *s = NULL;
	bool keep = false;
	int rc, ret;

	snprintf(name, sizeof(name), GC_PREFIX "%s", hex);
	if (fstatat(g->c->tmp_fd, name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode) ||
	    mc_store_blob_rel_hex(hex, rel))
		return 0;
	ret = prep(g->c, "SELECT inode FROM blobs WHERE digest = ?1", &s, g->err);
	if (ret)
		return ret;
	sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		keep = (uint64_t)sqlite3_column_int64(s, 0) == (uint64_t)st.st_ino;
	else if (rc != SQLITE_DONE)
		ret = mc_index_fail(g->c, rc, g->err, "look up blob '%s'", hex);
	sqlite3_finalize(s);
	if (ret || g->dry)
		return ret;
	if (keep)
		return put_back(g, hex);
	if (unlinkat(g->c->tmp_fd, name, 0) && errno != ENOENT)
		return mc_err_errno(g->err, -errno, "cannot remove '%s/tmp/%s'", g->c->dir, name);
	g->res->blobs++;
	g->res->bytes_freed += (uint64_t)st.st_size;
	return 0;
}

/* Temp files no download owns: removed unless locked; blobs a dead gc moved aside: settled. */
static int sweep_tmp(struct gc *g)
{
	char(*aside)[MC_DIGEST_HEX] = NULL;
	size_t naside = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	struct dirent *d;
	DIR *dir;
	bool owned;
	int rc, ret = 0;

	dir = open_listing(g->c->tmp_fd, NULL, &ret);
	if (!dir)
		return mc_err_errno(g->err, ret, "cannot read '%s/tmp'", g->c->dir);
	while (!ret && (d = readdir(dir)) != NULL) {
		if (is_dot(d->d_name))
			continue;
		if (!strncmp(d->d_name, GC_PREFIX, strlen(GC_PREFIX)) &&
		    is_lower_hex(d->d_name + strlen(GC_PREFIX), MC_DIGEST_HEX - 1)) {
			ret = grow(&aside, &cap, naside, sizeof(*aside)) ? oom(g->err) : 0;
			if (!ret)
				memcpy(aside[naside++], d->d_name + strlen(GC_PREFIX),
				       MC_DIGEST_HEX); /* 32 hex digits and the NUL */
			continue;
		}
		/*
		 * A download's row is committed before its temp file is created, and ids are never
		 * reused: a file without a row is a leftover, never a download about to start.
		 */
		ret = mc_index_stmt(g->c, MC_STMT_DOWNLOAD_BY_TMP, &s, g->err);
		if (ret)
			break;
		sqlite3_bind_text(s, 1, d->d_name, -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		owned = rc == SQLITE_ROW;
		sqlite3_reset(s);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE)
			ret = mc_index_fail(g->c, rc, g->err, "look up '%s'", d->d_name);
		else if (!owned)
			ret = drop_tmp(g, d->d_name);
	}
	closedir(dir);
	if (ret || !naside)
		goto out;
	/* Under the lock, so that a gc still in its transaction is not second-guessed. */
	ret = tx_begin(g);
	for (size_t i = 0; !ret && i < naside; i++)
		ret = recover_aside(g, aside[i]);
	if (!ret)
		ret = tx_commit(g);
	else if (g->in_tx)
		tx_abort(g);
out:
	mc_free(aside);
	return ret;
}

/* A downloads row as gc sees it. */
struct dl_row {
	int64_t id;
	int64_t session;
	int64_t created_at;
	char tmp_name[32];
};

/* Reads the downloads of dead processes, oldest first, created before @before. */
static int dead_downloads(struct gc *g, int64_t before, struct dl_row **out, size_t *n)
{
	struct dl_row *r = NULL;
	size_t len = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*out = NULL;
	*n = 0;
	ret = prep(g->c,
		   "SELECT id, coalesce(session_id, 0), created_at, coalesce(tmp_name, '')"
		   " FROM downloads WHERE created_at < ?1 ORDER BY created_at, id",
		   &s, g->err);
	if (ret)
		return ret;
	sqlite3_bind_int64(s, 1, before);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (grow(&r, &cap, len, sizeof(*r))) {
			ret = oom(g->err);
			break;
		}
		r[len].id = sqlite3_column_int64(s, 0);
		r[len].session = sqlite3_column_int64(s, 1);
		r[len].created_at = sqlite3_column_int64(s, 2);
		snprintf(r[len].tmp_name, sizeof(r[len].tmp_name), "%s", mc_index_text(s, 3));
		len++;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = mc_index_fail(g->c, rc, g->err, "read the downloads");
	sqlite3_finalize(s);
	/* The liveness check queries the index itself: after the statement is done. */
	for (size_t i = 0; !ret && i < len; i++)
		if (mc_session_alive(g->c, r[i].session))
			r[i].id = 0;
	if (ret) {
		mc_free(r);
		return ret;
	}
	*out = r;
	*n = len;
	return 0;
}

/* Forgets download @d if it still belongs to the session seen dead, then its temp file. */
static int drop_download(struct gc *g, const struct dl_row *d)
{
	int changes = 0, ret;

	ret = tx_begin(g);
	if (!ret)
		ret = exec_sql(
		    g, "DELETE FROM downloads WHERE id = ?1 AND coalesce(session_id, 0) = ?2", NULL,
		    d->id, d->session, &changes, "forget an abandoned download");
	if (!ret)
		ret = tx_commit(g);
	else
		tx_abort(g);
	if (ret || changes != 1)
		return ret;
	g->res->downloads++;
	/* Nobody can resume it now: its row is gone, so its temp file is ours to remove. */
	return is_part_name(d->tmp_name) ? drop_tmp(g, d->tmp_name) : 0;
}

/* Partial downloads of processes dead for over STALE_DOWNLOAD_S. */
static int sweep_stale_downloads(struct gc *g)
{
	struct dl_row *d;
	size_t n;
	int ret;

	ret = dead_downloads(g, mc_now_unix() - STALE_DOWNLOAD_S, &d, &n);
	for (size_t i = 0; !ret && i < n; i++)
		if (d[i].id)
			ret = drop_download(g, &d[i]);
	mc_free(d);
	return ret;
}

/* A versions row as gc sees it. */
struct ver_row {
	int64_t id;
	int64_t session;
	char name[129];
	bool young; /* complete, superseded less than SUPERSEDED_GRACE_S ago */
	bool removed;
};

/*
 * Versions that are not current (nor being pulled by a live process), and their trees; with
 * @young, also those superseded within the grace period.
 */
static int sweep_versions(struct gc *g, bool young)
{
	struct ver_row *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int changes, rc, ret;

	ret = prep(g->c,
		   "SELECT v.id, coalesce(v.session_id, 0), m.name, v.state = 'pulling',"
		   " v.state = 'complete' AND coalesce(cur.completed_at, 0) > ?1"
		   " FROM versions v JOIN models m ON m.id = v.model_id"
		   " LEFT JOIN versions cur ON cur.id = m.current_version"
		   " WHERE v.id <> coalesce(m.current_version, 0) ORDER BY v.id",
		   &s, g->err);
	if (ret)
		return ret;
	sqlite3_bind_int64(s, 1, mc_now_unix() - SUPERSEDED_GRACE_S);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (grow(&v, &cap, n, sizeof(*v))) {
			ret = oom(g->err);
			break;
		}
		v[n].id = sqlite3_column_int64(s, 0);
		/* Only a version being pulled has a lease; 0 means none. */
		v[n].session = sqlite3_column_int(s, 3) ? sqlite3_column_int64(s, 1) : 0;
		snprintf(v[n].name, sizeof(v[n].name), "%s", mc_index_text(s, 2));
		v[n].young = sqlite3_column_int(s, 4) != 0;
		v[n].removed = false;
		n++;
	}
	if (!ret && rc != SQLITE_DONE)
		ret = mc_index_fail(g->c, rc, g->err, "read the versions");
	sqlite3_finalize(s);
	if (ret || !n)
		goto out;
	ret = tx_begin(g);
	for (size_t i = 0; !ret && i < n; i++) {
		if ((v[i].young && !young) || mc_session_alive(g->c, v[i].session))
			continue;
		/* Died between swapping the link and recording it: its tree is what readers see. */
		if (link_points_at(g, v[i].name, v[i].id))
			continue;
		changes = 0;
		ret = exec_sql(g,
			       "DELETE FROM versions WHERE id = ?1 AND id NOT IN (SELECT"
			       " current_version FROM models WHERE current_version IS NOT NULL)"
			       " AND (state <> 'pulling' OR coalesce(session_id, 0) = ?2)",
			       NULL, v[i].id, v[i].session, &changes, "remove an old version");
		v[i].removed = changes == 1;
		g->res->versions += (uint64_t)v[i].removed;
	}
	/* A model left with no version at all (it never completed) goes too. */
	if (!ret)
		ret = exec_sql(g,
			       "DELETE FROM models WHERE current_version IS NULL AND NOT EXISTS"
			       " (SELECT 1 FROM versions WHERE model_id = models.id)",
			       NULL, 0, 0, &changes, "remove a model with no version");
	if (!ret)
		g->res->models += (uint64_t)changes;
	if (!ret)
		ret = tx_commit(g);
	else
		tx_abort(g);
	for (size_t i = 0; !ret && i < n; i++)
		if (v[i].removed)
			remove_version_tree(g, v[i].name, v[i].id);
out:
	mc_free(v);
	return ret;
}

/* Sets *id to the model @name's id, 0 when there is none. */
static int model_id(struct mc_cache *c, const char *name, int64_t *id, struct mc_err *err)
{
	bool found;
	int ret;

	*id = 0;
	ret = query_int(c, "SELECT id FROM models WHERE name = ?1", name, 0, 0, id, &found, err);
	if (!found)
		*id = 0;
	return ret;
}

/*
 * The version an entry of trees/NAME/ belongs to: "<v>" (its tree), "<v>.json" (its sidecar) or
 * ".<v>.json.<pid>.tmp" (a sidecar being written). False for any other name: not ours.
 */
static bool entry_version(const char *name, uint64_t *v)
{
	char digits[24];
	size_t n;

	if (*name == '.')
		name++;
	n = strspn(name, "0123456789");
	if (n == 0 || n >= sizeof(digits) || name[0] == '0')
		return false;
	memcpy(digits, name, n);
	digits[n] = '\0';
	if (mc_parse_uint(digits, 1, INT64_MAX, v))
		return false;
	name += n;
	return !*name || !strcmp(name, ".json") || !strncmp(name, ".json.", 6);
}

/* Removes every entry of trees/@name that belongs to no version of the model @mid. */
static int sweep_model_tree(struct gc *g, const char *name, int64_t mid)
{
	struct dirent *d;
	int64_t ignored;
	uint64_t v;
	bool found;
	DIR *dir;
	int ret = 0, r;

	dir = open_listing(g->c->trees_fd, name, &ret);
	if (!dir)
		return ret == -ENOENT || ret == -ENOTDIR || ret == -ELOOP ? 0 : ret;
	while (!ret && (d = readdir(dir)) != NULL) {
		if (is_dot(d->d_name) || !entry_version(d->d_name, &v))
			continue;
		/* A tree is built after its version's row, and ids are never reused. */
		ret = query_int(g->c, "SELECT 1 FROM versions WHERE id = ?1 AND model_id = ?2",
				NULL, (int64_t)v, mid, &ignored, &found, g->err);
		if (ret || found)
			continue;
		r = mc_fs_remove_tree(dirfd(dir), d->d_name);
		if (r)
			note_late(g, r, "remove", "trees", name);
	}
	closedir(dir);
	return ret;
}

/* Adds to @names (grown) every valid model name listed in @dirfd. */
static int list_names(struct gc *g, int dirfd_, const char *what, char (**names)[129], size_t *n,
		      size_t *cap)
{
	struct dirent *d;
	DIR *dir;
	int ret = 0;

	dir = open_listing(dirfd_, NULL, &ret);
	if (!dir)
		return mc_err_errno(g->err, ret, "cannot read '%s/%s'", g->c->dir, what);
	while (!ret && (d = readdir(dir)) != NULL) {
		if (!mc_name_is_valid(d->d_name))
			continue; /* ".", "..", and models/.NAME.PID.tmp of a swap in progress */
		if (grow(names, cap, *n, sizeof(**names)))
			ret = oom(g->err);
		else
			snprintf((*names)[(*n)++], sizeof(**names), "%.128s", d->d_name);
	}
	closedir(dir);
	return ret;
}

/* Removes models/@name when it is a symlink into trees/@name/ (what a swap makes). */
static void remove_link(struct gc *g, const char *name)
{
	char want[160], got[200];
	ssize_t len;

	snprintf(want, sizeof(want), "../trees/%s/", name);
	len = readlinkat(g->c->models_fd, name, got, sizeof(got) - 1);
	if (len < 0 || (size_t)len <= strlen(want) || memcmp(got, want, strlen(want)))
		return;
	if (unlinkat(g->c->models_fd, name, 0) && errno != ENOENT)
		note_late(g, -errno, "remove", "models", name);
}

/*
 * Tree directories and links the index does not know: versions whose row is gone, and models
 * whose row is gone (a crash after a commit, before the unlinks it allowed). They hold no blob
 * bytes of their own but do hold blob inodes. A dry run skips this: nothing to report.
 */
static int sweep_trees(struct gc *g)
{
	char(*names)[129] = NULL;
	size_t n = 0, cap = 0, nt;
	bool orphans = false;
	int64_t id;
	int ret, r;

	if (g->dry)
		return 0;
	ret = list_names(g, g->c->trees_fd, "trees", &names, &n, &cap);
	nt = n;
	if (!ret)
		ret = list_names(g, g->c->models_fd, "models", &names, &n, &cap);
	for (size_t i = 0; !ret && i < n; i++) {
		ret = model_id(g->c, names[i], &id, g->err);
		if (!ret && id && i < nt)
			ret = sweep_model_tree(g, names[i], id);
		orphans |= !ret && !id;
		if (id)
			names[i][0] = '\0';
	}
	if (ret || !orphans)
		goto out;
	/* A pull creates its model's row before any tree or link: decide under the lock. */
	ret = tx_begin(g);
	for (size_t i = 0; !ret && i < n; i++) {
		if (!names[i][0])
			continue;
		ret = model_id(g->c, names[i], &id, g->err);
		if (ret || id)
			continue;
		remove_link(g, names[i]);
		r = mc_fs_remove_tree(g->c->trees_fd, names[i]);
		if (r)
			note_late(g, r, "remove", "trees", names[i]);
	}
	if (!ret)
		ret = tx_commit(g);
	else
		tx_abort(g);
out:
	mc_free(names);
	return ret;
}

/* Sets *known when the index has blob @hex, or a download about to publish those bytes. */
static int blob_known(struct gc *g, const char *hex, bool *known)
{
	int64_t ignored;

	return query_int(g->c,
			 "SELECT 1 WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?1)"
			 " OR EXISTS (SELECT 1 FROM downloads WHERE digest = ?1)",
			 hex, 0, 0, &ignored, known, g->err);
}

/* A blob file the index does not know. */
struct orphan {
	char hex[MC_DIGEST_HEX];
	uint64_t inode;
	uint64_t size;
};

static int scan_blob_dir(struct gc *g, const char *ab, struct orphan **o, size_t *n, size_t *cap)
{
	struct dirent *d;
	struct stat st;
	bool known;
	DIR *dir;
	int ret = 0;

	dir = open_listing(g->c->blobs_fd, ab, &ret);
	if (!dir)
		return ret == -ENOENT || ret == -ENOTDIR || ret == -ELOOP
			   ? 0
			   : mc_err_errno(g->err, ret, "cannot read '%s/blobs/%s'", g->c->dir, ab);
	while (!ret && (d = readdir(dir)) != NULL) {
		/* Only names the cache gives; anything else is for verify to show, not ours. */
		if (!is_lower_hex(d->d_name, MC_DIGEST_HEX - 1) || strncmp(d->d_name, ab, 2) ||
		    fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) ||
		    !S_ISREG(st.st_mode))
			continue;
		ret = blob_known(g, d->d_name, &known);
		if (ret || known)
			continue;
		if (grow(o, cap, *n, sizeof(**o))) {
			ret = oom(g->err);
			break;
		}
		/* is_lower_hex() checked the length: exactly MC_DIGEST_HEX - 1 digits. */
		memcpy((*o)[*n].hex, d->d_name, MC_DIGEST_HEX);
		(*o)[*n].inode = (uint64_t)st.st_ino;
		(*o)[*n].size = (uint64_t)st.st_size;
		(*n)++;
	}
	closedir(dir);
	return ret;
}

/* Blob files with neither a row nor a download about to record one (a crash's leftovers). */
static int sweep_orphan_blobs(struct gc *g)
{
	struct orphan *o = NULL;
	size_t n = 0, cap = 0;
	struct dirent *d;
	bool known;
	DIR *dir;
	int ret = 0;

	dir = open_listing(g->c->blobs_fd, NULL, &ret);
	if (!dir)
		return mc_err_errno(g->err, ret, "cannot read '%s/blobs'", g->c->dir);
	while (!ret && (d = readdir(dir)) != NULL)
		if (is_lower_hex(d->d_name, 2))
			ret = scan_blob_dir(g, d->d_name, &o, &n, &cap);
	closedir(dir);
	if (ret || !n)
		goto out;
	/* Under the lock no publisher can record a digest: a second look settles it. */
	ret = tx_begin(g);
	for (size_t i = 0; !ret && i < n; i++) {
		ret = blob_known(g, o[i].hex, &known);
		if (ret || known)
			continue;
		g->res->blobs++;
		g->res->bytes_freed += o[i].size;
		ret = blob_move_aside(g, o[i].hex, o[i].inode);
	}
	ret = tx_finish(g, ret);
out:
	mc_free(o);
	return ret;
}

/* A blob row that nothing references. */
struct blob_row {
	char hex[MC_DIGEST_HEX];
	uint64_t size;
	uint64_t inode;
};

/*
 * Blobs no files row, no bundle (the archive a version was unpacked from) and no download
 * references: rows, then files. *freed gets their bytes.
 */
static int sweep_blobs(struct gc *g, uint64_t *freed)
{
	struct blob_row *b = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*freed = 0;
	ret = tx_begin(g);
	if (ret)
		return ret;
	ret = prep(g->c,
		   "SELECT digest, size, inode FROM blobs b"
		   " WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.digest = b.digest)"
		   " AND NOT EXISTS (SELECT 1 FROM bundles u WHERE u.digest = b.digest)"
		   " AND NOT EXISTS (SELECT 1 FROM downloads d WHERE d.digest = b.digest)",
		   &s, g->err);
	while (!ret && (rc = sqlite3_step(s)) != SQLITE_DONE) {
		if (rc != SQLITE_ROW) {
			ret = mc_index_fail(g->c, rc, g->err, "read the blobs");
			break;
		}
		if (grow(&b, &cap, n, sizeof(*b))) {
			ret = oom(g->err);
			break;
		}
		snprintf(b[n].hex, sizeof(b[n].hex), "%s", mc_index_text(s, 0));
		b[n].size = (uint64_t)sqlite3_column_int64(s, 1);
		b[n].inode = (uint64_t)sqlite3_column_int64(s, 2);
		n++;
	}
	sqlite3_finalize(s);
	for (size_t i = 0; !ret && i < n; i++) {
		ret = exec_sql(g, "DELETE FROM blobs WHERE digest = ?1", b[i].hex, 0, 0, NULL,
			       "remove a blob");
		if (!ret)
			ret = blob_move_aside(g, b[i].hex, b[i].inode);
		if (ret)
			break;
		g->res->blobs++;
		g->res->bytes_freed += b[i].size;
		*freed += b[i].size;
	}
	ret = tx_finish(g, ret);
	mc_free(b);
	return ret;
}

/* The versions of a model, and whether a live process is pulling one. */
static int model_versions(struct gc *g, int64_t id, bool others_only, int64_t **out, size_t *n,
			  bool *leased)
{
	int64_t *v = NULL, *sess = NULL;
	size_t len = 0, cap = 0, scap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*leased = false;
	ret = prep(g->c,
		   "SELECT id, CASE WHEN state = 'pulling' THEN coalesce(session_id, 0) ELSE 0 END"
		   " FROM versions WHERE model_id = ?1",
		   &s, g->err);
	if (!ret)
		sqlite3_bind_int64(s, 1, id);
	while (!ret && (rc = sqlite3_step(s)) != SQLITE_DONE) {
		if (rc != SQLITE_ROW) {
			ret = mc_index_fail(g->c, rc, g->err, "read the versions");
			break;
		}
		if (grow(&v, &cap, len, sizeof(*v)) || grow(&sess, &scap, len, sizeof(*sess))) {
			ret = oom(g->err);
			break;
		}
		v[len] = sqlite3_column_int64(s, 0);
		sess[len++] = sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	for (size_t i = 0; !ret && i < len; i++)
		if (sess[i] && (!others_only || sess[i] != g->c->session_id) &&
		    mc_session_alive(g->c, sess[i]))
			*leased = true;
	mc_free(sess);
	if (ret) {
		mc_free(v);
		return ret;
	}
	*out = v;
	*n = len;
	return 0;
}

/*
 * Removes model @id (@name) in one transaction: its models/NAME link (first, so that no reader
 * opens it any more), its rows; after the commit its trees. For an LRU eviction (@lru) it is
 * left alone (*done false) when it is now pinned, was used since @seen_used, or a live process
 * is pulling it; for rm, another live process pulling it is -EBUSY.
 */
static int remove_model(struct gc *g, int64_t id, const char *name, bool lru, int64_t seen_used,
			struct mc_gc_model *m, bool *done)
{
	char target[200] = "";
	int64_t *vers = NULL, bytes = 0;
	size_t nv = 0;
	sqlite3_stmt *s = NULL;
	int64_t pinned = 0, used = 0, cur = 0;
	bool leased, found;
	int rc, ret;

	*done = false;
	ret = tx_begin(g);
	if (ret)
		return ret;
	ret = prep(g->c,
		   "SELECT pinned, last_used_at, coalesce(current_version, 0) FROM models"
		   " WHERE id = ?1",
		   &s, g->err);
	if (!ret) {
		sqlite3_bind_int64(s, 1, id);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			pinned = sqlite3_column_int64(s, 0);
			used = sqlite3_column_int64(s, 1);
			cur = sqlite3_column_int64(s, 2);
		} else if (rc != SQLITE_DONE) {
			ret = mc_index_fail(g->c, rc, g->err, "read model '%s'", name);
		}
		sqlite3_finalize(s);
		if (!ret && rc == SQLITE_DONE)
			goto out_abort; /* removed meanwhile */
	}
	if (ret || (lru && (pinned || used != seen_used)))
		goto out_abort;
	ret = model_versions(g, id, !lru, &vers, &nv, &leased);
	if (ret)
		goto out_abort;
	if (leased) {
		if (!lru)
			ret = mc_err_set(g->err, -EBUSY,
					 "model '%s' is being pulled by another process", name);
		goto out_abort;
	}
	ret = query_int(g->c, "SELECT coalesce(sum(size), 0) FROM files WHERE version_id = ?1",
			NULL, cur, 0, &bytes, &found, g->err);
	for (size_t i = 0; !ret && !g->dry && i < nv; i++) {
		if (!link_points_at(g, name, vers[i]))
			continue;
		mc_store_link_target(name, vers[i], target, sizeof(target));
		if (unlinkat(g->c->models_fd, name, 0) && errno != ENOENT)
			ret = mc_err_errno(g->err, -errno, "cannot remove '%s/models/%s'",
					   g->c->dir, name);
		break;
	}
	if (!ret)
		ret = exec_sql(g, "UPDATE models SET current_version = NULL WHERE id = ?1", NULL,
			       id, 0, NULL, "remove a model");
	if (!ret)
		ret = exec_sql(g, "DELETE FROM versions WHERE model_id = ?1", NULL, id, 0, NULL,
			       "remove a model's versions");
	if (!ret)
		ret = exec_sql(g, "DELETE FROM models WHERE id = ?1", NULL, id, 0, NULL,
			       "remove a model");
	if (!ret)
		ret = tx_commit(g);
	else
		tx_abort(g);
	if (ret) {
		/* Still in the index: readers get their link back. */
		if (target[0])
			symlinkat(target, g->c->models_fd, name);
		goto out;
	}
	for (size_t i = 0; i < nv; i++)
		remove_version_tree(g, name, vers[i]);
	/* Only if empty: a pull of the same name may have begun since the commit. */
	if (!g->dry)
		unlinkat(g->c->trees_fd, name, AT_REMOVEDIR);
	g->res->models++;
	m->name = name;
	m->bytes = (uint64_t)bytes;
	m->freed = 0;
	m->last_used_at = used;
	*done = true;
	goto out;
out_abort:
	tx_abort(g);
out:
	mc_free(vers);
	return ret;
}

/* A model as the LRU order sees it. */
struct lru_row {
	int64_t id;
	int64_t last_used_at;
	bool pinned;
	char name[129];
};

static int read_lru(struct gc *g, struct lru_row **out, size_t *n)
{
	struct lru_row *r = NULL;
	size_t len = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = prep(g->c,
		   "SELECT id, name, pinned, last_used_at FROM models ORDER BY last_used_at, id",
		   &s, g->err);
	while (!ret && (rc = sqlite3_step(s)) != SQLITE_DONE) {
		if (rc != SQLITE_ROW) {
			ret = mc_index_fail(g->c, rc, g->err, "list the models");
			break;
		}
		if (grow(&r, &cap, len, sizeof(*r))) {
			ret = oom(g->err);
			break;
		}
		r[len].id = sqlite3_column_int64(s, 0);
		snprintf(r[len].name, sizeof(r[len].name), "%s", mc_index_text(s, 1));
		r[len].pinned = sqlite3_column_int(s, 2) != 0;
		r[len].last_used_at = sqlite3_column_int64(s, 3);
		len++;
	}
	sqlite3_finalize(s);
	if (ret) {
		mc_free(r);
		return ret;
	}
	*out = r;
	*n = len;
	return 0;
}

/*
 * True when a blob of model @id has more hard links than the cache's own trees account for:
 * someone materialised it outside the cache on the same filesystem (`mcache init` into a pod's
 * volume links, not copies). Such a model is in use, and evicting it would free nothing.
 * Errors answer true: keeping a model is the safe mistake.
 */
static bool linked_outside(struct gc *g, int64_t id)
{
	sqlite3_stmt *s = NULL;
	bool outside = false;
	struct stat st;
	int rc, fd;

	if (prep(g->c,
		 "SELECT DISTINCT f.digest, (SELECT count(*) FROM files x JOIN versions w"
		 "  ON w.id = x.version_id WHERE x.digest = f.digest AND w.state <> 'failed')"
		 " FROM files f JOIN versions v ON v.id = f.version_id WHERE v.model_id = ?1",
		 &s, NULL))
		return true;
	sqlite3_bind_int64(s, 1, id);
	while (!outside && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *hex = mc_index_text(s, 0);
		char ab[3] = {hex[0], hex[0] ? hex[1] : '\0', '\0'};

		fd = mc_store_open_dir(g->c->blobs_fd, ab, false, NULL);
		if (fd < 0)
			continue; /* gone: nothing of it to keep */
		if (!fstatat(fd, hex, &st, AT_SYMLINK_NOFOLLOW) &&
		    st.st_nlink > 1 + (nlink_t)sqlite3_column_int64(s, 1))
			outside = true;
		close(fd);
	}
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		outside = true;
	sqlite3_finalize(s);
	return outside;
}

/* Over budget: partial downloads of dead processes, then models, least recently used first. */
static int fit_budget(struct gc *g)
{
	const uint64_t max = g->o->max_bytes;
	struct lru_row *r = NULL;
	struct dl_row *d = NULL;
	struct mc_gc_model m;
	uint64_t u, freed;
	size_t n = 0;
	bool done;
	int ret;

	ret = usage(g, &u);
	if (ret || u <= max)
		return ret;
	ret = dead_downloads(g, INT64_MAX, &d, &n);
	for (size_t i = 0; !ret && u > max && i < n; i++) {
		if (!d[i].id)
			continue;
		ret = drop_download(g, &d[i]);
		if (!ret)
			ret = usage(g, &u);
	}
	mc_free(d);
	if (ret || u <= max)
		return ret;
	ret = sweep_versions(g, true);
	if (!ret)
		ret = sweep_blobs(g, &freed);
	if (!ret)
		ret = usage(g, &u);
	if (ret || u <= max)
		return ret;
	ret = read_lru(g, &r, &n);
	for (size_t i = 0; !ret && u > max && i < n; i++) {
		if (r[i].pinned || (g->o->keep && !strcmp(r[i].name, g->o->keep)) ||
		    linked_outside(g, r[i].id))
			continue;
		ret = remove_model(g, r[i].id, r[i].name, true, r[i].last_used_at, &m, &done);
		if (ret || !done)
			continue;
		ret = sweep_blobs(g, &freed);
		m.freed = freed;
		if (!ret && g->o->evicted)
			g->o->evicted(g->o->ctx, &m);
		if (!ret)
			ret = usage(g, &u);
	}
	mc_free(r);
	return ret;
}

/* Ends a run: a dry run's transaction is rolled back; a late failure becomes the result. */
static int gc_end(struct gc *g, int ret)
{
	if (g->dry && g->in_tx)
		mc_index_rollback(g->c);
	g->in_tx = false;
	if (!ret && g->late)
		ret = mc_err_set(g->err, g->late, "%s", g->late_err.msg);
	mc_free(g->trash.hex);
	return ret;
}

int mc_cache_gc(struct mc_cache *c, const struct mc_gc_opts *o, struct mc_gc_result *res,
		struct mc_err *err)
{
	struct gc g = {.c = c, .o = o, .res = res, .err = err, .dry = o->dry_run};
	uint64_t freed;
	int ret;

	mc_err_init(&g.late_err);
	memset(res, 0, sizeof(*res));
	res->max_bytes = o->max_bytes;
	ret = usage(&g, &res->bytes_before);
	/* Temp files before downloads, orphan blob files before blob rows: nothing counts twice. */
	if (!ret)
		ret = sweep_tmp(&g);
	if (!ret)
		ret = sweep_stale_downloads(&g);
	if (!ret)
		ret = sweep_versions(&g, false);
	if (!ret)
		ret = sweep_trees(&g);
	if (!ret)
		ret = sweep_orphan_blobs(&g);
	if (!ret)
		ret = sweep_blobs(&g, &freed);
	if (!ret && o->max_bytes)
		ret = fit_budget(&g);
	if (!ret)
		ret = usage(&g, &res->bytes_after);
	res->budget_met = !o->max_bytes || res->bytes_after <= o->max_bytes;
	return gc_end(&g, ret);
}

int mc_cache_rm(struct mc_cache *c, const char *name, struct mc_gc_result *res, struct mc_err *err)
{
	const struct mc_gc_opts none = {0};
	struct gc g = {.c = c, .o = &none, .res = res, .err = err};
	struct mc_gc_model m;
	uint64_t freed;
	int64_t id = 0;
	bool done = false;
	int ret;

	mc_err_init(&g.late_err);
	memset(res, 0, sizeof(*res));
	ret = usage(&g, &res->bytes_before);
	if (!ret)
		ret = model_id(c, name, &id, err);
	if (!ret && id)
		ret = remove_model(&g, id, name, false, 0, &m, &done);
	if (!ret && !done)
		ret = mc_err_set(err, MC_E_NOTFOUND, "no model '%.200s' in the cache", name);
	if (!ret)
		ret = sweep_blobs(&g, &freed);
	if (!ret)
		ret = usage(&g, &res->bytes_after);
	res->budget_met = true;
	return gc_end(&g, ret);
}

int mc_cache_pin(struct mc_cache *c, const char *name, bool pinned, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = prep(c, "UPDATE models SET pinned = ?2 WHERE name = ?1", &s, err);
	if (ret)
		return ret;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, pinned);
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "%s model '%s'", pinned ? "pin" : "unpin", name);
	else if (sqlite3_changes(c->db) == 0)
		ret = mc_err_set(err, MC_E_NOTFOUND, "no model '%.200s' in the cache", name);
	sqlite3_finalize(s);
	/* The current version's sidecar records the pin, so that rebuild-index restores it. */
	if (!ret)
		ret = mc_sidecar_rewrite(c, name, err);
	return ret;
}

int mc_cache_budget(struct mc_cache *c, uint64_t *bytes, struct mc_err *err)
{
	const char *env = getenv("MCACHE_MAX_BYTES");
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*bytes = 0;
	if (env && *env)
		return mc_parse_size(env, bytes)
			   ? mc_err_set(err, MC_E_USAGE,
					"invalid MCACHE_MAX_BYTES '%.40s': expected a size such as "
					"100G",
					env)
			   : 0;
	ret = prep(c, "SELECT value FROM settings WHERE key = 'max_bytes'", &s, err);
	if (ret)
		return ret;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && mc_parse_uint(mc_index_text(s, 0), 0, UINT64_MAX, bytes))
		ret = mc_err_set(err, MC_E_INDEX, "bad max_bytes setting '%.40s' in '%s'",
				 mc_index_text(s, 0), c->index_path);
	else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "read the budget");
	sqlite3_finalize(s);
	return ret;
}

int mc_cache_set_budget(struct mc_cache *c, uint64_t bytes, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	char value[24];
	int rc, ret;

	snprintf(value, sizeof(value), "%llu", (unsigned long long)bytes);
	ret = prep(c,
		   bytes ? "INSERT INTO settings(key, value) VALUES('max_bytes', ?1)"
			   " ON CONFLICT(key) DO UPDATE SET value = excluded.value"
			 : "DELETE FROM settings WHERE key = 'max_bytes'",
		   &s, err);
	if (ret)
		return ret;
	if (bytes)
		sqlite3_bind_text(s, 1, value, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "save the budget");
	sqlite3_finalize(s);
	return ret;
}

int mc_gc_tmp_create(struct mc_cache *c, const char *keep, const char *name, uint64_t size,
		     const char *label, int *fd, struct mc_err *err)
{
	struct mc_gc_opts o = {.keep = keep, .dry_run = true};
	struct mc_gc_result r;
	struct statvfs vfs;
	struct mc_err first;
	uint64_t used, avail, shortfall;
	int ret;

	mc_err_init(&first);
	ret = mc_store_tmp_create(c, name, size, label, fd, &first);
	if (ret != -ENOSPC || fstatvfs(c->tmp_fd, &vfs) || mc_cache_usage(c, &used, NULL))
		goto out;
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	shortfall = (size > avail ? size - avail : 0) + ROOM_MARGIN;
	if (used < shortfall)
		goto out; /* even an empty cache would not make room: evict nothing */
	o.max_bytes = used - shortfall ? used - shortfall : 1;
	/* Evict only when that makes room: pinned and in-use models may be all there is. */
	if (mc_cache_gc(c, &o, &r, NULL) || !r.budget_met)
		goto out;
	o.dry_run = false;
	if (mc_cache_gc(c, &o, &r, NULL))
		goto out;
	return mc_store_tmp_create(c, name, size, label, fd, err);
out:
	if (ret)
		mc_err_set(err, ret, "%s", first.msg);
	return ret;
}

void mc_gc_after_pull(struct mc_cache *c, struct mc_pull_result *res)
{
	struct mc_gc_opts o = {.keep = res->name};
	struct mc_err err;

	mc_err_init(&err);
	if (!mc_cache_budget(c, &o.max_bytes, &err) && o.max_bytes) {
		res->gc_ran = true;
		mc_cache_gc(c, &o, &res->gc, &err);
	}
	snprintf(res->gc_error, sizeof(res->gc_error), "%s", err.msg);
}
