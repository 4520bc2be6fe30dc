/*
 * The transfer engine behind mc_fetch_run(): many HTTP range requests over one libcurl multi
 * handle, bytes hashed as they stream and handed to the writer, progress reported per block.
 *
 * Shape of a run:
 *  - Each file starts with a probe: a GET for its first chunk (Range: bytes=0-(C-1)). The probe's
 *    response says the size, the ETag and whether ranges work; a file smaller than a chunk is
 *    fetched whole by its probe, so a small file costs one request. Then ops->open gets the
 *    destination and the blocks already held (resume).
 *  - The planner cuts the blocks not yet held into ranges of at most one chunk; free transfer
 *    slots take ranges of files already open first (so files finish, and publish, early), then
 *    probes of files not yet started. Every range after the probe carries If-Match (strong
 *    ETag) or If-Range (Last-Modified), and its 206 must say exactly the bytes asked for.
 *  - The write callback only validates, hashes (XXH3-128 per 1 MiB block) and copies into a
 *    pooled buffer; a full buffer is queued to the writer. When the pool is empty the transfer
 *    is paused (CURL_WRITEFUNC_PAUSE) until a write completes: memory is bounded by
 *    connections, never by file size.
 *  - A range is complete when its body is whole and its writes are done. Complete ranges wait
 *    in a per-file list for an fdatasync (at most every SYNC_INTERVAL_MS, and at the file's end);
 *    after it, ops->blocks_durable records them, so a killed run resumes from there.
 *  - On the first error everything stops: transfers are removed, writes drained, whole blocks
 *    already received are synced and reported durable, and the error is returned.
 */
#include "mc_fetch.h"

#include "mc_alloc.h"
#include "mc_util.h"
#include "source_int.h"
#include "writer.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "mc_banned.h"

/* A pooled write buffer. It divides MC_HASH_BLOCK, so a block's end always ends a buffer. */
#define BUF_SIZE	     (256u << 10)
#define SYNC_INTERVAL_MS     250
#define SYNC_BLOCKS	     64 /* a file syncs once this many blocks wait, whatever the time */
#define CHECKPOINT_MS	     50 /* how often long ranges hand over their written blocks */
#define PROGRESS_INTERVAL_MS 200
#define RATE_BURST_MS	     100
#define STEAL_MIN_AGE_MS     500
#define STEAL_MIN_LEFT_MS    1000
#define RETRY_BASE_MS	     250
#define RETRY_CAP_MS	     10000
#define MAX_RETRY_AFTER_S    120

_Static_assert(MC_HASH_BLOCK % BUF_SIZE == 0, "buffers must tile hash blocks");

static volatile sig_atomic_t interrupted;

struct engine;
struct range;

struct buf {
	struct mc_wreq req; /* req.buf points at data, req.len is the bytes filled */
	struct range *range;
	struct buf *next_free;
	char data[];
};

/* A byte range of one file in flight: its body, then its writes. */
struct range {
	struct mc_fetch_file *f;
	uint64_t first_block, nblocks;
	uint64_t start, end;	/* bytes [start, end) */
	unsigned writes;	/* buffers queued and not yet completed */
	uint64_t bad_from;	/* the lowest offset of a failed write, UINT64_MAX when none */
	bool body_done;		/* no more bytes will come for it */
	bool probe;		/* the first request of the file: the size is not known yet */
	bool norange;		/* a probe sent without Range (after a bare 416: an empty object) */
	unsigned attempt;	/* 0 for the first try */
	uint64_t not_before_ms; /* a retry waits until then */
	struct range *next;	/* in the retry queue */
};

/* A transfer slot: one easy handle, reused for range after range. */
struct xfer {
	struct engine *e;
	CURL *easy;
	struct range *r; /* NULL when the slot is idle */
	bool checked;	 /* the response headers were looked at */
	bool accepted;	 /* ... and found right: the body is the range's bytes */
	bool cancel;	 /* aborted on purpose (skip, or overlap with held blocks) */
	bool discard;	 /* the body is not the object (an empty file's 416) */
	bool paused;
	bool stop;	      /* the range was shortened (split) and is whole: end the transfer */
	bool restart;	      /* try the range again at once, not counted as a retry */
	uint64_t pos;	      /* absolute offset of the next body byte */
	uint64_t req_end;     /* the end of the bytes requested (a split may shorten r->end) */
	uint64_t accepted_ms; /* when the response was accepted, for the transfer's rate */
	uint64_t block;	      /* the block being hashed */
	XXH3_state_t *hs;
	struct buf *buf; /* being filled */
	struct curl_slist *hdrs;
	/* Headers of the last response (redirects reset them). */
	char content_range[128];
	char etag[256];
	char last_modified[64];
	char encoding[64];
	char retry_after[64];
	int64_t content_length;
	char errbuf[CURL_ERROR_SIZE];
	/* Why this transfer failed, and whether trying again may help. */
	int err_code;
	bool err_transient;
	char err_msg[300];
};

enum fstate { F_WAIT, F_PROBING, F_OPEN, F_DONE, F_SKIPPED };

/* Engine state per file (struct mc_fetch_priv is its public, opaque name). */
struct mc_fetch_priv {
	struct mc_fetch_file *f;
	enum fstate state;
	uint8_t *planned; /* per block: held, or taken by a range */
	uint64_t cursor;  /* every block before it is planned */
	unsigned ranges;  /* ranges not yet complete */
	struct mc_block_span *pending, *syncing;
	size_t npending, nsyncing, cap;
	bool sync_inflight;
	struct mc_wreq sync;
	uint64_t last_sync_ms;
};

struct engine {
	struct mc_fetch_opts o;
	const struct mc_fetch_ops *ops;
	void *ctx;
	struct mc_err *err;
	int failed; /* the first error's code, 0 while all is well */

	struct mc_fetch_file *const *files;
	size_t nfiles, next_probe, first_open, ndone;
	struct mc_fetch_priv *fs;

	CURLM *multi;
	struct xfer *x;
	unsigned nx;

	struct mc_writer *w;
	struct buf *free_bufs;
	unsigned nbufs, max_bufs, npaused;

	struct range *retry; /* ranges waiting to be tried again, unordered */
	struct mc_fetch_stats st;
	uint64_t rng; /* jitter for backoff */

	uint64_t bytes_done, bytes_total, last_progress_ms, last_checkpoint_ms;
	char *vbuf; /* one hash block, for check_held() */
	/* --max-rate: a token bucket shared by every transfer, in bytes. */
	double tokens;
	uint64_t rate_ms;
};

