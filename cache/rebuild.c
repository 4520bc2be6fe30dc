/*
 * mc_cache_rebuild_index(): a new index from what is on disk, for when index.db is lost, is not
 * a database, or fails its quick_check. The old index is never read: it may be garbage.
 *
 * The disk holds almost everything the index does. Blob names are digests, so rehashing a blob
 * proves it (or shows it damaged: it is moved to quarantine/, never deleted). A version's tree
 * is hard links to blobs, so (device, inode) ties each tree file to its blob; a file that is no
 * blob's link is rehashed and linked into blobs/. The version id is the tree's directory name,
 * the current version is models/NAME's target. What the bytes cannot tell (sources, the
 * origin's validators, published SHA-256, tag, times, pin) comes from the version's sidecar
 * (sidecar.c), used only where its paths and digests agree with the disk. Download progress
 * cannot be recovered: partial downloads in tmp/ are deleted.
 *
 * Nothing cached is dropped silently. A file whose bytes are gone or wrong (its blob was
 * quarantined, or it differs from its sidecar, or the sidecar lists it and the tree lacks it)
 * stays in the index under the digest it should have, with a blob row that matches no file
 * (inode 0): verify reports it, and the next pull fetches it again. Everything else left out
 * is reported as a note.
 *
 * Safety: DIR/rebuild.lock, which every mc_cache_open() holds shared, is taken exclusively, so
 * no other process has the cache open meanwhile. The new index is built beside the old one
 * (index.db.rebuild) in one transaction and swapped in only when complete; the old index.db
 * and its -wal/-shm/-journal are moved aside to index.db.corrupt-<unix time>. A rebuild that
 * fails or is killed before the swap leaves the old index as it was.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "mc_banned.h"

#define LOCK_NAME  "rebuild.lock"
#define NEW_INDEX  "index.db.rebuild"
#define QUARANTINE "quarantine"
/* A path inside a model (mc_relpath_is_valid() allows 4096 bytes) and room to spare. */
#define REL_MAX 4352
/* Directories nested deeper in a tree are left alone (and reported): no model needs them. */
#define DEPTH_MAX 64
/* How often mc_cache_open() looks again while a rebuild holds the lock. */
#define LOCK_POLL_MS 100

/* As index.c: SQLite 3.31 and later can refuse a database path that is a symlink. */
#ifdef SQLITE_OPEN_NOFOLLOW
#define OPEN_NOFOLLOW SQLITE_OPEN_NOFOLLOW
#else
#define OPEN_NOFOLLOW 0
#endif

/* The companions SQLite may keep beside a database, main file last. */
static const char *const index_suffixes[] = {"-wal", "-shm", "-journal", ""};

struct rebuild {
	struct mc_cache *c; /* the layout's fds, and the new index (c->db) */
	struct mc_rebuild_result *res;
	size_t note_cap;
	int64_t now;
	dev_t blobs_dev;
	int quarantine_fd; /* -1 until a blob is quarantined */
	int64_t max_version;
	sqlite3_stmt *ino_put, *ino_get, *model_put, *version_put, *version_has;
};

/* What a version's walk needs: its names and its sidecar. */
struct vwalk {
	const char *name;
	int64_t version;
	char where[200]; /* "trees/NAME/V" */
	bool has_sidecar;
	struct mc_sidecar m;
	uint64_t bad; /* files damaged or missing */
};

