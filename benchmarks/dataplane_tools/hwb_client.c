/* hwb_client: traffic generator for the data-plane benchmark (benchmarks/dataplane.py).
 *
 *   hwb_client crr   HOST PORT SECONDS   new connections: connect, send a request, read the
 *                                        reply, close; one after the other for SECONDS
 *   hwb_client rr    HOST PORT SECONDS   request/response over one persistent connection;
 *                                        latency percentiles of each round trip
 *   hwb_client probe HOST PORT MILLIS    one connection attempt: open, refused or timeout
 *
 * Prints one JSON object on stdout. Messages are 64 bytes; sockets have TCP_NODELAY and
 * one-second send/receive timeouts (so a dropped SYN costs at most a second and counts as
 * an error). Every loop is bounded by its deadline.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define MSG 64
#define MAX_SAMPLES 4000000

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static struct sockaddr_in target(const char *host, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(2);
    }
    return a;
}

static int open_socket(int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv); /* bounds connect() too */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int exchange(int fd, const char *req, char *rsp) {
    if (write(fd, req, MSG) != MSG) return -1;
    int have = 0;
    while (have < MSG) {
        ssize_t got = read(fd, rsp + have, (size_t)(MSG - have));
        if (got <= 0) return -1;
        have += (int)got;
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *s, long n, double p) {
    if (n == 0) return 0.0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    return s[i];
}

static void summary(const char *prefix, double *s, long n) {
    qsort(s, (size_t)n, sizeof *s, cmp);
    double sum = 0;
    for (long i = 0; i < n; i++) sum += s[i];
    printf("\"%s_p50_us\": %.2f, \"%s_p90_us\": %.2f, \"%s_p99_us\": %.2f, "
           "\"%s_p999_us\": %.2f, \"%s_mean_us\": %.2f, \"%s_max_us\": %.2f",
           prefix, pct(s, n, 0.5) * 1e6, prefix, pct(s, n, 0.9) * 1e6, prefix,
           pct(s, n, 0.99) * 1e6, prefix, pct(s, n, 0.999) * 1e6, prefix,
           n ? sum / (double)n * 1e6 : 0.0, prefix, n ? s[n - 1] * 1e6 : 0.0);
}

static int crr(struct sockaddr_in a, double seconds) {
    char req[MSG], rsp[MSG];
    memset(req, 'q', sizeof req);
    double *samples = malloc(sizeof(double) * MAX_SAMPLES);
    if (!samples) return 1;
    long n = 0, errors = 0;
    int last_errno = 0;
    double start = now(), end = start + seconds, t = start;
    while (t < end && errors < 10000) {
        int fd = open_socket(1000);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                 exchange(fd, req, rsp) == 0;
        if (!ok) last_errno = errno;
        if (fd >= 0) close(fd);
        double after = now();
        if (ok) {
            if (n < MAX_SAMPLES) samples[n] = after - t;
            n++;
        } else {
            errors++;
        }
        t = after;
    }
    double elapsed = t - start;
    long kept = n < MAX_SAMPLES ? n : MAX_SAMPLES;
    printf("{\"mode\": \"crr\", \"connections\": %ld, \"errors\": %ld, \"last_error\": \"%s\", "
           "\"seconds\": %.4f, \"per_second\": %.1f, ",
           n, errors, errors ? strerror(last_errno) : "", elapsed,
           elapsed > 0 ? (double)n / elapsed : 0.0);
    summary("conn", samples, kept);
    printf("}\n");
    free(samples);
    return 0;
}

static int rr(struct sockaddr_in a, double seconds) {
    char req[MSG], rsp[MSG];
    memset(req, 'r', sizeof req);
    int fd = open_socket(1000);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        printf("{\"mode\": \"rr\", \"transactions\": 0, \"errors\": 1, \"last_error\": \"%s\"}\n",
               strerror(errno));
        return 0;
    }
    double *samples = malloc(sizeof(double) * MAX_SAMPLES);
    if (!samples) return 1;
    for (int i = 0; i < 200; i++) /* warm-up: caches, conntrack entry, socket buffers */
        if (exchange(fd, req, rsp) != 0) break;
    long n = 0, errors = 0;
    double start = now(), end = start + seconds, t = start;
    while (t < end && n < MAX_SAMPLES) {
        if (exchange(fd, req, rsp) != 0) {
            errors++;
            break;
        }
        double after = now();
        samples[n++] = after - t;
        t = after;
    }
    close(fd);
    double elapsed = t - start;
    printf("{\"mode\": \"rr\", \"transactions\": %ld, \"errors\": %ld, \"seconds\": %.4f, "
           "\"per_second\": %.1f, ",
           n, errors, elapsed, elapsed > 0 ? (double)n / elapsed : 0.0);
    summary("rtt", samples, n);
    printf("}\n");
    free(samples);
    return 0;
}

static int probe(struct sockaddr_in a, int millis) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    const char *result = "error";
    if (fd >= 0) {
        int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
        if (rc == 0) {
            result = "open";
        } else if (errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int r = poll(&p, 1, millis);
            if (r == 0) {
                result = "timeout";
            } else if (r > 0) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                result = err == 0 ? "open" : err == ECONNREFUSED ? "refused" : "error";
            }
        }
        close(fd);
    }
    printf("{\"mode\": \"probe\", \"result\": \"%s\"}\n", result);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s crr|rr|probe HOST PORT SECONDS|MILLIS\n", argv[0]);
        return 2;
    }
    struct sockaddr_in a = target(argv[2], atoi(argv[3]));
    if (strcmp(argv[1], "crr") == 0) return crr(a, atof(argv[4]));
    if (strcmp(argv[1], "rr") == 0) return rr(a, atof(argv[4]));
    if (strcmp(argv[1], "probe") == 0) return probe(a, atoi(argv[4]));
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
