/*
 * Compiled versions of the masking scanner's per-hit loops, what PII-dense
 * data spends its time in. `sluice.masking.hits` holds the pure-Python
 * versions (used when this module is not built) and the tests hold both to
 * the same answers.
 *
 * - Collector: the automaton's match handler; keeps `start * n + index` of
 *   every hit in a C array instead of a list of Python ints.
 * - validate: runs each distinct hit's exact regex and validators (Python
 *   callables) and appends (start, end, detector) tuples to a list.
 * - place: merges sorted findings of a joined buffer into clusters and places
 *   each in the value it falls in.
 *
 * Offsets taken from Python objects are checked against the buffer before
 * any slice is made; a validator that raises counts as a hit (fail closed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- Collector */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    long long n;
    int use_end; /* key the match's end instead of its start */
    long long *keys;
    Py_ssize_t len;
    Py_ssize_t cap;
} Collector;

static PyObject *collector_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Collector *self = (Collector *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 3 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Collector(idx, start, end, ...) takes the match's index, start and end");
        return NULL;
    }
    long long idx = PyLong_AsLongLong(args[0]);
    if (idx == -1 && PyErr_Occurred())
        return NULL;
    long long start = PyLong_AsLongLong(args[self->use_end ? 2 : 1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (idx < 0 || idx >= self->n || start < 0 || start > (LLONG_MAX - idx) / self->n) {
        PyErr_SetString(PyExc_ValueError, "match index or start out of range");
        return NULL;
    }
    if (self->len == self->cap) {
        Py_ssize_t cap = self->cap ? self->cap * 2 : 64;
        long long *keys = PyMem_Realloc(self->keys, (size_t)cap * sizeof(long long));
        if (keys == NULL)
            return PyErr_NoMemory();
        self->keys = keys;
        self->cap = cap;
    }
    self->keys[self->len++] = start * self->n + idx;
    Py_RETURN_NONE;
}

static PyObject *collector_make(PyTypeObject *type, long long n, int use_end)
{
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "the number of patterns must be positive");
        return NULL;
    }
    Collector *self = (Collector *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = collector_call;
    self->n = n;
    self->use_end = use_end;
    self->keys = NULL;
    self->len = self->cap = 0;
    return (PyObject *)self;
}

static PyObject *collector_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    long long n;
    int use_end = 0;
    if (!PyArg_ParseTuple(args, "L|p:Collector", &n, &use_end))
        return NULL;
    return collector_make(type, n, use_end);
}

/* Collector(n, use_end=False) without the argument tuple: once per scan. */
static PyObject *collector_vectorcall_new(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "Collector(n, use_end=False) takes one or two positional arguments");
        return NULL;
    }
    long long n = PyLong_AsLongLong(args[0]);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    int use_end = 0;
    if (nargs == 2) {
        use_end = PyObject_IsTrue(args[1]);
        if (use_end < 0)
            return NULL;
    }
    return collector_make((PyTypeObject *)type, n, use_end);
}

static void collector_dealloc(PyObject *op)
{
    PyMem_Free(((Collector *)op)->keys);
    Py_TYPE(op)->tp_free(op);
}

static Py_ssize_t collector_len(PyObject *op)
{
    return ((Collector *)op)->len;
}

static PySequenceMethods collector_as_sequence = {.sq_length = collector_len};

static PyTypeObject CollectorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sluice.masking._hits.Collector",
    .tp_doc = "Collector(n, use_end=False): match handler keeping offset * n + index of every hit.",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = collector_new,
    .tp_vectorcall = collector_vectorcall_new,
    .tp_dealloc = collector_dealloc,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Collector, vectorcall),
    .tp_as_sequence = &collector_as_sequence,
};

/* ----------------------------------------------------------------- validate */

static int compare_keys(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

/* The span (s, e) of `m.span(g)`: 0, or -1 with an exception set. */
static int span_of(PyObject *m, PyObject *g, Py_ssize_t *s, Py_ssize_t *e)
{
    static PyObject *span_name = NULL;
    if (span_name == NULL && (span_name = PyUnicode_InternFromString("span")) == NULL)
        return -1;
    PyObject *call_args[2] = {m, g};
    PyObject *span = PyObject_VectorcallMethod(span_name, call_args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (span == NULL)
        return -1;
    if (!PyTuple_Check(span) || PyTuple_GET_SIZE(span) != 2) {
        Py_DECREF(span);
        PyErr_SetString(PyExc_TypeError, "span() must return a pair");
        return -1;
    }
    *s = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 0));
    *e = PyLong_AsSsize_t(PyTuple_GET_ITEM(span, 1));
    Py_DECREF(span);
    return PyErr_Occurred() ? -1 : 0;
}

