/*
 * mcache prewarm MANIFEST: pull every model a manifest lists, highest priority first, before
 * traffic shifts to a node. One connection budget (--connections) and one bandwidth cap
 * (--max-rate) serve all models: they are pulled one after the other, each with the whole
 * budget, so the most important model is ready first and serving traffic never competes with
 * more than N connections. A model that fails is reported and the others are still pulled.
 *
 * Progress: on a terminal, one line per model and a total, redrawn in place; otherwise no
 * redraws at all, a line every PROGRESS_LINE_MS (JSON with --json); -q prints none. --watch
 * INTERVAL repeats the pass (re-reading the manifest, which a ConfigMap may have changed) until
 * SIGTERM: the shape a DaemonSet needs.
 */
#include "cli.h"

#include "mc_alloc.h"
#include "mc_manifest.h"
#include "mc_util.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

const char mc_cmd_prewarm_usage[] =
    "usage: mcache prewarm MANIFEST [--connections N] [--max-rate RATE] [--chunk-size SIZE]\n"
    "                      [--watch INTERVAL]\n"
    "\n"
    "Pulls every model of MANIFEST (a YAML file, '-' for standard input; format in\n"
    "mcache(1), MANIFEST), highest priority first, all sharing one connection budget.\n"
    "A model that fails does not stop the others; the exit status is that of the first\n"
    "failure. Progress on a terminal is redrawn in place; otherwise a line every 10 s\n"
    "(JSON with --json); -q silences it.\n"
    "\n"
    "  --connections N     ranges in flight for the whole prewarm (default 16)\n"
    "  --max-rate RATE     bytes per second for the whole prewarm, e.g. 200M\n"
    "  --chunk-size SIZE   bytes per range (default 16M)\n"
    "  --watch INTERVAL    repeat every INTERVAL (30s, 10m, 1h) until SIGTERM\n";

#define REDRAW_MS	 200
#define PROGRESS_LINE_MS 10000

enum pw_state { PW_PENDING, PW_PULLING, PW_DONE, PW_FAILED };

struct pw_model {
	const struct mc_manifest_model *m;
	enum pw_state state;
	uint64_t done, total;
	struct mc_pull_result res;
	uint64_t start_ms, end_ms;
	int status;
	char error[MC_ERR_MAX];
};

struct pw {
	struct mc_cli *cli;
	struct mc_fetch_opts fetch;
	const char *manifest;
	uint64_t watch_s;
	bool redraw, lines;
	struct pw_model *mod;
	size_t n, cur;
	int drawn; /* lines drawn by the last redraw */
	uint64_t last_ms, start_ms;
};

enum { OPT_CONNECTIONS = MC_CLI_OPT_CMD, OPT_MAX_RATE, OPT_CHUNK_SIZE, OPT_WATCH };

static const struct option prewarm_options[] = {
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"max-rate", required_argument, NULL, OPT_MAX_RATE},
    {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
    {"watch", required_argument, NULL, OPT_WATCH},
    {NULL, 0, NULL, 0},
};

static int prewarm_option(void *ctx, int opt, const char *arg, struct mc_err *err)
{
	struct pw *w = ctx;
	char q[80];

	switch (opt) {
	case OPT_CONNECTIONS:
		return mc_cli_parse_connections(arg, &w->fetch.connections, err);
	case OPT_MAX_RATE:
		return mc_cli_parse_rate(arg, &w->fetch.max_rate, err);
	case OPT_CHUNK_SIZE:
		return mc_cli_parse_chunk_size(arg, &w->fetch.chunk_size, err);
	default:
		if (mc_parse_duration(arg, &w->watch_s))
			return mc_err_set(err, MC_E_USAGE,
					  "invalid --watch '%s': expected a duration such as 30s, "
					  "10m or 1h",
					  mc_cli_quote(arg, q, sizeof(q)));
		return 0;
	}
}

/* ---- Progress ---- */

static double rate_of(const struct pw_model *p, uint64_t now)
{
	uint64_t ms = (p->end_ms ? p->end_ms : now) - p->start_ms;

	return ms ? (double)p->done * 1000.0 / (double)ms : 0;
}

