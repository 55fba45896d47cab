/*
 * mini_criterion.h — a stand-in for the subset of Criterion our concurrency tests use,
 * for the ThreadSanitizer build only: Criterion's runner cannot start under TSan
 * ("Could not initialize inheritable arena"), so there the same test file is compiled
 * with -DDE_MINI_CRITERION against this header into a plain program.
 *
 * Supported: Test(suite, name, options) and TestSuite(suite, options) with .init and .fini
 * run around the test as Criterion does (suite init, test init, test, test fini, suite
 * fini; the other options, .timeout etc., are accepted and ignored); cr_assert, cr_assert_not,
 * cr_assert_eq/neq/gt/geq/lt/leq, cr_assert_not_null, cr_assert_null, cr_assert_str_eq,
 * cr_assert_float_eq, cr_assert_arr_eq, cr_assert_fail, the same cr_expect* forms,
 * cr_log_info/warn/error, cr_skip_test. Tests run one after another in this process; a failed
 * assertion prints where and exits 1; a failed expectation prints where, the test goes
 * on and counts as failed (exit 1 at the end). `--filter GLOB` (fnmatch on "suite/name";
 * may be given several times: a test runs if any matches) picks tests; unknown Criterion
 * options are ignored. The last line is "mini-criterion: N passed, M failed, K skipped";
 * the exit status is 1 on a failure or when no test matched, 77 (meson's SKIP) when every
 * test that ran skipped, else 0.
 */
#ifndef DE_MINI_CRITERION_H
#define DE_MINI_CRITERION_H

#include <fnmatch.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mc_test {
	const char *suite, *name;
	void (*fn)(void);
	struct mc_test *next;
	/* Criterion's test options, given as designated initializers after the above */
	void (*init)(void), (*fini)(void);
	double timeout;
	int disabled, signal, exit_code;
	const char *description;
};

struct mc_suite {
	const char *name;
	struct mc_suite *next;
	void (*init)(void), (*fini)(void);
	double timeout;
	int disabled;
	const char *description;
};

static struct mc_test *mc_head;
static struct mc_suite *mc_suites;
static jmp_buf mc_skip_jmp;
static int mc_passed, mc_failed, mc_skipped, mc_cur_failed;

#define Test(suite, name, ...)                                                            \
	static void suite##_##name##_mc(void);                                             \
	__attribute__((constructor)) static void suite##_##name##_mc_reg(void)             \
	{                                                                                  \
		static struct mc_test t = { #suite, #name, suite##_##name##_mc, NULL,      \
					    __VA_ARGS__ };                                 \
		t.next = mc_head;                                                          \
		mc_head = &t;                                                              \
	}                                                                                  \
	static void suite##_##name##_mc(void)