static Py_ssize_t end_of(PyObject *m)
{
    static PyObject *end_name = NULL;
    if (end_name == NULL && (end_name = PyUnicode_InternFromString("end")) == NULL)
        return -1;
    PyObject *end = PyObject_VectorcallMethod(end_name, &m, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (end == NULL)
        return -1;
    Py_ssize_t e = PyLong_AsSsize_t(end);
    Py_DECREF(end);
    return e;
}

/* Runs every (name, validator) of `checks` on the value; appends passing ones. */
static int run_checks(PyObject *checks, PyObject *value, PyObject *before, Py_ssize_t s, Py_ssize_t e, PyObject *out)
{
    Py_ssize_t nchecks = PyTuple_GET_SIZE(checks);
    for (Py_ssize_t c = 0; c < nchecks; c++) {
        PyObject *check = PyTuple_GET_ITEM(checks, c);
        if (!PyTuple_Check(check) || PyTuple_GET_SIZE(check) != 2) {
            PyErr_SetString(PyExc_TypeError, "a check must be a (name, validator) pair");
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(check, 0);
        PyObject *call_args[2] = {value, before};
        PyObject *verdict = PyObject_Vectorcall(PyTuple_GET_ITEM(check, 1), call_args, 2, NULL);
        int valid;
        if (verdict == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return -1;
            PyErr_Clear(); /* a validator bug must not unmask: fail closed */
            valid = 1;
        } else {
            valid = PyObject_IsTrue(verdict);
            Py_DECREF(verdict);
            if (valid < 0)
                return -1;
        }
        if (valid) {
            PyObject *found = Py_BuildValue("(nnO)", s, e, name);
            if (found == NULL)
                return -1;
            int rc = PyList_Append(out, found);
            Py_DECREF(found);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

/*
 * validate(collector, buf, fast, window, out, context_bytes) -> None
 *
 * `fast[i]` is (match, groups, context, checks, entry, run) for pattern index
 * i; an entry that is not None goes to window(entry, buf, start, out). A run
 * that is not None (256 bytes, nonzero for the bytes of a class) moves the
 * hit's start back over the bytes of that class just before it, at most
 * RUN_LIMIT of them: the hit anchors a finding that begins with such a run
 * (an email's local part before its "@").
 */
#define RUN_LIMIT 256

static PyObject *validate(PyObject *self, PyObject *args)
{
    PyObject *collector, *fast, *window, *out;
    Py_buffer view;
    Py_ssize_t context_bytes;
    if (!PyArg_ParseTuple(args, "O!y*O!OO!n:validate", &CollectorType, &collector, &view, &PyTuple_Type, &fast,
                          &window, &PyList_Type, &out, &context_bytes))
        return NULL;
    Collector *hits = (Collector *)collector;
    PyObject *buf = NULL, *result = NULL;
    const char *data = (const char *)view.buf;
    Py_ssize_t size = view.len;
    if (PyTuple_GET_SIZE(fast) != hits->n) {
        PyErr_SetString(PyExc_ValueError, "one fast entry per pattern index is needed");
        goto done;
    }
    /* Slices are made of a bytes object; a bytes argument is used as is. */
    if (PyBytes_Check(PyTuple_GET_ITEM(args, 1))) {
        buf = Py_NewRef(PyTuple_GET_ITEM(args, 1));
    } else if ((buf = PyBytes_FromStringAndSize(data, size)) == NULL) {
        goto done;
    }
    qsort(hits->keys, (size_t)hits->len, sizeof(long long), compare_keys);
    long long previous = -1;
    for (Py_ssize_t k = 0; k < hits->len; k++) {
        long long key = hits->keys[k];
        if (key == previous)
            continue;
        previous = key;
        Py_ssize_t start = (Py_ssize_t)(key / hits->n);
        Py_ssize_t idx = (Py_ssize_t)(key % hits->n);
        if (start > size)
            continue; /* not a hit of this buffer */
        PyObject *entry = PyTuple_GET_ITEM(fast, idx);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 6 || !PyTuple_Check(PyTuple_GET_ITEM(entry, 1)) ||
            !PyTuple_Check(PyTuple_GET_ITEM(entry, 3))) {
            PyErr_SetString(PyExc_TypeError, "a fast entry must be (match, groups, context, checks, entry, run)");
            goto done;
        }
        PyObject *run = PyTuple_GET_ITEM(entry, 5);
        if (run != Py_None) {
            if (!PyBytes_Check(run) || PyBytes_GET_SIZE(run) != 256) {
                PyErr_SetString(PyExc_TypeError, "a run must be None or a 256-byte table");
                goto done;
            }
            const unsigned char *in_run = (const unsigned char *)PyBytes_AS_STRING(run);
            Py_ssize_t lowest = start > RUN_LIMIT ? start - RUN_LIMIT : 0;
            while (start > lowest && in_run[(unsigned char)data[start - 1]])
                start--;
        }
        PyObject *pyst = PyLong_FromSsize_t(start);
        if (pyst == NULL)
            goto done;
        PyObject *windowed = PyTuple_GET_ITEM(entry, 4);
        if (windowed != Py_None) {
            PyObject *call_args[4] = {windowed, buf, pyst, out};
            PyObject *rv = PyObject_Vectorcall(window, call_args, 4, NULL);
            Py_DECREF(pyst);
            if (rv == NULL)
                goto done;
            Py_DECREF(rv);
            continue;
        }
        PyObject *call_args[2] = {buf, pyst};
        PyObject *m = PyObject_Vectorcall(PyTuple_GET_ITEM(entry, 0), call_args, 2, NULL);
        Py_DECREF(pyst);
        if (m == NULL)
            goto done;
        if (m == Py_None) {
            Py_DECREF(m);
            continue;
        }
        PyObject *groups = PyTuple_GET_ITEM(entry, 1);
        Py_ssize_t ngroups = PyTuple_GET_SIZE(groups);
        Py_ssize_t s = -1, e = -1;
        if (ngroups) {
            for (Py_ssize_t g = 0; g < ngroups; g++) {
                if (span_of(m, PyTuple_GET_ITEM(groups, g), &s, &e) < 0) {
                    Py_DECREF(m);
                    goto done;
                }
                if (s >= 0)
                    break;
            }
            Py_DECREF(m);
            if (s < 0 || e <= s)
                continue;
        } else {
            s = start;
            e = end_of(m);
            Py_DECREF(m);
            if (e == -1 && PyErr_Occurred())
                goto done;
        }
        if (s < 0 || e < s || e > size) {
            PyErr_SetString(PyExc_ValueError, "a match's span lies outside the buffer");
            goto done;
        }
        PyObject *value = PyBytes_FromStringAndSize(data + s, e - s);
        if (value == NULL)
            goto done;
        PyObject *before;
        int context = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 2));
        if (context < 0) {
            Py_DECREF(value);
            goto done;
        }
        if (context) {
            Py_ssize_t lo = s - context_bytes > 0 ? s - context_bytes : 0;
            for (Py_ssize_t p = s; p > lo; p--) {
                if (data[p - 1] == 0) { /* the context stops at the value's start */
                    lo = p;
                    break;
                }
            }
            before = PyBytes_FromStringAndSize(data + lo, s - lo);
        } else {
            before = PyBytes_FromStringAndSize("", 0);
        }
        if (before == NULL) {
            Py_DECREF(value);
            goto done;
        }
        int rc = run_checks(PyTuple_GET_ITEM(entry, 3), value, before, s, e, out);
        Py_DECREF(value);
        Py_DECREF(before);
        if (rc < 0)
            goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(buf);
    PyBuffer_Release(&view);
    return result;
}

/* -------------------------------------------------------------------- place */

/* rank(a) > rank(b), ranks being (priority >= secret, length, priority). */
static int outranks(long pa, Py_ssize_t la, long pb, Py_ssize_t lb, long secret)
{
    int sa = pa >= secret, sb = pb >= secret;
    if (sa != sb)
        return sa > sb;
    if (la != lb)
        return la > lb;
    return pa > pb;
}

static int priority_of(PyObject *prio, PyObject *name, long *out)
{
    PyObject *p = PyDict_GetItemWithError(prio, name);
    if (p == NULL) {
        if (PyErr_Occurred())
            return -1;
        *out = 0;
        return 0;
    }
    *out = PyLong_AsLong(p);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int unpack_raw(PyObject *item, Py_ssize_t *s, Py_ssize_t *e, PyObject **name)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
        PyErr_SetString(PyExc_TypeError, "a raw finding must be (start, end, detector)");
        return -1;
    }
    *s = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 0));
    *e = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 1));
    *name = PyTuple_GET_ITEM(item, 2);
    return PyErr_Occurred() ? -1 : 0;
}

