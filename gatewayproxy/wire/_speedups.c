/*
 * gatewayproxy.wire._speedups: the per-message reads of the relay and the command log, in C.
 *
 * Each function here is an accelerator for a pure-Python function that stays the reference:
 *
 *   reply_outcome(data)            redact.reply_outcome: ok, n, code, errmsg, cursor id of a reply, read without
 *                                  decoding it; ``data`` is one buffer or a list of buffers (the chunks a
 *                                  reply arrived in, so a large reply is read where it lies, never joined).
 *   summary_key(raw, opts, drop)   the command log's cache key: everything redact.summarize_request's
 *                                  redacted summary of an OP_MSG depends on (names, types, array lengths,
 *                                  and the values the summary keeps), with the top-level numbers the
 *                                  summary copies returned apart, so requests that differ only in values
 *                                  share one summary.
 *   scan_op_msg(raw, end)          codec._scan_op_msg for the common case: command name, $db, collection,
 *                                  no ambiguity, sequence identifiers and where the command document starts.
 *   read_op_msg(raw, max_size)     codec.Request.read for such an OP_MSG: the header and flag bits checked
 *                                  and read too, so a request costs one call.
 *   cursor_table(buffer, op, ...)  a table of (session, cursor) pairs in memory the gateway's worker
 *                                  processes share, so a getMore may reach any worker (no Python reference:
 *                                  without the extension the gateway runs one worker).
 *
 * Every function returns None whenever its input is anything but ordinary (a structural problem, a field
 * given twice, a value the Python code would treat specially); the caller then runs the Python function,
 * so the two can only differ on inputs where C answers, and tests compare them there.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <sched.h>

#define OP_REPLY 1
#define OP_MSG 2013
#define LIST_ITEMS 20
#define MAX_DEPTH 100
#define MAX_TOP_FIELDS 64
#define MAX_NAME 255

static int32_t rd_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    return (int32_t)v;
}

static int64_t rd_i64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return (int64_t)v;
}

static double rd_f64(const unsigned char *p) {
    uint64_t v = (uint64_t)rd_i64(p);
    double d;
    memcpy(&d, &v, sizeof d);
    return d;
}

/* Strict UTF-8, as Python's decoder: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, Py_ssize_t n) {
    Py_ssize_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[i + 1] < 0xA0) return 0;
            if (c == 0xED && s[i + 1] > 0x9F) return 0;
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[i + 1] < 0x90) return 0;
            if (c == 0xF4 && s[i + 1] > 0x8F) return 0;
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------------------------------------------- */
/* A message held in one or more chunks, read at absolute offsets.                                      */
/* ---------------------------------------------------------------------------------------------------- */

typedef struct {
    Py_buffer *views;
    Py_ssize_t *starts;
    int count;
    int hint;
    Py_ssize_t total;
    Py_buffer one_view;
    Py_ssize_t one_start;
} Src;

static int src_open(Src *s, PyObject *data) {
    memset(s, 0, sizeof *s);
    if (PyObject_CheckBuffer(data)) {
        if (PyObject_GetBuffer(data, &s->one_view, PyBUF_SIMPLE) < 0) return -1;
        s->views = &s->one_view;
        s->starts = &s->one_start;
        s->count = 1;
        s->total = s->one_view.len;
        return 0;
    }
    PyObject *seq = PySequence_Fast(data, "reply_outcome takes a buffer or a sequence of buffers");
    if (seq == NULL) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > INT32_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "reply_outcome needs at least one chunk");
        return -1;
    }
    s->views = PyMem_Calloc((size_t)n, sizeof(Py_buffer));
    s->starts = PyMem_Calloc((size_t)n, sizeof(Py_ssize_t));
    if (s->views == NULL || s->starts == NULL) {
        PyMem_Free(s->views);
        PyMem_Free(s->starts);
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i), &s->views[i], PyBUF_SIMPLE) < 0) {
            for (Py_ssize_t j = 0; j < i; j++) PyBuffer_Release(&s->views[j]);
            PyMem_Free(s->views);
            PyMem_Free(s->starts);
            Py_DECREF(seq);
            return -1;
        }
        s->starts[i] = s->total;
        s->total += s->views[i].len;
        s->count++;
    }
    Py_DECREF(seq);
    return 0;
}

static void src_close(Src *s) {
    for (int i = 0; i < s->count; i++) PyBuffer_Release(&s->views[i]);
    if (s->views != &s->one_view) {
        PyMem_Free(s->views);
        PyMem_Free(s->starts);
    }
}

static int src_chunk(Src *s, Py_ssize_t off) {
    int i = s->hint;
    if (off >= s->starts[i] && off < s->starts[i] + s->views[i].len) return i;
    int lo = 0, hi = s->count - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (s->starts[mid] <= off) lo = mid; else hi = mid - 1;
    }
    /* skip empty chunks */
    while (lo < s->count - 1 && off >= s->starts[lo] + s->views[lo].len) lo++;
    s->hint = lo;
    return lo;
}

/* Copy data[off:off+n] into dst; -1 when that runs past the end. */
static int src_copy(Src *s, Py_ssize_t off, Py_ssize_t n, unsigned char *dst) {
    if (off < 0 || n < 0 || off > s->total || n > s->total - off) return -1;
    while (n > 0) {
        int i = src_chunk(s, off);
        Py_ssize_t in = off - s->starts[i];
        Py_ssize_t take = s->views[i].len - in;
        if (take > n) take = n;
        memcpy(dst, (const char *)s->views[i].buf + in, (size_t)take);
        dst += take;
        off += take;
        n -= take;
    }
    return 0;
}

static int src_byte(Src *s, Py_ssize_t off, unsigned char *out) { return src_copy(s, off, 1, out); }

static int src_i32(Src *s, Py_ssize_t off, int32_t *out) {
    unsigned char b[4];
    if (src_copy(s, off, 4, b) < 0) return -1;
    *out = rd_i32(b);
    return 0;
}

/* The offset of the first NUL in [off, end), or -1. */
static Py_ssize_t src_find_nul(Src *s, Py_ssize_t off, Py_ssize_t end) {
    if (end > s->total) end = s->total;
    while (off < end) {
        int i = src_chunk(s, off);
        Py_ssize_t in = off - s->starts[i];
        Py_ssize_t avail = s->views[i].len - in;
        if (avail > end - off) avail = end - off;
        const char *base = (const char *)s->views[i].buf + in;
        const char *hit = memchr(base, 0, (size_t)avail);
        if (hit != NULL) return off + (hit - base);
        off += avail;
    }
    return -1;
}

