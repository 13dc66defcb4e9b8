/*
 * Compiled sealing of a session-log record (sluice.recording.format): the
 * record's JSON head, its SHA-256 or HMAC-SHA256 digest and its trailer, in
 * one call and one allocation. The Python path (`Recorder._record_head` and
 * `seal_record`) stays the reference and the fallback when this module is
 * not built; the tests hold both to the same bytes.
 *
 * Sealer(padded_key: bytes | None)
 *     padded_key: the HMAC key already reduced and zero-padded to SHA-256's
 *     64-byte block (RFC 2104), or None for plain SHA-256. The inner and
 *     outer states after the key block are computed once; each digest copies
 *     them (a struct copy, where hashlib's copy() duplicates an EVP context).
 *
 * Sealer.seal(seq, prev, kind, t, wall, members, limit) -> (line, digest) | None
 *     The line is
 *         {"seq":<seq>,"prev":"<prev>","kind":"<kind>","t":<repr(t)>,
 *          "wall":"<wall>",<members>,"h":"<digest>"}\n
 *     without the comma before <members> when they are empty, the digest
 *     taken over everything before ,"h". None when that content would be
 *     `limit` bytes or more (the caller hashes such records with BLAKE3).
 *
 * SHA-256 is OpenSSL's (libcrypto, already loaded by Python's hashlib). Its
 * SHA256_* functions are deprecated in OpenSSL 3 in favour of EVP, whose
 * context copies are what this module avoids; they remain part of the 3.x API.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <math.h>
#include <openssl/sha.h>
#include <string.h>

#define BLOCK 64
#define HEX_LEN 64

static const char TRAILER_HEAD[] = ",\"h\":\"";
static const char TRAILER_TAIL[] = "\"}\n";
#define TRAILER_HEAD_LEN (sizeof(TRAILER_HEAD) - 1)
#define TRAILER_TAIL_LEN (sizeof(TRAILER_TAIL) - 1)

typedef struct {
    PyObject_HEAD
    SHA256_CTX inner;
    SHA256_CTX outer;
    int keyed;
} Sealer;

static int Sealer_init(Sealer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"padded_key", NULL};
    PyObject *key = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:Sealer", kwlist, &key))
        return -1;
    SHA256_Init(&self->inner);
    self->keyed = 0;
    if (key == Py_None)
        return 0;
    if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) != BLOCK) {
        PyErr_SetString(PyExc_ValueError, "padded_key must be 64 bytes (one SHA-256 block)");
        return -1;
    }
    const unsigned char *raw = (const unsigned char *)PyBytes_AS_STRING(key);
    unsigned char ipad[BLOCK], opad[BLOCK];
    for (int i = 0; i < BLOCK; i++) {
        ipad[i] = raw[i] ^ 0x36;
        opad[i] = raw[i] ^ 0x5c;
    }
    SHA256_Init(&self->outer);
    SHA256_Update(&self->inner, ipad, BLOCK);
    SHA256_Update(&self->outer, opad, BLOCK);
    memset(ipad, 0, BLOCK);
    memset(opad, 0, BLOCK);
    self->keyed = 1;
    return 0;
}

static void Sealer_dealloc(Sealer *self)
{
    /* The states are derived from the key: do not leave them in freed memory. */
    memset(&self->inner, 0, sizeof(self->inner));
    memset(&self->outer, 0, sizeof(self->outer));
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The ASCII text of a str, or NULL with TypeError/ValueError set. */
static const char *ascii_of(PyObject *text, const char *what, Py_ssize_t *size)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s must be str", what);
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        PyErr_Format(PyExc_ValueError, "%s must be ASCII", what);
        return NULL;
    }
    *size = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_DATA(text);
}

static char *put(char *out, const char *data, size_t size)
{
    memcpy(out, data, size);
    return out + size;
}

/* The decimal digits of `value` at `out`; returns their count. */
static int put_digits(char *out, unsigned long long value)
{
    char digits[20];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    for (int i = 0; i < count; i++)
        out[i] = digits[count - 1 - i];
    return count;
}

/* repr(t) at `out` when t is a whole number of microseconds, as the writer
 * makes every record's `t` (n / 1e6 for an integer n): the decimal
 * "<seconds>.<six digits>" without the fraction's trailing zeros (one kept).
 * That decimal is the shortest text that reads back as t while a microsecond
 * exceeds the spacing of doubles near t (t below 1e9), and repr writes it
 * without an exponent from 1e-4 on. Returns its length, or 0 for any other t,
 * which PyOS_double_to_string formats (its dtoa costs more than the rest of
 * a record's head). */
static int put_micros(char *out, double t)
{
    if (!(t >= 1e-4 && t < 1e9))
        return 0;
    long long micros = llround(t * 1e6);
    if ((double)micros / 1e6 != t)
        return 0;
    int len = put_digits(out, (unsigned long long)(micros / 1000000));
    int fraction = (int)(micros % 1000000);
    out[len++] = '.';
    for (int scale = 100000; scale; scale /= 10) {
        out[len++] = (char)('0' + fraction / scale);
        fraction %= scale;
        if (!fraction)
            break; /* only zeros left: left out, one digit kept */
    }
    return len;
}