static int fail(struct engine *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct engine *e, int code, const char *fmt, ...)
{
	va_list ap;

	if (e->failed)
		return e->failed;
	e->failed = code;
	if (e->err && !e->err->msg[0]) {
		va_start(ap, fmt);
		vsnprintf(e->err->msg, sizeof(e->err->msg), fmt, ap);
		va_end(ap);
	}
	return code;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/*
 * Records why @x failed, once; the transfer is then aborted and xfer_finish() decides between a
 * retry (@transient, attempts left) and failing the run. Returns -1 for the callers' convenience.
 */
static int xfer_error(struct xfer *x, int code, bool transient, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int xfer_error(struct xfer *x, int code, bool transient, const char *fmt, ...)
{
	va_list ap;

	if (x->err_code)
		return -1;
	x->err_code = code;
	x->err_transient = transient;
	va_start(ap, fmt);
	vsnprintf(x->err_msg, sizeof(x->err_msg), fmt, ap);
	va_end(ap);
	return -1;
}

static bool has_validator(const struct mc_remote_info *ri)
{
	return ri->etag[0] || ri->last_modified[0];
}

/* Statuses worth another try: the origin is busy or briefly broken, not saying no. */
static bool status_transient(long code)
{
	return code == 408 || code == 425 || code == 429 || (code >= 500 && code <= 599);
}

/* ---- Bandwidth cap ---- */

/*
 * One bucket for the whole run, refilled at max_rate and holding at most RATE_BURST_MS of it
 * (never less than two buffers, so that any write callback can be served). A per-transfer limit
 * would let every new range start at full speed; this one holds the run's total.
 */
static double rate_cap(const struct engine *e)
{
	double cap = (double)e->o.max_rate * RATE_BURST_MS / 1000.0;

	return cap < 2.0 * BUF_SIZE ? 2.0 * BUF_SIZE : cap;
}

static void rate_refill(struct engine *e)
{
	uint64_t now = mc_now_ms();

	e->tokens += (double)e->o.max_rate * (double)(now - e->rate_ms) / 1000.0;
	e->rate_ms = now;
	if (e->tokens > rate_cap(e))
		e->tokens = rate_cap(e);
}

/* ---- Buffers ---- */

static bool bufs_available(const struct engine *e, unsigned n)
{
	unsigned nfree = 0;

	for (const struct buf *b = e->free_bufs; b && nfree < n; b = b->next_free)
		nfree++;
	return nfree + (e->max_bufs - e->nbufs) >= n;
}

static struct buf *buf_get(struct engine *e, struct range *r, uint64_t off)
{
	struct buf *b = e->free_bufs;

	if (b) {
		e->free_bufs = b->next_free;
	} else {
		if (e->nbufs >= e->max_bufs)
			return NULL;
		b = mc_malloc(sizeof(*b) + BUF_SIZE);
		if (!b)
			return NULL;
		e->nbufs++;
	}
	memset(&b->req, 0, sizeof(b->req));
	b->req.buf = b->data;
	b->req.off = off;
	b->req.tag = b;
	b->range = r;
	return b;
}

static void buf_put(struct engine *e, struct buf *b)
{
	b->next_free = e->free_bufs;
	e->free_bufs = b;
}

/* Queues the slot's buffer to the writer, or drops it when empty. */
static void buf_flush(struct engine *e, struct xfer *x)
{
	struct buf *b = x->buf;
	int ret;

	if (!b)
		return;
	x->buf = NULL;
	if (!b->req.len) {
		buf_put(e, b);
		return;
	}
	b->req.fd = b->range->f->fd;
	ret = mc_writer_queue(e->w, &b->req);
	if (ret < 0) {
		buf_put(e, b);
		fail(e, ret, "cannot queue a write for '%s': %s", b->range->f->label,
		     strerror(-ret));
		return;
	}
	b->range->writes++;
}

/* ---- Ranges, durability, completion ---- */

static int span_push(struct mc_fetch_priv *p, uint64_t first, uint64_t count)
{
	if (!count)
		return 0;
	if (p->npending &&
	    p->pending[p->npending - 1].first + p->pending[p->npending - 1].count == first) {
		p->pending[p->npending - 1].count += count;
		return 0;
	}
	if (p->npending == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 8;
		struct mc_block_span *a = mc_realloc(p->pending, cap * sizeof(*a));
		struct mc_block_span *b;

		if (!a)
			return -ENOMEM;
		p->pending = a;
		b = mc_realloc(p->syncing, cap * sizeof(*b));
		if (!b)
			return -ENOMEM;
		p->syncing = b;
		p->cap = cap;
	}
	p->pending[p->npending].first = first;
	p->pending[p->npending].count = count;
	p->npending++;
	return 0;
}

/*
 * A range whose body and writes are both finished joins its file's list awaiting a sync. Only
 * blocks whose bytes all reached the file count: a block hashed in memory but written by a
 * write that failed would be recorded as held while the disk has something else.
 */
static void range_maybe_complete(struct engine *e, struct range *r)
{
	struct mc_fetch_priv *p;

	if (!r->body_done || r->writes)
		return;
	p = r->f->priv;
	if (r->bad_from != UINT64_MAX) {
		uint64_t good = r->bad_from / MC_HASH_BLOCK;

		r->nblocks = good > r->first_block ? min_u64(r->nblocks, good - r->first_block) : 0;
	}
	if (span_push(p, r->first_block, r->nblocks) < 0)
		fail(e, -ENOMEM, "cannot record progress of '%s'", r->f->label);
	p->ranges--;
	mc_free(r);
}

static bool file_fully_planned(const struct mc_fetch_priv *p)
{
	return p->cursor >= p->f->nblocks;
}

static int file_maybe_done(struct engine *e, struct mc_fetch_priv *p)
{
	struct mc_fetch_file *f = p->f;
	int ret;

	if (p->state != F_OPEN || !file_fully_planned(p) || p->ranges || p->npending ||
	    p->sync_inflight || e->failed)
		return 0;
	mc_digest_combine(f->block_digests, f->nblocks, f->remote.size, f->digest);
	ret = e->ops->done(e->ctx, f, e->err);
	if (ret < 0)
		return fail(e, ret, "cannot publish '%s'", f->label);
	p->state = F_DONE;
	e->ndone++;
	return 0;
}

/* Starts an fdatasync for the pending spans of @p when due (or @force). */
static void sync_maybe_start(struct engine *e, struct mc_fetch_priv *p, uint64_t now, bool force)
{
	bool finished = file_fully_planned(p) && !p->ranges;
	uint64_t pending = 0;
	int ret;

	if (p->sync_inflight || !p->npending)
		return;
	/* Due after SYNC_INTERVAL_MS, or sooner at high rates: what a kill loses is bounded in
	 * bytes as well as in time. */
	for (size_t i = 0; i < p->npending; i++)
		pending += p->pending[i].count;
	if (!force && !finished && now - p->last_sync_ms < SYNC_INTERVAL_MS &&
	    pending < SYNC_BLOCKS)
		return;
	memcpy(p->syncing, p->pending, p->npending * sizeof(*p->pending));
	p->nsyncing = p->npending;
	p->npending = 0;
	memset(&p->sync, 0, sizeof(p->sync));
	p->sync.fd = p->f->fd;
	p->sync.sync = true;
	p->sync.tag = p;
	ret = mc_writer_queue(e->w, &p->sync);
	if (ret == -EBUSY) {
		/* The ring is full of writes: put the spans back and try on a later pass. */
		memcpy(p->pending, p->syncing, p->nsyncing * sizeof(*p->pending));
		p->npending = p->nsyncing;
		p->nsyncing = 0;
		return;
	}
	if (ret < 0) {
		fail(e, ret, "cannot sync '%s': %s", p->f->label, strerror(-ret));
		return;
	}
	p->sync_inflight = true;
	p->last_sync_ms = now;
}

static void sync_completed(struct engine *e, struct mc_fetch_priv *p, int res)
{
	struct mc_fetch_file *f = p->f;
	int ret;

	p->sync_inflight = false;
	if (res < 0) {
		fail(e, res, "cannot sync '%s': %s", f->label, strerror(-res));
		return;
	}
	for (size_t i = 0; i < p->nsyncing; i++)
		memset(f->block_done + p->syncing[i].first, 1, (size_t)p->syncing[i].count);
	ret = e->ops->blocks_durable(e->ctx, f, p->syncing, p->nsyncing, e->err);
	p->nsyncing = 0;
	if (ret < 0)
		fail(e, ret, "cannot record progress of '%s'", f->label);
}

static void on_write_done(void *ctx, struct mc_wreq *req, int res)
{
	struct engine *e = ctx;
	struct buf *b;
	struct range *r;

	if (req->sync) {
		sync_completed(e, req->tag, res);
		return;
	}
	b = req->tag;
	r = b->range;
	if (res < 0) {
		fail(e, res, "cannot write '%s': %s", r->f->label, strerror(-res));
		r->bad_from = min_u64(r->bad_from, b->req.off);
	}
	buf_put(e, b);
	r->writes--;
	range_maybe_complete(e, r);
}

/* ---- Response parsing ---- */

static void copy_trimmed(char *dst, size_t cap, const char *v, size_t n)
{
	while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t'))
		n--;
	while (n && (*v == ' ' || *v == '\t')) {
		v++;
		n--;
	}
	if (n >= cap)
		n = cap - 1; /* a value too long for its field is reported by the checks below */
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	size_t n = size * nmemb;
	const char *colon;
	char num[32];

	if (n >= 5 && !memcmp(p, "HTTP/", 5)) {
		/* A new response (after a redirect or 100 Continue): forget the last one's. */
		x->content_range[0] = x->etag[0] = x->last_modified[0] = x->encoding[0] = '\0';
		x->retry_after[0] = '\0';
		x->content_length = -1;
		return n;
	}
	colon = memchr(p, ':', n);
	if (!colon)
		return n;
	size_t klen = (size_t)(colon - p), vlen = n - klen - 1;
	const char *v = colon + 1;

#define IS(name) (klen == sizeof(name) - 1 && !strncasecmp(p, name, klen))
	if (IS("content-range")) {
		copy_trimmed(x->content_range, sizeof(x->content_range), v, vlen);
	} else if (IS("etag")) {
		copy_trimmed(x->etag, sizeof(x->etag), v, vlen);
	} else if (IS("last-modified")) {
		copy_trimmed(x->last_modified, sizeof(x->last_modified), v, vlen);
	} else if (IS("retry-after")) {
		copy_trimmed(x->retry_after, sizeof(x->retry_after), v, vlen);
	} else if (IS("content-encoding")) {
		copy_trimmed(x->encoding, sizeof(x->encoding), v, vlen);
	} else if (IS("content-length")) {
		uint64_t cl;
		copy_trimmed(num, sizeof(num), v, vlen);
		x->content_length = mc_parse_uint(num, 0, INT64_MAX, &cl) == 0 ? (int64_t)cl : -2;
	}
#undef IS
	return n;
}

/* Parses "bytes A-B/T" (T may be "*" → *total = UINT64_MAX) or "bytes *\/T" (A = B = UINT64_MAX).
 */
static int parse_content_range(const char *s, uint64_t *a, uint64_t *b, uint64_t *total)
{
	char buf[128];
	char *dash, *slash;

	if (strncasecmp(s, "bytes ", 6))
		return -1;
	snprintf(buf, sizeof(buf), "%s", s + 6);
	slash = strchr(buf, '/');
	if (!slash)
		return -1;
	*slash = '\0';
	if (!strcmp(slash + 1, "*"))
		*total = UINT64_MAX;
	else if (mc_parse_uint(slash + 1, 0, INT64_MAX, total))
		return -1;
	if (!strcmp(buf, "*")) {
		*a = *b = UINT64_MAX;
		return 0;
	}
	dash = strchr(buf, '-');
	if (!dash)
		return -1;
	*dash = '\0';
	if (mc_parse_uint(buf, 0, INT64_MAX, a) || mc_parse_uint(dash + 1, 0, INT64_MAX, b) ||
	    *b < *a)
		return -1;
	return 0;
}

static uint64_t blocks_of(uint64_t bytes)
{
	return (bytes + MC_HASH_BLOCK - 1) / MC_HASH_BLOCK;
}

/*
 * Blocks held from an earlier run are read back and rehashed before they are trusted: a
 * recorded block whose bytes are not on disk (a lying disk cache across a power cut, a bug)
 * must cost a re-download, never a published file that differs from its digest. Blocks that
 * do not match are fetched again. This reads the partial file once, and only on a resume.
 */
static int check_held(struct engine *e, struct mc_fetch_file *f)
{
	XXH128_canonical_t c;

	for (uint64_t b = 0; b < f->nblocks; b++) {
		uint64_t off = b * MC_HASH_BLOCK;
		size_t len = (size_t)min_u64(MC_HASH_BLOCK, f->remote.size - off), got = 0;

		if (!f->block_done[b])
			continue;
		if (!e->vbuf && !(e->vbuf = mc_malloc(MC_HASH_BLOCK)))
			return fail(e, -ENOMEM, "cannot allocate a buffer for '%s'", f->label);
		while (got < len) {
			ssize_t n = pread(f->fd, e->vbuf + got, len - got, (off_t)(off + got));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return fail(e, -errno, "cannot read back '%s': %s", f->label,
					    strerror(errno));
			if (n == 0)
				break; /* shorter than recorded: the block is not held */
			got += (size_t)n;
		}
		XXH128_canonicalFromHash(&c, XXH3_128bits(e->vbuf, got));
		e->st.held_checked++;
		if (got < len ||
		    memcmp(c.digest, f->block_digests + b * MC_DIGEST_LEN, MC_DIGEST_LEN)) {
			f->block_done[b] = 0;
			e->st.held_refetched++;
		}
	}
	return 0;
}

/* The probe's response: learn the object, open the destination, decide what the probe covers. */
static int check_probe(struct engine *e, struct xfer *x, long code)
{
	struct mc_fetch_file *f = x->r->f;
	struct mc_fetch_priv *p = f->priv;
	struct range *r = x->r;
	uint64_t a, b, total, chunk = e->o.chunk_size;
	int ret;

	if (code == 304) {
		/* Unchanged since the caller's copy: no body, and the caller decides. */
		f->remote = f->known;
		f->not_modified = true;
		x->discard = true;
	} else if (code == 206) {
		if (parse_content_range(x->content_range, &a, &b, &total) || total == UINT64_MAX ||
		    a != 0 || b != min_u64(chunk, total) - 1)
			return xfer_error(x, MC_E_ORIGIN, true,
					  "origin sent a bad Content-Range for '%s': '%s'",
					  f->label, x->content_range);
		f->remote.ranges = true;
		f->remote.size = total;
	} else if (code == 200) {
		if (x->content_length < 0)
			return xfer_error(x, MC_E_ORIGIN, false,
					  "origin sent no Content-Length for '%s'", f->label);
		f->remote.ranges = false;
		f->remote.size = (uint64_t)x->content_length;
	} else if (code == 416 && !parse_content_range(x->content_range, &a, &b, &total) &&
		   a == UINT64_MAX && total == 0) {
		/* Content-Range "bytes *\/0": the object is empty, the body an error page. */
		f->remote.ranges = true;
		f->remote.size = 0;
		x->discard = true;
	} else if (code == 416 && !r->norange) {
		/*
		 * 416 to "bytes=0-..." without "bytes *\/0" (Ceph RGW, for one): the object can
		 * only be empty. Ask again without a Range; the 200 says so.
		 */
		r->norange = true;
		x->restart = true;
		return xfer_error(x, MC_E_ORIGIN, true, "HTTP 416 from '%s'", f->label);
	} else {
		return xfer_error(x, MC_E_ORIGIN, status_transient(code), "HTTP %ld from '%s'",
				  code, f->label);
	}
	if (f->max_size && f->remote.size > f->max_size)
		return xfer_error(x, MC_E_ORIGIN, false,
				  "refusing '%s': %" PRIu64 " bytes is more than the %" PRIu64
				  " expected",
				  f->label, f->remote.size, f->max_size);
	if (strlen(x->etag) >= sizeof(x->etag) - 1 ||
	    strlen(x->last_modified) >= sizeof(x->last_modified) - 1)
		return xfer_error(x, MC_E_ORIGIN, false,
				  "origin sent an oversized validator header for '%s'", f->label);
	if (!f->not_modified) {
		snprintf(f->remote.etag, sizeof(f->remote.etag), "%s", x->etag);
		snprintf(f->remote.last_modified, sizeof(f->remote.last_modified), "%s",
			 x->last_modified);
	}

	f->nblocks = blocks_of(f->remote.size);
	f->block_done = mc_calloc((size_t)f->nblocks, 1);
	f->block_digests = mc_calloc((size_t)f->nblocks, MC_DIGEST_LEN);
	p->planned = mc_calloc((size_t)f->nblocks, 1);
	if (!f->block_done || !f->block_digests || !p->planned)
		return fail(e, -ENOMEM, "cannot allocate the block map of '%s'", f->label);

	ret = e->ops->open(e->ctx, f, e->err);
	if (ret < 0)
		return fail(e, ret, "cannot open a temporary file for '%s'", f->label);
	if (f->skip) {
		p->state = F_SKIPPED;
		e->ndone++;
		x->cancel = true;
		return 0;
	}
	e->bytes_total += f->remote.size;
	p->state = F_OPEN;
	/* Without ranges there is one stream, and it rewrites everything. */
	if (!f->remote.ranges)
		memset(f->block_done, 0, (size_t)f->nblocks);
	else if (check_held(e, f) < 0)
		return -1;
	for (uint64_t i = 0; i < f->nblocks; i++)
		if (f->block_done[i])
			e->bytes_done += min_u64(MC_HASH_BLOCK, f->remote.size - i * MC_HASH_BLOCK);
	memcpy(p->planned, f->block_done, (size_t)f->nblocks);

	if (f->not_modified) {
		r->end = 0; /* the probe brought nothing: plan every block not held */
		r->nblocks = 0;
		return 0;
	}
	r->end = f->remote.ranges ? min_u64(chunk, f->remote.size) : f->remote.size;
	r->nblocks = blocks_of(r->end);
	x->req_end = r->end; /* what the answer holds, whatever the request asked */
	for (uint64_t i = 0; i < r->nblocks; i++) {
		if (f->block_done[i]) {
			/* A resume holds part of what the probe brings: plan from the map. */
			x->cancel = true;
			return 0;
		}
	}
	memset(p->planned, 1, (size_t)r->nblocks);
	p->cursor = r->nblocks;
	return 0;
}

/*
 * Validates the response of @x at its first body byte (or its end, for an empty body). A wrong
 * answer is recorded with xfer_error() and classified: a busy origin or a garbled range may do
 * better on another try; a refusal, an encoded body or a changed object will not.
 */
static int check_response(struct engine *e, struct xfer *x)
{
	struct range *r = x->r;
	struct mc_fetch_file *f = r->f;
	uint64_t a, b, total;
	long code = 0;
	int ret;

	x->checked = true;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
	if (code == 412)
		return xfer_error(x, MC_E_CHANGED, false,
				  "'%s' changed on the origin during the download", f->label);
	/* Statuses before encodings: an error page may well be compressed. */
	if (code != 200 && code != 206 &&
	    !(r->probe && (code == 416 || (code == 304 && has_validator(&f->known)))))
		return xfer_error(x, MC_E_ORIGIN, status_transient(code), "HTTP %ld from '%s'",
				  code, f->label);
	if (x->encoding[0] && strcasecmp(x->encoding, "identity"))
		return xfer_error(x, MC_E_ORIGIN, false,
				  "origin sent '%s' encoded (%s); mcache needs the stored bytes",
				  f->label, x->encoding);
	if (r->probe) {
		ret = check_probe(e, x, code);
		if (ret < 0 || x->cancel)
			return ret;
	} else {
		bool same = (!f->remote.etag[0] || !strcmp(f->remote.etag, x->etag)) &&
			    (!f->remote.last_modified[0] || !x->last_modified[0] ||
			     !strcmp(f->remote.last_modified, x->last_modified));

		if (!same)
			return xfer_error(x, MC_E_CHANGED, false,
					  "'%s' changed on the origin during the download",
					  f->label);
		if (code != 206)
			/* The same object, but the origin ignored the Range: it may not next time.
			 */
			return xfer_error(x, MC_E_ORIGIN, true,
					  "origin answered a range of '%s' with HTTP %ld", f->label,
					  code);
		if (parse_content_range(x->content_range, &a, &b, &total) || a != r->start ||
		    b != r->end - 1 || total != f->remote.size)
			return xfer_error(x, MC_E_ORIGIN, true,
					  "origin sent a bad Content-Range for '%s': '%s'",
					  f->label, x->content_range);
	}
	x->pos = r->start;
	x->block = r->first_block;
	XXH3_128bits_reset(x->hs);
	x->accepted = true;
	x->accepted_ms = mc_now_ms();
	return 0;
}

/* ---- The write callback: validate, hash, copy ---- */

static void hash_bytes(struct xfer *x, const char *p, size_t n)
{
	struct mc_fetch_file *f = x->r->f;
	uint64_t pos = x->pos;

	while (n) {
		uint64_t bend = min_u64((x->block + 1) * MC_HASH_BLOCK, f->remote.size);
		size_t take = (size_t)min_u64(n, bend - pos);

		XXH3_128bits_update(x->hs, p, take);
		pos += take;
		p += take;
		n -= take;
		if (pos == bend) {
			XXH128_canonical_t c;

			XXH128_canonicalFromHash(&c, XXH3_128bits_digest(x->hs));
			memcpy(f->block_digests + x->block * MC_DIGEST_LEN, c.digest,
			       MC_DIGEST_LEN);
			x->block++;
			XXH3_128bits_reset(x->hs);
		}
	}
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
	struct xfer *x = ud;
	struct engine *e = x->e;
	size_t n = size * nmemb, room;
	struct range *r = x->r;

	if (e->failed || x->cancel || x->stop)
		return 0;
	if (!x->checked && (check_response(e, x) < 0 || x->cancel))
		return 0;
	if (x->discard)
		return n;
	if (n > x->req_end - x->pos) {
		xfer_error(x, MC_E_ORIGIN, true, "origin sent more bytes than asked for '%s'",
			   r->f->label);
		return 0;
	}
	if (n > r->end - x->pos) {
		/* The range was split while in flight: keep its part, drop the rest, and stop. */
		n = (size_t)(r->end - x->pos);
		x->stop = true;
		if (!n)
			return 0;
	}
	room = x->buf ? BUF_SIZE - x->buf->req.len : 0;
	if (e->o.max_rate)
		rate_refill(e);
	if ((n > room && !bufs_available(e, (unsigned)((n - room + BUF_SIZE - 1) / BUF_SIZE))) ||
	    (e->o.max_rate && e->tokens < (double)n)) {
		x->paused = true;
		e->npaused++;
		return CURL_WRITEFUNC_PAUSE;
	}
	if (e->o.max_rate)
		e->tokens -= (double)n;
	hash_bytes(x, p, n);
	for (size_t left = n; left;) {
		size_t take;

		if (!x->buf) {
			x->buf = buf_get(e, r, x->pos);
			if (!x->buf) {
				fail(e, -ENOMEM, "cannot allocate a buffer for '%s'", r->f->label);
				return 0;
			}
		}
		take = (size_t)min_u64(left, BUF_SIZE - x->buf->req.len);
		memcpy(x->buf->data + x->buf->req.len, p, take);
		x->buf->req.len += take;
		x->pos += take;
		p += take;
		left -= take;
		if (x->buf->req.len == BUF_SIZE || x->pos == r->end)
			buf_flush(e, x);
	}
	r->f->bytes_fetched += n;
	e->bytes_done += n;
	e->st.bytes += n;
	return x->stop ? size * nmemb : n;
}

/* ---- Scheduling ---- */

static int xfer_setup(struct engine *e, struct xfer *x)
{
	CURL *h = curl_easy_init();

	if (!h)
		return -ENOMEM;
	x->easy = h;
	x->hs = XXH3_createState();
	if (!x->hs)
		return -ENOMEM;
	curl_easy_setopt(h, CURLOPT_PRIVATE, x);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_BUFFERSIZE, (long)BUF_SIZE);
	/* HTTP/1.1 on purpose: origins cap bandwidth per connection, so ranges need their own. */
	curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mcache/" MCACHE_VERSION);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)e->o.connect_timeout_s);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)e->o.stall_timeout_s);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	return 0;
}

static int xfer_start(struct engine *e, struct xfer *x, struct range *r)
{
	struct mc_fetch_file *f = r->f;
	char hdr[320], rng[64];
	CURLMcode mc;

	x->r = r;
	x->checked = x->accepted = x->cancel = x->discard = x->paused = x->stop = false;
	x->restart = false;
	x->pos = r->start;
	x->req_end = r->end;
	x->block = r->first_block;
	x->errbuf[0] = '\0';
	x->err_code = 0;
	x->err_transient = false;
	x->err_msg[0] = '\0';
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	/* Pin every range after the probe to the version the probe saw. */
	if (!r->probe && f->remote.etag[0] && strncmp(f->remote.etag, "W/", 2)) {
		snprintf(hdr, sizeof(hdr), "If-Match: %s", f->remote.etag);
		x->hdrs = curl_slist_append(NULL, hdr);
	} else if (!r->probe && f->remote.last_modified[0]) {
		snprintf(hdr, sizeof(hdr), "If-Range: %s", f->remote.last_modified);
		x->hdrs = curl_slist_append(NULL, hdr);
	} else if (r->probe && f->known.etag[0]) {
		snprintf(hdr, sizeof(hdr), "If-None-Match: %s", f->known.etag);
		x->hdrs = curl_slist_append(NULL, hdr);
	} else if (r->probe && f->known.last_modified[0]) {
		snprintf(hdr, sizeof(hdr), "If-Modified-Since: %s", f->known.last_modified);
		x->hdrs = curl_slist_append(NULL, hdr);
	}
	if (has_validator(r->probe ? &f->known : &f->remote) && !x->hdrs)
		return fail(e, -ENOMEM, "cannot allocate request headers");
	for (const char *const *h = f->headers; h && *h; h++) {
		struct curl_slist *l = curl_slist_append(x->hdrs, *h);

		if (!l)
			return fail(e, -ENOMEM, "cannot allocate request headers");
		x->hdrs = l;
	}
	snprintf(rng, sizeof(rng), "%" PRIu64 "-%" PRIu64, r->start, r->end - 1);
	curl_easy_setopt(x->easy, CURLOPT_URL, f->url);
	mc_fetch_tls_policy(x->easy, f->url, e->o.ca_file, e->o.insecure);
	curl_easy_setopt(x->easy, CURLOPT_RANGE, r->norange ? NULL : rng);
	curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, x->hdrs);
	/* A retry goes over a new connection: the old one may be what was broken. */
	curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, r->attempt ? 1L : 0L);
	/*
	 * No CURLOPT_MAXFILESIZE: libcurl applies it to a redirect's own body too, so a file
	 * smaller than the 302 page would fail. check_probe() holds the object to f->max_size,
	 * and every later range to the bytes it asked for.
	 */
	mc = curl_multi_add_handle(e->multi, x->easy);
	if (mc != CURLM_OK)
		return fail(e, MC_E_ORIGIN, "cannot start a transfer: %s", curl_multi_strerror(mc));
	e->st.requests++;
	e->st.retries += r->attempt ? 1 : 0;
	return 0;
}