/* ---------------------------------------------------------------------------------------------------- */
/* reply_outcome                                                                                         */
/* ---------------------------------------------------------------------------------------------------- */

#define BAD (-1)      /* structural problem: the Python function reports an unreadable reply */
#define PUNT (-2)     /* the Python function would do something special: let it */

/* codec.skip_value over a Src: the offset past the value, or BAD. */
static Py_ssize_t src_skip(Src *s, unsigned char type, Py_ssize_t pos, Py_ssize_t end) {
    int32_t size;
    switch (type) {
    case 0x01: case 0x09: case 0x11: case 0x12: return pos + 8;
    case 0x06: case 0x0A: case 0xFF: case 0x7F: return pos;
    case 0x07: return pos + 12;
    case 0x08: return pos + 1;
    case 0x10: return pos + 4;
    case 0x13: return pos + 16;
    case 0x02: case 0x0D: case 0x0E:
        if (pos + 4 > end || src_i32(s, pos, &size) < 0 || size < 1) return BAD;
        return pos + 4 + size;
    case 0x03: case 0x04:
        if (pos + 4 > end || src_i32(s, pos, &size) < 0 || size < 5) return BAD;
        return pos + size;
    case 0x0F:
        if (pos + 4 > end || src_i32(s, pos, &size) < 0 || size < 14) return BAD;
        return pos + size;
    case 0x05:
        if (pos + 4 > end || src_i32(s, pos, &size) < 0 || size < 0) return BAD;
        return pos + 5 + size;
    case 0x0C:
        if (pos + 4 > end || src_i32(s, pos, &size) < 0 || size < 1) return BAD;
        return pos + 16 + size;
    case 0x0B: {
        for (int k = 0; k < 2; k++) {
            Py_ssize_t nul = src_find_nul(s, pos, end);
            if (nul < 0) return BAD;
            if (nul - pos > 4096) return PUNT;
            unsigned char tmp[4096];
            if (src_copy(s, pos, nul - pos, tmp) < 0 || !utf8_valid(tmp, nul - pos)) return BAD;
            pos = nul + 1;
        }
        return pos;
    }
    default:
        return BAD;
    }
}

typedef struct {
    Src *s;
    Py_ssize_t pos;   /* next element */
    Py_ssize_t stop;  /* the document's trailing NUL */
    unsigned char type;
    char name[MAX_NAME + 1];
    Py_ssize_t name_len;
    Py_ssize_t at, end;  /* the current value */
} Walk;

/* codec.elements: start a walk of the document at start (bounded by end); 0, BAD or PUNT. */
static int walk_start(Walk *w, Src *s, Py_ssize_t start, Py_ssize_t end) {
    int32_t size;
    unsigned char last;
    w->s = s;
    if (start + 4 > end || src_i32(s, start, &size) < 0) return BAD;
    if (size < 5 || start + size > end) return BAD;
    if (src_byte(s, start + size - 1, &last) < 0 || last != 0) return BAD;
    w->stop = start + size - 1;
    w->pos = start + 4;
    return 0;
}

/* The next element: 1, 0 at the end, BAD or PUNT. */
static int walk_next(Walk *w) {
    if (w->pos >= w->stop) return 0;
    if (src_byte(w->s, w->pos, &w->type) < 0) return BAD;
    Py_ssize_t nul = src_find_nul(w->s, w->pos + 1, w->stop);
    if (nul < 0) return BAD;
    w->name_len = nul - (w->pos + 1);
    if (w->name_len > MAX_NAME) {
        /* a long name: only checked, never one we look for */
        Py_ssize_t n = w->name_len;
        unsigned char *tmp = PyMem_Malloc((size_t)n);
        if (tmp == NULL) return PUNT;
        int ok = src_copy(w->s, w->pos + 1, n, tmp) == 0 && utf8_valid(tmp, n);
        PyMem_Free(tmp);
        if (!ok) return BAD;
        w->name[0] = '\0';
        w->name_len = -1;
    } else {
        if (src_copy(w->s, w->pos + 1, w->name_len, (unsigned char *)w->name) < 0) return BAD;
        w->name[w->name_len] = '\0';
        if (!utf8_valid((unsigned char *)w->name, w->name_len)) return BAD;
    }
    w->at = nul + 1;
    Py_ssize_t after = src_skip(w->s, w->type, w->at, w->stop);
    if (after < 0) return (int)after;
    if (after > w->stop) return BAD;
    w->end = after;
    w->pos = after;
    return 1;
}

static int name_is(Walk *w, const char *literal) {
    return w->name_len >= 0 && strcmp(w->name, literal) == 0;
}

/* Count the elements of the array (or document) at [at, end). */
static int walk_count(Src *s, Py_ssize_t at, Py_ssize_t end, long long *count) {
    Walk w;
    int r = walk_start(&w, s, at, end);
    if (r < 0) return r;
    *count = 0;
    while ((r = walk_next(&w)) == 1) (*count)++;
    return r;
}

typedef struct {
    int ok;
    int has_n;
    long long n;
    int has_code;
    long long code;
    Py_ssize_t errmsg_at;   /* value offset of the chosen errmsg string, -1 for "" */
    int has_cursor_id;
    long long cursor_id;
} Outcome;

/* A numeric scalar as Python's int(): 0, or PUNT for a double that int() refuses. */
static int numeric(Src *s, unsigned char type, Py_ssize_t at, long long *out) {
    unsigned char b[8];
    if (type == 0x10) {
        if (src_copy(s, at, 4, b) < 0) return BAD;
        *out = rd_i32(b);
    } else if (type == 0x12) {
        if (src_copy(s, at, 8, b) < 0) return BAD;
        *out = rd_i64(b);
    } else {
        if (src_copy(s, at, 8, b) < 0) return BAD;
        double d = rd_f64(b);
        if (!isfinite(d) || d >= 9.2e18 || d <= -9.2e18) return PUNT;
        *out = (long long)d;
    }
    return 0;
}

