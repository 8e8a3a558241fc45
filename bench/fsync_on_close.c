/* LD_PRELOAD shim for the ingest benchmark: makes DCMTK storescp durable the way pacsnode is.
 *
 * Every regular file written through fclose() or close() is fsynced, and so is its directory, before
 * the call returns; storescp closes each received file before it answers the C-STORE, so with this
 * shim it answers Success only once the instance is on disk. Built by bench/ingest.py with cc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void sync_written_file(int fd) {
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    if ((fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY) return;
    fsync(fd);
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    char *slash = strrchr(path, '/');
    if (!slash) return;
    *slash = 0;
    int dir = open(path[0] ? path : "/", O_RDONLY | O_DIRECTORY);
    if (dir >= 0) { fsync(dir); close(dir); }
}

int fclose(FILE *stream) {
    static int (*real_fclose)(FILE *);
    if (!real_fclose) real_fclose = dlsym(RTLD_NEXT, "fclose");
    if (stream) { fflush(stream); sync_written_file(fileno(stream)); }
    return real_fclose(stream);
}

int close(int fd) {
    static int (*real_close)(int);
    if (!real_close) real_close = dlsym(RTLD_NEXT, "close");
    sync_written_file(fd);
    return real_close(fd);
}
