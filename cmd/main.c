/*
 * The mcache binary: global options, the command table, signals and the exit status.
 *
 * The table below is the one place that says which commands exist (git's cmd_struct); each
 * command lives in its own thin cmd_*.c file that parses its options, makes one library call
 * and prints the result. main() sets up what every command shares (allocation fault injection,
 * the fetcher's global state, SIGINT/SIGTERM), runs the command, and makes sure that what was
 * printed on stdout really got out before it reports success.
 */
#include "cli.h"

#include "mc_alloc.h"
#include "mc_fetch.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "mc_banned.h"

static int cmd_help(int argc, char **argv, struct mc_cli *cli);

static const char help_usage[] = "usage: mcache help [COMMAND]\n"
				 "\n"
				 "Shows the usage of COMMAND, or of mcache.\n";

static const struct mc_cmd commands[] = {
    {"pull", mc_cmd_pull, "fetch files into the cache as a model", mc_cmd_pull_usage,
     MC_CMD_STOPPABLE},
    {"ls", mc_cmd_ls, "list the models in the cache", mc_cmd_ls_usage},
    {"verify", mc_cmd_verify, "check cached files against the index", mc_cmd_verify_usage,
     MC_CMD_STOPPABLE},
    {"metrics", mc_cmd_metrics, "print the cache's metrics for Prometheus", mc_cmd_metrics_usage,
     MC_CMD_STOPPABLE},
    {"pin", mc_cmd_pin, "keep models from being evicted by gc", mc_cmd_pin_usage},
    {"unpin", mc_cmd_unpin, "let gc evict models again", mc_cmd_unpin_usage},
    {"rm", mc_cmd_rm, "remove models from the cache", mc_cmd_rm_usage},
    {"gc", mc_cmd_gc, "free space: garbage, then LRU models over the budget", mc_cmd_gc_usage},
    {"rebuild-index", mc_cmd_rebuild_index, "rebuild a lost or damaged index from the disk",
     mc_cmd_rebuild_index_usage},
    {"prewarm", mc_cmd_prewarm, "pull every model of a YAML manifest, by priority",
     mc_cmd_prewarm_usage, MC_CMD_STOPPABLE},
    {"init", mc_cmd_init, "the init container: ensure models, place them in the target",
     mc_cmd_init_usage, MC_CMD_STOPPABLE},
    {"help", cmd_help, "show the usage of a command", help_usage},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct mc_cmd *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

static void print_help(FILE *f)
{
	fputs("usage: mcache [--cache-dir DIR] [--allow-shared-dir] [--json] [-q | -v] COMMAND "
	      "[ARGS...]\n"
	      "       mcache --version | --help | help COMMAND | COMMAND --help\n"
	      "\n"
	      "Fetches ML model weights into a node cache, fast, resumable and verified.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-15s%s\n", commands[i].name, commands[i].summary);
	fputs("\n"
	      "Global options (before or after the command):\n"
	      "  --cache-dir DIR   the cache (default: $MCACHE_DIR, else " MC_DEFAULT_CACHE_DIR
	      ")\n"
	      "  --allow-shared-dir\n"
	      "                    accept a cache directory other users can write\n"
	      "                    (world-writable, or owned by another user)\n"
	      "  --json            print results as one JSON document on stdout\n"
	      "  -q, --quiet       no progress and no summary line\n"
	      "  -v, --verbose     progress lines even when stderr is not a terminal;\n"
	      "                    ls also lists files\n"
	      "  -h, --help        this help, or a command's\n"
	      "  --version         the version of mcache and its libraries\n"
	      "\n"
	      "Environment:\n"
	      "  MCACHE_DIR        the cache directory when --cache-dir is not given\n"
	      "  MCACHE_WRITER     pull's writer when --writer is not given\n"
	      "  MCACHE_MAX_BYTES  the cache's budget for gc and pull (over gc --save's)\n"
	      "  MCACHE_ALLOW_SHARED_DIR\n"
	      "                    1: as --allow-shared-dir\n"
	      "  SSL_CERT_FILE     CA certificates for https:// when --ca-file is not given\n"
	      "  MCACHE_FAIL_ALLOC fail the Nth memory allocation and later ones (tests)\n"
	      "\n"
	      "Exit status:\n"
	      "  0     success\n"
	      "  1     verify found problems\n"
	      "  2     usage: a bad option, argument, name or URI\n"
	      "  3     the origin failed: DNS, TCP, TLS, HTTP, the object changed, or a\n"
	      "        bundle was refused\n"
	      "  4     integrity: size or checksum mismatch\n"
	      "  5     no space left on the cache's filesystem\n"
	      "  6     local I/O, permissions, memory or index\n"
	      "  7     model not found\n"
	      "  130   interrupted by SIGINT or SIGTERM\n"
	      "\n"
	      "See 'mcache COMMAND --help' and mcache(1).\n",
	      f);
}

static int cmd_help(int argc, char **argv, struct mc_cli *cli)
{
	const struct mc_cmd *cmd;
	char q[80];
	int nargs, status;

	status = mc_cli_parse(cli, argc, argv, NULL, NULL, NULL, &nargs);
	if (status != MC_CLI_RUN)
		return status;
	if (nargs == 0) {
		print_help(stdout);
		return MC_EXIT_OK;
	}
	if (nargs > 1)
		return mc_cli_usage_error(cli, "help takes one command");
	cmd = find_command(argv[1]);
	if (!cmd)
		return mc_cli_usage_error(NULL, "unknown command '%s'",
					  mc_cli_quote(argv[1], q, sizeof(q)));
	fputs(cmd->usage, stdout);
	return MC_EXIT_OK;
}

unsigned mc_cli_cache_flags(const struct mc_cli *cli)
{
	const char *env = getenv("MCACHE_ALLOW_SHARED_DIR");
	unsigned flags = 0;

	if (cli->allow_shared_dir || (env && !strcmp(env, "1")))
		flags |= MC_CACHE_ALLOW_SHARED_DIR;
	return flags;
}

int mc_cli_open_cache(const struct mc_cli *cli, struct mc_cache **out)
{
	struct mc_err err;
	int ret;

	mc_err_init(&err);
	ret = mc_cache_open2(out, mc_cli_cache_dir(cli), mc_cli_cache_flags(cli), &err);
	return ret ? mc_cli_fail(ret, &err) : MC_EXIT_OK;
}

static volatile sig_atomic_t signalled;

/*
 * For a stoppable command, the first SIGINT or SIGTERM asks the running transfer to stop
 * cleanly (what is durable stays durable, the command exits 130); a second one ends the
 * process at once, so a stuck process can always be stopped.
 */
static void on_signal(int sig)
{
	if (signalled) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	signalled = 1;
	mc_fetch_interrupt();
}

static void install_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

/* Output that never reached stdout (a full disk, a closed pipe) is a failure too. */
static int finish_stdout(int status)
{
	if (fflush(stdout) == 0 && !ferror(stdout))
		return status;
	if (status == MC_EXIT_OK) {
		mc_cli_error("cannot write to standard output: %s", strerror(errno));
		status = mc_exit_code(errno ? -errno : -EIO);
	}
	return status;
}

static int run(int argc, char **argv)
{
	static const struct option options[] = {
	    MC_CLI_GLOBAL_OPTIONS,
	    {"version", no_argument, NULL, MC_CLI_OPT_VERSION},
	    {NULL, 0, NULL, 0},
	};
	struct mc_cli cli;
	const struct mc_cmd *cmd;
	struct mc_err err;
	char q[80];
	int c, ret, status;

	memset(&cli, 0, sizeof(cli));
	optind = 0;
	opterr = 0;
	/* "+": the options before the command end at the command's name. */
	while ((c = getopt_long(argc, argv, "+" MC_CLI_GLOBAL_SHORT, options, NULL)) != -1) {
		switch (c) {
		case MC_CLI_OPT_HELP:
			print_help(stdout);
			return MC_EXIT_OK;
		case MC_CLI_OPT_VERSION:
			printf("mcache %s\n%s\n", MCACHE_VERSION, mc_fetch_versions());
			return MC_EXIT_OK;
		case ':':
		case '?':
			return mc_cli_option_error(&cli, c, argv, options);
		default:
			mc_cli_global_option(&cli, c, optarg);
		}
	}
	if (optind >= argc)
		return mc_cli_usage_error(&cli, "no command given");
	cmd = find_command(argv[optind]);
	if (!cmd)
		return mc_cli_usage_error(&cli, "unknown command '%s'",
					  mc_cli_quote(argv[optind], q, sizeof(q)));
	cli.cmd = cmd;

	mc_err_init(&err);
	ret = mc_fetch_global_init(&err);
	if (ret)
		return mc_cli_fail(ret, &err);
	if (cmd->flags & MC_CMD_STOPPABLE)
		install_signals();
	status = cmd->fn(argc - optind, argv + optind, &cli);
	mc_fetch_global_cleanup();
	return status;
}

int main(int argc, char **argv)
{
	mc_alloc_init_from_env();
	json_set_alloc_funcs(mc_malloc, mc_free);
	return finish_stdout(run(argc, argv));
}