static int truthy(Src *s, unsigned char type, Py_ssize_t at) {
    unsigned char b[8];
    int32_t size;
    switch (type) {
    case 0x01:
        if (src_copy(s, at, 8, b) < 0) return BAD;
        return rd_f64(b) != 0.0 || isnan(rd_f64(b));
    case 0x10:
        if (src_copy(s, at, 4, b) < 0) return BAD;
        return rd_i32(b) != 0;
    case 0x12:
        if (src_copy(s, at, 8, b) < 0) return BAD;
        return rd_i64(b) != 0;
    case 0x08:
        if (src_copy(s, at, 1, b) < 0) return BAD;
        return b[0] != 0;
    case 0x02:
        if (src_i32(s, at, &size) < 0) return BAD;
        return size - 1 > 0;
    default:
        return 0;
    }
}

static int is_number(unsigned char type) { return type == 0x01 || type == 0x10 || type == 0x12; }

static int outcome_of_body(Src *s, Py_ssize_t start, Py_ssize_t stop, Outcome *o) {
    Walk w;
    int r, write_failed = 0;
    o->ok = 1;
    o->has_n = o->has_code = o->has_cursor_id = 0;
    o->errmsg_at = -1;
    if ((r = walk_start(&w, s, start, stop)) < 0) return r;
    while ((r = walk_next(&w)) == 1) {
        if (name_is(&w, "ok")) {
            int t = truthy(s, w.type, w.at);
            if (t < 0) return t;
            o->ok = t;
        } else if (name_is(&w, "n") && is_number(w.type)) {
            if ((r = numeric(s, w.type, w.at, &o->n)) < 0) return r;
            o->has_n = 1;
        } else if (name_is(&w, "code") && is_number(w.type)) {
            if ((r = numeric(s, w.type, w.at, &o->code)) < 0) return r;
            o->has_code = 1;
        } else if (name_is(&w, "errmsg") && w.type == 0x02) {
            o->errmsg_at = w.at;
        } else if (name_is(&w, "cursor") && w.type == 0x03) {
            Walk inner;
            if ((r = walk_start(&inner, s, w.at, w.end)) < 0) return r;
            while ((r = walk_next(&inner)) == 1) {
                if ((name_is(&inner, "firstBatch") || name_is(&inner, "nextBatch")) && inner.type == 0x04) {
                    long long count;
                    if ((r = walk_count(s, inner.at, inner.end, &count)) < 0) return r;
                    o->n = count;
                    o->has_n = 1;
                } else if (name_is(&inner, "id") && (inner.type == 0x10 || inner.type == 0x12)) {
                    if ((r = numeric(s, inner.type, inner.at, &o->cursor_id)) < 0) return r;
                    o->has_cursor_id = 1;
                }
            }
            if (r < 0) return r;
        } else if (name_is(&w, "writeErrors") && w.type == 0x04) {
            Walk errors;
            write_failed = 1;
            if ((r = walk_start(&errors, s, w.at, w.end)) < 0) return r;
            r = walk_next(&errors);
            if (r < 0) return r;
            if (r == 1) {
                Walk fields;
                if (errors.type != 0x03) return PUNT;
                if ((r = walk_start(&fields, s, errors.at, errors.end)) < 0) return r;
                while ((r = walk_next(&fields)) == 1) {
                    if (name_is(&fields, "code") && !o->has_code) {
                        if (is_number(fields.type)) {
                            if ((r = numeric(s, fields.type, fields.at, &o->code)) < 0) return r;
                        } else if (fields.type == 0x08) {
                            int t = truthy(s, fields.type, fields.at);
                            if (t < 0) return t;
                            o->code = t;
                        } else if (fields.type == 0x02) {
                            return PUNT;  /* int("...") */
                        } else {
                            o->code = 0;
                        }
                        o->has_code = 1;
                    } else if (name_is(&fields, "errmsg") && !(o->errmsg_at >= 0 && truthy(s, 0x02, o->errmsg_at))) {
                        if (fields.type == 0x02) {
                            o->errmsg_at = fields.at;
                        } else if (is_number(fields.type) || fields.type == 0x08) {
                            int t = truthy(s, fields.type, fields.at);
                            if (t < 0) return t;
                            if (t) return PUNT;  /* a number or True as the message */
                            o->errmsg_at = -1;
                        } else {
                            o->errmsg_at = -1;
                        }
                    }
                }
                if (r < 0) return r;
            }
        } else if (name_is(&w, "writeConcernError") && w.type == 0x03) {
            write_failed = 1;
        }
    }
    if (r < 0) return r;
    if (write_failed) o->ok = 0;
    return 0;
}

static PyObject *outcome_tuple(Src *s, Outcome *o) {
    PyObject *errmsg;
    if (o->errmsg_at >= 0) {
        int32_t size;
        if (src_i32(s, o->errmsg_at, &size) < 0) Py_RETURN_NONE;
        Py_ssize_t n = size - 1;
        char *tmp = PyMem_Malloc(n > 0 ? (size_t)n : 1);
        if (tmp == NULL) return PyErr_NoMemory();
        if (src_copy(s, o->errmsg_at + 4, n, (unsigned char *)tmp) < 0) {
            PyMem_Free(tmp);
            Py_RETURN_NONE;
        }
        errmsg = PyUnicode_DecodeUTF8(tmp, n, "replace");
        PyMem_Free(tmp);
    } else {
        errmsg = PyUnicode_FromStringAndSize("", 0);
    }
    if (errmsg == NULL) return NULL;
    PyObject *n = o->has_n ? PyLong_FromLongLong(o->n) : Py_NewRef(Py_None);
    PyObject *code = o->has_code ? PyLong_FromLongLong(o->code) : Py_NewRef(Py_None);
    PyObject *cursor_id = o->has_cursor_id ? PyLong_FromLongLong(o->cursor_id) : Py_NewRef(Py_None);
    if (n == NULL || code == NULL || cursor_id == NULL) {
        Py_XDECREF(n);
        Py_XDECREF(code);
        Py_XDECREF(cursor_id);
        Py_DECREF(errmsg);
        return NULL;
    }
    return Py_BuildValue("(ONNNN)", o->ok ? Py_True : Py_False, n, code, errmsg, cursor_id);
}

static PyObject *unreadable(void) {
    return Py_BuildValue("(OOOsO)", Py_False, Py_None, Py_None, "unreadable reply", Py_None);
}

