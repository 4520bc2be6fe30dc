/*
 * mcache gc [--max-bytes SIZE [--save]] [--dry-run]: collects the cache's garbage and, with a
 * budget, evicts least recently used models until the cache fits (mc_cache_gc()). The budget
 * is --max-bytes, else the configured one (mc_cache_budget(): $MCACHE_MAX_BYTES, else the one
 * saved with --save). Also home to the gc result's JSON and summary line, which rm and pull
 * print too.
 *
 * A budget that pinned and in-use models alone exceed is not an error: gc did what it may, the
 * command exits 0, and a warning on stderr says so.
 */
#include "cli.h"

#include "mc_util.h"

#include <errno.h>
#include <string.h>

#include "mc_banned.h"

const char mc_cmd_gc_usage[] =
    "usage: mcache gc [--max-bytes SIZE [--save]] [--dry-run]\n"
    "\n"
    "Removes what the cache no longer needs: temp files and partial downloads abandoned\n"
    "by processes that died (the latter after 24 hours), failed versions, versions\n"
    "superseded 10 minutes ago or more, and blobs no model uses. Over the budget it then\n"
    "removes younger superseded versions and evicts whole models, least recently used\n"
    "first, until the cache fits: never a pinned model, nor one being pulled.\n"
    "The budget: --max-bytes, else $MCACHE_MAX_BYTES, else the one saved with --save.\n"
    "Prints one line per evicted model and a summary.\n"
    "\n"
    "  --max-bytes SIZE   the budget, such as 100G or 512MiB (0: none)\n"
    "  --save             save --max-bytes as the cache's budget, which every later\n"
    "                     pull and gc keeps to (0 removes it)\n"
    "  --dry-run          change nothing; show what would be removed\n";

enum {
	OPT_MAX_BYTES = MC_CLI_OPT_CMD,
	OPT_SAVE,
	OPT_DRY_RUN,
};

static const struct option gc_options[] = {
    {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
    {"save", no_argument, NULL, OPT_SAVE},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {NULL, 0, NULL, 0},
};

struct gc_args {
	struct mc_gc_opts o;
	bool max_given;
	bool save;
	json_t *evicted; /* the evicted models, for both outputs */
	bool oom;
};

static int gc_option(void *ctx, int opt, const char *arg, struct mc_err *err)
{
	struct gc_args *a = ctx;
	char q[80];

	switch (opt) {
	case OPT_MAX_BYTES:
		if (mc_parse_size(arg, &a->o.max_bytes))
			return mc_err_set(err, MC_E_USAGE,
					  "invalid --max-bytes '%s': expected a size such as 100G "
					  "or 512MiB",
					  mc_cli_quote(arg, q, sizeof(q)));
		a->max_given = true;
		return 0;
	case OPT_SAVE:
		a->save = true;
		return 0;
	case OPT_DRY_RUN:
		a->o.dry_run = true;
		return 0;
	}
	return MC_E_USAGE;
}

static void on_evicted(void *ctx, const struct mc_gc_model *m)
{
	struct gc_args *a = ctx;
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "name", mc_cli_json_string(m->name)) ||
	    json_object_set_new(o, "bytes", mc_cli_json_uint(m->bytes)) ||
	    json_object_set_new(o, "bytes_freed", mc_cli_json_uint(m->freed)) ||
	    json_object_set_new(o, "last_used_at", json_integer(m->last_used_at))) {
		json_decref(o);
		a->oom = true;
		return;
	}
	/* Takes @o, also when it fails. */
	if (json_array_append_new(a->evicted, o))
		a->oom = true;
}

json_t *mc_cli_gc_json(const struct mc_gc_result *r)
{
	json_t *o = json_object(), *removed = json_object();

	if (!o || !removed || json_object_set_new(removed, "models", mc_cli_json_uint(r->models)) ||
	    json_object_set_new(removed, "versions", mc_cli_json_uint(r->versions)) ||
	    json_object_set_new(removed, "blobs", mc_cli_json_uint(r->blobs)) ||
	    json_object_set_new(removed, "tmp_files", mc_cli_json_uint(r->tmp_files)) ||
	    json_object_set_new(removed, "downloads", mc_cli_json_uint(r->downloads)) ||
	    json_object_set_new(o, "max_bytes",
				r->max_bytes ? mc_cli_json_uint(r->max_bytes) : json_null()) ||
	    json_object_set_new(o, "bytes_before", mc_cli_json_uint(r->bytes_before)) ||
	    json_object_set_new(o, "bytes_after", mc_cli_json_uint(r->bytes_after)) ||
	    json_object_set_new(o, "bytes_freed", mc_cli_json_uint(r->bytes_freed)) ||
	    json_object_set_new(o, "budget_met", json_boolean(r->budget_met)))
		goto out_fail;
	if (json_object_set_new(o, "removed", removed)) {
		removed = NULL; /* released by json_object_set_new() */
		goto out_fail;
	}
	return o;
out_fail:
	json_decref(removed);
	json_decref(o);
	return NULL;
}

