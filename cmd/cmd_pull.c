/*
 * mcache pull URI... : fetch files into the cache as one model (mc_cache_pull()), with a
 * progress line while it runs and a one-line (or JSON) summary at the end. The command only
 * turns options into struct mc_pull_opts and the result into text; the cache does the work.
 */
#include "cli.h"

#include "mc_alloc.h"
#include "mc_util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "mc_banned.h"

/* The usage text below spells these out; keep them in step. */
_Static_assert(MC_MAX_CONNECTIONS == 256, "update mc_cmd_pull_usage");
_Static_assert(MC_DEFAULT_CONNECTIONS == 16, "update mc_cmd_pull_usage");
_Static_assert(MC_DEFAULT_CHUNK_SIZE == 16u << 20, "update mc_cmd_pull_usage");
_Static_assert(MC_DEFAULT_RETRIES == 5, "update mc_cmd_pull_usage");
_Static_assert(MC_DEFAULT_STALL_S == 5, "update mc_cmd_pull_usage");

const char mc_cmd_pull_usage[] =
    "usage: mcache pull URI... [--name NAME] [--connections N] [--chunk-size SIZE]\n"
    "                          [--max-rate RATE] [--ca-file FILE] [--writer KIND]\n"
    "                          [--retries N] [--stall-timeout SECONDS]\n"
    "                          [--include GLOB]... [--exclude GLOB]... [--insecure]\n"
    "                          [--unpack]\n"
    "\n"
    "Fetches every URI into the cache as one model; its files appear under\n"
    "CACHE_DIR/models/NAME/, each complete and verified. What the cache already holds is\n"
    "not fetched again; an interrupted pull resumes where it stopped. URIs:\n"
    "  https://host/path/file     one file (http:// too; presigned URLs work)\n"
    "  s3://bucket/prefix/        every object under the prefix (AWS_* environment)\n"
    "  s3://bucket/key            one object\n"
    "  hf://org/repo[@revision]   a Hugging Face Hub repository (HF_ENDPOINT, HF_TOKEN)\n"
    "A URI ending in .tar, .tar.gz, .tgz or .tar.zst is a bundle: fetched, then its\n"
    "files become the model's files; a symbolic link, device, unsafe path or an\n"
    "archive over the limits fails the pull (exit 3) and publishes nothing.\n"
    "\n"
    "  --name NAME          the model's name (default: from the first URI)\n"
    "  --connections N      range requests in flight, 1 to 256 (default 16)\n"
    "  --chunk-size SIZE    bytes per range request, a multiple of 1M up to 1G\n"
    "                       (default 16M)\n"
    "  --max-rate RATE      bandwidth cap for the whole pull, such as 200M or 200M/s\n"
    "                       (default: none)\n"
    "  --ca-file FILE       CA certificates (PEM) for https:// (default: $SSL_CERT_FILE,\n"
    "                       else the system's)\n"
    "  --writer KIND        auto, io_uring or pwrite (default: $MCACHE_WRITER, else auto)\n"
    "  --retries N          further tries of a range after a transient failure, 0 to 100,\n"
    "                       each on a new connection after a backoff (default 5)\n"
    "  --include GLOB       only files whose path in the model matches (repeatable),\n"
    "                       such as '*.safetensors'\n"
    "  --exclude GLOB       no file whose path matches (repeatable), such as '*.bin'\n"
    "  --unpack             every URI is a tar bundle (plain, gzip or zstd), whatever\n"
    "                       its name; --include/--exclude select bundles' files\n"
    "  --insecure           do not verify TLS certificates (says so on stderr)\n"
    "  --stall-timeout SECONDS\n"
    "                       abort and retry a transfer that receives nothing for this\n"
    "                       long, 1 to 3600 (default 5)\n";

enum {
	OPT_NAME = MC_CLI_OPT_CMD,
	OPT_CONNECTIONS,
	OPT_CHUNK_SIZE,
	OPT_MAX_RATE,
	OPT_CA_FILE,
	OPT_WRITER,
	OPT_RETRIES,
	OPT_STALL_TIMEOUT,
	OPT_INCLUDE,
	OPT_EXCLUDE,
	OPT_INSECURE,
	OPT_UNPACK,
};

/* What pull's options fill: the pull itself, and the glob lists (room for one per argument). */
struct pull_args {
	struct mc_pull_opts o;
	const char **include, **exclude;
};

