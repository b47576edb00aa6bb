/* npipes._speedups: C twins of the v1 frame fast paths in npipes/_frame.py.
 *
 * encode_small, encode_small_many, parse_frame and parse_frames return exactly
 * what the pure-Python functions of the same names return (same values and
 * types, None included) for every valid-typed input; tests/test_speedups.py
 * and the fuzz harness compare the two. Where a frame is unusual they decline
 * (return None) and the general Python code runs, so every error message of
 * the protocol comes from one implementation.
 *
 * Frame header (docs/protocol.md), 16 bytes, little-endian:
 *   "NP", version u8 (1), flags u8 (CRC=1, TEXT=2), reserved u32 (0), length u64;
 *   then the payload, then (CRC flag) the CRC-32 of the payload as a u32.
 * Integers are read and written byte by byte: no alignment or endianness
 * assumptions (big-endian hosts, MSVC and mingw build it unchanged).
 * CRC-32 is computed by the Python callable given to configure() (the one
 * npipes._crc picked: zlib, zlib-ng or isal), on a bytes object.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define HEADER_SIZE 16
#define TRAILER_SIZE 4
#define SMALL_FRAME 16384
#define FLAG_CRC 0x01
#define FLAG_TEXT 0x02
#define KNOWN_FLAGS (FLAG_CRC | FLAG_TEXT)

static PyObject *crc_func = NULL; /* owned; set by configure() */

static uint64_t load_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t load_u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void store_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void store_header(unsigned char *p, int flags, uint64_t length) {
    p[0] = 'N';
    p[1] = 'P';
    p[2] = 1;
    p[3] = (unsigned char)flags;
    p[4] = p[5] = p[6] = p[7] = 0;
    for (int i = 0; i < 8; i++) p[8 + i] = (unsigned char)(length >> (8 * i));
}

/* max_size (None or int) as a limit: *limit = the largest length allowed.
 * None, or above what a u64 length can reach, is no limit (UINT64_MAX);
 * a negative int allows nothing (*none_allowed = 1), as `length > max_size`
 * is then always true. Returns -1 with TypeError for another type. */
static int get_limit(PyObject *obj, uint64_t *limit, int *none_allowed) {
    *none_allowed = 0;
    *limit = UINT64_MAX;
    if (obj == Py_None) return 0;
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "max_size must be None or an int");
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow > 0) return 0; /* >= 2**63: larger than any buffer or SMALL_FRAME */
    if (overflow < 0 || v < 0) {
        *none_allowed = 1;
        return 0;
    }
    *limit = (uint64_t)v;
    return 0;
}

/* The CRC-32 of a bytes object through the configured callable, in *out.
 * Returns -1 with an exception set (not configured, callable failed, or a
 * result that is not an int in 0..2**32-1, which struct.pack("<I") refuses too). */
