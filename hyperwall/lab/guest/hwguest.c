/*
 * hwguest: the lab guest's agent (PID 1 after /init), built static at image-build time.
 *
 * Counterparts: hyperwall/lab/guest_proxy.py (the host side of the control channel) and, for
 * the namespace VMs, hyperwall/lab/responder.py + probes.py (this file gives the same
 * answers with the same classification).
 *
 *   hwguest [--port P] [--listen ADDR]... [--channel NAME]
 *
 * - Echo service on port P (7) for TCP and UDP, one socket pair per --listen address (UDP
 *   replies must leave from the address the request came to). /init's nft rule redirects
 *   every other TCP/UDP port to P, as in the namespace VMs.
 * - Control channel: the virtio-serial port named NAME (/sys/class/virtio-ports/vport*
 *   /name). Lines, fields separated by TAB; each request runs in its own child process, so
 *   blocked probes wait in parallel; replies carry the request's id:
 *     ID ping                                  -> ID pong PID
 *     ID probe PROTO SRC DST PORT TIMEOUT_MS   -> ID RESULT DETAIL
 *     ID exec TIMEOUT_MS HEX(SCRIPT) HEX(STDIN) -> ID exit RC HEX(STDOUT) HEX(STDERR)
 *   RESULT: allowed, blocked, rejected, error (probes.py's classification).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LISTEN 32
#define LINE_MAX_LEN (1 << 20)
#define LOCK_PATH "/run/hwguest.lock"

static int channel_fd = -1;

/* -- small helpers ----------------------------------------------------------------------- */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(long long deadline) {
    long long left = deadline - now_ms();
    return left < 1 ? 1 : (int)left;
}

static int is_v6(const char *address) { return strchr(address, ':') != NULL; }

static int make_addr(const char *address, int port, struct sockaddr_storage *out, socklen_t *len) {
    memset(out, 0, sizeof *out);
    if (is_v6(address)) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)out;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof *a;
        return inet_pton(AF_INET6, address, &a->sin6_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)out;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof *a;
    return inet_pton(AF_INET, address, &a->sin_addr) == 1 ? 0 : -1;
}

static void hex_encode(const unsigned char *data, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * n] = 0;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t hex_decode(const char *text, unsigned char *out) {
    size_t n = 0;
    while (text[0] && text[1]) {
        int hi = hex_value(text[0]), lo = hex_value(text[1]);
        if (hi < 0 || lo < 0) break;
        out[n++] = (unsigned char)(hi << 4 | lo);
        text += 2;
    }
    return n;
}

/* One reply line, written whole: children hold an exclusive lock (own open file) meanwhile. */
static void reply(const char *line) {
    int lock = open(LOCK_PATH, O_CREAT | O_RDWR, 0600);
    if (lock >= 0) flock(lock, LOCK_EX);
    size_t n = strlen(line), done = 0;
    while (done < n) {
        ssize_t w = write(channel_fd, line + done, n - done);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) { usleep(1000); continue; }
            break;
        }
        done += (size_t)w;
    }
    if (lock >= 0) close(lock);
}

static void reply_result(const char *id, const char *result, const char *detail) {
    char line[512];
    snprintf(line, sizeof line, "%s\t%s\t%s\n", id, result, detail);
    reply(line);
}

/* -- probes (probes.py's classification) -------------------------------------------------- */

static const char *refusal(int err) {
    switch (err) {
    case ECONNREFUSED: return "connection refused";
    case EHOSTUNREACH: return "host unreachable";
    case ENETUNREACH: return "network unreachable";
    case EACCES: return "administratively prohibited";
    case EPERM: return "not permitted";
    case EHOSTDOWN: return "host down";
    case ECONNRESET: return "connection reset";
    default: return NULL;
    }
}

typedef struct {
    const char *result;
    char detail[200];
} outcome;

static outcome make(const char *result, const char *detail) {
    outcome o;
    o.result = result;
    snprintf(o.detail, sizeof o.detail, "%s", detail);
    return o;
}

static outcome from_errno(int err, const char *what) {
    const char *r = refusal(err);
    if (r) return make("rejected", r);
    outcome o;
    o.result = "error";
    snprintf(o.detail, sizeof o.detail, "%s: %s", what, strerror(err));
    return o;
}

