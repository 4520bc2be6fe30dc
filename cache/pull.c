/*
 * mc_cache_pull(): the bridge between the fetcher and the cache. It validates the request,
 * records a 'pulling' version, and answers the fetcher's callbacks: open (reuse a blob, resume
 * a partial download, or start one), blocks_durable (record resumable progress), done (publish
 * the blob). Once every file is in, it builds the version's tree and makes it current.
 *
 * The identity of a remote object is its redacted URL plus its size, ETag and Last-Modified;
 * progress is kept per hash block, so a resume never mixes two versions of an object and works
 * whatever chunk size either run used. A temp file is locked (flock) by the process writing it,
 * so a second process never writes into a download that is alive.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_source.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "mc_banned.h"

/*
 * Inserts the files row for @pf in this version, pointing at the blob @hex; for a bundle, its
 * `bundles` row instead (its entries become files rows when the pull publishes).
 */
static int record_file(struct mc_pull *p, struct mc_pull_file *pf, const char *hex,
		       struct mc_err *err)
{
	const struct mc_remote_info *r = &pf->f.remote;
	sqlite3_stmt *s = NULL;
	int ret;

	if (pf->bundle)
		return mc_bundle_record(p, pf, hex, err);
	ret = mc_index_stmt(p->c, MC_STMT_FILE_INSERT, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, p->version);
	sqlite3_bind_text(s, 2, pf->path, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, pf->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, (sqlite3_int64)r->size);
	sqlite3_bind_text(s, 5, r->etag, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, r->last_modified, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 7, hex, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, pf->sha256, -1, SQLITE_STATIC);
	ret = mc_index_exec(p->c, s, "record a file", err);
	if (ret)
		goto out;
	pf->recorded = true;
out:
	return ret;
}

/*
 * Records @pf as the cached blob @hex. A blob that is gone or was changed on disk (its size,
 * inode or mtime no longer what its row says) is not reused: it gets downloaded again.
 */
static int reuse_blob(struct mc_pull *p, struct mc_pull_file *pf, const char *hex, uint64_t inode,
		      int64_t mtime_ns, struct mc_err *err)
{
	char rel[MC_BLOB_REL_MAX];
	int ret;

	if (!hex[0] || mc_store_blob_rel_hex(hex, rel) ||
	    !mc_store_blob_matches(p->c, rel, pf->f.remote.size, inode, mtime_ns))
		return 0;
	ret = record_file(p, pf, hex, err);
	if (!ret) {
		pf->f.skip = true;
		pf->reused = true;
	}
	return ret;
}

/*
 * A blob in the index came from the same object: same source and size, and the same ETag, or
 * the same Last-Modified when the origin answered 304 to If-Modified-Since.
 */
static int find_same_object(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	struct mc_fetch_file *f = &pf->f;
	char hex[MC_DIGEST_HEX] = "";
	uint64_t inode = 0;
	int64_t mtime_ns = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(p->c, pf->bundle ? MC_STMT_BUNDLE_REUSE_FIND : MC_STMT_REUSE_FIND, &s,
			    err);
	if (ret)
		return ret;
	sqlite3_bind_text(s, 1, pf->source, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, f->remote.etag, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)f->remote.size);
	sqlite3_bind_text(s, 4, f->remote.last_modified, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, f->not_modified);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		snprintf(hex, sizeof(hex), "%s", mc_index_text(s, 0));
		inode = (uint64_t)sqlite3_column_int64(s, 2);
		mtime_ns = sqlite3_column_int64(s, 3);
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(p->c, rc, err, "look up '%s'", f->label);
	}
	sqlite3_reset(s);
	return ret ? ret : reuse_blob(p, pf, hex, inode, mtime_ns, err);
}

/*
 * Dedup before download: the origin published the object's SHA-256 in its listing (the Hub
 * does for LFS files) and a cached file, from any source, was checked against the same SHA-256
 * and has the same size: link that blob instead of fetching the bytes.
 */
static int find_same_sha256(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	char hex[MC_DIGEST_HEX] = "";
	uint64_t inode = 0;
	int64_t mtime_ns = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret = 0;

	rc = sqlite3_prepare_v2(p->c->db,
				"SELECT b.digest, b.inode, b.mtime_ns FROM files f"
				" JOIN blobs b ON b.digest = f.digest"
				" WHERE f.sha256 = ?1 AND f.size = ?2 AND b.size = ?2 LIMIT 1",
				-1, &s, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(s, 1, pf->sha256, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)pf->f.remote.size);
		rc = sqlite3_step(s);
	}
	if (rc == SQLITE_ROW) {
		snprintf(hex, sizeof(hex), "%s", mc_index_text(s, 0));
		inode = (uint64_t)sqlite3_column_int64(s, 1);
		mtime_ns = sqlite3_column_int64(s, 2);
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(p->c, rc, err, "look up '%s' by its SHA-256", pf->f.label);
	}
	sqlite3_finalize(s);
	return ret ? ret : reuse_blob(p, pf, hex, inode, mtime_ns, err);
}

/*
 * Runs @find in one write transaction: the lookup, the check of the blob on disk and the files
 * row that references it. gc, which removes only blobs no files row references, also decides
 * inside one, so a blob found here cannot be collected before this version points at it.
 */
static int reuse_in_tx(struct mc_pull *p, struct mc_pull_file *pf,
		       int (*find)(struct mc_pull *, struct mc_pull_file *, struct mc_err *),
		       struct mc_err *err)
{
	int ret;

	ret = mc_index_begin(p->c, err);
	if (ret)
		return ret;
	ret = find(p, pf, err);
	if (!ret)
		ret = mc_index_commit(p->c, err);
	if (ret) {
		mc_index_rollback(p->c);
		pf->recorded = false;
		pf->f.skip = false;
		pf->reused = false;
	}
	return ret;
}

/* Skips @pf when a cached blob came from the same object (see find_same_object()). */
static int try_reuse(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	const struct mc_fetch_file *f = &pf->f;

	if (!f->remote.etag[0] && !(f->not_modified && f->remote.last_modified[0]))
		return 0;
	return reuse_in_tx(p, pf, find_same_object, err);
}

/* True for the "<digits>.part" names this file gives temp files. */
static bool is_tmp_name(const char *name)
{
	size_t n = strspn(name, "0123456789");

	return n > 0 && !strcmp(name + n, ".part");
}

/* Forgets the download row @id and its temp file: the object changed, or the file is bad. */
static int drop_download(struct mc_pull *p, int64_t id, const char *tmp_name, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(p->c, MC_STMT_DOWNLOAD_DELETE, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, id);
	ret = mc_index_exec(p->c, s, "forget a stale download", err);
	if (ret)
		goto out;
	if (is_tmp_name(tmp_name))
		unlinkat(p->c->tmp_fd, tmp_name, 0);
out:
	return ret;
}

/*
 * Takes download @id over from session @seen (dead, or ours from an earlier pull in this
 * process). *won is false when another process took it first.
 */
