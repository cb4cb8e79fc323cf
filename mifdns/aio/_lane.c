/* _lane: the miss lane. The first UDP attempt of a plain query, forwarded in C.
 *
 * Part of the asyncio adapter, like _udpbatch.c: mechanism only. What may take the lane is the
 * core's decision (mifdns/core/lane.py builds the table: which routing suffixes lead to which
 * single PvD and server); everything else about a query is the core's job, and the lane hands
 * the query over to it (``handoff``) as soon as anything is not plain.
 *
 * Lane(capacity, per_port, timeout, edns_size, rtt_bounds, total_timeout=timeout)
 *   configure(gen, routes, default, lanes, parts, inflight, synth)
 *       routes   dict: lower-case wire suffix -> lane index, or -1 (not for the lane); the
 *                same keys as the core's route table, so the walk below is its walk
 *       default  lane index of a name no suffix claims, or -1
 *       lanes    list of (family, packed address, port, scope id, interface bytes, flags, tag)
 *                flags: 1 the PvD trusts AD, 2 AAAA not for the lane, 4 PTR not for the lane
 *       parts    the cache's partitions (dict tag -> Partition), inflight and synth: the
 *                core's in-flight tables; a query they hold is not for the lane
 *   tune(timeout, total_timeout, edns_size, limit, per_port)   settings a reload changed
 *   disable()    nothing takes the lane until the next configure (in-flight ones finish)
 *   fileno()     an epoll descriptor: readable when an upstream socket of the lane is
 *   poll()       read the replies; answer the plain ones; returns the handoffs
 *   expire(now)  the attempts whose timeout passed, as handoffs
 *   drain()      per lane index: (forwarded, answered, rtt buckets tuple, rtt sum); reset
 *   counters()   dict of totals; pending: attempts in flight; waiting: timed out, kept
 *   close()
 *
 * A query takes the lane (lane_try, from _udpbatch.serve) when it is a plain QUERY: opcode 0,
 * RD as it likes, one question of class IN and an ordinary type, no records but at most one
 * OPT (version 0, no options) as its last record, a name the table sends to a lane, nothing
 * for that key cached in the lane's partition (a hit goes through the resolver), nothing in
 * flight for it in the core or the lane, and a free slot (``capacity``). It gets a random ID
 * and leaves through the lane's socket for its server (bound to the PvD's interface, connected:
 * a random port, other sources filtered by the kernel); a socket serves ``per_port`` queries,
 * then the next one is opened, and it closes when its last query is done (as upstream.py).
 *
 * A reply is matched on socket and ID, then its question (case-insensitive) as the core's
 * transaction does; a reply with another question is ignored (counted) and the attempt waits
 * on. A matched reply is answered here only when it is plain: NOERROR, TC=0, records of the
 * asked type (A or AAAA) owned by the question's name, nothing in the authority section, at
 * most an OPT (no options, no extended rcode) as the last additional record, every TTL 0
 * (nothing to cache) and the table unchanged since the query left. The client gets what the
 * resolver would render (its ID, its letter case, RA, AA cleared, AD by the trust rule, our
 * OPT if it sent one, TC if over its size). Everything else, and every timeout, is a handoff:
 * (datagram, address, listener fd, lane index, gen, id, sent at, reply or None, late), which
 * the adapter gives to the core (core/lane.py adopt): it continues the attempt as its own
 * transaction (next server, TCP, EDNS fallback, storage, DNS64, the failure rules). A
 * timed-out attempt stays (``waiting``, not ``pending``) until ``total_timeout`` after its
 * send: its reply is then handed off with late=1, for the transaction that adopted it.
 */
#include "_lane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define LANES_MAX 64
#define EP_MAX 64
#define SOCK_MAX 1024
#define QMAX 512          /* a query longer than this is not plain */
#define RBATCH 32
#define RSLOT 65536
#define NBUCKETS_MAX 32

typedef struct {
    int fd;               /* -1: slot free */
    unsigned uses, pending;
    int retired, ep;
} Sock;

typedef struct {
    int used, family;
    struct sockaddr_storage sa;
    socklen_t salen;
    char ifname[IFNAMSIZ];
    int cur;              /* the socket new queries go through, or -1 */
    int mark;
    int down;             /* a peer error (ICMP unreachable) since the last configure */
} Endpoint;

typedef struct {
    int ep, flags;
    PyObject *tag;
    long fwd, done;
    long buckets[NBUCKETS_MAX + 1];
    double rtt_sum;
} LaneDef;

typedef struct {
    int used, sock, lfd, lane, gen;
    unsigned short id, cid, qlen;      /* qlen: the question, name + type + class */
    unsigned short cflags, udp;
    unsigned char edns, dobit;
    unsigned char zombie;              /* timed out and handed over; waits for a late reply */
    unsigned char failed;              /* its server is unreachable: handed over at the next poll */
    double sent, deadline;
    PyObject *tkey;
    struct sockaddr_storage addr;
    socklen_t alen;
    unsigned short dlen;
    unsigned char data[QMAX];
} Pending;

typedef struct {
    PyObject_HEAD
    int epfd, evfd, gen, enabled, deflane, nlanes, nfailed;
    PyObject *routes, *parts, *inflight, *synth, *questions;
    LaneDef lanes[LANES_MAX];
    Endpoint eps[EP_MAX];
    Sock socks[SOCK_MAX];
    Pending *pend;
    int cap, limit, npend, nsocks, nzombie;
    int *freelist, nfree;
    int *hash;
    unsigned hmask;
    unsigned per_port;
    double timeout, total_timeout;
    int edns_size;
    double bounds[NBUCKETS_MAX];
    int nbounds;
    unsigned short rnd[1024];
    int rndpos;
    long c_forwarded, c_answered, c_handoffs, c_expired, c_ignored, c_send_errors, c_client_errors;
    long c_socket_errors;
    PyObject *handoffs;   /* list being filled by poll/expire */
} Lane;

static PyObject *s_entries, *s_nx;