static struct range *range_new(struct engine *e, struct mc_fetch_file *f, uint64_t first,
			       uint64_t count)
{
	struct range *r = mc_calloc(1, sizeof(*r));

	if (!r) {
		fail(e, -ENOMEM, "cannot allocate a range");
		return NULL;
	}
	r->f = f;
	r->first_block = first;
	r->nblocks = count;
	r->start = first * MC_HASH_BLOCK;
	r->end = min_u64((first + count) * MC_HASH_BLOCK, f->remote.size);
	r->bad_from = UINT64_MAX;
	f->priv->ranges++;
	return r;
}

/* The next range of an open file: a run of unplanned blocks, at most one chunk long. */
static struct range *next_range(struct engine *e, struct mc_fetch_priv *p)
{
	struct mc_fetch_file *f = p->f;
	uint64_t cb = e->o.chunk_size / MC_HASH_BLOCK, first, last;

	while (p->cursor < f->nblocks && p->planned[p->cursor])
		p->cursor++;
	if (p->cursor >= f->nblocks)
		return NULL;
	first = p->cursor;
	for (last = first; last < f->nblocks && last - first < cb && !p->planned[last]; last++)
		p->planned[last] = 1;
	p->cursor = last;
	return range_new(e, f, first, last - first);
}

/* A retry whose wait is over, taken off the queue; NULL when none is due. */
static struct range *next_retry(struct engine *e, uint64_t now)
{
	for (struct range **pp = &e->retry; *pp; pp = &(*pp)->next) {
		struct range *r = *pp;

		if (r->not_before_ms <= now) {
			*pp = r->next;
			r->next = NULL;
			return r;
		}
	}
	return NULL;
}

