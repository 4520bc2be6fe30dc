/*
 * mcache verify [NAME...] [--deep]: checks cached files against the index (mc_cache_verify())
 * and reports each finding. Human findings stream out as they are found, one line each, so a
 * long deep check shows progress; --json gathers them into one document. Exit status 1 when
 * there is any finding, 0 when none, 7 for an unknown model.
 */
#include "cli.h"

#include "mc_util.h"

#include <string.h>

#include "mc_banned.h"

const char mc_cmd_verify_usage[] =
    "usage: mcache verify [NAME...] [--deep]\n"
    "\n"
    "Checks the named models (all when none is named) against the index: every file\n"
    "present, read-only, of the recorded size, inode and mtime, and linked into the\n"
    "model's tree; then blobs and temporary files no model owns. Changes nothing.\n"
    "Prints one line per finding and a summary; exits 1 when anything was found.\n"
    "\n"
    "  --deep      also rehash every file and compare it with its recorded digest\n";

enum {
	OPT_DEEP = MC_CLI_OPT_CMD,
};

static const struct option verify_options[] = {
    {"deep", no_argument, NULL, OPT_DEEP},
    {NULL, 0, NULL, 0},
};

static int verify_option(void *ctx, int opt, const char *arg, struct mc_err *err)
{
	unsigned *flags = ctx;

	(void)arg;
	(void)err;
	if (opt != OPT_DEEP)
		return MC_E_USAGE;
	*flags |= MC_VERIFY_DEEP;
	return 0;
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

static json_t *report_json(json_t *findings, uint64_t n)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "ok", json_boolean(n == 0)) ||
	    json_object_set_new(o, "findings", json_incref(findings))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int mc_cmd_verify(int argc, char **argv, struct mc_cli *cli)
{
	struct verify_ctx ctx = {NULL, false};
	struct mc_cache *cache;
	struct mc_err err;
	unsigned flags = 0;
	uint64_t nfindings = 0;
	char q[80];
	int nargs, status, ret;

	status = mc_cli_parse(cli, argc, argv, verify_options, verify_option, &flags, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	for (int i = 1; i <= nargs; i++)
		if (!mc_name_is_valid(argv[i]))
			return mc_cli_usage_error(cli, "invalid model name '%s'",
						  mc_cli_quote(argv[i], q, sizeof(q)));
	if (cli->json) {
		ctx.findings = json_array();
		if (!ctx.findings)
			return mc_cli_print_json(NULL); /* reports the lack of memory */
	}

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		goto out;
	mc_err_init(&err);
	ret = mc_cache_verify(cache, (const char *const *)(argv + 1), (size_t)nargs, flags,
			      on_finding, &ctx, &nfindings, &err);
	mc_cache_close(cache);
	if (ret) {
		status = mc_cli_fail(ret, &err);
		goto out;
	}
	if (ctx.oom) {
		status = mc_cli_print_json(NULL);
		goto out;
	}
	if (cli->json)
		status = mc_cli_print_json(report_json(ctx.findings, nfindings));
	else if (cli->verbosity != MC_CLI_QUIET && nfindings == 0)
		printf("verify: ok\n");
	else if (cli->verbosity != MC_CLI_QUIET)
		printf("verify: %llu %s\n", (unsigned long long)nfindings,
		       mc_cli_plural(nfindings, "finding", "findings"));
	if (status == MC_EXIT_OK && nfindings)
		status = MC_EXIT_FINDINGS;
out:
	json_decref(ctx.findings);
	return status;
}
