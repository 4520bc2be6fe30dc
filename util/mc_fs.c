/* Beneath-only path opening; see mc_fs.h. */
#include "mc_fs.h"

#include "mc_alloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mc_banned.h"

/* Set once openat2 turned out to be missing (old kernel) or filtered (seccomp). */
static bool no_openat2;

int mc_fs_open_beneath(int dirfd, const char *name, int flags)
{
	struct open_how how = {
	    .flags = (unsigned long long)(flags | O_CLOEXEC | O_NOFOLLOW),
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = -1;

	if (!no_openat2) {
		fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
		if (fd < 0 && (errno == ENOSYS || errno == EPERM))
			no_openat2 = true;
	}
	if (no_openat2)
		fd = openat(dirfd, name, flags | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : (int)fd;
}

static bool is_symlink_at(int dirfd, const char *name)
{
	struct stat st;

	return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
}

int mc_fs_open_dir(int dirfd, const char *name, bool create, bool *created)
{
	bool made = false;
	int fd;

	if (create) {
		if (mkdirat(dirfd, name, 0755) == 0)
			made = true;
		else if (errno != EEXIST) {
			fd = -errno;
			goto out;
		}
	}
	fd = mc_fs_open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY);
	/*
	 * openat2 says ELOOP for a symlink, the O_NOFOLLOW fallback ENOTDIR: one answer, so that
	 * callers can name a planted symlink as such.
	 */
	if (fd == -ENOTDIR && is_symlink_at(dirfd, name))
		fd = -ELOOP;
out:
	if (created)
		*created = made;
	return fd;
}

int mc_fs_open_parent(int dirfd, const char *path, bool create, const char **leaf)
{
	const char *comp = path, *slash;
	char name[256];
	int cur, next;

	cur = fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
	if (cur < 0)
		return -errno;
	while ((slash = strchr(comp, '/')) != NULL) {
		size_t len = (size_t)(slash - comp);

		if (len == 0 || len >= sizeof(name)) {
			close(cur);
			return len ? -ENAMETOOLONG : -EINVAL;
		}
		memcpy(name, comp, len);
		name[len] = '\0';
		next = mc_fs_open_dir(cur, name, create, NULL);
		close(cur);
		if (next < 0)
			return next;
		cur = next;
		comp = slash + 1;
	}
	*leaf = comp;
	return cur;
}

/* Deeper than any model tree; bounds the recursion against a hostile directory. */
#define REMOVE_DEPTH_MAX 256

static int remove_tree(int parent, const char *name, int depth)
{
	struct dirent *d;
	struct stat st;
	DIR *dir;
	int fd, r, ret = 0;

	fd = mc_fs_open_dir(parent, name, false, NULL);
	if (fd == -ENOTDIR || fd == -ELOOP)
		return unlinkat(parent, name, 0) && errno != ENOENT ? -errno : 0;
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	if (depth >= REMOVE_DEPTH_MAX) {
		close(fd);
		return -ELOOP;
	}
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while ((d = readdir(dir)) != NULL) {
		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW))
			r = errno == ENOENT ? 0 : -errno;
		else if (S_ISDIR(st.st_mode))
			r = remove_tree(fd, d->d_name, depth + 1);
		else
			r = unlinkat(fd, d->d_name, 0) && errno != ENOENT ? -errno : 0;
		if (r && !ret)
			ret = r;
	}
	closedir(dir);
	if (unlinkat(parent, name, AT_REMOVEDIR) && errno != ENOENT && !ret)
		ret = -errno;
	return ret;
}

int mc_fs_remove_tree(int dirfd, const char *name)
{
	return remove_tree(dirfd, name, 0);
}

int mc_fs_write_atomic(int dirfd, const char *name, const void *buf, size_t len)
{
	const char *p = buf;
	char tmp[300];
	ssize_t n;
	int fd = -1, ret = 0;

	snprintf(tmp, sizeof(tmp), ".%.200s.%ld.tmp", name, (long)getpid());
	for (int tries = 0; tries < 2 && fd < 0; tries++) {
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno == EEXIST && tries == 0)
			unlinkat(dirfd, tmp, 0);
		else if (fd < 0)
			return -errno;
	}
	while (len && !ret) {
		n = write(fd, p, len);
		if (n < 0 && errno != EINTR)
			ret = -errno;
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
	}
	if (!ret && fsync(fd))
		ret = -errno;
	if (close(fd) && !ret)
		ret = -errno;
	if (!ret && renameat(dirfd, tmp, dirfd, name))
		ret = -errno;
	if (ret)
		unlinkat(dirfd, tmp, 0);
	else if (fsync(dirfd))
		ret = -errno;
	return ret;
}
