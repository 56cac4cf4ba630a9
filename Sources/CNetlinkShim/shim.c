#define _GNU_SOURCE
#include "CNetlinkShim.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

// ---------------------------------------------------------------------------------------------------------------
// Lazy loading

static struct {
    struct mnl_socket *(*socket_open)(int);
    int (*socket_bind)(struct mnl_socket *, unsigned int, pid_t);
    int (*socket_close)(struct mnl_socket *);
    int (*socket_get_fd)(const struct mnl_socket *);
    unsigned int (*socket_get_portid)(const struct mnl_socket *);
    ssize_t (*socket_sendto)(const struct mnl_socket *, const void *, size_t);
    ssize_t (*socket_recvfrom)(const struct mnl_socket *, void *, size_t);
} mnl;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_state;   // 0 = not tried, 1 = loaded, -1 = failed
static char load_error[256];

static int do_load(void) {
    void *lib = dlopen("libmnl.so.0", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *e = dlerror();
        snprintf(load_error, sizeof load_error, "cannot load libmnl.so.0: %s", e ? e : "unknown error");
        return -1;
    }
#define RESOLVE(field, name)                                                                      \
    do {                                                                                          \
        *(void **)(&mnl.field) = dlsym(lib, name);                                                \
        if (mnl.field == NULL) {                                                                  \
            snprintf(load_error, sizeof load_error, "libmnl.so.0 lacks %s", name);                \
            return -1;                                                                            \
        }                                                                                         \
    } while (0)
    RESOLVE(socket_open, "mnl_socket_open");
    RESOLVE(socket_bind, "mnl_socket_bind");
    RESOLVE(socket_close, "mnl_socket_close");
    RESOLVE(socket_get_fd, "mnl_socket_get_fd");
    RESOLVE(socket_get_portid, "mnl_socket_get_portid");
    RESOLVE(socket_sendto, "mnl_socket_sendto");
    RESOLVE(socket_recvfrom, "mnl_socket_recvfrom");
#undef RESOLVE
    return 1;
}

int px_nl_load(char *err, size_t n) {
    pthread_mutex_lock(&load_lock);
    if (load_state == 0) load_state = do_load();
    int state = load_state;
    pthread_mutex_unlock(&load_lock);
    if (state == 1) return 0;
    if (err != NULL && n > 0) snprintf(err, n, "%s", load_error);
    return -1;
}

// ---------------------------------------------------------------------------------------------------------------
// Opening a netlink socket inside another network namespace

struct px_nl {
    struct mnl_socket *nl;
};

static void set_error(char *err, size_t n, const char *what, int e) {
    if (err != NULL && n > 0) snprintf(err, n, "%s: %s", what, strerror(e));
}

struct open_job {
    const char *netns_path;
    char *err;
    size_t errlen;
    int err_no;
    struct mnl_socket *nl;
};

/// Runs on its own thread: enters the target namespace only for the socket() call and returns to the thread's
/// own namespace before anything else; if it cannot return, the socket is discarded (and the thread exits anyway).
static void *open_job_run(void *arg) {
    struct open_job *job = arg;
    if (job->netns_path == NULL) {
        job->nl = mnl.socket_open(NETLINK_ROUTE);
        if (job->nl == NULL) { job->err_no = errno; set_error(job->err, job->errlen, "netlink socket", errno); }
        return NULL;
    }
    int target = open(job->netns_path, O_RDONLY | O_CLOEXEC);
    if (target < 0) {
        job->err_no = errno;
        set_error(job->err, job->errlen, "open netns", errno);
        return NULL;
    }
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
        job->err_no = errno;
        set_error(job->err, job->errlen, "open own netns", errno);
        close(target);
        return NULL;
    }
    if (setns(target, CLONE_NEWNET) != 0) {
        job->err_no = errno;
        set_error(job->err, job->errlen, "setns into the netns", errno);
    } else {
        struct mnl_socket *nl = mnl.socket_open(NETLINK_ROUTE);
        int open_errno = errno;
        if (setns(self, CLONE_NEWNET) != 0) {
            job->err_no = errno;
            set_error(job->err, job->errlen, "setns back to the own netns", errno);
            if (nl != NULL) mnl.socket_close(nl);
        } else if (nl == NULL) {
            job->err_no = open_errno;
            set_error(job->err, job->errlen, "netlink socket", open_errno);
        } else {
            job->nl = nl;
        }
    }
    close(self);
    close(target);
    return NULL;
}

static px_nl *finish_open(struct open_job job, int timeout_ms, char *err, size_t errlen, int *err_no);

px_nl *px_nl_open(const char *netns_path, int timeout_ms, char *err, size_t errlen, int *err_no) {
    if (err_no != NULL) *err_no = 0;
    if (px_nl_load(err, errlen) != 0) return NULL;
    struct open_job job = {netns_path, err, errlen, 0, NULL};
    pthread_t t;
    int rc = pthread_create(&t, NULL, open_job_run, &job);
    if (rc != 0) {
        set_error(err, errlen, "netns thread", rc);
        if (err_no != NULL) *err_no = rc;
        return NULL;
    }
    pthread_join(t, NULL);
    return finish_open(job, timeout_ms, err, errlen, err_no);
}

px_nl *px_nl_open_on_this_thread(const char *netns_path, int timeout_ms, char *err, size_t errlen, int *err_no) {
    if (err_no != NULL) *err_no = 0;
    if (px_nl_load(err, errlen) != 0) return NULL;
    struct open_job job = {netns_path, err, errlen, 0, NULL};
    open_job_run(&job);
    return finish_open(job, timeout_ms, err, errlen, err_no);
}

static px_nl *finish_open(struct open_job job, int timeout_ms, char *err, size_t errlen, int *err_no) {
    if (job.nl == NULL) {
        if (err_no != NULL) *err_no = job.err_no;
        return NULL;
    }
    int fd = mnl.socket_get_fd(job.nl);
    int one = 1;
    // Best effort: older kernels lack them, and the Swift side parses acks with and without.
    (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
    (void)setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof one);
    if (timeout_ms > 0) {
        struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    if (mnl.socket_bind(job.nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        int e = errno;
        set_error(err, errlen, "netlink bind", e);
        if (err_no != NULL) *err_no = e;
        mnl.socket_close(job.nl);
        return NULL;
    }
    px_nl *h = calloc(1, sizeof *h);
    if (h == NULL) {
        set_error(err, errlen, "netlink handle", ENOMEM);
        if (err_no != NULL) *err_no = ENOMEM;
        mnl.socket_close(job.nl);
        return NULL;
    }
    h->nl = job.nl;
    return h;
}

long px_nl_send(px_nl *h, const void *buf, size_t len) {
    for (;;) {
        ssize_t r = mnl.socket_sendto(h->nl, buf, len);
        if (r >= 0) return (long)r;
        if (errno != EINTR) return -(long)errno;
    }
}

long px_nl_recv(px_nl *h, void *buf, size_t len) {
    for (;;) {
        ssize_t r = mnl.socket_recvfrom(h->nl, buf, len);
        if (r >= 0) return (long)r;
        if (errno == EWOULDBLOCK) return -(long)EAGAIN;
        if (errno != EINTR) return -(long)errno;
    }
}

unsigned int px_nl_portid(px_nl *h) { return mnl.socket_get_portid(h->nl); }

void px_nl_close(px_nl *h) {
    if (h == NULL) return;
    mnl.socket_close(h->nl);
    free(h);
}