void mc_cli_gc_summary(FILE *f, const struct mc_gc_result *r, bool dry_run)
{
	char freed[32], after[32], max[32];

	fprintf(f, "%s %s: %llu %s, %llu old %s, %llu %s, %llu temp %s",
		dry_run ? "would free" : "freed",
		mc_format_size(r->bytes_freed, freed, sizeof(freed)), (unsigned long long)r->models,
		mc_cli_plural(r->models, "model", "models"), (unsigned long long)r->versions,
		mc_cli_plural(r->versions, "version", "versions"), (unsigned long long)r->blobs,
		mc_cli_plural(r->blobs, "blob", "blobs"), (unsigned long long)r->tmp_files,
		mc_cli_plural(r->tmp_files, "file", "files"));
	mc_format_size(r->bytes_after, after, sizeof(after));
	if (r->max_bytes)
		fprintf(f, "; %s of %s budget used\n", after,
			mc_format_size(r->max_bytes, max, sizeof(max)));
	else
		fprintf(f, "; %s used\n", after);
}

void mc_cli_gc_warn(const struct mc_gc_result *r, const char *kept)
{
	char after[32], max[32];

	if (r->budget_met)
		return;
	mc_cli_error("warning: the cache uses %s, over its %s budget: what is left is %s",
		     mc_format_size(r->bytes_after, after, sizeof(after)),
		     mc_format_size(r->max_bytes, max, sizeof(max)), kept);
}

static void print_evicted(const json_t *evicted, bool dry_run)
{
	char size[32], used[32];
	const json_t *m;
	size_t i;

	json_array_foreach(evicted, i, m)
	{
		printf("%s ", dry_run ? "would evict" : "evicted");
		mc_cli_put(stdout, json_string_value(json_object_get(m, "name")));
		printf(": %s, last used %s\n",
		       mc_format_size((uint64_t)json_integer_value(json_object_get(m, "bytes")),
				      size, sizeof(size)),
		       mc_cli_format_time(json_integer_value(json_object_get(m, "last_used_at")),
					  used, sizeof(used)));
	}
}

/* The budget to work to: --max-bytes, else the configured one; saved first with --save. */
static int resolve_budget(struct mc_cache *cache, struct gc_args *a, struct mc_err *err)
{
	if (a->save)
		return mc_cache_set_budget(cache, a->o.max_bytes, err);
	if (a->max_given)
		return 0;
	return mc_cache_budget(cache, &a->o.max_bytes, err);
}

static json_t *report_json(const struct gc_args *a, const struct mc_gc_result *r)
{
	json_t *o = mc_cli_gc_json(r);

	if (o && (json_object_set_new(o, "dry_run", json_boolean(a->o.dry_run)) ||
		  json_object_set_new(o, "evicted", json_incref(a->evicted)))) {
		json_decref(o);
		o = NULL;
	}
	return o;
}

int mc_cmd_gc(int argc, char **argv, struct mc_cli *cli)
{
	struct gc_args a;
	struct mc_gc_result res;
	struct mc_cache *cache;
	struct mc_err err;
	int nargs, status, ret;

	memset(&a, 0, sizeof(a));
	status = mc_cli_parse(cli, argc, argv, gc_options, gc_option, &a, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs)
		return mc_cli_usage_error(cli, "gc takes no arguments");
	if (a.save && !a.max_given)
		return mc_cli_usage_error(cli, "--save needs --max-bytes");
	if (a.save && a.o.dry_run)
		return mc_cli_usage_error(cli, "--save and --dry-run do not go together");
	a.evicted = json_array();
	if (!a.evicted)
		return mc_cli_print_json(NULL); /* reports the lack of memory */
	a.o.evicted = on_evicted;
	a.o.ctx = &a;

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		goto out;
	mc_err_init(&err);
	ret = resolve_budget(cache, &a, &err);
	if (!ret)
		ret = mc_cache_gc(cache, &a.o, &res, &err);
	mc_cache_close(cache);
	if (ret) {
		status = mc_cli_fail(ret, &err);
		goto out;
	}
	if (a.oom) {
		status = mc_cli_print_json(NULL);
		goto out;
	}
	if (cli->json) {
		status = mc_cli_print_json(report_json(&a, &res));
	} else {
		print_evicted(a.evicted, a.o.dry_run);
		if (cli->verbosity != MC_CLI_QUIET)
			mc_cli_gc_summary(stdout, &res, a.o.dry_run);
		status = MC_EXIT_OK;
	}
	mc_cli_gc_warn(&res, "pinned or being pulled");
out:
	json_decref(a.evicted);
	return status;
}
