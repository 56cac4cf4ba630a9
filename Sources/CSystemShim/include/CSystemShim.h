#ifndef PLEXUS_CSYSTEMSHIM_H
#define PLEXUS_CSYSTEMSHIM_H
#include <sys/types.h>

/// Spawns `path` with `argv`/`envp` (NULL-terminated) using posix_spawn. The child's SIGPIPE disposition is reset
/// to default and its signal mask cleared. On success returns 0 and stores the pid and the parent's ends of three
/// close-on-exec pipes (child stdin, stdout, stderr); on failure returns an errno value and creates nothing.
int px_spawn(const char *path, char *const argv[], char *const envp[],
             pid_t *pid, int *stdin_fd, int *stdout_fd, int *stderr_fd);

/// Sets or clears O_NONBLOCK on `fd`. Returns 0 or an errno value.
int px_set_nonblocking(int fd, int on);

/// The current process environment (`environ`).
char **px_environ(void);

/// Ignores SIGPIPE in this process (writes to closed pipes fail with EPIPE instead of killing us).
void px_ignore_sigpipe(void);

/// errno of the calling thread.
int px_errno(void);

/// Monotonic clock in nanoseconds.
long long px_monotonic_ns(void);

/// Wall clock: seconds and nanoseconds since the epoch.
void px_realtime(long long *sec, long *nsec);

/// Opens `path` with flags and mode (open(2) is variadic and cannot be called from Swift directly).
int px_open(const char *path, int flags, int mode);
#endif
