/* The pod sandbox's pause process (registry.k8s.io/pause): holds the pod's namespaces, exits 0 on
 * SIGINT/SIGTERM, and, as PID 1 of a shared PID namespace, reaps the orphans it inherits. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, 0, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction q = {.sa_handler = quit}, r = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
  if (sigaction(SIGINT, &q, 0) || sigaction(SIGTERM, &q, 0) || sigaction(SIGCHLD, &r, 0)) return 1;
  for (;;) pause();
}
