/* Helpers shared by the C tests: the CHECK family (count a failure, print file:line, the
 * condition and a message, carry on), REQUIRE for fuzz invariants (print, then abort), the exit
 * summary, whole-file and line reading, and allocation that exits on failure. Test-only and
 * header-only; it needs nothing but libc, so any test can include it ("../test_util.h"). */
#ifndef PHISERVE_TESTS_TEST_UTIL_H
#define PHISERVE_TESTS_TEST_UTIL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Failed checks so far in this test program. The one piece of state a test keeps outside its
 * contexts: a CHECK anywhere adds to it and tu_finish reads it. */
static int tu_failures;

static inline void tu_fail(const char *file, int line, const char *cond)
{
    tu_failures++;
    fprintf(stderr, "%s:%d: check failed: %s\n", file, line, cond);
}

static inline void tu_failf(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static inline void tu_failf(const char *file, int line, const char *cond, const char *fmt, ...)
{
    tu_failures++;
    if (cond != NULL)
        fprintf(stderr, "%s:%d: check failed: %s: ", file, line, cond);
    else
        fprintf(stderr, "%s:%d: ", file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* CHECK(cond, fmt, ...): when cond is false, counts a failure and prints file:line, the text of
 * cond and the printf-style message. The message arguments are evaluated only on failure. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tu_failf(__FILE__, __LINE__, #cond, __VA_ARGS__);                                      \
    } while (0)

/* EXPECT(cond): CHECK where the condition's own text says enough. */
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            tu_fail(__FILE__, __LINE__, #cond);                                                    \
    } while (0)

/* FAIL(fmt, ...): an unconditional failure (counted, with file:line and the message), for a test
 * that found the problem in its own if. */
#define FAIL(...) tu_failf(__FILE__, __LINE__, NULL, __VA_ARGS__)

/* REQUIRE(cond, fmt, ...): for invariants after which going on makes no sense (fuzz targets):
 * prints like CHECK, then aborts so that a fuzzer or the replay runner sees the crash. */
#define REQUIRE(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            tu_failf(__FILE__, __LINE__, #cond, __VA_ARGS__);                                      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The end of main: prints "<name>: all checks passed" (stdout) or "<name>: N check(s) failed"
 * (stderr) and returns the exit status, 0 or 1. */
static inline int tu_finish(const char *name)
{
    if (tu_failures > 0) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, tu_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

/* malloc / calloc that print and exit(1) when memory runs out: test set-up, not a test. */
static inline void *tu_xmalloc(size_t n)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

static inline void *tu_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n > 0 ? n : 1, size > 0 ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    return p;
}

/* Reads the file at path whole into a malloc'd buffer with a NUL after the last byte (the
 * caller frees it); *len (when len is not NULL) gets the byte count. Returns NULL when the
 * file cannot be opened or read, or memory runs out. An empty file gives "" and 0. */
static inline char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : (size_t)1 << 16;
            char *nb = realloc(buf, cap + 1);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

/* Splits the next line off the text at *cursor in place (its '\n' becomes a NUL) and moves
 * *cursor past it. Returns the line, "" for an empty one, or NULL when the text is used up.
 * For JSONL fixtures: for (char *c = text, *line; (line = tu_next_line(&c)) != NULL;) ... */
static inline char *tu_next_line(char **cursor)
{
    char *line = *cursor;
    if (line == NULL || *line == '\0')
        return NULL;
    char *nl = strchr(line, '\n');
    if (nl != NULL) {
        *nl = '\0';
        *cursor = nl + 1;
    } else {
        *cursor = line + strlen(line);
    }
    return line;
}

/* One step of xorshift64 (shifts 13, 7, 17) on *state (never 0): the small seeded generator the
 * tests use for random shapes and data, identical on every machine. */
static inline uint64_t tu_xorshift64(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* The index of the largest of x[0, n) other than best (n >= 2): the runner-up of a row of
 * logits whose argmax is best. */
static inline int32_t tu_second_best(const float *x, int64_t n, int32_t best)
{
    int32_t b = best == 0 ? 1 : 0;
    for (int64_t j = 0; j < n; j++)
        if (j != best && x[j] > x[b])
            b = (int32_t)j;
    return b;
}

#endif
