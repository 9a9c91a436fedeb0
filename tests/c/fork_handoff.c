/* fork() while another thread is in the middle of handing a block to the
 * owner of a full page (the page is `Notifying`): the child must not inherit
 * that half-done state, or its first free into the page waits for ever.
 *
 * Run with APEX_TEST_HANDOFF_FD=100: the allocator then writes a byte to fd
 * 100 from inside the first hand-off and pauses there, so the fork below
 * lands exactly in it. Each process gives up after 10 s (child) or 30 s (SIGALRM).
 */
#include "common.h"

#include <pthread.h>
#include <sys/wait.h>

#define BLOCK 1024
#define COUNT 400

static void *blocks[COUNT];

static void *remote_free(void *arg) {
    free(arg); /* a block of a parked full page: the hand-off path */
    return NULL;
}

int main(void) {
    alarm(30);
    int fds[2];
    CHECK(pipe(fds) == 0);
    CHECK(dup2(fds[1], 100) == 100);
    /* Fill several slabs: all but the current one are full and parked. */
    for (int i = 0; i < COUNT; i++) {
        blocks[i] = malloc(BLOCK);
        CHECK(blocks[i] != NULL);
        memset(blocks[i], 0x5a, BLOCK);
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, remote_free, blocks[0]) == 0);
    char c;
    /* Wait until the other thread is inside the hand-off. */
    CHECK(read(fds[0], &c, 1) == 1);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        alarm(10); /* alarms are not inherited */
        /* Local frees into the same full page, then ordinary use. */
        for (int i = 1; i < COUNT; i++) free(blocks[i]);
        for (int i = 0; i < 1000; i++) {
            void *p = malloc(BLOCK);
            CHECK(p != NULL);
            free(p);
        }
        printf("fork_handoff: child ok\n");
        fflush(stdout);
        _exit(0);
    }
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "child %s %d (a hang ends with SIGALRM, 14)",
           WIFSIGNALED(status) ? "killed by signal" : "exited with", 
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    CHECK(pthread_join(t, NULL) == 0);
    for (int i = 1; i < COUNT; i++) free(blocks[i]);
    printf("fork_handoff: ok\n");
    return 0;
}