static int claim_download(struct mc_pull *p, int64_t id, int64_t seen, bool *won,
			  struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	*won = false;
	ret = mc_index_stmt(p->c, MC_STMT_DOWNLOAD_CLAIM, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, id);
	sqlite3_bind_int64(s, 2, p->c->session_id);
	sqlite3_bind_int64(s, 3, seen);
	ret = mc_index_exec(p->c, s, "take over a download", err);
	*won = !ret && sqlite3_changes(p->c->db) == 1;
out:
	return ret;
}

/*
 * Another live process owns this object's download: skip it in this round, and wait for that
 * process to publish it (mc_cache_pull) instead of fetching the same bytes twice.
 */
static void defer(struct mc_pull_file *pf)
{
	pf->f.skip = true;
	pf->deferred = true;
}

/*
 * Takes the temp file's lock. -EBUSY, without a message, when a live process holds it: the
 * download is not ours.
 */
static int lock_tmp(int fd, const char *label, struct mc_err *err)
{
	int ret = 0;

	if (flock(fd, LOCK_EX | LOCK_NB))
		ret = errno == EWOULDBLOCK
			  ? -EBUSY
			  : mc_err_errno(err, -errno, "cannot lock the download of '%s'", label);
	return ret;
}

/*
 * Marks the blocks recorded for download @id as done. Sets *valid to false, leaving the marks
 * cleared, when a span does not fit the object.
 */
static int load_spans(struct mc_pull *p, struct mc_pull_file *pf, int64_t id, bool *valid,
		      struct mc_err *err)
{
	struct mc_fetch_file *f = &pf->f;
	uint64_t first, count;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*valid = true;
	ret = mc_index_stmt(p->c, MC_STMT_SPANS_GET, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, id);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		first = (uint64_t)sqlite3_column_int64(s, 0);
		count = (uint64_t)sqlite3_column_int64(s, 1);
		if (count == 0 || first >= f->nblocks || count > f->nblocks - first ||
		    (uint64_t)sqlite3_column_bytes(s, 2) != count * MC_DIGEST_LEN) {
			*valid = false;
			break;
		}
		memset(f->block_done + first, 1, count);
		memcpy(f->block_digests + first * MC_DIGEST_LEN, sqlite3_column_blob(s, 2),
		       count * MC_DIGEST_LEN);
	}
	if (*valid && rc != SQLITE_DONE)
		ret = mc_index_fail(p->c, rc, err, "read the progress of '%s'", f->label);
	sqlite3_reset(s);
	if (ret || !*valid) {
		memset(f->block_done, 0, f->nblocks);
		memset(f->block_digests, 0, f->nblocks * MC_DIGEST_LEN);
	}
out:
	return ret;
}

/* The downloads row of an object, as read by try_resume(). */
struct download_row {
	int64_t id;
	uint64_t size;
	char etag[256];
	char last_modified[64];
	char tmp_name[32];
	int64_t session_id;	    /* the lease: the session writing it, 0 for none */
	char digest[MC_DIGEST_HEX]; /* set once the temp file is about to become a blob */
};

static int get_download(struct mc_pull *p, struct mc_pull_file *pf, struct download_row *d,
			struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	memset(d, 0, sizeof(*d));
	ret = mc_index_stmt(p->c, MC_STMT_DOWNLOAD_GET, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_text(s, 1, pf->source, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		d->id = sqlite3_column_int64(s, 0);
		d->size = (uint64_t)sqlite3_column_int64(s, 1);
		snprintf(d->etag, sizeof(d->etag), "%s", mc_index_text(s, 2));
		snprintf(d->last_modified, sizeof(d->last_modified), "%s", mc_index_text(s, 3));
		snprintf(d->tmp_name, sizeof(d->tmp_name), "%s", mc_index_text(s, 4));
		d->session_id = sqlite3_column_int64(s, 5);
		snprintf(d->digest, sizeof(d->digest), "%s", mc_index_text(s, 6));
	} else if (rc != SQLITE_DONE) {
		ret = mc_index_fail(p->c, rc, err, "look up the download of '%s'", pf->f.label);
	}
	sqlite3_reset(s);
out:
	return ret;
}

/* True when the recorded download is the same object as the one the origin describes now. */
static bool same_object(const struct download_row *d, const struct mc_remote_info *r)
{
	/* Without a validator there is no way to tell two versions apart: never resume. */
	return (r->etag[0] || r->last_modified[0]) && r->ranges && d->size == r->size &&
	       !strcmp(d->etag, r->etag) && !strcmp(d->last_modified, r->last_modified);
}

static int record_blob(struct mc_pull *p, struct mc_pull_file *pf, const char *hex,
		       const struct stat *st, struct mc_err *err);

/*
 * A run killed after renaming a finished temp file into blobs/ but before the index commit left
 * a download row with its digest and no temp file: adopt the blob instead of fetching again.
 */
static int try_adopt(struct mc_pull *p, struct mc_pull_file *pf, const struct download_row *d,
		     struct mc_err *err)
{
	char rel[MC_BLOB_REL_MAX];
	struct stat st;
	int ret = 0;

	if (!d->digest[0] || mc_store_blob_rel_hex(d->digest, rel) ||
	    fstatat(p->c->blobs_fd, rel, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode) ||
	    (uint64_t)st.st_size != pf->f.remote.size)
		goto out;
	pf->download_id = d->id;
	ret = record_blob(p, pf, d->digest, &st, err);
	pf->download_id = 0;
	if (ret)
		goto out;
	pf->f.skip = true;
	pf->reused = true;
out:
	return ret;
}

/*
 * The object has a download row. Its owner alive (by its session, or by the temp file's lock):
 * defer. Else resume it when it is the same object, adopting a blob its owner published just
 * before dying, or drop it. Sets f->fd when it resumes.
 */
static int try_resume(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	struct mc_fetch_file *f = &pf->f;
	struct download_row d;
	struct stat st;
	bool valid, won;
	int fd, ret;

	ret = get_download(p, pf, &d, err);
	if (ret || !d.id)
		goto out;
	if (d.session_id != p->c->session_id && mc_session_alive(p->c, d.session_id)) {
		defer(pf);
		goto out;
	}
	if (same_object(&d, &f->remote)) {
		ret = try_adopt(p, pf, &d, err);
		if (ret || f->skip)
			goto out;
	}
	fd = is_tmp_name(d.tmp_name)
		 ? openat(p->c->tmp_fd, d.tmp_name, O_RDWR | O_CLOEXEC | O_NOFOLLOW)
		 : -1;
	if (fd >= 0) {
		ret = lock_tmp(fd, f->label, err);
		if (ret == -EBUSY) {
			ret = 0;
			defer(pf);
		}
		if (ret || f->skip)
			goto out_close;
	}
	/*
	 * A temp file with a second name (a hard link planted in a shared cache directory) would
	 * carry the resumed writes to that other name: start over instead.
	 */
	if (!same_object(&d, &f->remote) || fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode) ||
	    st.st_nlink != 1 || (uint64_t)st.st_size != f->remote.size)
		goto out_drop;
	ret = load_spans(p, pf, d.id, &valid, err);
	if (ret)
		goto out_close;
	if (!valid)
		goto out_drop;
	ret = claim_download(p, d.id, d.session_id, &won, err);
	if (!ret && !won)
		defer(pf);
	if (ret || !won)
		goto out_close;
	pf->download_id = d.id;
	pf->resumed = true;
	/* Its writer may still be alive after all (a lease misjudged): rehash before publish. */
	pf->taken_over = d.session_id != p->c->session_id;
	snprintf(pf->tmp_name, sizeof(pf->tmp_name), "%s", d.tmp_name);
	f->fd = fd;
	goto out;
out_drop:
	ret = drop_download(p, d.id, d.tmp_name, err);
out_close:
	if (fd >= 0)
		close(fd);
out:
	return ret;
}