static const struct option pull_options[] = {
    {"name", required_argument, NULL, OPT_NAME},
    {"connections", required_argument, NULL, OPT_CONNECTIONS},
    {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
    {"max-rate", required_argument, NULL, OPT_MAX_RATE},
    {"ca-file", required_argument, NULL, OPT_CA_FILE},
    {"writer", required_argument, NULL, OPT_WRITER},
    {"retries", required_argument, NULL, OPT_RETRIES},
    {"stall-timeout", required_argument, NULL, OPT_STALL_TIMEOUT},
    {"include", required_argument, NULL, OPT_INCLUDE},
    {"exclude", required_argument, NULL, OPT_EXCLUDE},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"unpack", no_argument, NULL, OPT_UNPACK},
    {NULL, 0, NULL, 0},
};

static int pull_option(void *ctx, int opt, const char *arg, struct mc_err *err)
{
	struct pull_args *a = ctx;
	struct mc_pull_opts *o = &a->o;
	char q[80];
	uint64_t v;

	switch (opt) {
	case OPT_NAME:
		if (!mc_name_is_valid(arg))
			return mc_err_set(err, MC_E_USAGE,
					  "invalid --name '%s': use 1 to 128 of A-Z a-z 0-9 . _ -, "
					  "not starting with '.' or '-'",
					  mc_cli_quote(arg, q, sizeof(q)));
		o->name = arg;
		return 0;
	case OPT_CONNECTIONS:
		return mc_cli_parse_connections(arg, &o->fetch.connections, err);
	case OPT_CHUNK_SIZE:
		return mc_cli_parse_chunk_size(arg, &o->fetch.chunk_size, err);
	case OPT_MAX_RATE:
		return mc_cli_parse_rate(arg, &o->fetch.max_rate, err);
	case OPT_CA_FILE:
		if (!*arg)
			return mc_err_set(err, MC_E_USAGE, "invalid --ca-file: empty file name");
		o->fetch.ca_file = arg;
		return 0;
	case OPT_WRITER:
		if (mc_writer_kind_parse(arg, &o->fetch.writer))
			return mc_err_set(
			    err, MC_E_USAGE,
			    "invalid --writer '%s': expected auto, io_uring or pwrite",
			    mc_cli_quote(arg, q, sizeof(q)));
		return 0;
	case OPT_RETRIES:
		if (mc_parse_uint(arg, 0, 100, &v))
			return mc_err_set(err, MC_E_USAGE,
					  "invalid --retries '%s': expected a number from 0 to 100",
					  mc_cli_quote(arg, q, sizeof(q)));
		o->fetch.retries = (unsigned)v;
		return 0;
	case OPT_STALL_TIMEOUT:
		if (mc_parse_uint(arg, 1, 3600, &v))
			return mc_err_set(
			    err, MC_E_USAGE,
			    "invalid --stall-timeout '%s': expected seconds from 1 to 3600",
			    mc_cli_quote(arg, q, sizeof(q)));
		o->fetch.stall_timeout_s = (unsigned)v;
		return 0;
	case OPT_INCLUDE:
	case OPT_EXCLUDE:
		if (!*arg)
			return mc_err_set(err, MC_E_USAGE, "invalid --%s: empty pattern",
					  opt == OPT_INCLUDE ? "include" : "exclude");
		if (opt == OPT_INCLUDE)
			a->include[o->ninclude++] = arg;
		else
			a->exclude[o->nexclude++] = arg;
		return 0;
	case OPT_INSECURE:
		o->fetch.insecure = true;
		return 0;
	case OPT_UNPACK:
		o->unpack = true;
		return 0;
	}
	return MC_E_USAGE;
}

static json_t *result_json(const struct mc_pull_result *r, double seconds)
{
	json_t *o = json_object();

	if (!o || json_object_set_new(o, "name", mc_cli_json_string(r->name)) ||
	    json_object_set_new(o, "version", json_integer(r->version)) ||
	    json_object_set_new(o, "files", mc_cli_json_uint(r->files)) ||
	    json_object_set_new(o, "bytes", mc_cli_json_uint(r->bytes)) ||
	    json_object_set_new(o, "bytes_fetched", mc_cli_json_uint(r->bytes_fetched)) ||
	    json_object_set_new(o, "files_reused", mc_cli_json_uint(r->files_reused)) ||
	    json_object_set_new(o, "bundles_unpacked", mc_cli_json_uint(r->bundles_unpacked)) ||
	    json_object_set_new(o, "seconds", json_real(seconds)) ||
	    json_object_set_new(o, "writer", mc_cli_json_string(r->writer)) ||
	    json_object_set_new(o, "gc", r->gc_ran ? mc_cli_gc_json(&r->gc) : json_null())) {
		json_decref(o);
		return NULL;
	}
	return o;
}

