/*
 * mcache rm NAME...: removes models from the cache (mc_cache_rm()): the models/NAME link,
 * the versions and their trees, then the blobs no other model shares. A pinned model is
 * removed too: a pin only keeps gc away.
 *
 * Every name is tried, in order; a failure prints its one line and the command goes on, then
 * exits with the status of the first failure: 7 for a name not in the cache, 6 for a model
 * another process is pulling right now.
 */
#include "cli.h"

#include "mc_util.h"

#include <string.h>

#include "mc_banned.h"

const char mc_cmd_rm_usage[] =
    "usage: mcache rm NAME...\n"
    "\n"
    "Removes the named models from the cache: CACHE_DIR/models/NAME, their versions\n"
    "and trees, and the files no other model shares. Pinned models too. A model that\n"
    "another process is pulling is refused (exit 6); a name not in the cache exits 7.\n";

static json_t *removed_json(const char *name, const struct mc_gc_result *r)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "name", mc_cli_json_string(name)) ||
	    json_object_set_new(o, "bytes_freed", mc_cli_json_uint(r->bytes_freed)) ||
	    json_object_set_new(o, "blobs", mc_cli_json_uint(r->blobs))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int mc_cmd_rm(int argc, char **argv, struct mc_cli *cli)
{
	struct mc_gc_result res;
	struct mc_cache *cache;
	struct mc_err err;
	json_t *removed, *doc;
	char q[80], size[32];
	int nargs, status, first = MC_EXIT_OK, ret;

	status = mc_cli_parse(cli, argc, argv, NULL, NULL, NULL, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs == 0)
		return mc_cli_usage_error(cli, "rm needs at least one model name");
	for (int i = 1; i <= nargs; i++)
		if (!mc_name_is_valid(argv[i]))
			return mc_cli_usage_error(cli, "invalid model name '%s'",
						  mc_cli_quote(argv[i], q, sizeof(q)));
	removed = json_array();
	if (!removed)
		return mc_cli_print_json(NULL); /* reports the lack of memory */

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		goto out;
	for (int i = 1; i <= nargs; i++) {
		mc_err_init(&err);
		ret = mc_cache_rm(cache, argv[i], &res, &err);
		if (ret) {
			status = mc_cli_fail(ret, &err);
			first = first ? first : status;
			continue;
		}
		/* Takes the new object, also when it fails. */
		if (json_array_append_new(removed, removed_json(argv[i], &res))) {
			first = first ? first : mc_cli_print_json(NULL);
			continue;
		}
		if (!cli->json && cli->verbosity != MC_CLI_QUIET)
			printf("removed %s: freed %s\n", argv[i],
			       mc_format_size(res.bytes_freed, size, sizeof(size)));
	}
	mc_cache_close(cache);
	status = MC_EXIT_OK;
	if (cli->json) {
		doc = json_object();
		if (doc && json_object_set_new(doc, "removed", json_incref(removed))) {
			json_decref(doc);
			doc = NULL;
		}
		status = mc_cli_print_json(doc);
	}
	if (first)
		status = first;
out:
	json_decref(removed);
	return status;
}