/* Inserts the downloads row and names its temp file after the row's id. */
static int insert_download(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	const struct mc_remote_info *r = &pf->f.remote;
	struct mc_cache *c = p->c;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_begin(c, err);
	if (ret)
		goto out;
	ret = mc_index_stmt(c, MC_STMT_DOWNLOAD_INSERT, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_text(s, 1, pf->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)r->size);
	sqlite3_bind_text(s, 3, r->etag, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, r->last_modified, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, c->session_id);
	sqlite3_bind_int64(s, 6, mc_now_unix());
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_CONSTRAINT_UNIQUE) {
		/* Another process started it since try_resume() looked: wait for it. */
		defer(pf);
		goto out_rollback;
	}
	if (rc != SQLITE_DONE) {
		ret = mc_index_fail(c, rc, err, "record the download of '%s'", pf->f.label);
		goto out_rollback;
	}
	pf->download_id = sqlite3_last_insert_rowid(c->db);
	snprintf(pf->tmp_name, sizeof(pf->tmp_name), "%lld.part", (long long)pf->download_id);
	ret = mc_index_stmt(c, MC_STMT_DOWNLOAD_SET_TMP, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, pf->download_id);
	sqlite3_bind_text(s, 2, pf->tmp_name, -1, SQLITE_STATIC);
	ret = mc_index_exec(c, s, "record the download", err);
	if (!ret)
		ret = mc_index_commit(c, err);
	if (!ret)
		goto out;
out_rollback:
	mc_index_rollback(c);
	pf->download_id = 0;
	pf->tmp_name[0] = '\0';
out:
	return ret;
}

/* Starts a new download: the row first, then the preallocated, locked temp file. */
static int start_download(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	struct mc_fetch_file *f = &pf->f;
	int fd = -1, ret;

	ret = insert_download(p, pf, err);
	if (ret || pf->deferred)
		goto out;
	/* A full filesystem first gets one gc, keeping this model, when that can make room. */
	ret = mc_gc_tmp_create(p->c, p->name, pf->tmp_name, f->remote.size, f->label, &fd, err);
	if (!ret)
		ret = lock_tmp(fd, f->label, err);
	if (ret)
		goto out_drop;
	f->fd = fd;
	goto out;
out_drop:
	if (fd >= 0)
		close(fd);
	drop_download(p, pf->download_id, fd >= 0 ? pf->tmp_name : "", NULL);
	pf->download_id = 0;
out:
	return ret;
}

/* Forgets this session's placeholder for @pf's object (see claim_intents()), best effort. */
static void drop_intent(struct mc_pull *p, struct mc_pull_file *pf)
{
	sqlite3_stmt *s = NULL;

	if (sqlite3_prepare_v2(p->c->db,
			       "DELETE FROM downloads WHERE source = ?1 AND session_id = ?2"
			       " AND tmp_name IS NULL",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, pf->source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, p->c->session_id);
		sqlite3_step(s);
	}
	sqlite3_finalize(s);
}

static int pull_open(void *ctx, struct mc_fetch_file *f, struct mc_err *err)
{
	struct mc_pull *p = ctx;
	struct mc_pull_file *pf = f->user;
	int ret;

	f->fd = -1;
	f->skip = false;
	pf->deferred = false;
	pf->taken_over = false;
	if (pf->size_listed && f->remote.size != pf->listed_size) {
		ret = mc_err_set(err, MC_E_ORIGIN,
				 "'%s' has %llu bytes at the origin but %llu in its listing",
				 f->label, (unsigned long long)f->remote.size,
				 (unsigned long long)pf->listed_size);
		goto out;
	}
	ret = try_reuse(p, pf, err);
	if (!ret && f->skip)
		drop_intent(p, pf);
	if (ret || f->skip)
		goto out;
	ret = try_resume(p, pf, err);
	if (ret || f->skip || f->fd >= 0)
		goto out;
	ret = start_download(p, pf, err);
out:
	return ret;
}

static int pull_blocks_durable(void *ctx, struct mc_fetch_file *f,
			       const struct mc_block_span *spans, size_t n, struct mc_err *err)
{
	struct mc_pull *p = ctx;
	struct mc_pull_file *pf = f->user;
	sqlite3_stmt *s = NULL;
	int ret;

	if (!pf->download_id) {
		ret = mc_err_set(err, -EINVAL, "no download in progress for '%s'", f->label);
		goto out;
	}
	ret = mc_index_begin(p->c, err);
	if (ret)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct mc_block_span *sp = &spans[i];

		if (sp->count == 0 || sp->first >= f->nblocks ||
		    sp->count > f->nblocks - sp->first) {
			ret = mc_err_set(err, -EINVAL, "blocks %llu+%llu are outside '%s'",
					 (unsigned long long)sp->first,
					 (unsigned long long)sp->count, f->label);
			goto out_rollback;
		}
		ret = mc_index_stmt(p->c, MC_STMT_SPAN_INSERT, &s, err);
		if (ret)
			goto out_rollback;
		sqlite3_bind_int64(s, 1, pf->download_id);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)sp->first);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)sp->count);
		sqlite3_bind_blob64(s, 4, f->block_digests + sp->first * MC_DIGEST_LEN,
				    sp->count * MC_DIGEST_LEN, SQLITE_STATIC);
		ret = mc_index_exec(p->c, s, "record download progress", err);
		if (ret)
			goto out_rollback;
	}
	ret = mc_session_heartbeat(p->c, false, err);
	if (!ret)
		ret = mc_index_commit(p->c, err);
	if (!ret)
		goto out;
out_rollback:
	mc_index_rollback(p->c);
out:
	return ret;
}

int mc_pull_blob_is_indexed(struct mc_pull *p, const char *hex, const char *rel, bool *indexed,
			    struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*indexed = false;
	ret = mc_index_stmt(p->c, MC_STMT_BLOB_GET, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*indexed = mc_store_blob_matches(p->c, rel, (uint64_t)sqlite3_column_int64(s, 0),
						 (uint64_t)sqlite3_column_int64(s, 1),
						 sqlite3_column_int64(s, 2));
	else if (rc != SQLITE_DONE)
		ret = mc_index_fail(p->c, rc, err, "look up blob '%s'", hex);
	sqlite3_reset(s);
out:
	return ret;
}

/* In one transaction: the blob row, the files row, and the end of the download. */
static int record_blob(struct mc_pull *p, struct mc_pull_file *pf, const char *hex,
		       const struct stat *st, struct mc_err *err)
{
	struct mc_cache *c = p->c;
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_begin(c, err);
	if (ret)
		goto out;
	ret = mc_index_stmt(c, MC_STMT_BLOB_UPSERT, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_text(s, 1, hex, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)st->st_size);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)st->st_ino);
	sqlite3_bind_int64(s, 4, mc_store_mtime_ns(st));
	sqlite3_bind_int64(s, 5, mc_now_unix());
	ret = mc_index_exec(c, s, "record a blob", err);
	if (!ret)
		ret = record_file(p, pf, hex, err);
	if (!ret)
		ret = mc_index_stmt(c, MC_STMT_DOWNLOAD_DELETE, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, pf->download_id);
	ret = mc_index_exec(c, s, "end a download", err);
	if (!ret)
		ret = mc_index_commit(c, err);
	if (!ret)
		goto out;