static Py_ssize_t value_length(PyObject *values, Py_ssize_t i)
{
    PyObject *v = PySequence_Fast_GET_ITEM(values, i);
    return PyObject_Length(v);
}

/* Appends finding(cs - base, ce - base, cn) to out[i]. */
static int add_finding(PyObject *out, Py_ssize_t i, PyTypeObject *finding, Py_ssize_t s, Py_ssize_t e, PyObject *name)
{
    PyObject *hit = finding->tp_alloc(finding, 3);
    if (hit == NULL)
        return -1;
    PyObject *ps = PyLong_FromSsize_t(s), *pe = PyLong_FromSsize_t(e);
    if (ps == NULL || pe == NULL) {
        Py_XDECREF(ps);
        Py_XDECREF(pe);
        Py_DECREF(hit);
        return -1;
    }
    PyTuple_SET_ITEM(hit, 0, ps);
    PyTuple_SET_ITEM(hit, 1, pe);
    PyTuple_SET_ITEM(hit, 2, Py_NewRef(name));
    PyObject *key = PyLong_FromSsize_t(i);
    if (key == NULL) {
        Py_DECREF(hit);
        return -1;
    }
    PyObject *lst = PyDict_GetItemWithError(out, key);
    int rc;
    if (lst != NULL) {
        rc = PyList_Append(lst, hit);
    } else if (PyErr_Occurred()) {
        rc = -1;
    } else {
        lst = PyList_New(1);
        if (lst == NULL) {
            rc = -1;
        } else {
            PyList_SET_ITEM(lst, 0, Py_NewRef(hit));
            rc = PyDict_SetItem(out, key, lst);
            Py_DECREF(lst);
        }
    }
    Py_DECREF(key);
    Py_DECREF(hit);
    return rc;
}

