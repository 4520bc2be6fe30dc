/*
 * The writer: asynchronous positional writes and fdatasyncs with two backends behind one
 * interface. io_uring (liburing) is used where the kernel and the seccomp profile allow it;
 * pwrite(2) is the fallback (containerd's default seccomp profile forbids io_uring, so in a
 * pod this is the normal case). The engine sees the same completion model from both: queue
 * requests, then reap completions; the pwrite backend simply completes at queue time.
 *
 * Internal to fetcher/.
 */
#ifndef MC_WRITER_H
#define MC_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mc_err.h"
#include "mc_fetch.h"

struct mc_writer;

/*
 * One request. The caller owns the memory and keeps it (and buf) alive until its completion
 * is reaped; the writer keeps its own progress in it, so a short write is resumed internally
 * and the caller sees one completion per request.
 */
struct mc_wreq {
	int fd;
	bool sync;	      /* fdatasync instead of a write */
	const char *buf;      /* write: the bytes */
	size_t len;	      /* write: how many */
	uint64_t off;	      /* write: where */
	size_t done;	      /* writer-private: bytes written so far */
	int res;	      /* writer-private: the pwrite backend's result, 0 or -errno */
	void *tag;	      /* the caller's */
	struct mc_wreq *next; /* writer-private: completion list of the pwrite backend */
};

/*
 * Creates a writer of @kind with room for @depth requests in flight. MC_WRITER_AUTO tries
 * io_uring and falls back to pwrite when io_uring_queue_init() fails. Returns 0 or a negative
 * code with @err set (MC_WRITER_URING asked for explicitly and unavailable is an error).
 */
int mc_writer_new(struct mc_writer **out, enum mc_writer_kind kind, unsigned depth,
		  struct mc_err *err);

/* The backend in use: MC_WRITER_URING or MC_WRITER_PWRITE. */
enum mc_writer_kind mc_writer_kind(const struct mc_writer *w);

/* A file descriptor that becomes readable when completions are ready, or -1 (pwrite). */
int mc_writer_eventfd(const struct mc_writer *w);

/* Queues @r. Returns 0, or -EBUSY when @depth requests are already in flight. */
int mc_writer_queue(struct mc_writer *w, struct mc_wreq *r);

/* Hands queued requests to the kernel. Returns 0 or -errno. */
int mc_writer_submit(struct mc_writer *w);

/*
 * Calls @cb for each completed request with res = 0 or -errno; with @wait, blocks until at least
 * one completion when any request is in flight. Returns the number reaped or -errno.
 */
int mc_writer_reap(struct mc_writer *w, bool wait,
		   void (*cb)(void *ctx, struct mc_wreq *r, int res), void *ctx);

/* Requests queued or in flight and not yet reaped. */
unsigned mc_writer_inflight(const struct mc_writer *w);

/* Frees @w; every request must have been reaped. NULL is fine. */
void mc_writer_free(struct mc_writer *w);

#endif
