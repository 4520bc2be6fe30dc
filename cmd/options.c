/*
 * Command-line parsing shared by every command: the global options (accepted before and after
 * the command, because users write `mcache ls --json`), the getopt_long loop each command runs
 * over its own options, the one-line messages for bad options, and the parsers of option
 * values. Commands describe their options with a table and a handler; the loop, --help, the
 * operands and the errors live here once, so every command behaves the same.
 *
 * getopt_long runs in RETURN_IN_ORDER mode ("-" in front of the short options): operands come
 * back one by one, in order, whatever POSIXLY_CORRECT says, and "--" ends the options.
 */
#include "cli.h"

#include "mc_alloc.h"
#include "mc_fetch.h"
#include "mc_util.h"

#include <stdlib.h>
#include <string.h>

#include "mc_banned.h"

/* Room for a command's options plus the global ones; a command with more is a bug. */
#define MAX_OPTIONS 32

static const struct option global_options[] = {MC_CLI_GLOBAL_OPTIONS, {NULL, 0, NULL, 0}};

bool mc_cli_global_option(struct mc_cli *cli, int opt, const char *arg)
{
	switch (opt) {
	case MC_CLI_OPT_CACHE_DIR:
		cli->cache_dir_opt = arg;
		return true;
	case MC_CLI_OPT_ALLOW_SHARED_DIR:
		cli->allow_shared_dir = true;
		return true;
	case MC_CLI_OPT_JSON:
		cli->json = true;
		return true;
	case MC_CLI_OPT_QUIET:
		cli->verbosity = MC_CLI_QUIET;
		return true;
	case MC_CLI_OPT_VERBOSE:
		cli->verbosity = MC_CLI_VERBOSE;
		return true;
	default:
		return false;
	}
}

/* The text of the option argv[ind] names, without any "=value" (which may be a secret). */
static const char *long_option_text(char **argv, int ind, char *buf, size_t len)
{
	char *q = mc_cli_quote(argv[ind], buf, len);

	q[strcspn(q, "=")] = '\0';
	return q;
}

/* True when the long option argv[ind] abbreviates more than one entry of @opts. */
static bool is_ambiguous(const char *word, const struct option *opts)
{
	size_t len, matches = 0;

	if (strncmp(word, "--", 2))
		return false;
	word += 2;
	len = strcspn(word, "=");
	for (size_t i = 0; opts[i].name; i++)
		if (!strncmp(opts[i].name, word, len) && strlen(opts[i].name) != len)
			matches++;
	return matches > 1;
}

int mc_cli_option_error(const struct mc_cli *cli, int c, char **argv, const struct option *opts)
{
	/* getopt has moved optind past the offending word (see the cases below). */
	int ind = optind > 1 ? optind - 1 : 1;
	char buf[80];

	if (c == ':')
		return mc_cli_usage_error(cli, "option '%s' needs a value",
					  long_option_text(argv, ind, buf, sizeof(buf)));
	if (optopt == 0)
		return mc_cli_usage_error(cli,
					  is_ambiguous(argv[ind], opts) ? "ambiguous option '%s'"
									: "unknown option '%s'",
					  long_option_text(argv, ind, buf, sizeof(buf)));
	/*
	 * A known option code here means a long option given "=value" although it takes none;
	 * an unknown character is an unknown short option (then argv[ind] may be a cluster).
	 */
	if (optopt >= MC_CLI_OPT_CACHE_DIR || strchr("hqv", optopt))
		return mc_cli_usage_error(cli, "option '%s' takes no value",
					  long_option_text(argv, ind, buf, sizeof(buf)));
	if (optopt > ' ' && optopt < 0x7f)
		return mc_cli_usage_error(cli, "unknown option '-%c'", optopt);
	return mc_cli_usage_error(cli, "unknown option");
}

static void print_usage(const struct mc_cli *cli)
{
	fputs(cli->cmd->usage, stdout);
}

