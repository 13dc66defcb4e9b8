/*
 * Compiled `plain_numbers_zeroed` (sluice.policy.sql), the verdict cache's
 * key for plain statement texts, computed once per statement on the hot
 * path. The Python function stays the reference (and the fallback when this
 * module is not built); the tests hold both to the same answers.
 *
 * plain_key(sql) -> str | None
 *
 * None unless every character of `sql` is one of the plain set (ASCII
 * letters, digits, `_`, whitespace and the punctuation listed below), and
 * the text holds no EXPLAIN/ANALYZE/ANALYSE/VACUUM (any case), no comment
 * start (`--`, `/ *`) and no number run into letters (`1e5`, `0x1F`).
 * Otherwise the text with every maximal run of digits that does not follow
 * a word character replaced by a single `0`.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* The characters of _PLAIN_TEXT: [A-Za-z0-9_ \t\n\r\f\v,.=<>()*;+\-/%!|&^~:\[\]@#] */
static unsigned char plain_chars[128];
static unsigned char word_chars[128];

static void init_tables(void)
{
    const char *punct = " \t\n\r\f\v,.=<>()*;+-/%!|&^~:[]@#_";
    for (int c = 0; c < 128; c++) {
        int word = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '_';
        word_chars[c] = (unsigned char)word;
        plain_chars[c] = (unsigned char)(word || (c != 0 && strchr(punct, c) != NULL));
    }
}

static inline int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline int is_letter_or_underscore(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

/* Whether `text` (lowercased ASCII) holds one of the option words. */
static int holds_option_word(const char *text, Py_ssize_t size)
{
    static const char *words[] = {"explain", "analyze", "analyse", "vacuum"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        if (memmem(text, (size_t)size, words[i], strlen(words[i])) != NULL)
            return 1;
    }
    return 0;
}

static PyObject *plain_key(PyObject *self, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "plain_key() takes a str");
        return NULL;
    }
    if (PyUnicode_READY(arg) < 0)
        return NULL;
    if (!PyUnicode_IS_ASCII(arg))
        Py_RETURN_NONE; /* non-ASCII is never plain */
    Py_ssize_t size = PyUnicode_GET_LENGTH(arg);
    const unsigned char *text = (const unsigned char *)PyUnicode_DATA(arg);

    /* One pass: the character set, comment starts, numbers run into letters,
     * and a lowercased copy for the option words. */
    char *lower = PyMem_Malloc((size_t)size + 1);
    char *out = PyMem_Malloc((size_t)size + 1);
    if (lower == NULL || out == NULL) {
        PyMem_Free(lower);
        PyMem_Free(out);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t written = 0;
    Py_ssize_t pos = 0;
    while (pos < size) {
        unsigned char c = text[pos];
        if (!plain_chars[c])
            goto not_plain;
        if ((c == '-' || c == '/') && pos + 1 < size &&
            text[pos + 1] == (c == '-' ? '-' : '*'))
            goto not_plain;
        if (is_digit(c) && (pos == 0 || !word_chars[text[pos - 1]])) {
            Py_ssize_t end = pos;
            while (end < size && is_digit(text[end])) {
                lower[end] = (char)text[end];
                end++;
            }
            if (end < size && is_letter_or_underscore(text[end]))
                goto not_plain;
            out[written++] = '0';
            pos = end;
            continue;
        }
        lower[pos] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        out[written++] = (char)c;
        pos++;
    }
    if (holds_option_word(lower, size))
        goto not_plain;
    result = PyUnicode_DecodeASCII(out, written, NULL);
    goto done;
not_plain:
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(lower);
    PyMem_Free(out);
    return result;
}

/*
 * literal_key(sql) -> str | None
 *
 * For a text that is plain (as above) outside its standard string literals
 * ('...' with '' for a quote, not right after a letter, digit, `_` or `&`,
 * so no E'', U&'', B'', X'' or N'' form) and holds
 * at least one: the text with each literal replaced by a NUL and the
 * numbers outside literals zeroed. None for any other text, and for one
 * holding a NUL or an unterminated literal. The Python
 * `py_literal_key` (sluice.policy.sql) is the reference.
 */
static PyObject *literal_key(PyObject *self, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "literal_key() takes a str");
        return NULL;
    }
    if (PyUnicode_READY(arg) < 0)
        return NULL;
    Py_ssize_t size = PyUnicode_GET_LENGTH(arg);
    int kind = PyUnicode_KIND(arg);
    const void *data = PyUnicode_DATA(arg);

    /* Outside literals only plain ASCII is accepted, so `lower` and `out`
     * hold at most `size` ASCII characters. */
    char *lower = PyMem_Malloc((size_t)size + 1);
    char *out = PyMem_Malloc((size_t)size + 1);
    if (lower == NULL || out == NULL) {
        PyMem_Free(lower);
        PyMem_Free(out);
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t written = 0; /* into out and lower alike */
    Py_ssize_t literals = 0;
    Py_UCS4 previous = 0; /* the character before this one; a literal counts as its quote */
    Py_ssize_t pos = 0;
    while (pos < size) {
        Py_UCS4 c = PyUnicode_READ(kind, data, pos);
        if (c == '\'') {
            if (previous < 128 && (word_chars[previous] || previous == '&'))
                goto not_plain;
            /* A literal: to the quote that is not doubled. */
            Py_ssize_t end = pos + 1;
            for (;;) {
                if (end >= size)
                    goto not_plain; /* unterminated */
                Py_UCS4 d = PyUnicode_READ(kind, data, end);
                if (d == 0)
                    goto not_plain;
                if (d == '\'') {
                    if (end + 1 < size && PyUnicode_READ(kind, data, end + 1) == '\'') {
                        end += 2;
                        continue;
                    }
                    break;
                }
                end++;
            }
            out[written] = '\0';
            lower[written++] = '\0';
            literals++;
            previous = '\'';
            pos = end + 1;
            continue;
        }
        if (c >= 128 || !plain_chars[c])
            goto not_plain;
        if ((c == '-' || c == '/') && pos + 1 < size &&
            PyUnicode_READ(kind, data, pos + 1) == (c == '-' ? '-' : '*'))
            goto not_plain;
        if (is_digit((unsigned char)c) && !(previous < 128 && word_chars[previous])) {
            Py_ssize_t end = pos;
            Py_UCS4 d = c;
            while (end < size && (d = PyUnicode_READ(kind, data, end)) < 128 &&
                   is_digit((unsigned char)d))
                end++;
            if (end < size && d < 128 && is_letter_or_underscore((unsigned char)d))
                goto not_plain;
            out[written] = '0';
            lower[written++] = '0';
            previous = '0';
            pos = end;
            continue;
        }
        out[written] = (char)c;
        lower[written++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        previous = c;
        pos++;
    }
    if (literals == 0 || holds_option_word(lower, written))
        goto not_plain;
    result = PyUnicode_DecodeASCII(out, written, NULL);
    goto done;
not_plain:
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(lower);
    PyMem_Free(out);
    return result;
}

static PyMethodDef methods[] = {
    {"plain_key", plain_key, METH_O,
     "plain_key(sql) -> str | None: the verdict cache key of a plain text (numbers zeroed)."},
    {"literal_key", literal_key, METH_O,
     "literal_key(sql) -> str | None: a plain text with standard literals blanked."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sqlkey", "Compiled statement cache key of the policy engine.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__sqlkey(void)
{
    init_tables();
    return PyModule_Create(&module);
}