static void model_line(const struct pw_model *p, uint64_t now, char *buf, size_t len)
{
	char d[32], t[32], r[32];
	double rate = rate_of(p, now);

	mc_format_size(p->done, d, sizeof(d));
	mc_format_size(p->total, t, sizeof(t));
	mc_format_size((uint64_t)rate, r, sizeof(r));
	switch (p->state) {
	case PW_PENDING:
		snprintf(buf, len, "  %-24.64s waiting", p->m->name);
		break;
	case PW_PULLING:
		if (p->total && rate >= 1 && p->total > p->done)
			snprintf(buf, len, "  %-24.64s %s / %s (%u%%), %s/s, %llus left",
				 p->m->name, d, t, (unsigned)(p->done * 100 / p->total), r,
				 (unsigned long long)((double)(p->total - p->done) / rate));
		else
			snprintf(buf, len, "  %-24.64s %s / %s, %s/s", p->m->name, d, t, r);
		break;
	case PW_DONE:
		mc_format_size(p->res.bytes, t, sizeof(t));
		mc_format_size(p->res.bytes_fetched, d, sizeof(d));
		snprintf(buf, len, "  %-24.64s ready: %s, fetched %s in %.1f s", p->m->name, t, d,
			 (double)(p->end_ms - p->start_ms) / 1000.0);
		break;
	default:
		snprintf(buf, len, "  %-24.64s FAILED (exit %d)", p->m->name, p->status);
		break;
	}
}

static void totals(const struct pw *w, uint64_t *done, uint64_t *total, size_t *ok, size_t *failed)
{
	*done = *total = 0;
	*ok = *failed = 0;
	for (size_t i = 0; i < w->n; i++) {
		*done += w->mod[i].done;
		*total += w->mod[i].total;
		*ok += w->mod[i].state == PW_DONE;
		*failed += w->mod[i].state == PW_FAILED;
	}
}

/* The terminal display: every model and a total, redrawn over the previous one. */
static void redraw(struct pw *w, uint64_t now)
{
	char line[256], d[32], t[32];
	uint64_t done, total;
	size_t ok, failed;

	if (w->drawn)
		fprintf(stderr, "\033[%dA", w->drawn);
	for (size_t i = 0; i < w->n; i++) {
		model_line(&w->mod[i], now, line, sizeof(line));
		fprintf(stderr, "\033[2K%s\n", line);
	}
	totals(w, &done, &total, &ok, &failed);
	fprintf(stderr, "\033[2Kprewarm: %zu/%zu models ready%s, %s / %s so far, %.0f s\n", ok,
		w->n, failed ? " (some FAILED)" : "", mc_format_size(done, d, sizeof(d)),
		mc_format_size(total, t, sizeof(t)), (double)(now - w->start_ms) / 1000.0);
	w->drawn = (int)w->n + 1;
	fflush(stderr);
}

/* Not a terminal: one line for the model being pulled, JSON with --json. */
static void progress_line(struct pw *w, const struct pw_model *p, uint64_t now)
{
	char line[256];
	json_t *o;

	if (w->cli->json) {
		o = json_object();
		if (!o)
			return;
		json_object_set_new(o, "event", json_string("progress"));
		json_object_set_new(o, "model", mc_cli_json_string(p->m->name));
		json_object_set_new(o, "bytes", mc_cli_json_uint(p->done));
		json_object_set_new(o, "total", mc_cli_json_uint(p->total));
		json_object_set_new(o, "rate", mc_cli_json_uint((uint64_t)rate_of(p, now)));
		{
			char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER |
						    JSON_REAL_PRECISION(6));

			if (s)
				fprintf(stderr, "%s\n", s);
			mc_free(s);
		}
		json_decref(o);
	} else {
		model_line(p, now, line, sizeof(line));
		fprintf(stderr, "prewarm:%s\n", line + 1);
	}
	fflush(stderr);
}

/* Not a terminal: one line when a model is ready or failed. */
static void model_event(const struct pw *w, const struct pw_model *p)
{
	char line[256];
	json_t *o;
	char *js;

	if (!w->cli->json) {
		if (p->state == PW_FAILED)
			fprintf(stderr, "prewarm: %s failed (exit %d): %s\n", p->m->name, p->status,
				p->error);
		else {
			model_line(p, p->end_ms, line, sizeof(line));
			fprintf(stderr, "prewarm:%s\n", line + 1);
		}
		return;
	}
	o = json_object();
	if (!o)
		return;
	json_object_set_new(o, "event", json_string(p->state == PW_FAILED ? "failed" : "ready"));
	json_object_set_new(o, "model", mc_cli_json_string(p->m->name));
	if (p->state == PW_FAILED) {
		json_object_set_new(o, "exit", json_integer(p->status));
		json_object_set_new(o, "error", mc_cli_json_string(p->error));
	} else {
		json_object_set_new(o, "bytes", mc_cli_json_uint(p->res.bytes));
		json_object_set_new(o, "bytes_fetched", mc_cli_json_uint(p->res.bytes_fetched));
	}
	js = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (js)
		fprintf(stderr, "%s\n", js);
	mc_free(js);
	json_decref(o);
	fflush(stderr);
}

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
	struct pw *w = ctx;
	struct pw_model *p = &w->mod[w->cur];
	uint64_t now = mc_now_ms();

	p->done = done;
	p->total = total;
	if (now - w->last_ms < (w->redraw ? REDRAW_MS : PROGRESS_LINE_MS))
		return;
	w->last_ms = now;
	if (w->redraw)
		redraw(w, now);
	else if (w->lines)
		progress_line(w, p, now);
}