/*
 * place(raw, values, prio, secret_priority, finding, across) -> dict
 *
 * `raw` sorted (start, end, detector) findings over NUL-joined `values`.
 */
static PyObject *place(PyObject *self, PyObject *args)
{
    PyObject *raw, *values_arg, *prio, *finding_arg, *across;
    long secret;
    if (!PyArg_ParseTuple(args, "O!OO!lOO:place", &PyList_Type, &raw, &values_arg, &PyDict_Type, &prio, &secret,
                          &finding_arg, &across))
        return NULL;
    if (!PyType_Check(finding_arg) || !PyType_IsSubtype((PyTypeObject *)finding_arg, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "finding must be a tuple type");
        return NULL;
    }
    PyTypeObject *finding = (PyTypeObject *)finding_arg;
    PyObject *values = PySequence_Fast(values_arg, "values must be a sequence");
    if (values == NULL)
        return NULL;
    PyObject *out = PyDict_New();
    if (out == NULL) {
        Py_DECREF(values);
        return NULL;
    }
    Py_ssize_t nraw = PyList_GET_SIZE(raw), nvalues = PySequence_Fast_GET_SIZE(values);
    if (nraw == 0 || nvalues == 0) {
        Py_DECREF(values);
        return out;
    }
    Py_ssize_t i = 0, base = 0, last = nvalues - 1;
    Py_ssize_t vend = value_length(values, 0);
    Py_ssize_t cs, ce, s, e;
    PyObject *cn, *name;
    long cprio, nprio;
    if (vend < 0 || unpack_raw(PyList_GET_ITEM(raw, 0), &cs, &ce, &cn) < 0 || priority_of(prio, cn, &cprio) < 0)
        goto fail;
    Py_INCREF(cn);
    for (Py_ssize_t k = 1; k <= nraw; k++) {
        if (k < nraw) {
            /* The list may be changed by a callback: re-check its size. */
            if (k >= PyList_GET_SIZE(raw)) {
                PyErr_SetString(PyExc_RuntimeError, "raw findings changed during place");
                goto fail_cn;
            }
            if (unpack_raw(PyList_GET_ITEM(raw, k), &s, &e, &name) < 0)
                goto fail_cn;
            if (s >= 0 && s < ce) {
                if (priority_of(prio, name, &nprio) < 0)
                    goto fail_cn;
                if (outranks(nprio, e - s, cprio, ce - cs, secret)) {
                    Py_SETREF(cn, Py_NewRef(name));
                    cprio = nprio;
                }
                if (e > ce)
                    ce = e;
                continue;
            }
        } else {
            s = e = -1;
            name = NULL;
        }
        while (cs >= vend && i < last) {
            i++;
            base = vend + 1;
            Py_ssize_t length = value_length(values, i);
            if (length < 0)
                goto fail_cn;
            vend = base + length;
        }
        if (ce <= vend) {
            if (add_finding(out, i, finding, cs - base, ce - base, cn) < 0)
                goto fail_cn;
        } else {
            PyObject *rv = PyObject_CallFunction(across, "OOnnnnnO", values, out, i, base, vend, cs, ce, cn);
            if (rv == NULL)
                goto fail_cn;
            Py_DECREF(rv);
        }
        if (name == NULL)
            break;
        cs = s;
        ce = e;
        Py_SETREF(cn, Py_NewRef(name));
        if (priority_of(prio, cn, &cprio) < 0)
            goto fail_cn;
    }
    Py_DECREF(cn);
    Py_DECREF(values);
    return out;
fail_cn:
    Py_DECREF(cn);
fail:
    Py_DECREF(values);
    Py_DECREF(out);
    return NULL;
}


