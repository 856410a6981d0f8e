/*
 * bare_relay: the kernel UDP path's ceiling for the media-relay benchmark (bench/relay/run.sh).
 *
 * One thread, no per-packet work beyond moving datagrams:
 *
 *   per-port mode (default):
 *     bare_relay --listen-base P --count N --dst-base R [--dst-host 127.0.0.1] [--host 127.0.0.1]
 *   binds P..P+N-1; a datagram arriving on port P+i is sent to dst-host:R+i from the same socket.
 *   epoll (level-triggered) over all sockets; on each ready socket recvmmsg (up to 64 datagrams,
 *   MSG_DONTWAIT) then one sendmmsg of what was read.
 *
 *   single mode:
 *     bare_relay --single --listen-base P --send-base S --dst-base R [--dst-host ...]
 *   one socket on port P; a datagram from source port S+i goes to R+i (blocking recvmmsg of up
 *   to 64 with MSG_WAITFORONE, then sendmmsg): the absolute ceiling, with no epoll and full batches.
 *
 * Socket buffers: SO_RCVBUF/SO_SNDBUF of --buf bytes (default 4 MiB), forced past
 * net.core.rmem_max with SO_RCVBUFFORCE/SO_SNDBUFFORCE when running as root.
 *
 * On SIGTERM or SIGINT it prints one JSON line to stderr and exits 0:
 *   {"relay":"bare","mode":"per-port","sockets":N,"received":..,"forwarded":..,"dropped":..,
 *    "recv_calls":..,"send_calls":..,"bad_source":..}
 * dropped = datagrams read but not sent (sendmmsg error or short count); bad_source = single
 * mode datagrams whose source port maps to no stream. SIGUSR1 prints the same line and goes on.
 * It prints "ready" on stdout once every socket is bound.
 *
 * Build: gcc -O2 -Wall -Wextra -o bare_relay bare_relay.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define BUFSZ 2048
#define MAX_EVENTS 256

static volatile sig_atomic_t stop_flag;
static volatile sig_atomic_t report_flag;

static uint64_t received, forwarded, dropped, recv_calls, send_calls, bad_source;

static void on_stop(int sig) { (void)sig; stop_flag = 1; }
static void on_report(int sig) { (void)sig; report_flag = 1; }

static void die(const char *what) {
    fprintf(stderr, "bare_relay: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void usage(void) {
    fprintf(stderr,
            "usage: bare_relay --listen-base P --count N --dst-base R [--dst-host IP] [--host IP] [--buf BYTES]\n"
            "       bare_relay --single --listen-base P --send-base S --dst-base R [--count N] [--dst-host IP] [--host IP]\n");
    exit(2);
}

static long parse_num(const char *s, const char *name, long min, long max) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max) {
        fprintf(stderr, "bare_relay: bad %s %s (%ld..%ld)\n", name, s, min, max);
        exit(2);
    }
    return v;
}

static void report(const char *mode, long sockets) {
    fprintf(stderr,
            "{\"relay\":\"bare\",\"mode\":\"%s\",\"sockets\":%ld,\"received\":%llu,\"forwarded\":%llu,"
            "\"dropped\":%llu,\"recv_calls\":%llu,\"send_calls\":%llu,\"bad_source\":%llu}\n",
            mode, sockets, (unsigned long long)received, (unsigned long long)forwarded,
            (unsigned long long)dropped, (unsigned long long)recv_calls, (unsigned long long)send_calls,
            (unsigned long long)bad_source);
}

static void set_buffers(int fd, int bytes) {
    /* Forced sizes need CAP_NET_ADMIN; fall back to the capped ones. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof bytes) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
}

static int bind_udp(struct in_addr host, int port, int bufsz) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = host};
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        fprintf(stderr, "bare_relay: bind %s:%d: %s\n", inet_ntoa(host), port, strerror(errno));
        exit(1);
    }
    set_buffers(fd, bufsz);
    return fd;
}

/* Static so that the batch is not on the stack (64 x 2 KiB). */
static unsigned char bufs[BATCH][BUFSZ];
static struct iovec iov[BATCH];
static struct mmsghdr msgs[BATCH];
static struct sockaddr_in srcs[BATCH];
static struct sockaddr_in dsts[BATCH];

/* Sends msgs[0..n) (already pointing at their destinations); counts what was not sent. */
static void send_batch(int fd, unsigned n) {
    unsigned done = 0;
    while (done < n) {
        int r = sendmmsg(fd, msgs + done, n - done, 0);
        send_calls++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            dropped += n - done; /* ENOBUFS, EAGAIN, ECONNREFUSED...: give up on the batch */
            return;
        }
        if (r == 0) {
            dropped += n - done;
            return;
        }
        forwarded += (unsigned)r;
        done += (unsigned)r;
    }
}

/* Restores messages 0..n) for receiving (the sends rewrite lengths, names and buffers). */
static void reset_msgs(int n, int with_source) {
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = BUFSZ;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (with_source) {
            msgs[i].msg_hdr.msg_name = &srcs[i];
            msgs[i].msg_hdr.msg_namelen = sizeof srcs[i];
        }
    }
}

