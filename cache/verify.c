/*
 * mc_cache_verify(): compares the disk with the index and reports every difference, without
 * changing either. For each model's current version it checks the models/NAME symlink, each
 * tree entry (present, the same inode as its blob) and each blob (present, size, inode and
 * mtime as recorded, read-only, and with MC_VERIFY_DEEP its XXH3-128 digest). Asked about the
 * whole cache, it also reports blobs and temp files the index does not know.
 *
 * Findings carry precise expected/actual values (byte counts, inode numbers, mtimes in
 * nanoseconds, modes in octal, hex digests). Index rows are copied out before any disk work,
 * so a long deep check holds no read transaction.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

struct verify {
	struct mc_cache *c;
	unsigned flags;
	void (*cb)(void *ctx, const struct mc_finding *f);
	void *ctx;
	uint64_t n;
	int nomem; /* -ENOMEM when a check could not run: an error, not a finding */
};

static void report(struct verify *v, const char *model, const char *path, const char *kind,
		   const char *expected, const char *actual)
{
	struct mc_finding f = {
	    .model = model,
	    .path = path,
	    .kind = kind,
	    .expected = expected,
	    .actual = actual,
	};

	v->n++;
	if (v->cb)
		v->cb(v->ctx, &f);
}

/* Checks that models/@name points at the tree of @version. */
static void check_link(struct verify *v, const char *name, int64_t version)
{
	char target[200], link[200], path[160];
	ssize_t len;

	mc_store_link_target(name, version, target, sizeof(target));
	snprintf(path, sizeof(path), "models/%s", name);
	len = readlinkat(v->c->models_fd, name, link, sizeof(link) - 1);
	if (len < 0) {
		report(v, name, path, "missing", target, "");
		goto out;
	}
	link[len] = '\0';
	if (strcmp(link, target))
		report(v, name, path, "not-linked", target, link);
out:
	return;
}