static void on_wait(void *ctx, const char *label)
{
	struct pw *w = ctx;

	if (w->lines)
		fprintf(stderr,
			"prewarm: %s: waiting for '%s': another process is downloading it\n",
			w->mod[w->cur].m->name, label);
}

/* ---- The pass ---- */

static void pull_one(struct pw *w, struct mc_cache *c, struct pw_model *p)
{
	struct mc_pull_opts o = {0};
	struct mc_err err;
	int ret;

	mc_err_init(&err);
	p->state = PW_PULLING;
	p->start_ms = mc_now_ms();
	o.name = p->m->name;
	o.uris = (const char *const *)p->m->uri;
	o.nuris = p->m->nuri;
	o.include = (const char *const *)p->m->include;
	o.ninclude = p->m->ninclude;
	o.exclude = (const char *const *)p->m->exclude;
	o.nexclude = p->m->nexclude;
	o.fetch = w->fetch;
	o.fetch.progress = on_progress;
	o.fetch.progress_ctx = w;
	o.notice = on_wait;
	o.notice_ctx = w;
	ret = mc_cache_pull(c, &o, &p->res, &err);
	if (!ret && p->m->pin)
		ret = mc_cache_pin(c, p->m->name, true, &err);
	p->end_ms = mc_now_ms();
	if (ret) {
		p->state = PW_FAILED;
		p->status = mc_exit_code(ret);
		snprintf(p->error, sizeof(p->error), "%s", err.msg);
	} else {
		p->state = PW_DONE;
		p->done = p->total = p->res.bytes;
	}
}

static json_t *summary_json(const struct pw *w, uint64_t ms)
{
	json_t *doc = json_object(), *arr = json_array();
	size_t ok = 0, failed = 0;
	uint64_t done, total;

	if (!doc || !arr) {
		json_decref(doc);
		json_decref(arr);
		return NULL;
	}
	for (size_t i = 0; i < w->n; i++) {
		const struct pw_model *p = &w->mod[i];
		json_t *o = json_object();

		if (!o)
			continue;
		json_object_set_new(o, "name", mc_cli_json_string(p->m->name));
		json_object_set_new(o, "priority", json_integer(p->m->priority));
		json_object_set_new(o, "status",
				    json_string(p->state == PW_DONE	? "ok"
						: p->state == PW_FAILED ? "failed"
									: "skipped"));
		if (p->state == PW_DONE) {
			json_object_set_new(o, "version", json_integer(p->res.version));
			json_object_set_new(o, "files", mc_cli_json_uint(p->res.files));
			json_object_set_new(o, "bytes", mc_cli_json_uint(p->res.bytes));
			json_object_set_new(o, "bytes_fetched",
					    mc_cli_json_uint(p->res.bytes_fetched));
			json_object_set_new(o, "pinned", json_boolean(p->m->pin));
		} else if (p->state == PW_FAILED) {
			json_object_set_new(o, "exit", json_integer(p->status));
			json_object_set_new(o, "error", mc_cli_json_string(p->error));
		}
		if (p->end_ms)
			json_object_set_new(o, "seconds",
					    json_real((double)(p->end_ms - p->start_ms) / 1000.0));
		json_array_append_new(arr, o);
	}
	totals(w, &done, &total, &ok, &failed);
	json_object_set_new(doc, "models", arr);
	json_object_set_new(doc, "ok", mc_cli_json_uint(ok));
	json_object_set_new(doc, "failed", mc_cli_json_uint(failed));
	json_object_set_new(doc, "seconds", json_real((double)ms / 1000.0));
	return doc;
}

