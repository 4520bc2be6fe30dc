/*
 * The mcache front end's internal interface: the command table entry, the state that global
 * options set, the shared option parser every command uses, and the output helpers. Only cmd/
 * includes this header; cmd/ in turn uses the cache and fetcher only through their public
 * headers (mc_cache.h, mc_fetch.h) and util.
 *
 * Every byte the program prints goes through cmd/: libraries never print. Errors are one line
 * on stderr, "mcache: <message>", and the exit status comes from mc_exit_code().
 */
#ifndef MC_CLI_H
#define MC_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "mc_cache.h"
#include "mc_err.h"

struct mc_cli;

/* Flags of a command in the table. */
enum {
	/*
	 * SIGINT/SIGTERM ask the command to stop cleanly (mc_fetch_interrupt()); other commands
	 * only read, so they keep the default action and stop at once.
	 */
	MC_CMD_STOPPABLE = 1 << 0,
};

/* One command, as listed in the table in main.c (git's cmd_struct). */
struct mc_cmd {
	const char *name;
	/* Runs the command on argv[0..argc), argv[0] its name; returns an exit status. */
	int (*fn)(int argc, char **argv, struct mc_cli *cli);
	const char *summary; /* one line for `mcache --help` */
	const char *usage;   /* the text of `mcache COMMAND --help`, from "usage:" on */
	unsigned flags;	     /* MC_CMD_* */
};

enum mc_cli_verbosity {
	MC_CLI_QUIET = -1, /* -q: no progress, no human summaries */
	MC_CLI_NORMAL = 0,
	MC_CLI_VERBOSE = 1, /* -v: periodic progress lines even when stderr is not a terminal */
};

/* What the global options say; they may appear before or after the command. */
struct mc_cli {
	const char *cache_dir_opt; /* --cache-dir, or NULL */
	bool allow_shared_dir;	   /* --allow-shared-dir */
	bool json;
	enum mc_cli_verbosity verbosity;
	const struct mc_cmd *cmd; /* the command being run, for its usage text */
};

/* Returned by mc_cli_parse() when the command should run; any other value is an exit status. */
#define MC_CLI_RUN (-1)

/* Option values of the global options; commands number theirs from MC_CLI_OPT_CMD. */
enum {
	MC_CLI_OPT_HELP = 'h',
	MC_CLI_OPT_QUIET = 'q',
	MC_CLI_OPT_VERBOSE = 'v',
	MC_CLI_OPT_CACHE_DIR = 0x1000,
	MC_CLI_OPT_JSON,
	MC_CLI_OPT_VERSION,
	MC_CLI_OPT_ALLOW_SHARED_DIR,
	MC_CLI_OPT_CMD = 0x2000,
};

/* The global options' getopt_long entries, for main's table and every command's. */
#define MC_CLI_GLOBAL_OPTIONS                                                                      \
	{"cache-dir", required_argument, NULL, MC_CLI_OPT_CACHE_DIR},                              \
	    {"allow-shared-dir", no_argument, NULL, MC_CLI_OPT_ALLOW_SHARED_DIR},                  \
	    {"json", no_argument, NULL, MC_CLI_OPT_JSON},                                          \
	    {"quiet", no_argument, NULL, MC_CLI_OPT_QUIET},                                        \
	    {"verbose", no_argument, NULL, MC_CLI_OPT_VERBOSE},                                    \
	{                                                                                          \
		"help", no_argument, NULL, MC_CLI_OPT_HELP                                         \
	}

/* The short options that go with them; getopt's ordering flag goes in front. */
#define MC_CLI_GLOBAL_SHORT ":hqv"

/*
 * Prints the one-line error for getopt_long()'s return @c (':' or '?') after it parsed
 * argv[0..optind) with the long options @opts, and returns MC_EXIT_USAGE.
 */
int mc_cli_option_error(const struct mc_cli *cli, int c, char **argv, const struct option *opts);

/*
 * Applies global option @opt with value @arg to @cli. Returns true when @opt is a global
 * option (and was applied), false otherwise.
 */
