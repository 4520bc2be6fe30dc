/*
 * Unit tests of util/: the parsers and validators that stand between mcache and the outside
 * world (command-line sizes and counts, model names, object keys that become file paths, URLs
 * that may carry secrets), plus hex, size formatting, the error buffer and the allocation
 * failure hook. Each case names the input it feeds, so a failure message is enough to act on.
 */
#include "mc_alloc.h"
#include "mc_err.h"
#include "mc_util.h"

#include "mc_test.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Expects @s to parse as a size equal to @want. */
static void size_ok(const char *s, uint64_t want)
{
	uint64_t v = 12345;
	int rc = mc_parse_size(s, &v);

	if (rc != 0 || v != want) {
		fprintf(stderr, "mc_parse_size(\"%s\"): rc %d value %llu, want 0 and %llu\n", s, rc,
			(unsigned long long)v, (unsigned long long)want);
		exit(MC_TEST_FAIL_EXIT);
	}
	mc_test_checks++;
}

/* Expects @s to be refused, leaving the output untouched. */
static void size_bad(const char *s)
{
	uint64_t v = 12345;
	int rc = mc_parse_size(s, &v);

	if (rc != MC_E_USAGE || v != 12345) {
		fprintf(stderr, "mc_parse_size(\"%s\"): rc %d value %llu, want MC_E_USAGE (%d)\n",
			s ? s : "(null)", rc, (unsigned long long)v, MC_E_USAGE);
		exit(MC_TEST_FAIL_EXIT);
	}
	mc_test_checks++;
}

static void test_parse_size(void)
{
	size_ok("0", 0);
	size_ok("1", 1);
	size_ok("4096", 4096);
	size_ok("00016K", 16384);
	size_ok("16K", 16ull << 10);
	size_ok("16k", 16ull << 10);
	size_ok("16M", 16ull << 20);
	size_ok("16m", 16ull << 20);
	size_ok("4M", 4ull << 20);
	size_ok("1G", 1ull << 30);
	size_ok("1g", 1ull << 30);
	size_ok("2T", 2ull << 40);
	size_ok("16MiB", 16ull << 20);
	size_ok("16MB", 16ull << 20);
	size_ok("1GiB", 1ull << 30);
	size_ok("512B", 512);
	size_ok("0M", 0);
	size_ok("18446744073709551615", UINT64_MAX);
	size_ok("16777215T", 16777215ull << 40);
	size_ok("17179869183G", 17179869183ull << 30);

	/* Garbage. */
	size_bad(NULL);
	size_bad("");
	size_bad("M");
	size_bad("K16");
	size_bad("-1");
	size_bad("+1");
	size_bad(" 16M");
	size_bad("16M ");
	size_bad("16 M");
	size_bad("1.5G");
	size_bad("0x10");
	size_bad("16X");
	size_bad("16P");
	size_bad("16Mi");
	size_bad("16iB");
	size_bad("16MiBB");
	size_bad("16MBB");
	size_bad("16BB");
	size_bad("16KM");
	size_bad("16M\n");

	/* Overflow, in the digits and in the shift. */
	size_bad("18446744073709551616");
	size_bad("99999999999999999999");
	size_bad("184467440737095516150");
	size_bad("16777216T");
	size_bad("17179869184G");
	size_bad("17592186044416M");
	size_bad("18014398509481984K");
}

static void uint_ok(const char *s, uint64_t min, uint64_t max, uint64_t want)
{
	uint64_t v = 777;
	int rc = mc_parse_uint(s, min, max, &v);

	if (rc != 0 || v != want) {
		fprintf(stderr, "mc_parse_uint(\"%s\", %llu, %llu): rc %d value %llu, want %llu\n",
			s, (unsigned long long)min, (unsigned long long)max, rc,
			(unsigned long long)v, (unsigned long long)want);
		exit(MC_TEST_FAIL_EXIT);
	}
	mc_test_checks++;
}

static void uint_bad(const char *s, uint64_t min, uint64_t max)
{
	uint64_t v = 777;
	int rc = mc_parse_uint(s, min, max, &v);

	if (rc != MC_E_USAGE || v != 777) {
		fprintf(stderr,
			"mc_parse_uint(\"%s\", %llu, %llu): rc %d value %llu, want MC_E_USAGE\n",
			s ? s : "(null)", (unsigned long long)min, (unsigned long long)max, rc,
			(unsigned long long)v);
		exit(MC_TEST_FAIL_EXIT);
	}
	mc_test_checks++;
}

