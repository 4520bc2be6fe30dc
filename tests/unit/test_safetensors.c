/*
 * Unit tests of cache/safetensors.c, the structural check deep verify runs on *.safetensors
 * files: a table of valid headers (every dtype, scalars, empty tensors, tensors listed out of
 * offset order, padding, metadata) that must pass, and a table of malformed ones, each refused
 * with MC_E_INTEGRITY and the exact expected/actual text a finding carries (bad length prefix,
 * length past the file, not JSON, not UTF-8, duplicate keys, unknown dtype, shape against span,
 * overlap, gap, not starting at 0, not ending at the end of the file, negative or fractional
 * shapes, metadata that is not a string map, overflow). Then the same check through a file
 * descriptor, on a good file and on that file truncated.
 */
#include "mc_alloc.h"
#include "mc_err.h"
#include "mc_test.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mc_banned.h"

/* Fails unless @hay contains @needle, printing both. */
#define ASSERT_CONTAINS(hay, needle)                                                               \
	do {                                                                                       \
		const char *mc_h_ = (hay), *mc_n_ = (needle);                                      \
		mc_test_checks++;                                                                  \
		if (!strstr(mc_h_, mc_n_))                                                         \
			MC_TEST_FAILED_("\"%s\" contains \"%s\"", mc_h_, mc_n_);                   \
	} while (0)

/* Checks @json as the header of a file with @data data bytes after it. */
static int check(const char *json, uint64_t data, struct mc_safetensors_report *r)
{
	size_t len = strlen(json);

	memset(r, 0, sizeof(*r));
	return mc_safetensors_check((const uint8_t *)json, len, 8 + len + data, r);
}

struct good {
	const char *json;
	uint64_t data;
};

static void test_good(void)
{
	static const struct good good[] = {
	    {"{}", 0},
	    {"{\"__metadata__\":{\"format\":\"pt\"},"
	     "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}",
	     24},
	    /* Listed out of offset order: the spans are sorted before the tiling check. */
	    {"{\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[8,16]},"
	     "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}",
	     16},
	    /* A scalar (shape []) is one element; an empty tensor spans nothing, anywhere. */
	    {"{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]},"
	     "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[8,8]},"
	     "\"t\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[8,11]}}",
	     11},
	    /* Four-bit elements, two per byte. */
	    {"{\"q\":{\"dtype\":\"F4\",\"shape\":[2,4],\"data_offsets\":[0,4]}}", 4},
	    {"{\"q\":{\"dtype\":\"F6_E2M3\",\"shape\":[4],\"data_offsets\":[0,3]}}", 3},
	    /* Padded with spaces to a multiple of 8, as writers do; metadata may be null. */
	    {"{\"__metadata__\":null,\"a\":{\"dtype\":\"BOOL\",\"shape\":[1],"
	     "\"data_offsets\":[0,1]}}       ",
	     1},
	    /* Unknown keys in a tensor entry are tolerated, as the reference reader does. */
	    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2],\"x\":1}}", 2},
	    /* UTF-8 names. */
	    {"{\"\xc3\xa9t\xc3\xa9\":{\"dtype\":\"U16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2},
	};
	static const char *const dtypes[] = {
	    "BOOL",    "F4",	  "F6_E2M3", "F6_E3M2", "U8",  "I8",   "F8_E5M2",
	    "F8_E4M3", "F8_E8M0", "I16",     "U16",	"F16", "BF16", "I32",
	    "U32",     "F32",	  "C64",     "F64",	"I64", "U64",
	};
	static const unsigned bits[] = {8,  4,	6,  6,	8,  8,	8,  8,	8,  16,
					16, 16, 16, 32, 32, 32, 64, 64, 64, 64};
	struct mc_safetensors_report r;
	char json[200];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int ret = check(good[i].json, good[i].data, &r);

		if (ret)
			MC_TEST_FAILED_("good header %zu refused (%d): expected %s, actual %s", i,
					ret, r.expected, r.actual);
	}
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++) {
		snprintf(json, sizeof(json),
			 "{\"t\":{\"dtype\":\"%s\",\"shape\":[4,2],\"data_offsets\":[0,%u]}}",
			 dtypes[i], bits[i]);
		ASSERT_EQ(check(json, bits[i], &r), 0);
		/* One byte more or less than 8 elements take is wrong for every dtype. */
		snprintf(json, sizeof(json),
			 "{\"t\":{\"dtype\":\"%s\",\"shape\":[4,2],\"data_offsets\":[0,%u]}}",
			 dtypes[i], bits[i] + 1);
		ASSERT_EQ(check(json, bits[i] + 1, &r), MC_E_INTEGRITY);
	}
}

struct bad {
	const char *json;
	uint64_t data;
	const char *expected; /* exact */
	const char *actual;   /* a part of it */
};