static int call_crc(PyObject *payload, uint32_t *out) {
    if (crc_func == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "npipes._speedups.configure(crc32) was not called");
        return -1;
    }
    PyObject *res = PyObject_CallOneArg(crc_func, payload);
    if (res == NULL) return -1;
    if (!PyLong_Check(res)) {
        Py_DECREF(res);
        PyErr_SetString(PyExc_TypeError, "crc32 must return an int");
        return -1;
    }
    unsigned long v = PyLong_AsUnsignedLong(res);
    Py_DECREF(res);
    if (v == (unsigned long)-1 && PyErr_Occurred()) return -1;
    if (v > 0xFFFFFFFFUL) {
        PyErr_SetString(PyExc_OverflowError, "crc32 result out of range");
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static PyObject *configure(PyObject *self, PyObject *func) {
    if (!PyCallable_Check(func)) {
        PyErr_SetString(PyExc_TypeError, "configure() needs a callable crc32(bytes) -> int");
        return NULL;
    }
    Py_INCREF(func);
    Py_XSETREF(crc_func, func);
    Py_RETURN_NONE;
}

/* -- encoding --------------------------------------------------------------- */

/* The payload of one message for encode_small: sets *data, *size, *flags and
 * returns 1; returns 0 where encode_small returns None; -1 on an error.
 * *owned is NULL or a new reference the caller releases once done with *data.
 * For an ASCII str, the UTF-8 is the string's own data (valid while it lives);
 * another str is encoded into a temporary bytes (*owned): PyUnicode_AsUTF8AndSize
 * would leave a UTF-8 copy attached to the str for as long as it lives
 * (tests/test_attack13_memory.py). */
static int small_payload(PyObject *obj, uint64_t limit, int none_allowed, const char **data,
                         Py_ssize_t *size, int *flags, PyObject **owned) {
    *owned = NULL;
    if (PyBytes_CheckExact(obj)) {
        *data = PyBytes_AS_STRING(obj);
        *size = PyBytes_GET_SIZE(obj);
        *flags = 0;
    } else if (PyUnicode_CheckExact(obj)) {
        if (PyUnicode_GET_LENGTH(obj) > SMALL_FRAME) return 0; /* >= 1 byte per character */
        if (PyUnicode_IS_COMPACT_ASCII(obj)) {
            *data = PyUnicode_AsUTF8AndSize(obj, size); /* no copy: the ASCII is UTF-8 */
        } else {
            *owned = PyUnicode_AsUTF8String(obj);
            *data = *owned == NULL ? NULL : PyBytes_AS_STRING(*owned);
            *size = *owned == NULL ? 0 : PyBytes_GET_SIZE(*owned);
        }
        if (*data == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
            PyErr_Clear(); /* a lone surrogate: the general path raises the error */
            return 0;
        }
        *flags = FLAG_TEXT;
    } else {
        return 0;
    }
    if (*size > SMALL_FRAME || none_allowed || (uint64_t)*size > limit) {
        Py_CLEAR(*owned);
        return 0;
    }
    return 1;
}

/* Writes one frame at out (HEADER_SIZE + size [+ TRAILER_SIZE] bytes). With crc,
 * the checksum is computed on `item` itself if it is bytes, else on a bytes copy
 * of the payload. Returns -1 on an error. */
static int write_frame(unsigned char *out, PyObject *item, const char *data, Py_ssize_t size,
                       int flags, int crc) {
    store_header(out, crc ? (flags | FLAG_CRC) : flags, (uint64_t)size);
    memcpy(out + HEADER_SIZE, data, (size_t)size);
    if (crc) {
        uint32_t sum;
        int rc;
        if (PyBytes_CheckExact(item)) {
            rc = call_crc(item, &sum);
        } else {
            PyObject *copy = PyBytes_FromStringAndSize(data, size);
            if (copy == NULL) return -1;
            rc = call_crc(copy, &sum);
            Py_DECREF(copy);
        }
        if (rc < 0) return -1;
        store_u32(out + HEADER_SIZE + size, sum);
    }
    return 0;
}

static PyObject *encode_small(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode_small(data, crc, max_size)");
        return NULL;
    }
    int crc = PyObject_IsTrue(args[1]);
    if (crc < 0) return NULL;
    uint64_t limit;
    int none_allowed;
    if (get_limit(args[2], &limit, &none_allowed) < 0) return NULL;
    const char *data;
    Py_ssize_t size;
    int flags;
    PyObject *owned;
    int ok = small_payload(args[0], limit, none_allowed, &data, &size, &flags, &owned);
    if (ok < 0) return NULL;
    if (ok == 0) Py_RETURN_NONE;
    /* size <= SMALL_FRAME: no overflow */
    PyObject *out = PyBytes_FromStringAndSize(NULL, HEADER_SIZE + size + (crc ? TRAILER_SIZE : 0));
    if (out != NULL &&
        write_frame((unsigned char *)PyBytes_AS_STRING(out), args[0], data, size, flags, crc) < 0)
        Py_CLEAR(out);
    Py_XDECREF(owned);
    return out;
}

static PyObject *encode_small_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "encode_small_many(messages, crc, max_size)");
        return NULL;
    }
    if (!PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "messages must be a list");
        return NULL;
    }
    int crc = PyObject_IsTrue(args[1]);
    if (crc < 0) return NULL;
    uint64_t limit;
    int none_allowed;
    if (get_limit(args[2], &limit, &none_allowed) < 0) return NULL;
    /* The crc callable is Python code that could change the list while we walk it:
     * with crc, walk an owned tuple snapshot instead (its items stay alive). */
    PyObject *seq = crc ? PySequence_Tuple(args[0]) : Py_NewRef(args[0]);
    if (seq == NULL) return NULL;
    PyObject *result = NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    const Py_ssize_t per_frame = HEADER_SIZE + (crc ? TRAILER_SIZE : 0);
    Py_ssize_t total = 0;
    const char *data;
    Py_ssize_t size;
    int flags;
    PyObject *owned;
    /* Pass 1: check every item and add up the sizes. No Python code runs here. */
    for (Py_ssize_t i = 0; i < n; i++) {
        int ok = small_payload(items[i], limit, none_allowed, &data, &size, &flags, &owned);
        Py_XDECREF(owned); /* only the size is needed now (a bytes: no finalizer runs) */
        if (ok < 0) goto done;
        if (ok == 0) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        if (total > PY_SSIZE_T_MAX - per_frame - size) { /* size <= SMALL_FRAME */
            PyErr_NoMemory();
            goto done;
        }
        total += per_frame + size;
    }
    result = PyBytes_FromStringAndSize(NULL, total);
    if (result == NULL) goto done;
    /* Pass 2: write the frames. small_payload returns what it did in pass 1 (the
     * items did not change: without crc no Python code ran; with crc they are
     * held by our tuple); the checks below guard the sizes anyway. */
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    Py_ssize_t used = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (small_payload(items[i], limit, none_allowed, &data, &size, &flags, &owned) != 1 ||
            size > total - used - per_frame) {
            Py_XDECREF(owned);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "messages changed");
            Py_CLEAR(result);
            goto done;
        }
        int rc = write_frame(out + used, items[i], data, size, flags, crc);
        Py_XDECREF(owned);
        if (rc < 0) {
            Py_CLEAR(result);
            goto done;
        }
        used += per_frame + size;
    }
