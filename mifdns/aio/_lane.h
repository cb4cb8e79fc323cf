/* The miss lane (_lane.c): the first UDP attempt of a plain query, forwarded in C.
 * Shared between _udpbatch.c (which offers it each datagram the ready table did not answer)
 * and _lane.c. See _lane.c for the contract. */
#ifndef MIFDNS_LANE_H
#define MIFDNS_LANE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/socket.h>

extern PyTypeObject LaneType;

/* 1: ``data`` (a client's query from listener ``lfd``, source ``addr``) went upstream through
 * the lane, its reply comes later; 0: not for the lane (the caller asks the resolver). */
int lane_try(PyObject *lane, int lfd, const unsigned char *data, unsigned int len,
             const struct sockaddr_storage *addr, socklen_t alen, int max_udp);

/* test hooks (see _lane.c) */
PyObject *lane_parse_hook(PyObject *m, PyObject *args);
PyObject *lane_answer_hook(PyObject *m, PyObject *args);

#endif