/* ----------------------------------------------------------- FastValidator */

/*
 * FastValidator(kind, reference, data): a validator with the same answers as
 * its Python `reference` (sluice.masking.validators), computed in C for the
 * common shapes of input and by calling `reference` for the rest. `data` is
 * what the kind needs from Python: the file-extension set (email), the NANP
 * fullmatch (phone), the private IPv4 (network, mask) pairs (ip_*).
 */
enum kind { K_CARD, K_SSN, K_EMAIL, K_PHONE, K_IP_PUBLIC, K_IP_PRIVATE };

static const char *const KIND_NAMES[] = {"card", "ssn", "email", "phone", "ip_public", "ip_private", NULL};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    int kind;
    PyObject *reference;
    PyObject *data;
    uint32_t nets[32][2]; /* ip_*: (network, mask) */
    Py_ssize_t nnets;
} FastValidator;

static inline int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Digits of `v` without blanks and dashes, as the reference's two replace(). */
static Py_ssize_t strip_separators(const char *v, Py_ssize_t n, char *out, Py_ssize_t cap, int *spaces, int *dashes)
{
    Py_ssize_t k = 0;
    *spaces = *dashes = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (v[i] == ' ')
            *spaces = 1;
        else if (v[i] == '-')
            *dashes = 1;
        else if (k < cap)
            out[k++] = v[i];
        else
            return -1; /* longer than any answer needs */
    }
    return k;
}

static int prefix_int(const char *d, int n)
{
    int x = 0;
    for (int i = 0; i < n; i++)
        x = x * 10 + (d[i] - '0');
    return x;
}

/* 1 valid, 0 not, -1 outside the fast path (ask the reference). */
static int card_fast(const char *v, Py_ssize_t n)
{
    char d[20];
    int spaces, dashes;
    Py_ssize_t len = strip_separators(v, n, d, sizeof d, &spaces, &dashes);
    if (len < 0 || len < 12 || len > 19)
        return 0;
    if (spaces && dashes)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (!is_digit(d[i]))
            return -1; /* int() of odd bytes: the reference decides */
    int p2 = prefix_int(d, 2), p3 = prefix_int(d, 3), p4 = prefix_int(d, 4), p6 = prefix_int(d, 6);
    int issuer;
    if (d[0] == '4')
        issuer = len == 13 || len == 16 || len == 19;
    else if ((p2 >= 51 && p2 <= 55) || (p4 >= 2221 && p4 <= 2720))
        issuer = len == 16;
    else if (p2 == 34 || p2 == 37)
        issuer = len == 15;
    else if (p4 == 6011 || (p3 >= 644 && p3 <= 649) || p2 == 65 || (p6 >= 622126 && p6 <= 622925))
        issuer = len >= 16;
    else if (p2 == 35)
        issuer = len >= 16;
    else if ((p3 >= 300 && p3 <= 305) || p2 == 36 || p2 == 38 || p2 == 39 || p4 == 3095)
        issuer = len >= 14;
    else if (p2 == 62 || p2 == 81)
        issuer = len >= 16;
    else if (p2 == 50 || (p2 >= 56 && p2 <= 69))
        issuer = 1;
    else
        issuer = p4 >= 2200 && p4 <= 2204 && len == 16;
    if (!issuer)
        return 0;
    int total = 0;
    for (Py_ssize_t i = len - 1, odd = 1; i >= 0; i--, odd = !odd) {
        int x = d[i] - '0';
        total += odd ? x : (x < 5 ? 2 * x : 2 * x - 9);
    }
    return total % 10 == 0;
}