done:
    Py_DECREF(seq);
    return result;
}

/* -- parsing ---------------------------------------------------------------- */

/* start and end (ints) checked against a buffer of `len` bytes: 0 <= start <= end <= len,
 * else ValueError (as _frame._check_range). */
static int get_range(PyObject *start_obj, PyObject *end_obj, Py_ssize_t len, Py_ssize_t *start,
                     Py_ssize_t *end) {
    if (!PyLong_Check(start_obj) || !PyLong_Check(end_obj)) {
        PyErr_SetString(PyExc_TypeError, "start and end must be ints");
        return -1;
    }
    int o1 = 0, o2 = 0;
    long long s = PyLong_AsLongLongAndOverflow(start_obj, &o1);
    if (s == -1 && PyErr_Occurred()) return -1;
    long long e = PyLong_AsLongLongAndOverflow(end_obj, &o2);
    if (e == -1 && PyErr_Occurred()) return -1;
    if (o1 || o2 || s < 0 || s > e || e > (long long)len) {
        PyErr_Format(PyExc_ValueError, "bad range %S:%S of a %zd-byte buffer", start_obj, end_obj,
                     len);
        return -1;
    }
    *start = (Py_ssize_t)s;
    *end = (Py_ssize_t)e;
    return 0;
}

/* One frame at buf[*pos:end]. Returns 1 and sets *message (new reference),
 * *length and *has_crc, and advances *pos past the frame; 0 where parse_frame
 * returns None; -1 on an error (the crc callable failed, no memory). */
static int parse_one(const unsigned char *buf, Py_ssize_t *pos, Py_ssize_t end, uint64_t limit,
                     int none_allowed, int require_crc, PyObject **message, uint64_t *length,
                     int *has_crc) {
    const unsigned char *p = buf + *pos;
    Py_ssize_t avail = end - *pos; /* >= 0: checked by get_range, kept by the advances */
    if (avail < HEADER_SIZE) return 0;
    int flags = p[3];
    if (p[0] != 'N' || p[1] != 'P' || p[2] != 1 || (flags & ~KNOWN_FLAGS) || load_u32(p + 4) != 0)
        return 0;
    uint64_t len = load_u64(p + 8);
    if (none_allowed || len > limit) return 0;
    /* Compare before adding: len is any u64 from the wire. */
    uint64_t rest = (uint64_t)(avail - HEADER_SIZE);
    if (len > rest) return 0;
    int crc = flags & FLAG_CRC;
    if (crc && rest - len < TRAILER_SIZE) return 0;
    if (require_crc && !crc) return 0;
    Py_ssize_t size = (Py_ssize_t)len; /* <= rest < PY_SSIZE_T_MAX */
    const char *body = (const char *)p + HEADER_SIZE;
    PyObject *msg;
    if (crc) {
        /* The callable gets a bytes copy (as the pure code's crc32(payload)): it
         * can keep it, and the decoded str (TEXT) is made from it. */
        PyObject *payload = PyBytes_FromStringAndSize(body, size);
        if (payload == NULL) return -1;
        uint32_t sum;
        if (call_crc(payload, &sum) < 0) {
            Py_DECREF(payload);
            return -1;
        }
        if (sum != load_u32(p + HEADER_SIZE + size)) {
            Py_DECREF(payload);
            return 0;
        }
        if (flags & FLAG_TEXT) {
            msg = PyUnicode_DecodeUTF8(PyBytes_AS_STRING(payload), size, "strict");
            Py_DECREF(payload);
        } else {
            msg = payload;
        }
    } else if (flags & FLAG_TEXT) {
        msg = PyUnicode_DecodeUTF8(body, size, "strict");
    } else {
        msg = PyBytes_FromStringAndSize(body, size);
    }
    if (msg == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -1;
        PyErr_Clear(); /* not UTF-8: the general path raises the error */
        return 0;
    }
    *message = msg;
    *length = len;
    *has_crc = crc != 0;
    *pos += HEADER_SIZE + size + (crc ? TRAILER_SIZE : 0); /* <= end, checked above */
    return 1;
}

