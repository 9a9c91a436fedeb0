/*
 * measure: run a command and report its wall and CPU time, exit status and peak
 * RSS.  Used by the runner instead of measuring from Python directly:
 * a process forked from a large parent inherits the parent's RSS
 * high-water mark across exec, which would put a floor under every
 * ru_maxrss reading.  This helper is tiny, so that floor is ~1 MiB.
 *
 *   measure RESULT_FILE PRELOAD -- PROGRAM [ARGS...]
 *
 * PRELOAD is set as LD_PRELOAD for PROGRAM only ("" for none).  On exit
 * RESULT_FILE holds one line:
 *   <exit|signal> <code> <maxrss KiB> <wall seconds> <CPU seconds>
 * (CPU: user + system time of PROGRAM and the children it waited for)
 * and measure exits with PROGRAM's status (128 + signal if it was killed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: measure RESULT_FILE PRELOAD -- PROGRAM [ARGS...]\n");
        return 2;
    }
    const char *result_file = argv[1], *preload = argv[2];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("measure: fork");
        return 2;
    }
    if (pid == 0) {
        if (preload[0]) setenv("LD_PRELOAD", preload, 1);
        else unsetenv("LD_PRELOAD");
        execvp(argv[4], argv + 4);
        fprintf(stderr, "measure: cannot run %s: %s\n", argv[4], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("measure: wait4");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    int signaled = WIFSIGNALED(status);
    int code = signaled ? WTERMSIG(status) : WEXITSTATUS(status);
    FILE *f = fopen(result_file, "w");
    if (!f) {
        perror("measure: result file");
        return 2;
    }
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
    fprintf(f, "%s %d %ld %.6f %.6f\n", signaled ? "signal" : "exit", code, ru.ru_maxrss, secs,
            cpu);
    fclose(f);
    return signaled ? 128 + code : code;
}