static int add_note(struct rebuild *rb, struct mc_err *err, const char *kind, const char *path,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int add_note(struct rebuild *rb, struct mc_err *err, const char *kind, const char *path,
		    const char *fmt, ...)
{
	struct mc_rebuild_result *res = rb->res;
	struct mc_rebuild_note *grown, *n;
	char detail[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	if (res->nnote == rb->note_cap) {
		size_t cap = rb->note_cap ? 2 * rb->note_cap : 16;

		grown = mc_realloc(res->note, cap * sizeof(*grown));
		if (!grown)
			return mc_err_set(err, -ENOMEM, "out of memory");
		res->note = grown;
		rb->note_cap = cap;
	}
	n = &res->note[res->nnote];
	n->kind = kind;
	n->path = mc_strdup(path);
	n->detail = mc_strdup(detail);
	if (!n->path || !n->detail) {
		mc_free(n->path);
		mc_free(n->detail);
		return mc_err_set(err, -ENOMEM, "out of memory");
	}
	res->nnote++;
	return 0;
}

void mc_rebuild_result_release(struct mc_rebuild_result *res)
{
	for (size_t i = 0; i < res->nnote; i++) {
		mc_free(res->note[i].path);
		mc_free(res->note[i].detail);
	}
	mc_free(res->note);
	res->note = NULL;
	res->nnote = 0;
}

/* The sorted entries of a directory. */
struct names {
	char **v;
	size_t n, cap;
};

static void names_release(struct names *nm)
{
	for (size_t i = 0; i < nm->n; i++)
		mc_free(nm->v[i]);
	mc_free(nm->v);
	memset(nm, 0, sizeof(*nm));
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int names_add(struct names *nm, const char *name)
{
	char **grown;

	if (nm->n == nm->cap) {
		nm->cap = nm->cap ? 2 * nm->cap : 32;
		grown = mc_realloc(nm->v, nm->cap * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		nm->v = grown;
	}
	nm->v[nm->n] = mc_strdup(name);
	if (!nm->v[nm->n])
		return -ENOMEM;
	nm->n++;
	return 0;
}

/*
 * Reads the entries of the directory open as @fd, but "." and "..", sorted, so the rebuild
 * never renames inside a directory it is still reading. @fd stays open and keeps its offset.
 */
static int list_dir(int fd, struct names *nm)
{
	struct dirent *e;
	DIR *d;
	int dfd, ret = 0;

	dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	d = fdopendir(dfd);
	if (!d) {
		ret = -errno;
		close(dfd);
		return ret;
	}
	for (;;) {
		errno = 0;
		e = readdir(d);
		if (!e) {
			ret = errno ? -errno : 0;
			break;
		}
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			ret = names_add(nm, e->d_name);
		if (ret)
			break;
	}
	closedir(d);
	if (ret)
		names_release(nm);
	else if (nm->n)
		qsort(nm->v, nm->n, sizeof(*nm->v), cmp_name);
	return ret;
}

static bool is_lower_hex(const char *s, size_t len)
{
	return strlen(s) == len && strspn(s, "0123456789abcdef") == len;
}

/* A version directory's name: a positive decimal number written as "%lld" would. */
static bool parse_version(const char *s, size_t len, int64_t *out)
{
	uint64_t v;
	char buf[24];

	if (len == 0 || len >= sizeof(buf) || s[0] == '0' || strspn(s, "0123456789") < len)
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (mc_parse_uint(buf, 1, INT64_MAX, &v))
		return false;
	*out = (int64_t)v;
	return true;
}

/* Opens the index at DIR/index.db.rebuild, fresh, and the rebuild's own statements. */
static int open_new_index(struct rebuild *rb, struct mc_err *err)
{
	struct mc_cache *c = rb->c;
	char name[64];
	size_t len = strlen(c->dir) + sizeof("/" NEW_INDEX);
	int ret;

	/* Leftovers of a rebuild that died are derived data, never the old index. */
	for (size_t i = 0; i < sizeof(index_suffixes) / sizeof(index_suffixes[0]); i++) {
		snprintf(name, sizeof(name), NEW_INDEX "%s", index_suffixes[i]);
		if (unlinkat(c->dirfd, name, 0) && errno != ENOENT)
			return mc_err_errno(err, -errno, "cannot remove '%s/%s'", c->dir, name);
	}
	mc_free(c->index_path);
	c->index_path = mc_malloc(len);
	if (!c->index_path)
		return mc_err_set(err, -ENOMEM, "out of memory");
	snprintf(c->index_path, len, "%s/" NEW_INDEX, c->dir);
	/* The normal open path: a new file gets the current schema by the migrations. */
	ret = mc_index_open(c, err);
	if (ret)
		return ret;
	if (sqlite3_exec(c->db,
			 "CREATE TEMP TABLE rebuild_inodes(ino INTEGER PRIMARY KEY,"
			 " digest TEXT NOT NULL, bad INTEGER NOT NULL)",
			 NULL, NULL, NULL) != SQLITE_OK)
		return mc_index_fail(c, sqlite3_errcode(c->db), err, "create a temporary table");
	const struct {
		sqlite3_stmt **s;
		const char *sql;
	} stmts[] = {
	    /* Two names of one inode: the one that matches its content wins. */
	    {&rb->ino_put, "INSERT INTO rebuild_inodes(ino, digest, bad) VALUES(?1, ?2, ?3)"
			   " ON CONFLICT(ino) DO UPDATE SET digest = excluded.digest, bad = 0"
			   " WHERE excluded.bad = 0"},
	    {&rb->ino_get, "SELECT digest, bad FROM rebuild_inodes WHERE ino = ?1"},
	    {&rb->model_put, "INSERT INTO models(name, source, pinned, created_at, last_used_at)"
			     " VALUES(?1, ?2, ?3, ?4, ?5)"},
	    {&rb->version_put, "INSERT INTO versions(id, model_id, state, created_at,"
			       " completed_at, tag) VALUES(?1, ?2, 'complete', ?3, ?4,"
			       " nullif(?5, ''))"},
	    {&rb->version_has, "SELECT m.name FROM versions v JOIN models m ON m.id = v.model_id"
			       " WHERE v.id = ?1"},
	};
	for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
		int rc = sqlite3_prepare_v2(c->db, stmts[i].sql, -1, stmts[i].s, NULL);

		if (rc != SQLITE_OK)
			return mc_index_fail(c, rc, err, "prepare a statement");
	}
	return 0;
}

static void finalize_stmts(struct rebuild *rb)
{
	sqlite3_stmt **all[] = {&rb->ino_put, &rb->ino_get, &rb->model_put, &rb->version_put,
				&rb->version_has};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		sqlite3_finalize(*all[i]);
		*all[i] = NULL;
	}
}

static int ino_put(struct rebuild *rb, uint64_t ino, const char *hex, bool bad, struct mc_err *err)
{
	sqlite3_bind_int64(rb->ino_put, 1, (sqlite3_int64)ino);
	sqlite3_bind_text(rb->ino_put, 2, hex, -1, SQLITE_STATIC);
	sqlite3_bind_int(rb->ino_put, 3, bad);
	return mc_index_exec(rb->c, rb->ino_put, "record an inode", err);
}

/* Sets *found, and @hex and *bad when found, for the blob inode @ino. */
static int ino_get(struct rebuild *rb, uint64_t ino, char *hex, bool *bad, bool *found,
		   struct mc_err *err)
{
	int rc, ret = 0;

	sqlite3_bind_int64(rb->ino_get, 1, (sqlite3_int64)ino);
	rc = sqlite3_step(rb->ino_get);
	*found = rc == SQLITE_ROW;
	if (*found) {
		snprintf(hex, MC_DIGEST_HEX, "%s", mc_index_text(rb->ino_get, 0));
		*bad = sqlite3_column_int(rb->ino_get, 1) != 0;
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(rb->c, rc, err, "look up an inode");
	}
	sqlite3_reset(rb->ino_get);
	return ret;
}

/* Upserts the blob row @hex; inode 0 and mtime 0 for a blob whose file is gone. */
static int blob_put(struct rebuild *rb, const char *hex, uint64_t size, uint64_t ino,
		    int64_t mtime_ns, int64_t created_at, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(rb->c, MC_STMT_BLOB_UPSERT, &s, err);
	if (ret)
		return ret;
	sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)size);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)ino);
	sqlite3_bind_int64(s, 4, mtime_ns);
	sqlite3_bind_int64(s, 5, created_at);
	return mc_index_exec(rb->c, s, "record a blob", err);
}

/*
 * Makes sure a blob row @hex exists for a file that needs it. A row made here matches no file
 * (inode 0): the index keeps the file, verify reports the blob missing, and a pull that needs
 * these bytes downloads them again and replaces the row.
 */
static int blob_need(struct rebuild *rb, const char *hex, uint64_t size, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(rb->c, MC_STMT_BLOB_GET, &s, err);
	if (ret)
		return ret;
	sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 0;
	if (rc != SQLITE_DONE)
		return mc_index_fail(rb->c, rc, err, "look up blob '%s'", hex);
	return blob_put(rb, hex, size, 0, 0, rb->now, err);
}

