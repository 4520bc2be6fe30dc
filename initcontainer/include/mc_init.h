/*
 * initcontainer: `mcache init`, the drop-in replacement for the wget init container of an
 * inference pod. Configured by the environment (README.md in this folder, mcache.1):
 *
 *   MODEL_URL        one model file, as in the wget snippet  → $MCACHE_TARGET/$MODEL_FILE
 *   MCACHE_MANIFEST  a YAML manifest (manifest/)           → $MCACHE_TARGET/NAME/ per model
 *   MCACHE_TARGET (/models), MODEL_FILE (model.safetensors), MCACHE_MODEL_NAME,
 *   MCACHE_DIR ($MCACHE_TARGET/.mcache), MCACHE_OFFLINE, MCACHE_DRY_RUN,
 *   MCACHE_TERMINATION_LOG (/dev/termination-log), MCACHE_CONNECTIONS, MCACHE_MAX_RATE
 *
 * It is a front end like cmd/: it logs JSON lines on stderr, writes the Kubernetes termination
 * message and returns an exit status.
 */
#ifndef MC_INIT_H
#define MC_INIT_H

#include <stdbool.h>

/* What the command line adds to the environment. */
struct mc_init_args {
	const char *cache_dir; /* --cache-dir, else NULL: MCACHE_DIR, else $MCACHE_TARGET/.mcache */
	bool allow_shared_dir; /* --allow-shared-dir (MCACHE_ALLOW_SHARED_DIR is read here too) */
	bool dry_run;	       /* --dry-run (MCACHE_DRY_RUN=1 is read here too) */
	bool quiet;	       /* -q: warnings and errors only */
};

/* Runs `mcache init`; returns the process exit status (mc_err.h MC_EXIT_*). */
int mc_init_main(const struct mc_init_args *args);

#endif
