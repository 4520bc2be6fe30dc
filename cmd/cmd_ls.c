/*
 * mcache ls: the models in the cache (mc_cache_list()). The listing is gathered once into a
 * JSON document, which --json prints as is and the human form renders as a table, so the two
 * outputs cannot disagree. With -v the table also shows each model's files.
 */
#include "cli.h"

#include "mc_util.h"

#include <errno.h>
#include <string.h>

#include "mc_banned.h"

const char mc_cmd_ls_usage[] =
    "usage: mcache ls\n"
    "\n"
    "Lists the models in the cache: name, version, state, files, size, pin, last use\n"
    "and last verify (time, result, deep or fast).\n"
    "With -v, also each model's files (size, digest, path); with --json, a document\n"
    "with every field (see mcache(1)).\n";

struct ls_ctx {
	json_t *models;
	struct mc_err *err;
};

static json_t *file_json(const struct mc_file_info *f)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "path", mc_cli_json_string(f->path)) ||
	    json_object_set_new(o, "size", mc_cli_json_uint(f->size)) ||
	    json_object_set_new(o, "digest", mc_cli_json_string(f->digest)) ||
	    json_object_set_new(o, "source", mc_cli_json_string(f->source)) ||
	    json_object_set_new(o, "etag", mc_cli_json_string(f->etag))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* {"at", "findings", "ok", "deep"} of the last recorded verify, or null for never. */
static json_t *last_verify_json(const struct mc_model_info *m)
{
	json_t *o;

	if (m->verified_at <= 0 || m->verify_findings < 0)
		return json_null();
	o = json_object();
	if (!o || json_object_set_new(o, "at", json_integer(m->verified_at)) ||
	    json_object_set_new(o, "findings", json_integer(m->verify_findings)) ||
	    json_object_set_new(o, "ok", json_boolean(m->verify_findings == 0)) ||
	    json_object_set_new(o, "deep", json_boolean(m->verify_deep))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *model_json(const struct mc_model_info *m)
{
	json_t *o = json_object(), *files = json_array();

	if (!o || !files)
		goto out_fail;
	for (size_t i = 0; i < m->nfile; i++)
		if (json_array_append_new(files, file_json(&m->file[i])))
			goto out_fail;
	if (json_object_set_new(o, "name", mc_cli_json_string(m->name)) ||
	    json_object_set_new(o, "state", mc_cli_json_string(m->state)) ||
	    json_object_set_new(o, "version", json_integer(m->version)) ||
	    json_object_set_new(o, "files", mc_cli_json_uint(m->files)) ||
	    json_object_set_new(o, "bytes", mc_cli_json_uint(m->bytes)) ||
	    json_object_set_new(o, "pinned", json_boolean(m->pinned)) ||
	    json_object_set_new(o, "created_at", json_integer(m->created_at)) ||
	    json_object_set_new(o, "last_used_at", json_integer(m->last_used_at)) ||
	    json_object_set_new(o, "last_verify", last_verify_json(m)))
		goto out_fail;
	if (json_object_set_new(o, "file_list", files)) {
		files = NULL; /* taken and released by json_object_set_new() */
		goto out_fail;
	}
	return o;
out_fail:
	json_decref(files);
	json_decref(o);
	return NULL;
}

static int add_model(void *arg, const struct mc_model_info *m)
{
	struct ls_ctx *ctx = arg;

	if (json_array_append_new(ctx->models, model_json(m)))
		return mc_err_errno(ctx->err, -ENOMEM, "cannot list model '%s'", m->name);
	return 0;
}

static int64_t get_int(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static const char *get_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static void print_files(const json_t *files)
{
	const json_t *f;
	char size[32];
	size_t i;

	json_array_foreach(files, i, f)
	{
		printf("    %10s  %s  ",
		       mc_format_size((uint64_t)get_int(f, "size"), size, sizeof(size)),
		       get_str(f, "digest"));
		mc_cli_put(stdout, get_str(f, "path"));
		putchar('\n');
	}
}

/* "2024-05-01 12:34 ok (deep)", "... 3 findings (fast)", or "-" for never. */
static char *format_verify(const json_t *v, char *buf, size_t len)
{
	char at[32];
	int64_t n = get_int(v, "findings");

	if (!json_is_object(v)) {
		snprintf(buf, len, "-");
		return buf;
	}
	mc_cli_format_time(get_int(v, "at"), at, sizeof(at));
	if (n == 0)
		snprintf(buf, len, "%s ok (%s)", at,
			 json_is_true(json_object_get(v, "deep")) ? "deep" : "fast");
	else
		snprintf(buf, len, "%s %lld %s (%s)", at, (long long)n,
			 mc_cli_plural((uint64_t)n, "finding", "findings"),
			 json_is_true(json_object_get(v, "deep")) ? "deep" : "fast");
	return buf;
}

static void print_table(const json_t *models, bool with_files)
{
	int name_width = 4; /* "NAME" */
	const json_t *m;
	char size[32], used[32], verified[80];
	size_t i;

	json_array_foreach(models, i, m)
	{
		int n = (int)strlen(get_str(m, "name"));

		if (n > name_width)
			name_width = n;
	}
	printf("%-*s  %7s  %-8s  %5s  %10s  %-6s  %-16s  %s\n", name_width, "NAME", "VERSION",
	       "STATE", "FILES", "SIZE", "PINNED", "LAST USED", "LAST VERIFIED");
	json_array_foreach(models, i, m)
	{
		mc_cli_put(stdout, get_str(m, "name"));
		printf(
		    "%*s  %7lld  %-8s  %5lld  %10s  %-6s  %-16s  %s\n",
		    name_width - (int)strlen(get_str(m, "name")), "",
		    (long long)get_int(m, "version"), get_str(m, "state"),
		    (long long)get_int(m, "files"),
		    mc_format_size((uint64_t)get_int(m, "bytes"), size, sizeof(size)),
		    json_is_true(json_object_get(m, "pinned")) ? "yes" : "no",
		    mc_cli_format_time(get_int(m, "last_used_at"), used, sizeof(used)),
		    format_verify(json_object_get(m, "last_verify"), verified, sizeof(verified)));
		if (with_files)
			print_files(json_object_get(m, "file_list"));
	}
}

int mc_cmd_ls(int argc, char **argv, struct mc_cli *cli)
{
	struct mc_cache *cache;
	struct mc_err err;
	struct ls_ctx ctx;
	json_t *doc;
	int nargs, status, ret;

	status = mc_cli_parse(cli, argc, argv, NULL, NULL, NULL, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs)
		return mc_cli_usage_error(cli, "ls takes no arguments");

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		return status;
	mc_err_init(&err);
	ctx.err = &err;
	ctx.models = json_array();
	doc = json_object();
	if (!ctx.models || !doc)
		ret = mc_err_errno(&err, -ENOMEM, "cannot list the cache");
	else
		ret = mc_cache_list(cache, add_model, &ctx, &err);
	if (!ret &&
	    (json_object_set_new(doc, "cache_dir", mc_cli_json_string(mc_cache_dir(cache))) ||
	     json_object_set_new(doc, "models", json_incref(ctx.models))))
		ret = mc_err_errno(&err, -ENOMEM, "cannot list the cache");
	mc_cache_close(cache);
	if (ret) {
		status = mc_cli_fail(ret, &err);
	} else if (cli->json) {
		status = mc_cli_print_json(json_incref(doc));
	} else {
		print_table(ctx.models, cli->verbosity == MC_CLI_VERBOSE);
		status = MC_EXIT_OK;
	}
	json_decref(ctx.models);
	json_decref(doc);
	return status;
}
