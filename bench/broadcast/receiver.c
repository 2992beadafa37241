// Broadcast benchmark: a lean WebSocket receiver for the load generator (loadgen.mjs --client c).
//
// One process, one epoll loop, N sockets on GET /ws?query=... It does what the Node.js ws
// client does for the benchmark, at a few microseconds per frame instead of 12-18, so that at
// 10,000 subscribers the latency measured is the server's rather than the client's: handshake,
// read frames, answer pings, record each change frame's xid and receive time (CLOCK_REALTIME,
// the clock of pg_xact_commit_timestamp), count "subscribed" and other frames, note closes.
// It trusts the server (a benchmark tool, not a conforming client): no UTF-8 check, no
// Sec-WebSocket-Accept check, messages of one frame (the server sends no fragments).
//
//   receiver HOST PORT < commands
// stdin: the number of sockets N, then N request targets (/ws?query=..., already encoded), one
// per line; then commands, one per line:
//   dump PATH   write the change frames received since the last dump to PATH (little-endian
//               records: f64 receive time in ms since the epoch, u32 xid, u32 socket index),
//               then print "dumped COUNT"
//   close       send every socket a close frame (1000), wait up to 5 s for the replies, exit
// stdout: "open OK FAILED" once every handshake is done, then "s CHANGES SUBSCRIBED CLOSED OTHER"
// whenever those counts changed (at most every 10 ms). stderr: samples of unexpected frames.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { CONNECTING, HANDSHAKE, OPEN, DONE };

struct conn {
    int fd;
    int state;
    char *buf;  // unparsed bytes
    size_t len, cap;
};

struct record {
    double at_ms;
    uint32_t xid;
    uint32_t socket;
};

static struct conn *conns;
static char **targets;
static int n_conns, next_connect, in_flight, n_open, n_failed, n_handshakes_done;
static long long n_changes, n_subscribed, n_closed, n_other;
static struct record *records;
static size_t n_records, records_cap;
static int epfd;
static const char *host;
static int port;
static int samples;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void send_all(int fd, const void *data, size_t len) {
    // Small control frames and the handshake: the socket has room; a short write is an error here.
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    (void)n;
}

// A masked client frame (RFC 6455 5.3; the mask is zero, which leaves the payload as it is).
static void send_control(int fd, int opcode, const unsigned char *payload, size_t len) {
    unsigned char frame[2 + 4 + 125];
    if (len > 125)
        len = 125;
    frame[0] = (unsigned char)(0x80 | opcode);
    frame[1] = (unsigned char)(0x80 | len);
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, payload, len);
    send_all(fd, frame, 6 + len);
}

static void finish(struct conn *c) {
    if (c->state == DONE)
        return;
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DONE;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

static void start_connect(int i) {
    struct conn *c = &conns[i];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "receiver: host must be an IPv4 address: %s\n", host);
        exit(2);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        die("connect");
    c->state = CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
    in_flight++;
}

static void handshake_over(int ok) {
    in_flight--;
    n_handshakes_done++;
    if (ok)
        n_open++;
    else
        n_failed++;
    if (next_connect < n_conns)
        start_connect(next_connect++);
    if (n_handshakes_done == n_conns)
        printf("open %d %d\n", n_open, n_failed);
}

static void record_change(uint32_t xid, uint32_t socket, double at) {
    if (n_records == records_cap) {
        records_cap = records_cap ? records_cap * 2 : 1 << 20;
        records = realloc(records, records_cap * sizeof *records);
        if (!records)
            die("realloc");
    }
    records[n_records++] = (struct record){at, xid, socket};
    n_changes++;
}

static const char kChange[] = "{\"type\":\"change\"";
static const char kXid[] = "\"xid\":";