static int bound_socket(const char *src, int type, int proto, outcome *fail) {
    struct sockaddr_storage a;
    socklen_t len;
    if (make_addr(src, 0, &a, &len) < 0) { *fail = make("error", "bad source address"); return -1; }
    int s = socket(a.ss_family, type, proto);
    if (s < 0) { *fail = from_errno(errno, "socket"); fail->result = "error"; return -1; }
    if (bind(s, (struct sockaddr *)&a, len) < 0) {
        *fail = make("error", "");
        snprintf(fail->detail, sizeof fail->detail, "OSError: bind %s: %s", src, strerror(errno));
        close(s);
        return -1;
    }
    return s;
}

static outcome probe_tcp(const char *src, const char *dst, int port, int timeout) {
    long long deadline = now_ms() + timeout;
    outcome o;
    int s = bound_socket(src, SOCK_STREAM | SOCK_NONBLOCK, 0, &o);
    if (s < 0) return o;
    struct sockaddr_storage a;
    socklen_t len;
    if (make_addr(dst, port, &a, &len) < 0) { close(s); return make("error", "bad destination"); }
    if (connect(s, (struct sockaddr *)&a, len) < 0 && errno != EINPROGRESS) {
        o = from_errno(errno, "connect");
        close(s);
        return o;
    }
    struct pollfd p = {s, POLLOUT, 0};
    int ready = poll(&p, 1, left_ms(deadline));
    if (ready == 0) { close(s); return make("blocked", "no answer to the SYN"); }
    int err = 0;
    socklen_t elen = sizeof err;
    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &elen);
    if (err) { o = from_errno(err, "connect"); close(s); return o; }
    char byte = 0x2a;
    if (send(s, &byte, 1, MSG_NOSIGNAL) < 0) { o = from_errno(errno, "send"); close(s); return o; }
    p.events = POLLIN;
    p.revents = 0;
    ready = poll(&p, 1, left_ms(deadline));
    if (ready == 0) { close(s); return make("blocked", "connected, but the byte was not echoed"); }
    char got = 0;
    ssize_t n = recv(s, &got, 1, 0);
    if (n < 0) { o = from_errno(errno, "recv"); close(s); return o; }
    close(s);
    if (n != 1 || got != 0x2a) return make("blocked", "connected, but the byte was not echoed");
    return make("allowed", "connected, byte echoed");
}

static outcome probe_udp(const char *src, const char *dst, int port, int timeout) {
    outcome o;
    int s = bound_socket(src, SOCK_DGRAM, 0, &o);
    if (s < 0) return o;
    struct sockaddr_storage a;
    socklen_t len;
    if (make_addr(dst, port, &a, &len) < 0) { close(s); return make("error", "bad destination"); }
    if (connect(s, (struct sockaddr *)&a, len) < 0) { o = from_errno(errno, "connect"); close(s); return o; }
    unsigned char payload[11] = "hwl";
    int rnd = open("/dev/urandom", O_RDONLY);
    if (rnd >= 0) { (void)!read(rnd, payload + 3, 8); close(rnd); }
    if (send(s, payload, sizeof payload, 0) < 0) { o = from_errno(errno, "send"); close(s); return o; }
    long long deadline = now_ms() + timeout;
    for (;;) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, left_ms(deadline)) == 0) { close(s); return make("blocked", "no reply"); }
        unsigned char buf[2048];
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < 0) { o = from_errno(errno, "recv"); close(s); return o; }
        if ((size_t)n == sizeof payload && memcmp(buf, payload, sizeof payload) == 0) {
            close(s);
            return make("allowed", "reply received");
        }
    }
}

static uint16_t checksum(const unsigned char *data, size_t n) {
    uint32_t total = 0;
    for (size_t i = 0; i + 1 < n; i += 2) total += (uint32_t)(data[i] << 8 | data[i + 1]);
    if (n % 2) total += (uint32_t)(data[n - 1] << 8);
    total = (total >> 16) + (total & 0xffff);
    total += total >> 16;
    return (uint16_t)(~total & 0xffff);
}

