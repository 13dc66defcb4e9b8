/*
 * Compiled versions of the two loops that run once per result row on the
 * gateway's hot path. `sluice.protocols.postgres.rows` holds the pure-Python
 * versions (used when this module is not built) and the tests hold both to
 * the same answers.
 *
 * Both functions only read their input within bounds they check first; a
 * malformed frame stops the walk (datarow_run) or raises ValueError
 * (splice_columns). They never trust a length before comparing it with what
 * is left of the buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t read_u32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void write_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/*
 * datarow_run(buf, pos, size) -> (end, starts)
 *
 * Walks the run of complete DataRow ('D') frames that starts at `pos`, up to
 * `size`. Returns the offset after the last complete frame of the run and
 * the list of each frame's offset relative to `pos`. Stops, without raising,
 * at a frame of another type, an incomplete frame or a length below 4: the
 * caller's general frame walk deals with those.
 */
/*
 * The walkers below are called once per read or per result, so they take
 * their arguments the vectorcall way (METH_FASTCALL): no argument tuple is
 * built, no format string parsed, and their results are built directly.
 */
static int arg_count(const char *name, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs == expected)
        return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", name, expected,
                 nargs);
    return -1;
}

/* An index argument, as the "n" format takes it. */
static int index_arg(PyObject *arg, Py_ssize_t *out)
{
    *out = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* (n, obj), stealing `obj` whatever happens. */
static PyObject *index_and(Py_ssize_t n, PyObject *obj)
{
    PyObject *number = PyLong_FromSsize_t(n);
    PyObject *pair = number == NULL ? NULL : PyTuple_New(2);
    if (pair == NULL) {
        Py_XDECREF(number);
        Py_DECREF(obj);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, number);
    PyTuple_SET_ITEM(pair, 1, obj);
    return pair;
}

/*
 * The arguments of a run walk: (buf, pos, size), `buf` any bytes-like object
 * (as the "y*" format takes it), `size` clamped to the buffer and `pos`
 * checked against it. On failure nothing is held and an exception is set; on
 * success the caller releases `view`.
 */
static int parse_run_args(const char *name, PyObject *const *args, Py_ssize_t nargs,
                          Py_buffer *view, Py_ssize_t *pos, Py_ssize_t *size)
{
    if (arg_count(name, nargs, 3) < 0 || index_arg(args[1], pos) < 0 ||
        index_arg(args[2], size) < 0 || PyObject_GetBuffer(args[0], view, PyBUF_SIMPLE) < 0)
        return -1;
    if (*size > view->len)
        *size = view->len;
    if (*pos < 0 || *pos > *size) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        return -1;
    }
    return 0;
}

