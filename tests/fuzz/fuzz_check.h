/*
 * fuzz_check.h — the one assertion of the libFuzzer targets in tests/fuzz/: CHECK(c)
 * prints the file, line and condition and aborts, so libFuzzer saves the input as a
 * crash (tools/fuzz.sh lists it). Unlike assert(), never compiled out.
 */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(c)                                                                           \
	do {                                                                               \
		if (!(c)) {                                                                \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);   \
			abort();                                                           \
		}                                                                          \
	} while (0)

#endif /* FUZZ_CHECK_H */
