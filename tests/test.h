/* test.h - the unit tests' whole framework: CHECK() counts, prints
 * file:line on failure, and test_summary() prints the closing line. */
#ifndef TESTS_TEST_H
#define TESTS_TEST_H

#include <stdio.h>

static int test_passed;
static int test_failed;

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (expr) {                                                    \
			test_passed++;                                         \
		} else {                                                       \
			test_failed++;                                         \
			fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__,          \
			    __LINE__, #expr);                                  \
		}                                                              \
	} while (0)

/* test_summary prints `N passed, N failed` and returns the exit status. */
static inline int
test_summary(void)
{
	printf("%d passed, %d failed\n", test_passed, test_failed);
	return test_failed == 0 && test_passed > 0 ? 0 : 1;
}

#endif
