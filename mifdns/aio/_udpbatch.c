/* _udpbatch: one UDP listener batch in two system calls (recvmmsg, sendmmsg).
 *
 * Part of the asyncio adapter (mifdns/aio/listener.py), not of the core: it knows sockets and
 * a dict, nothing of DNS beyond "the first two bytes are the ID". CPython's socket module has
 * no recvmmsg/sendmmsg, and on a cache hit the two system calls per datagram plus the Python
 * around them are most of the cost (docs/performance.md).
 *
 * serve(fd, family, ready, now, slow, batch[, pktinfo]) -> (received, replayed, sent, send_errors,
 *                                                           aged)
 *
 *   fd      a non-blocking UDP socket
 *   family  socket.AF_INET or socket.AF_INET6 (how a source address is given to ``slow``)
 *   ready   None, or a dict: query bytes after the ID -> (reply bytes after the ID, until) or
 *           (reply, until, stored, expires, offsets, values); the resolver's ready table
 *           (Resolver.ready_table, see mifdns/core/memo.py), valid for this batch
 *   now     the loop's time for this batch
 *   slow    called as slow(datagram, address) for every datagram not answered from ``ready``;
 *           returns the reply (bytes) or None; must not raise (an exception is reported as
 *           unraisable and the datagram gets no reply)
 *   batch   datagrams to read at most (1..BATCH_MAX)
 *   pktinfo true for a socket bound to a wildcard address (0.0.0.0, ::) with IP_PKTINFO /
 *           IPV6_RECVPKTINFO set: each reply leaves from the address its query was sent to
 *           (without it the kernel picks a source, and a client that asked another address of
 *           a multi-address host drops the reply). ``slow`` is then called as
 *           slow(datagram, address, source) with ``source`` the in_pktinfo / in6_pktinfo bytes
 *           to send a later reply with (IP_PKTINFO / IPV6_PKTINFO ancillary data), or None if
 *           the kernel gave none.
 *
 * One recvmmsg reads up to ``batch`` datagrams. A datagram whose bytes after the ID are in
 * ``ready`` with ``now`` before its "until" is answered with its own ID and the stored reply
 * (two iovecs, no copy of the reply). Past "until", a 6-tuple entry is *aged* if ``now`` is
 * before its "expires": with elapsed = int(now - stored), a copy of the reply gets
 * max(value - elapsed, 0) written as a 32-bit big-endian number at each offset (offsets count
 * from the start of the message, ID included; the core computed them and the values, so this
 * parses nothing), and "until" becomes min(expires, stored + elapsed + 1); the aged entry
 * replaces the old one in ``ready`` and answers. An offset outside the reply or a value outside
 * 0..2^32-1 is not aged. The others go through ``slow``. All replies of the batch leave in one
 * sendmmsg, each to the address its query came from, in order. A reply the kernel
 * refuses (e.g. EAGAIN with the send buffer full, EPERM from a firewall) is counted in
 * send_errors and skipped, as a failed sendto would be. A datagram larger than a slot
 * (65536 bytes, larger than any UDP datagram) cannot occur.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_lane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH_MAX 256
#define SLOT (65536)

static char *inbuf;                     /* BATCH_MAX slots of SLOT bytes (pages touched lazily) */
static struct mmsghdr inmsg[BATCH_MAX];
static struct iovec iniov[BATCH_MAX];
static struct sockaddr_storage inaddr[BATCH_MAX];

static struct mmsghdr outmsg[BATCH_MAX];
static struct iovec outiov[BATCH_MAX][2];

/* pktinfo: what the kernel says each datagram was sent to (in), and the ancillary data that
 * makes its reply leave from there (reply; replylen 0: none, the kernel picks the source) */
#define CTL_SPACE 128
static union { struct cmsghdr align; char buf[CTL_SPACE]; } inctl[BATCH_MAX], replyctl[BATCH_MAX];
static size_t replylen[BATCH_MAX];
static PyObject *outref[BATCH_MAX];     /* the bytes objects the out iovecs point into */
static int busy;

