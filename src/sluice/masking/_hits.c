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
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- Collector */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    long long n;
    long long *keys;
    Py_ssize_t len;
    Py_ssize_t cap;
} Collector;

static PyObject *collector_call(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Collector *self = (Collector *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "Collector(idx, start, ...) takes the match's index and start");
        return NULL;
    }
    long long idx = PyLong_AsLongLong(args[0]);
    if (idx == -1 && PyErr_Occurred())
        return NULL;
    long long start = PyLong_AsLongLong(args[1]);
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

static PyObject *collector_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    long long n;
    if (!PyArg_ParseTuple(args, "L:Collector", &n))
        return NULL;
    if (n <= 0) {
        PyErr_SetString(PyExc_ValueError, "the number of patterns must be positive");
        return NULL;
    }
    Collector *self = (Collector *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = collector_call;
    self->n = n;
    self->keys = NULL;
    self->len = self->cap = 0;
    return (PyObject *)self;
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
    .tp_doc = "Collector(n): match handler keeping start * n + index of every hit.",
    .tp_basicsize = sizeof(Collector),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = collector_new,
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
 * `fast[i]` is (match, groups, context, checks, entry) for pattern index i;
 * an entry that is not None goes to window(entry, buf, start, out).
 */
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
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 5 || !PyTuple_Check(PyTuple_GET_ITEM(entry, 1)) ||
            !PyTuple_Check(PyTuple_GET_ITEM(entry, 3))) {
            PyErr_SetString(PyExc_TypeError, "a fast entry must be (match, groups, context, checks, entry)");
            goto done;
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

static PyMethodDef methods[] = {
    {"validate", validate, METH_VARARGS,
     "validate(collector, buf, fast, window, out, context_bytes): exact regex and validators at each distinct hit."},
    {"place", place, METH_VARARGS,
     "place(raw, values, prio, secret_priority, finding, across) -> findings per value index."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hits", "Compiled per-hit loops of the masking scanner.", -1, methods,
};

PyMODINIT_FUNC PyInit__hits(void)
{
    if (PyType_Ready(&CollectorType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Collector", (PyObject *)&CollectorType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