static void run_per_port(struct in_addr host, int listen_base, int count, struct in_addr dst_host, int dst_base,
                         int bufsz) {
    int *fds = calloc((size_t)count, sizeof *fds);
    struct sockaddr_in *dst = calloc((size_t)count, sizeof *dst);
    if (!fds || !dst)
        die("calloc");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < count; i++) {
        fds[i] = bind_udp(host, listen_base + i, bufsz);
        dst[i] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)(dst_base + i)),
                                      .sin_addr = dst_host};
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0)
            die("epoll_ctl");
    }
    printf("ready\n");
    fflush(stdout);
    struct epoll_event evs[MAX_EVENTS];
    reset_msgs(BATCH, 0);
    while (!stop_flag) {
        if (report_flag) {
            report_flag = 0;
            report("per-port", count);
        }
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            int i = (int)evs[e].data.u32;
            int r = recvmmsg(fds[i], msgs, BATCH, MSG_DONTWAIT, NULL);
            recv_calls++;
            if (r <= 0)
                continue; /* EAGAIN (nothing after all) or EINTR: epoll will say again */
            received += (unsigned)r;
            for (int k = 0; k < r; k++) {
                iov[k].iov_len = msgs[k].msg_len;
                msgs[k].msg_hdr.msg_name = &dst[i];
                msgs[k].msg_hdr.msg_namelen = sizeof dst[i];
            }
            send_batch(fds[i], (unsigned)r);
            reset_msgs(r, 0);
        }
    }
    report("per-port", count);
}

static void run_single(struct in_addr host, int listen_base, int send_base, int count, struct in_addr dst_host,
                       int dst_base, int bufsz) {
    int fd = bind_udp(host, listen_base, bufsz);
    printf("ready\n");
    fflush(stdout);
    while (!stop_flag) {
        if (report_flag) {
            report_flag = 0;
            report("single", 1);
        }
        reset_msgs(BATCH, 1);
        int r = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        recv_calls++;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("recvmmsg");
        }
        received += (unsigned)r;
        unsigned out = 0;
        for (int k = 0; k < r; k++) {
            int sport = ntohs(srcs[k].sin_port);
            int idx = sport - send_base;
            if (idx < 0 || (count > 0 && idx >= count) || dst_base + idx > 65535) {
                bad_source++;
                continue;
            }
            dsts[out] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)(dst_base + idx)),
                                             .sin_addr = dst_host};
            /* Compact: message `out` sends buffer k. */
            iov[out].iov_base = bufs[k];
            iov[out].iov_len = msgs[k].msg_len;
            msgs[out].msg_hdr.msg_iov = &iov[out];
            msgs[out].msg_hdr.msg_iovlen = 1;
            msgs[out].msg_hdr.msg_name = &dsts[out];
            msgs[out].msg_hdr.msg_namelen = sizeof dsts[out];
            out++;
        }
        if (out)
            send_batch(fd, out);
    }
    report("single", 1);
}

int main(int argc, char **argv) {
    int listen_base = -1, count = 0, dst_base = -1, send_base = -1, single = 0;
    long bufsz = 4 << 20;
    struct in_addr host, dst_host;
    inet_pton(AF_INET, "127.0.0.1", &host);
    dst_host = host;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--single")) {
            single = 1;
            continue;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help"))
            usage();
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--listen-base"))
            listen_base = (int)parse_num(v, a, 1, 65535);
        else if (!strcmp(a, "--count"))
            count = (int)parse_num(v, a, 1, 65535);
        else if (!strcmp(a, "--dst-base"))
            dst_base = (int)parse_num(v, a, 1, 65535);
        else if (!strcmp(a, "--send-base"))
            send_base = (int)parse_num(v, a, 1, 65535);
        else if (!strcmp(a, "--buf"))
            bufsz = parse_num(v, a, 4096, 1 << 30);
        else if (!strcmp(a, "--dst-host") || !strcmp(a, "--host")) {
            struct in_addr x;
            if (inet_pton(AF_INET, v, &x) != 1) {
                fprintf(stderr, "bare_relay: bad %s %s (an IPv4 address)\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--host"))
                host = x;
            else
                dst_host = x;
        } else
            usage();
    }
    if (listen_base < 0 || dst_base < 0)
        usage();
    if (single ? send_base < 0 : count <= 0)
        usage();
    if (!single && (listen_base + count - 1 > 65535 || dst_base + count - 1 > 65535)) {
        fprintf(stderr, "bare_relay: port range beyond 65535\n");
        return 2;
    }

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)count + 64) {
        rlim_t want = (rlim_t)count + 64;
        rl.rlim_cur = want;
        if (rl.rlim_max < want)
            rl.rlim_max = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            fprintf(stderr, "bare_relay: cannot open %d sockets: RLIMIT_NOFILE too low (%s)\n", count,
                    strerror(errno));
            return 1;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: epoll_wait/recvmmsg return EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_report;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (single)
        run_single(host, listen_base, send_base, count, dst_host, dst_base, (int)bufsz);
    else
        run_per_port(host, listen_base, count, dst_host, dst_base, (int)bufsz);
    return 0;
}