static PyObject *
address_of(const struct sockaddr_storage *ss, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (!inet_ntop(AF_INET, &a->sin_addr, host, sizeof host))
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        if (!inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host))
            return PyErr_SetFromErrno(PyExc_OSError);
        /* as socket.recvfrom gives it: (host, port, flowinfo, scope_id) */
        return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port),
                             (unsigned int)ntohl(a->sin6_flowinfo),
                             (unsigned int)a->sin6_scope_id);
    }
    PyErr_SetString(PyExc_OSError, "unexpected source address family");
    return NULL;
}

/* Out slot k: ``body`` (a bytes object whose reference the slot takes over), after the two
 * bytes at ``id`` if not NULL, to the address datagram i came from. */
static void
queue_reply(int k, PyObject *body, const char *id, int i)
{
    int n = 0;
    outref[k] = body;
    if (id != NULL) {
        outiov[k][n].iov_base = (void *)id;
        outiov[k][n++].iov_len = 2;
    }
    outiov[k][n].iov_base = PyBytes_AS_STRING(body);
    outiov[k][n++].iov_len = (size_t)PyBytes_GET_SIZE(body);
    memset(&outmsg[k].msg_hdr, 0, sizeof outmsg[k].msg_hdr);
    outmsg[k].msg_hdr.msg_iov = outiov[k];
    outmsg[k].msg_hdr.msg_iovlen = (size_t)n;
    outmsg[k].msg_hdr.msg_name = &inaddr[i];
    outmsg[k].msg_hdr.msg_namelen = inmsg[i].msg_hdr.msg_namelen;
    if (replylen[i]) {
        outmsg[k].msg_hdr.msg_control = replyctl[i].buf;
        outmsg[k].msg_hdr.msg_controllen = replylen[i];
    }
}

/* The ancillary data for datagram i's reply, from the pktinfo it came with: IPv4 sends from
 * the local address the kernel reports (ipi_spec_dst; the destination itself for unicast), any
 * interface (routing decides, as for any reply); IPv6 from the destination address on the
 * interface it arrived on (which a link-local destination needs). Returns the payload (the
 * pktinfo struct) and its length, or 0 if the datagram carried none. */
static size_t
reply_source(int i, const char **payload)
{
    struct msghdr *h = &inmsg[i].msg_hdr;
    replylen[i] = 0;
    if (h->msg_control == NULL || (h->msg_flags & MSG_CTRUNC))
        return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        struct cmsghdr *out = (struct cmsghdr *)replyctl[i].buf;
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO
            && c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            struct in_pktinfo got, send;
            memcpy(&got, CMSG_DATA(c), sizeof got);
            memset(&send, 0, sizeof send);
            send.ipi_spec_dst = got.ipi_spec_dst;
            out->cmsg_level = IPPROTO_IP;
            out->cmsg_type = IP_PKTINFO;
            out->cmsg_len = CMSG_LEN(sizeof send);
            memcpy(CMSG_DATA(out), &send, sizeof send);
            replylen[i] = CMSG_SPACE(sizeof send);
            *payload = (const char *)CMSG_DATA(out);
            return sizeof send;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO
            && c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            out->cmsg_level = IPPROTO_IPV6;
            out->cmsg_type = IPV6_PKTINFO;
            out->cmsg_len = CMSG_LEN(sizeof(struct in6_pktinfo));
            memcpy(CMSG_DATA(out), CMSG_DATA(c), sizeof(struct in6_pktinfo));
            replylen[i] = CMSG_SPACE(sizeof(struct in6_pktinfo));
            *payload = (const char *)CMSG_DATA(out);
            return sizeof(struct in6_pktinfo);
        }
    }
    return 0;
}

/* The aged copy of a 6-tuple ready entry (see the header), stored back into ``ready`` under
 * ``key``; a new reference to its reply, or NULL if the entry cannot be aged (not expired yet is
 * the caller's check; malformed parts or an offset outside the reply: NULL, no error set). */
