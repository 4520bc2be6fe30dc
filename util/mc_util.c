/*
 * Pure helpers: parsing of numbers, sizes, names and paths, and URL redaction. These guard the
 * boundary with the outside world (command line, URLs, object keys), so they are strict and
 * unit-tested (tests/unit/test_util.c).
 */
#include "mc_util.h"

#include "mc_alloc.h"
#include "mc_err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mc_banned.h"

int mc_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!s || !*s)
		return MC_E_USAGE;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return MC_E_USAGE;
		if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
			return MC_E_USAGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	if (v < min || v > max)
		return MC_E_USAGE;
	*out = v;
	return 0;
}

int mc_parse_duration(const char *s, uint64_t *out)
{
	static const struct {
		char unit;
		uint64_t seconds;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	char digits[24];
	uint64_t v, mul = 1;
	size_t n;

	if (!s)
		return MC_E_USAGE;
	n = strspn(s, "0123456789");
	if (n == 0 || n >= sizeof(digits))
		return MC_E_USAGE;
	if (s[n]) {
		size_t i;

		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (s[n] == units[i].unit && !s[n + 1])
				break;
		if (i == sizeof(units) / sizeof(units[0]))
			return MC_E_USAGE;
		mul = units[i].seconds;
	}
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (mc_parse_uint(digits, 1, 365 * 86400, &v) || v > 365 * 86400 / mul)
		return MC_E_USAGE;
	*out = v * mul;
	return 0;
}

int mc_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	unsigned shift = 0;
	const char *p = s;

	if (!s || *s < '0' || *s > '9')
		return MC_E_USAGE;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return MC_E_USAGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	switch (*p) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		p++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		p++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		p++;
		break;
	case 't':
	case 'T':
		shift = 40;
		p++;
		break;
	case 'B':
		break; /* "512B": bytes, handled below */
	default:
		return MC_E_USAGE;
	}
	/* Accept "16M", "16MB", "16MiB", and "512B"; nothing else after the number. */
	if (shift && (!strcmp(p, "iB") || !strcmp(p, "B")))
		p += strlen(p);
	else if (!shift && !strcmp(p, "B"))
		p++;
	if (*p)
		return MC_E_USAGE;
	if (shift && v > (UINT64_MAX >> shift))
		return MC_E_USAGE;
	*out = v << shift;
	return 0;
}

char *mc_format_size(uint64_t n, char *buf, size_t len)
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)n;
	unsigned u = 0;

	if (n < 1024) {
		snprintf(buf, len, "%llu B", (unsigned long long)n);
		return buf;
	}
	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	snprintf(buf, len, d < 10 ? "%.2f %s" : "%.1f %s", d, unit[u]);
	return buf;
}

char *mc_url_redact(const char *url)
{
	/*
	 * The query and fragment go first, wherever they are: nothing after the first '?' or '#'
	 * can be scheme, authority or path. (Looking for "://" first would find one inside a
	 * query when the URL has "https:/host" with one slash, which libcurl accepts: found by
	 * fuzz_url.)
	 */
	size_t end = strcspn(url, "?#"), n = 0, s = 0;
	const char *auth = NULL, *auth_end, *at;
	char *out;

	/* A scheme: ALPHA *(ALPHA / DIGIT / "+" / "-" / ".") ":", then any slashes. */
	if (end && ((url[0] >= 'a' && url[0] <= 'z') || (url[0] >= 'A' && url[0] <= 'Z'))) {
		s = strspn(url,
			   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");
		if (s < end && url[s] == ':') {
			s++;
			s += strspn(url + s, "/");
			if (s > end)
				s = end;
			auth = url + s;
		}
	}
	out = mc_malloc(end + 1);
	if (!out)
		return NULL;
	if (!auth) {
		memcpy(out, url, end);
		out[end] = '\0';
		return out;
	}
	/* Drop "user:password@" from the authority (up to the next '/'): up to its last '@'. */
	auth_end = auth + strcspn(auth, "/");
	if (auth_end > url + end)
		auth_end = url + end;
	for (at = auth_end; at > auth; at--) {
		if (at[-1] == '@') {
			auth = at;
			break;
		}
	}
	memcpy(out, url, s);
	n = s;
	memcpy(out + n, auth, (size_t)(url + end - auth));
	n += (size_t)(url + end - auth);
	out[n] = '\0';
	return out;
}

bool mc_name_is_valid(const char *name)
{
	size_t n = 0;

	if (!name || !*name || name[0] == '.' || name[0] == '-')
		return false;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return n <= 128;
}

bool mc_relpath_is_valid(const char *path)
{
	const char *p = path, *comp;
	size_t total;

	if (!path || !*path || *path == '/')
		return false;
	total = strlen(path);
	if (total > 4096)
		return false;
	while (*p) {
		size_t len;

		comp = p;
		while (*p && *p != '/') {
			unsigned char c = (unsigned char)*p;
			if (c < 0x20 || c == 0x7f || c == '\\')
				return false;
			p++;
		}
		len = (size_t)(p - comp);
		if (len == 0 || len > 255)
			return false;
		if ((len == 1 && comp[0] == '.') || (len == 2 && comp[0] == '.' && comp[1] == '.'))
			return false;
		if (*p == '/') {
			p++;
			if (!*p)
				return false; /* trailing slash: a directory, not a file */
		}
	}
	return true;
}

void mc_hex(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int mc_unhex(const char *in, uint8_t *out, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(in[2 * i]), lo;

		if (hi < 0)
			return MC_E_USAGE;
		lo = hexval(in[2 * i + 1]);
		if (lo < 0)
			return MC_E_USAGE;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return in[2 * len] == '\0' ? 0 : MC_E_USAGE;
}

uint64_t mc_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t mc_now_unix(void)
{
	return (int64_t)time(NULL);
}