static double
mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static unsigned short
rand16(Lane *L)
{
    if (L->rndpos == 0) {
        size_t got = 0;
        while (got < sizeof L->rnd) {
            ssize_t r = getrandom((char *)L->rnd + got, sizeof L->rnd - got, 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            got += (size_t)r;
        }
        L->rndpos = 1024;
    }
    return L->rnd[--L->rndpos];
}

/* ------------------------------------------------------------------ (socket, id) -> pending */
static unsigned
hslot(Lane *L, int sock, unsigned id)
{
    unsigned k = ((unsigned)sock << 16) | id;
    return (k * 2654435761u) & L->hmask;
}

static int
hfind(Lane *L, int sock, unsigned id)
{
    for (unsigned h = hslot(L, sock, id);; h = (h + 1) & L->hmask) {
        int i = L->hash[h];
        if (i < 0)
            return -1;
        if (L->pend[i].sock == sock && L->pend[i].id == id)
            return i;
    }
}

static void
hinsert(Lane *L, int i)
{
    unsigned h = hslot(L, L->pend[i].sock, L->pend[i].id);
    while (L->hash[h] >= 0)
        h = (h + 1) & L->hmask;
    L->hash[h] = i;
}

static void
hremove(Lane *L, int i)
{
    unsigned h = hslot(L, L->pend[i].sock, L->pend[i].id);
    while (L->hash[h] != i)
        h = (h + 1) & L->hmask;
    /* backward-shift deletion: no tombstones */
    unsigned j = h;
    for (;;) {
        L->hash[h] = -1;
        for (;;) {
            j = (j + 1) & L->hmask;
            int k = L->hash[j];
            if (k < 0)
                return;
            unsigned home = hslot(L, L->pend[k].sock, L->pend[k].id);
            /* k may move to h if its home is not cyclically in (h, j] */
            if (h <= j ? (home <= h || home > j) : (home <= h && home > j))
                break;
        }
        L->hash[h] = L->hash[j];
        h = j;
    }
}

/* ------------------------------------------------------------------ sockets */
static void
sock_close(Lane *L, int s)
{
    if (L->socks[s].fd >= 0) {
        epoll_ctl(L->epfd, EPOLL_CTL_DEL, L->socks[s].fd, NULL);
        close(L->socks[s].fd);
        L->socks[s].fd = -1;
        L->nsocks--;
    }
}

static int
sock_open(Lane *L, Endpoint *e)
{
    int s;
    for (s = 0; s < SOCK_MAX && L->socks[s].fd >= 0; s++)
        ;
    if (s == SOCK_MAX)
        return -1;
    int fd = socket(e->family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)s};
    if ((e->ifname[0]
         && setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, e->ifname, (socklen_t)strlen(e->ifname)) < 0)
        || connect(fd, (struct sockaddr *)&e->sa, e->salen) < 0
        || epoll_ctl(L->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    L->socks[s] = (Sock){.fd = fd, .uses = 0, .pending = 0, .retired = 0, .ep = (int)(e - L->eps)};
    L->nsocks++;
    return s;
}

static void
sock_retire(Lane *L, int s)
{
    L->socks[s].retired = 1;
    if (L->socks[s].pending == 0)
        sock_close(L, s);
}

/* ------------------------------------------------------------------ pending */
static void
pend_free(Lane *L, int i)
{
    Pending *p = &L->pend[i];
    if (p->sock >= 0)
        hremove(L, i);
    if (p->tkey != NULL) {
        if (PyDict_DelItem(L->questions, p->tkey) < 0)
            PyErr_Clear();
        Py_CLEAR(p->tkey);
    }
    Sock *s = p->sock >= 0 ? &L->socks[p->sock] : NULL;
    if (s != NULL && --s->pending == 0) {
        /* idle: closed, so the next lone query gets a port of its own (RFC 5452 9.2); only
         * queries in flight together share one, as in upstream.py */
        if (!s->retired && s->ep >= 0 && L->eps[s->ep].used && L->eps[s->ep].cur == p->sock)
            L->eps[s->ep].cur = -1;
        sock_close(L, p->sock);
    }
    if (p->zombie) {
        p->zombie = 0;
        L->nzombie--;
    }
    if (p->failed) {
        p->failed = 0;
        L->nfailed--;
    }
    p->used = 0;
    L->freelist[L->nfree++] = i;
    L->npend--;
}

/* the handoff tuple of pending i (see the top), appended to L->handoffs */
static void
handoff_tuple(Lane *L, int i, const unsigned char *reply, Py_ssize_t rlen, int late)
{
    Pending *p = &L->pend[i];
    PyObject *addr = NULL, *t = NULL;
    char host[INET6_ADDRSTRLEN];
    if (p->addr.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&p->addr;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        addr = Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&p->addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        addr = Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned)ntohl(a->sin6_flowinfo), (unsigned)a->sin6_scope_id);
    }
    if (addr != NULL)
        t = Py_BuildValue("(y#Oiiiidy#i)", (const char *)p->data, (Py_ssize_t)p->dlen, addr,
                          p->lfd, p->lane, p->gen, (int)p->id, p->sent,
                          reply ? (const char *)reply : NULL, reply ? rlen : (Py_ssize_t)0, late);
    if (t == NULL || PyList_Append(L->handoffs, t) < 0)
        PyErr_WriteUnraisable((PyObject *)L);
    Py_XDECREF(t);
    Py_XDECREF(addr);
}

/* hand pending i over (its reply, b"" for a socket error, NULL for a timeout) and free it */
static void
handoff(Lane *L, int i, const unsigned char *reply, Py_ssize_t rlen)
{
    handoff_tuple(L, i, reply, rlen, 0);
    L->c_handoffs++;
    pend_free(L, i);
}

/* a timed-out attempt, handed over: the core's transaction goes on (to the next server, or
 * this one again), and this entry stays until ``total_timeout`` after its send so that a late
 * answer from its server still reaches that transaction (a "late" handoff), as the resolver's
 * own earlier attempts do. It no longer counts as pending, nor holds its question. */
static void
zombify(Lane *L, int i)
{
    Pending *p = &L->pend[i];
    handoff_tuple(L, i, NULL, 0, 0);
    L->c_handoffs++;
    if (p->tkey != NULL) {
        if (PyDict_DelItem(L->questions, p->tkey) < 0)
            PyErr_Clear();
        Py_CLEAR(p->tkey);
    }
    p->zombie = 1;
    p->deadline = p->sent + L->total_timeout;
    L->nzombie++;
}

static int
peer_error(int err)
{
    return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH || err == EHOSTDOWN
           || err == EPROTO;
}

/* make the lane's descriptor readable: the next poll hands over the failed attempts */
static void
wake(Lane *L)
{
    uint64_t one = 1;
    if (L->evfd >= 0 && write(L->evfd, &one, sizeof one) < 0) {
        /* the counter is far from full: cannot happen */
    }
}