static PyObject *
age(PyObject *ready, PyObject *key, PyObject *hit, double now)
{
    PyObject *tail = PyTuple_GET_ITEM(hit, 0);
    PyObject *stored_o = PyTuple_GET_ITEM(hit, 2), *expires_o = PyTuple_GET_ITEM(hit, 3);
    PyObject *offsets = PyTuple_GET_ITEM(hit, 4), *values = PyTuple_GET_ITEM(hit, 5);
    if (!PyBytes_CheckExact(tail) || !PyFloat_CheckExact(stored_o)
        || !PyFloat_CheckExact(expires_o) || !PyTuple_CheckExact(offsets)
        || !PyTuple_CheckExact(values) || PyTuple_GET_SIZE(offsets) != PyTuple_GET_SIZE(values))
        return NULL;
    double stored = PyFloat_AS_DOUBLE(stored_o), expires = PyFloat_AS_DOUBLE(expires_o);
    if (!(now < expires) || !(now - stored < 4294967296.0))
        return NULL; /* expired (the resolver decides), or no TTL could have lasted that long */
    long long elapsed = now > stored ? (long long)(now - stored) : 0;
    Py_ssize_t len = PyBytes_GET_SIZE(tail), n = PyTuple_GET_SIZE(offsets);
    PyObject *fresh = PyBytes_FromStringAndSize(PyBytes_AS_STRING(tail), len);
    if (fresh == NULL) {
        PyErr_Clear();
        return NULL;
    }
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(fresh);
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *o = PyTuple_GET_ITEM(offsets, j), *v = PyTuple_GET_ITEM(values, j);
        if (!PyLong_CheckExact(o) || !PyLong_CheckExact(v))
            goto bad;
        long long off = PyLong_AsLongLong(o);
        if (off == -1 && PyErr_Occurred())
            goto bad;
        long long value = PyLong_AsLongLong(v);
        if (value == -1 && PyErr_Occurred())
            goto bad;
        off -= 2; /* the stored reply starts after the ID */
        if (off < 0 || off > (long long)len - 4 || value < 0 || value > 0xFFFFFFFFLL)
            goto bad; /* outside the reply, or not a TTL: the resolver decides */
        value = value <= elapsed ? 0 : value - elapsed;
        buf[off] = (unsigned char)(value >> 24);
        buf[off + 1] = (unsigned char)(value >> 16);
        buf[off + 2] = (unsigned char)(value >> 8);
        buf[off + 3] = (unsigned char)value;
    }
    double until = stored + (double)elapsed + 1.0;
    if (until > expires)
        until = expires;
    PyObject *until_o = PyFloat_FromDouble(until);
    PyObject *entry = until_o == NULL ? NULL
        : PyTuple_Pack(6, fresh, until_o, stored_o, expires_o, offsets, values);
    Py_XDECREF(until_o);
    if (entry == NULL || PyDict_SetItem(ready, key, entry) < 0) {
        Py_XDECREF(entry);
        goto bad;
    }
    Py_DECREF(entry);
    return fresh;
bad:
    PyErr_Clear();
    Py_DECREF(fresh);
    return NULL;
}