/* Moves blobs/@ab/@name (open in @abfd) to quarantine/, never over another file. */
static int quarantine(struct rebuild *rb, const char *ab, int abfd, const char *name,
		      const struct stat *st, const char *why, struct mc_err *err)
{
	struct mc_cache *c = rb->c;
	char dest[96], path[64];
	bool created = false;
	struct stat ign;
	int ret, r;

	snprintf(path, sizeof(path), "blobs/%s/%s", ab, name);
	if (rb->quarantine_fd < 0) {
		rb->quarantine_fd = mc_store_open_dir(c->dirfd, QUARANTINE, true, &created);
		if (rb->quarantine_fd < 0)
			return mc_err_errno(err, rb->quarantine_fd,
					    "cannot create '%s/" QUARANTINE "'", c->dir);
		if (created && fsync(c->dirfd))
			return mc_err_errno(err, -errno, "cannot sync '%s'", c->dir);
	}
	for (unsigned k = 0;; k++) {
		if (k)
			snprintf(dest, sizeof(dest), "%s.%lld.%u", name, (long long)rb->now, k);
		else
			snprintf(dest, sizeof(dest), "%s.%lld", name, (long long)rb->now);
		r = renameat2(abfd, name, rb->quarantine_fd, dest, RENAME_NOREPLACE);
		if (r && errno == EINVAL) {
			/* A filesystem without RENAME_NOREPLACE: we hold the cache alone. */
			if (fstatat(rb->quarantine_fd, dest, &ign, AT_SYMLINK_NOFOLLOW) == 0)
				continue;
			r = renameat(abfd, name, rb->quarantine_fd, dest);
		}
		if (!r || errno != EEXIST)
			break;
	}
	if (r)
		return mc_err_errno(err, -errno, "cannot move '%s/%s' to '%s/" QUARANTINE "'",
				    c->dir, path, c->dir);
	if (fsync(rb->quarantine_fd) || fsync(abfd))
		return mc_err_errno(err, -errno, "cannot sync '%s/" QUARANTINE "'", c->dir);
	rb->res->quarantined++;
	ret = ino_put(rb, (uint64_t)st->st_ino, name, true, err);
	if (!ret)
		ret = add_note(rb, err, "quarantined", path, "moved to " QUARANTINE "/%s: %s", dest,
			       why);
	return ret;
}

/* Rehashes blobs/@ab/@name: a row when the bytes match the name, else quarantine. */
static int check_blob(struct rebuild *rb, const char *ab, int abfd, const char *name,
		      struct mc_err *err)
{
	uint8_t digest[MC_DIGEST_LEN];
	char hex[MC_DIGEST_HEX], why[160];
	struct stat st;
	int fd, r, ret;

	fd = openat(abfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return mc_err_errno(err, -errno, "cannot open '%s/blobs/%s/%s'", rb->c->dir, ab,
				    name);
	r = fstat(fd, &st) ? -errno : mc_digest_file(fd, (uint64_t)st.st_size, digest);
	close(fd);
	if (r == -ENOMEM)
		return mc_err_set(err, r, "out of memory");
	if (r) {
		snprintf(why, sizeof(why), "unreadable: %s", strerror(-r));
		return quarantine(rb, ab, abfd, name, &st, why, err);
	}
	mc_hex(digest, MC_DIGEST_LEN, hex);
	if (strcmp(hex, name)) {
		snprintf(why, sizeof(why), "its content has digest %s", hex);
		return quarantine(rb, ab, abfd, name, &st, why, err);
	}
	ret = blob_put(rb, name, (uint64_t)st.st_size, (uint64_t)st.st_ino, mc_store_mtime_ns(&st),
		       (int64_t)st.st_mtim.tv_sec, err);
	if (!ret)
		ret = ino_put(rb, (uint64_t)st.st_ino, name, false, err);
	if (!ret)
		rb->res->blobs++;
	return ret;
}

static int scan_blob_dir(struct rebuild *rb, const char *ab, int abfd, struct mc_err *err)
{
	struct names nm = {0};
	char path[MC_BLOB_REL_MAX + 300];
	struct stat st;
	int ret;

	ret = list_dir(abfd, &nm);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/blobs/%s'", rb->c->dir, ab);
	for (size_t i = 0; !ret && i < nm.n; i++) {
		const char *name = nm.v[i];

		snprintf(path, sizeof(path), "blobs/%s/%s", ab, name);
		if (!is_lower_hex(name, MC_DIGEST_HEX - 1) || strncmp(name, ab, 2)) {
			ret = add_note(rb, err, "skipped", path, "not a blob name");
			continue;
		}
		if (fstatat(abfd, name, &st, AT_SYMLINK_NOFOLLOW)) {
			ret = mc_err_errno(err, -errno, "cannot stat '%s/%s'", rb->c->dir, path);
			break;
		}
		if (!S_ISREG(st.st_mode))
			ret = add_note(rb, err, "skipped", path, "not a regular file");
		else
			ret = check_blob(rb, ab, abfd, name, err);
	}
	names_release(&nm);
	return ret;
}

static int scan_blobs(struct rebuild *rb, struct mc_err *err)
{
	struct names nm = {0};
	char path[300];
	int abfd, ret;

	ret = list_dir(rb->c->blobs_fd, &nm);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/blobs'", rb->c->dir);
	for (size_t i = 0; !ret && i < nm.n; i++) {
		snprintf(path, sizeof(path), "blobs/%s", nm.v[i]);
		if (!is_lower_hex(nm.v[i], 2)) {
			ret = add_note(rb, err, "skipped", path, "not a blob directory");
			continue;
		}
		abfd = mc_store_open_dir(rb->c->blobs_fd, nm.v[i], false, NULL);
		if (abfd == -ENOTDIR || abfd == -ELOOP) {
			ret = add_note(rb, err, "skipped", path, "not a directory");
			continue;
		}
		if (abfd < 0) {
			ret = mc_err_errno(err, abfd, "cannot open '%s/%s'", rb->c->dir, path);
			break;
		}
		ret = scan_blob_dir(rb, nm.v[i], abfd, err);
		close(abfd);
	}
	names_release(&nm);
	return ret;
}

/* Inserts the files row of @path in @vw's version. @mf (may be NULL) gives the validators. */
static int file_put(struct rebuild *rb, const struct vwalk *vw, const char *path, uint64_t size,
		    const char *hex, const struct mc_sidecar_file *mf, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(rb->c, MC_STMT_FILE_INSERT, &s, err);
	if (ret)
		return ret;
	sqlite3_bind_int64(s, 1, vw->version);
	sqlite3_bind_text(s, 2, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, mf ? mf->source : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)size);
	sqlite3_bind_text(s, 5, mf ? mf->etag : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, mf ? mf->last_modified : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 7, hex, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, mf ? mf->sha256 : "", -1, SQLITE_STATIC);
	ret = mc_index_exec(rb->c, s, "record a file", err);
	if (!ret)
		rb->res->files++;
	return ret;
}

/*
 * Links the tree file @leaf (open as @fd) into blobs/ as the blob @hex: read-only, synced. When
 * blobs/ already holds that name (a blob with these bytes, of which the tree file is a copy),
 * the row of that blob serves; verify reports the tree entry not linked.
 */
