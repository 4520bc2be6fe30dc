/*
 * Writer backends: io_uring and pwrite, one completion model (see writer.h).
 *
 * io_uring: every request is one SQE (IORING_OP_WRITE or IORING_OP_FSYNC with DATASYNC) whose
 * user_data points at the caller's struct mc_wreq. A short write is resubmitted from where it
 * stopped before the caller hears of it. An eventfd registered with the ring lets the engine
 * sleep in curl_multi_poll() and still wake for disk completions.
 *
 * pwrite: the request is carried out at queue time (looping over short writes and EINTR) and
 * put on a completion list, so the engine's reap path is the same for both backends.
 *
 * Fault injection for tests: MCACHE_FAIL_WRITE=N[:ERRNAME] makes the Nth write request and every
 * later one complete with -ERRNAME (EIO, ENOSPC, EDQUOT; default EIO), in both backends, without
 * touching the file, as a disk that fails or fills mid-download would.
 */
#include "writer.h"

#include "mc_alloc.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "mc_banned.h"

struct mc_writer {
	enum mc_writer_kind kind;
	unsigned long writes;  /* write requests queued so far */
	unsigned long fail_at; /* MCACHE_FAIL_WRITE: the first write to fail, 0 for none */
	int fail_errno;
	unsigned depth;
	unsigned inflight;
	/* io_uring */
	struct io_uring ring;
	int efd;
	unsigned unsubmitted;
	/* pwrite: completed requests waiting to be reaped, in order */
	struct mc_wreq *done_head, *done_tail;
};

const char *mc_writer_kind_name(enum mc_writer_kind k)
{
	switch (k) {
	case MC_WRITER_URING:
		return "io_uring";
	case MC_WRITER_PWRITE:
		return "pwrite";
	default:
		return "auto";
	}
}

int mc_writer_kind_parse(const char *s, enum mc_writer_kind *out)
{
	if (!strcmp(s, "auto"))
		*out = MC_WRITER_AUTO;
	else if (!strcmp(s, "io_uring") || !strcmp(s, "uring"))
		*out = MC_WRITER_URING;
	else if (!strcmp(s, "pwrite"))
		*out = MC_WRITER_PWRITE;
	else
		return MC_E_USAGE;
	return 0;
}

static int uring_init(struct mc_writer *w)
{
	int ret = io_uring_queue_init(w->depth, &w->ring, 0);

	if (ret < 0)
		return ret;
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0) {
		ret = -errno;
		goto out_ring;
	}
	ret = io_uring_register_eventfd(&w->ring, w->efd);
	if (ret < 0)
		goto out_efd;
	return 0;
out_efd:
	close(w->efd);
	w->efd = -1;
out_ring:
	io_uring_queue_exit(&w->ring);
	return ret;
}

static void fault_from_env(struct mc_writer *w)
{
	static const struct {
		const char *name;
		int err;
	} names[] = {{"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EDQUOT", EDQUOT}};
	const char *s = getenv("MCACHE_FAIL_WRITE"), *colon;
	char *end;

	if (!s || !*s)
		return;
	w->fail_at = strtoul(s, &end, 10);
	w->fail_errno = EIO;
	colon = strchr(s, ':');
	for (size_t i = 0; colon && i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(colon + 1, names[i].name))
			w->fail_errno = names[i].err;
}

/* True when the injected fault claims this write request. */
static bool fault_hits(struct mc_writer *w, const struct mc_wreq *r)
{
	return !r->sync && w->fail_at && w->writes >= w->fail_at;
}

int mc_writer_new(struct mc_writer **out, enum mc_writer_kind kind, unsigned depth,
		  struct mc_err *err)
{
	struct mc_writer *w = mc_calloc(1, sizeof(*w));
	int ret;

	if (!w)
		return mc_err_set(err, -ENOMEM, "cannot allocate the writer");
	w->depth = depth ? depth : 64;
	w->efd = -1;
	fault_from_env(w);
	w->kind = MC_WRITER_PWRITE;
	if (kind != MC_WRITER_PWRITE) {
		ret = uring_init(w);
		if (ret == 0) {
			w->kind = MC_WRITER_URING;
		} else if (kind == MC_WRITER_URING) {
			mc_free(w);
			return mc_err_errno(err, ret,
					    "cannot set up io_uring (try --writer pwrite)");
		}
	}
	*out = w;
	return 0;
}

enum mc_writer_kind mc_writer_kind(const struct mc_writer *w)
{
	return w->kind;
}

int mc_writer_eventfd(const struct mc_writer *w)
{
	return w->efd;
}

unsigned mc_writer_inflight(const struct mc_writer *w)
{
	return w->inflight;
}