static PyObject *
serve(PyObject *Py_UNUSED(self), PyObject *args)
{
    int fd, family, batch, pktinfo = 0, max_udp = 0;
    double now;
    PyObject *ready, *slow, *lane = Py_None;
    if (!PyArg_ParseTuple(args, "iiOdOi|pOi:serve", &fd, &family, &ready, &now, &slow, &batch,
                          &pktinfo, &lane, &max_udp))
        return NULL;
    if (lane != Py_None && !PyObject_TypeCheck(lane, &LaneType)) {
        PyErr_SetString(PyExc_TypeError, "lane must be a Lane or None");
        return NULL;
    }
    if (pktinfo)
        lane = Py_None; /* the lane replies without pktinfo: wildcard listeners keep out */
    if (ready != Py_None && !PyDict_Check(ready)) {
        PyErr_SetString(PyExc_TypeError, "ready must be a dict or None");
        return NULL;
    }
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "slow must be callable");
        return NULL;
    }
    if (batch < 1)
        batch = 1;
    if (batch > BATCH_MAX)
        batch = BATCH_MAX;
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "serve() re-entered");
        return NULL;
    }
    if (inbuf == NULL) {
        inbuf = PyMem_RawMalloc((size_t)BATCH_MAX * SLOT);
        if (inbuf == NULL)
            return PyErr_NoMemory();
    }
    for (int i = 0; i < batch; i++) {
        iniov[i].iov_base = inbuf + (size_t)i * SLOT;
        iniov[i].iov_len = SLOT;
        memset(&inmsg[i].msg_hdr, 0, sizeof inmsg[i].msg_hdr);
        inmsg[i].msg_hdr.msg_iov = &iniov[i];
        inmsg[i].msg_hdr.msg_iovlen = 1;
        inmsg[i].msg_hdr.msg_name = &inaddr[i];
        inmsg[i].msg_hdr.msg_namelen = sizeof inaddr[i];
        if (pktinfo) {
            inmsg[i].msg_hdr.msg_control = inctl[i].buf;
            inmsg[i].msg_hdr.msg_controllen = sizeof inctl[i].buf;
        }
        inmsg[i].msg_len = 0;
    }
    int n, tries = 0;
    for (;;) {
        n = recvmmsg(fd, inmsg, (unsigned int)batch, MSG_DONTWAIT, NULL);
        if (n >= 0)
            break;
        n = 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
        /* EINTR, or an error queued on the socket (an ICMP error for an earlier reply): the
         * call consumed it; read on, a bounded number of times */
        if (++tries >= BATCH_MAX)
            break;
    }
    busy = 1;
    int nout = 0, oom = 0;
    long replayed = 0, aged = 0;
    for (int i = 0; i < n; i++) {
        char *data = iniov[i].iov_base;
        unsigned int len = inmsg[i].msg_len;
        const char *source = NULL;
        size_t source_len = pktinfo ? reply_source(i, &source) : (replylen[i] = 0);
        if (ready != Py_None && len >= 12) {
            PyObject *key = PyBytes_FromStringAndSize(data + 2, (Py_ssize_t)len - 2);
            if (key == NULL) {
                oom = 1;
                break;
            }
            PyObject *hit = PyDict_GetItemWithError(ready, key); /* borrowed */
            if (hit == NULL && PyErr_Occurred()) {
                PyErr_WriteUnraisable(ready);
            } else if (hit != NULL && PyTuple_CheckExact(hit)
                       && (PyTuple_GET_SIZE(hit) == 2 || PyTuple_GET_SIZE(hit) == 6)) {
                PyObject *tail = PyTuple_GET_ITEM(hit, 0);
                PyObject *until = PyTuple_GET_ITEM(hit, 1);
                if (PyBytes_CheckExact(tail) && PyFloat_CheckExact(until)
                    && now < PyFloat_AS_DOUBLE(until)) {
                    Py_DECREF(key);
                    Py_INCREF(tail);
                    queue_reply(nout++, tail, data, i); /* the query's ID, the stored reply */
                    replayed++;
                    continue;
                }
                if (PyTuple_GET_SIZE(hit) == 6) {
                    /* held: building the new entry may run a collection, and so Python code
                     * that could change ``ready`` while age() still reads ``hit`` */
                    Py_INCREF(hit);
                    PyObject *fresh = age(ready, key, hit, now);
                    Py_DECREF(hit);
                    if (fresh != NULL) {
                        Py_DECREF(key);
                        queue_reply(nout++, fresh, data, i);
                        replayed++;
                        aged++;
                        continue;
                    }
                }
            }
            Py_DECREF(key);
        }
        if (lane != Py_None
            && lane_try(lane, fd, (const unsigned char *)data, len, &inaddr[i],
                        inmsg[i].msg_hdr.msg_namelen, max_udp))
            continue; /* forwarded by the miss lane: its reply comes from Lane.poll */
        PyObject *dgram = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        if (dgram == NULL) {
            oom = 1;
            break;
        }
        PyObject *addr = address_of(&inaddr[i], inmsg[i].msg_hdr.msg_namelen);
        if (addr == NULL) {
            Py_DECREF(dgram);
            PyErr_WriteUnraisable(slow);
            continue;
        }
        PyObject *reply;
        if (pktinfo) {
            PyObject *src = source_len
                ? PyBytes_FromStringAndSize(source, (Py_ssize_t)source_len) : Py_NewRef(Py_None);
            if (src == NULL) {
                Py_DECREF(dgram);
                Py_DECREF(addr);
                oom = 1;
                break;
            }
            reply = PyObject_CallFunctionObjArgs(slow, dgram, addr, src, NULL);
            Py_DECREF(src);
        } else {
            reply = PyObject_CallFunctionObjArgs(slow, dgram, addr, NULL);
        }
        Py_DECREF(dgram);
        Py_DECREF(addr);
        if (reply == NULL) {
            PyErr_WriteUnraisable(slow);
            continue;
        }
        if (!PyBytes_Check(reply)) {
            Py_DECREF(reply); /* None: answered later, through the outbox */
            continue;
        }
        queue_reply(nout++, reply, NULL, i);
    }
    long sent = 0, errors = 0;
    int off = 0;
    while (off < nout) {
        int r = sendmmsg(fd, outmsg + off, (unsigned int)(nout - off), MSG_DONTWAIT);
        if (r > 0) {
            off += r;
            sent += r;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else { /* the reply at ``off`` was refused: skip it, send the rest */
            off++;
            errors++;
        }
    }
    for (int i = 0; i < nout; i++)
        Py_DECREF(outref[i]);
    busy = 0;
    if (oom)
        return NULL; /* MemoryError building a bytes object: the replies so far went out */
    return Py_BuildValue("(illll)", n, replayed, sent, errors, aged);
}