static void test_parse_uint(void)
{
	uint_ok("0", 0, 10, 0);
	uint_ok("1", 1, 256, 1);
	uint_ok("256", 1, 256, 256);
	uint_ok("0008", 1, 256, 8);
	uint_ok("18446744073709551615", 0, UINT64_MAX, UINT64_MAX);

	uint_bad("0", 1, 256); /* --connections 0 */
	uint_bad("257", 1, 256);
	uint_bad(NULL, 0, 10);
	uint_bad("", 0, 10);
	uint_bad("-1", 0, 10);
	uint_bad("+1", 0, 10);
	uint_bad(" 1", 0, 10);
	uint_bad("1 ", 0, 10);
	uint_bad("1a", 0, 10);
	uint_bad("1K", 0, UINT64_MAX); /* sizes are mc_parse_size's job */
	uint_bad("0x1", 0, 10);
	uint_bad("18446744073709551616", 0, UINT64_MAX);
	uint_bad("99999999999999999999999", 0, UINT64_MAX);
}

static void redact_is(const char *url, const char *want)
{
	char *got = mc_url_redact(url);

	ASSERT_NOT_NULL(got);
	if (strcmp(got, want) != 0) {
		fprintf(stderr, "mc_url_redact(\"%s\") = \"%s\", want \"%s\"\n", url, got, want);
		exit(MC_TEST_FAIL_EXIT);
	}
	mc_test_checks++;
	mc_free(got);
}

static void test_url_redact(void)
{
	redact_is("http://host/path/file.bin", "http://host/path/file.bin");
	redact_is("https://host:8443/a/b", "https://host:8443/a/b");
	redact_is("https://user:pass@host/a", "https://host/a");
	redact_is("https://user@host:9000/a", "https://host:9000/a");
	redact_is("https://user:p%40ss@host/a", "https://host/a");
	redact_is("https://a@b@host/p", "https://host/p");
	redact_is("https://host/a?X-Amz-Signature=SECRETSIG123&X-Amz-Credential=AKID",
		  "https://host/a");
	redact_is("https://host/a#frag", "https://host/a");
	redact_is("https://host/a?q=1#frag", "https://host/a");
	redact_is("https://host/a#frag?q=1", "https://host/a");
	redact_is("https://host?token=SECRET", "https://host");
	redact_is("https://u:SECRET@host?token=SECRET", "https://host");
	redact_is("https://u:SECRET@host#SECRET", "https://host");
	/* An '@' in the path or the query is not an authority. */
	redact_is("https://host/p@q/file", "https://host/p@q/file");
	redact_is("https://host/p?next=http://u:SECRET@x/", "https://host/p");
	/* One slash after the scheme (libcurl accepts it): the query is still cut (fuzz_url). */
	redact_is("https:/host/p?X-Amz-Signature=SECRET&next=http://x/", "https:/host/p");
	redact_is("https:/u:SECRET@host/p", "https:/host/p");
	redact_is("https:host/p?sig=SECRET", "https:host/p");
	redact_is("https:///host/p?sig=SECRET://x", "https:///host/p");
	redact_is("s3://bucket/prefix/key?versionId=3", "s3://bucket/prefix/key");
	redact_is("hf://org/repo@main", "hf://org/repo@main");
	/* Not a URL at all: still no query or fragment. */
	redact_is("file.bin?sig=SECRET", "file.bin");
	redact_is("", "");

	/* The result never contains the secret, whatever the shape. */
	{
		static const char *const urls[] = {
		    "http://SECRET:x@h/p", "http://x:SECRET@h/p",
		    "http://h/p?SECRET",   "http://h/p?a=SECRET",
		    "http://h/p#SECRET",   "http://u:SECRET@h:1?SECRET#SECRET",
		};
		for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
			char *got = mc_url_redact(urls[i]);
			ASSERT_NOT_NULL(got);
			ASSERT_NULL(strstr(got, "SECRET"));
			mc_free(got);
		}
	}

	/* Allocation failure is reported, not crashed on. */
	mc_alloc_fail_at(1);
	ASSERT_NULL(mc_url_redact("https://host/a?x=1"));
	mc_alloc_fail_at(0);
}

