/*
 * Structural validation of safetensors files for deep verify. A checksum only proves that the
 * cache holds what the origin served; an origin can serve a broken file (a truncated upload, a
 * header written by a buggy exporter), and a loader then fails on every GPU node at once. This
 * file checks what the reference implementation (huggingface/safetensors) checks before it maps
 * a file: the header length, the JSON header, each tensor's dtype, shape and byte span, and that
 * the spans tile the data section exactly.
 *
 * The checks are pure functions of a buffer and the file size (no I/O, no global state), so a
 * unit test feeds them a table of headers and a fuzzer can feed them anything; reading the header
 * from a file is a separate, small function at the end. The header is parsed with jansson
 * (JSON_REJECT_DUPLICATES: two tensors with one name are ambiguous, the reference rejects them).
 * Every problem is reported as what the format expects and what the file has, naming the tensor.
 */
#include "safetensors.h"

#include "mc_alloc.h"
#include "mc_err.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

/* The dtypes of the format and their element sizes in bits (F4 and F6 pack below a byte). */
static const struct dtype {
	const char *name;
	unsigned bits;
} dtypes[] = {
    {"BOOL", 8}, {"F4", 4},	 {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
    {"I8", 8},	 {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
    {"U16", 16}, {"F16", 16},	 {"BF16", 16},	 {"I32", 32},	 {"U32", 32},
    {"F32", 32}, {"C64", 64},	 {"F64", 64},	 {"I64", 64},	 {"U64", 64},
};

/* Tensor names in messages are cut to this many bytes, at a UTF-8 character boundary. */
#define NAME_SHOWN 64

/* One tensor's byte span in the data section, for the tiling check. */
struct span {
	uint64_t begin;
	uint64_t end;
	const char *name;
};

static int fail(struct mc_safetensors_report *r, const char *expected, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct mc_safetensors_report *r, const char *expected, const char *fmt, ...)
{
	va_list ap;

	snprintf(r->expected, sizeof(r->expected), "%s", expected);
	va_start(ap, fmt);
	vsnprintf(r->actual, sizeof(r->actual), fmt, ap);
	va_end(ap);
	return MC_E_INTEGRITY;
}

/* Copies @name into @out, cut at a character boundary with "..." when longer than NAME_SHOWN. */
static const char *shown(const char *name, char *out, size_t len)
{
	size_t n = strlen(name);

	if (n <= NAME_SHOWN) {
		snprintf(out, len, "%s", name);
		return out;
	}
	n = NAME_SHOWN;
	while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
		n--;
	snprintf(out, len, "%.*s...", (int)n, name);
	return out;
}

static const struct dtype *find_dtype(const char *s)
{
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (!strcmp(dtypes[i].name, s))
			return &dtypes[i];
	return NULL;
}

/* Describes a JSON value that is not the integer it should be: "-3", "2.5", "a string". */
static const char *describe(const json_t *v, char *buf, size_t len)
{
	switch (json_typeof(v)) {
	case JSON_INTEGER:
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
		break;
	case JSON_REAL:
		snprintf(buf, len, "%g", json_real_value(v));
		break;
	case JSON_STRING:
		snprintf(buf, len, "a string");
		break;
	case JSON_OBJECT:
		snprintf(buf, len, "an object");
		break;
	case JSON_ARRAY:
		snprintf(buf, len, "an array");
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		snprintf(buf, len, "a boolean");
		break;
	default:
		snprintf(buf, len, "null");
		break;
	}
	return buf;
}

int mc_safetensors_check_prefix(const uint8_t *buf, size_t len, uint64_t file_size,
				uint64_t *header_len, struct mc_safetensors_report *r)
{
	uint64_t n = 0;

	if (file_size < 8 || len < 8)
		return fail(r, "at least 8 bytes (the header length)", "%llu bytes",
			    (unsigned long long)file_size);
	for (int i = 7; i >= 0; i--)
		n = n << 8 | buf[i];
	if (n >= MC_SAFETENSORS_HEADER_MAX)
		return fail(r, "a header length below 100000000", "header length %llu",
			    (unsigned long long)n);
	if (n > file_size - 8) {
		snprintf(r->expected, sizeof(r->expected),
			 "a header length of at most %llu (the file has %llu bytes)",
			 (unsigned long long)(file_size - 8), (unsigned long long)file_size);
		snprintf(r->actual, sizeof(r->actual), "header length %llu", (unsigned long long)n);
		return MC_E_INTEGRITY;
	}
	*header_len = n;
	return 0;
}

/* "__metadata__": null, or an object whose every value is a string. */
static int check_metadata(const json_t *v, struct mc_safetensors_report *r)
{
	const char *key;
	char name[NAME_SHOWN + 4], what[48];
	json_t *val;

	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return fail(r, "__metadata__ an object of strings", "__metadata__ is %s",
			    describe(v, what, sizeof(what)));
	json_object_foreach((json_t *)v, key, val)
	{
		if (!json_is_string(val))
			return fail(r, "__metadata__ an object of strings",
				    "__metadata__ '%s' is %s", shown(key, name, sizeof(name)),
				    describe(val, what, sizeof(what)));
	}
	return 0;
}

/*
 * Checks one tensor entry @t named @key, whose span must lie within @data_len bytes, and fills
 * @s with its span.
 */
static int check_tensor(const char *key, const json_t *t, uint64_t data_len, struct span *s,
			struct mc_safetensors_report *r)
{
	char name[NAME_SHOWN + 4], exp[200], what[48];
	const json_t *dtype, *shape, *offs, *v;
	const struct dtype *dt;
	uint64_t count = 1, bits, begin, end;
	size_t i;

	shown(key, name, sizeof(name));
	if (!json_is_object(t))
		return fail(r, "a tensor object (dtype, shape, data_offsets)", "tensor '%s' is %s",
			    name, describe(t, what, sizeof(what)));
	dtype = json_object_get(t, "dtype");
	shape = json_object_get(t, "shape");
	offs = json_object_get(t, "data_offsets");
	if (!dtype || !shape || !offs)
		return fail(r, "a tensor object (dtype, shape, data_offsets)",
			    "tensor '%s' has no '%s'", name,
			    !dtype   ? "dtype"
			    : !shape ? "shape"
				     : "data_offsets");
	if (!json_is_string(dtype))
		return fail(r, "a safetensors dtype (BF16, F16, F32, I64, ...)",
			    "tensor '%s' dtype is %s", name, describe(dtype, what, sizeof(what)));
	dt = find_dtype(json_string_value(dtype));
	if (!dt)
		return fail(r, "a safetensors dtype (BF16, F16, F32, I64, ...)",
			    "tensor '%s' dtype '%.32s'", name, json_string_value(dtype));
	if (!json_is_array(shape))
		return fail(r, "a shape of non-negative integers", "tensor '%s' shape is %s", name,
			    describe(shape, what, sizeof(what)));
	json_array_foreach(shape, i, v)
	{
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return fail(r, "a shape of non-negative integers",
				    "tensor '%s' shape[%zu] is %s", name, i,
				    describe(v, what, sizeof(what)));
		if (__builtin_mul_overflow(count, (uint64_t)json_integer_value(v), &count))
			return fail(r, "a shape whose size fits in 64 bits",
				    "tensor '%s' shape overflows", name);
	}
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !json_is_integer(json_array_get(offs, 0)) ||
	    !json_is_integer(json_array_get(offs, 1)) ||
	    json_integer_value(json_array_get(offs, 0)) < 0 ||
	    json_integer_value(json_array_get(offs, 1)) < 0)
		return fail(r, "data_offsets [begin, end] of non-negative integers",
			    "tensor '%s' data_offsets is not", name);
	begin = (uint64_t)json_integer_value(json_array_get(offs, 0));
	end = (uint64_t)json_integer_value(json_array_get(offs, 1));
	if (end < begin)
		return fail(r, "data_offsets with begin <= end",
			    "tensor '%s' data_offsets [%llu, %llu]", name,
			    (unsigned long long)begin, (unsigned long long)end);
	if (__builtin_mul_overflow(count, (uint64_t)dt->bits, &bits))
		return fail(r, "a shape whose size fits in 64 bits", "tensor '%s' shape overflows",
			    name);
	if (bits % 8)
		return fail(r, "a tensor of whole bytes", "tensor '%s' %llu elements of %u bits",
			    name, (unsigned long long)count, dt->bits);
	if (end - begin != bits / 8) {
		snprintf(exp, sizeof(exp), "tensor '%s' %llu bytes (%s, %llu elements)", name,
			 (unsigned long long)(bits / 8), dt->name, (unsigned long long)count);
		return fail(r, exp, "tensor '%s' %llu bytes (data_offsets [%llu, %llu])", name,
			    (unsigned long long)(end - begin), (unsigned long long)begin,
			    (unsigned long long)end);
	}
	if (end > data_len) {
		snprintf(exp, sizeof(exp), "tensor '%s' within the %llu data bytes", name,
			 (unsigned long long)data_len);
		return fail(r, exp, "tensor '%s' ends at %llu, %llu bytes past the end of the file",
			    name, (unsigned long long)end, (unsigned long long)(end - data_len));
	}
	*s = (struct span){begin, end, key};
	return 0;
}

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

/* The sorted spans must tile [0, data_len): no gap, no overlap, nothing after the last. */
static int check_tiling(struct span *s, size_t n, uint64_t data_len,
			struct mc_safetensors_report *r)
{
	char a[NAME_SHOWN + 4], b[NAME_SHOWN + 4], exp[200];
	uint64_t pos = 0;

	qsort(s, n, sizeof(*s), cmp_span);
	for (size_t i = 0; i < n; i++) {
		if (s[i].begin == pos) {
			pos = s[i].end;
			continue;
		}
		shown(s[i].name, b, sizeof(b));
		if (i == 0)
			return fail(r, "the first tensor to begin at data byte 0",
				    "tensor '%s' begins at %llu (a gap of %llu bytes)", b,
				    (unsigned long long)s[i].begin, (unsigned long long)s[i].begin);
		shown(s[i - 1].name, a, sizeof(a));
		snprintf(exp, sizeof(exp), "tensor '%s' to begin at %llu, where '%s' ends", b,
			 (unsigned long long)pos, a);
		if (s[i].begin > pos)
			return fail(r, exp, "tensor '%s' begins at %llu (a gap of %llu bytes)", b,
				    (unsigned long long)s[i].begin,
				    (unsigned long long)(s[i].begin - pos));
		return fail(r, exp, "tensor '%s' begins at %llu (overlaps '%s' by %llu bytes)", b,
			    (unsigned long long)s[i].begin, a,
			    (unsigned long long)(pos - s[i].begin));
	}
	if (pos != data_len) {
		snprintf(exp, sizeof(exp), "tensors to end at data byte %llu (the end of the file)",
			 (unsigned long long)data_len);
		if (n == 0)
			return fail(r, exp, "no tensor; %llu data bytes",
				    (unsigned long long)data_len);
		shown(s[n - 1].name, a, sizeof(a));
		return fail(r, exp,
			    "the last tensor '%s' ends at %llu (%llu bytes unaccounted for)", a,
			    (unsigned long long)pos, (unsigned long long)(data_len - pos));
	}
	return 0;
}

int mc_safetensors_check(const uint8_t *header, size_t len, uint64_t file_size,
			 struct mc_safetensors_report *r)
{
	struct span *spans = NULL;
	const char *key;
	json_error_t e;
	void *probe;
	json_t *root, *v;
	uint64_t data_len;
	size_t n = 0;
	int ret = 0;

	if (file_size < 8 || len > file_size - 8)
		return fail(r, "a header within the file",
			    "header of %zu bytes, file of %llu bytes", len,
			    (unsigned long long)file_size);
	data_len = file_size - 8 - len;
	/* The reference reader wants an object, and so does a loader; say so before JSON does. */
	if (len == 0)
		return fail(r, "a JSON object header (starting with '{')", "an empty header");
	if (header[0] != '{')
		return fail(r, "a JSON object header (starting with '{')",
			    "header starts with byte 0x%02x", header[0]);
	root = json_loadb((const char *)header, len, JSON_REJECT_DUPLICATES, &e);
	if (!root) {
		/*
		 * jansson does not always say that it ran out of memory (it may report a syntax
		 * error instead): a file is only called malformed when memory can be had now.
		 */
		probe = mc_malloc(256);
		mc_free(probe);
		if (!probe || !e.text[0] || json_error_code(&e) == json_error_out_of_memory)
			return -ENOMEM;
		return fail(r, "a UTF-8 JSON object without duplicate keys",
			    "invalid JSON at header byte %d: %s", e.position, e.text);
	}
	if (!json_is_object(root)) {
		ret = fail(r, "a JSON object header", "the header is not an object");
		goto out;
	}
	spans = mc_calloc(json_object_size(root) ? json_object_size(root) : 1, sizeof(*spans));
	if (!spans) {
		ret = -ENOMEM;
		goto out;
	}
	json_object_foreach(root, key, v)
	{
		if (!strcmp(key, "__metadata__"))
			ret = check_metadata(v, r);
		else
			ret = check_tensor(key, v, data_len, &spans[n++], r);
		if (ret)
			goto out;
	}
	ret = check_tiling(spans, n, data_len, r);
out:
	mc_free(spans);
	json_decref(root);
	return ret;
}

/* Reads exactly @len bytes at @off; -ENODATA when the file ends first. */
static int read_at(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = pread(fd, buf + got, len - got, (off_t)(off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		got += (size_t)n;
	}
	return 0;
}

int mc_safetensors_check_fd(int fd, uint64_t file_size, struct mc_safetensors_report *r)
{
	uint8_t prefix[8], *header;
	uint64_t len = 0;
	int ret;

	ret = read_at(fd, prefix, file_size < 8 ? (size_t)file_size : 8, 0);
	if (!ret)
		ret = mc_safetensors_check_prefix(prefix, file_size < 8 ? (size_t)file_size : 8,
						  file_size, &len, r);
	if (ret)
		return ret;
	header = mc_malloc(len ? (size_t)len : 1);
	if (!header)
		return -ENOMEM;
	ret = read_at(fd, header, (size_t)len, 8);
	if (!ret)
		ret = mc_safetensors_check(header, (size_t)len, file_size, r);
	mc_free(header);
	return ret;
}
