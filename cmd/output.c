/*
 * Everything mcache prints goes through here or through a command's own formatter: the
 * one-line errors ("mcache: <message>" on stderr, exit status from mc_exit_code()), JSON
 * documents (built with jansson, never by hand), names and paths made safe for a terminal, and
 * the transfer progress line.
 *
 * Progress is one status line redrawn in place when stderr is a terminal (padded with spaces
 * rather than cleared with escape codes, so that a dumb terminal shows it right too); with -v
 * and no terminal, a plain line every few seconds, which is what a log collector wants; with
 * -q or otherwise, nothing.
 */
#include "cli.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mc_banned.h"

/* Replaces control characters, so that one message stays one line. */
static void flatten(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

static void verror(const char *fmt, va_list ap, const char *suffix)
{
	char msg[2 * MC_ERR_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	flatten(msg);
	fprintf(stderr, "mcache: %s%s\n", msg, suffix);
}

void mc_cli_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	verror(fmt, ap, "");
	va_end(ap);
}

int mc_cli_usage_error(const struct mc_cli *cli, const char *fmt, ...)
{
	char hint[64];
	va_list ap;

	if (cli && cli->cmd)
		snprintf(hint, sizeof(hint), "; see 'mcache %s --help'", cli->cmd->name);
	else
		snprintf(hint, sizeof(hint), "; see 'mcache --help'");
	va_start(ap, fmt);
	verror(fmt, ap, hint);
	va_end(ap);
	return MC_EXIT_USAGE;
}

int mc_cli_fail(int code, const struct mc_err *err)
{
	if (err && err->msg[0])
		mc_cli_error("%s", err->msg);
	else if (code < 0 && code > -4096)
		mc_cli_error("%s", strerror(-code));
	else
		mc_cli_error("failed with code %d", code);
	return mc_exit_code(code);
}

void mc_cli_put(FILE *f, const char *s)
{
	for (; *s; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, f);
}

json_t *mc_cli_json_string(const char *s)
{
	json_t *j;
	char *copy;

	if (!s)
		return json_null();
	j = json_string(s);
	if (j)
		return j;
	/*
	 * jansson refuses bytes that are not UTF-8 (a file name from an object key may be any
	 * bytes): show those strings with '?' for every non-ASCII byte. If this fails too, we are
	 * out of memory and the caller reports it.
	 */
	copy = mc_strdup(s);
	if (!copy)
		return NULL;
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	j = json_string(copy);
	mc_free(copy);
	return j;
}

json_t *mc_cli_json_uint(uint64_t v)
{
	return json_integer(v > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)v);
}

int mc_cli_print_json(json_t *doc)
{
	int ret;

	if (!doc) {
		mc_cli_error("cannot build the JSON output: %s", strerror(ENOMEM));
		return mc_exit_code(-ENOMEM);
	}
	ret =
	    json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	json_decref(doc);
	if (ret || fputc('\n', stdout) == EOF) {
		mc_cli_error("cannot write the JSON output");
		return mc_exit_code(-EIO);
	}
	return MC_EXIT_OK;
}

char *mc_cli_format_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || !localtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M", &tm))
		snprintf(buf, len, "-");
	return buf;
}

const char *mc_cli_plural(uint64_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

/* Progress: redraw at most 5 times a second, print plain lines every 5 seconds. */
#define REDRAW_MS      200
#define LINE_MS	       5000
#define RATE_SAMPLE_MS 1000

static void format_eta(uint64_t s, char *buf, size_t len)
{
	if (s >= 3600)
		snprintf(buf, len, ", %lluh%02llum left", (unsigned long long)(s / 3600),
			 (unsigned long long)(s / 60 % 60));
	else if (s >= 60)
		snprintf(buf, len, ", %llum%02llus left", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
	else
		snprintf(buf, len, ", %llus left", (unsigned long long)s);
}

static void update_rate(struct mc_cli_progress *p, uint64_t now, uint64_t done)
{
	double inst;

	if (done < p->rate_bytes) { /* a retry took bytes back: start the sample over */
		p->rate_ms = now;
		p->rate_bytes = done;
		return;
	}
	if (now - p->rate_ms < RATE_SAMPLE_MS) {
		/* Until the first sample, show the average so far. */
		if (p->rate_ms == p->start_ms && now > p->start_ms)
			p->rate = (double)done * 1000.0 / (double)(now - p->start_ms);
		return;
	}
	inst = (double)(done - p->rate_bytes) * 1000.0 / (double)(now - p->rate_ms);
	/* The first sample stands alone; later ones are smoothed so the line does not jitter. */
	p->rate = p->rate_ms == p->start_ms ? inst : 0.7 * p->rate + 0.3 * inst;
	p->rate_ms = now;
	p->rate_bytes = done;
}

static void progress_cb(void *ctx, uint64_t done, uint64_t total)
{
	struct mc_cli_progress *p = ctx;
	uint64_t now = mc_now_ms();
	char line[160], sdone[32], stotal[32], srate[32], eta[32] = "";
	int n;

	update_rate(p, now, done);
	if (p->redraw ? now - p->last_ms < REDRAW_MS && done != total : now - p->last_ms < LINE_MS)
		return;
	p->last_ms = now;
	mc_format_size(done, sdone, sizeof(sdone));
	mc_format_size((uint64_t)p->rate, srate, sizeof(srate));
	if (total) {
		mc_format_size(total, stotal, sizeof(stotal));
		if (p->rate >= 1 && total > done)
			format_eta((uint64_t)((double)(total - done) / p->rate), eta, sizeof(eta));
		n = snprintf(line, sizeof(line), "pull: %s / %s (%u%%), %s/s%s", sdone, stotal,
			     (unsigned)(done * 100 / total), srate, eta);
	} else {
		n = snprintf(line, sizeof(line), "pull: %s, %s/s", sdone, srate);
	}
	if (n < 0)
		return;
	if (p->redraw) {
		/* Pad over the previous line's tail instead of using terminal escape codes. */
		fprintf(stderr, "\r%s%*s", line, p->width > n ? p->width - n : 0, "");
		p->width = n;
		p->drawn = true;
	} else {
		fprintf(stderr, "%s\n", line);
	}
	fflush(stderr);
}

void mc_cli_progress_init(struct mc_cli_progress *p, const struct mc_cli *cli,
			  struct mc_fetch_opts *o)
{
	memset(p, 0, sizeof(*p));
	if (cli->verbosity == MC_CLI_QUIET)
		return;
	p->redraw = isatty(STDERR_FILENO);
	p->lines = !p->redraw && cli->verbosity == MC_CLI_VERBOSE;
	if (!p->redraw && !p->lines)
		return;
	p->start_ms = p->rate_ms = p->last_ms = mc_now_ms();
	o->progress = progress_cb;
	o->progress_ctx = p;
}

void mc_cli_progress_end(struct mc_cli_progress *p)
{
	if (!p->drawn)
		return;
	fprintf(stderr, "\r%*s\r", p->width, "");
	fflush(stderr);
	p->drawn = false;
}
