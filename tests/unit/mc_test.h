/*
 * A tiny assertion kit for mcache's C unit tests, in the style of libuv's test macros: every
 * failed assertion prints the expression, both values and the location, then exits 1, so a
 * test program is simply a main() that runs checks and returns 0. A test that cannot run here
 * calls MC_SKIP("why"), which exits 77 (CTest's SKIP_RETURN_CODE) after printing the reason.
 *
 * Header-only on purpose: each unit test is one .c file linked against the library it tests.
 */
#ifndef MC_TEST_H
#define MC_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MC_TEST_FAIL_EXIT 1
#define MC_TEST_SKIP_EXIT 77

/* Number of assertions evaluated so far; main() may print it. */
static unsigned long mc_test_checks __attribute__((unused));

#define MC_TEST_FAILED_(fmt, ...)                                                                  \
	do {                                                                                       \
		fprintf(stderr, "%s:%d: %s: assertion failed: " fmt "\n", __FILE__, __LINE__,      \
			__func__, __VA_ARGS__);                                                    \
		exit(MC_TEST_FAIL_EXIT);                                                           \
	} while (0)

/* Integers, compared as signed 64-bit (codes, lengths that fit) or unsigned 64-bit. */
#define MC_ASSERT_INT_(a, op, b)                                                                   \
	do {                                                                                       \
		int64_t mc_a_ = (int64_t)(a), mc_b_ = (int64_t)(b);                                \
		mc_test_checks++;                                                                  \
		if (!(mc_a_ op mc_b_))                                                             \
			MC_TEST_FAILED_("%s %s %s (%" PRId64 " %s %" PRId64 ")", #a, #op, #b,      \
					mc_a_, #op, mc_b_);                                        \
	} while (0)

#define MC_ASSERT_UINT_(a, op, b)                                                                  \
	do {                                                                                       \
		uint64_t mc_a_ = (uint64_t)(a), mc_b_ = (uint64_t)(b);                             \
		mc_test_checks++;                                                                  \
		if (!(mc_a_ op mc_b_))                                                             \
			MC_TEST_FAILED_("%s %s %s (%" PRIu64 " %s %" PRIu64 ")", #a, #op, #b,      \
					mc_a_, #op, mc_b_);                                        \
	} while (0)

#define ASSERT_EQ(a, b)	     MC_ASSERT_INT_(a, ==, b)
#define ASSERT_NE(a, b)	     MC_ASSERT_INT_(a, !=, b)
#define ASSERT_LT(a, b)	     MC_ASSERT_INT_(a, <, b)
#define ASSERT_LE(a, b)	     MC_ASSERT_INT_(a, <=, b)
#define ASSERT_GT(a, b)	     MC_ASSERT_INT_(a, >, b)
#define ASSERT_GE(a, b)	     MC_ASSERT_INT_(a, >=, b)
#define ASSERT_UINT_EQ(a, b) MC_ASSERT_UINT_(a, ==, b)
#define ASSERT_UINT_NE(a, b) MC_ASSERT_UINT_(a, !=, b)

#define ASSERT_TRUE(x)                                                                             \
	do {                                                                                       \
		mc_test_checks++;                                                                  \
		if (!(x))                                                                          \
			MC_TEST_FAILED_("%s is false", #x);                                        \
	} while (0)

#define ASSERT_FALSE(x)                                                                            \
	do {                                                                                       \
		mc_test_checks++;                                                                  \
		if (x)                                                                             \
			MC_TEST_FAILED_("%s is true", #x);                                         \
	} while (0)

#define ASSERT_NULL(p)                                                                             \
	do {                                                                                       \
		const void *mc_p_ = (p);                                                           \
		mc_test_checks++;                                                                  \
		if (mc_p_ != NULL)                                                                 \
			MC_TEST_FAILED_("%s == NULL (%p)", #p, mc_p_);                             \
	} while (0)

#define ASSERT_NOT_NULL(p)                                                                         \
	do {                                                                                       \
		mc_test_checks++;                                                                  \
		if ((p) == NULL)                                                                   \
			MC_TEST_FAILED_("%s != NULL", #p);                                         \
	} while (0)

/* NUL-terminated strings; NULL prints as (null) and equals only NULL. */
#define ASSERT_STR_EQ(a, b)                                                                        \
	do {                                                                                       \
		const char *mc_a_ = (a), *mc_b_ = (b);                                             \
		mc_test_checks++;                                                                  \
		if (!((mc_a_ == NULL && mc_b_ == NULL) ||                                          \
		      (mc_a_ && mc_b_ && strcmp(mc_a_, mc_b_) == 0)))                              \
			MC_TEST_FAILED_("%s == %s (\"%s\" vs \"%s\")", #a, #b,                     \
					mc_a_ ? mc_a_ : "(null)", mc_b_ ? mc_b_ : "(null)");       \
	} while (0)

#define ASSERT_STR_NE(a, b)                                                                        \
	do {                                                                                       \
		const char *mc_a_ = (a), *mc_b_ = (b);                                             \
		mc_test_checks++;                                                                  \
		if (mc_a_ && mc_b_ && strcmp(mc_a_, mc_b_) == 0)                                   \
			MC_TEST_FAILED_("%s != %s (both \"%s\")", #a, #b, mc_a_);                  \
	} while (0)

/* @n bytes at @a and @b are equal; prints the first differing offset. */
#define ASSERT_MEM_EQ(a, b, n)                                                                     \
	do {                                                                                       \
		const unsigned char *mc_a_ = (const unsigned char *)(a);                           \
		const unsigned char *mc_b_ = (const unsigned char *)(b);                           \
		size_t mc_n_ = (n);                                                                \
		mc_test_checks++;                                                                  \
		for (size_t mc_i_ = 0; mc_i_ < mc_n_; mc_i_++)                                     \
			if (mc_a_[mc_i_] != mc_b_[mc_i_])                                          \
				MC_TEST_FAILED_("%s == %s over %zu bytes (offset %zu: 0x%02x vs "  \
						"0x%02x)",                                         \
						#a, #b, mc_n_, mc_i_, mc_a_[mc_i_], mc_b_[mc_i_]); \
	} while (0)

#define MC_SKIP(why)                                                                               \
	do {                                                                                       \
		fprintf(stderr, "SKIP: %s\n", why);                                                \
		exit(MC_TEST_SKIP_EXIT);                                                           \
	} while (0)

/* Runs one test function and says so on stdout: MC_RUN(test_parse_size); */
#define MC_RUN(fn)                                                                                 \
	do {                                                                                       \
		fn();                                                                              \
		printf("ok - %s\n", #fn);                                                          \
	} while (0)

#endif
