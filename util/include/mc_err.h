/*
 * Error codes and the caller-supplied error buffer shared by every mcache library.
 *
 * Actions return 0 or a negative code: -errno where an errno fits (-ENOMEM, -ENOSPC, -EIO, ...),
 * or one of the project codes below. The human message goes into a struct mc_err supplied by the
 * caller, written once at the point of failure (curl's ERRORBUFFER). Libraries never print and
 * never exit; cmd/ turns codes into exit statuses (see mc_exit_code()).
 */
#ifndef MC_ERR_H
#define MC_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* Project codes, below every -errno value. */
enum {
	MC_E_USAGE = -10001,	 /* bad input from the user: URI, name, option, manifest */
	MC_E_ORIGIN = -10002,	 /* the origin failed: DNS, TCP, TLS, HTTP status, protocol */
	MC_E_INTEGRITY = -10003, /* bytes do not match size, checksum or what the origin promised */
	MC_E_INDEX = -10004,	 /* the SQLite index is unusable (corrupt, wrong schema) */
	MC_E_NOTFOUND = -10005,	 /* a named model is not in the cache */
	MC_E_INTERRUPTED = -10006, /* stopped by SIGINT/SIGTERM */
	MC_E_CHANGED = -10007,	   /* the remote object changed during the download */
};

/* Documented exit statuses (README.md, mcache.1). */
enum {
	MC_EXIT_OK = 0,
	MC_EXIT_FINDINGS = 1, /* verify found problems; also the catch-all */
	MC_EXIT_USAGE = 2,
	MC_EXIT_ORIGIN = 3,
	MC_EXIT_INTEGRITY = 4,
	MC_EXIT_NOSPACE = 5,
	MC_EXIT_LOCAL = 6, /* local I/O, permissions, index */
	MC_EXIT_NOTFOUND = 7,
	MC_EXIT_INTERRUPTED = 130,
};

#define MC_ERR_MAX 512

/* A message buffer. The first message set wins: the innermost, most precise failure. */
struct mc_err {
	char msg[MC_ERR_MAX];
};

/* Clears @err so that the next mc_err_set() is recorded. */
void mc_err_init(struct mc_err *err);

/*
 * Records a printf-style message in @err unless one is already there, and returns @code so that
 * callers can write `return mc_err_set(err, -EIO, "cannot write '%s': %s", ...)`.
 * @err may be NULL.
 */
int mc_err_set(struct mc_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like mc_err_set() but appends ": strerror(-code)" for -errno codes. */
int mc_err_errno(struct mc_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Maps a library return code to the documented exit status. */
int mc_exit_code(int code);

#endif
