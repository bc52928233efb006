/* Replays fuzz corpora through a libFuzzer-style LLVMFuzzerTestOneInput, so every fuzz target
 * runs its committed corpus in ordinary CI (suite 'fuzz'). Not a fuzzer: no mutation.
 * Usage: replay <file-or-dir>...  (directories are read one level deep, dot files skipped). */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_FILE (64u << 20)

/* Runs one file; returns 0, or -1 if it cannot be read. */
static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            uint8_t *nb = ncap <= REPLAY_MAX_FILE ? realloc(buf, ncap) : NULL;
            if (nb == NULL) {
                fprintf(stderr, "%s: too large or out of memory\n", path);
                free(buf);
                fclose(f);
                return -1;
            }
            buf = nb;
            cap = ncap;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        return -1;
    }
    /* Copy into an exactly-sized buffer so that ASan sees any read past the input. */
    uint8_t *exact = malloc(len > 0 ? len : 1);
    if (exact == NULL) {
        free(buf);
        return -1;
    }
    if (len > 0)
        memcpy(exact, buf, len);
    free(buf);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    long count = 0;
    int errors = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: %s <file-or-dir>...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            errors++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) == 0)
                count++;
            else
                errors++;
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (d == NULL) {
            perror(argv[i]);
            errors++;
            continue;
        }
        /* Sorted, so a crash is reproducible in the same order. */
        char **names = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                char **nn = realloc(names, cap * sizeof(*names));
                if (nn == NULL)
                    abort();
                names = nn;
            }
            names[n] = strdup(e->d_name);
            if (names[n] == NULL)
                abort();
            n++;
        }
        closedir(d);
        if (n > 0)
            qsort(names, n, sizeof(*names), cmp_names);
        for (size_t k = 0; k < n; k++) {
            size_t plen = strlen(argv[i]) + strlen(names[k]) + 2;
            char *p = malloc(plen);
            if (p == NULL)
                abort();
            snprintf(p, plen, "%s/%s", argv[i], names[k]);
            struct stat fs;
            if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode)) {
                if (replay_file(p) == 0)
                    count++;
                else
                    errors++;
            }
            free(p);
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %ld input(s), %d error(s)\n", count, errors);
    if (count == 0) {
        fprintf(stderr, "no inputs found\n");
        return 1;
    }
    return errors > 0 ? 1 : 0;
}
