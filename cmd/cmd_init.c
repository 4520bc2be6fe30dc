/*
 * mcache init: the init container (initcontainer/). It is configured by the environment, as
 * the wget snippet it replaces was; the command line adds only --dry-run and the global
 * options.
 */
#include "cli.h"

#include "mc_init.h"

#include "mc_banned.h"

const char mc_cmd_init_usage[] =
    "usage: mcache init [--dry-run]\n"
    "\n"
    "The init container of an inference pod: ensures the models in the node cache and places\n"
    "them in the target directory (hard links when the cache shares its filesystem).\n"
    "Configured by the environment:\n"
    "  MODEL_URL               one model file (http(s), s3, hf) -> $MCACHE_TARGET/$MODEL_FILE\n"
    "  MCACHE_MANIFEST         a YAML manifest of models -> $MCACHE_TARGET/NAME/\n"
    "  MCACHE_TARGET           target directory (default /models)\n"
    "  MODEL_FILE              file name for MODEL_URL (default model.safetensors)\n"
    "  MCACHE_MODEL_NAME       cache name for MODEL_URL (default: from the URL)\n"
    "  MCACHE_DIR              cache directory (default $MCACHE_TARGET/.mcache)\n"
    "  MCACHE_OFFLINE=1        no origin check when the cache holds the model\n"
    "  MCACHE_DRY_RUN=1        print what would be done, change nothing\n"
    "  MCACHE_TERMINATION_LOG  termination message file (default /dev/termination-log)\n"
    "  MCACHE_CONNECTIONS, MCACHE_MAX_RATE   transfer limits\n"
    "Logs are JSON lines on stderr. See mcache(1).\n"
    "\n"
    "  --dry-run   print what would be fetched and placed; no request, nothing written\n";

enum { OPT_DRY_RUN = MC_CLI_OPT_CMD };

static const struct option init_options[] = {
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {NULL, 0, NULL, 0},
};

static int init_option(void *ctx, int opt, const char *arg, struct mc_err *err)
{
	struct mc_init_args *a = ctx;

	(void)arg;
	(void)err;
	if (opt == OPT_DRY_RUN)
		a->dry_run = true;
	return 0;
}

int mc_cmd_init(int argc, char **argv, struct mc_cli *cli)
{
	struct mc_init_args a = {0};
	int nargs, status;

	status = mc_cli_parse(cli, argc, argv, init_options, init_option, &a, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs)
		return mc_cli_usage_error(cli, "init takes no arguments: it reads the environment");
	a.cache_dir = cli->cache_dir_opt;
	a.allow_shared_dir = cli->allow_shared_dir;
	a.quiet = cli->verbosity == MC_CLI_QUIET;
	return mc_init_main(&a);
}
