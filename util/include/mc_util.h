/*
 * Small pure helpers shared by every layer: number and size parsing, names and paths from the
 * outside world, URL redaction, hex and clocks. Nothing here does I/O.
 */
#ifndef MC_UTIL_H
#define MC_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Parses a byte count with an optional binary suffix: "4096", "16K", "16M", "1G", "2T",
 * also "16MiB"/"16MB" (both binary). Returns 0, or MC_E_USAGE on syntax errors and overflow.
 */
int mc_parse_size(const char *s, uint64_t *out);

/* Parses a decimal integer in [min, max]. Returns 0 or MC_E_USAGE. */
int mc_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/*
 * Parses a duration: a decimal number with an optional unit s, m, h or d (seconds without
 * one), "30s", "10m", "1h"; between 1 second and 365 days. Returns 0 with *out in seconds, or
 * MC_E_USAGE.
 */
int mc_parse_duration(const char *s, uint64_t *out);

/* Formats @n bytes as "512 B", "16.0 MiB", "1.50 GiB" into @buf. Returns @buf. */
char *mc_format_size(uint64_t n, char *buf, size_t len);

/*
 * Returns a newly allocated, secret-free form of @url for logs, errors and the index:
 * "scheme://host[:port]/path" with any user:password@, query string and fragment removed.
 * Returns NULL on allocation failure. Never returns the query string, so presigned URLs are safe.
 */
char *mc_url_redact(const char *url);

/*
 * True when @name is a usable model name: 1-128 characters from [A-Za-z0-9._-], not starting
 * with '.' or '-'. Model names become directory names, so nothing else is allowed.
 */
bool mc_name_is_valid(const char *name);

/*
 * True when @path is a safe relative file path inside a model: components separated by '/',
 * none empty, ".", ".." or longer than 255 bytes; no leading '/', no control characters or
 * backslashes; at most 4096 bytes.
 */
bool mc_relpath_is_valid(const char *path);

/* Writes 2*len lowercase hex digits and a NUL into @out. */
void mc_hex(const uint8_t *in, size_t len, char *out);

/* Parses exactly 2*len hex digits. Returns 0 or MC_E_USAGE. */
int mc_unhex(const char *in, uint8_t *out, size_t len);

/* Monotonic milliseconds, for timeouts and rates. */
uint64_t mc_now_ms(void);

/* Wall-clock seconds since the epoch, for the index. */
int64_t mc_now_unix(void);

#endif