/* Prepares the SQE for what is left of @r. */
static int uring_prep(struct mc_writer *w, struct mc_wreq *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (!sqe) {
		/* The SQ ring is full of unsubmitted entries: hand them over and try again. */
		int ret = io_uring_submit(&w->ring);
		if (ret < 0)
			return ret;
		w->unsubmitted = 0;
		sqe = io_uring_get_sqe(&w->ring);
		if (!sqe)
			return -EBUSY;
	}
	if (r->sync)
		io_uring_prep_fsync(sqe, r->fd, IORING_FSYNC_DATASYNC);
	else
		io_uring_prep_write(sqe, r->fd, r->buf + r->done, (unsigned)(r->len - r->done),
				    r->off + r->done);
	io_uring_sqe_set_data(sqe, r);
	w->unsubmitted++;
	return 0;
}

/* The pwrite backend: do it now, remember the result for reap. */
static int pwrite_do(struct mc_wreq *r)
{
	if (r->sync)
		return fdatasync(r->fd) < 0 ? -errno : 0;
	while (r->done < r->len) {
		ssize_t n =
		    pwrite(r->fd, r->buf + r->done, r->len - r->done, (off_t)(r->off + r->done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		r->done += (size_t)n;
	}
	return 0;
}

int mc_writer_queue(struct mc_writer *w, struct mc_wreq *r)
{
	int ret;

	if (w->inflight >= w->depth)
		return -EBUSY;
	r->done = 0;
	r->next = NULL;
	r->res = 0;
	if (!r->sync)
		w->writes++;
	if (w->kind == MC_WRITER_URING && !fault_hits(w, r)) {
		ret = uring_prep(w, r);
		if (ret < 0)
			return ret;
	} else {
		r->res = fault_hits(w, r) ? -w->fail_errno : pwrite_do(r);
		if (w->done_tail)
			w->done_tail->next = r;
		else
			w->done_head = r;
		w->done_tail = r;
	}
	w->inflight++;
	return 0;
}

int mc_writer_submit(struct mc_writer *w)
{
	int ret;

	if (w->kind != MC_WRITER_URING || !w->unsubmitted)
		return 0;
	ret = io_uring_submit(&w->ring);
	if (ret < 0)
		return ret;
	w->unsubmitted = 0;
	return 0;
}

static int uring_reap(struct mc_writer *w, bool wait,
		      void (*cb)(void *ctx, struct mc_wreq *r, int res), void *ctx)
{
	struct io_uring_cqe *cqe;
	uint64_t junk;
	int n = 0, ret;

	if (w->efd >= 0 && read(w->efd, &junk, sizeof(junk)) < 0 && errno != EAGAIN)
		return -errno;
	for (;;) {
		if (wait && n == 0 && w->inflight) {
			ret = mc_writer_submit(w);
			if (ret < 0)
				return ret;
			ret = io_uring_wait_cqe(&w->ring, &cqe);
		} else {
			ret = io_uring_peek_cqe(&w->ring, &cqe);
		}
		if (ret == -EAGAIN)
			break;
		if (ret == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		struct mc_wreq *r = io_uring_cqe_get_data(cqe);
		int res = cqe->res;

		io_uring_cqe_seen(&w->ring, cqe);
		if (!r->sync && res > 0 && r->done + (size_t)res < r->len) {
			/* A short write: queue the rest; the caller hears only of the whole. */
			r->done += (size_t)res;
			ret = uring_prep(w, r);
			if (ret == 0)
				continue;
			res = ret;
		} else if (!r->sync && res == 0 && r->len) {
			res = -EIO;
		}
		if (res >= 0) {
			r->done = r->len;
			res = 0;
		}
		w->inflight--;
		n++;
		cb(ctx, r, res);
	}
	return n;
}

int mc_writer_reap(struct mc_writer *w, bool wait,
		   void (*cb)(void *ctx, struct mc_wreq *r, int res), void *ctx)
{
	int n = 0;

	if (w->kind == MC_WRITER_URING) {
		n = uring_reap(w, wait && !w->done_head, cb, ctx);
		if (n < 0)
			return n;
	}
	/* The pwrite backend's completions, and injected faults of either backend. */
	while (w->done_head) {
		struct mc_wreq *r = w->done_head;
		int res = r->res;

		w->done_head = r->next;
		if (!w->done_head)
			w->done_tail = NULL;
		w->inflight--;
		n++;
		cb(ctx, r, res);
	}
	return n;
}

void mc_writer_free(struct mc_writer *w)
{
	if (!w)
		return;
	if (w->kind == MC_WRITER_URING) {
		io_uring_queue_exit(&w->ring);
		if (w->efd >= 0)
			close(w->efd);
	}
	mc_free(w);
}
