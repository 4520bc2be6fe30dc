/*
 * Materialisation: the target directory gets hard links to the cache's blobs when both share a
 * filesystem (no copy, no extra space, and the files stay read-only), else reflinks (FICLONE),
 * else kernel copies (copy_file_range), fsynced. Every path beneath the target is opened from
 * its directory handle without following symlinks (util/mc_fs.h), so nothing is written outside
 * it, and every file appears under its final name only complete (temp name, then rename).
 */
#include "materialise.h"

#include "mc_alloc.h"
#include "mc_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mc_banned.h"

const char *mc_place_name(enum mc_place p)
{
	static const char *const names[] = {"in place", "hard link", "reflink", "copy"};

	return names[p];
}

/* Copies @in to @out: reflink when the filesystem can, else copy_file_range, else read/write. */
static int copy_fd(int in, int out, uint64_t size, enum mc_place *how)
{
	static char buf[1 << 16];
	uint64_t done = 0;
	ssize_t n;

	if (ioctl(out, FICLONE, in) == 0) {
		*how = MC_PLACE_CLONE;
		return 0;
	}
	*how = MC_PLACE_COPY;
	while (done < size) {
		n = copy_file_range(in, NULL, out, NULL, (size_t)(size - done), 0);
		if (n < 0 &&
		    (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
			/* Old kernels or odd filesystems: the plain way. */
			n = pread(in, buf, sizeof(buf), (off_t)done);
			if (n > 0 && write(out, buf, (size_t)n) != n)
				return errno ? -errno : -EIO;
		}
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the blob is shorter than the index says */
		done += (uint64_t)n;
	}
	return 0;
}

/*
 * Puts the tree's @src (a path beneath @tree_fd) at @dir_fd/@tmp: a hard link, or a fresh copy
 * (0444 like a blob, fsynced). Raises *how to the method used.
 */
static int place_one(int tree_fd, const char *src, uint64_t size, int dir_fd, const char *tmp,
		     enum mc_place *how, struct mc_err *err)
{
	enum mc_place used = MC_PLACE_LINK;
	const char *leaf;
	int sdir, in = -1, out = -1, ret = 0;

	sdir = mc_fs_open_parent(tree_fd, src, false, &leaf);
	if (sdir < 0)
		return mc_err_errno(err, sdir, "cannot open '%s' in the cache", src);
	if (linkat(sdir, leaf, dir_fd, tmp, 0) == 0)
		goto out;
	if (errno != EXDEV && errno != EPERM && errno != EMLINK) {
		ret = mc_err_errno(err, -errno, "cannot link '%s' into the target", src);
		goto out;
	}
	in = mc_fs_open_beneath(sdir, leaf, O_RDONLY);
	if (in < 0) {
		ret = mc_err_errno(err, in, "cannot open '%s' in the cache", src);
		goto out;
	}
	out = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0444);
	if (out < 0) {
		ret = mc_err_errno(err, -errno, "cannot create '%s' in the target", tmp);
		goto out;
	}
	ret = copy_fd(in, out, size, &used);
	if (!ret && fsync(out))
		ret = -errno;
	if (ret) {
		ret = mc_err_errno(err, ret, "cannot copy '%s' into the target", src);
		unlinkat(dir_fd, tmp, 0);
	}
out:
	if (!ret && used > *how)
		*how = used;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	close(sdir);
	return ret;
}

