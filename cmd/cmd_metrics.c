/*
 * mcache metrics [--output FILE] [--watch INTERVAL]: the cache's numbers (mc_cache_metrics())
 * in the Prometheus text exposition format, for node-exporter's textfile collector.
 *
 * The formatting lives here, the numbers in cache/metrics.c. Every metric has its # HELP and
 * # TYPE lines before its samples, names are mcache_[a-z_]+, and label values are escaped as
 * the format says (model names cannot hold the characters that need it, but the code does not
 * rely on that). Metrics of something that never happened (no budget, never verified) are left
 * out rather than given a made-up value.
 *
 * --output FILE is written atomically, because the collector reads the directory whenever it is
 * scraped: the text goes to a temp file in the same directory (".NAME.<pid>.tmp", a name the
 * collector ignores since it does not end in .prom), which is fsynced and renamed over FILE,
 * then the directory is fsynced. A reader sees the old file or the new one, never part of one.
 * With --watch the cache is opened for each round only (rebuild-index needs everyone out); a
 * failed round prints its error and the next one comes anyway.
 */
#include "cli.h"

#include "mc_alloc.h"
#include "mc_fs.h"
#include "mc_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

const char mc_cmd_metrics_usage[] =
    "usage: mcache metrics [--output FILE] [--watch INTERVAL]\n"
    "\n"
    "Prints the cache's metrics in the Prometheus text format: bytes, blobs, models by\n"
    "state, pins, the budget, the last verify of each model and of the whole cache, and\n"
    "pull totals (bytes, requests, retries, errors).\n"
    "\n"
    "  --output FILE      write FILE instead of standard output, atomically (a temp file\n"
    "                     in its directory, fsync, rename): for node-exporter's textfile\n"
    "                     collector, name it *.prom\n"
    "  --watch INTERVAL   write again every INTERVAL (30s, 10m, 1h) until SIGTERM\n";

enum {
	OPT_OUTPUT = MC_CLI_OPT_CMD,
	OPT_WATCH,
};

static const struct option metrics_options[] = {
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"watch", required_argument, NULL, OPT_WATCH},
    {NULL, 0, NULL, 0},
};

struct metrics_args {
	const char *output; /* NULL: stdout */
	uint64_t watch_s;
};

static int metrics_option(void *arg, int opt, const char *val, struct mc_err *err)
{
	struct metrics_args *a = arg;
	char q[80];

	switch (opt) {
	case OPT_OUTPUT:
		if (!*val)
			return mc_err_set(err, MC_E_USAGE, "invalid --output '': expected a file");
		if (val[strlen(val) - 1] == '/')
			return mc_err_set(err, MC_E_USAGE,
					  "invalid --output '%s': expected a file, not a directory",
					  mc_cli_quote(val, q, sizeof(q)));
		a->output = val;
		return 0;
	case OPT_WATCH:
		return mc_cli_parse_watch(val, &a->watch_s, err);
	default:
		return MC_E_USAGE;
	}
}

/* The text being built: a growing buffer; a failed allocation sticks. */
struct text {
	char *buf;
	size_t len;
	size_t cap;
	bool oom;
};

static void put(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;
	char *grown;

	for (int tries = 0; !t->oom && tries < 2; tries++) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, t->buf ? t->cap - t->len : 0, fmt,
			      ap);
		va_end(ap);
		if (n < 0) {
			t->oom = true;
			return;
		}
		if (t->buf && (size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		grown = mc_realloc(t->buf, t->cap + (size_t)n + 4096);
		if (!grown) {
			t->oom = true;
			return;
		}
		t->buf = grown;
		t->cap += (size_t)n + 4096;
	}
}

/* # HELP and # TYPE of a metric: each precedes its samples. */
static void head(struct text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the format wants it: backslash, double quote and newline escaped. */
static void put_label_value(struct text *t, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			put(t, "\\%c", *v);
		else if (*v == '\n')
			put(t, "\\n");
		else
			put(t, "%c", *v);
	}
}

/* One sample of metric @name for model @model (NULL: no label). */
static void sample(struct text *t, const char *name, const char *model, uint64_t v)
{
	put(t, "%s", name);
	if (model) {
		put(t, "{model=\"");
		put_label_value(t, model);
		put(t, "\"}");
	}
	put(t, " %llu\n", (unsigned long long)v);
}