static int ssn_fast(const char *v, Py_ssize_t n)
{
    char d[10];
    int spaces, dashes;
    Py_ssize_t len = strip_separators(v, n, d, sizeof d, &spaces, &dashes);
    if (len != 9 || (spaces && dashes))
        return 0;
    if (memcmp(d, "000", 3) == 0 || memcmp(d, "666", 3) == 0 || d[0] == '9')
        return 0;
    return memcmp(d + 3, "00", 2) != 0 && memcmp(d + 5, "0000", 4) != 0;
}

static int email_fast(FastValidator *self, const char *v, Py_ssize_t n)
{
    Py_ssize_t at = -1;
    for (Py_ssize_t i = n - 1; i >= 0; i--)
        if (v[i] == '@') {
            at = i;
            break;
        }
    if (at <= 0 || v[0] == '.' || v[at - 1] == '.')
        return 0;
    for (Py_ssize_t i = 0; i + 1 < n; i++)
        if (v[i] == '.' && v[i + 1] == '.')
            return 0;
    Py_ssize_t dot = at; /* the TLD: after the domain's last dot, or the whole domain */
    for (Py_ssize_t i = n - 1; i > at; i--)
        if (v[i] == '.') {
            dot = i;
            break;
        }
    Py_ssize_t len = n - dot - 1;
    char tld[64];
    if (len > (Py_ssize_t)sizeof tld)
        return -1;
    for (Py_ssize_t i = 0; i < len; i++) {
        char c = v[dot + 1 + i];
        tld[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    PyObject *key = PyBytes_FromStringAndSize(tld, len);
    if (key == NULL)
        return -2;
    int found = PySet_Contains(self->data, key);
    Py_DECREF(key);
    return found < 0 ? -2 : !found;
}

static inline int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static inline int is_lower(char c, char letter)
{
    return (c | 32) == letter; /* ASCII case-insensitive, for letters only */
}

/*
 * Where the reference's `(?i)\s?(?:x|ext\.?)\s?\d+$` matches in a value
 * without a newline, or n: the trailing digits, an optional blank, the
 * marker, and an optional blank before it (the leftmost start wins).
 */
static Py_ssize_t extension_start(const char *v, Py_ssize_t n)
{
    Py_ssize_t q = n;
    while (q > 0 && is_digit(v[q - 1]))
        q--;
    if (q == n)
        return n;
    if (q > 0 && is_space(v[q - 1]))
        q--;
    Py_ssize_t p;
    if (q >= 1 && is_lower(v[q - 1], 'x'))
        p = q - 1;
    else if (q >= 3 && is_lower(v[q - 3], 'e') && is_lower(v[q - 2], 'x') && is_lower(v[q - 1], 't'))
        p = q - 3;
    else if (q >= 4 && v[q - 1] == '.' && is_lower(v[q - 4], 'e') && is_lower(v[q - 3], 'x') &&
             is_lower(v[q - 2], 't'))
        p = q - 4;
    else
        return n;
    if (p > 0 && is_space(v[p - 1]))
        p--;
    return p;
}

static int phone_fast(FastValidator *self, const char *v, Py_ssize_t n)
{
    char d[16];
    Py_ssize_t len = 0;
    if (memchr(v, '\n', (size_t)n) != NULL)
        return -1; /* `$` also matches before a final newline: the reference decides */
    n = extension_start(v, n);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (is_digit(v[i])) {
            if (len == (Py_ssize_t)sizeof d)
                return 0; /* more digits than any number has */
            d[len++] = v[i];
        }
    }
    int plus = n > 0 && v[0] == '+';
    if (plus && !(n > 1 && v[1] == '1'))
        return -1; /* international: the reference asks phonenumbers */
    const char *digits = d;
    if (len == 11 && d[0] == '1') {
        digits++;
        len--;
    }
    if (len != 10)
        return 0;
    PyObject *text = PyUnicode_FromStringAndSize(digits, len);
    if (text == NULL)
        return -2;
    PyObject *m = PyObject_Vectorcall(self->data, &text, 1, NULL);
    Py_DECREF(text);
    if (m == NULL)
        return -2;
    int ok = m != Py_None;
    Py_DECREF(m);
    return ok;
}

/* 1 private, 0 public, -3 not an IPv4 address, -1 outside the fast path. */
static inline int is_word(char c)
{
    return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int ends_with_word(const char *b, Py_ssize_t q, const char *word)
{
    Py_ssize_t len = (Py_ssize_t)strlen(word);
    if (q < len)
        return 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (!is_lower(b[q - len + i], word[i]))
            return 0;
    return q == len || !is_word(b[q - len - 1]); /* \b before the word */
}

/*
 * Whether the context before an address marks a version, as the reference's
 * `(?i)(?:\bv|\b(?:version|release|firmware)[\s:=]*)$` ("v10.1.2.3",
 * "firmware: 4.3.2.1").
 */
static int version_context(const char *b, Py_ssize_t n)
{
    /* The reference looks only when the context ends in one of these bytes. */
    if (n == 0 || b[n - 1] == 0 || strchr(" \t:=vVeEnN", b[n - 1]) == NULL)
        return 0;
    if (n > 0 && is_lower(b[n - 1], 'v') && (n == 1 || !is_word(b[n - 2])))
        return 1;
    Py_ssize_t q = n;
    while (q > 0 && (is_space(b[q - 1]) || b[q - 1] == ':' || b[q - 1] == '='))
        q--;
    return ends_with_word(b, q, "version") || ends_with_word(b, q, "release") || ends_with_word(b, q, "firmware");
}

static int ipv4_fast(FastValidator *self, const char *v, Py_ssize_t n)
{
    if (memchr(v, ':', (size_t)n) != NULL)
        return -1; /* IPv6: the reference */
    uint32_t octets[4];
    int parts = 0;
    Py_ssize_t i = 0;
    while (1) {
        Py_ssize_t start = i;
        uint32_t x = 0;
        while (i < n && is_digit(v[i]))
            x = x * 10 + (uint32_t)(v[i++] - '0');
        Py_ssize_t len = i - start;
        if (len == 0 || len > 3 || (len > 1 && v[start] == '0') || x > 255 || parts == 4)
            return -3;
        octets[parts++] = x;
        if (i == n)
            break;
        if (v[i] != '.')
            return -3;
        i++;
        if (i == n)
            return -3; /* a trailing dot: an empty part */
    }
    if (parts != 4)
        return -3;
    uint32_t addr = octets[0] << 24 | octets[1] << 16 | octets[2] << 8 | octets[3];
    for (Py_ssize_t k = 0; k < self->nnets; k++)
        if ((addr & self->nets[k][1]) == self->nets[k][0])
            return 1;
    return 0;
}

static PyObject *fast_validator_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    FastValidator *self = (FastValidator *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]))
        return PyObject_Vectorcall(self->reference, args, nargsf, kwnames);
    const char *v = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    int verdict;
    switch (self->kind) {
    case K_CARD:
        verdict = card_fast(v, n);
        break;
    case K_SSN:
        verdict = ssn_fast(v, n);
        break;
    case K_EMAIL:
        verdict = email_fast(self, v, n);
        break;
    case K_PHONE:
        verdict = phone_fast(self, v, n);
        break;
    default:
        verdict = ipv4_fast(self, v, n);
        if (verdict == -3)
            verdict = 0; /* not an address: neither public nor private */
        else if (verdict >= 0)
            verdict = (self->kind == K_IP_PRIVATE ? verdict : !verdict) &&
                      !version_context(PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    }
    if (verdict == -2)
        return NULL;
    if (verdict < 0)
        return PyObject_Vectorcall(self->reference, args, nargsf, kwnames);
    return PyBool_FromLong(verdict);
}

