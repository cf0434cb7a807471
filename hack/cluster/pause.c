/* The pod sandbox's process (the "pause" container): holds the pod's namespaces and,
 * as PID 1 of the pod, reaps orphans; exits at once on SIGTERM/SIGINT (PID 1 gets no
 * default action for them). Built with `gcc -static` by hack/cluster.sh. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    signal(SIGCHLD, reap);
    for (;;) pause();
}
