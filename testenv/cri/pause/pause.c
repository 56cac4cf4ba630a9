/*
 * Minimal pod sandbox "pause" process for the Plexus CRI test environment.
 *
 * Runs as PID 1 of the sandbox: sleeps until SIGTERM or SIGINT (then exits 0) and reaps any
 * child that gets re-parented to it. Built with `gcc -static -O2` by testenv/cri/build_pause_image.py.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

static void on_chld(int sig)
{
    int saved = errno;
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    errno = saved;
}

int main(int argc, char **argv)
{
    struct sigaction sa;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        static const char msg[] = "plexus-pause 1.0\n";
        (void)!write(STDOUT_FILENO, msg, sizeof(msg) - 1);
        return 0;
    }
    if (getpid() != 1) {
        static const char msg[] = "plexus-pause: warning: not running as PID 1\n";
        (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
    }

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
        return 1;

    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &sa, NULL) < 0)
        return 2;

    for (;;)
        pause();
    return 42; /* not reached */
}