static int adopt(struct rebuild *rb, int dfd, const char *leaf, int fd, const char *hex,
		 uint64_t size, const char *where, struct mc_err *err)
{
	struct mc_cache *c = rb->c;
	char ab[3], rel[MC_BLOB_REL_MAX];
	struct stat st;
	bool created;
	int abfd, ret = 0;

	snprintf(ab, sizeof(ab), "%.2s", hex);
	snprintf(rel, sizeof(rel), "%s/%s", ab, hex);
	abfd = mc_store_open_dir(c->blobs_fd, ab, true, &created);
	if (abfd < 0)
		return mc_err_errno(err, abfd, "cannot create '%s/blobs/%s'", c->dir, ab);
	if (linkat(dfd, leaf, abfd, hex, 0)) {
		if (errno == EEXIST)
			ret = blob_need(rb, hex, size, err);
		else
			ret = mc_err_errno(err, -errno, "cannot link '%s/%s' to 'blobs/%s'", c->dir,
					   where, rel);
		goto out;
	}
	/* The inode is the tree's too, which consumers only ever read. */
	if (fchmod(fd, 0444) || fsync(fd) || fstat(fd, &st) || fsync(abfd) ||
	    (created && fsync(c->blobs_fd))) {
		ret = mc_err_errno(err, -errno, "cannot sync '%s/blobs/%s'", c->dir, rel);
		goto out;
	}
	ret = blob_put(rb, hex, (uint64_t)st.st_size, (uint64_t)st.st_ino, mc_store_mtime_ns(&st),
		       rb->now, err);
	if (!ret)
		ret = ino_put(rb, (uint64_t)st.st_ino, hex, false, err);
	if (!ret)
		ret = add_note(rb, err, "adopted", where, "blobs/%s", rel);
	if (!ret) {
		rb->res->blobs++;
		rb->res->blobs_adopted++;
	}
out:
	close(abfd);
	return ret;
}

/*
 * One regular file of a version's tree: find its blob by inode (or rehash and adopt it), take
 * its validators from the sidecar when the sidecar agrees, and record it.
 */
static int tree_file(struct rebuild *rb, struct vwalk *vw, int dfd, const char *leaf,
		     const char *path, const struct stat *st, struct mc_err *err)
{
	char where[REL_MAX + 256], hex[MC_DIGEST_HEX] = "", why[200] = "";
	uint8_t digest[MC_DIGEST_LEN];
	struct mc_sidecar_file mf;
	const json_t *entry = NULL;
	bool found = false, bad = false, have_mf = false;
	uint64_t size = (uint64_t)st->st_size;
	int fd, r, ret = 0;

	snprintf(where, sizeof(where), "%s/%s", vw->where, path);
	if (!mc_relpath_is_valid(path))
		return add_note(rb, err, "skipped", where, "not a valid file path");
	if (vw->has_sidecar)
		entry = json_object_get(vw->m.by_path, path);
	have_mf = entry && mc_sidecar_file_get(entry, &mf);
	if (st->st_dev == rb->blobs_dev)
		ret = ino_get(rb, (uint64_t)st->st_ino, hex, &bad, &found, err);
	if (ret)
		return ret;
	if (found && bad) {
		snprintf(why, sizeof(why), "its blob blobs/%.2s/%s was quarantined", hex, hex);
	} else if (!found) {
		fd = openat(dfd, leaf, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		r = fd < 0 ? -errno : mc_digest_file(fd, size, digest);
		if (r == -ENOMEM) {
			ret = mc_err_set(err, r, "out of memory");
		} else if (r && !have_mf) {
			ret = add_note(rb, err, "skipped", where, "unreadable: %s", strerror(-r));
		} else if (r) {
			bad = true;
			snprintf(hex, sizeof(hex), "%s", mf.digest);
			snprintf(why, sizeof(why), "unreadable: %s", strerror(-r));
		} else {
			mc_hex(digest, MC_DIGEST_LEN, hex);
			if (have_mf && strcmp(mf.digest, hex)) {
				bad = true;
				snprintf(why, sizeof(why), "its content has digest %s, not %s", hex,
					 mf.digest);
				snprintf(hex, sizeof(hex), "%s", mf.digest);
			} else {
				ret = adopt(rb, dfd, leaf, fd, hex, size, where, err);
			}
		}
		if (fd >= 0)
			close(fd);
		if (ret || (r && !have_mf))
			goto out;
	}
	/* The sidecar describes these bytes only when it names the same digest. */
	if (have_mf && strcmp(mf.digest, hex))
		have_mf = false;
	if (bad) {
		if (have_mf)
			size = mf.size;
		ret = blob_need(rb, hex, size, err);
		if (!ret)
			ret = add_note(rb, err, "damaged", where, "%s; kept as blobs/%.2s/%s", why,
				       hex, hex);
		vw->bad++;
		rb->res->damaged++;
	} else if (have_mf && mf.size != size) {
		have_mf = false;
	}
	if (!ret)
		ret = file_put(rb, vw, path, size, hex, have_mf ? &mf : NULL, err);
out:
	/* Seen: not reported missing below, even when the sidecar disagreed. */
	if (entry)
		json_object_del(vw->m.by_path, path);
	return ret;
}

/* A note about @path inside @vw's tree. */
static int note_in_tree(struct rebuild *rb, struct vwalk *vw, const char *path, const char *detail,
			struct mc_err *err)
{
	char where[REL_MAX + 256];

	snprintf(where, sizeof(where), "%s/%s", vw->where, path);
	return add_note(rb, err, "skipped", where, "%s", detail);
}

/*
 * Walks the directory @dfd of a version's tree, @depth levels down; @path (of @len bytes) is
 * its path inside.
 */
static int walk(struct rebuild *rb, struct vwalk *vw, int dfd, char *path, size_t len, int depth,
		struct mc_err *err)
{
	struct names nm = {0};
	struct stat st;
	int sub, ret;

	if (depth > DEPTH_MAX)
		return note_in_tree(rb, vw, path, "directories nested too deep", err);
	ret = list_dir(dfd, &nm);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/%s/%s'", rb->c->dir, vw->where,
				    path);
	for (size_t i = 0; !ret && i < nm.n; i++) {
		size_t n = strlen(nm.v[i]), at = len ? len + 1 : 0;

		if (at + n >= REL_MAX) {
			ret = add_note(rb, err, "skipped", vw->where, "a path longer than %d bytes",
				       REL_MAX);
			continue;
		}
		if (len)
			path[len] = '/';
		memcpy(path + at, nm.v[i], n + 1);
		if (fstatat(dfd, nm.v[i], &st, AT_SYMLINK_NOFOLLOW)) {
			ret = mc_err_errno(err, -errno, "cannot stat '%s/%s/%s'", rb->c->dir,
					   vw->where, path);
		} else if (S_ISDIR(st.st_mode)) {
			sub = mc_store_open_dir(dfd, nm.v[i], false, NULL);
			if (sub < 0) {
				ret = mc_err_errno(err, sub, "cannot open '%s/%s/%s'", rb->c->dir,
						   vw->where, path);
			} else {
				ret = walk(rb, vw, sub, path, at + n, depth + 1, err);
				close(sub);
			}
		} else if (S_ISREG(st.st_mode)) {
			ret = tree_file(rb, vw, dfd, nm.v[i], path, &st, err);
		} else {
			ret = note_in_tree(rb, vw, path, "not a regular file or directory", err);
		}
		path[len] = '\0';
	}
	names_release(&nm);
	return ret;
}

