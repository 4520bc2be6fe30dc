/*
 * --watch INTERVAL, shared by the commands that repeat (verify, metrics): parsing the interval
 * and sleeping between rounds in a way a SIGTERM or SIGINT ends at once.
 *
 * The signal handler of a MC_CMD_STOPPABLE command only calls mc_fetch_interrupt(), which is
 * async-signal-safe; the sleep looks at mc_fetch_interrupted() every 100 ms rather than relying
 * on nanosleep() returning EINTR, since a signal that lands just before the sleep starts would
 * otherwise cost a whole interval.
 */
#include "cli.h"

#include "mc_fetch.h"
#include "mc_util.h"

#include <time.h>

#include "mc_banned.h"

#define NAP_SLICE_MS 100

int mc_cli_parse_watch(const char *s, uint64_t *out, struct mc_err *err)
{
	char q[80];

	if (mc_parse_duration(s, out))
		return mc_err_set(
		    err, MC_E_USAGE,
		    "invalid --watch '%s': expected a duration such as 30s, 10m or 1h "
		    "(1 second to 365 days)",
		    mc_cli_quote(s, q, sizeof(q)));
	return 0;
}

bool mc_cli_watch_sleep(uint64_t seconds)
{
	uint64_t end = mc_now_ms() + seconds * 1000, now;
	struct timespec ts;

	while (!mc_fetch_interrupted() && (now = mc_now_ms()) < end) {
		uint64_t ms = end - now < NAP_SLICE_MS ? end - now : NAP_SLICE_MS;

		ts.tv_sec = 0;
		ts.tv_nsec = (long)(ms * 1000000);
		nanosleep(&ts, NULL);
	}
	return mc_fetch_interrupted();
}
