#ifndef PLEXUS_CNETLINKSHIM_H
#define PLEXUS_CNETLINKSHIM_H

// Netlink through libmnl, loaded lazily.
//
// The plugin binary does NOT link libmnl: `px_nl_load` dlopen()s "libmnl.so.0" on the first use and resolves the
// handful of functions the queries below need, so VERSION, DEL, STATUS and GC never load it. Only the Netlink Swift
// module imports this header.

#include <stddef.h>

/// Loads libmnl once per process (later calls return the first result). 0 on success, else -1 with a message in
/// `err` (NUL-terminated, at most `n` bytes).
int px_nl_load(char *err, size_t n);

/// The names of every link in the network namespace at `netns_path` (an nsfs file such as /var/run/netns/x),
/// written NUL-separated into `buf`. The netlink socket is opened inside that namespace by a dedicated thread
/// (setns, socket, setns back, exit), so the calling thread never changes namespace.
/// Returns the number of names, or -1 with a message in `err` (the buffer too small counts as an error).
int px_nl_link_names(const char *netns_path, char *buf, size_t buflen, char *err, size_t errlen);

#endif