/*
 * Work stealing for the tail: when nothing else is left to start, an in-flight range that is
 * slow (at its own rate it needs more than STEAL_MIN_LEFT_MS more, judged after STEAL_MIN_AGE_MS)
 * gives the second half of its remaining blocks to the idle slot, so that a slow or stuck
 * connection does not hold the last chunks alone. The donor stops at its new end; the bytes it
 * had in flight past it are lost, which is why fast transfers are left alone.
 */
static struct range *steal(struct engine *e)
{
	struct xfer *best = NULL;
	uint64_t best_left = 1, mid, end_block, now = mc_now_ms();
	struct range *r;

	for (unsigned i = 0; i < e->nx; i++) {
		struct xfer *x = &e->x[i];
		uint64_t left, age, got, need_ms;

		if (!x->r || !x->accepted || x->stop || !x->r->f->remote.ranges)
			continue;
		age = now - x->accepted_ms;
		if (age < STEAL_MIN_AGE_MS)
			continue;
		got = x->pos - x->r->start;
		need_ms = got ? (x->r->end - x->pos) * age / got : UINT64_MAX;
		if (need_ms < STEAL_MIN_LEFT_MS)
			continue;
		/* Whole blocks after the one being received now. */
		left = x->block + 1 < x->r->first_block + x->r->nblocks
			   ? x->r->first_block + x->r->nblocks - (x->block + 1)
			   : 0;
		if (left > best_left) {
			best_left = left;
			best = x;
		}
	}
	if (!best)
		return NULL;
	end_block = best->r->first_block + best->r->nblocks;
	mid = end_block - best_left / 2;
	r = range_new(e, best->r->f, mid, end_block - mid);
	if (!r)
		return NULL;
	best->r->nblocks = mid - best->r->first_block;
	best->r->end = mid * MC_HASH_BLOCK;
	e->st.steals++;
	return r;
}