/* socket ``s`` reported ``err`` (on a receive or a send): its attempts fail now, not at their
 * timeout, as upstream.py fails them. A peer error (the server or its port is unreachable)
 * fails every attempt to that server through that interface, on every socket (the kernel
 * rate-limits ICMP errors, so the other sockets may never get theirs), drops the timed-out
 * attempts waiting there for a late answer, and takes the server out of the lane until the
 * next configure (the core has learnt of the failure by then). The failed attempts are
 * handed over (an empty reply) by the next poll, which the event descriptor wakes. */
static void
sock_failed(Lane *L, int s, int err)
{
    int ep = L->socks[s].ep, peer = peer_error(err);
    L->c_socket_errors++;
    if (peer && ep >= 0)
        L->eps[ep].down = 1;
    for (int i = 0; i < L->cap; i++) {
        Pending *p = &L->pend[i];
        if (!p->used || p->failed || p->sock < 0
            || !(p->sock == s || (peer && ep >= 0 && L->socks[p->sock].ep == ep)))
            continue;
        if (p->zombie) {
            pend_free(L, i);
        } else {
            p->failed = 1;
            L->nfailed++;
        }
    }
    if (L->nfailed)
        wake(L);
}

/* hand over the attempts ``sock_failed`` marked */
static void
hand_failed(Lane *L)
{
    for (int i = 0; i < L->cap && L->nfailed; i++)
        if (L->pend[i].used && L->pend[i].failed)
            handoff(L, i, (const unsigned char *)"", 0); /* pend_free counts it off */
}

/* ------------------------------------------------------------------ queries */
static int
plain_type(unsigned t)
{
    switch (t) {
    case 1: case 2: case 5: case 6: case 12: case 15: case 16: case 28: case 33: case 35:
    case 43: case 48: case 52: case 64: case 65: case 257:
        return 1;
    }
    return 0;
}

static int
in_dict(PyObject *d, PyObject *k)
{
    if (d == NULL || d == Py_None || PyDict_GET_SIZE(d) == 0)
        return 0;
    int r = PyDict_Contains(d, k);
    if (r < 0) {
        PyErr_Clear();
        return 1; /* unsure: not for the lane */
    }
    return r;
}

static int
cached(Lane *L, PyObject *tag, PyObject *key, PyObject *qname, int flags)
{
    PyObject *part = PyDict_GetItemWithError(L->parts, tag); /* borrowed */
    if (part == NULL)
        return PyErr_Occurred() ? (PyErr_Clear(), 1) : 0;
    PyObject *entries = PyObject_GetAttr(part, s_entries);
    if (entries == NULL)
        return PyErr_Clear(), 1;
    int hit = PyDict_Check(entries) ? in_dict(entries, key) : 1;
    Py_DECREF(entries);
    if (hit)
        return 1;
    PyObject *nx = PyObject_GetAttr(part, s_nx);
    if (nx == NULL)
        return PyErr_Clear(), 1;
    if (PyDict_Check(nx) && PyDict_GET_SIZE(nx)) {
        PyObject *k = Py_BuildValue("(Oii)", qname, 1, flags);
        hit = k == NULL ? (PyErr_Clear(), 1) : in_dict(nx, k);
        Py_XDECREF(k);
    } else if (!PyDict_Check(nx)) {
        hit = 1;
    }
    Py_DECREF(nx);
    return hit;
}

/* Whether ``d`` is a plain query (see the top); if so its lower-case name (``key``, ``*nlen``
 * octets with the root), type, the client's flags, EDNS, DO and UDP size (capped at max_udp). */
static int
parse_plain(const unsigned char *d, unsigned len, int max_udp, unsigned char *key,
            unsigned *nlen_out, unsigned *qtype_out, unsigned *flags_out, unsigned *edns_out,
            unsigned *do_out, unsigned *udp_out)
{
    if (len < 17 || len > QMAX)
        return 0;
    unsigned flags = (unsigned)d[2] << 8 | d[3];
    if (flags & 0xF800) /* QR, opcode */
        return 0;
    if (d[4] != 0 || d[5] != 1 || d[6] || d[7] || d[8] || d[9] || d[10] || d[11] > 1)
        return 0;
    unsigned pos = 12, n = d[12];
    while (n) {
        if (n > 63)
            return 0;
        for (unsigned k = 1; k <= n; k++) {
            if (pos + k >= len)
                return 0;
            unsigned char c = d[pos + k];
            key[pos - 12 + k] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
        }
        key[pos - 12] = (unsigned char)n;
        pos += n + 1;
        if (pos > 266 || pos >= len)
            return 0;
        n = d[pos];
    }
    key[pos - 12] = 0;
    unsigned nlen = pos + 1 - 12;
    pos++;
    if (pos + 4 > len)
        return 0;
    unsigned qtype = (unsigned)d[pos] << 8 | d[pos + 1];
    unsigned qclass = (unsigned)d[pos + 2] << 8 | d[pos + 3];
    pos += 4;
    if (qclass != 1 || !plain_type(qtype))
        return 0;
    unsigned udp = 512, edns = 0, dobit = 0;
    if (d[11] == 1) {
        if (len - pos != 11 || d[pos] != 0 || d[pos + 1] != 0 || d[pos + 2] != 41
            || d[pos + 5] != 0 || d[pos + 6] != 0 || d[pos + 9] != 0 || d[pos + 10] != 0)
            return 0; /* not a lone OPT, version 0, no options */
        udp = (unsigned)d[pos + 3] << 8 | d[pos + 4];
        if (udp < 512)
            udp = 512;
        edns = 1;
        dobit = (d[pos + 7] & 0x80) != 0;
    } else if (pos != len) {
        return 0;
    }
    if (max_udp > 0 && udp > (unsigned)max_udp)
        udp = (unsigned)max_udp;
    *nlen_out = nlen;
    *qtype_out = qtype;
    *flags_out = flags;
    *edns_out = edns;
    *do_out = dobit;
    *udp_out = udp;
    return 1;
}

#define SEND_DECLINED -1 /* not sent: no socket, no free ID, or a local error */
#define SEND_FAILED -2   /* not sent: the server is unreachable (an ICMP error came out) */

/* send the query for ``key``/``qtype`` to lane ``ld``'s server: the socket it went through
 * (its ID in ``*id_out``), or SEND_DECLINED or SEND_FAILED */