static PyObject *Sealer_seal(Sealer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "seal() takes 7 arguments (seq, prev, kind, t, wall, members, limit)");
        return NULL;
    }
    long long seq = PyLong_AsLongLong(args[0]);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t prev_len, kind_len;
    const char *prev = ascii_of(args[1], "prev", &prev_len);
    if (prev == NULL)
        return NULL;
    const char *kind = ascii_of(args[2], "kind", &kind_len);
    if (kind == NULL)
        return NULL;
    double t = PyFloat_AsDouble(args[3]);
    if (t == -1.0 && PyErr_Occurred())
        return NULL;
    if (!PyBytes_Check(args[4]) || !PyBytes_Check(args[5])) {
        PyErr_SetString(PyExc_TypeError, "wall and members must be bytes");
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[6]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    const char *wall = PyBytes_AS_STRING(args[4]);
    Py_ssize_t wall_len = PyBytes_GET_SIZE(args[4]);
    const char *members = PyBytes_AS_STRING(args[5]);
    Py_ssize_t members_len = PyBytes_GET_SIZE(args[5]);

    char seq_text[32];
    int seq_len = seq >= 0 ? put_digits(seq_text, (unsigned long long)seq)
                           : snprintf(seq_text, sizeof(seq_text), "%lld", seq);
    /* repr(t), exactly as Python's `%a` formats the float. */
    char micros_text[32];
    char *t_text = micros_text, *t_owned = NULL;
    size_t t_len = (size_t)put_micros(micros_text, t);
    if (t_len == 0) {
        t_text = t_owned = PyOS_double_to_string(t, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (t_text == NULL)
            return NULL;
        t_len = strlen(t_text);
    }

    static const char P_SEQ[] = "{\"seq\":", P_PREV[] = ",\"prev\":\"",
                      P_KIND[] = "\",\"kind\":\"", P_T[] = "\",\"t\":", P_WALL[] = ",\"wall\":\"",
                      P_END[] = "\",";
    size_t content = (sizeof(P_SEQ) - 1) + (size_t)seq_len + (sizeof(P_PREV) - 1) +
                     (size_t)prev_len + (sizeof(P_KIND) - 1) + (size_t)kind_len +
                     (sizeof(P_T) - 1) + t_len + (sizeof(P_WALL) - 1) + (size_t)wall_len +
                     (sizeof(P_END) - 1) + (size_t)members_len;
    if (members_len == 0)
        content -= 1; /* no members of its own: no separating comma */
    if ((Py_ssize_t)content >= limit) {
        PyMem_Free(t_owned);
        Py_RETURN_NONE;
    }
    PyObject *line =
        PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(content + TRAILER_HEAD_LEN + HEX_LEN +
                                                     TRAILER_TAIL_LEN));
    if (line == NULL) {
        PyMem_Free(t_owned);
        return NULL;
    }
    char *start = PyBytes_AS_STRING(line), *out = start;
    out = put(out, P_SEQ, sizeof(P_SEQ) - 1);
    out = put(out, seq_text, (size_t)seq_len);
    out = put(out, P_PREV, sizeof(P_PREV) - 1);
    out = put(out, prev, (size_t)prev_len);
    out = put(out, P_KIND, sizeof(P_KIND) - 1);
    out = put(out, kind, (size_t)kind_len);
    out = put(out, P_T, sizeof(P_T) - 1);
    out = put(out, t_text, t_len);
    out = put(out, P_WALL, sizeof(P_WALL) - 1);
    out = put(out, wall, (size_t)wall_len);
    out = put(out, P_END, members_len ? sizeof(P_END) - 1 : sizeof(P_END) - 2);
    out = put(out, members, (size_t)members_len);
    PyMem_Free(t_owned);

    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256_CTX ctx = self->inner;
    SHA256_Update(&ctx, start, content);
    SHA256_Final(digest, &ctx);
    if (self->keyed) {
        ctx = self->outer;
        SHA256_Update(&ctx, digest, SHA256_DIGEST_LENGTH);
        SHA256_Final(digest, &ctx);
    }
    memset(&ctx, 0, sizeof(ctx));

    static const char hex[] = "0123456789abcdef";
    PyObject *digest_text = PyUnicode_New(HEX_LEN, 127);
    if (digest_text == NULL) {
        Py_DECREF(line);
        return NULL;
    }
    Py_UCS1 *dtext = PyUnicode_1BYTE_DATA(digest_text);
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        dtext[2 * i] = (Py_UCS1)hex[digest[i] >> 4];
        dtext[2 * i + 1] = (Py_UCS1)hex[digest[i] & 15];
    }
    out = put(out, TRAILER_HEAD, TRAILER_HEAD_LEN);
    out = put(out, (const char *)dtext, HEX_LEN);
    put(out, TRAILER_TAIL, TRAILER_TAIL_LEN);

    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(line);
        Py_DECREF(digest_text);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, line);
    PyTuple_SET_ITEM(result, 1, digest_text);
    return result;
}

static PyMethodDef Sealer_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Sealer_seal, METH_FASTCALL,
     "seal(seq, prev, kind, t, wall, members, limit) -> (line, digest) | None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SealerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sluice.recording._seal.Sealer",
    .tp_basicsize = sizeof(Sealer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Seals session-log records with SHA-256 or HMAC-SHA256 (see the module).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sealer_init,
    .tp_dealloc = (destructor)Sealer_dealloc,
    .tp_methods = Sealer_methods,
};

static struct PyModuleDef seal_module = {
    PyModuleDef_HEAD_INIT,
    "_seal",
    "Compiled sealing of session-log records (see sluice.recording.format).",
    -1,
    NULL,
};

PyMODINIT_FUNC PyInit__seal(void)
{
    if (PyType_Ready(&SealerType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&seal_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&SealerType);
    if (PyModule_AddObject(module, "Sealer", (PyObject *)&SealerType) < 0) {
        Py_DECREF(&SealerType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