static void schedule(struct engine *e)
{
	uint64_t now = mc_now_ms();

	while (e->first_open < e->next_probe &&
	       (e->fs[e->first_open].state == F_DONE || e->fs[e->first_open].state == F_SKIPPED))
		e->first_open++;
	for (unsigned i = 0; i < e->nx && !e->failed && !interrupted; i++) {
		struct xfer *x = &e->x[i];
		struct range *r;

		if (x->r)
			continue;
		/* Retries first, then ranges of open files (oldest first, so files finish in
		 * order), then the next file's probe, then a share of the slowest tail. */
		r = next_retry(e, now);
		for (size_t k = e->first_open; k < e->next_probe && !r && !e->failed; k++) {
			struct mc_fetch_priv *p = &e->fs[k];

			if (p->state == F_OPEN && !file_fully_planned(p))
				r = next_range(e, p);
		}
		if (!r && !e->failed && e->next_probe < e->nfiles) {
			struct mc_fetch_priv *p = &e->fs[e->next_probe++];

			r = range_new(e, p->f, 0, 0);
			if (r) {
				r->end = e->o.chunk_size; /* until the response says the size */
				r->probe = true;
				p->state = F_PROBING;
			}
		}
		if (!r && !e->failed && !e->retry)
			r = steal(e);
		if (!r)
			return;
		if (!x->easy && xfer_setup(e, x) < 0) {
			r->f->priv->ranges--;
			mc_free(r);
			fail(e, -ENOMEM, "cannot set up a transfer");
			return;
		}
		if (xfer_start(e, x, r) < 0) {
			x->r = NULL;
			r->f->priv->ranges--;
			mc_free(r);
			return;
		}
	}
}