static uint16_t be16(const unsigned char *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static outcome probe_icmp(const char *src, const char *dst, int timeout) {
    int v6 = is_v6(dst);
    outcome o;
    int s = bound_socket(src, SOCK_RAW, v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP, &o);
    if (s < 0) return o;
    uint16_t ident;
    int rnd = open("/dev/urandom", O_RDONLY);
    if (rnd < 0 || read(rnd, &ident, 2) != 2) ident = (uint16_t)getpid();
    if (rnd >= 0) close(rnd);
    unsigned char packet[8 + 13] = {v6 ? 128 : 8, 0, 0, 0, ident >> 8, ident & 0xff, 0, 1};
    memcpy(packet + 8, "hyperwall-lab", 13);
    if (!v6) {
        uint16_t sum = checksum(packet, sizeof packet);
        packet[2] = sum >> 8;
        packet[3] = sum & 0xff;
    }
    struct sockaddr_storage a;
    socklen_t len;
    make_addr(dst, 0, &a, &len);
    if (sendto(s, packet, sizeof packet, 0, (struct sockaddr *)&a, len) < 0) {
        o = from_errno(errno, "sendto");
        close(s);
        return o;
    }
    struct in6_addr dst6;
    struct in_addr dst4;
    if (v6) inet_pton(AF_INET6, dst, &dst6); else inet_pton(AF_INET, dst, &dst4);
    long long deadline = now_ms() + timeout;
    for (;;) {
        struct pollfd p = {s, POLLIN, 0};
        if (poll(&p, 1, left_ms(deadline)) == 0) { close(s); return make("blocked", "no echo reply"); }
        unsigned char d[4096];
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(s, d, sizeof d, 0, (struct sockaddr *)&from, &flen);
        if (n < 0) continue;
        char sender[INET6_ADDRSTRLEN] = "";
        if (v6) {
            struct sockaddr_in6 *f = (struct sockaddr_in6 *)&from;
            inet_ntop(AF_INET6, &f->sin6_addr, sender, sizeof sender);
            if (n < 8) continue;
            int kind = d[0], code = d[1];
            if (kind == 129 && memcmp(&f->sin6_addr, &dst6, 16) == 0 && be16(d + 4) == ident) {
                close(s);
                return make("allowed", "echo reply");
            }
            if (kind == 1 && n >= 8 + 40 + 8) {
                unsigned char *inner = d + 8;
                if (inner[6] != 58 || memcmp(inner + 24, &dst6, 16) != 0) continue;
                if (be16(inner + 44) == ident) {
                    close(s);
                    o.result = "rejected";
                    snprintf(o.detail, sizeof o.detail,
                             "ICMPv6 destination unreachable code %d from %s", code, sender);
                    return o;
                }
            }
        } else {
            int ihl = (d[0] & 15) * 4;
            if (n < ihl + 8) continue;
            int kind = d[ihl], code = d[ihl + 1];
            inet_ntop(AF_INET, d + 12, sender, sizeof sender);
            if (kind == 0 && memcmp(d + 12, &dst4, 4) == 0 && be16(d + ihl + 4) == ident) {
                close(s);
                return make("allowed", "echo reply");
            }
            if (kind == 3) {
                unsigned char *inner = d + ihl + 8;
                ssize_t inner_len = n - ihl - 8;
                if (inner_len < 20) continue;
                int inner_ihl = (inner[0] & 15) * 4;
                if (inner[9] != 1 || memcmp(inner + 16, &dst4, 4) != 0) continue;
                if (inner_len >= inner_ihl + 6 && be16(inner + inner_ihl + 4) == ident) {
                    close(s);
                    o.result = "rejected";
                    snprintf(o.detail, sizeof o.detail,
                             "ICMP destination unreachable code %d from %s", code, sender);
                    return o;
                }
            }
        }
    }
}

/* -- exec -------------------------------------------------------------------------------- */

typedef struct {
    unsigned char *data;
    size_t len, cap;
} buffer;

static void append(buffer *b, const unsigned char *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 4096;
        b->data = realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void run_exec(const char *id, int timeout, const char *script_hex, const char *stdin_hex) {
    unsigned char *script = malloc(strlen(script_hex) / 2 + 1);
    size_t slen = hex_decode(script_hex, script);
    script[slen] = 0;
    unsigned char *input = malloc(strlen(stdin_hex) / 2 + 1);
    size_t ilen = hex_decode(stdin_hex, input);
    int in[2], out[2], err[2];
    if (pipe(in) || pipe(out) || pipe(err)) { reply_result(id, "error", "pipe failed"); return; }
    signal(SIGCHLD, SIG_DFL);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(in[1]); close(out[0]); close(err[0]);
        setsid();
        execl("/bin/sh", "sh", "-c", (char *)script, (char *)NULL);
        _exit(127);
    }
    close(in[0]); close(out[1]); close(err[1]);
    if (ilen) (void)!write(in[1], input, ilen);
    close(in[1]);
    buffer bo = {0}, be = {0};
    long long deadline = now_ms() + timeout;
    int open_fds = 2, killed = 0;
    while (open_fds > 0) {
        struct pollfd p[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
        if (p[0].fd < 0) p[0].events = 0;
        if (p[1].fd < 0) p[1].events = 0;
        int ready = poll(p, 2, killed ? 1000 : left_ms(deadline));
        if (ready == 0) {
            if (killed) break;
            kill(-pid, SIGKILL);
            killed = 1;
            continue;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !p[i].revents) continue;
            unsigned char chunk[8192];
            ssize_t n = read(p[i].fd, chunk, sizeof chunk);
            if (n <= 0) {
                close(p[i].fd);
                if (i == 0) out[0] = -1; else err[0] = -1;
                open_fds--;
            } else {
                append(i == 0 ? &bo : &be, chunk, (size_t)n);
            }
        }
    }
    int status = 0, rc;
    waitpid(pid, &status, 0);
    rc = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    size_t size = 64 + strlen(id) + 2 * (bo.len + be.len);
    char *line = malloc(size);
    int at = snprintf(line, size, "%s\texit\t%d\t", id, rc);
    hex_encode(bo.data ? bo.data : (unsigned char *)"", bo.len, line + at);
    at += (int)(2 * bo.len);
    line[at++] = '\t';
    hex_encode(be.data ? be.data : (unsigned char *)"", be.len, line + at);
    at += (int)(2 * be.len);
    line[at++] = '\n';
    line[at] = 0;
    reply(line);
}

/* -- the control channel ----------------------------------------------------------------- */

static void handle(char *line) {
    char *fields[8] = {0};
    int n = 0;
    for (char *save = NULL, *f = strtok_r(line, "\t", &save); f && n < 8;
         f = strtok_r(NULL, "\t", &save))
        fields[n++] = f;
    if (n < 2) return;
    const char *id = fields[0], *op = fields[1];
    if (strcmp(op, "ping") == 0) {
        char text[64];
        snprintf(text, sizeof text, "%s\tpong\t%d\n", id, (int)getppid());
        reply(text);
    } else if (strcmp(op, "probe") == 0 && n == 7) {
        int port = atoi(fields[5]), timeout = atoi(fields[6]);
        outcome o;
        if (strcmp(fields[2], "tcp") == 0) o = probe_tcp(fields[3], fields[4], port, timeout);
        else if (strcmp(fields[2], "udp") == 0) o = probe_udp(fields[3], fields[4], port, timeout);
        else o = probe_icmp(fields[3], fields[4], timeout);
        reply_result(id, o.result, o.detail);
    } else if (strcmp(op, "exec") == 0 && n >= 4) {
        run_exec(id, atoi(fields[2]), fields[3], n >= 5 ? fields[4] : "");
    } else {
        reply_result(id, "error", "bad request");
    }
}

static int open_channel(const char *name) {
    glob_t g;
    for (;;) {
        if (glob("/sys/class/virtio-ports/vport*/name", 0, NULL, &g) == 0) {
            for (size_t i = 0; i < g.gl_pathc; i++) {
                char text[128] = "";
                FILE *f = fopen(g.gl_pathv[i], "r");
                if (!f) continue;
                if (!fgets(text, sizeof text, f)) text[0] = 0;
                fclose(f);
                text[strcspn(text, "\n")] = 0;
                if (strcmp(text, name) != 0) continue;
                char dev[256];
                const char *port = strrchr(g.gl_pathv[i], '/');
                int len = (int)(port - g.gl_pathv[i]);
                const char *base = g.gl_pathv[i] + len;
                while (base > g.gl_pathv[i] && base[-1] != '/') base--;
                snprintf(dev, sizeof dev, "/dev/%.*s", (int)(g.gl_pathv[i] + len - base), base);
                globfree(&g);
                int fd = open(dev, O_RDWR | O_CLOEXEC);
                if (fd >= 0) return fd;
                fprintf(stderr, "hwguest: open %s: %s\n", dev, strerror(errno));
                goto again;
            }
            globfree(&g);
        }
    again:
        usleep(100000);
    }
}

/* -- echo service ------------------------------------------------------------------------ */

static void serve_tcp(int server) {
    for (;;) {
        int conn = accept(server, NULL, NULL);
        if (conn < 0) continue;
        if (fork() == 0) {
            struct timeval tv = {30, 0};
            setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            char buf[65536];
            ssize_t n;
            while ((n = recv(conn, buf, sizeof buf, 0)) > 0)
                if (send(conn, buf, (size_t)n, MSG_NOSIGNAL) < 0) break;
            _exit(0);
        }
        close(conn);
    }
}

static void serve_udp(int server) {
    for (;;) {
        char buf[65536];
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(server, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len);
        if (n >= 0) sendto(server, buf, (size_t)n, 0, (struct sockaddr *)&peer, len);
    }
}

static void start_echo(const char *address, int port, int type) {
    struct sockaddr_storage a;
    socklen_t len;
    int s;
    if (address == NULL) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&a;
        memset(&a, 0, sizeof a);
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        a6->sin6_addr = in6addr_any;
        len = sizeof *a6;
        s = socket(AF_INET6, type, 0);
        int off = 0;
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    } else {
        if (make_addr(address, port, &a, &len) < 0) {
            fprintf(stderr, "hwguest: bad address %s\n", address);
            return;
        }
        s = socket(a.ss_family, type, 0);
    }
    int on = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    /* IPv6 addresses are added without DAD, but allow binding before they settle */
    setsockopt(s, IPPROTO_IP, IP_FREEBIND, &on, sizeof on);
    if (bind(s, (struct sockaddr *)&a, len) < 0) {
        fprintf(stderr, "hwguest: bind %s: %s\n", address ? address : "::", strerror(errno));
        close(s);
        return;
    }
    if (type == SOCK_STREAM) listen(s, 128);
    if (fork() == 0) {
        if (type == SOCK_STREAM) serve_tcp(s); else serve_udp(s);
        _exit(0);
    }
    close(s);
}

