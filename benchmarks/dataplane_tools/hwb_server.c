/* hwb_server: TCP echo server for the data-plane benchmark (benchmarks/dataplane.py).
 *
 *   hwb_server PORT MAX_SECONDS
 *
 * Listens on 0.0.0.0:PORT and echoes whatever each connection sends until the peer closes.
 * One thread, epoll, any number of connections (the request/response client keeps one open,
 * the connection-rate client opens and closes one at a time). Exits by itself after
 * MAX_SECONDS (SIGALRM), so a benchmark that dies cannot leave it running for long.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 64

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT MAX_SECONDS\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    unsigned lifetime = (unsigned)atoi(argv[2]);
    alarm(lifetime > 0 ? lifetime : 1);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    if (listen(lfd, 4096) < 0) { perror("listen"); return 1; }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    printf("listening %d\n", port);
    fflush(stdout);

    struct epoll_event events[MAX_EVENTS];
    char buf[65536];
    for (;;) {
        int n = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) break;
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            for (;;) {
                ssize_t got = read(fd, buf, sizeof buf);
                if (got > 0) {
                    ssize_t off = 0;
                    while (off < got) {  /* small replies: the socket buffer takes them */
                        ssize_t w = write(fd, buf + off, (size_t)(got - off));
                        if (w < 0) {
                            if (errno == EAGAIN || errno == EINTR) continue;
                            break;
                        }
                        off += w;
                    }
                    continue;
                }
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) break;
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);  /* EOF or error */
                close(fd);
                break;
            }
        }
    }
}
