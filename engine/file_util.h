/* Small helpers the engine's file loaders share (config.json, the safetensors index and
 * headers): the error-message formatter, path joining, and bounded, non-blocking reads of small
 * whole files. Not an I/O layer: weights are mapped by safetensors.c, and nothing here knows a
 * file format. */
#ifndef PHISERVE_ENGINE_FILE_UTIL_H
#define PHISERVE_ENGINE_FILE_UTIL_H

#include <stddef.h>
#include <stdint.h>

enum eng_file_err {
    ENG_FILE_ERR_OTHER = -1,   /* cannot open / stat / read, not a regular file, too large, no memory */
    ENG_FILE_ERR_MISSING = -2, /* the path does not exist (open failed with ENOENT) */
};

/* Formats a message into err[errlen] (cut to fit, always NUL-terminated); does nothing when err
 * is NULL or errlen is 0. */
void eng_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Writes "dir/file" into dst[n]. Returns 0, or ENG_FILE_ERR_OTHER with "<file>: path too long"
 * in err when it does not fit. */
int eng_path_join(char *dst, size_t n, const char *dir, const char *file, char *err, size_t errlen);

/* Opens path read-only without blocking on FIFOs or devices, and refuses anything that is not a
 * regular file (a directory, /dev/zero behind a symlink). On success *fd_out is the descriptor
 * (the caller closes it) and *size the file's size. Returns 0, ENG_FILE_ERR_MISSING when path
 * does not exist, or ENG_FILE_ERR_OTHER; on failure err says why, prefixed by label (the name
 * to show, usually the file name). */
int eng_file_open_regular(const char *path, const char *label, int *fd_out, uint64_t *size, char *err,
                          size_t errlen);

/* Reads the regular file at path whole into a malloc'd buffer with a NUL after the last byte
 * (*out, the caller frees it; *len bytes), refusing files larger than max bytes. A file that
 * shrinks while being read gives what is there. Returns 0, ENG_FILE_ERR_MISSING when path does
 * not exist, or ENG_FILE_ERR_OTHER; on failure *out is untouched and err says why (label as in
 * eng_file_open_regular). */
int eng_file_read_small(const char *path, const char *label, size_t max, char **out, size_t *len, char *err,
                        size_t errlen);

/* Maps the regular file at path read-only and private, whole (opened as eng_file_open_regular
 * does): *map and *len on success (release with munmap(*map, *len)). An empty file or one too
 * large for the address space is an error. Returns 0, ENG_FILE_ERR_MISSING or
 * ENG_FILE_ERR_OTHER with err prefixed by label. */
int eng_file_map(const char *path, const char *label, const uint8_t **map, size_t *len, char *err,
                 size_t errlen);

#endif