static int
lane_send(Lane *L, LaneDef *ld, const unsigned char *key, unsigned nlen, unsigned qtype,
          unsigned cd, unsigned dobit, unsigned *id_out)
{
    Endpoint *e = &L->eps[ld->ep];
    if (e->cur >= 0 && L->socks[e->cur].uses >= L->per_port) {
        sock_retire(L, e->cur);
        e->cur = -1;
    }
    if (e->cur < 0 && (e->cur = sock_open(L, e)) < 0)
        return SEND_DECLINED;
    int s = e->cur;
    unsigned id = rand16(L);
    for (int tries = 0; hfind(L, s, id) >= 0; tries++) {
        if (tries == 8)
            return SEND_DECLINED;
        id = rand16(L);
    }
    /* the query as render.build_query makes it: RD (+CD), AD if the PvD trusts AD */
    unsigned char q[QMAX + 16];
    unsigned qf = 0x0100 | (cd ? 0x0010 : 0) | ((ld->flags & 1) ? 0x0020 : 0);
    unsigned m = 0;
    q[m++] = (unsigned char)(id >> 8);
    q[m++] = (unsigned char)id;
    q[m++] = (unsigned char)(qf >> 8);
    q[m++] = (unsigned char)qf;
    memcpy(q + m, "\0\1\0\0\0\0\0", 7);
    m += 7;
    q[m++] = L->edns_size ? 1 : 0;
    memcpy(q + m, key, nlen);
    m += nlen;
    q[m++] = (unsigned char)(qtype >> 8);
    q[m++] = (unsigned char)qtype;
    q[m++] = 0;
    q[m++] = 1;
    if (L->edns_size) {
        unsigned char opt[11] = {0, 0, 41, (unsigned char)(L->edns_size >> 8),
                                 (unsigned char)L->edns_size, 0, 0,
                                 (unsigned char)(dobit ? 0x80 : 0), 0, 0, 0};
        memcpy(q + m, opt, 11);
        m += 11;
    }
    if (send(L->socks[s].fd, q, m, MSG_DONTWAIT) != (ssize_t)m) {
        int err = errno;
        L->c_send_errors++;
        if (!peer_error(err))
            return SEND_DECLINED;
        /* an ICMP error queued on the socket came out of this send */
        sock_failed(L, s, err);
        return SEND_FAILED;
    }
    *id_out = id;
    return s;
}

int
lane_try(PyObject *self, int lfd, const unsigned char *d, unsigned int len,
         const struct sockaddr_storage *addr, socklen_t alen, int max_udp)
{
    Lane *L = (Lane *)self;
    if (!L->enabled || L->nfree == 0 || L->npend - L->nzombie >= L->limit)
        return 0;
    unsigned char key[256];
    unsigned nlen, qtype, flags, edns, dobit, udp;
    if (!parse_plain(d, len, max_udp, key, &nlen, &qtype, &flags, &edns, &dobit, &udp))
        return 0;

    /* the route: the core's walk (RouteTable.route) over the same map */
    long lane = -2;
    for (unsigned p = 0; key[p]; p += key[p] + 1u) {
        PyObject *suffix = PyBytes_FromStringAndSize((const char *)key + p, (Py_ssize_t)(nlen - p));
        if (suffix == NULL)
            return PyErr_Clear(), 0;
        PyObject *got = PyDict_GetItemWithError(L->routes, suffix);
        Py_DECREF(suffix);
        if (got != NULL) {
            lane = PyLong_AsLong(got);
            break;
        }
        if (PyErr_Occurred())
            return PyErr_Clear(), 0;
    }
    if (lane == -2)
        lane = L->deflane;
    if (lane < 0 || lane >= L->nlanes)
        return 0;
    LaneDef *ld = &L->lanes[lane];
    if ((qtype == 28 && (ld->flags & 2)) || (qtype == 12 && (ld->flags & 4)))
        return 0;

    unsigned cd = (flags & 0x0010) != 0;
    int kflags = (int)(dobit | cd << 1);
    PyObject *qname = PyBytes_FromStringAndSize((const char *)key, nlen);
    PyObject *inner = qname ? Py_BuildValue("(Oiii)", qname, (int)qtype, 1, kflags) : NULL;
    PyObject *tkey = inner ? PyTuple_Pack(2, ld->tag, inner) : NULL;
    if (tkey == NULL) {
        PyErr_Clear();
        Py_XDECREF(qname);
        Py_XDECREF(inner);
        return 0;
    }
    int busy = cached(L, ld->tag, inner, qname, kflags) || in_dict(L->inflight, tkey)
        || in_dict(L->synth, tkey) || in_dict(L->questions, tkey);
    Py_DECREF(qname);
    Py_DECREF(inner);
    if (busy) {
        Py_DECREF(tkey);
        return 0;
    }

    unsigned id = 0;
    int s = L->eps[ld->ep].down ? SEND_FAILED /* its server is unreachable: handed over now */
                                : lane_send(L, ld, key, nlen, qtype, cd, dobit, &id);
    if (s == SEND_DECLINED) {
        Py_DECREF(tkey);
        return 0; /* the resolver tries (and reports) */
    }
    if (PyDict_SetItem(L->questions, tkey, Py_None) < 0) {
        PyErr_Clear();
    }
    int i = L->freelist[--L->nfree];
    Pending *p = &L->pend[i];
    double now = mono();
    p->used = 1;
    p->sock = s;
    p->lfd = lfd;
    p->lane = (int)lane;
    p->gen = L->gen;
    p->id = (unsigned short)id;
    p->cid = (unsigned short)((unsigned)d[0] << 8 | d[1]);
    p->qlen = (unsigned short)(nlen + 4);
    p->cflags = (unsigned short)flags;
    p->udp = (unsigned short)udp;
    p->edns = (unsigned char)edns;
    p->dobit = (unsigned char)dobit;
    p->sent = now;
    p->deadline = now + L->timeout;
    p->tkey = tkey;
    memcpy(&p->addr, addr, alen);
    p->alen = alen;
    p->dlen = (unsigned short)len;
    memcpy(p->data, d, len);
    p->failed = 0;
    L->npend++;
    if (s == SEND_FAILED) {
        p->sock = -1;
        p->failed = 1; /* never sent: no socket, no ID to match */
        L->nfailed++;
        wake(L);
    } else {
        hinsert(L, i);
        L->socks[s].uses++;
        L->socks[s].pending++;
    }
    ld->fwd++;
    L->c_forwarded++;
    return 1;
}

/* ------------------------------------------------------------------ replies */
static int
name_is(const unsigned char *r, unsigned len, const unsigned char *key, unsigned nlen)
{
    if (12 + nlen > len)
        return 0;
    for (unsigned k = 0; k < nlen; k++) {
        unsigned char c = r[12 + k];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != key[k])
            return 0;
    }
    return 1;
}