static void on_text(int i, const char *p, size_t len, double at) {
    if (len > sizeof kChange - 1 && memcmp(p, kChange, sizeof kChange - 1) == 0) {
        // The xid is near the end of a change frame (before lsn and subscriptions).
        for (const char *q = p + len - (sizeof kXid - 1); q > p; q--) {
            if (*q == '"' && memcmp(q, kXid, sizeof kXid - 1) == 0) {
                q += sizeof kXid - 1;
                uint64_t x = 0;
                const char *end = p + len;
                if (q < end && *q >= '0' && *q <= '9') {
                    while (q < end && *q >= '0' && *q <= '9')
                        x = x * 10 + (uint64_t)(*q++ - '0');
                    record_change((uint32_t)x, (uint32_t)i, at);
                    return;
                }
                break;
            }
        }
    }
    if (memmem(p, len, "\"type\":\"subscribed\"", 19)) {
        n_subscribed++;
        return;
    }
    n_other++;
    if (samples++ < 5)
        fprintf(stderr, "receiver: socket %d: unexpected frame: %.*s\n", i, (int)(len > 300 ? 300 : len), p);
}

// Parses whole frames from the front of c->buf; returns the bytes used, or -1 to drop the socket.
static long parse_frames(int i, struct conn *c, double at) {
    size_t off = 0;
    for (;;) {
        const unsigned char *f = (const unsigned char *)c->buf + off;
        size_t avail = c->len - off;
        if (avail < 2)
            break;
        int opcode = f[0] & 0x0f;
        if (f[1] & 0x80)
            return -1;  // a server never masks
        uint64_t plen = f[1] & 0x7f;
        size_t hdr = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hdr = 4;
        } else if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = (plen << 8) | f[2 + k];
            hdr = 10;
        }
        if (avail - hdr < plen)
            break;
        const char *payload = (const char *)f + hdr;
        switch (opcode) {
        case 1:
            on_text(i, payload, plen, at);
            break;
        case 9:
            send_control(c->fd, 10, (const unsigned char *)payload, plen);
            break;
        case 8:
            n_closed++;
            if (plen >= 2)
                send_control(c->fd, 8, (const unsigned char *)payload, 2);
            else
                send_control(c->fd, 8, NULL, 0);
            if (samples++ < 5)
                fprintf(stderr, "receiver: socket %d closed by the server: %d %.*s\n", i,
                        plen >= 2 ? ((unsigned char)payload[0] << 8 | (unsigned char)payload[1]) : 1005,
                        plen > 2 ? (int)plen - 2 : 0, payload + 2);
            return -1;
        default:
            n_other++;
        }
        off += hdr + plen;
    }
    return (long)off;
}

static void on_readable(int i) {
    struct conn *c = &conns[i];
    for (;;) {
        if (c->cap - c->len < 65536) {
            c->cap = c->cap ? c->cap * 2 : 131072;
            c->buf = realloc(c->buf, c->cap);
            if (!c->buf)
                die("realloc");
        }
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            if (c->state == HANDSHAKE || c->state == CONNECTING) {
                fprintf(stderr, "receiver: socket %d: connection ended during the handshake\n", i);
                finish(c);
                handshake_over(0);
            } else {
                n_closed++;
                finish(c);
            }
            return;
        }
        if (n < 0)
            return;
        const double at = now_ms();
        c->len += (size_t)n;
        if (c->state == HANDSHAKE) {
            char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (!end)
                continue;
            if (c->len < 12 || memcmp(c->buf, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "receiver: socket %d refused: %.*s\n", i, (int)(c->len > 300 ? 300 : c->len), c->buf);
                finish(c);
                handshake_over(0);
                return;
            }
            size_t used = (size_t)(end + 4 - c->buf);
            memmove(c->buf, c->buf + used, c->len - used);
            c->len -= used;
            c->state = OPEN;
            handshake_over(1);
        }
        long used = parse_frames(i, c, at);
        if (used < 0) {
            finish(c);
            return;
        }
        memmove(c->buf, c->buf + used, c->len - (size_t)used);
        c->len -= (size_t)used;
        if (c->cap > (1 << 20) && c->len < 65536) {  // a big frame keeps no big buffer
            c->cap = 131072;
            c->buf = realloc(c->buf, c->cap);
        }
    }
}

static void on_writable_connecting(int i) {
    struct conn *c = &conns[i];
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err) {
        fprintf(stderr, "receiver: socket %d: connect: %s\n", i, strerror(err));
        finish(c);
        handshake_over(0);
        return;
    }
    char req[16384];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     targets[i], host, port);
    send_all(c->fd, req, (size_t)n);
    c->state = HANDSHAKE;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static int dump(const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    for (size_t k = 0; k < n_records; k++) {
        fwrite(&records[k].at_ms, 8, 1, f);
        fwrite(&records[k].xid, 4, 1, f);
        fwrite(&records[k].socket, 4, 1, f);
    }
    fclose(f);
    printf("dumped %zu\n", n_records);
    n_records = 0;
    return 0;
}