/* age(hit, now): what serve() stores back for a 6-tuple ready entry ``hit`` past its "valid
 * until" at ``now``, or None if it would go to ``slow`` instead. For the differential test
 * against mifdns.core.memo.age (the Python loop's). */
static PyObject *
age_entry(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *hit;
    double now;
    if (!PyArg_ParseTuple(args, "O!d:age", &PyTuple_Type, &hit, &now))
        return NULL;
    if (PyTuple_GET_SIZE(hit) != 6)
        Py_RETURN_NONE;
    PyObject *scratch = PyDict_New();
    if (scratch == NULL)
        return NULL;
    Py_INCREF(hit);
    PyObject *fresh = age(scratch, Py_None, hit, now);
    Py_DECREF(hit);
    PyObject *entry = NULL;
    if (fresh != NULL) {
        Py_DECREF(fresh);
        entry = PyDict_GetItemWithError(scratch, Py_None); /* borrowed */
        Py_XINCREF(entry);
    }
    Py_DECREF(scratch);
    if (entry == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return entry;
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, "Read, answer and reply to one batch of UDP datagrams."},
    {"age", age_entry, METH_VARARGS, "The aged copy of a 6-tuple ready entry, or None."},
    {"lane_parse", lane_parse_hook, METH_VARARGS, "The miss lane's query parser (tests)."},
    {"lane_answer", lane_answer_hook, METH_VARARGS, "The miss lane's reply check (tests)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_udpbatch",
    "One UDP listener batch in two system calls (recvmmsg, sendmmsg).", -1, methods,
};

int lane_module_init(PyObject *m); /* _lane.c */

PyMODINIT_FUNC
PyInit__udpbatch(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL
        && (PyModule_AddIntConstant(m, "BATCH_MAX", BATCH_MAX) < 0 || lane_module_init(m) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