/* Whether the uncompressed question name at 12 is well formed (label lengths, 255 octets). */
static int
plain_qname(const unsigned char *r, unsigned len)
{
    unsigned pos = 12;
    while (pos < len && r[pos]) {
        if (r[pos] > 63)
            return 0;
        pos += r[pos] + 1u;
        if (pos > 266)
            return 0;
    }
    return pos < len;
}

static void
record_rtt(Lane *L, LaneDef *ld, double rtt)
{
    int b = 0;
    while (b < L->nbounds && rtt > L->bounds[b])
        b++;
    ld->buckets[b]++;
    ld->rtt_sum += rtt;
}

/* The client's reply, built in ``out`` (returns its length), or 0 if the reply is not plain. */
static unsigned
plain_answer(Lane *L, Pending *p, const unsigned char *r, unsigned len, unsigned char *out)
{
    unsigned flags = (unsigned)r[2] << 8 | r[3];
    if (flags & 0x020F) /* TC, or an rcode other than NOERROR */
        return 0;
    unsigned an = (unsigned)r[6] << 8 | r[7], ar = (unsigned)r[10] << 8 | r[11];
    if (an == 0 || r[8] || r[9] || ar > 1)
        return 0;
    unsigned qtype = (unsigned)p->data[12 + p->qlen - 4] << 8 | p->data[12 + p->qlen - 3];
    unsigned rdl = qtype == 1 ? 4 : qtype == 28 ? 16 : 0;
    if (!rdl)
        return 0;
    unsigned pos = 12 + p->qlen, start = pos;
    for (unsigned k = 0; k < an; k++) {
        if (pos + 12 + rdl > len || r[pos] != 0xC0 || r[pos + 1] != 12)
            return 0;
        if (((unsigned)r[pos + 2] << 8 | r[pos + 3]) != qtype || r[pos + 4] || r[pos + 5] != 1)
            return 0;
        if (r[pos + 6] < 0x80 && (r[pos + 6] | r[pos + 7] | r[pos + 8] | r[pos + 9]))
            return 0; /* a TTL above 0 (one with the top bit set reads 0: RFC 2181 s8) */
        if (r[pos + 10] || r[pos + 11] != rdl)
            return 0;
        pos += 12 + rdl;
    }
    unsigned end = pos;
    if (ar) { /* an OPT: root owner, no extended rcode, no options, last */
        if (pos + 11 != len || r[pos] || r[pos + 1] || r[pos + 2] != 41 || r[pos + 5]
            || r[pos + 9] || r[pos + 10])
            return 0;
    } else if (pos != len) {
        return 0;
    }
    LaneDef *ld = &L->lanes[p->lane];
    unsigned keep_ad = (ld->flags & 1) && (p->cflags & 0x0020 || p->dobit);
    unsigned of = (flags & ~(0x0100u | 0x0010u | 0x0400u)) | (p->cflags & (0x0100u | 0x0010u))
        | 0x0080u;
    if (!keep_ad)
        of &= ~0x0020u;
    unsigned m = 0;
    out[m++] = (unsigned char)(p->cid >> 8);
    out[m++] = (unsigned char)p->cid;
    out[m++] = (unsigned char)(of >> 8);
    out[m++] = (unsigned char)of;
    out[m++] = 0;
    out[m++] = 1;
    out[m++] = (unsigned char)(an >> 8);
    out[m++] = (unsigned char)an;
    out[m++] = 0;
    out[m++] = 0;
    out[m++] = 0;
    out[m++] = p->edns;
    memcpy(out + m, p->data + 12, p->qlen); /* the client's letter case */
    m += p->qlen;
    unsigned qend = m;
    memcpy(out + m, r + start, end - start);
    for (unsigned k = 0, at = m; k < an; k++, at += 12 + rdl)
        memset(out + at + 6, 0, 4); /* every TTL 0, as rendered */
    m += end - start;
    unsigned char opt[11] = {0, 0, 41, (unsigned char)(L->edns_size >> 8),
                             (unsigned char)L->edns_size, 0, 0,
                             (unsigned char)(p->dobit ? 0x80 : 0), 0, 0, 0};
    if (p->edns && m + 11 > p->udp) { /* render.truncated: header, question, TC, OPT */
        m = qend;
        out[2] |= 0x02;
        out[6] = out[7] = 0;
    }
    if (!p->edns && m > p->udp) {
        m = qend;
        out[2] |= 0x02;
        out[6] = out[7] = 0;
    }
    if (p->edns) {
        memcpy(out + m, opt, 11);
        m += 11;
    }
    return m;
}

static unsigned char *rbuf;
static struct mmsghdr rmsg[RBATCH];
static struct iovec riov[RBATCH];

static void
on_datagram(Lane *L, int s, const unsigned char *r, unsigned len, double now)
{
    if (len < 12 || !(r[2] & 0x80)) {
        L->c_ignored++;
        return;
    }
    int i = hfind(L, s, (unsigned)r[0] << 8 | r[1]);
    if (i < 0) {
        L->c_ignored++; /* stray, spoofed, or late for an attempt handed over */
        return;
    }
    Pending *p = &L->pend[i];
    if (p->zombie) { /* the core's transaction judges it (question, source) */
        handoff_tuple(L, i, r, (Py_ssize_t)len, 1);
        pend_free(L, i);
        return;
    }
    unsigned qd = (unsigned)r[4] << 8 | r[5];
    unsigned rcode = r[3] & 0xF;
    if (qd == 1 && plain_qname(r, len)) {
        PyObject *inner = PyTuple_GET_ITEM(p->tkey, 1);
        PyObject *qn = PyTuple_GET_ITEM(inner, 0);
        unsigned nlen = (unsigned)PyBytes_GET_SIZE(qn);
        const unsigned char *key = (const unsigned char *)PyBytes_AS_STRING(qn);
        if (!name_is(r, len, key, nlen) || 12 + nlen + 4 > len
            || memcmp(r + 12 + nlen, p->data + 12 + nlen, 4) != 0) {
            L->c_ignored++; /* another question: the core's transaction ignores it too */
            return;
        }
    } else if (qd == 0 && (rcode == 0 || rcode == 3 || r[6] || r[7] || r[8] || r[9])) {
        L->c_ignored++;
        return;
    } /* else: malformed, or a bare error: the core decides */
    LaneDef *ld = &L->lanes[p->lane];
    unsigned char out[QMAX + 65536];
    unsigned m = (p->gen == L->gen && qd == 1) ? plain_answer(L, p, r, len, out) : 0;
    if (!m) {
        handoff(L, i, r, (Py_ssize_t)len);
        return;
    }
    if (sendto(p->lfd, out, m, MSG_DONTWAIT, (struct sockaddr *)&p->addr, p->alen) == (ssize_t)m)
        L->c_answered++;
    else
        L->c_client_errors++;
    record_rtt(L, ld, now - p->sent); /* a handoff's RTT is the core's to record */
    ld->done++;
    pend_free(L, i);
}