static PyObject *fast_validator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    const char *kind_name;
    PyObject *reference, *data = Py_None;
    if (!PyArg_ParseTuple(args, "sO|O:FastValidator", &kind_name, &reference, &data))
        return NULL;
    int kind = -1;
    for (int k = 0; KIND_NAMES[k] != NULL; k++)
        if (strcmp(kind_name, KIND_NAMES[k]) == 0)
            kind = k;
    if (kind < 0) {
        PyErr_Format(PyExc_ValueError, "unknown validator kind %s", kind_name);
        return NULL;
    }
    if (!PyCallable_Check(reference) || (kind == K_PHONE && !PyCallable_Check(data)) ||
        (kind == K_EMAIL && !PyAnySet_Check(data))) {
        PyErr_SetString(PyExc_TypeError, "a callable reference and the data its kind needs are required");
        return NULL;
    }
    FastValidator *self = (FastValidator *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = fast_validator_call;
    self->kind = kind;
    self->reference = Py_NewRef(reference);
    self->data = Py_NewRef(data);
    self->nnets = 0;
    if (kind == K_IP_PUBLIC || kind == K_IP_PRIVATE) {
        PyObject *nets = PySequence_Fast(data, "ip validators need (network, mask) pairs");
        if (nets == NULL)
            goto fail;
        Py_ssize_t count = PySequence_Fast_GET_SIZE(nets);
        if (count > 32) {
            Py_DECREF(nets);
            PyErr_SetString(PyExc_ValueError, "at most 32 private networks");
            goto fail;
        }
        for (Py_ssize_t k = 0; k < count; k++) {
            unsigned long net, mask;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(nets, k), "kk", &net, &mask)) {
                Py_DECREF(nets);
                goto fail;
            }
            self->nets[k][0] = (uint32_t)net;
            self->nets[k][1] = (uint32_t)mask;
        }
        self->nnets = count;
        Py_DECREF(nets);
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int fast_validator_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((FastValidator *)op)->reference);
    Py_VISIT(((FastValidator *)op)->data);
    return 0;
}