static void test_bad(void)
{
	static const struct bad bad[] = {
	    {"", 0, "a JSON object header (starting with '{')", "an empty header"},
	    {"[1,2]", 0, "a JSON object header (starting with '{')", "byte 0x5b"},
	    {"{not json}", 0, "a UTF-8 JSON object without duplicate keys",
	     "invalid JSON at header byte"},
	    {"{\"a\":1} x", 0, "a UTF-8 JSON object without duplicate keys", "invalid JSON"},
	    {"{\"a\xff\":{}}", 0, "a UTF-8 JSON object without duplicate keys", "invalid JSON"},
	    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
	     "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
	     2, "a UTF-8 JSON object without duplicate keys", "duplicate object key"},
	    {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
	     "a safetensors dtype (BF16, F16, F32, I64, ...)", "tensor 'a' dtype 'Q4'"},
	    {"{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
	     "a safetensors dtype (BF16, F16, F32, I64, ...)", "tensor 'a' dtype is 4"},
	    {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12,
	     "tensor 'w' 16 bytes (F32, 4 elements)", "tensor 'w' 12 bytes (data_offsets [0, 12])"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
	     12, "tensor 'b' to begin at 8, where 'a' ends",
	     "tensor 'b' begins at 4 (overlaps 'a' by 4 bytes)"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
	     20, "tensor 'b' to begin at 8, where 'a' ends",
	     "tensor 'b' begins at 12 (a gap of 4 bytes)"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
	     "the first tensor to begin at data byte 0", "tensor 'a' begins at 4"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 16,
	     "tensors to end at data byte 16 (the end of the file)",
	     "the last tensor 'a' ends at 8 (8 bytes unaccounted for)"},
	    {"{}", 4, "tensors to end at data byte 4 (the end of the file)",
	     "no tensor; 4 data bytes"},
	    /* The acceptance case: the last tensor runs past the end of the file. */
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
	     "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
	     20, "tensor 'b' within the 20 data bytes",
	     "tensor 'b' ends at 24, 4 bytes past the end of the file"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0,
	     "a shape of non-negative integers", "tensor 'a' shape[0] is -1"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2.5],\"data_offsets\":[0,8]}}", 8,
	     "a shape of non-negative integers", "tensor 'a' shape[1] is 2.5"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
	     "a shape of non-negative integers", "shape[0] is a string"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":3,\"data_offsets\":[0,12]}}", 12,
	     "a shape of non-negative integers", "tensor 'a' shape is 3"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
	     "a tensor object (dtype, shape, data_offsets)", "tensor 'a' has no 'data_offsets'"},
	    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
	     "a tensor object (dtype, shape, data_offsets)", "tensor 'a' has no 'dtype'"},
	    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
	     "data_offsets [begin, end] of non-negative integers", "tensor 'a'"},
	    {"{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
	     "data_offsets with begin <= end", "tensor 'a' data_offsets [4, 0]"},
	    {"{\"a\":5}", 0, "a tensor object (dtype, shape, data_offsets)", "tensor 'a' is 5"},
	    {"{\"__metadata__\":\"x\"}", 0, "__metadata__ an object of strings",
	     "__metadata__ is a string"},
	    {"{\"__metadata__\":{\"format\":\"pt\",\"step\":1}}", 0,
	     "__metadata__ an object of strings", "__metadata__ 'step' is 1"},
	    {"{\"q\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
	     "a tensor of whole bytes", "tensor 'q' 3 elements of 4 bits"},
	    {"{\"h\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
	     "\"data_offsets\":[0,0]}}",
	     0, "a shape whose size fits in 64 bits", "tensor 'h' shape overflows"},
	};
	struct mc_safetensors_report r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int ret = check(bad[i].json, bad[i].data, &r);

		if (ret != MC_E_INTEGRITY)
			MC_TEST_FAILED_("bad header %zu (%s) accepted: %d", i, bad[i].json, ret);
		ASSERT_STR_EQ(r.expected, bad[i].expected);
		ASSERT_CONTAINS(r.actual, bad[i].actual);
	}
}

/* A NUL byte inside the header and a tensor name cut in messages. */
static void test_odd_bytes(void)
{
	static const char nul[] = "{\"a\0\":{}}";
	struct mc_safetensors_report r;
	char json[400], name[200];
	int ret;

	ret = mc_safetensors_check((const uint8_t *)nul, sizeof(nul) - 1, 8 + sizeof(nul) - 1, &r);
	ASSERT_EQ(ret, MC_E_INTEGRITY);
	ASSERT_CONTAINS(r.actual, "invalid JSON");
	memset(name, 'n', 150);
	name[150] = '\0';
	snprintf(json, sizeof(json),
		 "{\"%s\":{\"dtype\":\"Q\",\"shape\":[],\"data_offsets\":[0,1]}}", name);
	ASSERT_EQ(check(json, 1, &r), MC_E_INTEGRITY);
	ASSERT_CONTAINS(r.actual, "nnnn...' dtype 'Q'");
	ASSERT_TRUE(strlen(r.actual) < 120);
}