/* Files the sidecar lists that the walk did not find: kept, reported missing. */
static int sidecar_missing(struct rebuild *rb, struct vwalk *vw, struct mc_err *err)
{
	struct mc_sidecar_file mf;
	char where[REL_MAX + 256];
	const char *path;
	json_t *entry;
	int ret = 0;

	json_object_foreach(vw->m.by_path, path, entry)
	{
		if (!mc_sidecar_file_get(entry, &mf))
			continue;
		snprintf(where, sizeof(where), "%s/%s", vw->where, path);
		ret = blob_need(rb, mf.digest, mf.size, err);
		if (!ret)
			ret = file_put(rb, vw, path, mf.size, mf.digest, &mf, err);
		if (!ret)
			ret = add_note(rb, err, "missing", where,
				       "listed in %s.json, not in the tree; kept as blobs/%.2s/%s",
				       vw->where, mf.digest, mf.digest);
		if (ret)
			break;
		vw->bad++;
		rb->res->missing++;
	}
	return ret;
}

/* Reads the sidecar of @vw's version; a missing or unusable one is a note, not an error. */
static int read_sidecar(struct rebuild *rb, int mfd, struct vwalk *vw, struct mc_err *err)
{
	char why[300], path[256];
	int r;

	r = mc_sidecar_read(mfd, vw->name, vw->version, &vw->m, why, sizeof(why));
	vw->has_sidecar = r == 0;
	if (r == -ENOMEM)
		return mc_err_set(err, r, "out of memory");
	if (!r) {
		rb->res->sidecars++;
		return 0;
	}
	snprintf(path, sizeof(path), "%s.json", vw->where);
	return add_note(rb, err, "no-sidecar", path, "%s; sources and validators are unknown",
			r == -ENOENT ? "none" : why);
}

/*
 * Records version @version of model @model_id from trees/NAME/@version (NAME open as @mfd).
 * *inserted false: the id belongs to another model's version, skipped with a note.
 */
static int rebuild_version(struct rebuild *rb, const char *name, int mfd, int64_t model_id,
			   int64_t version, bool current, bool *inserted, struct mc_err *err)
{
	struct vwalk vw = {.name = name, .version = version};
	char vname[24], path[REL_MAX];
	sqlite3_stmt *s = NULL;
	struct stat st;
	int vfd, rc, ret;

	*inserted = false;
	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	snprintf(vw.where, sizeof(vw.where), "trees/%s/%s", name, vname);
	sqlite3_bind_int64(rb->version_has, 1, version);
	rc = sqlite3_step(rb->version_has);
	if (rc == SQLITE_ROW)
		ret = add_note(rb, err, "skipped", vw.where, "version id %s belongs to model '%s'",
			       vname, mc_index_text(rb->version_has, 0));
	else
		ret = rc == SQLITE_DONE ? 0 : mc_index_fail(rb->c, rc, err, "look up a version");
	sqlite3_reset(rb->version_has);
	if (ret || rc == SQLITE_ROW)
		return ret;
	vfd = mc_store_open_dir(mfd, vname, false, NULL);
	if (vfd < 0)
		return mc_err_errno(err, vfd, "cannot open '%s/%s'", rb->c->dir, vw.where);
	if (fstat(vfd, &st)) {
		ret = mc_err_errno(err, -errno, "cannot stat '%s/%s'", rb->c->dir, vw.where);
		goto out;
	}
	ret = read_sidecar(rb, mfd, &vw, err);
	if (ret)
		goto out;
	/* Without a sidecar, the tree's own time is the best estimate of both. */
	sqlite3_bind_int64(rb->version_put, 1, version);
	sqlite3_bind_int64(rb->version_put, 2, model_id);
	sqlite3_bind_int64(rb->version_put, 3,
			   vw.has_sidecar && vw.m.created_at ? vw.m.created_at : st.st_mtim.tv_sec);
	sqlite3_bind_int64(rb->version_put, 4,
			   vw.has_sidecar && vw.m.completed_at ? vw.m.completed_at
							       : st.st_mtim.tv_sec);
	sqlite3_bind_text(rb->version_put, 5, vw.has_sidecar ? vw.m.tag : "", -1, SQLITE_STATIC);
	ret = mc_index_exec(rb->c, rb->version_put, "record a version", err);
	if (ret)
		goto out;
	*inserted = true;
	rb->res->versions++;
	path[0] = '\0';
	ret = walk(rb, &vw, vfd, path, 0, 0, err);
	if (!ret && vw.has_sidecar)
		ret = sidecar_missing(rb, &vw, err);
	/*
	 * A version that is not current and lacks bytes never served anyone whole (a tree build
	 * cut short): failed. The current one stays complete; verify names what it lacks.
	 */
	if (!ret && vw.bad && !current) {
		ret = mc_index_stmt(rb->c, MC_STMT_VERSION_STATE, &s, err);
		if (!ret) {
			sqlite3_bind_int64(s, 1, version);
			sqlite3_bind_text(s, 2, "failed", -1, SQLITE_STATIC);
			sqlite3_bind_null(s, 3);
			ret = mc_index_exec(rb->c, s, "mark a version failed", err);
		}
	}
out:
	if (vw.has_sidecar)
		mc_sidecar_release(&vw.m);
	close(vfd);
	return ret;
}

/* The version models/@name points at, among @v[0..n); 0 (with a note) for none. */
static int current_of(struct rebuild *rb, const char *name, const int64_t *v, size_t n,
		      int64_t *current, struct mc_err *err)
{
	char link[256], target[256], path[160];
	ssize_t len;

	*current = 0;
	snprintf(path, sizeof(path), "models/%s", name);
	len = readlinkat(rb->c->models_fd, name, link, sizeof(link) - 1);
	if (len < 0 && errno == ENOENT)
		return add_note(rb, err, "skipped", path, "missing: no version of '%s' is current",
				name);
	if (len < 0)
		return add_note(rb, err, "skipped", path, "not a symbolic link to a version (%s)",
				strerror(errno));
	link[len] = '\0';
	for (size_t i = 0; i < n; i++) {
		mc_store_link_target(name, v[i], target, sizeof(target));
		if (!strcmp(link, target)) {
			*current = v[i];
			return 0;
		}
	}
	return add_note(rb, err, "skipped", path, "points at '%s', not at a version of '%s'", link,
			name);
}

/*
 * The model-wide fields (source, creation time, pin) from the sidecar of the current version,
 * else of the newest version that has one.
 */
