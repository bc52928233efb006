/* The loaders' shared file helpers (file_util.h): error formatting, path joining, and bounded
 * whole-file reads that never block on a FIFO. Not a general I/O layer and not format-aware. */
#include "file_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void eng_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int eng_path_join(char *dst, size_t n, const char *dir, const char *file, char *err, size_t errlen)
{
    int w = snprintf(dst, n, "%s/%s", dir, file);
    if (w < 0 || (size_t)w >= n) {
        eng_set_err(err, errlen, "%s: path too long", file);
        return ENG_FILE_ERR_OTHER;
    }
    return 0;
}

static const char *errno_text(int e, char *buf, size_t n)
{
    /* GNU strerror_r (we build with _GNU_SOURCE) returns the message, maybe not in buf. */
    return strerror_r(e, buf, n);
}

int eng_file_open_regular(const char *path, const char *label, int *fd_out, uint64_t *size, char *err,
                          size_t errlen)
{
    char eb[128];
    /* O_NONBLOCK: a FIFO planted under the name must not hang start-up. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        eng_set_err(err, errlen, "%s: cannot open: %s", label, errno_text(e, eb, sizeof(eb)));
        return e == ENOENT ? ENG_FILE_ERR_MISSING : ENG_FILE_ERR_OTHER;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        eng_set_err(err, errlen, "%s: cannot stat: %s", label, errno_text(errno, eb, sizeof(eb)));
        close(fd);
        return ENG_FILE_ERR_OTHER;
    }
    if (!S_ISREG(st.st_mode)) {
        eng_set_err(err, errlen, "%s: not a regular file", label);
        close(fd);
        return ENG_FILE_ERR_OTHER;
    }
    *fd_out = fd;
    *size = (uint64_t)st.st_size;
    return 0;
}

int eng_file_read_small(const char *path, const char *label, size_t max, char **out, size_t *len, char *err,
                        size_t errlen)
{
    int fd;
    uint64_t size;
    char eb[128];
    int rc = eng_file_open_regular(path, label, &fd, &size, err, errlen);
    if (rc != 0)
        return rc;
    if (size > max) {
        eng_set_err(err, errlen, "%s: file of %llu bytes exceeds the %zu-byte limit", label,
                    (unsigned long long)size, max);
        close(fd);
        return ENG_FILE_ERR_OTHER;
    }
    char *buf = malloc((size_t)size + 1);
    if (buf == NULL) {
        eng_set_err(err, errlen, "%s: out of memory", label);
        close(fd);
        return ENG_FILE_ERR_OTHER;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, (size_t)size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            eng_set_err(err, errlen, "%s: read failed: %s", label, errno_text(errno, eb, sizeof(eb)));
            free(buf);
            close(fd);
            return ENG_FILE_ERR_OTHER;
        }
        if (r == 0)
            break; /* the file shrank under us; parse what is there */
        got += (size_t)r;
    }
    close(fd);
    buf[got] = '\0';
    *out = buf;
    *len = got;
    return 0;
}

int eng_file_map(const char *path, const char *label, const uint8_t **map, size_t *len, char *err,
                 size_t errlen)
{
    int fd;
    uint64_t size;
    int rc = eng_file_open_regular(path, label, &fd, &size, err, errlen);
    if (rc != 0)
        return rc;
    if (size == 0 || size > SIZE_MAX) {
        eng_set_err(err, errlen, size ? "%s: file too large to map" : "%s: empty file", label);
        close(fd);
        return ENG_FILE_ERR_OTHER;
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED) {
        char eb[128];
        /* GNU strerror_r (we build with _GNU_SOURCE) returns the message, maybe not in eb. */
        eng_set_err(err, errlen, "%s: mmap failed: %s", label, strerror_r(e, eb, sizeof eb));
        return ENG_FILE_ERR_OTHER;
    }
    *map = p;
    *len = (size_t)size;
    return 0;
}
