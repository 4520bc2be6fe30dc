/*
 * SigV4 presigning against AWS's own worked example ("Authenticating Requests: Using Query
 * Parameters", GET examplebucket/test.txt on 2013-05-24, expires 86400), whose signature AWS
 * publishes, plus the encoding rules for awkward keys.
 */
#include "mc_test.h"

#include "mc_alloc.h"
#include "sigv4.h"

#include <errno.h>
#include <string.h>

static void test_aws_example(void)
{
	const struct mc_s3_creds c = {"AKIAIOSFODNN7EXAMPLE",
				      "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", NULL, "us-east-1",
				      86400};
	struct mc_err err;
	char *url = NULL;

	mc_err_init(&err);
	ASSERT_EQ(mc_sigv4_presign(&c, "https", "examplebucket.s3.amazonaws.com", "/test.txt", NULL,
				   0, 1369353600 /* 2013-05-24T00:00:00Z */, &url, &err),
		  0);
	ASSERT_STR_EQ(
	    url, "https://examplebucket.s3.amazonaws.com/test.txt"
		 "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
		 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
		 "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
		 "&X-Amz-Signature="
		 "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
	mc_free(url);
}

static void test_anonymous_is_unsigned(void)
{
	const struct mc_s3_creds c = {NULL, NULL, NULL, "us-east-1", 0};
	const struct mc_query_param q[] = {{"prefix", "a b/c"}, {"list-type", "2"}};
	struct mc_err err;
	char *url = NULL;

	mc_err_init(&err);
	ASSERT_EQ(mc_sigv4_presign(&c, "http", "127.0.0.1:9000", "/b", q, 2, 0, &url, &err), 0);
	ASSERT_STR_EQ(url, "http://127.0.0.1:9000/b?list-type=2&prefix=a%20b%2Fc");
	mc_free(url);
}

static void test_session_token_is_signed(void)
{
	const struct mc_s3_creds c = {"AK", "SECRET", "TOK/EN+=", "eu-west-1", 0};
	struct mc_err err;
	char *url = NULL;

	mc_err_init(&err);
	ASSERT_EQ(mc_sigv4_presign(&c, "http", "h:1", "/b/k", NULL, 0, 0, &url, &err), 0);
	ASSERT_NOT_NULL(strstr(url, "&X-Amz-Security-Token=TOK%2FEN%2B%3D&"));
	ASSERT_NOT_NULL(strstr(url, "&X-Amz-Signature="));
	ASSERT_NULL(strstr(url, "SECRET"));
	mc_free(url);
}

static void test_encoding(void)
{
	char out[256];

	out[0] = '\0';
	ASSERT_EQ(mc_sigv4_encode("a b+c=d&e/f~g_h.i-j\xc3\xa9", 1, out, sizeof(out)), 0);
	ASSERT_STR_EQ(out, "a%20b%2Bc%3Dd%26e/f~g_h.i-j%C3%A9");
	out[0] = '\0';
	ASSERT_EQ(mc_sigv4_encode("a/b", 0, out, sizeof(out)), 0);
	ASSERT_STR_EQ(out, "a%2Fb");
	out[0] = '\0';
	ASSERT_EQ(mc_sigv4_encode("\xe6\xa8\xa1", 1, out, 8), -ENAMETOOLONG);
}

int main(void)
{
	MC_RUN(test_aws_example);
	MC_RUN(test_anonymous_is_unsigned);
	MC_RUN(test_session_token_is_signed);
	MC_RUN(test_encoding);
	return 0;
}