static int model_fields(const char *name, int mfd, const int64_t *v, size_t n, int64_t current,
			char **source, int64_t *created, bool *pinned, struct mc_err *err)
{
	struct mc_sidecar m;
	char why[8];
	int r;

	for (size_t k = 0; k <= n; k++) {
		/* k == 0: the current version; then the others, newest first. */
		int64_t ver = k == 0 ? current : v[n - k];

		if (!ver || (k > 0 && ver == current))
			continue;
		r = mc_sidecar_read(mfd, name, ver, &m, why, sizeof(why));
		if (r == -ENOMEM)
			return mc_err_set(err, r, "out of memory");
		if (r)
			continue;
		*source = mc_strdup(m.source);
		if (m.model_created_at)
			*created = m.model_created_at;
		*pinned = m.pinned;
		mc_sidecar_release(&m);
		return *source ? 0 : mc_err_set(err, -ENOMEM, "out of memory");
	}
	return 0;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* The version ids under trees/@name (open as @mfd), ascending; tracks the highest number. */
static int list_versions(struct rebuild *rb, const char *name, int mfd, int64_t **out, size_t *nout,
			 int64_t *oldest, struct mc_err *err)
{
	struct names nm = {0};
	int64_t *v = NULL, id;
	char path[400];
	struct stat st;
	size_t n = 0, len;
	int ret;

	*oldest = 0;
	ret = list_dir(mfd, &nm);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/trees/%s'", rb->c->dir, name);
	v = mc_calloc(nm.n ? nm.n : 1, sizeof(*v));
	if (!v) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; !ret && i < nm.n; i++) {
		const char *e = nm.v[i];

		len = strlen(e);
		snprintf(path, sizeof(path), "trees/%s/%s", name, e);
		/* A sidecar's number is taken too, even when its tree is gone. */
		if (len > 5 && !strcmp(e + len - 5, ".json") && parse_version(e, len - 5, &id)) {
			rb->max_version = id > rb->max_version ? id : rb->max_version;
			continue;
		}
		if (e[0] == '.') /* a sidecar being written when its process died */
			continue;
		if (!parse_version(e, len, &id)) {
			ret = add_note(rb, err, "skipped", path, "not a version directory");
			continue;
		}
		rb->max_version = id > rb->max_version ? id : rb->max_version;
		if (fstatat(mfd, e, &st, AT_SYMLINK_NOFOLLOW)) {
			ret = mc_err_errno(err, -errno, "cannot stat '%s/%s'", rb->c->dir, path);
		} else if (!S_ISDIR(st.st_mode)) {
			ret = add_note(rb, err, "skipped", path, "not a directory");
		} else {
			v[n++] = id;
			if (!*oldest || st.st_mtim.tv_sec < *oldest)
				*oldest = st.st_mtim.tv_sec;
		}
	}
	qsort(v, n, sizeof(*v), cmp_i64);
out:
	names_release(&nm);
	if (ret) {
		mc_free(v);
		return ret;
	}
	*out = v;
	*nout = n;
	return 0;
}