static PyObject *reply_outcome_src(Src *s) {
    int32_t op, size;
    Outcome o;
    int r;
    if (src_i32(s, 12, &op) < 0) return unreadable();
    if (op == OP_MSG) {
        Py_ssize_t pos = 20;
        while (pos < s->total) {
            unsigned char kind;
            if (src_byte(s, pos, &kind) < 0) return unreadable();
            if (src_i32(s, pos + 1, &size) < 0) return unreadable();
            if (kind == 0) {
                r = outcome_of_body(s, pos + 1, pos + 1 + size, &o);
                if (r == PUNT) Py_RETURN_NONE;
                if (r < 0) return unreadable();
                return outcome_tuple(s, &o);
            }
            if (size < 0) Py_RETURN_NONE;  /* the Python walk would not advance */
            pos += 1 + size;
        }
        return unreadable();
    }
    if (op == OP_REPLY) {
        int32_t flags;
        if (src_i32(s, 16, &flags) < 0 || src_i32(s, 36, &size) < 0) return unreadable();
        r = outcome_of_body(s, 36, 36 + (Py_ssize_t)size, &o);
        if (r == PUNT) Py_RETURN_NONE;
        if (r < 0) return unreadable();
        if (flags & 2) o.ok = 0;
        return outcome_tuple(s, &o);
    }
    return unreadable();
}

static PyObject *py_reply_outcome(PyObject *self, PyObject *data) {
    Src s;
    if (src_open(&s, data) < 0) return NULL;
    PyObject *result = reply_outcome_src(&s);
    src_close(&s);
    return result;
}

/* ---------------------------------------------------------------------------------------------------- */
/* summary_key                                                                                           */
/* ---------------------------------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *d;
    Py_ssize_t len;
    char *out;
    Py_ssize_t out_len, out_cap;
    int failed;  /* 1: not ordinary (None to the caller); -1: a Python error is set */
} Key;