bool mc_cli_global_option(struct mc_cli *cli, int opt, const char *arg);

/*
 * A command's handler for one of its own options: @opt is the option's val from the command's
 * table, @arg its value or NULL. Returns 0, or MC_E_USAGE with a message in @err.
 */
typedef int (*mc_cli_opt_fn)(void *ctx, int opt, const char *arg, struct mc_err *err);

/*
 * Parses the options of command argv[0] with getopt_long: the command's own @opts (terminated
 * by a zero entry; vals from MC_CLI_OPT_CMD), the global options and --help, as "--opt value"
 * or "--opt=value", in any order with the operands, up to "--". The operands are moved, in
 * order, to argv[1..*nargs] (argv itself is reordered; nothing is allocated).
 * Returns MC_CLI_RUN when the command should go on; otherwise an exit status, after printing
 * the usage (--help: 0) or a one-line error (2).
 */
int mc_cli_parse(struct mc_cli *cli, int argc, char **argv, const struct option *opts,
		 mc_cli_opt_fn fn, void *ctx, int *nargs);

/* The cache directory to use: --cache-dir, else $MCACHE_DIR when set and not empty, else the
 * default. */
const char *mc_cli_cache_dir(const struct mc_cli *cli);

/*
 * Value parsers for the options of pull; each returns 0 and sets *out, or MC_E_USAGE with a
 * message in @err that names the option.
 */
/* --connections: 1..MC_MAX_CONNECTIONS. */
int mc_cli_parse_connections(const char *s, unsigned *out, struct mc_err *err);
/* --chunk-size: a size, a positive multiple of MC_HASH_BLOCK, at most 1 GiB. */
int mc_cli_parse_chunk_size(const char *s, uint64_t *out, struct mc_err *err);
/* --max-rate: a size per second, with an optional trailing "/s"; 0 means unlimited. */
int mc_cli_parse_rate(const char *s, uint64_t *out, struct mc_err *err);

/* watch.c: --watch INTERVAL, for commands that repeat (verify, metrics). */
/* --watch: a duration (30s, 10m, 1h, 1d; seconds without a unit) into *out seconds. */
int mc_cli_parse_watch(const char *s, uint64_t *out, struct mc_err *err);
/*
 * Sleeps @seconds, or until SIGINT/SIGTERM asked a MC_CMD_STOPPABLE command to stop; returns
 * true when it was asked (a clean stop between rounds).
 */
bool mc_cli_watch_sleep(uint64_t seconds);

/*
 * Writes a printable, secret-free form of user input @s into @buf for messages: anything that
 * looks like a URL is redacted (mc_url_redact), control characters become '?', and long input is
 * cut short with "...". Returns @buf.
 */
char *mc_cli_quote(const char *s, char *buf, size_t len);

/* Prints "mcache: <message>" on stderr. */
void mc_cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Prints the error of a failed library call (@code, with the message in @err; a generic one
 * when @err is empty) and returns its exit status (mc_exit_code()).
 */
int mc_cli_fail(int code, const struct mc_err *err);

/*
 * Prints a usage error, "mcache: <message>; see 'mcache CMD --help'", and returns
 * MC_EXIT_USAGE.
 */