#define TestSuite(suite, ...)                                                             \
	__attribute__((constructor)) static void suite##_mc_suite_reg(void)                \
	{                                                                                  \
		static struct mc_suite s = { #suite, NULL, __VA_ARGS__ };                  \
		s.next = mc_suites;                                                        \
		mc_suites = &s;                                                            \
	}

__attribute__((format(printf, 5, 6))) static void
mc_report(int fatal, const char *file, int line, const char *expr, const char *fmt, ...)
{
	fprintf(stderr, "%s:%d: %s failed: %s\n", file, line, fatal ? "assertion" : "expectation",
		expr);
	if (fmt[1]) { /* fmt is " " followed by the caller's format, if any */
		va_list ap;
		va_start(ap, fmt);
		fputs("  ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
	if (!fatal) {
		mc_cur_failed = 1;
		return;
	}
	printf("mini-criterion: %d passed, %d failed, %d skipped\n", mc_passed, mc_failed + 1,
	       mc_skipped);
	fflush(stdout);
	exit(1);
}
#define mc_fail(...) (mc_report(1, __VA_ARGS__), abort())

#define cr_assert(cond, ...)                                                                \
	do {                                                                               \
		if (!(cond))                                                               \
			mc_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                \
	} while (0)
#define cr_assert_not(cond, ...) cr_assert(!(cond), __VA_ARGS__)
#define cr_assert_eq(a, b, ...) cr_assert((a) == (b), __VA_ARGS__)
#define cr_assert_neq(a, b, ...) cr_assert((a) != (b), __VA_ARGS__)
#define cr_assert_gt(a, b, ...) cr_assert((a) > (b), __VA_ARGS__)
#define cr_assert_geq(a, b, ...) cr_assert((a) >= (b), __VA_ARGS__)
#define cr_assert_lt(a, b, ...) cr_assert((a) < (b), __VA_ARGS__)
#define cr_assert_leq(a, b, ...) cr_assert((a) <= (b), __VA_ARGS__)
#define cr_assert_not_null(p, ...) cr_assert((p) != NULL, __VA_ARGS__)
#define cr_assert_null(p, ...) cr_assert((p) == NULL, __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) cr_assert(!strcmp((a), (b)), __VA_ARGS__)
#define cr_assert_float_eq(a, b, eps, ...)                                                  \
	cr_assert((a) - (b) <= (eps) && (b) - (a) <= (eps), __VA_ARGS__)
#define cr_assert_arr_eq(a, b, size, ...) cr_assert(!memcmp((a), (b), (size)), __VA_ARGS__)
#define cr_assert_fail(...) mc_fail(__FILE__, __LINE__, "cr_assert_fail", " " __VA_ARGS__)

#define cr_expect(cond, ...)                                                                \
	do {                                                                               \
		if (!(cond))                                                               \
			mc_report(0, __FILE__, __LINE__, #cond, " " __VA_ARGS__);           \
	} while (0)
#define cr_expect_not(cond, ...) cr_expect(!(cond), __VA_ARGS__)
#define cr_expect_eq(a, b, ...) cr_expect((a) == (b), __VA_ARGS__)
#define cr_expect_neq(a, b, ...) cr_expect((a) != (b), __VA_ARGS__)
#define cr_expect_gt(a, b, ...) cr_expect((a) > (b), __VA_ARGS__)
#define cr_expect_geq(a, b, ...) cr_expect((a) >= (b), __VA_ARGS__)
#define cr_expect_lt(a, b, ...) cr_expect((a) < (b), __VA_ARGS__)
#define cr_expect_leq(a, b, ...) cr_expect((a) <= (b), __VA_ARGS__)
#define cr_expect_not_null(p, ...) cr_expect((p) != NULL, __VA_ARGS__)
#define cr_expect_null(p, ...) cr_expect((p) == NULL, __VA_ARGS__)
#define cr_expect_str_eq(a, b, ...) cr_expect(!strcmp((a), (b)), __VA_ARGS__)
#define cr_expect_float_eq(a, b, eps, ...)                                                  \
	cr_expect((a) - (b) <= (eps) && (b) - (a) <= (eps), __VA_ARGS__)
#define cr_expect_arr_eq(a, b, size, ...) cr_expect(!memcmp((a), (b), (size)), __VA_ARGS__)
#define cr_expect_fail(...) mc_report(0, __FILE__, __LINE__, "cr_expect_fail", " " __VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn(...) (fprintf(stderr, "[WARN] " __VA_ARGS__), fputc('\n', stderr))
#define cr_log_error(...) (fprintf(stderr, "[ERR ] " __VA_ARGS__), fputc('\n', stderr))
#define cr_skip_test(...)                                                                   \
	do {                                                                               \
		fprintf(stderr, "[SKIP] " __VA_ARGS__);                                    \
		fputc('\n', stderr);                                                       \
		longjmp(mc_skip_jmp, 1);                                                   \
	} while (0)

#define MC_MAX_FILTERS 16
static const char *mc_filters[MC_MAX_FILTERS];
static int mc_nfilters;
static struct mc_test *mc_cur;
static struct mc_suite mc_no_suite, *mc_cur_suite;

static struct mc_suite *mc_suite_of(const char *name)
{
	for (struct mc_suite *s = mc_suites; s; s = s->next)
		if (!strcmp(s->name, name))
			return s;
	return &mc_no_suite;
}

static void mc_teardown(void)
{
	if (mc_cur->fini)
		mc_cur->fini();
	if (mc_cur_suite->fini)
		mc_cur_suite->fini();
}

static int mc_selected(const char *full)
{
	if (!mc_nfilters)
		return 1;
	for (int i = 0; i < mc_nfilters; i++)
		if (!fnmatch(mc_filters[i], full, 0))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *f = NULL;
		if (!strcmp(argv[i], "--filter") && i + 1 < argc)
			f = argv[++i];
		else if (!strncmp(argv[i], "--filter=", 9))
			f = argv[i] + 9;
		if (f && mc_nfilters == MC_MAX_FILTERS) {
			fprintf(stderr, "mini-criterion: more than %d --filter\n", MC_MAX_FILTERS);
			return 2;
		}
		if (f)
			mc_filters[mc_nfilters++] = f;
	}
	/* registration prepends: reverse to run in file order */
	struct mc_test *rev = NULL;
	while (mc_head) {
		struct mc_test *t = mc_head;
		mc_head = t->next;
		t->next = rev;
		rev = t;
	}
	/* state lives in statics: setjmp/longjmp may clobber locals */
	for (mc_cur = rev; mc_cur; mc_cur = mc_cur->next) {
		char full[256];
		snprintf(full, sizeof full, "%s/%s", mc_cur->suite, mc_cur->name);
		mc_cur_suite = mc_suite_of(mc_cur->suite);
		if (!mc_selected(full) || mc_cur->disabled || mc_cur_suite->disabled)
			continue;
		if (setjmp(mc_skip_jmp)) {
			mc_skipped++;
			mc_teardown();
			continue;
		}
		mc_cur_failed = 0;
		if (mc_cur_suite->init)
			mc_cur_suite->init();
		if (mc_cur->init)
			mc_cur->init();
		mc_cur->fn();
		mc_teardown();
		if (mc_cur_failed) {
			fprintf(stderr, "[FAIL] %s::%s\n", mc_cur->suite, mc_cur->name);
			mc_failed++;
		} else {
			fprintf(stderr, "[PASS] %s::%s\n", mc_cur->suite, mc_cur->name);
			mc_passed++;
		}
	}
	printf("mini-criterion: %d passed, %d failed, %d skipped\n", mc_passed, mc_failed,
	       mc_skipped);
	/* every test that ran skipped: 77, meson's SKIP; a filter that matches nothing is an
	 * error */
	if (mc_failed)
		return 1;
	if (!mc_passed)
		return mc_skipped ? 77 : 1;
	return 0;
}

#endif /* DE_MINI_CRITERION_H */