/* ---- Completion of transfers ---- */

/*
 * Ends the range of @x after its transfer stopped. On success the range is whole; otherwise only
 * the blocks hashed to their end are kept (their bytes are in buffers already queued or about to
 * be), so that even an aborted run reports them durable and a resume skips them.
 */
/* libcurl results worth another try: the network or the origin hiccupped. */
static bool curl_transient(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_AGAIN:
		return true;
	default:
		return false;
	}
}

/*
 * How long a retry waits: what the origin asked for with Retry-After (seconds or an HTTP-date,
 * at most MAX_RETRY_AFTER_S), else exponential backoff from RETRY_BASE_MS, capped at
 * RETRY_CAP_MS, with jitter (half to all of it) so that many clients do not retry in step.
 */
static uint64_t retry_delay_ms(struct engine *e, const struct xfer *x, unsigned attempt)
{
	uint64_t secs, base;

	if (x->retry_after[0]) {
		time_t when;

		if (!mc_parse_uint(x->retry_after, 0, UINT32_MAX, &secs))
			return min_u64(secs, MAX_RETRY_AFTER_S) * 1000;
		when = curl_getdate(x->retry_after, NULL);
		if (when > 0) {
			time_t now = time(NULL);

			return when > now
				   ? min_u64((uint64_t)(when - now), MAX_RETRY_AFTER_S) * 1000
				   : 0;
		}
	}
	base = min_u64(RETRY_BASE_MS << min_u64(attempt, 16), RETRY_CAP_MS);
	e->rng ^= e->rng << 13;
	e->rng ^= e->rng >> 7;
	e->rng ^= e->rng << 17;
	return base / 2 + e->rng % (base / 2 + 1);
}

/*
 * Ends the range of @x after its transfer stopped. A whole range completes. Otherwise only the
 * blocks hashed to their end are kept (their bytes are in buffers already queued or about to
 * be); the rest is tried again after a wait when the failure was transient and tries are left,
 * else the run fails. Kept blocks are reported durable even by a failing run, so that a resume
 * skips them.
 */
