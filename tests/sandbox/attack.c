/* A renderer that has been taken over: what tests/sandbox.rs runs in place of kustomize, to show what code
 * running inside the render sandbox can and cannot do. It reads `attack.conf` from the directory it is asked to
 * build (`kustomize build DIR ...` is how Ferry calls it), tries each escape, and prints a ConfigMap whose data
 * says, for each, "ok" or the error the kernel gave. Built static by the test (`cc -static`), so it needs no
 * library outside the sandbox.
 *
 * attack.conf lines: `mode=probe|loop|memory`, `port=N` (a loopback TCP port that listens), `read=PATH`
 * (repeatable: files to try to read), `write=PATH` (repeatable: files to try to create).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static int first = 1;

static void report(const char *key, int ok) {
    if (first) {
        printf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: attack\ndata:\n");
        first = 0;
    }
    printf("  %s: \"%s\"\n", key, ok ? "ok" : strerrorname_np(errno));
    fflush(stdout);
}

static void key_of(char *out, size_t n, const char *prefix, const char *path) {
    snprintf(out, n, "%s", prefix);
    size_t len = strlen(out);
    for (const char *p = path; *p && len + 1 < n; p++) out[len++] = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ? *p : '_';
    out[len] = 0;
}

static void try_read(const char *path) {
    char key[200];
    key_of(key, sizeof key, "read", path);
    int fd = open(path, O_RDONLY);
    report(key, fd >= 0);
    if (fd >= 0) close(fd);
}

static void try_write(const char *path) {
    char key[200];
    key_of(key, sizeof key, "write", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    report(key, fd >= 0);
    if (fd >= 0) close(fd);
}

static void try_socket(const char *key, int family, int type, int protocol) {
    int fd = socket(family, type, protocol);
    report(key, fd >= 0);
    if (fd >= 0) close(fd);
}

static void try_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        report("connect_loopback", 0);
        return;
    }
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    report("connect_loopback", connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    close(fd);
}

/* Forks children that wait, until the kernel says no (or 2000 of them): how many processes a render gets. */
static void try_forks(void) {
    int count = 0;
    for (; count < 2000; count++) {
        pid_t pid = fork();
        if (pid < 0) break;
        if (pid == 0) {
            /* Let go of the pipes, so the render ends when the parent does. */
            close(1);
            close(2);
            pause();
            _exit(0);
        }
    }
    int saved = errno;
    printf("  forks: \"%d\"\n", count);
    errno = saved;
    report("fork_limit", count >= 2000);
}

int main(int argc, char **argv) {
    const char *dir = argc > 2 ? argv[2] : ".";
    char conf[4096];
    snprintf(conf, sizeof conf, "%s/attack.conf", dir);
    FILE *f = fopen(conf, "r");
    if (!f) {
        fprintf(stderr, "attack: no %s\n", conf);
        return 1;
    }
    char mode[32] = "probe";
    int port = 0, controller = 0;
    char reads[16][1024], writes[16][1024];
    int nreads = 0, nwrites = 0;
    char line[1100];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "mode=", 5)) snprintf(mode, sizeof mode, "%s", line + 5);
        if (!strncmp(line, "port=", 5)) port = atoi(line + 5);
        if (!strncmp(line, "controller=", 11)) controller = atoi(line + 11);
        if (!strncmp(line, "read=", 5) && nreads < 16) snprintf(reads[nreads++], 1024, "%s", line + 5);
        if (!strncmp(line, "write=", 6) && nwrites < 16) snprintf(writes[nwrites++], 1024, "%s", line + 6);
    }
    fclose(f);

    if (!strcmp(mode, "loop")) {
        /* A child that ignores SIGTERM and a parent that spins: only a kill of the whole group ends both. */
        if (fork() == 0) {
            signal(SIGTERM, SIG_IGN);
            for (;;) pause();
        }
        for (volatile unsigned long i = 0;; i++) {
        }
    }
    if (!strcmp(mode, "memory")) {
        size_t total = 0;
        for (int i = 0; i < 64; i++) { /* up to 4 GiB, 64 MiB at a time */
            char *p = malloc(64 << 20);
            if (!p) break;
            memset(p, 1, 64 << 20);
            total += 64;
        }
        printf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: attack\ndata:\n  mebibytes: \"%zu\"\n", total);
        return 0;
    }

    for (int i = 0; i < nreads; i++) try_read(reads[i]);
    for (int i = 0; i < nwrites; i++) try_write(writes[i]);
    try_connect(port);
    try_socket("socket_inet6", AF_INET6, SOCK_STREAM, 0);
    try_socket("socket_udp_dns", AF_INET, SOCK_DGRAM, 0);
    try_socket("socket_netlink", AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    try_socket("socket_unix", AF_UNIX, SOCK_STREAM, 0);
    report("setsid", setsid() >= 0);
    report("setpgid", setpgid(0, 0) == 0);
    report("ptrace_parent", ptrace(PTRACE_ATTACH, getppid(), 0, 0) == 0);
    report("signal_init", kill(1, 0) == 0);
    report("signal_controller", controller > 0 && kill(controller, 0) == 0);
    report("memfd", syscall(__NR_memfd_create, "x", 0) >= 0);
    report("sysv_shm", shmget(IPC_PRIVATE, 1 << 20, IPC_CREAT | 0600) >= 0);
    {
        int pidfd = syscall(__NR_pidfd_open, getppid(), 0);
        report("steal_worker_fd", pidfd >= 0 && syscall(__NR_pidfd_getfd, pidfd, 1, 0) >= 0);
    }
    report("unshare_user", unshare(CLONE_NEWUSER) == 0);
    report("io_uring", syscall(__NR_io_uring_setup, 1, calloc(1, 256)) >= 0);
    {
        pid_t pid = fork();
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", "exit 0", (char *)0);
            _exit(errno);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        errno = WIFEXITED(status) ? WEXITSTATUS(status) : EINVAL;
        report("exec_shell", errno == 0);
    }
    try_forks();
    return 0;
}