/* The per-model metrics: one family at a time, each with every model's sample. */
static void format_models(struct text *t, const struct mc_metrics *m)
{
	const struct mc_metrics_model *mm;
	bool any_verified = false;

	head(t, "mcache_model_bytes", "gauge", "Bytes of the model's current version.");
	for (size_t i = 0; i < m->nmodel; i++)
		sample(t, "mcache_model_bytes", m->model[i].name, m->model[i].bytes);
	head(t, "mcache_model_files", "gauge", "Files of the model's current version.");
	for (size_t i = 0; i < m->nmodel; i++)
		sample(t, "mcache_model_files", m->model[i].name, m->model[i].files);
	head(t, "mcache_model_pinned", "gauge", "1 when the model is pinned (gc never evicts it).");
	for (size_t i = 0; i < m->nmodel; i++)
		sample(t, "mcache_model_pinned", m->model[i].name, m->model[i].pinned);
	head(t, "mcache_model_complete", "gauge",
	     "1 when the model has a complete version, 0 while pulling, partial or failed.");
	for (size_t i = 0; i < m->nmodel; i++)
		sample(t, "mcache_model_complete", m->model[i].name,
		       !strcmp(m->model[i].state, "complete"));
	head(t, "mcache_model_last_used_timestamp_seconds", "gauge",
	     "When a pull last used the model (unix time).");
	for (size_t i = 0; i < m->nmodel; i++)
		sample(t, "mcache_model_last_used_timestamp_seconds", m->model[i].name,
		       (uint64_t)(m->model[i].last_used_at > 0 ? m->model[i].last_used_at : 0));
	for (size_t i = 0; i < m->nmodel; i++)
		any_verified |= m->model[i].verify_findings >= 0;
	if (!any_verified)
		return;
	/* Models never verified have no sample: a 0 would read as "verified in 1970". */
	head(t, "mcache_model_last_verify_timestamp_seconds", "gauge",
	     "When mcache verify last checked the model (unix time).");
	for (size_t i = 0; i < m->nmodel; i++)
		if ((mm = &m->model[i])->verify_findings >= 0)
			sample(t, "mcache_model_last_verify_timestamp_seconds", mm->name,
			       (uint64_t)mm->verified_at);
	head(t, "mcache_model_last_verify_findings", "gauge",
	     "Findings of the last verify of the model (0: intact).");
	for (size_t i = 0; i < m->nmodel; i++)
		if ((mm = &m->model[i])->verify_findings >= 0)
			sample(t, "mcache_model_last_verify_findings", mm->name,
			       (uint64_t)mm->verify_findings);
	head(t, "mcache_model_last_verify_deep", "gauge",
	     "1 when the last verify of the model read every byte (--deep).");
	for (size_t i = 0; i < m->nmodel; i++)
		if ((mm = &m->model[i])->verify_findings >= 0)
			sample(t, "mcache_model_last_verify_deep", mm->name, mm->verify_deep);
}

static void format_metrics(struct text *t, const struct mc_metrics *m)
{
	static const char *const states[] = {"complete", "pulling", "partial", "failed"};
	uint64_t n;

	head(t, "mcache_cache_bytes", "gauge",
	     "Bytes the cache uses: blobs (each once) and partial downloads.");
	sample(t, "mcache_cache_bytes", NULL, m->usage_bytes);
	head(t, "mcache_blob_bytes", "gauge", "Bytes of the cache's blobs, each counted once.");
	sample(t, "mcache_blob_bytes", NULL, m->blob_bytes);
	head(t, "mcache_blobs", "gauge", "Blobs (distinct file contents) in the cache.");
	sample(t, "mcache_blobs", NULL, m->blobs);
	if (m->budget_bytes) {
		head(t, "mcache_budget_bytes", "gauge",
		     "The cache's budget (gc --save, MCACHE_MAX_BYTES).");
		sample(t, "mcache_budget_bytes", NULL, m->budget_bytes);
	}
	head(t, "mcache_partial_downloads", "gauge",
	     "Downloads in progress or waiting for a resume.");
	sample(t, "mcache_partial_downloads", NULL, m->downloads);
	head(t, "mcache_models", "gauge", "Models in the cache, by state.");
	for (size_t s = 0; s < sizeof(states) / sizeof(states[0]); s++) {
		n = 0;
		for (size_t i = 0; i < m->nmodel; i++)
			n += !strcmp(m->model[i].state, states[s]);
		put(t, "mcache_models{state=\"%s\"} %llu\n", states[s], (unsigned long long)n);
	}
	head(t, "mcache_models_pinned", "gauge", "Pinned models (gc never evicts them).");
	sample(t, "mcache_models_pinned", NULL, m->models_pinned);
	if (m->verify_findings >= 0) {
		head(t, "mcache_last_verify_timestamp_seconds", "gauge",
		     "When mcache verify last checked the whole cache (unix time).");
		sample(t, "mcache_last_verify_timestamp_seconds", NULL, (uint64_t)m->verified_at);
		head(t, "mcache_last_verify_findings", "gauge",
		     "Findings of the last verify of the whole cache (0: intact).");
		sample(t, "mcache_last_verify_findings", NULL, (uint64_t)m->verify_findings);
		head(t, "mcache_last_verify_ok", "gauge",
		     "1 when the last verify of the whole cache found nothing.");
		sample(t, "mcache_last_verify_ok", NULL, m->verify_findings == 0);
		head(t, "mcache_last_verify_deep", "gauge",
		     "1 when the last verify of the whole cache read every byte (--deep).");
		sample(t, "mcache_last_verify_deep", NULL, m->verify_deep);
	}
	head(t, "mcache_pulls_total", "counter", "Pulls into this cache, by result.");
	put(t, "mcache_pulls_total{result=\"ok\"} %llu\n", (unsigned long long)m->pulls_ok);
	put(t, "mcache_pulls_total{result=\"failed\"} %llu\n", (unsigned long long)m->pulls_failed);
	put(t, "mcache_pulls_total{result=\"interrupted\"} %llu\n",
	    (unsigned long long)m->pulls_interrupted);
	head(t, "mcache_download_errors_total", "counter",
	     "Pulls that failed (origin, integrity, disk or index errors).");
	sample(t, "mcache_download_errors_total", NULL, m->pulls_failed);
	head(t, "mcache_download_bytes_total", "counter", "Body bytes received from origins.");
	sample(t, "mcache_download_bytes_total", NULL, m->download_bytes);
	head(t, "mcache_download_requests_total", "counter", "HTTP requests made to origins.");
	sample(t, "mcache_download_requests_total", NULL, m->download_requests);
	head(t, "mcache_download_retries_total", "counter",
	     "Requests retried after a transient failure.");
	sample(t, "mcache_download_retries_total", NULL, m->download_retries);
	format_models(t, m);
}