static void xfer_finish(struct engine *e, struct xfer *x, CURLcode rc)
{
	struct range *r = x->r;
	struct mc_fetch_file *f = r->f;
	uint64_t kept;

	curl_multi_remove_handle(e->multi, x->easy);
	if (x->paused) {
		x->paused = false;
		e->npaused--;
	}
	if (!e->failed && !x->cancel && !x->err_code) {
		if (rc == CURLE_OK || x->stop) {
			if (!x->checked)
				check_response(e, x); /* an empty body: the headers were all */
			if (!x->err_code && !x->cancel && !x->discard && x->pos != r->end)
				xfer_error(x, MC_E_ORIGIN, true,
					   "origin closed '%s' early: got %" PRIu64 " of %" PRIu64
					   " bytes",
					   f->label, x->pos - r->start, r->end - r->start);
		} else if (rc == CURLE_UNSUPPORTED_PROTOCOL && strstr(x->errbuf, "HTTP/0.9")) {
			/*
			 * An earlier answer sent bytes past its Content-Length and poisoned the
			 * kept-alive connection; curl 7.88 reports it this way (later versions as
			 * WEIRD_SERVER_REPLY). A new connection fixes it.
			 */
			xfer_error(x, MC_E_ORIGIN, true, "cannot fetch '%s': %s", f->label,
				   x->errbuf);
		} else if (rc == CURLE_OUT_OF_MEMORY) {
			xfer_error(x, -ENOMEM, false, "cannot fetch '%s': out of memory", f->label);
		} else {
			xfer_error(x, MC_E_ORIGIN, curl_transient(rc), "cannot fetch '%s': %s%s",
				   f->label, x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc),
				   mc_fetch_tls_hint(rc));
		}
	}
	x->r = NULL;
	if (x->cancel) {
		/* Aborted on purpose at its first byte: nothing of it was kept. */
		if (x->buf) {
			buf_put(e, x->buf);
			x->buf = NULL;
		}
		f->priv->ranges--;
		mc_free(r);
		return;
	}
	kept = x->accepted ? x->block - r->first_block : 0;
	if (x->err_code && !e->failed) {
		/* Without ranges a stream cannot go on from where it broke, once accepted. */
		bool retry = x->restart || (x->err_transient && r->attempt < e->o.retries &&
					    (!x->accepted || f->remote.ranges));

		if (!retry) {
			if (r->attempt)
				fail(e, x->err_code, "%s (after %u tries)", x->err_msg,
				     r->attempt + 1);
			else
				fail(e, x->err_code, "%s", x->err_msg);
		} else if (!x->accepted) {
			/* Nothing came of it: the same range (or probe) goes back in the queue. */
			if (!x->restart)
				r->attempt++;
			r->not_before_ms =
			    mc_now_ms() + (x->restart ? 0 : retry_delay_ms(e, x, r->attempt));
			r->next = e->retry;
			e->retry = r;
			return;
		} else if (kept < r->nblocks) {
			struct range *rest =
			    range_new(e, f, r->first_block + kept, r->nblocks - kept);

			if (rest) {
				rest->attempt = r->attempt + 1;
				rest->not_before_ms =
				    mc_now_ms() + retry_delay_ms(e, x, rest->attempt);
				rest->next = e->retry;
				e->retry = rest;
			}
		}
	}
	if (x->err_code || e->failed)
		r->nblocks = kept;
	buf_flush(e, x);
	r->body_done = true;
	range_maybe_complete(e, r);
}

static void process_done(struct engine *e)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(e->multi, &left))) {
		struct xfer *x = NULL;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		xfer_finish(e, x, m->data.result);
	}
}

static void reap(struct engine *e, bool wait)
{
	int ret = mc_writer_reap(e->w, wait, on_write_done, e);

	if (ret < 0)
		fail(e, ret, "cannot complete writes: %s", strerror(-ret));
}

/* Resumes transfers paused for want of a buffer, as buffers come back. */
static void unpause(struct engine *e)
{
	for (unsigned i = 0; i < e->nx && e->npaused && !e->failed; i++) {
		struct xfer *x = &e->x[i];

		if (!x->paused || !bufs_available(e, 2))
			continue;
		if (e->o.max_rate) {
			rate_refill(e);
			if (e->tokens < BUF_SIZE)
				break;
		}
		x->paused = false;
		e->npaused--;
		/* May call on_body at once, which may pause it again. */
		curl_easy_pause(x->easy, CURLPAUSE_CONT);
	}
}

/*
 * Progress inside a long range: the whole blocks at its head that are hashed and written (no
 * write of the range in flight, none of them in the buffer being filled) leave the range and
 * join the file's pending spans, so the next sync records them. On a slow origin a range can
 * take many seconds; a kill then loses only what arrived since the last sync, not the range.
 */
static void checkpoint(struct engine *e, struct xfer *x)
{
	struct range *r = x->r;
	uint64_t upto = x->block, held;

	if (!r || !x->accepted || x->stop || r->writes || r->bad_from != UINT64_MAX)
		return;
	if (x->buf && x->buf->req.off / MC_HASH_BLOCK < upto)
		upto = x->buf->req.off / MC_HASH_BLOCK;
	if (upto <= r->first_block)
		return;
	held = upto - r->first_block;
	if (span_push(r->f->priv, r->first_block, held) < 0) {
		fail(e, -ENOMEM, "cannot record progress of '%s'", r->f->label);
		return;
	}
	r->first_block = upto;
	r->nblocks -= held;
}

/* Starts due syncs, publishes finished files, reports progress. */
static void tick(struct engine *e, bool force_sync)
{
	uint64_t now = mc_now_ms();

	if (now - e->last_checkpoint_ms >= CHECKPOINT_MS) {
		e->last_checkpoint_ms = now;
		for (unsigned i = 0; i < e->nx; i++)
			checkpoint(e, &e->x[i]);
	}

	for (size_t k = e->first_open; k < e->next_probe; k++) {
		struct mc_fetch_priv *p = &e->fs[k];

		if (p->state != F_OPEN)
			continue;
		sync_maybe_start(e, p, now, force_sync);
		if (file_maybe_done(e, p) < 0)
			return;
	}
	if (e->o.progress && now - e->last_progress_ms >= PROGRESS_INTERVAL_MS) {
		e->last_progress_ms = now;
		e->o.progress(e->o.progress_ctx, e->bytes_done, e->bytes_total);
	}
}

/* After a failure or an interrupt: stop every transfer, drain the disk, keep what is whole. */
static void shutdown_run(struct engine *e)
{
	for (unsigned i = 0; i < e->nx; i++)
		if (e->x[i].r)
			xfer_finish(e, &e->x[i], CURLE_ABORTED_BY_CALLBACK);
	mc_writer_submit(e->w);
	while (mc_writer_inflight(e->w))
		if (mc_writer_reap(e->w, true, on_write_done, e) < 0)
			break;
	for (size_t k = 0; k < e->next_probe; k++)
		if (e->fs[k].state == F_OPEN)
			sync_maybe_start(e, &e->fs[k], mc_now_ms(), true);
	mc_writer_submit(e->w);
	while (mc_writer_inflight(e->w))
		if (mc_writer_reap(e->w, true, on_write_done, e) < 0)
			break;
}

/* ---- The run ---- */

static int resolve_opts(struct mc_fetch_opts *o, struct mc_err *err)
{
	if (!o->connections)
		o->connections = MC_DEFAULT_CONNECTIONS;
	if (o->connections > MC_MAX_CONNECTIONS)
		return mc_err_set(err, MC_E_USAGE, "too many connections: %u (at most %u)",
				  o->connections, MC_MAX_CONNECTIONS);
	if (!o->chunk_size)
		o->chunk_size = MC_DEFAULT_CHUNK_SIZE;
	if (o->chunk_size % MC_HASH_BLOCK)
		return mc_err_set(err, MC_E_USAGE, "chunk size must be a multiple of 1 MiB");
	if (!o->connect_timeout_s)
		o->connect_timeout_s = 30;
	if (!o->stall_timeout_s)
		o->stall_timeout_s = MC_DEFAULT_STALL_S;
	if (!o->ca_file)
		o->ca_file = getenv("SSL_CERT_FILE");
	if (o->ca_file && !*o->ca_file)
		o->ca_file = NULL;
	return 0;
}