int mc_cli_usage_error(const struct mc_cli *cli, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Opens the cache mc_cli_cache_dir() names, accepting a directory other users can write when
 * --allow-shared-dir or MCACHE_ALLOW_SHARED_DIR=1 says so. Returns 0, or an exit status after
 * the error.
 */
int mc_cli_open_cache(const struct mc_cli *cli, struct mc_cache **out);

/* The MC_CACHE_* flags mc_cli_open_cache() opens with, for commands that open differently. */
unsigned mc_cli_cache_flags(const struct mc_cli *cli);

/*
 * Prints @doc on stdout (two-space indent, keys in insertion order, a final newline) and
 * releases it. A NULL @doc means a build step ran out of memory. Returns an exit status.
 */
int mc_cli_print_json(json_t *doc);

/* Writes @s to @f with control characters shown as '?', so that one entry stays one line. */
void mc_cli_put(FILE *f, const char *s);

/*
 * Returns a new JSON string for @s (null for NULL); bytes that are not UTF-8 are shown as '?'.
 * Returns NULL only when out of memory; json_object_set_new() accepts that and fails.
 */
json_t *mc_cli_json_string(const char *s);

/* Returns a new JSON integer for @v (clamped to the largest json_int_t), NULL when out of memory.
 */
json_t *mc_cli_json_uint(uint64_t v);

/* Returns @one when @n is 1, else @many: "1 file", "2 files". */
const char *mc_cli_plural(uint64_t n, const char *one, const char *many);

/* Formats unix time @t as local "YYYY-MM-DD HH:MM", or "-" for 0. Returns @buf. */
char *mc_cli_format_time(int64_t t, char *buf, size_t len);

/* Transfer progress on stderr, for the fetcher's progress callback. */
struct mc_cli_progress {
	bool redraw;	   /* stderr is a terminal: one status line redrawn in place */
	bool lines;	   /* -v without a terminal: a plain line every few seconds */
	bool drawn;	   /* a status line is on the screen */
	int width;	   /* the length of the status line on the screen */
	uint64_t start_ms; /* when the transfer began */
	uint64_t last_ms;  /* the last line printed */
	uint64_t rate_ms;  /* the last rate sample */
	uint64_t rate_bytes;
	double rate; /* bytes per second, smoothed */
};

/* Chooses the progress mode from @cli and stderr, and fills @o's progress callback. */
void mc_cli_progress_init(struct mc_cli_progress *p, const struct mc_cli *cli,
			  struct mc_fetch_opts *o);

/* Clears the status line, if one is drawn, before the next message. */
void mc_cli_progress_end(struct mc_cli_progress *p);

/* The commands, one file each. */
int mc_cmd_pull(int argc, char **argv, struct mc_cli *cli);
int mc_cmd_ls(int argc, char **argv, struct mc_cli *cli);
int mc_cmd_verify(int argc, char **argv, struct mc_cli *cli);
int mc_cmd_metrics(int argc, char **argv, struct mc_cli *cli);
extern const char mc_cmd_pull_usage[];
extern const char mc_cmd_ls_usage[];
extern const char mc_cmd_verify_usage[];
extern const char mc_cmd_metrics_usage[];
int mc_cmd_pin(int argc, char **argv, struct mc_cli *cli);
int mc_cmd_unpin(int argc, char **argv, struct mc_cli *cli);
int mc_cmd_rm(int argc, char **argv, struct mc_cli *cli);
int mc_cmd_gc(int argc, char **argv, struct mc_cli *cli);
extern const char mc_cmd_pin_usage[];
extern const char mc_cmd_unpin_usage[];
extern const char mc_cmd_rm_usage[];
extern const char mc_cmd_gc_usage[];
int mc_cmd_rebuild_index(int argc, char **argv, struct mc_cli *cli);
extern const char mc_cmd_rebuild_index_usage[];
int mc_cmd_prewarm(int argc, char **argv, struct mc_cli *cli);
extern const char mc_cmd_prewarm_usage[];
int mc_cmd_init(int argc, char **argv, struct mc_cli *cli);
extern const char mc_cmd_init_usage[];

/* A gc result (cmd_gc.c), as gc, rm and pull print it. */
/* The JSON object of @r: budget, bytes before/after/freed, budget_met, removed counts. */
json_t *mc_cli_gc_json(const struct mc_gc_result *r);
/* "freed SIZE: N models, N old versions, N blobs, N temp files; SIZE of SIZE budget used". */
void mc_cli_gc_summary(FILE *f, const struct mc_gc_result *r, bool dry_run);
/* When @r missed its budget: a warning on stderr, saying that what is left is @kept. */
void mc_cli_gc_warn(const struct mc_gc_result *r, const char *kept);

#endif