out_rollback:
	pf->recorded = false;
	mc_index_rollback(c);
out:
	return ret;
}

/*
 * Notes the digest on the download row before its temp file becomes a blob (see try_adopt),
 * if the download is still ours: *lost when another process took it over, judging us dead.
 */
static int record_digest(struct mc_pull *p, struct mc_pull_file *pf, const char *hex, bool *lost,
			 struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(p->c, MC_STMT_DOWNLOAD_SET_DIGEST, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, pf->download_id);
	sqlite3_bind_text(s, 2, hex, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, p->c->session_id);
	ret = mc_index_exec(p->c, s, "record a download's digest", err);
	*lost = !ret && sqlite3_changes(p->c->db) != 1;
out:
	return ret;
}

/* A download taken over from a process presumed dead is read back whole before publishing. */
static int check_taken_over(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	uint8_t digest[MC_DIGEST_LEN];
	int ret;

	ret = mc_digest_file(pf->f.fd, pf->f.remote.size, digest);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/tmp/%s'", p->c->dir, pf->tmp_name);
	if (!memcmp(digest, pf->f.digest, sizeof(digest)))
		return 0;
	close(pf->f.fd);
	pf->f.fd = -1;
	drop_download(p, pf->download_id, pf->tmp_name, NULL);
	pf->download_id = 0;
	return mc_err_set(err, MC_E_INTEGRITY,
			  "'%s' changed on disk while it was downloaded (two writers?): dropped",
			  pf->f.label);
}

/*
 * The origin published a SHA-256 for this object (the Hub does for LFS files): check the whole
 * file against it before it becomes a blob. SHA-256 cannot be computed by parallel ranges, so
 * this is one sequential read of the file, for such objects only. A mismatch drops the download
 * so that the next pull fetches it whole again.
 */
static int check_sha256(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	uint8_t sum[32];
	char hex[65];
	int ret;

	ret = mc_sha256_file(pf->f.fd, pf->f.remote.size, sum);
	if (ret)
		return mc_err_errno(err, ret, "cannot read '%s/tmp/%s'", p->c->dir, pf->tmp_name);
	mc_hex(sum, sizeof(sum), hex);
	if (!strcmp(hex, pf->sha256))
		return 0;
	close(pf->f.fd);
	pf->f.fd = -1;
	drop_download(p, pf->download_id, pf->tmp_name, NULL);
	pf->download_id = 0;
	return mc_err_set(err, MC_E_INTEGRITY,
			  "'%s' does not match its SHA-256: expected %s, got %s", pf->f.label,
			  pf->sha256, hex);
}

static int pull_done(void *ctx, struct mc_fetch_file *f, struct mc_err *err)
{
	struct mc_pull *p = ctx;
	struct mc_pull_file *pf = f->user;
	char hex[MC_DIGEST_HEX], rel[MC_BLOB_REL_MAX];
	bool indexed, dedup, lost;
	struct stat st;
	int ret;

	if (!pf->download_id || f->fd < 0) {
		ret = mc_err_set(err, -EINVAL, "no download in progress for '%s'", f->label);
		goto out;
	}
	if (fstat(f->fd, &st)) {
		ret = mc_err_errno(err, -errno, "cannot stat '%s/tmp/%s'", p->c->dir, pf->tmp_name);
		goto out;
	}
	if ((uint64_t)st.st_size != f->remote.size) {
		ret =
		    mc_err_set(err, MC_E_INTEGRITY, "'%s' has %llu bytes, expected %llu", f->label,
			       (unsigned long long)st.st_size, (unsigned long long)f->remote.size);
		goto out;
	}
	if (pf->sha256[0]) {
		ret = check_sha256(p, pf, err);
		if (ret)
			goto out;
	}
	if (pf->taken_over) {
		ret = check_taken_over(p, pf, err);
		if (ret)
			goto out;
	}
	mc_store_blob_rel(f->digest, hex, rel);
	ret = record_digest(p, pf, hex, &lost, err);
	if (!ret && lost) {
		/* Its new owner publishes it; this pull waits for that like any deferred file. */
		close(f->fd);
		f->fd = -1;
		pf->download_id = 0;
		pf->deferred = true;
		goto out;
	}
	if (!ret)
		ret = mc_pull_blob_is_indexed(p, hex, rel, &indexed, err);
	if (!ret)
		ret = mc_store_blob_publish(p->c, f->fd, pf->tmp_name, f->digest, indexed, &st,
					    &dedup, err);
	if (!ret)
		ret = record_blob(p, pf, hex, &st, err);
	if (ret)
		goto out;
	close(f->fd);
	f->fd = -1;
	pf->download_id = 0;
	pf->reused = dedup;
out:
	return ret;
}

const struct mc_fetch_ops mc_pull_ops = {
    .open = pull_open,
    .blocks_durable = pull_blocks_durable,
    .done = pull_done,
};

