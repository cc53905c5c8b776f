/* hub._fanout: the fan-out's send loop, compiled (optional; hub.connection falls back to Python).
 *
 * send_each(conns, wire, seq) does what hub.connection._send_each_python does, socket by socket
 * and with the same checks, without the interpreter's cost per socket: on a large room the
 * flush spends most of its time in send(2), and what is left is this loop (figures:
 * docs/performance.md).
 *
 * For each connection of the room: a socket whose lean path is on (conn.send_now, a bound
 * DirectWriter method) and whose snapshot is older than the frame gets the frame now, when
 * nothing stands in its way; the bytes the kernel did not take wait in the transport, in
 * order. Every other socket is returned, for the fully checked path (push_counts).
 *
 * "Nothing stands in its way" is clear() below, the C twin of DirectWriter._send_now's checks:
 * nothing buffered ahead in the transport, then DirectWriter.ready(), the one rule in Python for
 * a direct write (flow control not holding writes back, no close frame sent, the WebSocket
 * OPEN, the transport not closing). tests/test_send_loop.py holds the two side by side.
 *
 * The checks read what Python reads: Connection, DirectWriter, HubWebSocketProtocol, Watched
 * and the protocol's writable flag (hub.transport._Flag) at their slots' offsets (setup() hands
 * this module the five classes, websockets' OPEN state and the attribute its state is read by;
 * DirectWriter keeps the transport and asyncio 3.11's write buffer itself), the rest of the
 * transport's and the websockets connection's by name. Any transport but asyncio's own is
 * asked its buffer's size only after a write went through its Watched
 * (hub.transport.Watched). A connection of another class, or whose send_now is not its
 * DirectWriter's, has its send_now called as Python would call it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <sys/socket.h>

static PyObject *open_state; /* websockets.protocol.State.OPEN */
/* The websockets connection's state as any other transport's check reads it: "_state" where
 * Protocol.state is a property over it (no property call per socket), else "state". */
static PyObject *s_state;

/* Connection, DirectWriter, HubWebSocketProtocol, Watched and _Flag keep what this loop reads of them
 * in __slots__: read at their offsets (an object of exactly that class only), without a look-up
 * by name per socket. */
static PyTypeObject *conn_type, *writer_type, *proto_type, *watch_type, *flag_type;
static Py_ssize_t off_send_now, off_snapshot_seq, off_writer, off_writer_send_now, off_transport_,
    off_raw, off_proto, off_conn, off_fd, off_buffer, off_watch, off_close_sent, off_writable,
    off_wrote, off_set;

/* The value of an object's slot at this offset, borrowed (NULL: unset). */
#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* The offset of a __slots__ member of ``type`` (-1 with an exception set if it is not one). */
static Py_ssize_t slot_offset(PyTypeObject *type, const char *name) {
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name);
    if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, name);
        return -1;
    }
    PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
    if (member->type != T_OBJECT_EX && member->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, name);
        return -1;
    }
    return member->offset;
}

static PyObject *s_send_now, *s_snapshot_seq, *s_buffer, *s_closing, *s_close_sent, *s_state_,
    *s_writable, *s_is_set, *s_get_write_buffer_size, *s_is_closing, *s_write;

/* Whether ``value`` (a new reference, taken; NULL: an error was raised) is true: 1 yes, 0 no,
 * -1 error. */
static int truth(PyObject *value) {
    if (value == NULL) return -1;
    int answer = PyObject_IsTrue(value);
    Py_DECREF(value);
    return answer;
}

/* Whether the transport may hold unsent bytes, asked of it unless its Watched (``watch``, a
 * borrowed reference, or NULL) says nothing was written since it was last seen empty: 1 yes,
 * 0 no, -1 error. */
static int buffered(PyObject *transport, PyObject *watch) {
    PyObject **wrote = watch != NULL && Py_TYPE(watch) == watch_type
                           ? (PyObject **)((char *)watch + off_wrote)
                           : NULL;
    if (wrote != NULL && *wrote == Py_False) return 0;
    int full = truth(PyObject_CallMethodNoArgs(transport, s_get_write_buffer_size));
    if (full == 0 && wrote != NULL) Py_XSETREF(*wrote, Py_NewRef(Py_False)); /* seen empty */
    return full;
}

/* Whether flow control lets writes through: the protocol's ``writable`` (hub.transport's _Flag
 * read at its slot, any other asked ``is_set()``): 1 yes, 0 no, -1 error. */
static int writable(PyObject *proto) {
    PyObject *flag = Py_TYPE(proto) == proto_type ? SLOT(proto, off_writable) : NULL;
    if (flag != NULL)
        Py_INCREF(flag);
    else
        flag = PyObject_GetAttr(proto, s_writable);
    if (flag == NULL) return -1;
    int answer;
    PyObject *set = Py_TYPE(flag) == flag_type ? SLOT(flag, off_set) : NULL;
    if (set != NULL)
        answer = PyObject_IsTrue(set);
    else
        answer = truth(PyObject_CallMethodNoArgs(flag, s_is_set));
    Py_DECREF(flag);
    return answer;
}

