/*
 * The cache directory on disk: opening its layout, and every file-system step of the publish
 * protocol (temp file, blob rename, tree of hard links, symlink swap), each made durable with
 * fsync in the order that keeps a reader from ever seeing a partial file or tree.
 *
 * Names that come from the outside world (file paths inside a model) are resolved beneath a
 * directory handle one component at a time (util/mc_fs.h: openat2 with RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS, else openat with O_NOFOLLOW): a component is never "..", never empty,
 * and never followed when it is a symlink. Paths are never built by string concatenation,
 * except for messages.
 */
#include "cache_int.h"

#include "mc_alloc.h"
#include "mc_fs.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mc_banned.h"

static int open_beneath(int dirfd, const char *name, int flags)
{
	return mc_fs_open_beneath(dirfd, name, flags);
}

/*
 * The message for a directory @rel beneath the cache @dir that could not be opened: a symlink
 * (which another tenant of a shared hostPath could have planted) is named as such.
 */
static int dir_fail(struct mc_err *err, int code, const char *verb, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int dir_fail(struct mc_err *err, int code, const char *verb, const char *fmt, ...)
{
	char path[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	if (code == -ELOOP)
		return mc_err_set(err, code,
				  "refusing '%s': it is a symbolic link, and nothing inside the "
				  "cache is followed through one",
				  path);
	return mc_err_errno(err, code, "cannot %s '%s'", verb, path);
}

int64_t mc_store_mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

void mc_store_blob_rel(const uint8_t digest[MC_DIGEST_LEN], char *hex, char *rel)
{
	mc_hex(digest, MC_DIGEST_LEN, hex);
	snprintf(rel, MC_BLOB_REL_MAX, "%.2s/%s", hex, hex);
}

int mc_store_blob_rel_hex(const char *hex, char *rel)
{
	uint8_t digest[MC_DIGEST_LEN];
	char lower[MC_DIGEST_HEX];
	int ret;

	ret = mc_unhex(hex, digest, MC_DIGEST_LEN);
	if (ret) {
		ret = MC_E_INDEX;
		goto out;
	}
	mc_store_blob_rel(digest, lower, rel);
out:
	return ret;
}

int mc_store_open_dir(int dirfd, const char *name, bool create, bool *created)
{
	return mc_fs_open_dir(dirfd, name, create, created);
}

/* The directories a tree build made, in creation order, relative to the version directory. */
struct made_dirs {
	char **path;
	size_t n, cap;
};

static int made_add(struct made_dirs *m, const char *path, size_t len)
{
	char **grown;
	int ret = 0;

	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 8;
		grown = mc_realloc(m->path, m->cap * sizeof(*m->path));
		if (!grown) {
			ret = -ENOMEM;
			goto out;
		}
		m->path = grown;
	}
	m->path[m->n] = mc_strndup(path, len);
	if (!m->path[m->n])
		ret = -ENOMEM;
	else
		m->n++;
out:
	return ret;
}

static void made_release(struct made_dirs *m)
{
	for (size_t i = 0; i < m->n; i++)
		mc_free(m->path[i]);
	mc_free(m->path);
}

/*
 * Walks @path beneath @dirfd to the parent of its last component, creating missing
 * directories (and recording them in @made) when @made is not NULL.
 */
static int walk_parent(int dirfd, const char *path, struct made_dirs *made, const char **leaf)
{
	char *copy = mc_strdup(path);
	char *comp, *slash;
	bool created;
	int cur, next, ret;

	if (!copy) {
		ret = -ENOMEM;
		goto out;
	}
	cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (cur < 0) {
		ret = -errno;
		goto out_free;
	}
	comp = copy;
	while ((slash = strchr(comp, '/')) != NULL) {
		*slash = '\0';
		next = mc_store_open_dir(cur, comp, made != NULL, &created);
		if (next < 0) {
			ret = next;
			goto out_close;
		}
		close(cur);
		cur = next;
		if (created) {
			ret = made_add(made, path, (size_t)(slash - copy));
			if (ret)
				goto out_close;
		}
		comp = slash + 1;
	}
	*leaf = path + (comp - copy);
	ret = cur;
	goto out_free;
out_close:
	close(cur);
out_free:
	mc_free(copy);
out:
	return ret;
}

int mc_store_open_parent(int dirfd, const char *path, const char **leaf)
{
	return walk_parent(dirfd, path, NULL, leaf);
}

/* Opens the directory at the relative path @path beneath @dirfd. */
static int open_path_dir(int dirfd, const char *path)
{
	const char *leaf = NULL;
	int parent, fd;

	parent = mc_store_open_parent(dirfd, path, &leaf);
	if (parent < 0) {
		fd = parent;
		goto out;
	}
	fd = open_beneath(parent, leaf, O_RDONLY | O_DIRECTORY);
	close(parent);
out:
	return fd;
}

static int fsync_fd(int fd)
{
	return fsync(fd) ? -errno : 0;
}

static int no_space(struct mc_cache *c, const char *label, uint64_t need, uint64_t avail,
		    struct mc_err *err)
{
	char h1[32], h2[32];

	return mc_err_set(
	    err, -ENOSPC,
	    "not enough space in '%s' for '%s': %llu bytes (%s) needed, %llu (%s) free", c->dir,
	    label, (unsigned long long)need, mc_format_size(need, h1, sizeof(h1)),
	    (unsigned long long)avail, mc_format_size(avail, h2, sizeof(h2)));
}

int mc_store_tmp_create(struct mc_cache *c, const char *name, uint64_t size, const char *label,
			int *out, struct mc_err *err)
{
	struct statvfs vfs;
	int fd, ret = 0;

	fd = openat(c->tmp_fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ret = mc_err_errno(err, -errno, "cannot create '%s/tmp/%s'", c->dir, name);
		goto out;
	}
	/*
	 * Before the first byte: compare with what the filesystem has free, then reserve the
	 * whole file, so that a full disk is a clear error here and never a torn write later.
	 * Files of one pull reserve in turn, so the free space seen here already excludes them.
	 */
	if (size && fstatvfs(c->tmp_fd, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < size) {
		ret = no_space(c, label, size, (uint64_t)vfs.f_bavail * vfs.f_frsize, err);
		goto out_unlink;
	}
	if (size == 0 || fallocate(fd, 0, 0, (off_t)size) == 0)
		goto out_done;
	if (errno == ENOSPC || errno == EDQUOT) {
		ret = no_space(
		    c, label, size,
		    fstatvfs(c->tmp_fd, &vfs) ? 0 : (uint64_t)vfs.f_bavail * vfs.f_frsize, err);
		goto out_unlink;
	}
	if (errno != EOPNOTSUPP || ftruncate(fd, (off_t)size) != 0) {
		ret = mc_err_errno(err, -errno, "cannot allocate '%s/tmp/%s'", c->dir, name);
		goto out_unlink;
	}
out_done:
	/* The name must survive a reboot as long as the blocks recorded for it do. */
	if (fsync(c->tmp_fd)) {
		ret = mc_err_errno(err, -errno, "cannot sync '%s/tmp'", c->dir);
		goto out_unlink;
	}
	*out = fd;
	goto out;
out_unlink:
	close(fd);
	unlinkat(c->tmp_fd, name, 0);
out:
	return ret;
}

bool mc_store_blob_matches(struct mc_cache *c, const char *rel, uint64_t size, uint64_t inode,
			   int64_t mtime_ns)
{
	const char *leaf = NULL;
	struct stat st;
	bool ok;
	int abfd;

	/* blobs/ab is opened without following it: a planted symlink there is no blob. */
	abfd = mc_store_open_parent(c->blobs_fd, rel, &leaf);
	if (abfd < 0)
		return false;
	ok = fstatat(abfd, leaf, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
	     (uint64_t)st.st_size == size && (uint64_t)st.st_ino == inode &&
	     mc_store_mtime_ns(&st) == mtime_ns;
	close(abfd);
	return ok;
}

/* The temp file's bytes are already in the cache: drop it and describe the blob in place. */
static int dedup_tmp(struct mc_cache *c, const char *tmp_name, int abfd, const char *hex,
		     struct stat *st, struct mc_err *err)
{
	int ret = 0;

	if (unlinkat(c->tmp_fd, tmp_name, 0) && errno != ENOENT) {
		ret = mc_err_errno(err, -errno, "cannot remove '%s/tmp/%s'", c->dir, tmp_name);
		goto out;
	}
	if (fstatat(abfd, hex, st, AT_SYMLINK_NOFOLLOW))
		ret = mc_err_errno(err, -errno, "cannot stat '%s/blobs/%.2s/%s'", c->dir, hex, hex);
out:
	return ret;
}

int mc_store_blob_publish(struct mc_cache *c, int fd, const char *tmp_name,
			  const uint8_t digest[MC_DIGEST_LEN], bool indexed, struct stat *st,
			  bool *dedup, struct mc_err *err)
{
	char hex[MC_DIGEST_HEX], rel[MC_BLOB_REL_MAX];
	struct stat old;
	bool created;
	int abfd, ret = 0, r;

	mc_store_blob_rel(digest, hex, rel);
	*dedup = false;
	rel[2] = '\0';
	abfd = mc_store_open_dir(c->blobs_fd, rel, true, &created);
	if (abfd < 0) {
		ret = dir_fail(err, abfd, "create", "%s/blobs/%s", c->dir, rel);
		goto out;
	}
	if (indexed) {
		*dedup = true;
		ret = dedup_tmp(c, tmp_name, abfd, hex, st, err);
		goto out_close;
	}
	/* Read-only and durable (bytes and mode) before the name makes it visible. */
	if (fchmod(fd, 0444) || fsync(fd) || fstat(fd, st)) {
		ret = mc_err_errno(err, -errno, "cannot sync '%s/tmp/%s'", c->dir, tmp_name);
		goto out_close;
	}
	if (fstatat(abfd, hex, &old, AT_SYMLINK_NOFOLLOW) == 0) {
		/* A file the index does not vouch for (a crash before its row, or damage). */
		r = renameat(c->tmp_fd, tmp_name, abfd, hex);
	} else {
		/* Another process publishing the same bytes at the same moment wins the name. */
		r = renameat2(c->tmp_fd, tmp_name, abfd, hex, RENAME_NOREPLACE);
		if (r && errno == EEXIST) {
			*dedup = true;
			ret = dedup_tmp(c, tmp_name, abfd, hex, st, err);
			goto out_close;
		}
		if (r && errno == EINVAL)
			r = renameat(c->tmp_fd, tmp_name, abfd, hex);
	}
	if (r) {
		ret = mc_err_errno(err, -errno, "cannot rename '%s/tmp/%s' to 'blobs/%s/%s'",
				   c->dir, tmp_name, rel, hex);
		goto out_close;
	}
	ret = fsync_fd(abfd);
	if (!ret && created)
		ret = fsync_fd(c->blobs_fd);
	if (ret)
		mc_err_errno(err, ret, "cannot sync '%s/blobs/%s'", c->dir, rel);
out_close:
	close(abfd);
out:
	return ret;
}

void mc_store_link_target(const char *name, int64_t version, char *buf, size_t len)
{
	snprintf(buf, len, "../trees/%s/%lld", name, (long long)version);
}

/* Links every entry into @vfd, recording the directories it makes; then fsyncs them all. */
static int tree_fill(struct mc_cache *c, int vfd, const char *where, const struct mc_tree_entry *e,
		     size_t n, struct made_dirs *made, struct mc_err *err)
{
	char rel[MC_BLOB_REL_MAX];
	const char *leaf = NULL, *bleaf = NULL;
	int parent, abfd, dfd, ret = 0;

	for (size_t i = 0; i < n; i++) {
		if (mc_store_blob_rel_hex(e[i].hex, rel)) {
			ret = mc_err_set(err, MC_E_INDEX, "bad digest '%s' for '%s' in the index",
					 e[i].hex, e[i].path);
			goto out;
		}
		parent = walk_parent(vfd, e[i].path, made, &leaf);
		if (parent < 0) {
			ret = mc_err_errno(err, parent, "cannot create the directory of '%s/%s'",
					   where, e[i].path);
			goto out;
		}
		/* The blob's directory too is opened without following a symlink. */
		abfd = mc_store_open_parent(c->blobs_fd, rel, &bleaf);
		if (abfd < 0 || linkat(abfd, bleaf, parent, leaf, 0))
			ret = mc_err_errno(err, abfd < 0 ? abfd : -errno,
					   "cannot link '%s/%s' to 'blobs/%s'", where, e[i].path,
					   rel);
		if (abfd >= 0)
			close(abfd);
		close(parent);
		if (ret)
			goto out;
	}
	for (size_t i = 0; i < made->n; i++) {
		dfd = open_path_dir(vfd, made->path[i]);
		ret = dfd < 0 ? dfd : fsync_fd(dfd);
		if (dfd >= 0)
			close(dfd);
		if (ret) {
			mc_err_errno(err, ret, "cannot sync '%s/%s'", where, made->path[i]);
			goto out;
		}
	}
	ret = fsync_fd(vfd);
	if (ret)
		mc_err_errno(err, ret, "cannot sync '%s'", where);
out:
	return ret;
}

int mc_store_tree_build(struct mc_cache *c, const char *name, int64_t version,
			const struct mc_tree_entry *e, size_t n, struct mc_err *err)
{
	struct made_dirs made = {0};
	char vname[24], where[200];
	bool model_created;
	int mfd, vfd, ret;

	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	snprintf(where, sizeof(where), "trees/%s/%s", name, vname);
	mfd = mc_store_open_dir(c->trees_fd, name, true, &model_created);
	if (mfd < 0) {
		ret = dir_fail(err, mfd, "create", "%s/trees/%s", c->dir, name);
		goto out;
	}
	if (mkdirat(mfd, vname, 0755)) {
		ret = mc_err_errno(err, -errno, "cannot create '%s/%s'", c->dir, where);
		goto out_mfd;
	}
	vfd = mc_store_open_dir(mfd, vname, false, NULL);
	if (vfd < 0) {
		ret = dir_fail(err, vfd, "open", "%s/%s", c->dir, where);
		goto out_remove;
	}
	ret = tree_fill(c, vfd, where, e, n, &made, err);
	if (!ret) /* beside the tree, before anyone can see the tree: cache/sidecar.c */
		ret = mc_sidecar_write(c, mfd, name, version, err);
	close(vfd);
	if (ret)
		goto out_remove;
	ret = fsync_fd(mfd);
	if (!ret && model_created)
		ret = fsync_fd(c->trees_fd);
	if (ret) {
		mc_err_errno(err, ret, "cannot sync '%s/trees/%s'", c->dir, name);
		goto out_remove;
	}
	goto out_mfd;
out_remove:
	mc_store_tree_remove(c, name, version, e, n);
out_mfd:
	close(mfd);
out:
	made_release(&made);
	return ret;
}

/* Removes the entry @path beneath @vfd (a link, or an empty directory with @flags). */
static void remove_beneath(int vfd, const char *path, int flags)
{
	const char *leaf = NULL;
	int parent = mc_store_open_parent(vfd, path, &leaf);

	if (parent >= 0) {
		unlinkat(parent, leaf, flags);
		close(parent);
	}
}

void mc_store_tree_remove(struct mc_cache *c, const char *name, int64_t version,
			  const struct mc_tree_entry *e, size_t n)
{
	char vname[24], *dir;
	size_t len;
	int mfd, vfd;

	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	mfd = mc_store_open_dir(c->trees_fd, name, false, NULL);
	if (mfd < 0)
		goto out;
	vfd = mc_store_open_dir(mfd, vname, false, NULL);
	if (vfd < 0)
		goto out_mfd;
	for (size_t i = 0; i < n; i++)
		remove_beneath(vfd, e[i].path, 0);
	/* Then the directories, deepest first; a non-empty one simply stays. */
	for (size_t i = n; i-- > 0;) {
		dir = mc_strdup(e[i].path);
		if (!dir)
			continue;
		for (len = strlen(dir); len > 0; len--) {
			if (dir[len - 1] != '/')
				continue;
			dir[len - 1] = '\0';
			remove_beneath(vfd, dir, AT_REMOVEDIR);
		}
		mc_free(dir);
	}
	close(vfd);
	unlinkat(mfd, vname, AT_REMOVEDIR);
	fsync(mfd);
out_mfd:
	close(mfd);
out:
	return;
}

bool mc_store_tree_is_intact(struct mc_cache *c, const char *name, int64_t version,
			     const struct mc_tree_entry *e, size_t n)
{
	char target[200], link[200], vname[24], rel[MC_BLOB_REL_MAX];
	struct stat tst, bst;
	const char *leaf = NULL;
	bool ok = false;
	ssize_t len;
	int mfd, vfd, parent;

	mc_store_link_target(name, version, target, sizeof(target));
	len = readlinkat(c->models_fd, name, link, sizeof(link) - 1);
	if (len < 0 || (size_t)len != strlen(target) || memcmp(link, target, (size_t)len))
		goto out;
	snprintf(vname, sizeof(vname), "%lld", (long long)version);
	mfd = mc_store_open_dir(c->trees_fd, name, false, NULL);
	if (mfd < 0)
		goto out;
	vfd = mc_store_open_dir(mfd, vname, false, NULL);
	close(mfd);
	if (vfd < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (mc_store_blob_rel_hex(e[i].hex, rel) ||
		    !mc_store_blob_matches(c, rel, e[i].size, e[i].inode, e[i].mtime_ns))
			goto out_vfd;
		parent = mc_store_open_parent(vfd, e[i].path, &leaf);
		if (parent < 0)
			goto out_vfd;
		len = fstatat(parent, leaf, &tst, AT_SYMLINK_NOFOLLOW);
		close(parent);
		if (len || fstatat(c->blobs_fd, rel, &bst, AT_SYMLINK_NOFOLLOW) ||
		    tst.st_ino != bst.st_ino || tst.st_dev != bst.st_dev ||
		    (bst.st_mode & 0222) != 0)
			goto out_vfd;
	}
	ok = true;
out_vfd:
	close(vfd);
out:
	return ok;
}

int mc_store_link_swap(struct mc_cache *c, const char *name, int64_t version, struct mc_err *err)
{
	char target[200], tmp[160];
	int ret = 0;

	mc_store_link_target(name, version, target, sizeof(target));
	/* Model names never start with '.', so the temporary name cannot be a model's. */
	snprintf(tmp, sizeof(tmp), ".%s.%ld.tmp", name, (long)getpid());
	unlinkat(c->models_fd, tmp, 0);
	if (symlinkat(target, c->models_fd, tmp)) {
		ret = mc_err_errno(err, -errno, "cannot create '%s/models/%s'", c->dir, tmp);
		goto out;
	}
	if (renameat(c->models_fd, tmp, c->models_fd, name)) {
		ret = mc_err_errno(err, -errno, "cannot replace '%s/models/%s'", c->dir, name);
		unlinkat(c->models_fd, tmp, 0);
		goto out;
	}
	ret = fsync_fd(c->models_fd);
	if (ret)
		mc_err_errno(err, ret, "cannot sync '%s/models'", c->dir);
out:
	return ret;
}

/* mkdir -p for the cache root, which the operator names and which we therefore trust. */
static int make_root(const char *dir, struct mc_err *err)
{
	char *copy = mc_strdup(dir);
	char saved;
	int ret = 0;

	if (!copy) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	for (char *p = copy + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		saved = *p;
		*p = '\0';
		if (mkdir(copy, 0755) && errno != EEXIST) {
			ret = mc_err_errno(err, -errno, "cannot create '%s'", copy);
			goto out_free;
		}
		*p = saved;
		if (!saved)
			break;
	}
out_free:
	mc_free(copy);
out:
	return ret;
}

/*
 * Refuses the directory open as @fd (@subject names it in messages) when someone other than
 * this user could plant files or symlinks in it: world-writable, or owned by another uid. The
 * checks are on the open descriptor, so they hold for the directory every later *at() call
 * uses. MC_CACHE_ALLOW_SHARED_DIR turns them off (the operator says the sharing is intended).
 * Directories mcache makes are 0755 less the umask, which can only take bits away, so they
 * are never world-writable and need no fchmod.
 */
static int check_dir_owner(const struct mc_cache *c, int fd, const char *subject,
			   struct mc_err *err)
{
	struct stat st;
	int ret = 0;

	if (fstat(fd, &st)) {
		ret = mc_err_errno(err, -errno, "cannot stat %s", subject);
		goto out;
	}
	if (c->flags & MC_CACHE_ALLOW_SHARED_DIR)
		goto out;
	if (st.st_mode & S_IWOTH)
		ret = mc_err_set(err, -EPERM,
				 "refusing %s: it is world-writable (mode %04o); use a directory "
				 "only this user can write, or set MCACHE_ALLOW_SHARED_DIR=1",
				 subject, (unsigned)(st.st_mode & 07777));
	else if (st.st_uid != geteuid())
		ret = mc_err_set(err, -EPERM,
				 "refusing %s: it is owned by uid %u, not by this user (uid %u); "
				 "use a directory this user owns, or set MCACHE_ALLOW_SHARED_DIR=1",
				 subject, (unsigned)st.st_uid, (unsigned)geteuid());
out:
	return ret;
}

static int open_layout(struct mc_cache *c, struct mc_err *err)
{
	static const char *const names[] = {"blobs", "tmp", "trees", "models"};
	int *const fds[] = {&c->blobs_fd, &c->tmp_fd, &c->trees_fd, &c->models_fd};
	char subject[600];
	int ret = 0;

	/* The root is the operator's choice: a symlink to it is followed, nothing beneath it. */
	c->dirfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (c->dirfd < 0) {
		ret =
		    errno == ENOTDIR
			? mc_err_set(err, -ENOTDIR,
				     "refusing cache directory '%s': it is not a directory", c->dir)
			: mc_err_errno(err, -errno, "cannot open '%s'", c->dir);
		goto out;
	}
	snprintf(subject, sizeof(subject), "cache directory '%.500s'", c->dir);
	ret = check_dir_owner(c, c->dirfd, subject, err);
	if (ret)
		goto out;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		*fds[i] = mc_store_open_dir(c->dirfd, names[i], true, NULL);
		if (*fds[i] < 0) {
			ret = dir_fail(err, *fds[i], "open", "%s/%s", c->dir, names[i]);
			goto out;
		}
		snprintf(subject, sizeof(subject), "'%.500s/%s'", c->dir, names[i]);
		ret = check_dir_owner(c, *fds[i], subject, err);
		if (ret)
			goto out;
	}
out:
	return ret;
}

/*
 * SQLite opens DIR/index.db and its companions by path. Each must be a regular file with one
 * link, or absent: a symlink or hard link planted by another tenant of the directory would
 * send the index's writes outside the cache. mc_index_open() also passes SQLITE_OPEN_NOFOLLOW
 * and SQLite opens the companions with O_NOFOLLOW, which closes the window after this check;
 * this check gives the clear message.
 */
static int check_index_files(struct mc_cache *c, struct mc_err *err)
{
	static const char *const names[] = {"index.db", "index.db-wal", "index.db-shm",
					    "index.db-journal"};
	struct stat st;
	int ret = 0;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (fstatat(c->dirfd, names[i], &st, AT_SYMLINK_NOFOLLOW)) {
			if (errno == ENOENT)
				continue;
			ret = mc_err_errno(err, -errno, "cannot stat '%s/%s'", c->dir, names[i]);
			goto out;
		}
		if (S_ISLNK(st.st_mode)) {
			ret = dir_fail(err, -ELOOP, "open", "%s/%s", c->dir, names[i]);
			goto out;
		}
		if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
			ret = mc_err_set(err, MC_E_INDEX,
					 "refusing '%s/%s': not a regular file with one link "
					 "(mode %06o, %lu links)",
					 c->dir, names[i], (unsigned)st.st_mode,
					 (unsigned long)st.st_nlink);
			goto out;
		}
	}
out:
	return ret;
}