int mc_cli_parse(struct mc_cli *cli, int argc, char **argv, const struct option *opts,
		 mc_cli_opt_fn fn, void *ctx, int *nargs)
{
	struct option all[MAX_OPTIONS];
	struct mc_err err;
	size_t n = 0;
	int c, w = 1, ret;

	for (size_t i = 0; opts && opts[i].name; i++)
		all[n++] = opts[i];
	for (size_t i = 0; i < sizeof(global_options) / sizeof(global_options[0]); i++)
		all[n++] = global_options[i];
	if (n > MAX_OPTIONS)
		abort(); /* the table above overflowed: a programming error */

	optind = 0; /* glibc: start over on a new argv */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "-" MC_CLI_GLOBAL_SHORT, all, NULL)) != -1) {
		switch (c) {
		case 1:
			/* An operand, in RETURN_IN_ORDER mode: only slots already read are reused.
			 */
			argv[w++] = optarg;
			continue;
		case MC_CLI_OPT_HELP:
			print_usage(cli);
			return MC_EXIT_OK;
		case ':':
		case '?':
			return mc_cli_option_error(cli, c, argv, all);
		default:
			if (mc_cli_global_option(cli, c, optarg))
				continue;
			mc_err_init(&err);
			ret = fn ? fn(ctx, c, optarg, &err) : MC_E_USAGE;
			if (ret) {
				if (!err.msg[0])
					return mc_cli_usage_error(cli, "unexpected option");
				mc_cli_error("%s", err.msg);
				return mc_exit_code(ret);
			}
		}
	}
	while (optind < argc)
		argv[w++] = argv[optind++];
	argv[w] = NULL;
	*nargs = w - 1;
	return MC_CLI_RUN;
}

const char *mc_cli_cache_dir(const struct mc_cli *cli)
{
	const char *env;

	if (cli->cache_dir_opt)
		return cli->cache_dir_opt;
	env = getenv("MCACHE_DIR");
	if (env && *env)
		return env;
	return MC_DEFAULT_CACHE_DIR;
}

int mc_cli_parse_connections(const char *s, unsigned *out, struct mc_err *err)
{
	char q[80];
	uint64_t v;

	if (mc_parse_uint(s, 1, MC_MAX_CONNECTIONS, &v))
		return mc_err_set(err, MC_E_USAGE,
				  "invalid --connections '%s': expected a number from 1 to %u",
				  mc_cli_quote(s, q, sizeof(q)), MC_MAX_CONNECTIONS);
	*out = (unsigned)v;
	return 0;
}

#define MAX_CHUNK_SIZE (1ull << 30)

int mc_cli_parse_chunk_size(const char *s, uint64_t *out, struct mc_err *err)
{
	char q[80];
	uint64_t v;

	if (mc_parse_size(s, &v) || v == 0 || v % MC_HASH_BLOCK || v > MAX_CHUNK_SIZE)
		return mc_err_set(
		    err, MC_E_USAGE,
		    "invalid --chunk-size '%s': expected a multiple of 1M from 1M to 1G",
		    mc_cli_quote(s, q, sizeof(q)));
	*out = v;
	return 0;
}

int mc_cli_parse_rate(const char *s, uint64_t *out, struct mc_err *err)
{
	char buf[64], q[80];
	size_t n = strlen(s);
	uint64_t v;

	if (n >= 2 && !strcmp(s + n - 2, "/s"))
		n -= 2;
	if (n == 0 || n >= sizeof(buf))
		goto out_bad;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (mc_parse_size(buf, &v))
		goto out_bad;
	*out = v;
	return 0;
out_bad:
	return mc_err_set(
	    err, MC_E_USAGE,
	    "invalid --max-rate '%s': expected bytes per second, such as 200M or 200M/s",
	    mc_cli_quote(s, q, sizeof(q)));
}

char *mc_cli_quote(const char *s, char *buf, size_t len)
{
	char *redacted = NULL;
	size_t i;

	if (!len)
		return buf;
	/* Anything URL-ish may carry a presigned query string or a password: redact it. */
	if (strstr(s, "://") || strpbrk(s, "?#")) {
		redacted = mc_url_redact(s);
		s = redacted ? redacted : "(url)";
	}
	for (i = 0; s[i] && i + 1 < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		buf[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
	}
	buf[i] = '\0';
	if (s[i] && len > 4)
		memcpy(buf + len - 4, "...", 4);
	mc_free(redacted);
	return buf;
}
