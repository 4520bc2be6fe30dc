/*
 * Unit tests of the command-line front end's pure parts (cmd/options.c): the values pull
 * accepts for --connections, --chunk-size and --max-rate, the redaction of user input echoed in
 * messages, the choice of the cache directory, and the shared option loop every command runs
 * (global options after the command, "--opt=value", operands in order, "--", errors).
 */
#include "cli.h"

#include "mc_err.h"

#include "mc_test.h"

#include <stdlib.h>
#include <string.h>

static void connections(void)
{
	struct mc_err err;
	unsigned v = 7;

	mc_err_init(&err);
	ASSERT_EQ(mc_cli_parse_connections("1", &v, &err), 0);
	ASSERT_EQ(v, 1);
	ASSERT_EQ(mc_cli_parse_connections("256", &v, &err), 0);
	ASSERT_EQ(v, 256);
	v = 7;
	ASSERT_EQ(mc_cli_parse_connections("0", &v, &err), MC_E_USAGE);
	ASSERT_STR_EQ(err.msg, "invalid --connections '0': expected a number from 1 to 256");
	ASSERT_EQ(mc_cli_parse_connections("257", &v, NULL), MC_E_USAGE);
	ASSERT_EQ(mc_cli_parse_connections("", &v, NULL), MC_E_USAGE);
	ASSERT_EQ(mc_cli_parse_connections("-1", &v, NULL), MC_E_USAGE);
	ASSERT_EQ(mc_cli_parse_connections("16x", &v, NULL), MC_E_USAGE);
	ASSERT_EQ(v, 7);
}

static void chunk_size_ok(const char *s, uint64_t want)
{
	uint64_t v = 0;

	ASSERT_EQ(mc_cli_parse_chunk_size(s, &v, NULL), 0);
	ASSERT_UINT_EQ(v, want);
}

static void chunk_size_bad(const char *s)
{
	uint64_t v = 12345;

	ASSERT_EQ(mc_cli_parse_chunk_size(s, &v, NULL), MC_E_USAGE);
	ASSERT_UINT_EQ(v, 12345);
}

static void chunk_size(void)
{
	chunk_size_ok("1M", 1u << 20);
	chunk_size_ok("16M", 16u << 20);
	chunk_size_ok("1024K", 1u << 20);
	chunk_size_ok("1048576", 1u << 20);
	chunk_size_ok("64MiB", 64u << 20);
	chunk_size_ok("1G", 1u << 30);
	chunk_size_bad("0");
	chunk_size_bad("0M");
	chunk_size_bad("3000K"); /* not a whole number of hash blocks */
	chunk_size_bad("1048577");
	chunk_size_bad("1025M"); /* over 1 GiB */
	chunk_size_bad("2G");
	chunk_size_bad("");
	chunk_size_bad("M");
	chunk_size_bad("16M/s");
}

static void rate_ok(const char *s, uint64_t want)
{
	uint64_t v = 12345;

	ASSERT_EQ(mc_cli_parse_rate(s, &v, NULL), 0);
	ASSERT_UINT_EQ(v, want);
}

static void rate_bad(const char *s)
{
	uint64_t v = 12345;

	ASSERT_EQ(mc_cli_parse_rate(s, &v, NULL), MC_E_USAGE);
	ASSERT_UINT_EQ(v, 12345);
}

static void rate(void)
{
	struct mc_err err;

	rate_ok("200M", 200ull << 20);
	rate_ok("200M/s", 200ull << 20);
	rate_ok("200MiB/s", 200ull << 20);
	rate_ok("1G/s", 1ull << 30);
	rate_ok("4096", 4096);
	rate_ok("0", 0); /* unlimited */
	rate_bad("");
	rate_bad("/s");
	rate_bad("abc/s");
	rate_bad("200M/ss");
	rate_bad("200M/m");
	rate_bad("-1");
	rate_bad("1111111111111111111111111111111111111111111111111111111111111111111M/s");
	mc_err_init(&err);
	ASSERT_EQ(mc_cli_parse_rate("fast", &(uint64_t){0}, &err), MC_E_USAGE);
	ASSERT_STR_EQ(
	    err.msg,
	    "invalid --max-rate 'fast': expected bytes per second, such as 200M or 200M/s");
}

static void quote(void)
{
	char buf[32], tiny[8];

	ASSERT_STR_EQ(mc_cli_quote("16M", buf, sizeof(buf)), "16M");
	/* No query string, no password: presigned URLs pasted in the wrong place stay secret. */
	ASSERT_STR_EQ(mc_cli_quote("https://u:pw@h/k?X-Amz-Signature=s", buf, sizeof(buf)),
		      "https://h/k");
	ASSERT_STR_EQ(mc_cli_quote("x?token=s", buf, sizeof(buf)), "x");
	ASSERT_STR_EQ(mc_cli_quote("a\nb\tc", buf, sizeof(buf)), "a?b?c");
	ASSERT_STR_EQ(mc_cli_quote("0123456789", tiny, sizeof(tiny)), "0123...");
	ASSERT_STR_EQ(mc_cli_quote("0123456", tiny, sizeof(tiny)), "0123456");
}

static void cache_dir(void)
{
	struct mc_cli cli;

	memset(&cli, 0, sizeof(cli));
	unsetenv("MCACHE_DIR");
	ASSERT_STR_EQ(mc_cli_cache_dir(&cli), MC_DEFAULT_CACHE_DIR);
	setenv("MCACHE_DIR", "", 1);
	ASSERT_STR_EQ(mc_cli_cache_dir(&cli), MC_DEFAULT_CACHE_DIR);
	setenv("MCACHE_DIR", "/env", 1);
	ASSERT_STR_EQ(mc_cli_cache_dir(&cli), "/env");
	cli.cache_dir_opt = "/opt";
	ASSERT_STR_EQ(mc_cli_cache_dir(&cli), "/opt");
	unsetenv("MCACHE_DIR");
}

