/* relay.c: the bare relay of benchmarks/barerelay without a language runtime, for benchmarks/proxy.py.
 *
 * One thread, one epoll set (level-triggered), non-blocking sockets with TCP_NODELAY. Per client connection it
 * connects to the upstream and forwards bytes both ways: read up to 64 KiB into one shared buffer, write it to
 * the other socket at once; only a short write copies the rest aside (allocated then, freed once written) and
 * waits for EPOLLOUT, reading from that side stops meanwhile. An idle pair holds no buffer. An end of input is passed on as a half-close. No parsing, no login of its own.
 * A request/reply costs two reads, two writes and the epoll_wait calls that wake for them.
 *
 * Build: gcc -O2 -o relay-c relay.c     Run: relay-c LISTEN_HOST:PORT UPSTREAM_HOST:PORT
 * It prints "listening HOST:PORT" once it accepts connections.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (64 * 1024)

struct pair;

/* One socket of a pair; pending holds what was read from it and not yet written to the peer. */
struct end {
    int fd;
    struct end *peer;
    struct pair *pair;
    char *pending;
    size_t off, len;
    int eof;       /* read returned 0 */
    unsigned want; /* events registered with epoll */
};

struct pair {
    struct end a, b;
    int dead;
    struct pair *next_dead;
};

static int ep;
static char chunk[CHUNK];
static struct pair *graveyard; /* closed pairs, freed after the epoll batch that may still name them */

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int parse_address(const char *text, struct sockaddr_in *address) {
    char host[64];
    const char *colon = strrchr(text, ':');
    if (!colon || (size_t)(colon - text) >= sizeof host) return -1;
    memcpy(host, text, colon - text);
    host[colon - text] = 0;
    memset(address, 0, sizeof *address);
    address->sin_family = AF_INET;
    address->sin_port = htons((unsigned short)atoi(colon + 1));
    return inet_pton(AF_INET, host, &address->sin_addr) == 1 ? 0 : -1;
}

static void close_pair(struct pair *pair) {
    if (pair->dead) return;
    pair->dead = 1;
    close(pair->a.fd); /* closing removes the descriptors from the epoll set */
    close(pair->b.fd);
    free(pair->a.pending);
    free(pair->b.pending);
    pair->next_dead = graveyard;
    graveyard = pair;
}

/* Register what this socket waits for: input while its buffer is empty and it has not ended, and room to
 * write while the peer's buffer holds bytes for it. */
static void update(struct end *end) {
    unsigned want = 0;
    if (!end->eof && end->len == 0) want |= EPOLLIN;
    if (end->peer->len > 0) want |= EPOLLOUT;
    if (want == end->want) return;
    struct epoll_event event = {.events = want, .data.ptr = end};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, end->fd, &event) < 0) die("epoll_ctl");
    end->want = want;
}

/* Write data to src's peer; what does not go now is copied to src->pending. 0 when all of it went or waits,
 * -1 on a failed socket. */
static int forward(struct end *src, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(src->peer->fd, data, len);
        if (n < 0) {
            if (errno != EAGAIN) return -1;
            src->pending = malloc(len);
            if (!src->pending) die("malloc");
            memcpy(src->pending, data, len);
            src->off = 0;
            src->len = len;
            return 0;
        }
        data += n;
        len -= (size_t)n;
    }
    if (src->eof) shutdown(src->peer->fd, SHUT_WR);
    return 0;
}

/* Write what src->pending holds to its peer, as far as it goes now. */
static int flush(struct end *src) {
    while (src->len > 0) {
        ssize_t n = write(src->peer->fd, src->pending + src->off, src->len);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        src->off += (size_t)n;
        src->len -= (size_t)n;
    }
    free(src->pending);
    src->pending = NULL;
    if (src->eof) shutdown(src->peer->fd, SHUT_WR);
    return 0;
}

static void readable(struct end *end) {
    ssize_t n = read(end->fd, chunk, CHUNK);
    if (n < 0) {
        if (errno != EAGAIN) close_pair(end->pair);
        return;
    }
    if (n == 0) end->eof = 1;
    if (forward(end, chunk, (size_t)n) < 0) {
        close_pair(end->pair);
        return;
    }
    if (end->eof && end->peer->eof && end->len == 0 && end->peer->len == 0) {
        close_pair(end->pair);
        return;
    }
    update(end);
    update(end->peer);
}

static void writable(struct end *end) {
    struct end *src = end->peer;
    if (flush(src) < 0) {
        close_pair(end->pair);
        return;
    }
    if (end->eof && src->eof && end->len == 0 && src->len == 0) {
        close_pair(end->pair);
        return;
    }
    update(end);
    update(src);
}

static void accept_all(int listener, const struct sockaddr_in *upstream) {
    for (;;) {
        int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client < 0) {
            if (errno != EAGAIN && errno != ECONNABORTED) perror("accept4");
            return;
        }
        int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (server < 0 || connect(server, (const struct sockaddr *)upstream, sizeof *upstream) < 0) {
            perror("connect upstream"); /* the upstream is local: a blocking connect is short */
            if (server >= 0) close(server);
            close(client);
            continue;
        }
        int one = 1;
        setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (fcntl(server, F_SETFL, fcntl(server, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
        struct pair *pair = calloc(1, sizeof *pair);
        if (!pair) die("calloc");
        pair->a = (struct end){.fd = client, .peer = &pair->b, .pair = pair, .want = EPOLLIN};
        pair->b = (struct end){.fd = server, .peer = &pair->a, .pair = pair, .want = EPOLLIN};
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = &pair->a};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, client, &event) < 0) die("epoll_ctl");
        event.data.ptr = &pair->b;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, server, &event) < 0) die("epoll_ctl");
    }
}

int main(int argc, char **argv) {
    struct sockaddr_in listen_at, upstream;
    if (argc != 3 || parse_address(argv[1], &listen_at) < 0 || parse_address(argv[2], &upstream) < 0) {
        fprintf(stderr, "usage: %s LISTEN_HOST:PORT UPSTREAM_HOST:PORT (IPv4)\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (listener < 0 || bind(listener, (struct sockaddr *)&listen_at, sizeof listen_at) < 0 ||
        listen(listener, 4096) < 0)
        die("listen");
    socklen_t size = sizeof listen_at;
    getsockname(listener, (struct sockaddr *)&listen_at, &size);
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &listen_at.sin_addr, host, sizeof host);
    printf("listening %s:%d\n", host, ntohs(listen_at.sin_port));
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: the listener */
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listener, &event) < 0) die("epoll_ctl");
    struct epoll_event events[256];
    for (;;) {
        int count = epoll_wait(ep, events, 256, -1);
        if (count < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < count; i++) {
            struct end *end = events[i].data.ptr;
            if (!end) {
                accept_all(listener, &upstream);
                continue;
            }
            if (end->pair->dead) continue;
            unsigned ready = events[i].events;
            if (ready & (EPOLLIN | EPOLLHUP | EPOLLERR) && end->want & EPOLLIN) readable(end);
            if (!end->pair->dead && ready & (EPOLLOUT | EPOLLERR) && end->want & EPOLLOUT) writable(end);
            if (!end->pair->dead && ready & (EPOLLHUP | EPOLLERR) && !(end->want & (EPOLLIN | EPOLLOUT)))
                close_pair(end->pair); /* a failed socket nobody waits on any more */
        }
        while (graveyard) {
            struct pair *next = graveyard->next_dead;
            free(graveyard);
            graveyard = next;
        }
    }
}
