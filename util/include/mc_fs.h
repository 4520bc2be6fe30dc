/*
 * Opening paths beneath a directory handle without ever following a symlink: what the cache and
 * the init container's target directory both need, since their paths come from the outside
 * world (object keys, Hub file names, model names) and their directories may be shared with
 * other tenants who could plant a symlink.
 *
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel has it, else openat(O_NOFOLLOW)
 * one component at a time; a symlink is -ELOOP either way.
 */
#ifndef MC_FS_H
#define MC_FS_H

#include <stdbool.h>
#include <stddef.h>

/* Opens the single component @name beneath @dirfd (O_CLOEXEC|O_NOFOLLOW added). fd or -errno. */
int mc_fs_open_beneath(int dirfd, const char *name, int flags);

/*
 * Opens the directory @name (one component) beneath @dirfd, creating it (0755) first when
 * @create; *created (may be NULL) tells whether this call made it. fd or -errno; -ELOOP for a
 * symlink.
 */
int mc_fs_open_dir(int dirfd, const char *name, bool create, bool *created);

/*
 * Opens the parent directory of the relative path @path (components separated by '/', already
 * validated: no "..", no empty component) beneath @dirfd, creating missing directories when
 * @create. Sets *leaf to the last component inside @path. fd (a dup of @dirfd for a
 * one-component path) or -errno.
 */
int mc_fs_open_parent(int dirfd, const char *path, bool create, const char **leaf);

/*
 * Removes @name beneath @dirfd: a file or symlink is unlinked (never followed), a directory is
 * emptied recursively (at most 256 levels) and removed. A missing @name is fine. Goes on past
 * an entry it cannot remove and returns the first error (-errno), else 0.
 */
int mc_fs_remove_tree(int dirfd, const char *name);

/*
 * Replaces @dirfd/@name with @len bytes of @buf atomically: a temp file beside it
 * (".NAME.PID.tmp", created O_EXCL without following a symlink; a leftover of a dead process
 * with our pid is removed first), written, fsynced, renamed over @name, then @dirfd fsynced.
 * Mode 0644. Returns 0 or -errno; on failure the temp file is gone and @name untouched.
 */
int mc_fs_write_atomic(int dirfd, const char *name, const void *buf, size_t len);

#endif
