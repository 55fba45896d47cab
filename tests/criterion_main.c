/*
 * criterion_main.c — the main of every Criterion test program (tests/meson.build adds it
 * through criterion_main_dep): Criterion's own main, except that a program all of whose
 * tests skipped (cr_skip_test: no huge pages, no GPU, no root here) exits 77, which meson
 * reports as SKIP instead of OK. Any failure still exits 1; a run with a test that passed
 * exits 0. The POST_ALL report hook runs in the runner process, after the last test and
 * before criterion_run_all_tests returns.
 */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <criterion/stats.h>

#include <stdbool.h>

static bool all_skipped;

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	all_skipped = stats->nb_tests > 0 && stats->tests_skipped == stats->nb_tests;
}

int main(int argc, char *argv[])
{
	struct criterion_test_set *tests = criterion_initialize();
	int result = 0;
	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);
	if (result == 0 && all_skipped)
		return 77;
	return result;
}