/* The arguments common to parse_frame and parse_frames: a C-contiguous buffer
 * in *view (to release), the range, the limit and require_crc. */
static int parse_args(PyObject *const *args, Py_buffer *view, Py_ssize_t *start, Py_ssize_t *end,
                      uint64_t *limit, int *none_allowed, int *require_crc) {
    if (get_limit(args[3], limit, none_allowed) < 0) return -1;
    *require_crc = PyObject_IsTrue(args[4]);
    if (*require_crc < 0) return -1;
    if (PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0) return -1;
    if (get_range(args[1], args[2], view->len, start, end) < 0) {
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *parse_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "parse_frame(buf, start, end, max_size, require_crc)");
        return NULL;
    }
    Py_buffer view;
    Py_ssize_t pos, end;
    uint64_t limit;
    int none_allowed, require_crc;
    if (parse_args(args, &view, &pos, &end, &limit, &none_allowed, &require_crc) < 0) return NULL;
    PyObject *message = NULL;
    uint64_t length = 0;
    int has_crc = 0;
    /* The buffer stays exported during the crc call: a bytearray cannot be resized under us. */
    int ok = parse_one(view.buf, &pos, end, limit, none_allowed, require_crc, &message, &length,
                       &has_crc);
    PyBuffer_Release(&view);
    if (ok < 0) return NULL;
    if (ok == 0) Py_RETURN_NONE;
    /* "N" steals the reference to message, also when building the tuple fails. */
    return Py_BuildValue("(NKOn)", message, (unsigned long long)length,
                         has_crc ? Py_True : Py_False, pos);
}

static PyObject *parse_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_frames(buf, start, end, max_size, require_crc, limit)");
        return NULL;
    }
    if (!PyLong_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "limit must be an int");
        return NULL;
    }
    int overflow = 0;
    long long count = PyLong_AsLongLongAndOverflow(args[5], &overflow);
    if (count == -1 && PyErr_Occurred()) return NULL;
    if (overflow > 0) count = LLONG_MAX;
    if (overflow < 0 || count < 0) count = 0;
    Py_buffer view;
    Py_ssize_t pos, end;
    uint64_t limit;
    int none_allowed, require_crc;
    if (parse_args(args, &view, &pos, &end, &limit, &none_allowed, &require_crc) < 0) return NULL;
    PyObject *messages = PyList_New(0);
    if (messages == NULL) goto error;
    for (long long i = 0; i < count; i++) {
        PyObject *message = NULL;
        uint64_t length;
        int has_crc;
        int ok = parse_one(view.buf, &pos, end, limit, none_allowed, require_crc, &message,
                           &length, &has_crc);
        if (ok < 0) goto error;
        if (ok == 0) break;
        int rc = PyList_Append(messages, message); /* takes its own reference */
        Py_DECREF(message);
        if (rc < 0) goto error;
    }
    PyBuffer_Release(&view);
    if (PyList_GET_SIZE(messages) == 0) /* new_start is the start given, as in the pure code */
        return Py_BuildValue("(NO)", messages, args[1]);
    return Py_BuildValue("(Nn)", messages, pos);
error:
    PyBuffer_Release(&view);
    Py_XDECREF(messages);
    return NULL;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_O, "configure(crc32): the CRC-32 function to use."},
    {"encode_small", (PyCFunction)(void (*)(void))encode_small, METH_FASTCALL,
     "encode_small(data, crc, max_size) -> bytes | None (see npipes._frame)."},
    {"encode_small_many", (PyCFunction)(void (*)(void))encode_small_many, METH_FASTCALL,
     "encode_small_many(messages, crc, max_size) -> bytes | None (see npipes._frame)."},
    {"parse_frame", (PyCFunction)(void (*)(void))parse_frame, METH_FASTCALL,
     "parse_frame(buf, start, end, max_size, require_crc) -> tuple | None (see npipes._frame)."},
    {"parse_frames", (PyCFunction)(void (*)(void))parse_frames, METH_FASTCALL,
     "parse_frames(buf, start, end, max_size, require_crc, limit) -> (list, int)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "npipes._speedups",
    "C twins of the v1 frame fast paths of npipes._frame (optional).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