/* Rehashes the blob and reports a digest that differs from the index. */
static void check_digest(struct verify *v, const char *name, const struct mc_tree_entry *e,
			 const char *rel)
{
	uint8_t digest[MC_DIGEST_LEN];
	char hex[MC_DIGEST_HEX], why[96];
	int fd, ret;

	fd = openat(v->c->blobs_fd, rel, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ret = fd < 0 ? -errno : mc_digest_file(fd, e->size, digest);
	if (fd >= 0)
		close(fd);
	if (ret == -ENOMEM) {
		v->nomem = ret;
		goto out;
	}
	if (ret) {
		snprintf(why, sizeof(why), "unreadable: %s", strerror(-ret));
		report(v, name, e->path, "digest", e->hex, why);
		goto out;
	}
	mc_hex(digest, MC_DIGEST_LEN, hex);
	if (strcmp(hex, e->hex))
		report(v, name, e->path, "digest", e->hex, hex);
out:
	return;
}

/* Checks one file of a model: its tree entry in @vfd (-1 when the tree is gone) and its blob. */
static void check_file(struct verify *v, const char *name, const char *where, int vfd,
		       const struct mc_tree_entry *e)
{
	char rel[MC_BLOB_REL_MAX], exp[128], act[128], tree[4400];
	struct stat tst, bst;
	const char *leaf;
	bool have_tree = false;
	int parent;

	if (vfd >= 0) {
		parent = mc_store_open_parent(vfd, e->path, &leaf);
		if (parent >= 0) {
			have_tree = fstatat(parent, leaf, &tst, AT_SYMLINK_NOFOLLOW) == 0;
			close(parent);
		}
	}
	if (!have_tree) {
		snprintf(tree, sizeof(tree), "%s/%s", where, e->path);
		report(v, name, e->path, "missing", tree, "");
	}
	if (mc_store_blob_rel_hex(e->hex, rel) ||
	    fstatat(v->c->blobs_fd, rel, &bst, AT_SYMLINK_NOFOLLOW)) {
		snprintf(exp, sizeof(exp), "blobs/%.2s/%s", e->hex, e->hex);
		report(v, name, e->path, "missing", exp, "");
		goto out;
	}
	if (have_tree && (tst.st_ino != bst.st_ino || tst.st_dev != bst.st_dev)) {
		snprintf(exp, sizeof(exp), "inode %llu", (unsigned long long)bst.st_ino);
		snprintf(act, sizeof(act), "inode %llu", (unsigned long long)tst.st_ino);
		report(v, name, e->path, "not-linked", exp, act);
	}
	if ((uint64_t)bst.st_size != e->size) {
		snprintf(exp, sizeof(exp), "%llu", (unsigned long long)e->size);
		snprintf(act, sizeof(act), "%llu", (unsigned long long)bst.st_size);
		report(v, name, e->path, "size", exp, act);
	} else if ((uint64_t)bst.st_ino != e->inode || mc_store_mtime_ns(&bst) != e->mtime_ns) {
		snprintf(exp, sizeof(exp), "inode %llu mtime_ns %lld", (unsigned long long)e->inode,
			 (long long)e->mtime_ns);
		snprintf(act, sizeof(act), "inode %llu mtime_ns %lld",
			 (unsigned long long)bst.st_ino, (long long)mc_store_mtime_ns(&bst));
		report(v, name, e->path, "changed", exp, act);
	}
	if (bst.st_mode & 0222) {
		snprintf(act, sizeof(act), "%04o", (unsigned)(bst.st_mode & 07777));
		report(v, name, e->path, "not-readonly", "0444", act);
	}
	if ((v->flags & MC_VERIFY_DEEP) && (uint64_t)bst.st_size == e->size)
		check_digest(v, name, e, rel);
out:
	return;
}

static int check_model(struct verify *v, const char *name, int64_t version, struct mc_err *err)
{
	struct mc_tree_entry *e = NULL;
	char vname[24], where[200];
	size_t n = 0;
	int mfd, vfd = -1, ret;

	ret = mc_index_tree_entries(v->c, version, &e, &n, err);
	if (ret)
		goto out;
	check_link(v, name, version);
	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	snprintf(where, sizeof(where), "trees/%s/%s", name, vname);
	mfd = mc_store_open_dir(v->c->trees_fd, name, false, NULL);
	if (mfd >= 0) {
		vfd = mc_store_open_dir(mfd, vname, false, NULL);
		close(mfd);
	}
	for (size_t i = 0; i < n && !v->nomem; i++)
		check_file(v, name, where, vfd, &e[i]);
	if (vfd >= 0)
		close(vfd);
	mc_tree_entries_free(e, n);
	if (v->nomem)
		ret = mc_err_set(err, -ENOMEM, "out of memory while verifying '%s'", name);
out:
	return ret;
}

/* Runs the one-parameter existence query @id for @key into *found. */
static int index_has(struct mc_cache *c, enum mc_stmt id, const char *key, bool *found,
		     struct mc_err *err)
{
	sqlite3_stmt *s = NULL;
	int rc, ret;

	ret = mc_index_stmt(c, id, &s, err);
	if (ret)
		goto out;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	*found = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = mc_index_fail(c, rc, err, "look up '%s'", key);
	sqlite3_reset(s);
out:
	return ret;
}

static bool is_lower_hex(const char *s, size_t len)
{
	return strlen(s) == len && strspn(s, "0123456789abcdef") == len;
}

/* Reports every entry of blobs/@ab that is not a blob the index knows. */
static int scan_blob_dir(struct verify *v, const char *ab, struct mc_err *err)
{
	char path[MC_BLOB_REL_MAX + 300];
	struct dirent *d;
	bool found;
	DIR *dir;
	int fd, ret = 0;

	fd = mc_store_open_dir(v->c->blobs_fd, ab, false, NULL);
	if (fd == -ENOTDIR) {
		snprintf(path, sizeof(path), "blobs/%s", ab);
		report(v, "", path, "orphan-blob", "", "");
		goto out;
	}
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		ret = mc_err_errno(err, fd < 0 ? fd : -errno, "cannot read '%s/blobs/%s'",
				   v->c->dir, ab);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	while ((d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		found = false;
		if (is_lower_hex(d->d_name, 2 * MC_DIGEST_LEN) && !strncmp(d->d_name, ab, 2)) {
			ret = index_has(v->c, MC_STMT_BLOB_GET, d->d_name, &found, err);
			if (ret)
				break;
		}
		if (!found) {
			snprintf(path, sizeof(path), "blobs/%s/%s", ab, d->d_name);
			report(v, "", path, "orphan-blob", "", "");
		}
	}
	closedir(dir);
out:
	return ret;
}

/* Reports files under blobs/ and tmp/ that the index does not account for. */
static int scan_orphans(struct verify *v, struct mc_err *err)
{
	char path[300];
	struct dirent *d;
	bool found;
	DIR *dir;
	int fd, ret = 0;

	fd = fcntl(v->c->blobs_fd, F_DUPFD_CLOEXEC, 0);
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		ret = mc_err_errno(err, -errno, "cannot read '%s/blobs'", v->c->dir);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	while (!ret && (d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (is_lower_hex(d->d_name, 2)) {
			ret = scan_blob_dir(v, d->d_name, err);
		} else {
			snprintf(path, sizeof(path), "blobs/%s", d->d_name);
			report(v, "", path, "orphan-blob", "", "");
		}
	}
	closedir(dir);
	if (ret)
		goto out;
	fd = fcntl(v->c->tmp_fd, F_DUPFD_CLOEXEC, 0);
	dir = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dir) {
		ret = mc_err_errno(err, -errno, "cannot read '%s/tmp'", v->c->dir);
		if (fd >= 0)
			close(fd);
		goto out;
	}
	while (!ret && (d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		ret = index_has(v->c, MC_STMT_DOWNLOAD_BY_TMP, d->d_name, &found, err);
		if (!ret && !found) {
			snprintf(path, sizeof(path), "tmp/%s", d->d_name);
			report(v, "", path, "orphan-tmp", "", "");
		}
	}
	closedir(dir);
out:
	return ret;
}

/* Resolves @names[0..n) (all models when n == 0) to rows, refusing unknown names. */
static int select_models(struct mc_cache *c, const char *const *names, size_t n,
			 struct mc_model_row **out, size_t *nout, struct mc_err *err)
{
	struct mc_model_row *all = NULL, *sel = NULL;
	size_t nall = 0, j;
	int ret;

	ret = mc_index_models(c, &all, &nall, err);
	if (ret || n == 0)
		goto out;
	sel = mc_calloc(n, sizeof(*sel));
	if (!sel) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		for (j = 0; j < nall && strcmp(all[j].name, names[i]); j++)
			;
		if (j == nall) {
			ret = mc_err_set(err, MC_E_NOTFOUND, "no model '%.200s' in the cache",
					 names[i]);
			goto out;
		}
		sel[i] = all[j];
		sel[i].name = mc_strdup(all[j].name);
		sel[i].state = mc_strdup(all[j].state);
		if (!sel[i].name || !sel[i].state) {
			ret = mc_err_set(err, -ENOMEM, "out of memory");
			goto out;
		}
	}
	mc_model_rows_free(all, nall);
	all = sel;
	nall = n;
	sel = NULL;
out:
	if (!ret) {
		*out = all;
		*nout = nall;
	} else {
		mc_model_rows_free(all, nall);
	}
	if (sel)
		mc_model_rows_free(sel, n);
	return ret;
}

int mc_cache_verify(struct mc_cache *c, const char *const *names, size_t n, unsigned flags,
		    void (*cb)(void *ctx, const struct mc_finding *f), void *ctx,
		    uint64_t *nfindings, struct mc_err *err)
{
	struct verify v = {.c = c, .flags = flags, .cb = cb, .ctx = ctx};
	struct mc_model_row *rows = NULL;
	size_t nrows = 0;
	int ret;

	ret = select_models(c, names, n, &rows, &nrows, err);
	if (ret)
		goto out;
	/* A model never completed promises nothing on disk yet. */
	for (size_t i = 0; !ret && i < nrows; i++)
		if (rows[i].current)
			ret = check_model(&v, rows[i].name, rows[i].current, err);
	if (!ret && n == 0)
		ret = scan_orphans(&v, err);
	mc_model_rows_free(rows, nrows);
out:
	if (nfindings)
		*nfindings = v.n;
	return ret;
}
