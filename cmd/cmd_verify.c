/*
 * mcache verify [NAME...] [--deep] [--threads N] [--watch INTERVAL]: checks cached files
 * against the index (mc_cache_verify2()) and reports each finding. Human findings stream out as
 * they are found, one line each, so a long deep check shows progress; --json gathers a round
 * into one document (schema in mcache.1, OUTPUT), printed on one line per round with --watch
 * (JSON lines for a log collector). Each round records its result in the index
 * (MC_VERIFY_RECORD: the only write verify makes), for ls and metrics.
 *
 * Exit status 1 when there is any finding, 0 when none, 7 for an unknown model, 130 when a
 * signal stopped a check. With --watch the command repeats until SIGTERM/SIGINT: findings and
 * errors of a round are printed and the next round comes anyway; a signal while it waits ends
 * it with 0, during a round with 130. The cache is opened for each round only, so that
 * rebuild-index (which needs every other process out) is never blocked by a waiting watch.
 */
#include "cli.h"

#include "mc_fetch.h"
#include "mc_util.h"

#include <errno.h>
#include <string.h>

#include "mc_banned.h"

/* The version of verify's JSON document; bumped only if a field changes meaning. */
#define VERIFY_SCHEMA 1

const char mc_cmd_verify_usage[] =
    "usage: mcache verify [NAME...] [--deep] [--threads N] [--watch INTERVAL]\n"
    "\n"
    "Checks the named models (all when none is named) against the index: every file\n"
    "present, read-only, of the recorded size, inode and mtime, and linked into the\n"
    "model's tree, nothing else in the tree; then, for the whole cache, blobs, temporary\n"
    "files, links and trees no model owns. Never repairs anything; records when each\n"
    "model was verified and what was found (see `mcache ls`, `mcache metrics`).\n"
    "Prints one line per finding and a summary; exits 1 when anything was found.\n"
    "\n"
    "  --deep             also read every file: its XXH3-128 digest, the SHA-256 the\n"
    "                     origin published (where known), and the structure of\n"
    "                     *.safetensors files\n"
    "  --threads N        --deep: files are read by N threads, 1 to 64 (default: the\n"
    "                     CPUs, 2 to 4)\n"
    "  --watch INTERVAL   check again every INTERVAL (30s, 10m, 1h) until SIGTERM;\n"
    "                     with --json one JSON document per line and round\n";

enum {
	OPT_DEEP = MC_CLI_OPT_CMD,
	OPT_THREADS,
	OPT_WATCH,
};

static const struct option verify_options[] = {
    {"deep", no_argument, NULL, OPT_DEEP},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"watch", required_argument, NULL, OPT_WATCH},
    {NULL, 0, NULL, 0},
};

struct verify_args {
	unsigned flags;
	unsigned threads;
	uint64_t watch_s; /* 0: one round */
};

static int verify_option(void *arg, int opt, const char *val, struct mc_err *err)
{
	struct verify_args *a = arg;
	uint64_t v;
	char q[80];

	switch (opt) {
	case OPT_DEEP:
		a->flags |= MC_VERIFY_DEEP;
		return 0;
	case OPT_THREADS:
		if (mc_parse_uint(val, 1, 64, &v))
			return mc_err_set(err, MC_E_USAGE,
					  "invalid --threads '%s': expected 1 to 64",
					  mc_cli_quote(val, q, sizeof(q)));
		a->threads = (unsigned)v;
		return 0;
	case OPT_WATCH:
		return mc_cli_parse_watch(val, &a->watch_s, err);
	default:
		return MC_E_USAGE;
	}
}

struct verify_ctx {
	json_t *findings; /* --json: the findings so far; NULL for human output */
	bool oom;	  /* a finding could not be recorded */
};

static json_t *finding_json(const struct mc_finding *f)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "model", mc_cli_json_string(f->model)) ||
	    json_object_set_new(o, "path", mc_cli_json_string(f->path)) ||
	    json_object_set_new(o, "kind", mc_cli_json_string(f->kind)) ||
	    json_object_set_new(o, "expected", mc_cli_json_string(f->expected)) ||
	    json_object_set_new(o, "actual", mc_cli_json_string(f->actual))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* "MODEL: PATH: KIND (expected X, actual Y)"; "(cache)" stands for cache-wide findings. */
static void print_finding(const struct mc_finding *f)
{
	bool exp = f->expected && *f->expected, act = f->actual && *f->actual;

	mc_cli_put(stdout, *f->model ? f->model : "(cache)");
	fputs(": ", stdout);
	mc_cli_put(stdout, f->path);
	fputs(": ", stdout);
	mc_cli_put(stdout, f->kind);
	if (exp || act) {
		fputs(" (", stdout);
		if (exp) {
			fputs("expected ", stdout);
			mc_cli_put(stdout, f->expected);
		}
		if (exp && act)
			fputs(", ", stdout);
		if (act) {
			fputs("actual ", stdout);
			mc_cli_put(stdout, f->actual);
		}
		fputc(')', stdout);
	}
	fputc('\n', stdout);
}

static void on_finding(void *arg, const struct mc_finding *f)
{
	struct verify_ctx *ctx = arg;

	if (!ctx->findings)
		print_finding(f);
	else if (json_array_append_new(ctx->findings, finding_json(f)))
		ctx->oom = true;
}