static int rebuild_model(struct rebuild *rb, const char *name, int mfd, struct mc_err *err)
{
	int64_t *v = NULL, current = 0, created = 0, model_id;
	char *source = NULL;
	bool pinned = false, inserted;
	sqlite3_stmt *s = NULL;
	size_t n = 0;
	int ret;

	ret = list_versions(rb, name, mfd, &v, &n, &created, err);
	if (ret || n == 0) /* an empty trees/NAME holds nothing: no model */
		goto out;
	ret = current_of(rb, name, v, n, &current, err);
	if (ret)
		goto out;
	ret = model_fields(name, mfd, v, n, current, &source, &created, &pinned, err);
	if (ret)
		goto out;
	sqlite3_bind_text(rb->model_put, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(rb->model_put, 2, source ? source : "", -1, SQLITE_STATIC);
	sqlite3_bind_int(rb->model_put, 3, pinned);
	sqlite3_bind_int64(rb->model_put, 4, created ? created : rb->now);
	sqlite3_bind_int64(rb->model_put, 5, rb->now);
	ret = mc_index_exec(rb->c, rb->model_put, "record a model", err);
	if (ret)
		goto out;
	model_id = sqlite3_last_insert_rowid(rb->c->db);
	rb->res->models++;
	for (size_t i = 0; !ret && i < n; i++) {
		ret =
		    rebuild_version(rb, name, mfd, model_id, v[i], v[i] == current, &inserted, err);
		if (!inserted && v[i] == current)
			current = 0;
	}
	if (ret || !current)
		goto out;
	ret = mc_index_stmt(rb->c, MC_STMT_MODEL_SET_CURRENT, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, model_id);
	sqlite3_bind_int64(s, 2, current);
	sqlite3_bind_int64(s, 3, rb->now);
	ret = mc_index_exec(rb->c, s, "make a version current", err);
out:
	mc_free(source);
	mc_free(v);
	return ret;
}

static int scan_trees(struct rebuild *rb, struct mc_err *err)
{
	struct names nm = {0};
	char path[400];
	int mfd, ret;

	ret = list_dir(rb->c->trees_fd, &nm);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/trees'", rb->c->dir);
	for (size_t i = 0; !ret && i < nm.n; i++) {
		snprintf(path, sizeof(path), "trees/%s", nm.v[i]);
		if (!mc_name_is_valid(nm.v[i])) {
			ret = add_note(rb, err, "skipped", path, "not a valid model name");
			continue;
		}
		mfd = mc_store_open_dir(rb->c->trees_fd, nm.v[i], false, NULL);
		if (mfd == -ENOTDIR || mfd == -ELOOP) {
			ret = add_note(rb, err, "skipped", path, "not a directory");
			continue;
		}
		if (mfd < 0) {
			ret = mc_err_errno(err, mfd, "cannot open '%s/%s'", rb->c->dir, path);
			break;
		}
		ret = rebuild_model(rb, nm.v[i], mfd, err);
		close(mfd);
	}
	names_release(&nm);
	return ret;
}

/* Reports links in models/ that no rebuilt model explains. */
static int scan_links(struct rebuild *rb, struct mc_err *err)
{
	struct names nm = {0};
	sqlite3_stmt *s = NULL;
	char path[400];
	int rc, ret;

	ret = list_dir(rb->c->models_fd, &nm);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/models'", rb->c->dir);
	for (size_t i = 0; !ret && i < nm.n; i++) {
		if (nm.v[i][0] == '.') /* a link swap's temp name */
			continue;
		ret = mc_index_stmt(rb->c, MC_STMT_MODEL_GET, &s, err);
		if (ret)
			break;
		sqlite3_bind_text(s, 1, nm.v[i], -1, SQLITE_STATIC);
		rc = sqlite3_step(s);
		sqlite3_reset(s);
		snprintf(path, sizeof(path), "models/%s", nm.v[i]);
		if (rc == SQLITE_DONE)
			ret = add_note(rb, err, "skipped", path, "no version tree of this model");
		else if (rc != SQLITE_ROW)
			ret = mc_index_fail(rb->c, rc, err, "look up a model");
	}
	names_release(&nm);
	return ret;
}

/* Version ids are never reused: the next one comes after every number under trees/. */
static int bump_sequence(struct rebuild *rb, struct mc_err *err)
{
	char sql[320];
	int rc;

	snprintf(sql, sizeof(sql),
		 "UPDATE sqlite_sequence SET seq = max(seq, %lld) WHERE name = 'versions';"
		 "INSERT INTO sqlite_sequence(name, seq) SELECT 'versions', %lld"
		 " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'versions')",
		 (long long)rb->max_version, (long long)rb->max_version);
	rc = sqlite3_exec(rb->c->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : mc_index_fail(rb->c, rc, err, "record the version sequence");
}

/*
 * Closes the new index as one file: rollback-journal mode has no -wal to carry along (the next
 * mc_index_open() turns WAL back on).
 */
static int close_new_index(struct rebuild *rb, struct mc_err *err)
{
	struct mc_cache *c = rb->c;
	char name[64];
	int rc;

	finalize_stmts(rb);
	rc = sqlite3_exec(c->db, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return mc_index_fail(c, rc, err, "leave WAL mode");
	mc_index_close(c);
	snprintf(name, sizeof(name), NEW_INDEX "-wal");
	if (faccessat(c->dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return mc_err_set(err, MC_E_INDEX, "cannot close '%s': its -wal file stayed",
				  c->index_path);
	/* A stale wal-index without a WAL holds nothing. */
	snprintf(name, sizeof(name), NEW_INDEX "-shm");
	unlinkat(c->dirfd, name, 0);
	return 0;
}

/* A free name index.db.corrupt-<now>[.k] for the old index and each of its companions. */
static void aside_name(struct rebuild *rb, char *base, size_t len)
{
	const size_t nsfx = sizeof(index_suffixes) / sizeof(index_suffixes[0]);
	char to[96];
	bool free_name = false;
	struct stat st;

	for (unsigned k = 0; !free_name; k++) {
		if (k)
			snprintf(base, len, "index.db.corrupt-%lld.%u", (long long)rb->now, k);
		else
			snprintf(base, len, "index.db.corrupt-%lld", (long long)rb->now);
		free_name = true;
		for (size_t i = 0; i < nsfx && free_name; i++) {
			snprintf(to, sizeof(to), "%s%s", base, index_suffixes[i]);
			free_name =
			    fstatat(rb->c->dirfd, to, &st, AT_SYMLINK_NOFOLLOW) && errno == ENOENT;
		}
	}
}

/*
 * Moves index.db and its companions aside (the -wal first: it must never meet a main file it
 * does not belong to), then renames the new index in and syncs the directory. Nothing here
 * allocates: a failure between the renames would leave no index at all. *moved tells whether
 * anything was moved (from then on the new index is never removed); *swapped, whether the new
 * index is in place.
 */
static int swap_in(struct rebuild *rb, bool *moved, bool *swapped, struct mc_err *err)
{
	const size_t nsfx = sizeof(index_suffixes) / sizeof(index_suffixes[0]);
	struct mc_cache *c = rb->c;
	char base[64], from[64], to[96];
	bool was[sizeof(index_suffixes) / sizeof(index_suffixes[0])] = {false};
	struct stat st;
	int ret = 0;

	aside_name(rb, base, sizeof(base));
	for (size_t i = 0; i < nsfx; i++) {
		snprintf(from, sizeof(from), "index.db%s", index_suffixes[i]);
		snprintf(to, sizeof(to), "%s%s", base, index_suffixes[i]);
		if (fstatat(c->dirfd, from, &st, AT_SYMLINK_NOFOLLOW)) {
			if (errno == ENOENT)
				continue;
			return mc_err_errno(err, -errno, "cannot stat '%s/%s'", c->dir, from);
		}
		if (renameat(c->dirfd, from, c->dirfd, to))
			return mc_err_errno(err, -errno, "cannot move '%s/%s' aside to '%s'",
					    c->dir, from, to);
		was[i] = *moved = true;
	}
	if (renameat(c->dirfd, NEW_INDEX, c->dirfd, "index.db"))
		return mc_err_errno(err, -errno, "cannot rename '%s/" NEW_INDEX "' to 'index.db'",
				    c->dir);
	*swapped = true;
	if (fsync(c->dirfd))
		return mc_err_errno(err, -errno, "cannot sync '%s'", c->dir);
	if (*moved)
		snprintf(rb->res->moved_aside, sizeof(rb->res->moved_aside), "%s", base);
	for (size_t i = 0; !ret && i < nsfx; i++) {
		snprintf(from, sizeof(from), "index.db%s", index_suffixes[i]);
		if (was[i])
			ret =
			    add_note(rb, err, "moved-aside", from, "%s%s", base, index_suffixes[i]);
	}
	return ret;
}

/* Deletes the partial downloads in tmp/: their progress was recorded in the old index only. */
static int clean_tmp(struct rebuild *rb, struct mc_err *err)
{
	struct mc_cache *c = rb->c;
	struct names nm = {0};
	char path[400];
	struct stat st;
	int fd, ret;

	/* The new index is in place: what is left here is reported, not an error. */
	ret = list_dir(c->tmp_fd, &nm);
	if (ret == -ENOMEM)
		return mc_err_set(err, ret, "out of memory");
	if (ret)
		return add_note(rb, err, "skipped", "tmp", "cannot read it: %s", strerror(-ret));
	for (size_t i = 0; !ret && i < nm.n; i++) {
		snprintf(path, sizeof(path), "tmp/%s", nm.v[i]);
		if (fstatat(c->tmp_fd, nm.v[i], &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode)) {
			ret = add_note(rb, err, "skipped", path, "not a regular file");
			continue;
		}
		/* A writer still holding its flock (an mcache older than the rebuild lock). */
		fd = openat(c->tmp_fd, nm.v[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) && errno == EWOULDBLOCK) {
			close(fd);
			ret = add_note(rb, err, "skipped", path, "in use by a live process");
			continue;
		}
		if (fd >= 0)
			close(fd);
		if (unlinkat(c->tmp_fd, nm.v[i], 0))
			ret = add_note(rb, err, "skipped", path, "cannot remove it: %s",
				       strerror(errno));
		else
			rb->res->tmp_removed++;
	}
	names_release(&nm);
	/* Best effort: a removal that does not last leaves an orphan for gc, nothing worse. */
	if (rb->res->tmp_removed)
		fsync(c->tmp_fd);
	return ret;
}

/*
 * The settings (the gc budget) live only in the index: copied from the old one when it can
 * still be read, else reported lost. Read-only, never following a symlink.
 */
static int salvage_settings(struct rebuild *rb, struct mc_err *err)
{
	struct mc_cache *c = rb->c;
	sqlite3_stmt *s = NULL, *put = NULL;
	sqlite3 *old = NULL;
	char *path = NULL;
	struct stat st;
	size_t len = strlen(c->dir) + sizeof("/index.db");
	int rc, ret = 0;

	if (fstatat(c->dirfd, "index.db", &st, AT_SYMLINK_NOFOLLOW) || st.st_size == 0)
		return 0;
	path = mc_malloc(len);
	if (!path)
		return mc_err_set(err, -ENOMEM, "out of memory");
	snprintf(path, len, "%s/index.db", c->dir);
	rc = sqlite3_open_v2(path, &old, SQLITE_OPEN_READONLY | OPEN_NOFOLLOW, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(old, "SELECT key, value FROM settings", -1, &s, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(
		    c->db, "INSERT OR REPLACE INTO settings(key, value) VALUES(?1, ?2)", -1, &put,
		    NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		sqlite3_bind_value(put, 1, sqlite3_column_value(s, 0));
		sqlite3_bind_value(put, 2, sqlite3_column_value(s, 1));
		ret = mc_index_exec(c, put, "copy a setting", err);
		if (ret)
			goto out;
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_DONE)
		ret = add_note(rb, err, "skipped", "index.db",
			       "its settings (such as the gc budget) cannot be read (%s): set them "
			       "again",
			       sqlite3_errstr(rc));
out:
	sqlite3_finalize(put);
	sqlite3_finalize(s);
	sqlite3_close(old);
	mc_free(path);
	return ret;
}

/* Everything that goes into the new index, in one transaction. */
static int fill_index(struct rebuild *rb, struct mc_err *err)
{
	int ret;

	ret = mc_index_begin(rb->c, err);
	if (ret)
		return ret;
	ret = scan_blobs(rb, err);
	if (!ret)
		ret = scan_trees(rb, err);
	if (!ret)
		ret = scan_links(rb, err);
	if (!ret)
		ret = salvage_settings(rb, err);
	if (!ret)
		ret = bump_sequence(rb, err);
	if (!ret)
		ret = mc_index_commit(rb->c, err);
	if (ret)
		mc_index_rollback(rb->c);
	return ret;
}

int mc_cache_rebuild_index(const char *dir, unsigned flags, struct mc_rebuild_result *res,
			   struct mc_err *err)
{
	struct rebuild rb = {.res = res, .quarantine_fd = -1};
	struct stat st;
	char name[64];
	bool moved = false, swapped = false;
	int ret;

	memset(res, 0, sizeof(*res));
	rb.now = mc_now_unix();
	if (!dir || !*dir)
		return mc_err_set(err, MC_E_USAGE, "empty cache directory");
	/* A rebuild works on a cache that exists; it never makes one. */
	if (stat(dir, &st))
		return mc_err_errno(err, -errno, "cannot open '%s'", dir);
	ret = mc_cache_open2(&rb.c, dir, flags | MC_CACHE_LAYOUT_ONLY, err);
	if (ret)
		return ret;
	if (fstat(rb.c->blobs_fd, &st)) {
		ret = mc_err_errno(err, -errno, "cannot stat '%s/blobs'", rb.c->dir);
		goto out;
	}
	rb.blobs_dev = st.st_dev;
	ret = open_new_index(&rb, err);
	if (!ret)
		ret = fill_index(&rb, err);
	if (!ret)
		ret = close_new_index(&rb, err);
	if (!ret)
		ret = swap_in(&rb, &moved, &swapped, err);
	if (!ret)
		ret = clean_tmp(&rb, err);
out:
	finalize_stmts(&rb);
	mc_index_close(rb.c);
	/*
	 * Once the old index is aside, a complete new one is kept even when it could not be put in
	 * place: renaming it is all that is left to do (and the next rebuild makes it again).
	 */
	if (!moved && !swapped) {
		for (size_t i = 0; i < sizeof(index_suffixes) / sizeof(index_suffixes[0]); i++) {
			snprintf(name, sizeof(name), NEW_INDEX "%s", index_suffixes[i]);
			unlinkat(rb.c->dirfd, name, 0);
		}
	}
	if (rb.quarantine_fd >= 0)
		close(rb.quarantine_fd);
	mc_cache_close(rb.c);
	return ret;
}

/* True when trees/ holds anything: models whose index is gone, not a new cache. */
static bool holds_trees(struct mc_cache *c)
{
	struct names nm = {0};
	bool any = false;

	if (list_dir(c->trees_fd, &nm))
		return true; /* unreadable: the safe answer is to refuse */
	for (size_t i = 0; i < nm.n && !any; i++)
		any = nm.v[i][0] != '.';
	names_release(&nm);
	return any;
}

/* Where flock() is not supported (some network filesystems), there is no lock to take. */
static bool no_flock(int e)
{
	return e == ENOLCK || e == EOPNOTSUPP || e == ENOSYS;
}

int mc_rebuild_guard(struct mc_cache *c, bool exclusive, struct mc_err *err)
{
	struct stat st;

	c->lock_fd = openat(c->dirfd, LOCK_NAME, O_RDONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (c->lock_fd < 0)
		return mc_err_errno(err, -errno, "cannot open '%s/" LOCK_NAME "'", c->dir);
	if (exclusive) {
		if (!flock(c->lock_fd, LOCK_EX | LOCK_NB) || no_flock(errno))
			return 0;
		if (errno == EWOULDBLOCK)
			return mc_err_set(
			    err, -EBUSY,
			    "cannot rebuild the index of '%s': another mcache process "
			    "has the cache open",
			    c->dir);
		return mc_err_errno(err, -errno, "cannot lock '%s/" LOCK_NAME "'", c->dir);
	}
	while (flock(c->lock_fd, LOCK_SH | LOCK_NB) && !no_flock(errno)) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return mc_err_errno(err, -errno, "cannot lock '%s/" LOCK_NAME "'", c->dir);
		if (mc_fetch_interrupted())
			return mc_err_set(err, MC_E_INTERRUPTED,
					  "interrupted while 'mcache rebuild-index' runs on '%s'",
					  c->dir);
		usleep(LOCK_POLL_MS * 1000);
	}
	if (fstatat(c->dirfd, "index.db", &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_size > 0)
		return 0;
	if (holds_trees(c))
		return mc_err_set(err, MC_E_INDEX,
				  "index '%s' is missing but '%s/trees' holds models: run 'mcache "
				  "rebuild-index'",
				  c->index_path, c->dir);
	return 0;
}