static void test_name_is_valid(void)
{
	char name[200];

	ASSERT_TRUE(mc_name_is_valid("llama-3-8b"));
	ASSERT_TRUE(mc_name_is_valid("Qwen2.5_7B-Instruct"));
	ASSERT_TRUE(mc_name_is_valid("a"));
	ASSERT_TRUE(mc_name_is_valid("0"));
	ASSERT_TRUE(mc_name_is_valid("_x"));
	ASSERT_TRUE(mc_name_is_valid("a..b"));

	ASSERT_FALSE(mc_name_is_valid(NULL));
	ASSERT_FALSE(mc_name_is_valid(""));
	ASSERT_FALSE(mc_name_is_valid("."));
	ASSERT_FALSE(mc_name_is_valid(".."));
	ASSERT_FALSE(mc_name_is_valid(".hidden"));
	ASSERT_FALSE(mc_name_is_valid("-rf"));
	ASSERT_FALSE(mc_name_is_valid("a/b"));
	ASSERT_FALSE(mc_name_is_valid("/a"));
	ASSERT_FALSE(mc_name_is_valid("a\\b"));
	ASSERT_FALSE(mc_name_is_valid("a b"));
	ASSERT_FALSE(mc_name_is_valid("a\nb"));
	ASSERT_FALSE(mc_name_is_valid("a:b"));
	ASSERT_FALSE(mc_name_is_valid("a@b"));
	ASSERT_FALSE(mc_name_is_valid("caf\xc3\xa9"));

	memset(name, 'n', sizeof(name));
	name[128] = '\0';
	ASSERT_TRUE(mc_name_is_valid(name));
	name[128] = 'n';
	name[129] = '\0';
	ASSERT_FALSE(mc_name_is_valid(name));
}

/* Fills @buf with a structurally valid path of exactly @len bytes (components of 99 bytes). */
static void long_path(char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (i % 100 == 99) ? '/' : 'a';
	buf[len - 1] = 'a';
	buf[len] = '\0';
}

static void test_relpath_is_valid(void)
{
	char buf[5000];

	ASSERT_TRUE(mc_relpath_is_valid("model.safetensors"));
	ASSERT_TRUE(mc_relpath_is_valid("a/b/config.json"));
	ASSERT_TRUE(mc_relpath_is_valid(".gitattributes"));
	ASSERT_TRUE(mc_relpath_is_valid("a/.b"));
	ASSERT_TRUE(mc_relpath_is_valid("..."));
	ASSERT_TRUE(mc_relpath_is_valid("a/..b/b.."));
	ASSERT_TRUE(mc_relpath_is_valid("\xce\xa9.bin"));

	ASSERT_FALSE(mc_relpath_is_valid(NULL));
	ASSERT_FALSE(mc_relpath_is_valid(""));
	ASSERT_FALSE(mc_relpath_is_valid("/abs"));
	ASSERT_FALSE(mc_relpath_is_valid("/"));
	ASSERT_FALSE(mc_relpath_is_valid("//a"));
	ASSERT_FALSE(mc_relpath_is_valid("a//b"));
	ASSERT_FALSE(mc_relpath_is_valid(".."));
	ASSERT_FALSE(mc_relpath_is_valid("../a"));
	ASSERT_FALSE(mc_relpath_is_valid("a/.."));
	ASSERT_FALSE(mc_relpath_is_valid("a/../b"));
	ASSERT_FALSE(mc_relpath_is_valid("a/../../etc/passwd"));
	ASSERT_FALSE(mc_relpath_is_valid("."));
	ASSERT_FALSE(mc_relpath_is_valid("./a"));
	ASSERT_FALSE(mc_relpath_is_valid("a/./b"));
	ASSERT_FALSE(mc_relpath_is_valid("a/"));
	ASSERT_FALSE(mc_relpath_is_valid("a/b/"));
	ASSERT_FALSE(mc_relpath_is_valid("a\\b"));
	ASSERT_FALSE(mc_relpath_is_valid("..\\a"));
	ASSERT_FALSE(mc_relpath_is_valid("a\tb"));
	ASSERT_FALSE(mc_relpath_is_valid("a\nb"));
	ASSERT_FALSE(mc_relpath_is_valid("a\rb"));
	ASSERT_FALSE(mc_relpath_is_valid("\x1b[31m"));
	ASSERT_FALSE(mc_relpath_is_valid("a\x7f"));

	/* Component length: 255 bytes fit, 256 do not. */
	memset(buf, 'c', 255);
	buf[255] = '\0';
	ASSERT_TRUE(mc_relpath_is_valid(buf));
	memset(buf, 'c', 256);
	buf[256] = '\0';
	ASSERT_FALSE(mc_relpath_is_valid(buf));

	/* Total length: 4096 bytes fit, 4097 do not, with otherwise valid components. */
	long_path(buf, 4096);
	ASSERT_EQ(strlen(buf), 4096);
	ASSERT_TRUE(mc_relpath_is_valid(buf));
	long_path(buf, 4097);
	ASSERT_EQ(strlen(buf), 4097);
	ASSERT_FALSE(mc_relpath_is_valid(buf));
}

