#ifndef PLEXUS_CNETLINKSHIM_H
#define PLEXUS_CNETLINKSHIM_H

// Netlink sockets through libmnl, loaded lazily.
//
// The plugin binary does NOT link libmnl: `px_nl_load` dlopen()s "libmnl.so.0" on the first use and resolves the
// few socket functions below, so VERSION, DEL, STATUS and GC never load it. Messages are built and parsed in
// Swift (module Netlink, the only importer of this header), where they are tested against hex goldens; this shim
// only owns the socket: opening it inside a network namespace, send, receive with a deadline, close.

#include <stddef.h>

typedef struct px_nl px_nl;

/// Loads libmnl once per process (later calls return the first result). 0 on success, else -1 with a message in
/// `err` (NUL-terminated, at most `n` bytes).
int px_nl_load(char *err, size_t n);

/// A bound NETLINK_ROUTE socket living in the network namespace at `netns_path` (an nsfs file such as
/// /var/run/netns/x; NULL for the caller's own namespace). The socket is created by a dedicated, short-lived
/// thread (setns, socket, setns back, exit): the calling thread never changes namespace, and the socket stays
/// bound to the target namespace whichever thread uses it afterwards. Every receive waits at most `timeout_ms`
/// (SO_RCVTIMEO). Extended acks (NETLINK_EXT_ACK) and capped acks (NETLINK_CAP_ACK) are requested when the kernel
/// has them. NULL with a message in `err` on failure; `*err_no` (if not NULL) is the failing errno.
px_nl *px_nl_open(const char *netns_path, int timeout_ms, char *err, size_t errlen, int *err_no);

/// `px_nl_open` without the dedicated thread: the calling thread itself enters the namespace for the socket() call
/// and returns (a failure to return discards the socket and leaves the thread in the namespace). Only for a thread
/// that exists for this one job (see `NetlinkSession(enteringOnThisThread:)`), never for one that runs anything
/// else, since it saves exactly the thread that keeps other threads' namespaces safe.
px_nl *px_nl_open_on_this_thread(const char *netns_path, int timeout_ms, char *err, size_t errlen, int *err_no);

/// Sends one datagram. The number of bytes sent, or -errno.
long px_nl_send(px_nl *h, const void *buf, size_t len);

/// Receives one datagram into `buf`. The number of bytes, or -errno (-EAGAIN when the timeout passed).
long px_nl_recv(px_nl *h, void *buf, size_t len);

/// The socket's netlink port id (replies carry it in nlmsg_pid).
unsigned int px_nl_portid(px_nl *h);

void px_nl_close(px_nl *h);

#endif