/*
 * Replaces @path with @buf atomically (mc_fs_write_atomic: temp file beside it, fsync, rename,
 * fsync of the directory), for the node-exporter textfile collector, which must never read a
 * partial file. Returns 0 or an exit status after the error.
 */
static int write_atomically(const char *path, const char *buf, size_t len)
{
	const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
	char dir[4096];
	int dfd, ret;

	if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", slash ? (int)(slash - path) : 1,
			 slash ? path : ".");
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		mc_cli_error("cannot open the directory of '%s': %s", path, strerror(errno));
		return mc_exit_code(-errno);
	}
	ret = mc_fs_write_atomic(dfd, base, buf, len);
	close(dfd);
	if (ret) {
		mc_cli_error("cannot write '%s': %s", path, strerror(-ret));
		return mc_exit_code(ret);
	}
	return MC_EXIT_OK;
}

/* One round: read the numbers, format, write. Returns an exit status. */
static int round_once(struct mc_cli *cli, const struct metrics_args *a)
{
	struct text t = {NULL, 0, 0, false};
	struct mc_cache *cache;
	struct mc_metrics m;
	struct mc_err err;
	int status, ret;

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		return status;
	mc_err_init(&err);
	ret = mc_cache_metrics(cache, &m, &err);
	mc_cache_close(cache);
	if (ret) {
		status = mc_cli_fail(ret, &err);
		goto out;
	}
	format_metrics(&t, &m);
	if (t.oom) {
		mc_cli_error("cannot format the metrics: %s", strerror(ENOMEM));
		status = mc_exit_code(-ENOMEM);
	} else if (a->output) {
		status = write_atomically(a->output, t.buf, t.len);
	} else if (fwrite(t.buf, 1, t.len, stdout) != t.len || fflush(stdout)) {
		mc_cli_error("cannot write to standard output: %s", strerror(errno));
		status = mc_exit_code(errno ? -errno : -EIO);
	}
out:
	mc_cache_metrics_release(&m);
	mc_free(t.buf);
	return status;
}

int mc_cmd_metrics(int argc, char **argv, struct mc_cli *cli)
{
	struct metrics_args a = {NULL, 0};
	int nargs, status;

	status = mc_cli_parse(cli, argc, argv, metrics_options, metrics_option, &a, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs)
		return mc_cli_usage_error(cli, "metrics takes no arguments");
	if (cli->json)
		return mc_cli_usage_error(cli, "metrics has no --json form: it prints the "
					       "Prometheus text format");
	for (;;) {
		status = round_once(cli, &a);
		if (!a.watch_s || status == MC_EXIT_INTERRUPTED)
			break;
		if (mc_cli_watch_sleep(a.watch_s)) {
			status = MC_EXIT_OK;
			break;
		}
	}
	return status;
}