/* Whether nothing stands in the way of a send(2) on this transport now, as
 * DirectWriter._send_now decides: nothing buffered ahead, then DirectWriter.ready()'s rule
 * (writable, no close sent, the WebSocket OPEN, the transport not closing; on asyncio's own
 * transport its ``_closing``, what its is_closing() returns): 1 yes, 0 no, -1 error. */
static int clear(PyObject *transport, int raw, PyObject *buffer, PyObject *watch,
                 PyObject *proto, PyObject *conn) {
    int blocked;
    if (raw) {
        if (buffer != NULL && PyByteArray_CheckExact(buffer))
            blocked = PyByteArray_GET_SIZE(buffer) > 0; /* the transport's own, DirectWriter */
        else
            blocked = truth(PyObject_GetAttr(transport, s_buffer));
    } else {
        blocked = buffered(transport, watch);
    }
    if (blocked == 0) {
        int open = writable(proto);
        blocked = open < 0 ? -1 : !open;
    }
    if (blocked == 0) {
        PyObject *closing = Py_TYPE(proto) == proto_type ? SLOT(proto, off_close_sent) : NULL;
        blocked = closing != NULL ? PyObject_IsTrue(closing)
                                  : truth(PyObject_GetAttr(proto, s_close_sent));
    }
    if (blocked == 0) {
        PyObject *state = PyObject_GetAttr(conn, raw ? s_state_ : s_state);
        if (state == NULL) return -1;
        blocked = state != open_state;
        Py_DECREF(state);
    }
    if (blocked == 0)
        blocked = raw ? truth(PyObject_GetAttr(transport, s_closing))
                      : truth(PyObject_CallMethodNoArgs(transport, s_is_closing));
    if (blocked != 0) return blocked < 0 ? -1 : 0;
    return 1;
}

/* Send the frame through a DirectWriter: 1 sent (the rest, if any, queued in the transport in
 * order), 0 nothing sent (the caller takes the checked path), -1 error, -2 not for this loop
 * (no descriptor, under TLS: the Python method decides). */
static int writer_send(PyObject *writer, const char *buf, Py_ssize_t len) {
    PyObject *transport = SLOT(writer, off_transport_), *raw_flag = SLOT(writer, off_raw);
    PyObject *proto = SLOT(writer, off_proto), *conn = SLOT(writer, off_conn);
    PyObject *fd_obj = SLOT(writer, off_fd);
    if (transport == NULL || raw_flag == NULL || proto == NULL || conn == NULL || fd_obj == NULL)
        return -2;
    long fd = PyLong_AsLong(fd_obj);
    if (fd == -1 && PyErr_Occurred()) return -1;
    if (fd < 0) return -2;
    int raw = raw_flag == Py_True; /* asyncio's own transport: its attributes, else methods */
    PyObject *watch = SLOT(writer, off_watch);
    if (watch == Py_None) watch = NULL;
    Py_INCREF(transport);
    Py_XINCREF(watch);
    int sent = clear(transport, raw, SLOT(writer, off_buffer), watch, proto, conn);
    if (sent == 1) {
        /* the transport is open, so the descriptor is still this connection's */
        ssize_t n;
        do {
            n = send((int)fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            sent = 0; /* full (EAGAIN) or broken: the transport's own write handles it */
        } else if (n < len) { /* the rest waits in the transport, in order (noted by Watched) */
            PyObject *rest = PyBytes_FromStringAndSize(buf + n, len - n);
            PyObject *target = watch != NULL ? watch : transport;
            PyObject *done = rest == NULL ? NULL : PyObject_CallMethodOneArg(target, s_write, rest);
            Py_XDECREF(rest);
            if (done == NULL) sent = -1;
            Py_XDECREF(done);
        }
    }
    Py_XDECREF(watch);
    Py_DECREF(transport);
    return sent;
}

/* 1 sent, 0 take the checked path, -1 error. */
static int send_one(PyObject *conn, PyObject *wire, const char *buf, Py_ssize_t len,
                    long long seq) {
    PyObject *send_now, *snapshot_seq, *writer = NULL;
    if (Py_TYPE(conn) == conn_type) {
        send_now = SLOT(conn, off_send_now);
        snapshot_seq = SLOT(conn, off_snapshot_seq);
        writer = SLOT(conn, off_writer);
        if (send_now == NULL || snapshot_seq == NULL) return 0;
        Py_INCREF(send_now);
        Py_INCREF(snapshot_seq);
    } else {
        send_now = PyObject_GetAttr(conn, s_send_now);
        if (send_now == NULL) return -1;
        snapshot_seq = PyObject_GetAttr(conn, s_snapshot_seq);
        if (snapshot_seq == NULL) {
            Py_DECREF(send_now);
            return -1;
        }
    }
    int sent = 0;
    long long snapshot = PyLong_AsLongLong(snapshot_seq);
    if (snapshot == -1 && PyErr_Occurred()) {
        sent = -1;
    } else if (send_now != Py_None && seq > snapshot) {
        sent = -2;
        if (writer != NULL && Py_TYPE(writer) == writer_type &&
            SLOT(writer, off_writer_send_now) == send_now)
            sent = writer_send(writer, buf, len);
        if (sent == -2) { /* not a path this loop knows: call it */
            PyObject *result = PyObject_CallOneArg(send_now, wire);
            sent = result == NULL ? -1 : PyObject_IsTrue(result);
            Py_XDECREF(result);
        }
    }
    Py_DECREF(snapshot_seq);
    Py_DECREF(send_now);
    return sent;
}

static PyObject *send_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "send_each(conns, wire, seq) takes 3 arguments");
        return NULL;
    }
    if (conn_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "hub._fanout.setup() was not called");
        return NULL;
    }
    PyObject *wire = args[1];
    char *buf;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(wire, &buf, &len) < 0) return NULL;
    long long seq = PyLong_AsLongLong(args[2]);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    PyObject *slow = PyList_New(0);
    if (slow == NULL) return NULL;
    PyObject *it = PyObject_GetIter(args[0]);
    if (it == NULL) goto fail;
    PyObject *conn;
    while ((conn = PyIter_Next(it)) != NULL) {
        int sent = send_one(conn, wire, buf, len, seq);
        if (sent == 0 && PyList_Append(slow, conn) < 0) sent = -1;
        Py_DECREF(conn);
        if (sent < 0) {
            Py_DECREF(it);
            goto fail;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) goto fail;
    return slow;
fail:
    Py_DECREF(slow);
    return NULL;
}