static void test_hex(void)
{
	static const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xcd, 0xef, 0xff};
	uint8_t back[sizeof(bytes)];
	uint8_t all[256], all_back[256];
	char hex[2 * 256 + 1];

	mc_hex(bytes, sizeof(bytes), hex);
	ASSERT_STR_EQ(hex, "00017f80abcdefff");
	memset(back, 0x55, sizeof(back));
	ASSERT_EQ(mc_unhex(hex, back, sizeof(back)), 0);
	ASSERT_MEM_EQ(back, bytes, sizeof(bytes));

	ASSERT_EQ(mc_unhex("00017F80ABCDEFFF", back, sizeof(back)), 0);
	ASSERT_MEM_EQ(back, bytes, sizeof(bytes));

	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	mc_hex(all, sizeof(all), hex);
	ASSERT_EQ(strlen(hex), 512);
	ASSERT_EQ(mc_unhex(hex, all_back, sizeof(all_back)), 0);
	ASSERT_MEM_EQ(all_back, all, sizeof(all));

	mc_hex(bytes, 0, hex);
	ASSERT_STR_EQ(hex, "");
	ASSERT_EQ(mc_unhex("", back, 0), 0);

	ASSERT_EQ(mc_unhex("00017f80abcdeff", back, sizeof(back)), MC_E_USAGE);	  /* short */
	ASSERT_EQ(mc_unhex("00017f80abcdef", back, sizeof(back)), MC_E_USAGE);	  /* short */
	ASSERT_EQ(mc_unhex("00017f80abcdefff0", back, sizeof(back)), MC_E_USAGE); /* long */
	ASSERT_EQ(mc_unhex("00017f80abcdefgf", back, sizeof(back)), MC_E_USAGE);
	ASSERT_EQ(mc_unhex("0x017f80abcdefff", back, sizeof(back)), MC_E_USAGE);
	ASSERT_EQ(mc_unhex(" 0017f80abcdefff", back, sizeof(back)), MC_E_USAGE);
	ASSERT_EQ(mc_unhex("", back, 1), MC_E_USAGE);
	ASSERT_EQ(mc_unhex("a", back, 0), MC_E_USAGE);
}

static void test_format_size(void)
{
	char buf[32];

	ASSERT_STR_EQ(mc_format_size(0, buf, sizeof(buf)), "0 B");
	ASSERT_STR_EQ(mc_format_size(1023, buf, sizeof(buf)), "1023 B");
	ASSERT_STR_EQ(mc_format_size(1024, buf, sizeof(buf)), "1.00 KiB");
	ASSERT_STR_EQ(mc_format_size(16ull << 20, buf, sizeof(buf)), "16.0 MiB");
	ASSERT_STR_EQ(mc_format_size(3ull << 29, buf, sizeof(buf)), "1.50 GiB");
	ASSERT_NOT_NULL(mc_format_size(UINT64_MAX, buf, sizeof(buf)));
	ASSERT_STR_EQ(mc_format_size(1ull << 20, buf, 4), "1.0");
}