/* A command with one option taking a value and one flag, as the real ones are built. */
enum { OPT_NAME = MC_CLI_OPT_CMD, OPT_DEEP };

static const struct option test_options[] = {
    {"name", required_argument, NULL, OPT_NAME},
    {"deep", no_argument, NULL, OPT_DEEP},
    {NULL, 0, NULL, 0},
};

struct seen {
	const char *name;
	int deep;
};

static int test_option(void *ctx, int opt, const char *arg, struct mc_err *err)
{
	struct seen *s = ctx;

	if (opt == OPT_NAME) {
		if (!strcmp(arg, "bad"))
			return mc_err_set(err, MC_E_USAGE, "invalid --name 'bad'");
		s->name = arg;
	} else if (opt == OPT_DEEP) {
		s->deep++;
	}
	return 0;
}

static const struct mc_cmd test_cmd = {"t", NULL, "test", "usage: mcache t\n", 0};

/* Runs the option loop on @words (NULL-terminated, command name first). */
static int parse(const char **words, struct mc_cli *cli, struct seen *s, char ***argv, int *n)
{
	static char *v[32];
	int argc = 0;

	while (words[argc]) {
		v[argc] = (char *)words[argc];
		argc++;
	}
	v[argc] = NULL;
	memset(cli, 0, sizeof(*cli));
	memset(s, 0, sizeof(*s));
	cli->cmd = &test_cmd;
	*argv = v;
	*n = -1;
	return mc_cli_parse(cli, argc, v, test_options, test_option, s, n);
}

static void option_loop(void)
{
	struct mc_cli cli;
	struct seen s;
	char **argv;
	int n;

	/* Operands keep their order around options; global options work after the command. */
	const char *a[] = {"t",	 "u1",	   "--name", "m", "u2", "--json", "-q", "--cache-dir=/c",
			   "u3", "--deep", "--deep", NULL};
	ASSERT_EQ(parse(a, &cli, &s, &argv, &n), MC_CLI_RUN);
	ASSERT_EQ(n, 3);
	ASSERT_STR_EQ(argv[1], "u1");
	ASSERT_STR_EQ(argv[2], "u2");
	ASSERT_STR_EQ(argv[3], "u3");
	ASSERT_NULL(argv[4]);
	ASSERT_STR_EQ(s.name, "m");
	ASSERT_EQ(s.deep, 2);
	ASSERT_TRUE(cli.json);
	ASSERT_EQ(cli.verbosity, MC_CLI_QUIET);
	ASSERT_STR_EQ(cli.cache_dir_opt, "/c");

	/* "--opt=value", the last of -q/-v wins, and "--" ends the options. */
	const char *b[] = {"t", "--name=x", "-q", "-v", "--", "--deep", "-q", NULL};
	ASSERT_EQ(parse(b, &cli, &s, &argv, &n), MC_CLI_RUN);
	ASSERT_STR_EQ(s.name, "x");
	ASSERT_EQ(s.deep, 0);
	ASSERT_EQ(cli.verbosity, MC_CLI_VERBOSE);
	ASSERT_EQ(n, 2);
	ASSERT_STR_EQ(argv[1], "--deep");
	ASSERT_STR_EQ(argv[2], "-q");

	/* The same whatever POSIXLY_CORRECT says. */
	setenv("POSIXLY_CORRECT", "1", 1);
	const char *c[] = {"t", "u1", "--json", NULL};
	ASSERT_EQ(parse(c, &cli, &s, &argv, &n), MC_CLI_RUN);
	ASSERT_EQ(n, 1);
	ASSERT_TRUE(cli.json);
	unsetenv("POSIXLY_CORRECT");

	/* An abbreviation that is unique is accepted. */
	const char *d[] = {"t", "--na", "y", NULL};
	ASSERT_EQ(parse(d, &cli, &s, &argv, &n), MC_CLI_RUN);
	ASSERT_STR_EQ(s.name, "y");

	/* --help prints the usage and ends with status 0; errors end with status 2. */
	const char *e[] = {"t", "u1", "--help", NULL};
	ASSERT_EQ(parse(e, &cli, &s, &argv, &n), MC_EXIT_OK);
	const char *f[] = {"t", "--bogus", NULL};
	ASSERT_EQ(parse(f, &cli, &s, &argv, &n), MC_EXIT_USAGE);
	const char *g[] = {"t", "--name", NULL};
	ASSERT_EQ(parse(g, &cli, &s, &argv, &n), MC_EXIT_USAGE);
	const char *h[] = {"t", "--deep=1", NULL};
	ASSERT_EQ(parse(h, &cli, &s, &argv, &n), MC_EXIT_USAGE);
	const char *i[] = {"t", "-x", NULL};
	ASSERT_EQ(parse(i, &cli, &s, &argv, &n), MC_EXIT_USAGE);
	const char *j[] = {"t", "--name", "bad", NULL};
	ASSERT_EQ(parse(j, &cli, &s, &argv, &n), MC_EXIT_USAGE);
	const char *k[] = {"t", "--cache-dir", NULL};
	ASSERT_EQ(parse(k, &cli, &s, &argv, &n), MC_EXIT_USAGE);
	ASSERT_EQ(n, -1); /* operands are reported only on success */
}

int main(void)
{
	MC_RUN(connections);
	MC_RUN(chunk_size);
	MC_RUN(rate);
	MC_RUN(quote);
	MC_RUN(cache_dir);
	MC_RUN(option_loop);
	printf("%lu checks passed\n", mc_test_checks);
	return 0;
}