static PyObject *
Lane_poll(Lane *L, PyObject *Py_UNUSED(ignored))
{
    if (rbuf == NULL) {
        rbuf = PyMem_RawMalloc((size_t)RBATCH * RSLOT);
        if (rbuf == NULL)
            return PyErr_NoMemory();
    }
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    L->handoffs = list;
    hand_failed(L);
    struct epoll_event evs[64];
    for (int round = 0; round < 16; round++) {
        int n = epoll_wait(L->epfd, evs, 64, 0);
        if (n <= 0)
            break;
        double now = mono();
        for (int e = 0; e < n; e++) {
            int s = (int)evs[e].data.u32;
            if (s == SOCK_MAX) { /* sock_failed from a send: woken to hand those over */
                uint64_t v;
                if (read(L->evfd, &v, sizeof v) < 0) {
                    /* nothing signalled */
                }
                continue;
            }
            if (s < 0 || s >= SOCK_MAX || L->socks[s].fd < 0)
                continue;
            for (int k = 0; k < RBATCH; k++) {
                riov[k].iov_base = rbuf + (size_t)k * RSLOT;
                riov[k].iov_len = RSLOT;
                memset(&rmsg[k].msg_hdr, 0, sizeof rmsg[k].msg_hdr);
                rmsg[k].msg_hdr.msg_iov = &riov[k];
                rmsg[k].msg_hdr.msg_iovlen = 1;
            }
            int got = recvmmsg(L->socks[s].fd, rmsg, RBATCH, MSG_DONTWAIT, NULL);
            if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                sock_failed(L, s, errno); /* ICMP port unreachable and the like */
                hand_failed(L);
                continue;
            }
            for (int k = 0; k < got; k++) {
                on_datagram(L, s, riov[k].iov_base, rmsg[k].msg_len, now);
                if (L->socks[s].fd < 0)
                    break; /* its last attempt ended and it was retired */
            }
        }
        if (n < 64)
            break;
    }
    L->handoffs = NULL;
    return list;
}

static PyObject *
Lane_expire(Lane *L, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    L->handoffs = list;
    for (int i = 0; i < L->cap && L->npend; i++) {
        Pending *p = &L->pend[i];
        if (!p->used || p->deadline > now)
            continue;
        if (p->zombie) {
            pend_free(L, i);
        } else {
            L->c_expired++;
            if (p->sent + L->total_timeout > now)
                zombify(L, i);
            else
                handoff(L, i, NULL, 0);
        }
    }
    L->handoffs = NULL;
    return list;
}

/* ------------------------------------------------------------------ test hooks
 * lane_parse(query, max_udp) -> (name, qtype, flags, edns, do, udp) or None
 * lane_answer(query, reply, edns_size, flags, max_udp) -> the client's reply or None
 * The lane's two parsers as pure functions, for the differential tests against the core
 * (tests/unit/test_lane_wire.py): what the lane takes and says must be what the resolver would. */
PyObject *
lane_parse_hook(PyObject *Py_UNUSED(m), PyObject *args)
{
    const unsigned char *d;
    Py_ssize_t len;
    int max_udp;
    if (!PyArg_ParseTuple(args, "y#i:lane_parse", &d, &len, &max_udp))
        return NULL;
    unsigned char key[256];
    unsigned nlen, qtype, flags, edns, dobit, udp;
    if (len > QMAX
        || !parse_plain(d, (unsigned)len, max_udp, key, &nlen, &qtype, &flags, &edns, &dobit, &udp))
        Py_RETURN_NONE;
    return Py_BuildValue("(y#IIIII)", (const char *)key, (Py_ssize_t)nlen, qtype, flags, edns,
                         dobit, udp);
}

PyObject *
lane_answer_hook(PyObject *Py_UNUSED(m), PyObject *args)
{
    const unsigned char *d, *r;
    Py_ssize_t len, rlen;
    int edns_size, flags, max_udp;
    if (!PyArg_ParseTuple(args, "y#y#iii:lane_answer", &d, &len, &r, &rlen, &edns_size, &flags,
                          &max_udp))
        return NULL;
    unsigned char key[256];
    unsigned nlen, qtype, cflags, edns, dobit, udp;
    if (len > QMAX || rlen > 65535
        || !parse_plain(d, (unsigned)len, max_udp, key, &nlen, &qtype, &cflags, &edns, &dobit,
                        &udp))
        Py_RETURN_NONE;
    Lane *L = PyMem_RawCalloc(1, sizeof(Lane));
    Pending *p = PyMem_RawCalloc(1, sizeof(Pending));
    unsigned char *out = PyMem_RawMalloc(QMAX + 65536);
    PyObject *res = NULL;
    if (L == NULL || p == NULL || out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    L->edns_size = edns_size;
    L->lanes[0].flags = flags;
    p->qlen = (unsigned short)(nlen + 4);
    p->cflags = (unsigned short)cflags;
    p->udp = (unsigned short)udp;
    p->edns = (unsigned char)edns;
    p->dobit = (unsigned char)dobit;
    p->cid = (unsigned short)((unsigned)d[0] << 8 | d[1]);
    memcpy(p->data, d, (size_t)len);
    p->dlen = (unsigned short)len;
    /* as on_datagram: a response, question (case-insensitive) and ID already matched */
    if (rlen < 12 || !(r[2] & 0x80) || r[4] != 0 || r[5] != 1 || !plain_qname(r, (unsigned)rlen)
        || !name_is(r, (unsigned)rlen, key, nlen) || 12 + nlen + 4 > (unsigned)rlen
        || memcmp(r + 12 + nlen, d + 12 + nlen, 4) != 0) {
        res = Py_NewRef(Py_None);
        goto done;
    }
    unsigned m = plain_answer(L, p, r, (unsigned)rlen, out);
    res = m ? PyBytes_FromStringAndSize((const char *)out, m) : Py_NewRef(Py_None);
done:
    PyMem_RawFree(L);
    PyMem_RawFree(p);
    PyMem_RawFree(out);
    return res;
}

/* ------------------------------------------------------------------ configuration */
static int
endpoint_for(Lane *L, int family, const char *packed, Py_ssize_t plen, int port,
             unsigned scope, const char *ifname, Py_ssize_t iflen)
{
    struct sockaddr_storage sa;
    socklen_t salen;
    memset(&sa, 0, sizeof sa);
    if (family == AF_INET && plen == 4) {
        struct sockaddr_in *a = (struct sockaddr_in *)&sa;
        a->sin_family = AF_INET;
        a->sin_port = htons((unsigned short)port);
        memcpy(&a->sin_addr, packed, 4);
        salen = sizeof *a;
    } else if (family == AF_INET6 && plen == 16) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((unsigned short)port);
        memcpy(&a->sin6_addr, packed, 16);
        a->sin6_scope_id = scope;
        salen = sizeof *a;
    } else {
        return -1;
    }
    if (iflen >= IFNAMSIZ)
        return -1;
    int free_ep = -1;
    for (int k = 0; k < EP_MAX; k++) {
        Endpoint *e = &L->eps[k];
        if (!e->used) {
            if (free_ep < 0)
                free_ep = k;
            continue;
        }
        if (e->salen == salen && memcmp(&e->sa, &sa, salen) == 0
            && strncmp(e->ifname, ifname, IFNAMSIZ) == 0 && (Py_ssize_t)strlen(e->ifname) == iflen) {
            e->mark = 1;
            if (L->nfailed == 0) /* the core has had the failures: its table says what next */
                e->down = 0;
            return k;
        }
    }
    if (free_ep < 0)
        return -1;
    Endpoint *e = &L->eps[free_ep];
    memset(e, 0, sizeof *e);
    e->used = e->mark = 1;
    e->family = family;
    e->sa = sa;
    e->salen = salen;
    memcpy(e->ifname, ifname, (size_t)iflen);
    e->cur = -1;
    return free_ep;
}