/* A budget is configured: what the gc after the pull did, or why it could not. */
static void report_gc(const struct mc_cli *cli, const struct mc_pull_result *r)
{
	if (r->gc_error[0])
		mc_cli_error("warning: the pull succeeded, but not the gc after it: %s",
			     r->gc_error);
	if (!r->gc_ran)
		return;
	if (!cli->json && cli->verbosity != MC_CLI_QUIET && (r->gc.bytes_freed || r->gc.models))
		mc_cli_gc_summary(stdout, &r->gc, false);
	mc_cli_gc_warn(&r->gc, "pinned, being pulled, or the model just pulled");
}

static void print_result(const struct mc_pull_result *r, double seconds)
{
	char size[32], fetched[32], rate[32];
	double per_s = seconds > 0 ? (double)r->bytes_fetched / seconds : 0;

	printf("pulled ");
	mc_cli_put(stdout, r->name);
	printf(": %llu %s, %s in %.2f s, ", (unsigned long long)r->files,
	       mc_cli_plural(r->files, "file", "files"),
	       mc_format_size(r->bytes, size, sizeof(size)), seconds);
	/* A warm cache fetches nothing: say so rather than print a rate of 0 B/s. */
	if (r->bytes_fetched)
		printf("fetched %s at %s/s",
		       mc_format_size(r->bytes_fetched, fetched, sizeof(fetched)),
		       mc_format_size((uint64_t)per_s, rate, sizeof(rate)));
	else
		printf("fetched nothing");
	printf(", reused %llu %s, writer %s\n", (unsigned long long)r->files_reused,
	       mc_cli_plural(r->files_reused, "file", "files"), r->writer ? r->writer : "none");
}

/* Another process is downloading a file of this model: say why the pull pauses. */
static void pull_notice(void *ctx, const char *label)
{
	const struct mc_cli *cli = ctx;

	if (cli->verbosity != MC_CLI_QUIET)
		fprintf(stderr,
			"mcache: waiting for '%s': another process is downloading it into this "
			"cache\n",
			label);
}

int mc_cmd_pull(int argc, char **argv, struct mc_cli *cli)
{
	struct pull_args a;
	struct mc_pull_opts *o = &a.o;
	struct mc_pull_result res;
	struct mc_cli_progress progress;
	struct mc_cache *cache;
	struct mc_err err;
	uint64_t start_ms;
	double seconds;
	int nargs, status, ret;

	memset(&a, 0, sizeof(a));
	memset(&res, 0, sizeof(res));
	mc_fetch_opts_init(&o->fetch);
	a.include = mc_calloc((size_t)argc + 1, sizeof(*a.include));
	a.exclude = mc_calloc((size_t)argc + 1, sizeof(*a.exclude));
	if (!a.include || !a.exclude) {
		status = mc_cli_fail(-ENOMEM, NULL);
		goto out;
	}
	o->include = a.include;
	o->exclude = a.exclude;
	status = mc_cli_parse(cli, argc, argv, pull_options, pull_option, &a, &nargs);
	if (status != MC_CLI_RUN)
		goto out;
	if (nargs == 0) {
		status = mc_cli_usage_error(cli, "pull needs at least one URI");
		goto out;
	}
	o->uris = (const char *const *)(argv + 1);
	o->nuris = (size_t)nargs;
	if (o->fetch.insecure)
		fputs("mcache: warning: --insecure: TLS certificates are not verified\n", stderr);

	status = mc_cli_open_cache(cli, &cache);
	if (status)
		goto out;
	mc_cli_progress_init(&progress, cli, &o->fetch);
	o->notice = pull_notice;
	o->notice_ctx = cli;
	mc_err_init(&err);
	start_ms = mc_now_ms();
	ret = mc_cache_pull(cache, o, &res, &err);
	seconds = (double)(mc_now_ms() - start_ms) / 1000.0;
	mc_cli_progress_end(&progress);
	mc_cache_close(cache);
	if (ret) {
		status = mc_cli_fail(ret, &err);
		goto out;
	}
	if (cli->json) {
		status = mc_cli_print_json(result_json(&res, seconds));
		report_gc(cli, &res);
		goto out;
	}
	if (cli->verbosity != MC_CLI_QUIET)
		print_result(&res, seconds);
	report_gc(cli, &res);
	status = MC_EXIT_OK;
out:
	mc_free(a.include);
	mc_free(a.exclude);
	return status;
}