static void test_prefix(void)
{
	struct mc_safetensors_report r;
	uint8_t p[8] = {0};
	uint64_t len = 0;

	ASSERT_EQ(mc_safetensors_check_prefix(p, 5, 5, &len, &r), MC_E_INTEGRITY);
	ASSERT_STR_EQ(r.expected, "at least 8 bytes (the header length)");
	ASSERT_STR_EQ(r.actual, "5 bytes");
	/* 100000000 = 0x05f5e100: the reference reader's limit, refused. */
	p[0] = 0x00, p[1] = 0xe1, p[2] = 0xf5, p[3] = 0x05;
	ASSERT_EQ(mc_safetensors_check_prefix(p, 8, (uint64_t)1 << 40, &len, &r), MC_E_INTEGRITY);
	ASSERT_STR_EQ(r.expected, "a header length below 100000000");
	ASSERT_STR_EQ(r.actual, "header length 100000000");
	p[0] = 0xff; /* a huge little-endian length: the top byte counts */
	p[7] = 0x80;
	ASSERT_EQ(mc_safetensors_check_prefix(p, 8, 100, &len, &r), MC_E_INTEGRITY);
	ASSERT_CONTAINS(r.actual, "header length 92");
	memset(p, 0, sizeof(p));
	p[0] = 93;
	ASSERT_EQ(mc_safetensors_check_prefix(p, 8, 100, &len, &r), MC_E_INTEGRITY);
	ASSERT_STR_EQ(r.expected, "a header length of at most 92 (the file has 100 bytes)");
	ASSERT_STR_EQ(r.actual, "header length 93");
	p[0] = 92;
	ASSERT_EQ(mc_safetensors_check_prefix(p, 8, 100, &len, &r), 0);
	ASSERT_UINT_EQ(len, 92);
}

/* Writes a small valid file, checks it through an fd, then truncated and with a bad prefix. */
static void test_fd(void)
{
	static const char hdr[] =
	    "{\"a\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}";
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	struct mc_safetensors_report r;
	uint8_t buf[8 + sizeof(hdr) - 1 + 8];
	uint64_t n = sizeof(hdr) - 1;
	char path[512];
	int fd;

	for (int i = 0; i < 8; i++)
		buf[i] = (uint8_t)(n >> (8 * i));
	memcpy(buf + 8, hdr, n);
	memset(buf + 8 + n, 0x3c, 8);
	snprintf(path, sizeof(path), "%s/mc-test-st.XXXXXX", base);
	fd = mkstemp(path);
	ASSERT_GE(fd, 0);
	unlink(path);
	ASSERT_EQ(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	ASSERT_EQ(mc_safetensors_check_fd(fd, sizeof(buf), &r), 0);
	ASSERT_EQ(ftruncate(fd, sizeof(buf) - 3), 0);
	ASSERT_EQ(mc_safetensors_check_fd(fd, sizeof(buf) - 3, &r), MC_E_INTEGRITY);
	ASSERT_STR_EQ(r.expected, "tensor 'a' within the 5 data bytes");
	/* The header itself cut short while the size says more: a read error, not a finding. */
	ASSERT_EQ(ftruncate(fd, 20), 0);
	ASSERT_EQ(mc_safetensors_check_fd(fd, sizeof(buf), &r), -ENODATA);
	ASSERT_EQ(ftruncate(fd, 4), 0);
	ASSERT_EQ(mc_safetensors_check_fd(fd, 4, &r), MC_E_INTEGRITY);
	ASSERT_STR_EQ(r.actual, "4 bytes");
	close(fd);
}

/* Out of memory is reported as such, never as a malformed file. */
static void test_nomem(void)
{
	static const char hdr[] = "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
	struct mc_safetensors_report r;
	int ret, ok = 0;

	for (unsigned long nth = 1; nth < 64; nth++) {
		mc_alloc_fail_at(nth);
		ret = mc_safetensors_check((const uint8_t *)hdr, sizeof(hdr) - 1, sizeof(hdr) + 8,
					   &r);
		mc_alloc_fail_at(0);
		ASSERT_TRUE(ret == 0 || ret == -ENOMEM);
		ok += ret == 0;
	}
	ASSERT_GT(ok, 0);
}

int main(void)
{
	/* jansson allocates through the wrapper, as in the binary, so test_nomem reaches it. */
	json_set_alloc_funcs(mc_malloc, mc_free);
	MC_RUN(test_good);
	MC_RUN(test_bad);
	MC_RUN(test_odd_bytes);
	MC_RUN(test_prefix);
	MC_RUN(test_fd);
	MC_RUN(test_nomem);
	return 0;
}