int mc_pull_begin(struct mc_pull *p, struct mc_cache *c, const char *name, const char *source,
		  size_t nfile, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	memset(p, 0, sizeof(*p));
	p->c = c;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->file = mc_calloc(nfile, sizeof(*p->file));
	if (!p->file) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	p->nfile = nfile;
	for (size_t i = 0; i < nfile; i++)
		p->file[i].f.fd = -1;
	ret = mc_index_begin(c, err);
	if (ret)
		goto out;
	ret = mc_index_stmt(c, MC_STMT_MODEL_UPSERT, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, mc_now_unix());
	ret = mc_index_exec(c, s, "record model", err);
	if (!ret)
		ret = mc_index_stmt(c, MC_STMT_MODEL_GET, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		p->model_id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	if (rc != SQLITE_ROW) {
		ret = mc_index_fail(c, rc, err, "read model '%s'", name);
		goto out_rollback;
	}
	ret = mc_index_stmt(c, MC_STMT_VERSION_INSERT, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, p->model_id);
	sqlite3_bind_int64(s, 2, mc_now_unix());
	sqlite3_bind_int64(s, 3, c->session_id);
	ret = mc_index_exec(c, s, "record a new version", err);
	if (ret)
		goto out_rollback;
	p->version = sqlite3_last_insert_rowid(c->db);
	ret = mc_index_commit(c, err);
	if (!ret)
		goto out;
out_rollback:
	mc_index_rollback(c);
out:
	return ret;
}

/* Sets *found when a complete, intact copy of @pf's object is cached; fills f.known from it. */
static int known_from_file(struct mc_pull *p, struct mc_pull_file *pf, bool *found,
			   struct mc_err *err)
{
	struct mc_remote_info *k = &pf->f.known;
	char rel[MC_BLOB_REL_MAX];
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*found = false;
	ret = mc_index_stmt(p->c, pf->bundle ? MC_STMT_BUNDLE_KNOWN : MC_STMT_KNOWN_FILE, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_text(s, 1, pf->source, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && !mc_store_blob_rel_hex(mc_index_text(s, 3), rel) &&
	    mc_store_blob_matches(p->c, rel, (uint64_t)sqlite3_column_int64(s, 0),
				  (uint64_t)sqlite3_column_int64(s, 4),
				  sqlite3_column_int64(s, 5))) {
		k->size = (uint64_t)sqlite3_column_int64(s, 0);
		snprintf(k->etag, sizeof(k->etag), "%s", mc_index_text(s, 1));
		snprintf(k->last_modified, sizeof(k->last_modified), "%s", mc_index_text(s, 2));
		*found = true;
	} else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		ret = mc_index_fail(p->c, rc, err, "look up '%s'", pf->source);
	}
	sqlite3_reset(s);
out:
	return ret;
}

/*
 * Tells the engine what the cache holds of @pf's object, so that its probe can be conditional:
 * a complete, intact copy first, else a partial download of an object with a validator.
 */
static int fill_known(struct mc_pull *p, struct mc_pull_file *pf, struct mc_err *err)
{
	struct mc_remote_info *k = &pf->f.known;
	struct download_row d;
	bool found;
	int ret;

	memset(k, 0, sizeof(*k));
	ret = known_from_file(p, pf, &found, err);
	if (ret || found)
		goto out;
	ret = get_download(p, pf, &d, err);
	if (ret || !d.id || (!d.etag[0] && !d.last_modified[0]))
		goto out;
	k->size = d.size;
	snprintf(k->etag, sizeof(k->etag), "%s", d.etag);
	snprintf(k->last_modified, sizeof(k->last_modified), "%s", d.last_modified);
	found = true;
out:
	/*
	 * A 304 makes f->remote a copy of f->known: say that ranges work, so that whatever is
	 * still missing is fetched by range (an origin that sends 304 also serves ranges).
	 */
	k->ranges = !ret && found;
	return ret;
}

int mc_pull_set_tag(struct mc_pull *p, const char *tag, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int ret;

	ret = mc_index_stmt(p->c, MC_STMT_VERSION_SET_TAG, &s, err);
	if (ret)
		return ret;
	sqlite3_bind_int64(s, 1, p->version);
	sqlite3_bind_text(s, 2, tag, -1, SQLITE_STATIC);
	return mc_index_exec(p->c, s, "record the version's revision", err);
}

int mc_pull_file_set(struct mc_pull *p, size_t i, const char *url, const char *source,
		     const char *path, struct mc_err *err)
{
	struct mc_pull_file *pf = &p->file[i];
	int ret = 0;

	pf->source = mc_strdup(source);
	pf->path = mc_strdup(path);
	if (!pf->source || !pf->path) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	pf->f.url = url;
	pf->f.label = pf->source;
	pf->f.user = pf;
	pf->f.fd = -1;
	ret = fill_known(p, pf, err);
out:
	return ret;
}

/* Sets *count and *bytes to the totals of @version. */
static int version_totals(struct mc_cache *c, int64_t version, uint64_t *count, uint64_t *bytes,
			  struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(c, MC_STMT_VERSION_TOTALS, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, version);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*count = (uint64_t)sqlite3_column_int64(s, 0);
		*bytes = (uint64_t)sqlite3_column_int64(s, 1);
	} else {
		ret = mc_index_fail(c, rc, err, "count the files of version %lld",
				    (long long)version);
	}
	sqlite3_reset(s);
out:
	return ret;
}