static void
clear_lanes(Lane *L)
{
    for (int k = 0; k < L->nlanes; k++)
        Py_CLEAR(L->lanes[k].tag);
    L->nlanes = 0;
    L->deflane = -1;
    L->enabled = 0;
}

static PyObject *
Lane_configure(Lane *L, PyObject *args)
{
    int gen, deflane;
    PyObject *routes, *lanes, *parts, *inflight, *synth;
    if (!PyArg_ParseTuple(args, "iO!iO!O!O!O!:configure", &gen, &PyDict_Type, &routes, &deflane,
                          &PyList_Type, &lanes, &PyDict_Type, &parts, &PyDict_Type, &inflight,
                          &PyDict_Type, &synth))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(lanes);
    if (n > LANES_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many lanes");
        return NULL;
    }
    clear_lanes(L);
    for (int k = 0; k < EP_MAX; k++)
        L->eps[k].mark = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        int family, port, flags;
        unsigned scope;
        const char *packed, *ifname;
        Py_ssize_t plen, iflen;
        PyObject *tag;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(lanes, k), "iy#iIy#iO:lane", &family, &packed,
                              &plen, &port, &scope, &ifname, &iflen, &flags, &tag))
            return NULL;
        int ep = endpoint_for(L, family, packed, plen, port, scope, ifname, iflen);
        if (ep < 0) {
            PyErr_SetString(PyExc_ValueError, "bad server address or interface, or too many");
            return NULL;
        }
        LaneDef *ld = &L->lanes[k];
        memset(ld, 0, sizeof *ld);
        ld->ep = ep;
        ld->flags = flags;
        ld->tag = Py_NewRef(tag);
        L->nlanes = (int)k + 1;
    }
    for (int k = 0; k < EP_MAX; k++) { /* endpoints no lane uses any more */
        Endpoint *e = &L->eps[k];
        if (e->used && !e->mark) {
            if (e->cur >= 0)
                sock_retire(L, e->cur);
            for (int s = 0; s < SOCK_MAX; s++) /* its sockets keep their attempts; the slot goes */
                if (L->socks[s].fd >= 0 && L->socks[s].ep == k) {
                    L->socks[s].ep = -1;
                    L->socks[s].retired = 1;
                }
            e->used = 0;
        }
    }
    Py_XSETREF(L->routes, Py_NewRef(routes));
    Py_XSETREF(L->parts, Py_NewRef(parts));
    Py_XSETREF(L->inflight, Py_NewRef(inflight));
    Py_XSETREF(L->synth, Py_NewRef(synth));
    L->gen = gen;
    L->deflane = deflane;
    L->enabled = 1;
    Py_RETURN_NONE;
}

/* tune(timeout, total_timeout, edns_size, limit, per_port): the settings a reload changed; ``limit``
 * (attempts in flight) is capped at the capacity the lane was made with. Attempts already
 * out keep the deadlines they were given. */
static PyObject *
Lane_tune(Lane *L, PyObject *args)
{
    double timeout, total_timeout;
    int edns_size, limit, per_port;
    if (!PyArg_ParseTuple(args, "ddiii:tune", &timeout, &total_timeout, &edns_size, &limit,
                          &per_port))
        return NULL;
    if (timeout <= 0 || edns_size < 0 || edns_size > 65535 || limit < 0 || per_port < 1) {
        PyErr_SetString(PyExc_ValueError, "bad Lane settings");
        return NULL;
    }
    L->timeout = timeout;
    L->total_timeout = total_timeout < timeout ? timeout : total_timeout;
    L->edns_size = edns_size;
    L->limit = limit < L->cap ? limit : L->cap;
    L->per_port = (unsigned)per_port;
    Py_RETURN_NONE;
}

static PyObject *
Lane_disable(Lane *L, PyObject *Py_UNUSED(ignored))
{
    L->enabled = 0;
    Py_RETURN_NONE;
}

static PyObject *
Lane_drain(Lane *L, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(L->nlanes);
    if (out == NULL)
        return NULL;
    for (int k = 0; k < L->nlanes; k++) {
        LaneDef *ld = &L->lanes[k];
        PyObject *b = PyTuple_New(L->nbounds + 1);
        if (b == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        for (int j = 0; j <= L->nbounds; j++)
            PyTuple_SET_ITEM(b, j, PyLong_FromLong(ld->buckets[j]));
        PyObject *t = Py_BuildValue("(llNd)", ld->fwd, ld->done, b, ld->rtt_sum);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, k, t);
        ld->fwd = ld->done = 0;
        ld->rtt_sum = 0;
        memset(ld->buckets, 0, sizeof ld->buckets);
    }
    return out;
}

