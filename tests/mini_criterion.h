/*
 * mini_criterion.h — a stand-in for the subset of Criterion our concurrency tests use,
 * for the ThreadSanitizer build only: Criterion's runner cannot start under TSan
 * ("Could not initialize inheritable arena"), so there the same test file is compiled
 * with -DDE_MINI_CRITERION against this header into a plain program.
 *
 * Supported: Test(suite, name, ...options ignored), cr_assert, cr_assert_not, cr_assert_eq/neq/gt/geq/
 * lt/leq, cr_assert_not_null, cr_assert_null, cr_assert_fail, cr_log_info, cr_skip_test.
 * Tests run one after another in this process; a failed assertion prints where and
 * exits 1. `--filter GLOB` (fnmatch on "suite/name") picks tests; unknown Criterion
 * options are ignored. The last line is "mini-criterion: N passed, M failed, K skipped".
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
};

static struct mc_test *mc_head;
static jmp_buf mc_skip_jmp;

#define Test(suite, name, ...)                                                            \
	static void suite##_##name##_mc(void);                                             \
	__attribute__((constructor)) static void suite##_##name##_mc_reg(void)             \
	{                                                                                  \
		static struct mc_test t = { #suite, #name, suite##_##name##_mc, NULL };    \
		t.next = mc_head;                                                          \
		mc_head = &t;                                                              \
	}                                                                                  \
	static void suite##_##name##_mc(void)

__attribute__((format(printf, 4, 5), noreturn)) static void
mc_fail(const char *file, int line, const char *expr, const char *fmt, ...)
{
	fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, expr);
	if (fmt[1]) { /* fmt is " " followed by the caller's format, if any */
		va_list ap;
		va_start(ap, fmt);
		fputs("  ", stderr);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
	fprintf(stderr, "mini-criterion: 0 passed, 1 failed\n");
	exit(1);
}

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
#define cr_assert_fail(...) mc_fail(__FILE__, __LINE__, "cr_assert_fail", " " __VA_ARGS__)
#define cr_log_info(...) (fprintf(stderr, "[----] " __VA_ARGS__), fputc('\n', stderr))
#define cr_skip_test(...)                                                                   \
	do {                                                                               \
		fprintf(stderr, "[SKIP] " __VA_ARGS__);                                    \
		fputc('\n', stderr);                                                       \
		longjmp(mc_skip_jmp, 1);                                                   \
	} while (0)

static const char *mc_filter = "*";
static int mc_passed, mc_skipped;
static struct mc_test *mc_cur;

int main(int argc, char **argv)
{
	const char *filter = "*";
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--filter") && i + 1 < argc)
			filter = argv[++i];
		else if (!strncmp(argv[i], "--filter=", 9))
			filter = argv[i] + 9;
	/* registration prepends: reverse to run in file order */
	struct mc_test *rev = NULL;
	while (mc_head) {
		struct mc_test *t = mc_head;
		mc_head = t->next;
		t->next = rev;
		rev = t;
	}
	mc_filter = filter;
	/* state lives in statics: setjmp/longjmp may clobber locals */
	for (mc_cur = rev; mc_cur; mc_cur = mc_cur->next) {
		char full[256];
		snprintf(full, sizeof full, "%s/%s", mc_cur->suite, mc_cur->name);
		if (fnmatch(mc_filter, full, 0))
			continue;
		if (setjmp(mc_skip_jmp)) {
			mc_skipped++;
			continue;
		}
		mc_cur->fn();
		fprintf(stderr, "[PASS] %s::%s\n", mc_cur->suite, mc_cur->name);
		mc_passed++;
	}
	printf("mini-criterion: %d passed, 0 failed, %d skipped\n", mc_passed, mc_skipped);
	return mc_passed ? 0 : 1; /* a filter that matches nothing is an error */
}

#endif /* DE_MINI_CRITERION_H */