int main(int argc, char **argv) {
    int port = 7, count = 0;
    const char *listen_on[MAX_LISTEN];
    const char *channel = "hyperwall.control";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc && count < MAX_LISTEN)
            listen_on[count++] = argv[++i];
        else if (strcmp(argv[i], "--channel") == 0 && i + 1 < argc) channel = argv[++i];
    }
    signal(SIGCHLD, SIG_IGN); /* PID 1: children and orphans are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    if (count == 0) {
        start_echo(NULL, port, SOCK_STREAM);
        start_echo(NULL, port, SOCK_DGRAM);
    }
    for (int i = 0; i < count; i++) {
        start_echo(listen_on[i], port, SOCK_STREAM);
        start_echo(listen_on[i], port, SOCK_DGRAM);
    }
    channel_fd = open_channel(channel);
    fprintf(stderr, "hwguest: control channel %s open\n", channel);
    static char buf[LINE_MAX_LEN];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(channel_fd, buf + have, sizeof buf - have - 1);
        if (n <= 0) { /* host side not connected (EOF) or interrupted */
            usleep(50000);
            continue;
        }
        have += (size_t)n;
        buf[have] = 0;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', have - (size_t)(start - buf))) != NULL) {
            *nl = 0;
            if (fork() == 0) {
                handle(start);
                _exit(0);
            }
            start = nl + 1;
        }
        have -= (size_t)(start - buf);
        memmove(buf, start, have);
        if (have == sizeof buf - 1) have = 0; /* an overlong line: drop it */
    }
}