static PyObject *datarow_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, size;
    if (parse_run_args("datarow_run", args, nargs, &view, &pos, &size) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    PyObject *starts = PyList_New(0);
    if (starts == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t start = pos;
    while (size - pos >= 5 && buf[pos] == 'D') {
        uint32_t length = read_u32(buf + pos + 1);
        if (length < 4 || (Py_ssize_t)length > size - pos - 1)
            break;
        PyObject *offset = PyLong_FromSsize_t(pos - start);
        if (offset == NULL || PyList_Append(starts, offset) < 0) {
            Py_XDECREF(offset);
            Py_DECREF(starts);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(offset);
        pos += 1 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    return index_and(pos, starts);
}

/*
 * copydata_run(buf, pos, size) -> (end, payloads)
 *
 * Walks the run of complete CopyData ('d') frames that starts at `pos`, up to
 * `size`, and returns the offset after the last one and their payloads, one
 * after the other (the COPY data without the frame headers). Stops, without
 * raising, where datarow_run does.
 */
static PyObject *copydata_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    Py_ssize_t pos, size;
    if (parse_run_args("copydata_run", args, nargs, &view, &pos, &size) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t start = pos, total = 0;
    while (size - pos >= 5 && buf[pos] == 'd') {
        uint32_t length = read_u32(buf + pos + 1);
        if (length < 4 || (Py_ssize_t)length > size - pos - 1)
            break;
        total += (Py_ssize_t)length - 4;
        pos += 1 + (Py_ssize_t)length;
    }
    PyObject *payloads = PyBytes_FromStringAndSize(NULL, total);
    if (payloads == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(payloads);
    for (Py_ssize_t at = start; at < pos;) {
        Py_ssize_t body = (Py_ssize_t)read_u32(buf + at + 1) - 4;
        memcpy(out, buf + at + 5, (size_t)body);
        out += body;
        at += 5 + body;
    }
    PyBuffer_Release(&view);
    return index_and(pos, payloads);
}

/*
 * splice_columns(region, starts, replacements) -> (frames, replaced)
 *
 * `region` holds whole DataRow frames starting at the offsets in `starts`.
 * `replacements` is a tuple indexed by column: None keeps the column, bytes
 * (a 4-byte length and the value, or -1 for NULL) replaces every non-NULL
 * value of it. Returns the rewritten frames and how many values were
 * replaced. Raises ValueError on a row that is shorter than the
 * replacements or whose values run past its frame.
 */
static PyObject *splice_columns(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *starts, *replacements;
    if (!PyArg_ParseTuple(args, "y*O!O!", &view, &PyList_Type, &starts, &PyTuple_Type,
                          &replacements))
        return NULL;
    const unsigned char *region = (const unsigned char *)view.buf;
    const Py_ssize_t size = view.len;
    const Py_ssize_t rows = PyList_GET_SIZE(starts);
    const Py_ssize_t columns = PyTuple_GET_SIZE(replacements);
    PyObject *result = NULL;
    unsigned char *out = NULL;
    Py_ssize_t replaced = 0;

    /* The output size: every row grows by at most the replacement sizes. */
    Py_ssize_t extra = 0;
    for (Py_ssize_t c = 0; c < columns; c++) {
        PyObject *item = PyTuple_GET_ITEM(replacements, c);
        if (item == Py_None)
            continue;
        if (!PyBytes_Check(item) || PyBytes_GET_SIZE(item) < 4) {
            PyErr_SetString(PyExc_TypeError, "replacements must be None or length-prefixed bytes");
            goto done;
        }
        extra += PyBytes_GET_SIZE(item);
    }
    if (columns == 0 || rows == 0) {
        result = Py_BuildValue("(y#n)", region, size, (Py_ssize_t)0);
        goto done;
    }
    if (extra > PY_SSIZE_T_MAX / rows - size / rows - 1) {
        PyErr_SetString(PyExc_OverflowError, "result too large");
        goto done;
    }
    Py_ssize_t capacity = size + rows * extra;
    out = PyMem_Malloc(capacity > 0 ? (size_t)capacity : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t w = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        Py_ssize_t start = PyLong_AsSsize_t(PyList_GET_ITEM(starts, r));
        if (start == -1 && PyErr_Occurred())
            goto done;
        Py_ssize_t end = r + 1 < rows ? PyLong_AsSsize_t(PyList_GET_ITEM(starts, r + 1)) : size;
        if (end == -1 && PyErr_Occurred())
            goto done;
        if (start < 0 || end > size || end - start < 7 || region[start] != 'D') {
            PyErr_SetString(PyExc_ValueError, "a DataRow frame is out of bounds");
            goto done;
        }
        uint16_t ncols = (uint16_t)((region[start + 5] << 8) | region[start + 6]);
        if ((Py_ssize_t)ncols < columns) {
            PyErr_SetString(PyExc_ValueError, "a DataRow has fewer columns than its result");
            goto done;
        }
        Py_ssize_t frame_at = w;
        out[w++] = 'D';
        w += 4; /* the length, written when the row is done */
        out[w++] = region[start + 5];
        out[w++] = region[start + 6];
        Py_ssize_t p = start + 7;
        Py_ssize_t copied = p;
        for (Py_ssize_t c = 0; c < columns; c++) {
            if (end - p < 4) {
                PyErr_SetString(PyExc_ValueError, "a DataRow's values run past its length");
                goto done;
            }
            int32_t length = (int32_t)read_u32(region + p);
            Py_ssize_t value_end = p + 4 + (length > 0 ? (Py_ssize_t)length : 0);
            if (value_end > end || value_end < p) {
                PyErr_SetString(PyExc_ValueError, "a DataRow's values run past its length");
                goto done;
            }
            PyObject *item = PyTuple_GET_ITEM(replacements, c);
            if (item != Py_None && length >= 0) {
                memcpy(out + w, region + copied, (size_t)(p - copied));
                w += p - copied;
                Py_ssize_t n = PyBytes_GET_SIZE(item);
                memcpy(out + w, PyBytes_AS_STRING(item), (size_t)n);
                w += n;
                copied = value_end;
                replaced++;
            }
            p = value_end;
        }
        memcpy(out + w, region + copied, (size_t)(end - copied));
        w += end - copied;
        Py_ssize_t frame_length = w - frame_at - 1;
        if (frame_length > (Py_ssize_t)UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a DataRow grew too large");
            goto done;
        }
        write_u32(out + frame_at + 1, (uint32_t)frame_length);
    }
    result = Py_BuildValue("(y#n)", out, w, replaced);
done:
    PyMem_Free(out);
    PyBuffer_Release(&view);
    return result;
}

/* Bounds [start, end) of row i of a run; 0, or -1 with ValueError set. */
static int row_bounds(Py_ssize_t size, PyObject *starts, Py_ssize_t i, const unsigned char *region, Py_ssize_t *start,
                      Py_ssize_t *end)
{
    Py_ssize_t n = PyList_GET_SIZE(starts);
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_ValueError, "a row index is out of range");
        return -1;
    }
    *start = PyLong_AsSsize_t(PyList_GET_ITEM(starts, i));
    if (*start == -1 && PyErr_Occurred())
        return -1;
    if (i + 1 < n) {
        *end = PyLong_AsSsize_t(PyList_GET_ITEM(starts, i + 1));
        if (*end == -1 && PyErr_Occurred())
            return -1;
    } else {
        *end = size;
    }
    if (*start < 0 || *end > size || *end - *start < 7 || region[*start] != 'D') {
        PyErr_SetString(PyExc_ValueError, "a DataRow frame is out of bounds");
        return -1;
    }
    return 0;
}

/*
 * decode_rows(region, starts, indexes) -> list of lists of bytes | None
 *
 * The values of the rows `indexes` of the run of DataRows beginning at
 * `starts`. ValueError on a frame out of bounds or values past its frame.
 */
static PyObject *decode_rows(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *starts, *indexes;
    if (!PyArg_ParseTuple(args, "y*O!O!", &view, &PyList_Type, &starts, &PyList_Type, &indexes))
        return NULL;
    const unsigned char *region = (const unsigned char *)view.buf;
    PyObject *rows = PyList_New(0);
    if (rows == NULL)
        goto fail;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(indexes); k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyList_GET_ITEM(indexes, k));
        if (i == -1 && PyErr_Occurred())
            goto fail;
        Py_ssize_t start, end;
        if (row_bounds(view.len, starts, i, region, &start, &end) < 0)
            goto fail;
        int16_t count = (int16_t)((region[start + 5] << 8) | region[start + 6]);
        PyObject *values = PyList_New(count > 0 ? count : 0);
        if (values == NULL)
            goto fail;
        Py_ssize_t pos = start + 7;
        for (int c = 0; c < count; c++) {
            if (end - pos < 4) {
                Py_DECREF(values);
                PyErr_SetString(PyExc_ValueError, "a DataRow's values run past its length");
                goto fail;
            }
            int32_t length = (int32_t)read_u32(region + pos);
            pos += 4;
            PyObject *value;
            if (length < 0) {
                value = Py_NewRef(Py_None);
            } else if (end - pos < length) {
                Py_DECREF(values);
                PyErr_SetString(PyExc_ValueError, "a DataRow's values run past its length");
                goto fail;
            } else {
                value = PyBytes_FromStringAndSize((const char *)region + pos, length);
                if (value == NULL) {
                    Py_DECREF(values);
                    goto fail;
                }
                pos += length;
            }
            PyList_SET_ITEM(values, c, value);
        }
        int rc = PyList_Append(rows, values);
        Py_DECREF(values);
        if (rc < 0)
            goto fail;
    }
    PyBuffer_Release(&view);
    return rows;
fail:
    Py_XDECREF(rows);
    PyBuffer_Release(&view);
    return NULL;
}

