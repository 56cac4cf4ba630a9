#define _GNU_SOURCE
#include "CNetlinkShim.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------------------------
// Lazy loading

static struct {
    struct mnl_socket *(*socket_open)(int);
    int (*socket_bind)(struct mnl_socket *, unsigned int, pid_t);
    int (*socket_close)(struct mnl_socket *);
    unsigned int (*socket_get_portid)(const struct mnl_socket *);
    ssize_t (*socket_sendto)(const struct mnl_socket *, const void *, size_t);
    ssize_t (*socket_recvfrom)(const struct mnl_socket *, void *, size_t);
    struct nlmsghdr *(*nlmsg_put_header)(void *);
    void *(*nlmsg_put_extra_header)(struct nlmsghdr *, size_t);
    void *(*nlmsg_get_payload)(const struct nlmsghdr *);
    int (*attr_parse)(const struct nlmsghdr *, unsigned int, mnl_attr_cb_t, void *);
    uint16_t (*attr_get_type)(const struct nlattr *);
    int (*attr_validate)(const struct nlattr *, enum mnl_attr_data_type);
    const char *(*attr_get_str)(const struct nlattr *);
    int (*cb_run)(const void *, size_t, unsigned int, unsigned int, mnl_cb_t, void *);
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
    RESOLVE(socket_get_portid, "mnl_socket_get_portid");
    RESOLVE(socket_sendto, "mnl_socket_sendto");
    RESOLVE(socket_recvfrom, "mnl_socket_recvfrom");
    RESOLVE(nlmsg_put_header, "mnl_nlmsg_put_header");
    RESOLVE(nlmsg_put_extra_header, "mnl_nlmsg_put_extra_header");
    RESOLVE(nlmsg_get_payload, "mnl_nlmsg_get_payload");
    RESOLVE(attr_parse, "mnl_attr_parse");
    RESOLVE(attr_get_type, "mnl_attr_get_type");
    RESOLVE(attr_validate, "mnl_attr_validate");
    RESOLVE(attr_get_str, "mnl_attr_get_str");
    RESOLVE(cb_run, "mnl_cb_run");
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

static void set_error(char *err, size_t n, const char *what, int e) {
    if (err != NULL && n > 0) snprintf(err, n, "%s: %s", what, strerror(e));
}

/// A NETLINK_ROUTE socket that lives in the namespace at `netns_path`. The calling thread enters that namespace
/// only for the socket() call and returns to its own one before anything else (or the socket is not used).
static struct mnl_socket *open_in_netns(const char *netns_path, char *err, size_t errlen) {
    int target = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (target < 0) { set_error(err, errlen, "open netns", errno); return NULL; }
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) {
        set_error(err, errlen, "open own netns", errno);
        close(target);
        return NULL;
    }
    struct mnl_socket *nl = NULL;
    if (setns(target, CLONE_NEWNET) != 0) {
        set_error(err, errlen, "setns into the netns", errno);
    } else {
        nl = mnl.socket_open(NETLINK_ROUTE);
        int open_errno = errno;
        if (setns(self, CLONE_NEWNET) != 0) {
            // Cannot return to our own namespace: nothing else may run in this thread's state.
            set_error(err, errlen, "setns back to the own netns", errno);
            if (nl != NULL) mnl.socket_close(nl);
            nl = NULL;
        } else if (nl == NULL) {
            set_error(err, errlen, "netlink socket", open_errno);
        }
    }
    close(self);
    close(target);
    return nl;
}

struct names_out {
    char *buf;
    size_t len, used;
    int count, overflow;
};

static int link_attr_cb(const struct nlattr *attr, void *data) {
    const struct nlattr **tb = data;
    if (mnl.attr_get_type(attr) == IFLA_IFNAME && mnl.attr_validate(attr, MNL_TYPE_STRING) >= 0) tb[IFLA_IFNAME] = attr;
    return MNL_CB_OK;
}

static int link_cb(const struct nlmsghdr *nlh, void *data) {
    struct names_out *out = data;
    const struct nlattr *tb[IFLA_MAX + 1];
    memset(tb, 0, sizeof tb);
    mnl.attr_parse(nlh, sizeof(struct ifinfomsg), link_attr_cb, tb);
    if (tb[IFLA_IFNAME] == NULL) return MNL_CB_OK;
    const char *name = mnl.attr_get_str(tb[IFLA_IFNAME]);
    size_t n = strnlen(name, 64) + 1;
    if (out->used + n > out->len) { out->overflow = 1; return MNL_CB_OK; }
    memcpy(out->buf + out->used, name, n - 1);
    out->buf[out->used + n - 1] = '\0';
    out->used += n;
    out->count++;
    return MNL_CB_OK;
}

struct open_job {
    const char *netns_path;
    char *err;
    size_t errlen;
    struct mnl_socket *nl;
};

static void *open_job_run(void *arg) {
    struct open_job *job = arg;
    job->nl = open_in_netns(job->netns_path, job->err, job->errlen);
    return NULL;
}

/// `open_in_netns` on a dedicated, short-lived thread: the thread that switches namespaces is never one that
/// other work shares, so nothing else can ever run in the pod's namespace by accident.
static struct mnl_socket *open_in_netns_thread(const char *netns_path, char *err, size_t errlen) {
    struct open_job job = {netns_path, err, errlen, NULL};
    pthread_t t;
    int rc = pthread_create(&t, NULL, open_job_run, &job);
    if (rc != 0) { set_error(err, errlen, "netns thread", rc); return NULL; }
    pthread_join(t, NULL);
    return job.nl;
}

int px_nl_link_names(const char *netns_path, char *buf, size_t buflen, char *err, size_t errlen) {
    if (px_nl_load(err, errlen) != 0) return -1;
    struct mnl_socket *nl = open_in_netns_thread(netns_path, err, errlen);
    if (nl == NULL) return -1;
    int result = -1;
    char req[MNL_SOCKET_BUFFER_SIZE];
    struct nlmsghdr *nlh;
    unsigned int seq, portid;
    struct names_out out = {buf, buflen, 0, 0, 0};
    char rbuf[1 << 16];
    if (mnl.socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        set_error(err, errlen, "netlink bind", errno);
        goto done;
    }
    nlh = mnl.nlmsg_put_header(req);
    nlh->nlmsg_type = RTM_GETLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    seq = (unsigned int)time(NULL);
    nlh->nlmsg_seq = seq;
    struct rtgenmsg *rt = mnl.nlmsg_put_extra_header(nlh, sizeof(struct rtgenmsg));
    rt->rtgen_family = AF_PACKET;
    if (mnl.socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        set_error(err, errlen, "netlink send", errno);
        goto done;
    }
    portid = mnl.socket_get_portid(nl);
    for (;;) {
        ssize_t r = mnl.socket_recvfrom(nl, rbuf, sizeof rbuf);
        if (r < 0) { set_error(err, errlen, "netlink receive", errno); goto done; }
        int rc = mnl.cb_run(rbuf, (size_t)r, seq, portid, link_cb, &out);
        if (rc == MNL_CB_STOP) break;
        if (rc < 0) { set_error(err, errlen, "netlink dump", errno); goto done; }
    }
    if (out.overflow) {
        if (err != NULL && errlen > 0) snprintf(err, errlen, "too many links for the buffer");
        goto done;
    }
    result = out.count;
done:
    mnl.socket_close(nl);
    return result;
}