/* Bytes per second read by a deep check, as decimal megabytes (disk vendors' unit). */
static double mb_per_s(const struct mc_verify_result *r)
{
	return r->hash_ms ? (double)r->bytes_hashed / 1e3 / (double)r->hash_ms : 0;
}

static json_t *report_json(json_t *findings, const struct mc_verify_result *r, bool deep,
			   uint64_t ms)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "schema", json_integer(VERIFY_SCHEMA)) ||
	    json_object_set_new(o, "ok", json_boolean(r->findings == 0)) ||
	    json_object_set_new(o, "deep", json_boolean(deep)) ||
	    json_object_set_new(o, "verified_at", json_integer(r->at)) ||
	    json_object_set_new(o, "models", mc_cli_json_uint(r->models)) ||
	    json_object_set_new(o, "files", mc_cli_json_uint(r->files)) ||
	    json_object_set_new(o, "findings_count", mc_cli_json_uint(r->findings)) ||
	    json_object_set_new(o, "seconds", json_real((double)ms / 1e3)) ||
	    json_object_set_new(o, "bytes_read", mc_cli_json_uint(r->bytes_hashed)) ||
	    json_object_set_new(o, "read_seconds", json_real((double)r->hash_ms / 1e3)) ||
	    json_object_set_new(o, "read_mb_per_s", json_real(mb_per_s(r))) ||
	    json_object_set_new(o, "threads", json_integer(r->threads)) ||
	    json_object_set_new(o, "findings", json_incref(findings))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* One JSON document on one line, for --watch: a log line per round. */
static int print_json_line(json_t *doc)
{
	int ret;

	if (!doc)
		return mc_cli_print_json(NULL);
	ret = json_dumpf(doc, stdout, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	json_decref(doc);
	if (ret || fputc('\n', stdout) == EOF) {
		mc_cli_error("cannot write the JSON output");
		return mc_exit_code(-EIO);
	}
	return MC_EXIT_OK;
}

static void print_summary(const struct mc_verify_result *r, bool deep)
{
	char size[32];

	if (r->findings == 0)
		fputs("verify: ok", stdout);
	else
		printf("verify: %llu %s", (unsigned long long)r->findings,
		       mc_cli_plural(r->findings, "finding", "findings"));
	if (deep)
		printf("; read %s in %.2f s (%.0f MB/s, %u %s)",
		       mc_format_size(r->bytes_hashed, size, sizeof(size)),
		       (double)r->hash_ms / 1e3, mb_per_s(r), r->threads,
		       mc_cli_plural(r->threads, "thread", "threads"));
	fputc('\n', stdout);
}

/* One check: open the cache, verify and record, close, print. Returns an exit status. */
static int round_once(struct mc_cli *cli, const struct verify_args *a, char **names, int n)
{
	struct mc_verify_opts o = {
	    (const char *const *)names, (size_t)n, a->flags, a->threads, on_finding, NULL};
	struct verify_ctx ctx = {NULL, false};
	struct mc_verify_result res = {0};
	bool deep = a->flags & MC_VERIFY_DEEP;
	uint64_t t0 = mc_now_ms();
	struct mc_cache *cache;
	struct mc_err err;
	int status, ret;

	o.ctx = &ctx;
	if (cli->json) {
		ctx.findings = json_array();
		if (!ctx.findings)
			return mc_cli_print_json(NULL); /* reports the lack of memory */
	}
	status = mc_cli_open_cache(cli, &cache);
	if (status)
		goto out;
	mc_err_init(&err);
	ret = mc_cache_verify2(cache, &o, &res, &err);
	mc_cache_close(cache);
	if (ret) {
		status = mc_cli_fail(ret, &err);
		goto out;
	}
	if (ctx.oom) {
		status = mc_cli_print_json(NULL);
		goto out;
	}
	if (cli->json && a->watch_s)
		status = print_json_line(report_json(ctx.findings, &res, deep, mc_now_ms() - t0));
	else if (cli->json)
		status = mc_cli_print_json(report_json(ctx.findings, &res, deep, mc_now_ms() - t0));
	else if (cli->verbosity != MC_CLI_QUIET)
		print_summary(&res, deep);
	if (status == MC_EXIT_OK && res.findings)
		status = MC_EXIT_FINDINGS;
out:
	json_decref(ctx.findings);
	fflush(stdout);
	return status;
}

int mc_cmd_verify(int argc, char **argv, struct mc_cli *cli)
{
	struct verify_args a = {MC_VERIFY_RECORD, 0, 0};
	int nargs, status;
	char q[80];

	status = mc_cli_parse(cli, argc, argv, verify_options, verify_option, &a, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	for (int i = 1; i <= nargs; i++)
		if (!mc_name_is_valid(argv[i]))
			return mc_cli_usage_error(cli, "invalid model name '%s'",
						  mc_cli_quote(argv[i], q, sizeof(q)));
	for (;;) {
		status = round_once(cli, &a, argv + 1, nargs);
		if (!a.watch_s || status == MC_EXIT_INTERRUPTED)
			break;
		/* Between rounds nothing is in flight: a signal here is a clean stop. */
		if (mc_cli_watch_sleep(a.watch_s)) {
			status = MC_EXIT_OK;
			break;
		}
	}
	return status;
}
