/*
 * Placing a cached model into the init container's target directory, without a copy when the
 * cache and the target share a filesystem. Internal to initcontainer/.
 */
#ifndef MC_MATERIALISE_H
#define MC_MATERIALISE_H

#include <stdbool.h>
#include <stdint.h>

#include "mc_cache.h"
#include "mc_err.h"

/* How the files got there; the "worst" method any file needed. */
enum mc_place {
	MC_PLACE_NONE = 0, /* already in place: the same inode as the blob */
	MC_PLACE_LINK,	   /* hard link to the blob (same filesystem) */
	MC_PLACE_CLONE,	   /* FICLONE reflink (a copy-on-write filesystem) */
	MC_PLACE_COPY,	   /* copy_file_range (or read/write) and fsync */
};

const char *mc_place_name(enum mc_place p);

/*
 * Makes @target_fd/@file (a safe relative path) the single file of @v, atomically: a temp name
 * beside it, then rename over whatever was there (a partial wget leftover included).
 */
int mc_place_file(int target_fd, const char *file, const struct mc_model_view *v,
		  enum mc_place *how, struct mc_err *err);

/*
 * Makes @target_fd/@dir (one component) hold exactly the files of @v: built aside, then renamed
 * (or exchanged with the previous tree, which is then removed).
 */
int mc_place_tree(int target_fd, const char *dir, const struct mc_model_view *v, enum mc_place *how,
		  struct mc_err *err);

#endif
