/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz share: the entry
 * points libFuzzer calls, and a check that stops the run on a broken
 * property so that libFuzzer reports the input (abort() is a crash to it,
 * as an AddressSanitizer finding is).
 */
#ifndef TIDE_FUZZ_H
#define TIDE_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static inline void fuzz_fail(const char *file, int line, const char *what, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 4, 5)));

static inline void
fuzz_fail(const char *file, int line, const char *what, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%d: property broken: %s: ", file, line, what);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* Stop the run, with a message, unless @p cond holds. */
#define FUZZ_CHECK(cond, ...) \
	do { \
		if (!(cond)) \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__); \
	} while (0)

#endif
