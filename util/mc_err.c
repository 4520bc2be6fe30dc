/*
 * The error buffer and the code → exit status table. Kept tiny on purpose: every layer uses it.
 */
#include "mc_err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void mc_err_init(struct mc_err *err)
{
	if (err)
		err->msg[0] = '\0';
}

static int vset(struct mc_err *err, int code, const char *fmt, va_list ap, int with_errno)
{
	size_t n;

	if (!err || err->msg[0])
		return code;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	if (with_errno && code < 0 && code > -4096) {
		n = strlen(err->msg);
		snprintf(err->msg + n, sizeof(err->msg) - n, ": %s", strerror(-code));
	}
	return code;
}

int mc_err_set(struct mc_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = vset(err, code, fmt, ap, 0);
	va_end(ap);
	return code;
}

int mc_err_errno(struct mc_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	code = vset(err, code, fmt, ap, 1);
	va_end(ap);
	return code;
}

int mc_exit_code(int code)
{
	switch (code) {
	case 0:
		return MC_EXIT_OK;
	case MC_E_USAGE:
		return MC_EXIT_USAGE;
	case MC_E_ORIGIN:
	case MC_E_CHANGED:
		return MC_EXIT_ORIGIN;
	case MC_E_INTEGRITY:
		return MC_EXIT_INTEGRITY;
	case -ENOSPC:
	case -EDQUOT:
		return MC_EXIT_NOSPACE;
	case MC_E_NOTFOUND:
		return MC_EXIT_NOTFOUND;
	case MC_E_INTERRUPTED:
		return MC_EXIT_INTERRUPTED;
	default:
		return code < 0 ? MC_EXIT_LOCAL : MC_EXIT_FINDINGS;
	}
}