/* Reads into *current the model's current version (0 for none). */
static int current_version(struct mc_pull *p, int64_t *current, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(p->c, MC_STMT_MODEL_GET, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_text(s, 1, p->name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*current = sqlite3_column_int64(s, 1);
	else
		ret = mc_index_fail(p->c, rc, err, "read model '%s'", p->name);
	sqlite3_reset(s);
out:
	return ret;
}

/*
 * Sets *same when the current version @cur holds exactly the files (paths and digests) of the
 * new version, and its tree on disk is intact: then the pull changes nothing on disk.
 */
static int same_as_current(struct mc_pull *p, int64_t cur, size_t n, bool *same, struct mc_err *err)
{
	struct mc_tree_entry *e = NULL;
	uint64_t count = 0, bytes;
	size_t ne = 0;
	sqlite3_stmt *s = NULL;
	int rc, ret;

	*same = false;
	ret = version_totals(p->c, cur, &count, &bytes, err);
	if (ret || count != n)
		goto out;
	ret = mc_index_stmt(p->c, MC_STMT_VERSION_SAME, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_int64(s, 1, p->version);
	sqlite3_bind_int64(s, 2, cur);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		count = (uint64_t)sqlite3_column_int64(s, 0);
	else
		ret = mc_index_fail(p->c, rc, err, "compare versions of '%s'", p->name);
	sqlite3_reset(s);
	if (ret || count != n)
		goto out;
	ret = mc_index_tree_entries(p->c, cur, &e, &ne, err);
	if (ret)
		goto out;
	*same = mc_store_tree_is_intact(p->c, p->name, cur, e, ne);
	mc_tree_entries_free(e, ne);
out:
	return ret;
}

/* Drops the new version in favour of the identical current one @cur. */
static int keep_current(struct mc_pull *p, int64_t cur, struct mc_err *err)
{
	sqlite3_stmt *s = NULL, *u = NULL;
	int rc, ret;

	ret = mc_index_begin(p->c, err);
	if (ret)
		goto out;
	/* The origin was checked now; a new revision with the same files is the version's tag. */
	rc = sqlite3_prepare_v2(p->c->db,
				"UPDATE versions SET checked_at = ?3,"
				" tag = coalesce((SELECT tag FROM versions WHERE id = ?2), tag)"
				" WHERE id = ?1",
				-1, &u, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(u, 1, cur);
		sqlite3_bind_int64(u, 2, p->version);
		sqlite3_bind_int64(u, 3, mc_now_unix());
		rc = sqlite3_step(u);
	}
	sqlite3_finalize(u);
	if (rc != SQLITE_DONE) {
		ret = mc_index_fail(p->c, rc, err, "record a version check");
		goto out_rollback;
	}
	ret = mc_index_stmt(p->c, MC_STMT_VERSION_DELETE, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, p->version);
	ret = mc_index_exec(p->c, s, "drop an unchanged version", err);
	if (!ret)
		ret = mc_index_stmt(p->c, MC_STMT_MODEL_TOUCH, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, p->model_id);
	sqlite3_bind_int64(s, 2, mc_now_unix());
	ret = mc_index_exec(p->c, s, "record the use of a model", err);
	if (!ret)
		ret = mc_index_commit(p->c, err);
	if (ret)
		goto out_rollback;
	p->version = cur;
	goto out;
out_rollback:
	mc_index_rollback(p->c);
out:
	return ret;
}

/* Marks the version complete and current. */
static int make_current(struct mc_pull *p, struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int64_t now = mc_now_unix();
	int ret;

	ret = mc_index_begin(p->c, err);
	if (ret)
		goto out;
	ret = mc_index_stmt(p->c, MC_STMT_VERSION_STATE, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, p->version);
	sqlite3_bind_text(s, 2, "complete", -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, now);
	ret = mc_index_exec(p->c, s, "complete a version", err);
	if (!ret)
		ret = mc_index_stmt(p->c, MC_STMT_MODEL_SET_CURRENT, &s, err);
	if (ret)
		goto out_rollback;
	sqlite3_bind_int64(s, 1, p->model_id);
	sqlite3_bind_int64(s, 2, p->version);
	sqlite3_bind_int64(s, 3, now);
	ret = mc_index_exec(p->c, s, "make a version current", err);
	if (!ret)
		ret = mc_index_commit(p->c, err);
	if (!ret)
		goto out;
out_rollback:
	mc_index_rollback(p->c);
out:
	return ret;
}

int mc_pull_publish(struct mc_pull *p, struct mc_err *err)
{
	struct mc_tree_entry *e = NULL;
	int64_t cur = 0;
	size_t n = 0;
	bool same = false;
	size_t want = 0;
	int ret;

	ret = mc_bundle_unpack_all(p, err);
	if (!ret)
		ret = mc_index_tree_entries(p->c, p->version, &e, &n, err);
	if (ret)
		goto out;
	for (size_t i = 0; i < p->nfile; i++)
		want += p->file[i].bundle ? p->file[i].entries : 1;
	if (n != want) {
		ret = mc_err_set(err, MC_E_INTEGRITY, "only %zu of the %zu files of '%s' arrived",
				 n, want, p->name);
		goto out_free;
	}
	ret = current_version(p, &cur, err);
	if (!ret && cur)
		ret = same_as_current(p, cur, n, &same, err);
	if (ret)
		goto out_free;
	if (same) {
		ret = keep_current(p, cur, err);
		goto out_free;
	}
	ret = mc_store_tree_build(p->c, p->name, p->version, e, n, err);
	if (ret)
		goto out_free;
	ret = mc_store_link_swap(p->c, p->name, p->version, err);
	if (ret) {
		mc_store_tree_remove(p->c, p->name, p->version, e, n);
		goto out_free;
	}
	ret = make_current(p, err);
out_free:
	mc_tree_entries_free(e, n);
out:
	return ret;
}

void mc_pull_fail(struct mc_pull *p)
{
	sqlite3_stmt *s = NULL;

	if (!p->version || mc_index_stmt(p->c, MC_STMT_VERSION_STATE, &s, NULL))
		goto out;
	sqlite3_bind_int64(s, 1, p->version);
	sqlite3_bind_text(s, 2, "failed", -1, SQLITE_STATIC);
	sqlite3_bind_null(s, 3);
	mc_index_exec(p->c, s, "mark a version failed", NULL);
out:
	return;
}

void mc_pull_release(struct mc_pull *p)
{
	for (size_t i = 0; i < p->nfile; i++) {
		if (p->file[i].f.fd >= 0)
			close(p->file[i].f.fd);
		mc_free(p->file[i].source);
		mc_free(p->file[i].path);
	}
	mc_free(p->file);
	p->file = NULL;
	p->nfile = 0;
}

/* Checked URIs: file names and redacted forms, parallel to the request's URIs. */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Refuses two objects that would land on the same path in one model. */
static int check_duplicates(const struct mc_object_list *objs, const char *name, struct mc_err *err)
{
	char **sorted = mc_malloc((objs->n ? objs->n : 1) * sizeof(*sorted));
	int ret = 0;

	if (!sorted)
		return mc_err_set(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < objs->n; i++)
		sorted[i] = objs->obj[i].path;
	qsort(sorted, objs->n, sizeof(*sorted), cmp_str);
	for (size_t i = 1; i < objs->n; i++) {
		if (!strcmp(sorted[i - 1], sorted[i])) {
			ret =
			    mc_err_set(err, MC_E_USAGE, "two URIs give the file '%s' in model '%s'",
				       sorted[i], name);
			break;
		}
	}
	mc_free(sorted);
	return ret;
}

/*
 * Every object the URIs name, in order; nothing is downloaded yet. @uri_end[i] receives the
 * number of objects once URI i is resolved. A bundle's include and exclude patterns select its
 * entries (bundle.c), so a bundle URI is resolved without them.
 */
static int resolve_all(const struct mc_pull_opts *o, struct mc_object_list *objs, size_t *uri_end,
		       struct mc_err *err)
{
	struct mc_source_opts so = {.ca_file = o->fetch.ca_file,
				    .insecure = o->fetch.insecure,
				    .connect_timeout_s = o->fetch.connect_timeout_s,
				    .include = o->include,
				    .ninclude = o->ninclude,
				    .exclude = o->exclude,
				    .nexclude = o->nexclude};
	bool bundle;
	int ret = 0;

	for (size_t i = 0; i < o->nuris && !ret; i++) {
		if (!mc_source_known(o->uris[i])) {
			char *safe = mc_url_redact(o->uris[i]);

			ret = mc_err_set(
			    err, MC_E_USAGE,
			    "unsupported URI '%.300s': use http://, https://, s3:// or hf://",
			    safe ? safe : "");
			mc_free(safe);
			break;
		}
		bundle = o->unpack || mc_bundle_uri_is_bundle(o->uris[i]);
		so.ninclude = bundle ? 0 : o->ninclude;
		so.nexclude = bundle ? 0 : o->nexclude;
		ret = mc_source_resolve(o->uris[i], &so, objs, err);
		uri_end[i] = objs->n;
	}
	return ret;
}

/* True when object @i of the pull is a bundle: --unpack, or its URI names one by extension. */
static bool object_is_bundle(const struct mc_pull_opts *o, const size_t *uri_end, size_t i)
{
	size_t u = 0;

	while (u + 1 < o->nuris && i >= uri_end[u])
		u++;
	return o->unpack || mc_bundle_uri_is_bundle(o->uris[u]);
}

/*
 * A model name from @file: its base name, without its last extension when @strip_ext, with
 * characters a model name cannot hold turned into '-' ("Llama-3 8B.Q4_K_M.gguf" gives
 * "Llama-3-8B.Q4_K_M").
 */
static int derive_name(const char *file, bool strip_ext, const char *source, char *out, size_t len,
		       struct mc_err *err)
{
	const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
	const char *dot = strip_ext ? strrchr(base, '.') : NULL;
	size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base), j = 0;
	size_t ext = strip_ext ? mc_bundle_ext_len(base) : 0;
	int ret = 0;

	/* "llama-8b.tar.gz" gives "llama-8b", not "llama-8b.tar". */
	if (ext && ext < strlen(base))
		n = strlen(base) - ext;

	for (size_t i = 0; i < n && j + 1 < len; i++) {
		char ch = base[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
			ch = '-';
		if (j == 0 && (ch == '.' || ch == '-'))
			continue;
		out[j++] = ch;
	}
	out[j] = '\0';
	if (!mc_name_is_valid(out))
		ret = mc_err_set(err, MC_E_USAGE,
				 "cannot derive a model name from '%s': give one with --name",
				 source);
	return ret;
}

/*
 * The default name: for an http(s) file or one S3 object, its file name without extension;
 * for an S3 prefix or a Hub repository, the last component ("s3://b/llama-3-8b/" and
 * "hf://meta-llama/Llama-3.1-8B@main" give "llama-3-8b" and "Llama-3.1-8B").
 */
static int default_name(const char *uri, const struct mc_object_list *objs, char *out, size_t len,
			struct mc_err *err)
{
	char tmp[512];
	size_t n;

	if (strncmp(uri, "s3://", 5) && strncmp(uri, "hf://", 5))
		return derive_name(objs->obj[0].path, true, objs->obj[0].source, out, len, err);
	snprintf(tmp, sizeof(tmp), "%s", uri + 5);
	tmp[strcspn(tmp, "?#")] = '\0';
	if (!strncmp(uri, "hf://", 5))
		tmp[strcspn(tmp, "@")] = '\0';
	n = strlen(tmp);
	if (n && tmp[n - 1] != '/' && objs->n == 1 && !strncmp(uri, "s3://", 5) &&
	    strrchr(tmp, '/'))
		return derive_name(tmp, true, uri, out, len, err);
	while (n && tmp[n - 1] == '/')
		tmp[--n] = '\0';
	return derive_name(tmp, false, uri, out, len, err);
}

/*
 * An object whose listing (S3) names the same ETag and size as a file already cached from the
 * same source is reused before any request: a warm check costs one listing, not a probe per
 * file.
 */
static int reuse_from_listing(struct mc_pull *p, struct mc_pull_file *pf,
			      const struct mc_object *ob, struct mc_err *err)
{
	struct mc_fetch_file *f = &pf->f;
	int ret = 0;

	if (!ob->size_known || (!ob->etag[0] && !ob->sha256[0]))
		return 0;
	memset(&f->remote, 0, sizeof(f->remote));
	f->remote.size = ob->size;
	f->remote.ranges = true;
	snprintf(f->remote.etag, sizeof(f->remote.etag), "%s", ob->etag);
	if (ob->etag[0])
		ret = try_reuse(p, pf, err);
	if (!ret && !f->skip && ob->sha256[0])
		ret = reuse_in_tx(p, pf, find_same_sha256, err);
	if (!f->skip)
		memset(&f->remote, 0, sizeof(f->remote));
	return ret;
}

static int fill_result(struct mc_pull *p, const struct mc_fetch_stats *stats,
		       struct mc_pull_result *res, struct mc_err *err)
{
	snprintf(res->name, sizeof(res->name), "%s", p->name);
	res->version = p->version;
	for (size_t i = 0; i < p->nfile; i++) {
		res->bytes_fetched += p->file[i].fetched + p->file[i].f.bytes_fetched;
		if (p->file[i].bundle) {
			res->files_reused += p->file[i].entries_reused;
			res->bundles_unpacked += p->file[i].unpacked;
		} else {
			res->files_reused += p->file[i].reused;
		}
	}
	if (res->bytes_fetched && stats->writer != MC_WRITER_AUTO)
		res->writer = mc_writer_kind_name(stats->writer);
	return version_totals(p->c, p->version, &res->files, &res->bytes, err);
}

/* Bytes held durably so far by the download row @id (its owner's progress). */
static uint64_t durable_bytes(struct mc_pull *p, int64_t id, uint64_t size)
{
	sqlite3_stmt *s = NULL;
	uint64_t blocks = 0;

	if (sqlite3_prepare_v2(p->c->db,
			       "SELECT coalesce(sum(nblocks), 0) FROM download_spans"
			       " WHERE download_id = ?1",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(s, 1, id);
		if (sqlite3_step(s) == SQLITE_ROW)
			blocks = (uint64_t)sqlite3_column_int64(s, 0);
	}
	sqlite3_finalize(s);
	return blocks * MC_HASH_BLOCK < size ? blocks * MC_HASH_BLOCK : size;
}

/*
 * One look at a deferred file: reused now that its owner published it (same object, by the
 * validators its probe saw), still owned by a live process (*busy, *held its progress), or
 * free to fetch (its owner died or gave up: the next round resumes or restarts it).
 */
static int look_again(struct mc_pull *p, struct mc_pull_file *pf, bool *busy, uint64_t *held,
		      struct mc_err *err)
{
	struct download_row d;
	int ret;

	*busy = false;
	pf->f.skip = false; /* set by defer(); try_reuse() sets it again when it reuses */
	ret = try_reuse(p, pf, err);
	if (ret || pf->f.skip)
		goto out;
	ret = get_download(p, pf, &d, err);
	if (ret)
		goto out;
	if (d.id && d.session_id != p->c->session_id && mc_session_alive(p->c, d.session_id)) {
		*busy = true;
		*held += durable_bytes(p, d.id, d.size);
		goto out;
	}
	/* Its next probe is conditional on what the owner left, published or partial. */
	ret = fill_known(p, pf, err);
out:
	return ret;
}

/* Polls the deferred files until one can be reused or fetched; clears their `deferred`. */
static int wait_for_owners(struct mc_pull *p, const struct mc_pull_opts *o, struct mc_err *err)
{
	uint64_t own, held, total;
	bool busy, moved = false;
	int ret = 0;

	for (;;) {
		own = held = total = 0;
		for (size_t i = 0; i < p->nfile; i++) {
			struct mc_pull_file *pf = &p->file[i];

			total += pf->f.remote.size;
			if (!pf->deferred) {
				own += pf->f.remote.size;
				continue;
			}
			ret = look_again(p, pf, &busy, &held, err);
			if (ret)
				goto out;
			if (!busy) {
				pf->deferred = false;
				moved = true;
			}
		}
		if (moved)
			goto out;
		if (o->fetch.progress)
			o->fetch.progress(o->fetch.progress_ctx, own + held, total);
		ret = mc_session_heartbeat(p->c, false, err);
		if (ret)
			goto out;
		if (mc_fetch_interrupted()) {
			ret = mc_err_set(err, MC_E_INTERRUPTED, "interrupted");
			goto out;
		}
		usleep(MC_WAIT_POLL_MS * 1000);
	}
out:
	return ret;
}

static void add_stats(struct mc_fetch_stats *sum, const struct mc_fetch_stats *st)
{
	sum->requests += st->requests;
	sum->retries += st->retries;
	sum->steals += st->steals;
	sum->bytes += st->bytes;
	sum->held_checked += st->held_checked;
	sum->held_refetched += st->held_refetched;
	if (st->writer != MC_WRITER_AUTO)
		sum->writer = st->writer;
}

/*
 * Before any request: claims the download of each object nobody else is fetching, with a
 * placeholder row (size 0, no validators: never "the same object", so its own open replaces
 * it), and defers those a live process already fetches, so that pulls started together do not
 * all probe the same objects (a cancelled probe still costs what the origin sent before the
 * cancel). Keeps in @files only what this process fetches in its first round.
 */
static int claim_intents(struct mc_pull *p, struct mc_fetch_file **files, size_t *n,
			 struct mc_err *err)
{
	struct mc_cache *c = p->c;
	struct download_row d;
	sqlite3_stmt *s = NULL;
	size_t kept = 0;
	int rc, ret;

	ret = mc_index_begin(c, err);
	if (ret)
		goto out;
	rc = sqlite3_prepare_v2(c->db,
				"INSERT INTO downloads(source, size, session_id, created_at)"
				" VALUES(?1, 0, ?2, ?3) ON CONFLICT(source) DO NOTHING",
				-1, &s, NULL);
	if (rc != SQLITE_OK) {
		ret = mc_index_fail(c, rc, err, "record the downloads to come");
		goto out_rollback;
	}
	for (size_t i = 0; i < *n; i++) {
		struct mc_pull_file *pf = files[i]->user;

		ret = get_download(p, pf, &d, err);
		if (ret)
			goto out_rollback;
		if (d.id && d.session_id != c->session_id && mc_session_alive(c, d.session_id)) {
			pf->deferred = true;
			continue;
		}
		files[kept++] = files[i];
		if (d.id)
			continue;
		sqlite3_bind_text(s, 1, pf->source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, c->session_id);
		sqlite3_bind_int64(s, 3, mc_now_unix());
		rc = sqlite3_step(s);
		sqlite3_reset(s);
		if (rc != SQLITE_DONE) {
			ret = mc_index_fail(c, rc, err, "record the download of '%s'", pf->f.label);
			goto out_rollback;
		}
	}
	ret = mc_index_commit(c, err);
	if (!ret) {
		*n = kept;
		goto out;
	}
out_rollback:
	mc_index_rollback(c);
out:
	sqlite3_finalize(s);
	return ret;
}

/*
 * Fetches @files[0..n) in rounds: files another live process is downloading are deferred,
 * waited for, then reused once it publishes them, or taken over (resumed) if it dies.
 * @files is reused as scratch space for the later rounds.
 */
static int fetch_rounds(struct mc_pull *p, const struct mc_pull_opts *o, struct mc_fetch_opts *fo,
			struct mc_fetch_file **files, size_t n, struct mc_err *err)
{
	struct mc_fetch_stats *sum = fo->stats, round;
	bool noted = false, waiting;
	int ret = 0;

	memset(sum, 0, sizeof(*sum));
	fo->stats = &round;
	for (;;) {
		if (n) {
			memset(&round, 0, sizeof(round));
			ret = mc_fetch_run(fo, files, n, &mc_pull_ops, p, err);
			add_stats(sum, &round);
			if (ret)
				break;
		}
		waiting = false;
		for (size_t i = 0; i < p->nfile; i++) {
			p->file[i].fetched += p->file[i].f.bytes_fetched;
			p->file[i].f.bytes_fetched = 0;
			if (p->file[i].deferred && !noted && o->notice) {
				o->notice(o->notice_ctx, p->file[i].f.label);
				noted = true;
			}
			waiting |= p->file[i].deferred;
		}
		if (!waiting)
			break;
		ret = wait_for_owners(p, o, err);
		if (ret)
			break;
		/* Files no longer deferred and not reused while waiting: the next round's. */
		n = 0;
		for (size_t i = 0; i < p->nfile; i++)
			if (!p->file[i].deferred && !p->file[i].recorded)
				files[n++] = &p->file[i].f;
	}
	fo->stats = sum;
	return ret;
}

int mc_cache_pull(struct mc_cache *c, const struct mc_pull_opts *o, struct mc_pull_result *res,
		  struct mc_err *err)
{
	struct mc_fetch_file **files = NULL;
	struct mc_object_list objs = {0};
	struct mc_fetch_stats own = {0};
	struct mc_fetch_opts fo = o->fetch;
	struct mc_pull p = {0};
	struct mc_bundle_limits limits;
	char derived[129], *model_source = NULL;
	const char *name;
	size_t nfetch = 0, *uri_end = NULL;
	int ret;

	memset(res, 0, sizeof(*res));
	if (!o->nuris) {
		ret = mc_err_set(err, MC_E_USAGE, "nothing to pull: no URI given");
		goto out;
	}
	ret = mc_bundle_limits_resolve(&o->bundle_limits, &limits, err);
	if (ret)
		goto out;
	uri_end = mc_calloc(o->nuris, sizeof(*uri_end));
	if (!uri_end) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = resolve_all(o, &objs, uri_end, err);
	if (ret)
		goto out;
	if (!objs.n) {
		ret = mc_err_set(err, MC_E_NOTFOUND, "nothing to pull: the sources name no file");
		goto out;
	}
	name = o->name;
	if (!name) {
		ret = default_name(o->uris[0], &objs, derived, sizeof(derived), err);
		name = derived;
	} else if (!mc_name_is_valid(name)) {
		ret = mc_err_set(err, MC_E_USAGE,
				 "invalid model name '%.200s': use 1-128 of [A-Za-z0-9._-], "
				 "not starting with '.' or '-'",
				 name);
	}
	if (!ret)
		ret = check_duplicates(&objs, name, err);
	if (ret)
		goto out;
	model_source = mc_url_redact(o->uris[0]);
	files = mc_calloc(objs.n, sizeof(*files));
	if (!files || !model_source) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	ret = mc_pull_begin(&p, c, name, model_source, objs.n, err);
	if (!ret && objs.revision[0])
		ret = mc_pull_set_tag(&p, objs.revision, err);
	p.limits = limits;
	p.include = o->include;
	p.ninclude = o->ninclude;
	p.exclude = o->exclude;
	p.nexclude = o->nexclude;
	for (size_t i = 0; !ret && i < objs.n; i++) {
		struct mc_object *ob = &objs.obj[i];
		struct mc_pull_file *pf = &p.file[i];

		/* Before mc_pull_file_set(): a bundle's cached copy is found in `bundles`. */
		pf->bundle = object_is_bundle(o, uri_end, i);
		ret = mc_pull_file_set(&p, i, ob->url, ob->source, ob->path, err);
		if (ret)
			break;
		pf->f.headers = (const char *const *)ob->headers;
		pf->size_listed = ob->size_known;
		pf->listed_size = ob->size;
		pf->f.max_size = ob->size_known ? ob->size : 0;
		snprintf(pf->sha256, sizeof(pf->sha256), "%s", ob->sha256);
		ret = reuse_from_listing(&p, pf, ob, err);
		if (!ret && !pf->f.skip)
			files[nfetch++] = &pf->f;
	}
	/* The caller's stats, if it asked for them, else ours: the result names the writer. */
	if (!fo.stats)
		fo.stats = &own;
	if (!ret && nfetch)
		ret = claim_intents(&p, files, &nfetch, err);
	if (!ret && (nfetch || p.nfile))
		ret = fetch_rounds(&p, o, &fo, files, nfetch, err);
	if (!ret)
		ret = mc_pull_publish(&p, err);
	for (size_t i = 0; i < p.nfile; i++)
		drop_intent(&p, &p.file[i]);
	if (ret && p.file)
		mc_pull_fail(&p);
	else if (!ret)
		ret = fill_result(&p, fo.stats, res, err);
	/* Within the budget, if one is set: the model just pulled is the last to go. */
	if (!ret)
		mc_gc_after_pull(c, res);
	mc_pull_release(&p);
out:
	/* Counters for `mcache metrics` (metrics.c): every pull that ran, whatever its outcome. */
	mc_metrics_count_pull(c, fo.stats ? fo.stats : &own, ret);
	mc_free(files);
	mc_free(uri_end);
	mc_free(model_source);
	mc_object_list_release(&objs);
	return ret;
}