static PyObject *
Lane_counters(Lane *L, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sl,sl,sl,sl,sl,sl,sl,sl,si,si}", "forwarded", L->c_forwarded, "answered",
                         L->c_answered, "handoffs", L->c_handoffs, "expired", L->c_expired,
                         "ignored", L->c_ignored, "send_errors", L->c_send_errors,
                         "client_errors", L->c_client_errors, "socket_errors", L->c_socket_errors,
                         "pending", L->npend - L->nzombie, "late_waiting", L->nzombie, "sockets",
                         L->nsocks);
}

static PyObject *
Lane_fileno(Lane *L, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(L->epfd);
}

static void
lane_close(Lane *L)
{
    for (int i = 0; i < L->cap; i++)
        if (L->pend && L->pend[i].used)
            pend_free(L, i);
    for (int s = 0; s < SOCK_MAX; s++)
        sock_close(L, s);
    for (int k = 0; k < EP_MAX; k++)
        L->eps[k].used = 0;
    clear_lanes(L);
    if (L->epfd >= 0) {
        close(L->epfd);
        L->epfd = -1;
    }
    if (L->evfd >= 0) {
        close(L->evfd);
        L->evfd = -1;
    }
    L->nfailed = 0;
}

static PyObject *
Lane_close(Lane *L, PyObject *Py_UNUSED(ignored))
{
    lane_close(L);
    Py_RETURN_NONE;
}

static PyObject *
Lane_pending(Lane *L, void *Py_UNUSED(c))
{
    return PyLong_FromLong(L->npend - L->nzombie);
}

static PyObject *
Lane_waiting(Lane *L, void *Py_UNUSED(c))
{
    return PyLong_FromLong(L->nzombie);
}

static int
Lane_init(Lane *L, PyObject *args, PyObject *kwds)
{
    static char *kw[] = {"capacity", "per_port", "timeout", "edns_size", "rtt_bounds",
                         "total_timeout", NULL};
    int cap, per_port, edns_size;
    double timeout, total_timeout = -1.0;
    PyObject *bounds;
    if (L->pend != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Lane already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iidiO!|d:Lane", kw, &cap, &per_port, &timeout,
                                     &edns_size, &PyTuple_Type, &bounds, &total_timeout))
        return -1;
    if (cap < 1 || cap > 65536 || per_port < 1 || edns_size < 0 || edns_size > 65535
        || PyTuple_GET_SIZE(bounds) > NBUCKETS_MAX) {
        PyErr_SetString(PyExc_ValueError, "bad Lane parameters");
        return -1;
    }
    L->nbounds = (int)PyTuple_GET_SIZE(bounds);
    for (int j = 0; j < L->nbounds; j++) {
        L->bounds[j] = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, j));
        if (L->bounds[j] == -1.0 && PyErr_Occurred())
            return -1;
    }
    unsigned hcap = 16;
    while (hcap < 2u * (unsigned)cap)
        hcap <<= 1;
    L->pend = PyMem_RawCalloc((size_t)cap, sizeof(Pending));
    L->freelist = PyMem_RawMalloc((size_t)cap * sizeof(int));
    L->hash = PyMem_RawMalloc((size_t)hcap * sizeof(int));
    L->questions = PyDict_New();
    if (!L->pend || !L->freelist || !L->hash || !L->questions) {
        PyErr_NoMemory();
        return -1;
    }
    for (unsigned h = 0; h < hcap; h++)
        L->hash[h] = -1;
    L->hmask = hcap - 1;
    L->cap = L->limit = cap;
    for (int i = 0; i < cap; i++)
        L->freelist[i] = cap - 1 - i;
    L->nfree = cap;
    L->per_port = (unsigned)per_port;
    L->timeout = timeout;
    L->total_timeout = total_timeout < timeout ? timeout : total_timeout;
    L->edns_size = edns_size;
    L->deflane = -1;
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    L->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = SOCK_MAX};
    if (L->epfd < 0 || L->evfd < 0 || epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->evfd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *
Lane_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    Lane *L = (Lane *)type->tp_alloc(type, 0);
    if (L != NULL) {
        L->epfd = L->evfd = -1;
        for (int s = 0; s < SOCK_MAX; s++)
            L->socks[s].fd = -1;
    }
    return (PyObject *)L;
}

static void
Lane_dealloc(Lane *L)
{
    lane_close(L);
    Py_CLEAR(L->routes);
    Py_CLEAR(L->parts);
    Py_CLEAR(L->inflight);
    Py_CLEAR(L->synth);
    Py_CLEAR(L->questions);
    PyMem_RawFree(L->pend);
    PyMem_RawFree(L->freelist);
    PyMem_RawFree(L->hash);
    Py_TYPE(L)->tp_free((PyObject *)L);
}

static PyMethodDef Lane_methods[] = {
    {"configure", (PyCFunction)Lane_configure, METH_VARARGS, "Install a lane table."},
    {"tune", (PyCFunction)Lane_tune, METH_VARARGS,
     "tune(timeout, total_timeout, edns_size, limit, per_port): settings after a reload."},
    {"disable", (PyCFunction)Lane_disable, METH_NOARGS, "Take no new queries."},
    {"poll", (PyCFunction)Lane_poll, METH_NOARGS, "Read replies; returns the handoffs."},
    {"expire", (PyCFunction)Lane_expire, METH_O, "Timed-out attempts, as handoffs."},
    {"drain", (PyCFunction)Lane_drain, METH_NOARGS, "Per-lane counts and RTTs; reset."},
    {"counters", (PyCFunction)Lane_counters, METH_NOARGS, "Totals."},
    {"fileno", (PyCFunction)Lane_fileno, METH_NOARGS, "The epoll descriptor."},
    {"close", (PyCFunction)Lane_close, METH_NOARGS, "Close every socket."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Lane_getset[] = {
    {"pending", (getter)Lane_pending, NULL, "attempts in flight", NULL},
    {"waiting", (getter)Lane_waiting, NULL, "timed-out attempts kept for a late answer", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mifdns.aio._udpbatch.Lane",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The miss lane: plain first UDP attempts forwarded in C (see _lane.c).",
    .tp_new = Lane_new,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_methods = Lane_methods,
    .tp_getset = Lane_getset,
};

int lane_module_init(PyObject *m);

int
lane_module_init(PyObject *m)
{
    s_entries = PyUnicode_InternFromString("entries");
    s_nx = PyUnicode_InternFromString("nx");
    if (s_entries == NULL || s_nx == NULL || PyType_Ready(&LaneType) < 0)
        return -1;
    Py_INCREF(&LaneType);
    return PyModule_AddObject(m, "Lane", (PyObject *)&LaneType);
}