static void engine_release(struct engine *e)
{
	for (unsigned i = 0; e->x && i < e->nx; i++) {
		if (e->x[i].easy)
			curl_easy_cleanup(e->x[i].easy);
		curl_slist_free_all(e->x[i].hdrs);
		XXH3_freeState(e->x[i].hs);
	}
	mc_free(e->x);
	if (e->multi)
		curl_multi_cleanup(e->multi);
	while (e->free_bufs) {
		struct buf *b = e->free_bufs;
		e->free_bufs = b->next_free;
		mc_free(b);
	}
	mc_writer_free(e->w);
	mc_free(e->vbuf);
	while (e->retry) {
		struct range *r = e->retry;
		e->retry = r->next;
		mc_free(r);
	}
	for (size_t k = 0; e->fs && k < e->nfiles; k++) {
		struct mc_fetch_file *f = e->fs[k].f;

		if (!f)
			continue; /* the run failed before the files were set up */
		mc_free(e->fs[k].planned);
		mc_free(e->fs[k].pending);
		mc_free(e->fs[k].syncing);
		mc_free(f->block_done);
		mc_free(f->block_digests);
		f->block_done = f->block_digests = NULL;
		f->priv = NULL;
	}
	mc_free(e->fs);
}

int mc_fetch_run(const struct mc_fetch_opts *opts, struct mc_fetch_file *const *files, size_t n,
		 const struct mc_fetch_ops *ops, void *ctx, struct mc_err *err)
{
	struct engine e = {.ops = ops, .ctx = ctx, .err = err, .files = files, .nfiles = n};
	int ret;

	e.o = *opts;
	ret = resolve_opts(&e.o, err);
	if (ret < 0)
		return ret;
	e.nx = e.o.connections;
	/* Two buffers per transfer: one filling while the last is on its way to the disk. */
	e.max_bufs = 2 * e.nx + 2;
	e.fs = mc_calloc(n, sizeof(*e.fs));
	e.x = mc_calloc(e.nx, sizeof(*e.x));
	e.multi = curl_multi_init();
	if (!e.fs || !e.x || !e.multi) {
		ret = mc_err_set(err, -ENOMEM, "cannot allocate the transfer engine");
		goto out;
	}
	for (size_t k = 0; k < n; k++) {
		e.fs[k].f = files[k];
		files[k]->priv = &e.fs[k];
		files[k]->fd = -1;
		files[k]->skip = false;
		files[k]->not_modified = false;
		files[k]->bytes_fetched = 0;
		files[k]->block_done = files[k]->block_digests = NULL;
	}
	for (unsigned i = 0; i < e.nx; i++)
		e.x[i].e = &e;
	e.rate_ms = mc_now_ms();
	e.tokens = 2.0 * BUF_SIZE;
	e.rng = (mc_now_ms() << 20) ^ (uint64_t)getpid() ^ 0x9e3779b97f4a7c15u;
	ret = mc_writer_new(&e.w, e.o.writer, e.max_bufs + e.nx + 16, err);
	if (ret < 0)
		goto out;
	curl_multi_setopt(e.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)e.nx);
	curl_multi_setopt(e.multi, CURLMOPT_MAXCONNECTS, (long)e.nx);
	curl_multi_setopt(e.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_NOTHING);

	while (!e.failed && e.ndone < n) {
		struct curl_waitfd wfd = {.fd = mc_writer_eventfd(e.w), .events = CURL_WAIT_POLLIN};
		int running, timeout;
		CURLMcode mc;

		if (interrupted) {
			fail(&e, MC_E_INTERRUPTED, "interrupted");
			break;
		}
		schedule(&e);
		mc = curl_multi_perform(e.multi, &running);
		if (mc != CURLM_OK) {
			fail(&e, MC_E_ORIGIN, "transfer engine failed: %s",
			     curl_multi_strerror(mc));
			break;
		}
		process_done(&e);
		if (mc_writer_submit(e.w) < 0)
			fail(&e, -EIO, "cannot submit writes");
		reap(&e, false);
		unpause(&e);
		tick(&e, false);
		if (e.failed || e.ndone == n)
			break;
		/* The pwrite backend completes at once: no need to sleep for it. */
		timeout = mc_writer_inflight(e.w) && mc_writer_eventfd(e.w) < 0 ? 0 : 100;
		/* Paused by the bandwidth cap: wake when the bucket holds a buffer's worth. */
		if (e.o.max_rate && e.npaused && e.tokens < BUF_SIZE) {
			int ms = (int)((BUF_SIZE - e.tokens) * 1000.0 / (double)e.o.max_rate) + 1;

			if (ms < timeout)
				timeout = ms;
		}
		for (struct range *r = e.retry; r && timeout; r = r->next) {
			uint64_t now = mc_now_ms();

			if (r->not_before_ms <= now)
				timeout = 0;
			else if (r->not_before_ms - now < (uint64_t)timeout)
				timeout = (int)(r->not_before_ms - now);
		}
		curl_multi_poll(e.multi, wfd.fd >= 0 ? &wfd : NULL, wfd.fd >= 0 ? 1 : 0, timeout,
				NULL);
	}
	if (e.failed)
		shutdown_run(&e);
	ret = e.failed;
	e.st.writer = mc_writer_kind(e.w);
out:
	if (opts->stats)
		*opts->stats = e.st;
	engine_release(&e);
	return ret;
}

/* ---- Global ---- */

void mc_fetch_interrupt(void)
{
	interrupted = 1;
}

bool mc_fetch_interrupted(void)
{
	return interrupted != 0;
}

void mc_fetch_opts_init(struct mc_fetch_opts *o)
{
	const char *w = getenv("MCACHE_WRITER");

	memset(o, 0, sizeof(*o));
	o->connections = MC_DEFAULT_CONNECTIONS;
	o->chunk_size = MC_DEFAULT_CHUNK_SIZE;
	o->retries = MC_DEFAULT_RETRIES;
	if (w && *w && mc_writer_kind_parse(w, &o->writer) < 0)
		o->writer = MC_WRITER_AUTO;
}

/* libcurl's allocator is routed through ours, so that failure injection reaches it too. */
static void *curl_malloc(size_t n)
{
	return mc_malloc(n);
}

static void *curl_calloc(size_t nmemb, size_t size)
{
	return mc_calloc(nmemb, size);
}

static void *curl_realloc(void *p, size_t n)
{
	return mc_realloc(p, n);
}

static char *curl_strdup(const char *s)
{
	return mc_strdup(s);
}

int mc_fetch_global_init(struct mc_err *err)
{
	if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, curl_malloc, mc_free, curl_realloc,
				 curl_strdup, curl_calloc) != CURLE_OK)
		return mc_err_set(err, MC_E_ORIGIN, "cannot initialise libcurl");
	return 0;
}

void mc_fetch_global_cleanup(void)
{
	curl_global_cleanup();
}

const char *mc_fetch_versions(void)
{
	static char buf[256];
	const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
	unsigned x = XXH_versionNumber();

	snprintf(buf, sizeof(buf), "libcurl/%s %s xxhash/%u.%u.%u", v->version,
		 v->ssl_version ? v->ssl_version : "", x / 10000, x / 100 % 100, x % 100);
	return buf;
}