static void summary_text(const struct pw *w, uint64_t ms)
{
	char b[32], f[32];
	size_t ok = 0, failed = 0;
	uint64_t done, total;

	for (size_t i = 0; i < w->n; i++) {
		const struct pw_model *p = &w->mod[i];

		if (p->state == PW_DONE)
			printf("ok      %s: %llu %s, %s, fetched %s in %.1f s%s\n", p->m->name,
			       (unsigned long long)p->res.files,
			       mc_cli_plural(p->res.files, "file", "files"),
			       mc_format_size(p->res.bytes, b, sizeof(b)),
			       mc_format_size(p->res.bytes_fetched, f, sizeof(f)),
			       (double)(p->end_ms - p->start_ms) / 1000.0,
			       p->m->pin ? ", pinned" : "");
		else if (p->state == PW_FAILED)
			printf("FAILED  %s (exit %d): %s\n", p->m->name, p->status, p->error);
		else
			printf("skipped %s (interrupted)\n", p->m->name);
	}
	totals(w, &done, &total, &ok, &failed);
	printf("prewarm: %zu of %zu models ready, %zu failed, in %.1f s\n", ok, w->n, failed,
	       (double)ms / 1000.0);
}

/* One pass over the manifest. Returns the exit status. */
static int pass(struct pw *w, struct mc_cache *c)
{
	struct mc_manifest man;
	struct mc_err err;
	uint64_t ms;
	int ret, status = MC_EXIT_OK;

	mc_err_init(&err);
	ret = mc_manifest_load(w->manifest, &man, &err);
	if (ret)
		return mc_cli_fail(ret, &err);
	mc_manifest_sort(&man);
	w->n = man.n;
	w->mod = mc_calloc(man.n, sizeof(*w->mod));
	if (!w->mod) {
		mc_manifest_free(&man);
		return mc_cli_fail(-ENOMEM, NULL);
	}
	for (size_t i = 0; i < man.n; i++)
		w->mod[i].m = &man.model[i];
	w->drawn = 0;
	w->start_ms = w->last_ms = mc_now_ms();
	for (w->cur = 0; w->cur < w->n && !mc_fetch_interrupted(); w->cur++) {
		struct pw_model *p = &w->mod[w->cur];

		if (w->redraw)
			redraw(w, mc_now_ms());
		pull_one(w, c, p);
		if (p->state == PW_FAILED && status == MC_EXIT_OK)
			status = p->status;
		if (w->lines)
			model_event(w, p);
		if (p->status == MC_EXIT_INTERRUPTED)
			break;
	}
	if (w->redraw)
		redraw(w, mc_now_ms());
	ms = mc_now_ms() - w->start_ms;
	if (mc_fetch_interrupted())
		status = MC_EXIT_INTERRUPTED;
	if (w->cli->json) {
		json_t *doc = summary_json(w, ms);

		if (doc) {
			char *s = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER |
						      JSON_REAL_PRECISION(6));

			if (s)
				printf("%s\n", s);
			mc_free(s);
			json_decref(doc);
		}
	} else if (w->cli->verbosity != MC_CLI_QUIET || status != MC_EXIT_OK) {
		summary_text(w, ms);
	}
	fflush(stdout);
	mc_free(w->mod);
	w->mod = NULL;
	w->n = 0;
	mc_manifest_free(&man);
	return status;
}

/* Sleeps @s seconds, or until SIGTERM/SIGINT; true when interrupted. */
static bool nap(uint64_t s)
{
	uint64_t end = mc_now_ms() + s * 1000;

	while (mc_now_ms() < end) {
		if (mc_fetch_interrupted())
			return true;
		usleep(200 * 1000);
	}
	return mc_fetch_interrupted();
}

int mc_cmd_prewarm(int argc, char **argv, struct mc_cli *cli)
{
	struct mc_cache *cache;
	struct pw w;
	int nargs, status;

	memset(&w, 0, sizeof(w));
	w.cli = cli;
	mc_fetch_opts_init(&w.fetch);
	status = mc_cli_parse(cli, argc, argv, prewarm_options, prewarm_option, &w, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs != 1)
		return mc_cli_usage_error(cli, "prewarm takes one MANIFEST");
	w.manifest = argv[1];
	if (w.watch_s && !strcmp(w.manifest, "-"))
		return mc_cli_usage_error(cli, "--watch re-reads the manifest: it cannot be '-'");
	if (cli->verbosity != MC_CLI_QUIET) {
		w.redraw = isatty(STDERR_FILENO) && !cli->json;
		w.lines = !w.redraw;
	}
	status = mc_cli_open_cache(cli, &cache);
	if (status)
		return status;
	for (;;) {
		status = pass(&w, cache);
		if (!w.watch_s || status == MC_EXIT_INTERRUPTED)
			break;
		/* Between passes nothing is in flight: a SIGTERM here is a clean stop. */
		if (nap(w.watch_s)) {
			status = MC_EXIT_OK;
			break;
		}
	}
	mc_cache_close(cache);
	return status;
}