static void key_put(Key *k, const void *data, Py_ssize_t n) {
    if (k->failed) return;
    if (k->out_len + n > k->out_cap) {
        Py_ssize_t cap = k->out_cap ? k->out_cap : 256;
        while (cap < k->out_len + n) cap *= 2;
        char *grown = PyMem_Realloc(k->out, (size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            k->failed = -1;
            return;
        }
        k->out = grown;
        k->out_cap = cap;
    }
    memcpy(k->out + k->out_len, data, (size_t)n);
    k->out_len += n;
}

static void key_byte(Key *k, unsigned char c) { key_put(k, &c, 1); }

static void key_u32(Key *k, uint32_t v) {
    unsigned char b[4] = {v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, (v >> 24) & 0xFF};
    key_put(k, b, 4);
}

/* Shapes a value may be recorded in. */
enum { SHAPE, COUNT_ONLY, UPDATES };

static Py_ssize_t key_value(Key *k, unsigned char type, Py_ssize_t pos, Py_ssize_t end, int emit, int depth);

/* A BSON string at pos: int32 size, UTF-8, NUL. The offset past it, or -1. */
static Py_ssize_t key_string(Key *k, Py_ssize_t pos, Py_ssize_t end) {
    if (pos + 4 > end) return -1;
    int32_t size = rd_i32(k->d + pos);
    if (size < 1 || pos + 4 + size > end) return -1;
    if (k->d[pos + 4 + size - 1] != 0) return -1;
    if (!utf8_valid(k->d + pos + 4, size - 1)) return -1;
    return pos + 4 + size;
}

static Py_ssize_t key_cstring(Key *k, Py_ssize_t pos, Py_ssize_t end) {
    const unsigned char *nul = memchr(k->d + pos, 0, (size_t)(end - pos));
    if (nul == NULL) return -1;
    Py_ssize_t n = nul - (k->d + pos);
    if (!utf8_valid(k->d + pos, n)) return -1;
    return pos + n + 1;
}

/*
 * Walk the document (or array) at pos, checking it as bson.decode would, and recording its shape when
 * ``emit``: per element its type and name (array items: type only), subdocuments recursively, arrays
 * as their length and their first LIST_ITEMS items. ``mode`` UPDATES records the values of the
 * ``multi`` and ``upsert`` fields of each item's top level (what redact keeps of an update statement).
 */
static Py_ssize_t key_doc(Key *k, Py_ssize_t pos, Py_ssize_t end, int is_array, int emit, int mode, int depth) {
    if (depth > MAX_DEPTH || pos + 4 > end) return -1;
    int32_t size = rd_i32(k->d + pos);
    if (size < 5 || pos + size > end || k->d[pos + size - 1] != 0) return -1;
    Py_ssize_t stop = pos + size - 1, at = pos + 4;
    uint32_t count = 0;
    if (emit) key_byte(k, is_array ? '[' : '{');
    Py_ssize_t count_at = k->out_len;
    if (emit && is_array) key_u32(k, 0);
    while (at < stop) {
        unsigned char type = k->d[at];
        Py_ssize_t name_at = at + 1;
        Py_ssize_t value_at = key_cstring(k, name_at, stop);
        if (value_at < 0) return -1;
        int item_emit = emit && (!is_array || count < LIST_ITEMS);
        if (item_emit) {
            key_byte(k, type);
            if (!is_array) key_put(k, k->d + name_at, value_at - name_at);
        }
        Py_ssize_t after;
        if (is_array && mode == UPDATES && type == 0x03) {
            after = key_doc(k, value_at, stop, 0, item_emit, UPDATES + 1, depth + 1);
        } else if (mode == UPDATES + 1 && item_emit &&
                   (strcmp((const char *)k->d + name_at, "multi") == 0 ||
                    strcmp((const char *)k->d + name_at, "upsert") == 0)) {
            after = key_value(k, type, value_at, stop, 0, depth + 1);
            if (after >= 0) key_put(k, k->d + value_at, after - value_at);
        } else {
            after = key_value(k, type, value_at, stop, item_emit, depth + 1);
        }
        if (after < 0 || after > stop) return -1;
        at = after;
        count++;
    }
    if (emit) {
        if (is_array && !k->failed) {
            unsigned char b[4] = {count & 0xFF, (count >> 8) & 0xFF, (count >> 16) & 0xFF, (count >> 24) & 0xFF};
            memcpy(k->out + count_at, b, 4);
        }
        key_byte(k, is_array ? ']' : '}');
    }
    return pos + size;
}

/* Check one value as bson.decode would (recording subdocuments' shapes when emit); the offset past it. */
static Py_ssize_t key_value(Key *k, unsigned char type, Py_ssize_t pos, Py_ssize_t end, int emit, int depth) {
    int32_t size;
    switch (type) {
    case 0x01: case 0x09: case 0x11: case 0x12: return pos + 8 <= end ? pos + 8 : -1;
    case 0x06: case 0x0A: case 0xFF: case 0x7F: return pos;
    case 0x07: return pos + 12 <= end ? pos + 12 : -1;
    case 0x08:
        if (pos + 1 > end || k->d[pos] > 1) return -1;
        return pos + 1;
    case 0x10: return pos + 4 <= end ? pos + 4 : -1;
    case 0x13: return pos + 16 <= end ? pos + 16 : -1;
    case 0x02: case 0x0D: case 0x0E: return key_string(k, pos, end);
    case 0x03: return key_doc(k, pos, end, 0, emit, SHAPE, depth);
    case 0x04: return key_doc(k, pos, end, 1, emit, SHAPE, depth);
    case 0x05:
        if (pos + 5 > end) return -1;
        size = rd_i32(k->d + pos);
        if (size < 0 || pos + 5 + size > end) return -1;
        if (k->d[pos + 4] == 2 && (size < 4 || rd_i32(k->d + pos + 5) != size - 4)) return -1;
        return pos + 5 + size;
    case 0x0B: {
        Py_ssize_t after = key_cstring(k, pos, end);
        return after < 0 ? -1 : key_cstring(k, after, end);
    }
    case 0x0C: {
        Py_ssize_t after = key_string(k, pos, end);
        return after < 0 || after + 12 > end ? -1 : after + 12;
    }
    case 0x0F: {
        if (pos + 4 > end) return -1;
        size = rd_i32(k->d + pos);
        if (size < 14 || pos + size > end) return -1;
        Py_ssize_t after = key_string(k, pos + 4, pos + size);
        if (after < 0) return -1;
        after = key_doc(k, after, pos + size, 0, 0, SHAPE, depth);
        return after == pos + size ? after : -1;
    }
    default:
        return -1;
    }
}

static int in_set(PyObject *set, const char *name, Py_ssize_t n, int *found) {
    PyObject *key = PyUnicode_DecodeUTF8(name, n, "strict");
    if (key == NULL) return -1;
    int r = PySet_Contains(set, key);
    Py_DECREF(key);
    if (r < 0) return -1;
    *found = r;
    return 0;
}

/* A top-level number the summary copies: returned apart, so that the key leaves its value out. */
static int patch_number(PyObject *patches, const unsigned char *name, Py_ssize_t name_len, unsigned char type,
                        const unsigned char *value) {
    PyObject *number;
    if (type == 0x10) number = PyLong_FromLong(rd_i32(value));
    else if (type == 0x12) number = PyLong_FromLongLong(rd_i64(value));
    else number = PyFloat_FromDouble(rd_f64(value));
    if (number == NULL) return -1;
    PyObject *item = Py_BuildValue("(s#N)", (const char *)name, name_len, number);
    if (item == NULL) return -1;
    int r = PyList_Append(patches, item);
    Py_DECREF(item);
    return r;
}

static int patchable(unsigned char type, const unsigned char *value) {
    return type == 0x10 || type == 0x12 || (type == 0x01 && isfinite(rd_f64(value)));
}

static PyObject *py_summary_key(PyObject *self, PyObject *args) {
    Py_buffer view;
    PyObject *options, *dropped;
    if (!PyArg_ParseTuple(args, "y*O!O!", &view, &PyFrozenSet_Type, &options, &PyFrozenSet_Type, &dropped))
        return NULL;
    Key k = {view.buf, view.len, NULL, 0, 0, 0};
    PyObject *patches = PyList_New(0), *result = NULL;
    const unsigned char *names[MAX_TOP_FIELDS + LIST_ITEMS];
    Py_ssize_t name_lens[MAX_TOP_FIELDS + LIST_ITEMS];
    int top = 0, bodies = 0;
    if (patches == NULL) goto done;
    if (k.len < 21 || rd_i32(k.d) != k.len || rd_i32(k.d + 12) != OP_MSG) goto plain;
    uint32_t flags = (uint32_t)rd_i32(k.d + 16);
    if (flags & 0xFFFF & ~2u) goto plain;  /* a checksum, or bits parse_op_msg refuses */
    Py_ssize_t pos = 20;
    while (pos < k.len) {
        unsigned char kind = k.d[pos];
        if (kind == 0) {
            if (bodies++) goto plain;
            Py_ssize_t start = pos + 1;
            if (start + 4 > k.len) goto plain;
            int32_t size = rd_i32(k.d + start);
            if (size < 5 || start + size > k.len || k.d[start + size - 1] != 0) goto plain;
            Py_ssize_t stop = start + size - 1, at = start + 4;
            int index = 0;
            key_byte(&k, 'B');
            while (at < stop) {
                unsigned char type = k.d[at];
                const unsigned char *name = k.d + at + 1;
                Py_ssize_t value_at = key_cstring(&k, at + 1, stop);
                if (value_at < 0) goto plain;
                Py_ssize_t name_len = value_at - 1 - (at + 1);
                if (top >= MAX_TOP_FIELDS) goto plain;
                for (int i = 0; i < top; i++)
                    if (name_lens[i] == name_len && memcmp(names[i], name, (size_t)name_len) == 0) goto plain;
                names[top] = name;
                name_lens[top++] = name_len;
                int is_dropped, is_option;
                if (in_set(dropped, (const char *)name, name_len, &is_dropped) < 0) goto error;
                Py_ssize_t after;
                if (is_dropped) {
                    key_byte(&k, 'D');
                    key_put(&k, name, name_len + 1);
                    after = key_value(&k, type, value_at, stop, 0, 1);
                } else {
                    key_byte(&k, type);
                    key_put(&k, name, name_len + 1);
                    if (in_set(options, (const char *)name, name_len, &is_option) < 0) goto error;
                    if (index == 0 || is_option) {
                        after = key_value(&k, type, value_at, stop, 0, 1);
                        if (after < 0) goto plain;
                        if (patchable(type, k.d + value_at)) {
                            if (patch_number(patches, name, name_len, type, k.d + value_at) < 0) goto error;
                        } else {
                            key_put(&k, k.d + value_at, after - value_at);
                        }
                    } else if (name_len == 9 && memcmp(name, "documents", 9) == 0 && type == 0x04) {
                        after = key_doc(&k, value_at, stop, 1, 0, SHAPE, 1);
                        if (after < 0) goto plain;
                        uint32_t count = 0;
                        for (Py_ssize_t p = value_at + 4; p < after - 1;) {  /* count the items */
                            Py_ssize_t v = key_cstring(&k, p + 1, after - 1);
                            p = key_value(&k, k.d[p], v, after - 1, 0, 2);
                            count++;
                        }
                        key_u32(&k, count);
                    } else if (name_len == 9 && memcmp(name, "documents", 9) == 0 &&
                               (type == 0x10 || type == 0x12 || type == 0x08)) {
                        after = key_value(&k, type, value_at, stop, 0, 1);
                        if (after >= 0) key_put(&k, k.d + value_at, after - value_at);
                    } else if (name_len == 7 && memcmp(name, "updates", 7) == 0 && type == 0x04) {
                        after = key_doc(&k, value_at, stop, 1, 1, UPDATES, 1);
                    } else {
                        after = key_value(&k, type, value_at, stop, 1, 1);
                    }
                }
                if (after < 0 || after > stop) goto plain;
                at = after;
                index++;
            }
            pos = start + size;
        } else if (kind == 1) {
            if (pos + 5 > k.len) goto plain;
            int32_t size = rd_i32(k.d + pos + 1);
            Py_ssize_t stop = pos + 1 + size;
            if (size < 5 || stop > k.len) goto plain;
            const unsigned char *name = k.d + pos + 5;
            Py_ssize_t docs_at = key_cstring(&k, pos + 5, stop);
            if (docs_at < 0) goto plain;
            Py_ssize_t name_len = docs_at - 1 - (pos + 5);
            if (top >= MAX_TOP_FIELDS + LIST_ITEMS) goto plain;
            for (int i = 0; i < top; i++)
                if (name_lens[i] == name_len && memcmp(names[i], name, (size_t)name_len) == 0) goto plain;
            names[top] = name;
            name_lens[top++] = name_len;
            int documents = name_len == 9 && memcmp(name, "documents", 9) == 0;
            int updates = name_len == 7 && memcmp(name, "updates", 7) == 0;
            key_byte(&k, 'S');
            key_put(&k, name, name_len + 1);
            uint32_t count = 0;
            Py_ssize_t count_at = k.out_len;
            key_u32(&k, 0);
            for (Py_ssize_t at = docs_at; at < stop; count++) {
                int emit = !documents && count < LIST_ITEMS;
                if (emit) key_byte(&k, 0x03);
                Py_ssize_t after = updates ? key_doc(&k, at, stop, 0, emit, UPDATES + 1, 1)
                                           : key_doc(&k, at, stop, 0, emit, SHAPE, 1);
                if (after < 0) goto plain;
                at = after;
            }
            if (!k.failed) {
                unsigned char b[4] = {count & 0xFF, (count >> 8) & 0xFF, (count >> 16) & 0xFF, (count >> 24) & 0xFF};
                memcpy(k.out + count_at, b, 4);
            }
            pos = stop;
        } else {
            goto plain;
        }
    }
    if (bodies != 1) goto plain;
    if (k.failed < 0) goto error;
    result = Py_BuildValue("(y#N)", k.out, k.out_len, PyList_AsTuple(patches));
    goto done;
plain:
    if (k.failed < 0) goto error;
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(patches);
    PyMem_Free(k.out);
    PyBuffer_Release(&view);
    return result;
}

/* ---------------------------------------------------------------------------------------------------- */
/* scan_op_msg                                                                                           */
/* ---------------------------------------------------------------------------------------------------- */

/*
 * codec._scan_op_msg for an ordinary OP_MSG: returns (command, database, collection, "", sequences, body_at),
 * or None when the message has anything the Python scan reports or refuses (a field or a sequence given
 * twice, a second body, a structural problem), so that the Python scan decides those.
 */
static PyObject *scan(Py_buffer view, Py_ssize_t end) {
    const unsigned char *d = view.buf;
    Py_ssize_t len = view.len;
    PyObject *result = NULL, *sequences = NULL;
    const unsigned char *names[MAX_TOP_FIELDS];
    Py_ssize_t name_lens[MAX_TOP_FIELDS];
    int fields = 0, bodies = 0;
    Py_ssize_t body_at = 0;
    const unsigned char *command = NULL, *wanted = NULL, *database = NULL, *collection = NULL;
    Py_ssize_t command_len = 0, wanted_len = 0, database_len = 0, collection_len = 0;
    const unsigned char *seq_names[MAX_TOP_FIELDS];
    Py_ssize_t seq_lens[MAX_TOP_FIELDS];
    int seqs = 0;
    if (end > len || end < 20) goto plain;
    Py_ssize_t pos = 20;
    while (pos < end) {
        unsigned char kind = d[pos];
        if (kind == 0) {
            if (bodies++) goto plain;
            Py_ssize_t start = pos + 1;
            if (start + 4 > end) goto plain;
            int32_t size = rd_i32(d + start);
            if (size < 5 || start + size > end || d[start + size - 1] != 0) goto plain;
            Py_ssize_t stop = start + size - 1, at = start + 4;
            body_at = start;
            while (at < stop) {
                unsigned char type = d[at];
                const unsigned char *name = d + at + 1;
                const unsigned char *nul = memchr(name, 0, (size_t)(stop - (at + 1)));
                if (nul == NULL) goto plain;
                Py_ssize_t name_len = nul - name;
                if (!utf8_valid(name, name_len)) goto plain;
                if (fields >= MAX_TOP_FIELDS) goto plain;
                for (int i = 0; i < fields; i++)
                    if (name_lens[i] == name_len && memcmp(names[i], name, (size_t)name_len) == 0) goto plain;
                names[fields] = name;
                name_lens[fields++] = name_len;
                if (command == NULL) {
                    command = name;
                    command_len = name_len;
                    if (name_len == 7 && memcmp(name, "getMore", 7) == 0) {
                        wanted = (const unsigned char *)"collection";
                        wanted_len = 10;
                    } else {
                        wanted = name;
                        wanted_len = name_len;
                    }
                }
                Py_ssize_t value_at = name_len + at + 2;
                /* skip_value, as the Python scan does it (bounded by stop) */
                Py_ssize_t after;
                int32_t vsize;
                switch (type) {
                case 0x01: case 0x09: case 0x11: case 0x12: after = value_at + 8; break;
                case 0x06: case 0x0A: case 0xFF: case 0x7F: after = value_at; break;
                case 0x07: after = value_at + 12; break;
                case 0x08: after = value_at + 1; break;
                case 0x10: after = value_at + 4; break;
                case 0x13: after = value_at + 16; break;
                case 0x02: case 0x0D: case 0x0E: case 0x03: case 0x04: case 0x0F: case 0x05: case 0x0C: {
                    static const int extra[256] = {[0x02] = 4, [0x0D] = 4, [0x0E] = 4, [0x05] = 5, [0x0C] = 16};
                    static const int smallest[256] = {[0x02] = 1, [0x0D] = 1, [0x0E] = 1, [0x03] = 5, [0x04] = 5,
                                                      [0x0F] = 14, [0x05] = 0, [0x0C] = 1};
                    if (value_at + 4 > stop) goto plain;
                    vsize = rd_i32(d + value_at);
                    if (vsize < smallest[type]) goto plain;
                    after = value_at + extra[type] + vsize;
                    break;
                }
                default:
                    goto plain;  /* regexes and unknown types: the Python scan */
                }
                if (after > stop || after < value_at) goto plain;
                if (type == 0x02) {
                    int32_t ssize = rd_i32(d + value_at);
                    if (ssize < 1 || value_at + 4 + ssize > after) goto plain;
                    if (name_len == wanted_len && memcmp(name, wanted, (size_t)name_len) == 0 && collection == NULL) {
                        collection = d + value_at + 4;
                        collection_len = ssize - 1;
                    }
                    if (name_len == 3 && memcmp(name, "$db", 3) == 0 && database == NULL) {
                        database = d + value_at + 4;
                        database_len = ssize - 1;
                    }
                }
                at = after;
            }
            pos = start + size;
        } else if (kind == 1) {
            if (pos + 5 > end) goto plain;
            int32_t size = rd_i32(d + pos + 1);
            if (size < 5 || pos + 1 + size > end) goto plain;
            Py_ssize_t stop = pos + 1 + size;
            const unsigned char *name = d + pos + 5;
            const unsigned char *nul = memchr(name, 0, (size_t)(stop - (pos + 5)));
            if (nul == NULL || !utf8_valid(name, nul - name)) goto plain;
            if (seqs >= MAX_TOP_FIELDS) goto plain;
            seq_names[seqs] = name;
            seq_lens[seqs++] = nul - name;
            pos = stop;
        } else {
            goto plain;
        }
    }
    if (bodies != 1) goto plain;
    for (int i = 0; i < seqs; i++) {
        for (int j = 0; j < fields; j++)
            if (seq_lens[i] == name_lens[j] && memcmp(seq_names[i], names[j], (size_t)seq_lens[i]) == 0) goto plain;
        for (int j = 0; j < i; j++)
            if (seq_lens[i] == seq_lens[j] && memcmp(seq_names[i], seq_names[j], (size_t)seq_lens[i]) == 0) goto plain;
    }
    sequences = PyTuple_New(seqs);
    if (sequences == NULL) goto error;
    for (int i = 0; i < seqs; i++) {
        PyObject *name = PyUnicode_DecodeUTF8((const char *)seq_names[i], seq_lens[i], "strict");
        if (name == NULL) goto error;
        PyTuple_SET_ITEM(sequences, i, name);
    }
    result = Py_BuildValue(
        "(NNNsOn)",
        command ? PyUnicode_DecodeUTF8((const char *)command, command_len, "strict") : PyUnicode_FromString(""),
        database ? PyUnicode_DecodeUTF8((const char *)database, database_len, "replace") : PyUnicode_FromString(""),
        collection ? PyUnicode_DecodeUTF8((const char *)collection, collection_len, "replace")
                   : PyUnicode_FromString(""),
        "", sequences, body_at);
    goto done;
plain:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    Py_XDECREF(sequences);
    return result;
}

static PyObject *py_scan_op_msg(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t end;
    if (!PyArg_ParseTuple(args, "y*n", &view, &end)) return NULL;
    PyObject *result = scan(view, end);
    PyBuffer_Release(&view);
    return result;
}

/*
 * codec.Request.read's OP_MSG path: the header checked against the message and the limit, the flag bits,
 * then scan_op_msg: (request_id, flags, command, database, collection, "", sequences, body_at), or None
 * (another opcode, a checksum... or anything scan_op_msg leaves to Python).
 */
static PyObject *py_read_op_msg(PyObject *self, PyObject *args) {
    PyObject *raw;
    Py_ssize_t max_size;
    if (!PyArg_ParseTuple(args, "On", &raw, &max_size)) return NULL;
    if (!PyBytes_CheckExact(raw)) Py_RETURN_NONE;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t len = PyBytes_GET_SIZE(raw);
    if (len < 21 || rd_i32(d) != len || len > max_size || rd_i32(d + 12) != OP_MSG) Py_RETURN_NONE;
    uint32_t flags = (uint32_t)rd_i32(d + 16);
    Py_ssize_t end = len - ((flags & 1) ? 4 : 0);
    Py_buffer view = {.buf = (void *)d, .len = len};
    PyObject *found = scan(view, end);
    if (found == NULL || found == Py_None) return found;
    PyObject *result = PyTuple_New(8);
    if (result == NULL) {
        Py_DECREF(found);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong(rd_i32(d + 4)));
    PyTuple_SET_ITEM(result, 1, PyLong_FromUnsignedLong(flags));
    for (int i = 0; i < 6; i++) PyTuple_SET_ITEM(result, i + 2, Py_NewRef(PyTuple_GET_ITEM(found, i)));
    Py_DECREF(found);
    if (PyTuple_GET_ITEM(result, 0) == NULL || PyTuple_GET_ITEM(result, 1) == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}


/* ---------------------------------------------------------------------------------------------------- */
/* A table of (session id, cursor id) pairs in memory shared by the gateway's worker processes          */
/* ---------------------------------------------------------------------------------------------------- */

/*
 * The buffer (an anonymous shared mmap made before the workers fork) holds a header and a power-of-two
 * number of 16-byte slots; a slot with session 0 is free (session ids start at 1). Open addressing with
 * linear probing and backward-shift deletion, so no tombstones build up. One spinlock (an atomic word in
 * the header) guards every operation: each is a few probes long.
 */

typedef struct {
    uint32_t lock;
    uint32_t count;
    uint32_t capacity;
    uint32_t magic;
} TableHead;

typedef struct {
    int64_t session;
    int64_t cursor;
} Slot;

#define TABLE_MAGIC 0x43555253u

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static void table_lock(TableHead *h) {
    int spins = 0;
    while (__atomic_exchange_n(&h->lock, 1u, __ATOMIC_ACQUIRE)) {
        if (++spins > 64) {
            Py_BEGIN_ALLOW_THREADS
            sched_yield();
            Py_END_ALLOW_THREADS
            spins = 0;
        }
    }
}

static void table_unlock(TableHead *h) { __atomic_store_n(&h->lock, 0u, __ATOMIC_RELEASE); }

/* The table in ``buffer`` (initialised when ``init``); NULL with an exception when it is not one. */
static TableHead *table_of(Py_buffer *view, int init) {
    if (view->len < (Py_ssize_t)(sizeof(TableHead) + 16 * sizeof(Slot))) {
        PyErr_SetString(PyExc_ValueError, "the cursor table's buffer is too small");
        return NULL;
    }
    TableHead *h = view->buf;
    if (init) {
        uint64_t slots = (uint64_t)(view->len - sizeof(TableHead)) / sizeof(Slot);
        uint32_t capacity = 16;
        while ((uint64_t)capacity * 2 <= slots && capacity < (1u << 30)) capacity *= 2;
        memset(view->buf, 0, sizeof(TableHead) + (size_t)capacity * sizeof(Slot));
        h->capacity = capacity;
        h->magic = TABLE_MAGIC;
    } else if (h->magic != TABLE_MAGIC) {
        PyErr_SetString(PyExc_ValueError, "the buffer holds no cursor table");
        return NULL;
    }
    return h;
}

static Slot *table_slots(TableHead *h) { return (Slot *)(h + 1); }

/* The slot holding (session, cursor), or the free slot where it would go. */
static uint32_t table_find(TableHead *h, int64_t session, int64_t cursor) {
    Slot *slots = table_slots(h);
    uint32_t mask = h->capacity - 1;
    uint32_t i = (uint32_t)mix64((uint64_t)session * 0x9E3779B97F4A7C15ULL ^ (uint64_t)cursor) & mask;
    while (slots[i].session != 0 && !(slots[i].session == session && slots[i].cursor == cursor)) i = (i + 1) & mask;
    return i;
}

static uint32_t table_home(TableHead *h, Slot *slot) {
    return (uint32_t)mix64((uint64_t)slot->session * 0x9E3779B97F4A7C15ULL ^ (uint64_t)slot->cursor) &
           (h->capacity - 1);
}

static void table_delete_at(TableHead *h, uint32_t i) {
    Slot *slots = table_slots(h);
    uint32_t mask = h->capacity - 1, j = i;
    slots[i].session = 0;
    for (;;) {
        j = (j + 1) & mask;
        if (slots[j].session == 0) break;
        uint32_t home = table_home(h, &slots[j]);
        /* move slots[j] back into the hole at i unless its home lies cyclically in (i, j] */
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            slots[i] = slots[j];
            slots[j].session = 0;
            i = j;
        }
    }
    h->count--;
}

static PyObject *py_cursor_table(PyObject *self, PyObject *args) {
    Py_buffer view;
    const char *op;
    long long session = 0, cursor = 0;
    if (!PyArg_ParseTuple(args, "w*s|LL", &view, &op, &session, &cursor)) return NULL;
    PyObject *result = NULL;
    int init = strcmp(op, "init") == 0;
    TableHead *h = table_of(&view, init);
    if (h == NULL) goto done;
    if (init) {
        result = PyLong_FromUnsignedLong(h->capacity);
        goto done;
    }
    if (strcmp(op, "count") == 0) {
        result = PyLong_FromUnsignedLong(__atomic_load_n(&h->count, __ATOMIC_RELAXED));
        goto done;
    }
    if (session <= 0) {
        PyErr_SetString(PyExc_ValueError, "session ids are positive");
        goto done;
    }
    table_lock(h);
    if (strcmp(op, "add") == 0) {
        uint32_t i = table_find(h, session, cursor);
        int added = 1;
        if (table_slots(h)[i].session == 0) {
            if ((uint64_t)h->count * 4 >= (uint64_t)h->capacity * 3) {
                added = 0;  /* full: the worker that holds the cursor still knows it */
            } else {
                table_slots(h)[i].session = session;
                table_slots(h)[i].cursor = cursor;
                h->count++;
            }
        }
        table_unlock(h);
        result = PyBool_FromLong(added);
    } else if (strcmp(op, "has") == 0) {
        uint32_t i = table_find(h, session, cursor);
        int found = table_slots(h)[i].session != 0;
        table_unlock(h);
        result = PyBool_FromLong(found);
    } else if (strcmp(op, "remove") == 0) {
        uint32_t i = table_find(h, session, cursor);
        int found = table_slots(h)[i].session != 0;
        if (found) table_delete_at(h, i);
        table_unlock(h);
        result = PyBool_FromLong(found);
    } else if (strcmp(op, "purge") == 0) {
        /* drop every cursor of the session; a slot refilled by a backward shift is looked at again */
        long removed = 0;
        Slot *slots = table_slots(h);
        for (uint32_t i = 0; i < h->capacity;) {
            if (slots[i].session == session) {
                table_delete_at(h, i);
                removed++;
            } else {
                i++;
            }
        }
        table_unlock(h);
        result = PyLong_FromLong(removed);
    } else {
        table_unlock(h);
        PyErr_Format(PyExc_ValueError, "unknown cursor table operation %s", op);
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"reply_outcome", py_reply_outcome, METH_O,
     "(ok, n, code, errmsg, cursor_id) of a reply, or None: see redact.reply_outcome"},
    {"summary_key", py_summary_key, METH_VARARGS,
     "(key, patches) for the command log's summary cache, or None: see redact.summary_key"},
    {"scan_op_msg", py_scan_op_msg, METH_VARARGS,
     "(command, database, collection, '', sequences, body_at) of an ordinary OP_MSG, or None: see codec"},
    {"cursor_table", py_cursor_table, METH_VARARGS,
     "cursor_table(buffer, op[, session, cursor]): init, count, add, has, remove, purge (see workers.CursorTable)"},
    {"read_op_msg", py_read_op_msg, METH_VARARGS,
     "(request_id, flags, command, database, collection, '', sequences, body_at) of an OP_MSG, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "gatewayproxy.wire._speedups",
    "C accelerators of the relay's per-message reads; each has a pure-Python reference.", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