static void test_err(void)
{
	struct mc_err err;

	mc_err_init(&err);
	ASSERT_STR_EQ(err.msg, "");
	ASSERT_EQ(mc_err_set(&err, MC_E_ORIGIN, "cannot fetch '%s': HTTP %d", "x", 404),
		  MC_E_ORIGIN);
	ASSERT_STR_EQ(err.msg, "cannot fetch 'x': HTTP 404");
	/* The first message wins. */
	ASSERT_EQ(mc_err_set(&err, MC_E_USAGE, "outer"), MC_E_USAGE);
	ASSERT_STR_EQ(err.msg, "cannot fetch 'x': HTTP 404");

	mc_err_init(&err);
	ASSERT_EQ(mc_err_errno(&err, -ENOENT, "cannot open '%s'", "index.db"), -ENOENT);
	ASSERT_STR_EQ(err.msg, "cannot open 'index.db': No such file or directory");
	mc_err_init(&err);
	ASSERT_EQ(mc_err_errno(&err, MC_E_INDEX, "bad index"), MC_E_INDEX);
	ASSERT_STR_EQ(err.msg, "bad index");
	ASSERT_EQ(mc_err_set(NULL, -EIO, "nowhere"), -EIO);

	ASSERT_EQ(mc_exit_code(0), MC_EXIT_OK);
	ASSERT_EQ(mc_exit_code(MC_E_USAGE), 2);
	ASSERT_EQ(mc_exit_code(MC_E_ORIGIN), 3);
	ASSERT_EQ(mc_exit_code(MC_E_CHANGED), 3);
	ASSERT_EQ(mc_exit_code(MC_E_INTEGRITY), 4);
	ASSERT_EQ(mc_exit_code(-ENOSPC), 5);
	ASSERT_EQ(mc_exit_code(-EDQUOT), 5);
	ASSERT_EQ(mc_exit_code(-EIO), 6);
	ASSERT_EQ(mc_exit_code(MC_E_INDEX), 6);
	ASSERT_EQ(mc_exit_code(MC_E_NOTFOUND), 7);
	ASSERT_EQ(mc_exit_code(MC_E_INTERRUPTED), 130);
}

static void test_alloc(void)
{
	char *a, *b;

	a = mc_strdup("hello");
	ASSERT_STR_EQ(a, "hello");
	b = mc_strndup("hello", 3);
	ASSERT_STR_EQ(b, "hel");
	mc_free(a);
	mc_free(b);

	/* The 2nd allocation from now on fails, and every later one. */
	mc_alloc_fail_at(2);
	a = mc_malloc(8);
	ASSERT_NOT_NULL(a);
	ASSERT_NULL(mc_malloc(8));
	ASSERT_NULL(mc_strdup("x"));
	mc_alloc_fail_at(0);
	b = mc_malloc(8);
	ASSERT_NOT_NULL(b);
	mc_free(a);
	mc_free(b);
}

static void test_parse_duration(void)
{
	uint64_t v = 0;

	ASSERT_EQ(mc_parse_duration("30", &v), 0);
	ASSERT_UINT_EQ(v, 30);
	ASSERT_EQ(mc_parse_duration("30s", &v), 0);
	ASSERT_UINT_EQ(v, 30);
	ASSERT_EQ(mc_parse_duration("10m", &v), 0);
	ASSERT_UINT_EQ(v, 600);
	ASSERT_EQ(mc_parse_duration("2h", &v), 0);
	ASSERT_UINT_EQ(v, 7200);
	ASSERT_EQ(mc_parse_duration("365d", &v), 0);
	ASSERT_UINT_EQ(v, 365 * 86400);
	v = 7;
	ASSERT_EQ(mc_parse_duration("366d", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("0", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("m", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("10x", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("10mm", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("-5s", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("99999999999999999999s", &v), MC_E_USAGE);
	ASSERT_EQ(mc_parse_duration("1.5h", &v), MC_E_USAGE);
	ASSERT_UINT_EQ(v, 7);
}

int main(void)
{
	MC_RUN(test_parse_size);
	MC_RUN(test_parse_uint);
	MC_RUN(test_parse_duration);
	MC_RUN(test_url_redact);
	MC_RUN(test_name_is_valid);
	MC_RUN(test_relpath_is_valid);
	MC_RUN(test_hex);
	MC_RUN(test_format_size);
	MC_RUN(test_err);
	MC_RUN(test_alloc);
	printf("%lu checks passed\n", mc_test_checks);
	return 0;
}