/* True when @dir_fd/@leaf is the very file (same inode) as the tree's @src. */
static bool same_file(int tree_fd, const char *src, int dir_fd, const char *leaf)
{
	struct stat a, b;
	const char *sleaf;
	bool same = false;
	int sdir;

	sdir = mc_fs_open_parent(tree_fd, src, false, &sleaf);
	if (sdir < 0)
		return false;
	if (!fstatat(sdir, sleaf, &a, AT_SYMLINK_NOFOLLOW) &&
	    !fstatat(dir_fd, leaf, &b, AT_SYMLINK_NOFOLLOW) && S_ISREG(b.st_mode) &&
	    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
		same = true;
	close(sdir);
	return same;
}

/* A temp name for @leaf, unique to this process: ".LEAF.mcache-PID.tmp" (shortened). */
static void tmp_name(const char *leaf, char *buf, size_t len)
{
	snprintf(buf, len, ".%.200s.mcache-%ld.tmp", leaf, (long)getpid());
}

int mc_place_file(int target_fd, const char *file, const struct mc_model_view *v,
		  enum mc_place *how, struct mc_err *err)
{
	char tmp[256];
	const char *leaf;
	int dir, ret;

	*how = MC_PLACE_NONE;
	if (v->nentry != 1)
		return mc_err_set(err, MC_E_USAGE,
				  "MODEL_URL gave %zu files, not one: list the model in "
				  "MCACHE_MANIFEST to get a directory of files",
				  v->nentry);
	dir = mc_fs_open_parent(target_fd, file, true, &leaf);
	if (dir < 0)
		return mc_err_errno(err, dir, "cannot open the directory of '%s' in the target",
				    file);
	if (same_file(v->tree_fd, mc_model_view_path(v, 0), dir, leaf)) {
		close(dir);
		return 0;
	}
	tmp_name(leaf, tmp, sizeof(tmp));
	unlinkat(dir, tmp, 0); /* a leftover of a killed run with our pid */
	ret = place_one(v->tree_fd, mc_model_view_path(v, 0), mc_model_view_size(v, 0), dir, tmp,
			how, err);
	if (!ret && renameat(dir, tmp, dir, leaf)) {
		ret = mc_err_errno(err, -errno, "cannot rename '%s' into place", file);
		unlinkat(dir, tmp, 0);
	}
	if (!ret && fsync(dir))
		ret = mc_err_errno(err, -errno, "cannot sync the target directory");
	close(dir);
	return ret;
}

/* Counts the regular files beneath @fd (at most @limit + 1). */
static size_t count_files(int fd, size_t limit, int depth)
{
	struct dirent *d;
	size_t n = 0;
	DIR *dir;
	int sub;

	if (depth > 64)
		return limit + 1;
	sub = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	dir = sub >= 0 ? fdopendir(sub) : NULL;
	if (!dir) {
		if (sub >= 0)
			close(sub);
		return limit + 1;
	}
	while (n <= limit && (d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (d->d_type == DT_DIR) {
			int c = mc_fs_open_beneath(dirfd(dir), d->d_name, O_RDONLY | O_DIRECTORY);

			n += c >= 0 ? count_files(c, limit - n, depth + 1) : limit + 1;
			if (c >= 0)
				close(c);
		} else {
			n++;
		}
	}
	closedir(dir);
	return n;
}

/* True when @target_fd/@dir holds exactly the files of @v, each the blob itself. */
static bool tree_in_place(int target_fd, const char *dir, const struct mc_model_view *v)
{
	bool ok = true;
	const char *leaf;
	int fd, pd;

	fd = mc_fs_open_dir(target_fd, dir, false, NULL);
	if (fd < 0)
		return false;
	for (size_t i = 0; ok && i < v->nentry; i++) {
		pd = mc_fs_open_parent(fd, mc_model_view_path(v, i), false, &leaf);
		ok = pd >= 0 && same_file(v->tree_fd, mc_model_view_path(v, i), pd, leaf);
		if (pd >= 0)
			close(pd);
	}
	ok = ok && count_files(fd, v->nentry, 0) == v->nentry;
	close(fd);
	return ok;
}

int mc_place_tree(int target_fd, const char *dir, const struct mc_model_view *v, enum mc_place *how,
		  struct mc_err *err)
{
	char tmp[256];
	const char *leaf;
	int fd, pd, ret = 0;

	*how = MC_PLACE_NONE;
	if (tree_in_place(target_fd, dir, v))
		return 0;
	tmp_name(dir, tmp, sizeof(tmp));
	mc_fs_remove_tree(target_fd, tmp); /* a leftover of a killed run with our pid */
	fd = mc_fs_open_dir(target_fd, tmp, true, NULL);
	if (fd < 0)
		return mc_err_errno(err, fd, "cannot create '%s' in the target", tmp);
	for (size_t i = 0; !ret && i < v->nentry; i++) {
		const char *path = mc_model_view_path(v, i);

		pd = mc_fs_open_parent(fd, path, true, &leaf);
		if (pd < 0) {
			ret = mc_err_errno(err, pd, "cannot create the directory of '%s/%s'", dir,
					   path);
			break;
		}
		ret = place_one(v->tree_fd, path, mc_model_view_size(v, i), pd, leaf, how, err);
		if (!ret && fsync(pd))
			ret = mc_err_errno(err, -errno, "cannot sync a directory of '%s'", dir);
		close(pd);
	}
	if (!ret && fsync(fd))
		ret = mc_err_errno(err, -errno, "cannot sync '%s'", tmp);
	close(fd);
	/* The previous tree (if any) and the new one change places in one step. */
	if (!ret && renameat2(target_fd, tmp, target_fd, dir, RENAME_EXCHANGE) == 0)
		mc_fs_remove_tree(target_fd, tmp);
	else if (!ret && errno == ENOENT && renameat(target_fd, tmp, target_fd, dir) == 0)
		;
	else if (!ret)
		ret = mc_err_errno(err, -errno, "cannot move '%s' into place", dir);
	if (ret)
		mc_fs_remove_tree(target_fd, tmp);
	else if (fsync(target_fd))
		ret = mc_err_errno(err, -errno, "cannot sync the target directory");
	return ret;
}