/*
 * rewrite_rows(region, starts, changed) -> bytes
 *
 * The run with rows replaced; `changed` lists (row index, new values) in
 * ascending index order.
 */
static PyObject *rewrite_rows(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *starts, *changed;
    if (!PyArg_ParseTuple(args, "y*O!O!", &view, &PyList_Type, &starts, &PyList_Type, &changed))
        return NULL;
    const unsigned char *region = (const unsigned char *)view.buf;
    Py_ssize_t nchanged = PyList_GET_SIZE(changed);
    PyObject *result = NULL;
    unsigned char *out = NULL;
    /* First pass: check everything and size the output. */
    Py_ssize_t total = view.len, copied = 0;
    for (Py_ssize_t k = 0; k < nchanged; k++) {
        PyObject *item = PyList_GET_ITEM(changed, k);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyList_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "changed rows must be (index, list of values) pairs");
            goto done;
        }
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 0));
        if (i == -1 && PyErr_Occurred())
            goto done;
        Py_ssize_t start, end;
        if (row_bounds(view.len, starts, i, region, &start, &end) < 0)
            goto done;
        if (start < copied) {
            PyErr_SetString(PyExc_ValueError, "changed rows must be in ascending order");
            goto done;
        }
        copied = end;
        PyObject *values = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t ncols = PyList_GET_SIZE(values);
        if (ncols > 0x7FFF) {
            PyErr_SetString(PyExc_ValueError, "a DataRow has too many columns");
            goto done;
        }
        Py_ssize_t frame = 7;
        for (Py_ssize_t c = 0; c < ncols; c++) {
            PyObject *value = PyList_GET_ITEM(values, c);
            if (value == Py_None) {
                frame += 4;
            } else if (PyBytes_Check(value)) {
                if (PyBytes_GET_SIZE(value) > 0x7FFFFFFF) {
                    PyErr_SetString(PyExc_ValueError, "a value is too large for a DataRow");
                    goto done;
                }
                frame += 4 + PyBytes_GET_SIZE(value);
            } else {
                PyErr_SetString(PyExc_TypeError, "a DataRow value must be bytes or None");
                goto done;
            }
        }
        if (frame - 1 > (Py_ssize_t)UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "a DataRow grew too large");
            goto done;
        }
        total += frame - (end - start);
    }
    out = PyMem_Malloc(total > 0 ? (size_t)total : 1);
    if (out == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Second pass: write. Values are re-read: nothing ran in between. */
    Py_ssize_t w = 0;
    copied = 0;
    for (Py_ssize_t k = 0; k < nchanged; k++) {
        PyObject *item = PyList_GET_ITEM(changed, k);
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 0));
        Py_ssize_t start, end;
        if (row_bounds(view.len, starts, i, region, &start, &end) < 0)
            goto done;
        memcpy(out + w, region + copied, (size_t)(start - copied));
        w += start - copied;
        PyObject *values = PyTuple_GET_ITEM(item, 1);
        Py_ssize_t ncols = PyList_GET_SIZE(values);
        Py_ssize_t frame_at = w;
        out[w] = 'D';
        w += 5;
        out[w++] = (unsigned char)(ncols >> 8);
        out[w++] = (unsigned char)ncols;
        for (Py_ssize_t c = 0; c < ncols; c++) {
            PyObject *value = PyList_GET_ITEM(values, c);
            if (value == Py_None) {
                write_u32(out + w, 0xFFFFFFFFu);
                w += 4;
            } else {
                Py_ssize_t n = PyBytes_GET_SIZE(value);
                write_u32(out + w, (uint32_t)n);
                w += 4;
                memcpy(out + w, PyBytes_AS_STRING(value), (size_t)n);
                w += n;
            }
        }
        write_u32(out + frame_at + 1, (uint32_t)(w - frame_at - 1));
        copied = end;
    }
    memcpy(out + w, region + copied, (size_t)(view.len - copied));
    w += view.len - copied;
    result = PyBytes_FromStringAndSize((const char *)out, w);
