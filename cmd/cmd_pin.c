/*
 * mcache pin NAME... and mcache unpin NAME...: mark models that gc must never evict, or lift
 * the mark (mc_cache_pin()). One file for both: the same loop with the flag reversed.
 *
 * Every name is tried, in order; a failure prints its one line and the command goes on, then
 * exits with the status of the first failure (7 for a name not in the cache), like rm(1).
 */
#include "cli.h"

#include "mc_util.h"

#include <string.h>

#include "mc_banned.h"

const char mc_cmd_pin_usage[] =
    "usage: mcache pin NAME...\n"
    "\n"
    "Pins the named models: gc never evicts them, whatever the budget (rm still\n"
    "removes them). Pinning a pinned model is not an error.\n";

const char mc_cmd_unpin_usage[] =
    "usage: mcache unpin NAME...\n"
    "\n"
    "Unpins the named models: gc may evict them again, least recently used first, when\n"
    "the cache is over its budget.\n";

static int set_pins(int argc, char **argv, struct mc_cli *cli, bool pinned)
{
	const char *verb = pinned ? "pin" : "unpin";
	struct mc_cache *cache;
	struct mc_err err;
	json_t *done = NULL;
	char q[80];
	int nargs, status, first = MC_EXIT_OK, ret;

	status = mc_cli_parse(cli, argc, argv, NULL, NULL, NULL, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs == 0)
		return mc_cli_usage_error(cli, "%s needs at least one model name", verb);
	for (int i = 1; i <= nargs; i++)
		if (!mc_name_is_valid(argv[i]))
			return mc_cli_usage_error(cli, "invalid model name '%s'",
						  mc_cli_quote(argv[i], q, sizeof(q)));
	done = json_array();
	if (!done)
		return mc_cli_print_json(NULL); /* reports the lack of memory */

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		goto out;
	for (int i = 1; i <= nargs; i++) {
		mc_err_init(&err);
		ret = mc_cache_pin(cache, argv[i], pinned, &err);
		if (ret) {
			status = mc_cli_fail(ret, &err);
			first = first ? first : status;
			continue;
		}
		if (json_array_append_new(done, mc_cli_json_string(argv[i]))) {
			first = first ? first : mc_cli_print_json(NULL);
			continue;
		}
		if (!cli->json && cli->verbosity != MC_CLI_QUIET)
			printf("%sned %s\n", verb, argv[i]);
	}
	mc_cache_close(cache);
	status = MC_EXIT_OK;
	if (cli->json) {
		json_t *doc = json_object();

		if (doc &&
		    json_object_set_new(doc, pinned ? "pinned" : "unpinned", json_incref(done))) {
			json_decref(doc);
			doc = NULL;
		}
		status = mc_cli_print_json(doc);
	}
	if (first)
		status = first;
out:
	json_decref(done);
	return status;
}

int mc_cmd_pin(int argc, char **argv, struct mc_cli *cli)
{
	return set_pins(argc, argv, cli, true);
}

int mc_cmd_unpin(int argc, char **argv, struct mc_cli *cli)
{
	return set_pins(argc, argv, cli, false);
}
