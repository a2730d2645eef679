// tests/bench/syscost.c: gcc -O2 -o /tmp/syscost tests/bench/syscost.c && /tmp/syscost 400000
// What batching syscalls (io_uring, one submit for many sends) could save per token.
// Cost of a bare syscall vs. a 70-byte send on a loopback TCP socket (receiver
// drained by a second process on the other CPU), per call, in CPU time.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static double cpu_us(void) { struct rusage r; getrusage(RUSAGE_SELF, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec; }
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s); sched_setaffinity(0, sizeof s, &s); }
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200000;
  pin(0);
  double t0 = cpu_us();
  for (int i = 0; i < n; i++) syscall(SYS_getppid);
  double bare = (cpu_us() - t0) / n;
  int l = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t al = sizeof a;
  bind(l, (struct sockaddr *)&a, sizeof a); listen(l, 1); getsockname(l, (struct sockaddr *)&a, &al);
  pid_t kid = fork();
  if (kid == 0) { pin(1); int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&a, sizeof a); char b[65536]; while (read(c, b, sizeof b) > 0) {} _exit(0); }
  int s = accept(l, NULL, NULL); int one = 1; setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char msg[70]; memset(msg, 'x', sizeof msg);
  struct timespec gap = { 0, 100000 };
  double sent = 0;
  for (int i = 0; i < n / 20; i++) { // paced, as tokens are: the receiver sleeps between them
    double t = cpu_us(); send(s, msg, sizeof msg, 0); sent += cpu_us() - t;
    if (i % 10 == 0) nanosleep(&gap, NULL);
  }
  close(s); waitpid(kid, NULL, 0);
  printf("bare syscall %.3f us, 70-byte loopback TCP send %.3f us (CPU time per call)\n", bare, sent / (n / 20));
  return 0;
}