static PyObject *setup(PyObject *module, PyObject *args) {
    PyObject *conn, *writer, *proto, *watch, *flag, *open, *state;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OU", &PyType_Type, &conn, &PyType_Type, &writer,
                          &PyType_Type, &proto, &PyType_Type, &watch, &PyType_Type, &flag, &open,
                          &state))
        return NULL;
    PyTypeObject *ct = (PyTypeObject *)conn, *wt = (PyTypeObject *)writer;
    PyTypeObject *pt = (PyTypeObject *)proto, *st = (PyTypeObject *)watch;
    PyTypeObject *ft = (PyTypeObject *)flag;
    struct {
        Py_ssize_t *off;
        PyTypeObject *type;
        const char *name;
    } slots[] = {
        {&off_send_now, ct, "send_now"}, {&off_snapshot_seq, ct, "snapshot_seq"},
        {&off_writer, ct, "writer"},     {&off_writer_send_now, wt, "send_now"},
        {&off_transport_, wt, "_transport"}, {&off_raw, wt, "_raw"},
        {&off_proto, wt, "_proto"},
        {&off_conn, wt, "_conn"},        {&off_fd, wt, "_fd"},
        {&off_buffer, wt, "_buffer"},    {&off_watch, wt, "_watch"},
        {&off_close_sent, pt, "close_sent"}, {&off_writable, pt, "writable"},
        {&off_wrote, st, "wrote"},       {&off_set, ft, "_set"},
    };
    for (size_t i = 0; i < sizeof slots / sizeof slots[0]; i++) {
        Py_ssize_t off = slot_offset(slots[i].type, slots[i].name);
        if (off < 0) return NULL;
        *slots[i].off = off;
    }
    Py_XSETREF(conn_type, (PyTypeObject *)Py_NewRef(conn));
    Py_XSETREF(writer_type, (PyTypeObject *)Py_NewRef(writer));
    Py_XSETREF(proto_type, (PyTypeObject *)Py_NewRef(proto));
    Py_XSETREF(watch_type, (PyTypeObject *)Py_NewRef(watch));
    Py_XSETREF(flag_type, (PyTypeObject *)Py_NewRef(flag));
    Py_XSETREF(open_state, Py_NewRef(open));
    Py_INCREF(state);
    PyUnicode_InternInPlace(&state);
    Py_XSETREF(s_state, state);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"send_each", (PyCFunction)(void (*)(void))send_each, METH_FASTCALL,
     "send_each(conns, wire, seq) -> list: send the frame on every lean path; the rest."},
    {"setup", setup, METH_VARARGS,
     "setup(Connection, DirectWriter, HubWebSocketProtocol, Watched, Flag, OPEN, state): the "
     "classes whose slots this loop reads, websockets' OPEN and the name its state is read by."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "hub._fanout", "The fan-out's send loop, compiled.", -1, methods,
};

PyMODINIT_FUNC PyInit__fanout(void) {
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_send_now, "send_now"},     {&s_snapshot_seq, "snapshot_seq"},
        {&s_buffer, "_buffer"},        {&s_closing, "_closing"},
        {&s_close_sent, "close_sent"}, {&s_state_, "_state"},
        {&s_writable, "writable"},     {&s_is_set, "is_set"},
        {&s_get_write_buffer_size, "get_write_buffer_size"},
        {&s_is_closing, "is_closing"}, {&s_write, "write"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].name);
        if (*names[i].slot == NULL) return NULL;
    }
    return PyModule_Create(&module_def);
}