done:
    PyMem_Free(out);
    PyBuffer_Release(&view);
    return result;
}

/*
 * walk_frames(buf, pos, size, stop_kinds) -> (pos, readies, status)
 *
 * Skips complete frames from `pos`; stops at an incomplete frame, a length
 * below 4 or a frame whose type is in `stop_kinds`. Counts ReadyForQuery
 * frames and returns the status byte of the last (0 if none).
 */
static PyObject *walk_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view, stops;
    Py_ssize_t pos, size;
    if (arg_count("walk_frames", nargs, 4) < 0 || index_arg(args[1], &pos) < 0 ||
        index_arg(args[2], &size) < 0 || PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[3], &stops, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    PyObject *result = NULL;
    if (size > view.len)
        size = view.len;
    if (pos < 0 || pos > size) {
        PyErr_SetString(PyExc_ValueError, "pos out of range");
        goto done;
    }
    const unsigned char *buf = (const unsigned char *)view.buf;
    long readies = 0;
    int status = 0;
    while (size - pos >= 5) {
        unsigned char kind = buf[pos];
        uint32_t length = read_u32(buf + pos + 1);
        if (length < 4 || (Py_ssize_t)length > size - pos - 1 ||
            (stops.len > 0 && memchr(stops.buf, kind, (size_t)stops.len) != NULL))
            break;
        if (kind == 'Z') {
            readies++;
            status = length > 4 ? buf[pos + 5] : 'I';
        }
        pos += 1 + (Py_ssize_t)length;
    }
    PyObject *end = PyLong_FromSsize_t(pos);
    PyObject *count = end == NULL ? NULL : PyLong_FromLong(readies);
    PyObject *last = count == NULL ? NULL : PyLong_FromLong(status);
    result = last == NULL ? NULL : PyTuple_New(3);
    if (result == NULL) {
        Py_XDECREF(end);
        Py_XDECREF(count);
        Py_XDECREF(last);
        goto done;
    }
    PyTuple_SET_ITEM(result, 0, end);
    PyTuple_SET_ITEM(result, 1, count);
    PyTuple_SET_ITEM(result, 2, last);
done:
    PyBuffer_Release(&stops);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"datarow_run", (PyCFunction)(void (*)(void))datarow_run, METH_FASTCALL,
     "datarow_run(buf, pos, size) -> (end, starts): walk a run of complete DataRow frames."},
    {"copydata_run", (PyCFunction)(void (*)(void))copydata_run, METH_FASTCALL,
     "copydata_run(buf, pos, size) -> (end, payloads): walk a run of complete CopyData frames."},
    {"walk_frames", (PyCFunction)(void (*)(void))walk_frames, METH_FASTCALL,
     "walk_frames(buf, pos, size, stop_kinds) -> (pos, readies, status)."},
    {"decode_rows", decode_rows, METH_VARARGS,
     "decode_rows(region, starts, indexes) -> the values of those rows."},
    {"rewrite_rows", rewrite_rows, METH_VARARGS,
     "rewrite_rows(region, starts, changed) -> the run with (index, values) rows replaced."},
    {"splice_columns", splice_columns, METH_VARARGS,
     "splice_columns(region, starts, replacements) -> (frames, replaced)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Compiled DataRow loops of the gateway's hot path.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