int mc_cache_open(struct mc_cache **out, const char *dir, struct mc_err *err)
{
	return mc_cache_open2(out, dir, 0, err);
}

int mc_cache_open2(struct mc_cache **out, const char *dir, unsigned flags, struct mc_err *err)
{
	struct mc_cache *c;
	size_t len;
	int ret;

	if (!dir || !*dir) {
		ret = mc_err_set(err, MC_E_USAGE, "empty cache directory");
		goto out;
	}
	c = mc_calloc(1, sizeof(*c));
	if (!c) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out;
	}
	c->dirfd = c->blobs_fd = c->tmp_fd = c->trees_fd = c->models_fd = c->lock_fd = -1;
	c->flags = flags;
	len = strlen(dir);
	while (len > 1 && dir[len - 1] == '/')
		len--;
	c->dir = mc_strndup(dir, len);
	c->index_path = mc_malloc(len + sizeof("/index.db"));
	if (!c->dir || !c->index_path) {
		ret = mc_err_set(err, -ENOMEM, "out of memory");
		goto out_close;
	}
	snprintf(c->index_path, len + sizeof("/index.db"), "%s/index.db", c->dir);
	ret = make_root(c->dir, err);
	if (!ret)
		ret = open_layout(c, err);
	/* Held shared while open; rebuild-index takes it alone, then stops here (rebuild.c). */
	if (!ret)
		ret = mc_rebuild_guard(c, (flags & MC_CACHE_LAYOUT_ONLY) != 0, err);
	if (!ret && (flags & MC_CACHE_LAYOUT_ONLY))
		goto out_done;
	if (!ret)
		ret = check_index_files(c, err);
	if (!ret)
		ret = mc_index_open(c, err);
	if (!ret)
		ret = mc_session_open(c, err); /* with quick_check after an unclean shutdown */
	if (ret)
		goto out_close;
out_done:
	*out = c;
	goto out;
out_close:
	mc_cache_close(c);
out:
	return ret;
}

static void close_fd(int fd)
{
	if (fd >= 0)
		close(fd);
}

void mc_cache_close(struct mc_cache *c)
{
	if (!c)
		goto out;
	mc_session_close(c);
	mc_index_close(c);
	close_fd(c->dirfd);
	close_fd(c->blobs_fd);
	close_fd(c->tmp_fd);
	close_fd(c->trees_fd);
	close_fd(c->models_fd);
	close_fd(c->lock_fd); /* last: the index is closed before a rebuild may start */
	mc_free(c->dir);
	mc_free(c->index_path);
	mc_free(c);
out:
	return;
}

const char *mc_cache_dir(const struct mc_cache *c)
{
	return c->dir;
}