static int fast_validator_clear(PyObject *op)
{
    Py_CLEAR(((FastValidator *)op)->reference);
    Py_CLEAR(((FastValidator *)op)->data);
    return 0;
}

static void fast_validator_dealloc(PyObject *op)
{
    PyObject_GC_UnTrack(op);
    fast_validator_clear(op);
    Py_TYPE(op)->tp_free(op);
}

static PyTypeObject FastValidatorType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sluice.masking._hits.FastValidator",
    .tp_doc = "FastValidator(kind, reference, data=None): a validator computed in C, same answers as reference.",
    .tp_basicsize = sizeof(FastValidator),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_HAVE_GC,
    .tp_new = fast_validator_new,
    .tp_dealloc = fast_validator_dealloc,
    .tp_traverse = fast_validator_traverse,
    .tp_clear = fast_validator_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(FastValidator, vectorcall),
};

/* ------------------------------------------------------------- rows_holding */

/*
 * rows_holding(collector, starts) -> list of row indexes
 *
 * `starts`: ascending offsets where each row begins. For each distinct
 * collected match end, the row holding the byte before it; sorted, unique.
 * Ends before the first row belong to no row.
 */
static PyObject *rows_holding(PyObject *self, PyObject *args)
{
    PyObject *collector, *starts;
    if (!PyArg_ParseTuple(args, "O!O!:rows_holding", &CollectorType, &collector, &PyList_Type, &starts))
        return NULL;
    Collector *hits = (Collector *)collector;
    PyObject *rows = PyList_New(0);
    if (rows == NULL)
        return NULL;
    qsort(hits->keys, (size_t)hits->len, sizeof(long long), compare_keys);
    Py_ssize_t r = 0, last = -1;
    for (Py_ssize_t k = 0; k < hits->len; k++) {
        long long target = hits->keys[k] / hits->n - 1;
        /* r = bisect_right(starts, target); keys ascend, so r only moves on. */
        while (r < PyList_GET_SIZE(starts)) {
            long long start = PyLong_AsLongLong(PyList_GET_ITEM(starts, r));
            if (start == -1 && PyErr_Occurred())
                goto fail;
            if (start > target)
                break;
            r++;
        }
        Py_ssize_t row = r - 1;
        if (row < 0 || row == last)
            continue;
        last = row;
        PyObject *index = PyLong_FromSsize_t(row);
        if (index == NULL)
            goto fail;
        int rc = PyList_Append(rows, index);
        Py_DECREF(index);
        if (rc < 0)
            goto fail;
    }
    return rows;
fail:
    Py_DECREF(rows);
    return NULL;
}

static PyMethodDef methods[] = {
    {"validate", validate, METH_VARARGS,
     "validate(collector, buf, fast, window, out, context_bytes): exact regex and validators at each distinct hit."},
    {"rows_holding", rows_holding, METH_VARARGS,
     "rows_holding(collector, starts) -> sorted indexes of the rows holding each collected end."},
    {"place", place, METH_VARARGS,
     "place(raw, values, prio, secret_priority, finding, across) -> findings per value index."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hits", "Compiled per-hit loops of the masking scanner.", -1, methods,
};

PyMODINIT_FUNC PyInit__hits(void)
{
    if (PyType_Ready(&CollectorType) < 0 || PyType_Ready(&FastValidatorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Collector", (PyObject *)&CollectorType) < 0 ||
        PyModule_AddObjectRef(m, "FastValidator", (PyObject *)&FastValidatorType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