static void close_all_and_exit(void) {
    static const unsigned char normal[2] = {0x03, 0xe8};
    for (int i = 0; i < n_conns; i++)
        if (conns[i].state == OPEN)
            send_control(conns[i].fd, 8, normal, 2);
    const double deadline = now_ms() + 5000;
    struct epoll_event evs[256];
    while (now_ms() < deadline) {
        int open = 0;
        for (int i = 0; i < n_conns; i++)
            open += conns[i].state == OPEN;
        if (!open)
            break;
        int n = epoll_wait(epfd, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u32 == UINT32_MAX)
                continue;
            on_readable((int)evs[k].data.u32);
        }
    }
    printf("closed\n");
    exit(0);
}

static char cmd[4096];
static size_t cmd_len;

static void on_stdin(void) {
    ssize_t n = read(0, cmd + cmd_len, sizeof cmd - 1 - cmd_len);
    if (n <= 0)
        close_all_and_exit();  // the load generator went away
    cmd_len += (size_t)n;
    char *nl;
    while ((nl = memchr(cmd, '\n', cmd_len))) {
        *nl = '\0';
        if (strncmp(cmd, "dump ", 5) == 0) {
            if (dump(cmd + 5) < 0)
                printf("error dump %s\n", strerror(errno));
        } else if (strcmp(cmd, "close") == 0) {
            close_all_and_exit();
        } else {
            printf("error unknown command %s\n", cmd);
        }
        size_t used = (size_t)(nl + 1 - cmd);
        memmove(cmd, cmd + used, cmd_len - used);
        cmd_len -= used;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: receiver HOST PORT < targets-and-commands\n");
        return 2;
    }
    host = argv[1];
    port = atoi(argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    // Targets: N, then N lines (read with stdio before the loop takes stdin over, unbuffered).
    char line[16384];
    size_t got = 0;
    int fd0 = 0;
    // Read N lines byte by byte so that nothing after them is consumed here.
    int want = -1, have = 0;
    while (want < 0 || have < want) {
        char ch;
        ssize_t r = read(fd0, &ch, 1);
        if (r <= 0) {
            fprintf(stderr, "receiver: stdin ended before the targets\n");
            return 2;
        }
        if (ch != '\n') {
            if (got < sizeof line - 1)
                line[got++] = ch;
            continue;
        }
        line[got] = '\0';
        got = 0;
        if (want < 0) {
            want = atoi(line);
            if (want <= 0) {
                fprintf(stderr, "receiver: bad socket count %s\n", line);
                return 2;
            }
            targets = calloc((size_t)want, sizeof *targets);
            conns = calloc((size_t)want, sizeof *conns);
        } else {
            targets[have++] = strdup(line);
        }
    }
    n_conns = want;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n_conns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    epfd = epoll_create1(0);
    if (epfd < 0)
        die("epoll_create1");
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &sev);
    while (next_connect < n_conns && in_flight < 200)
        start_connect(next_connect++);

    long long last[4] = {-1, -1, -1, -1};
    double last_status = 0;
    struct epoll_event evs[512];
    for (;;) {
        int n = epoll_wait(epfd, evs, 512, 10);
        for (int k = 0; k < n; k++) {
            uint32_t i = evs[k].data.u32;
            if (i == UINT32_MAX) {
                on_stdin();
                continue;
            }
            struct conn *c = &conns[i];
            if (c->state == DONE)
                continue;
            if (c->state == CONNECTING && (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                on_writable_connecting((int)i);
            else if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                on_readable((int)i);
        }
        const double t = now_ms();
        if (t - last_status >= 10 && (last[0] != n_changes || last[1] != n_subscribed || last[2] != n_closed ||
                                      last[3] != n_other)) {
            last_status = t;
            last[0] = n_changes;
            last[1] = n_subscribed;
            last[2] = n_closed;
            last[3] = n_other;
            printf("s %lld %lld %lld %lld\n", n_changes, n_subscribed, n_closed, n_other);
        }
    }
}
