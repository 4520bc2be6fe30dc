/*
 * mcache rebuild-index: rebuilds a lost or damaged index from the blobs and trees on disk
 * (mc_cache_rebuild_index()). It does not open the cache the normal way, since that is exactly
 * what refuses a damaged index. Prints one line per note (what was moved aside, quarantined,
 * damaged, missing, adopted or skipped) and a summary; --json gives one document.
 */
#include "cli.h"

#include <string.h>

#include "mc_banned.h"

const char mc_cmd_rebuild_index_usage[] =
    "usage: mcache rebuild-index\n"
    "\n"
    "Rebuilds the index (DIR/index.db) from the blobs and trees on disk, for an index that\n"
    "is missing, is not a database, or is damaged. Needs the cache to itself: fails when\n"
    "another mcache process has it open. Rehashes every blob; one whose bytes do not match\n"
    "its name is moved to DIR/quarantine/. Sources and validators come from each version's\n"
    "sidecar (trees/NAME/V.json). The old index.db is moved aside to\n"
    "index.db.corrupt-<unix time>, never deleted; partial downloads in tmp/ are deleted.\n"
    "Prints what it moved, quarantined or could not restore, then a summary.\n";

static json_t *note_json(const struct mc_rebuild_note *n)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "kind", mc_cli_json_string(n->kind)) ||
	    json_object_set_new(o, "path", mc_cli_json_string(n->path)) ||
	    json_object_set_new(o, "detail", mc_cli_json_string(n->detail))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static json_t *result_json(const char *dir, const struct mc_rebuild_result *r)
{
	json_t *o = json_object(), *notes = json_array();

	if (!o || !notes)
		goto out_fail;
	for (size_t i = 0; i < r->nnote; i++)
		if (json_array_append_new(notes, note_json(&r->note[i])))
			goto out_fail;
	if (json_object_set_new(o, "cache_dir", mc_cli_json_string(dir)) ||
	    json_object_set_new(o, "moved_aside",
				r->moved_aside[0] ? mc_cli_json_string(r->moved_aside)
						  : json_null()) ||
	    json_object_set_new(o, "models", mc_cli_json_uint(r->models)) ||
	    json_object_set_new(o, "versions", mc_cli_json_uint(r->versions)) ||
	    json_object_set_new(o, "files", mc_cli_json_uint(r->files)) ||
	    json_object_set_new(o, "blobs", mc_cli_json_uint(r->blobs)) ||
	    json_object_set_new(o, "blobs_adopted", mc_cli_json_uint(r->blobs_adopted)) ||
	    json_object_set_new(o, "sidecars", mc_cli_json_uint(r->sidecars)) ||
	    json_object_set_new(o, "quarantined", mc_cli_json_uint(r->quarantined)) ||
	    json_object_set_new(o, "damaged", mc_cli_json_uint(r->damaged)) ||
	    json_object_set_new(o, "missing", mc_cli_json_uint(r->missing)) ||
	    json_object_set_new(o, "tmp_removed", mc_cli_json_uint(r->tmp_removed)))
		goto out_fail;
	if (json_object_set_new(o, "notes", notes)) {
		notes = NULL; /* taken and released by json_object_set_new() */
		goto out_fail;
	}
	return o;
out_fail:
	json_decref(notes);
	json_decref(o);
	return NULL;
}

/* "KIND: PATH: DETAIL", one line each, then the summary unless -q. */
static void print_result(const struct mc_cli *cli, const struct mc_rebuild_result *r)
{
	for (size_t i = 0; i < r->nnote; i++) {
		mc_cli_put(stdout, r->note[i].kind);
		fputs(": ", stdout);
		mc_cli_put(stdout, r->note[i].path);
		fputs(": ", stdout);
		mc_cli_put(stdout, r->note[i].detail);
		fputc('\n', stdout);
	}
	if (cli->verbosity == MC_CLI_QUIET)
		return;
	printf("rebuild-index: %llu %s, %llu %s, %llu %s, %llu %s (%llu adopted), "
	       "%llu quarantined, %llu damaged, %llu missing, %llu temp %s removed",
	       (unsigned long long)r->models, mc_cli_plural(r->models, "model", "models"),
	       (unsigned long long)r->versions, mc_cli_plural(r->versions, "version", "versions"),
	       (unsigned long long)r->files, mc_cli_plural(r->files, "file", "files"),
	       (unsigned long long)r->blobs, mc_cli_plural(r->blobs, "blob", "blobs"),
	       (unsigned long long)r->blobs_adopted, (unsigned long long)r->quarantined,
	       (unsigned long long)r->damaged, (unsigned long long)r->missing,
	       (unsigned long long)r->tmp_removed, mc_cli_plural(r->tmp_removed, "file", "files"));
	if (r->moved_aside[0]) {
		fputs("; the old index is ", stdout);
		mc_cli_put(stdout, r->moved_aside);
	}
	fputc('\n', stdout);
}

int mc_cmd_rebuild_index(int argc, char **argv, struct mc_cli *cli)
{
	struct mc_rebuild_result res;
	struct mc_err err;
	int nargs, status, ret;

	status = mc_cli_parse(cli, argc, argv, NULL, NULL, NULL, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs > 0)
		return mc_cli_usage_error(cli, "rebuild-index takes no operands");
	status = MC_EXIT_OK;
	mc_err_init(&err);
	ret = mc_cache_rebuild_index(mc_cli_cache_dir(cli), mc_cli_cache_flags(cli), &res, &err);
	if (ret)
		status = mc_cli_fail(ret, &err);
	else if (cli->json)
		status = mc_cli_print_json(result_json(mc_cli_cache_dir(cli), &res));
	else
		print_result(cli, &res);
	mc_rebuild_result_release(&res);
	return status;
}
