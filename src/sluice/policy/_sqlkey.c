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

/* Whether `text` holds `word` (n > 0 bytes): memchr to each place its first
 * byte is, then the rest compared. On statement-sized texts this is a few
 * times cheaper than glibc's generic memmem, whose setup dominates. */
static int holds(const char *text, Py_ssize_t size, const char *word, Py_ssize_t n)
{
    if (n > size)
        return 0;
    const char *at = text;
    const char *last = text + (size - n); /* the last place a match may begin */
    while (at <= last) {
        at = memchr(at, word[0], (size_t)(last - at) + 1);
        if (at == NULL)
            return 0;
        if (n == 1 || (at[1] == word[1] && memcmp(at + 2, word + 2, (size_t)(n - 2)) == 0))
            return 1;
        at++;
    }
    return 0;
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

/* mentions_any(sql, words) -> bool | None
 *
 * `any(word in sql.lower() for word in words)` for an ASCII `sql`; None when
 * `sql` is not ASCII (Unicode case folding can make ASCII words of other
 * letters: the caller asks its regex). `words` is a tuple of ASCII strings,
 * compared as given (lower case: a word with a capital letter never matches,
 * as with `sql.lower()`).
 *
 * A statement is asked this several times on its way through, with a few
 * word lists (sluice.policy.prepared.mentions_words). The lower case of the
 * last text asked about is kept, with the answers given for it: the same
 * text (the same object) is lowered once, and a list asked again is answered
 * from memory. Everything here runs under the GIL, in one go.
 */
#define KEPT_ANSWERS 8
/* A longer text is answered without being kept: a statement may be tens of
 * MB, and the process would hold it and its lower case until the next one. */
#define KEPT_MAX_CHARS (64 * 1024)

static PyObject *kept_sql;                /* the last text asked about (a reference) */
static char *kept_lower;                  /* its lower case */
static PyObject *kept_words[KEPT_ANSWERS]; /* word lists asked about it (references) */
static int kept_found[KEPT_ANSWERS];
static int kept_count;

/* Releases a text and the word lists kept for it: called once the new ones
 * are in place and the answer is found, since freeing an object may run
 * Python code (a str subclass's __del__) that calls back in here. */
static void release_kept(PyObject *sql, char *lower, PyObject **words, int count)
{
    PyMem_Free(lower);
    for (int i = 0; i < count; i++)
        Py_DECREF(words[i]);
    Py_XDECREF(sql);
}

/* Whether `a` and `b` hold the same word objects: a compiled caller may build
 * its constant tuple anew per call, but from the same interned strings. */
static int same_words(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    Py_ssize_t n = PyTuple_GET_SIZE(a);
    if (PyTuple_GET_SIZE(b) != n)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PyTuple_GET_ITEM(a, i) != PyTuple_GET_ITEM(b, i))
            return 0;
    }
    return 1;
}

/* Whether lower-case `lower` holds one of `words` (checked ASCII strings). */
static int holds_any(const char *lower, Py_ssize_t size, PyObject *words)
{
    Py_ssize_t count = PyTuple_GET_SIZE(words);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *item = PyTuple_GET_ITEM(words, k);
        Py_ssize_t n = PyUnicode_GET_LENGTH(item);
        if (n == 0 || holds(lower, size, PyUnicode_DATA(item), n))
            return 1;
    }
    return 0;
}

static PyObject *mentions_any(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "mentions_any() takes a str and a tuple of str");
        return NULL;
    }
    PyObject *sql = args[0];
    PyObject *words = args[1];
    Py_ssize_t count = PyTuple_GET_SIZE(words);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *item = PyTuple_GET_ITEM(words, k);
        if (!PyUnicode_Check(item) || PyUnicode_READY(item) < 0 || !PyUnicode_IS_ASCII(item)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "mentions_any() words are ASCII strings");
            return NULL;
        }
    }
    if (PyUnicode_READY(sql) < 0)
        return NULL;
    if (!PyUnicode_IS_ASCII(sql))
        Py_RETURN_NONE;
    Py_ssize_t size = PyUnicode_GET_LENGTH(sql);
    PyObject *old_sql = NULL; /* what was kept for the text before, released at the end */
    char *old_lower = NULL;
    PyObject *old_words[KEPT_ANSWERS];
    int old_count = 0;
    if (sql != kept_sql) {
        char *lower = PyMem_Malloc((size_t)size + 1);
        if (lower == NULL)
            return PyErr_NoMemory();
        const unsigned char *text = (const unsigned char *)PyUnicode_DATA(sql);
        for (Py_ssize_t i = 0; i < size; i++) {
            unsigned char c = text[i];
            lower[i] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        if (size > KEPT_MAX_CHARS) {
            int found = holds_any(lower, size, words);
            PyMem_Free(lower);
            return PyBool_FromLong(found);
        }
        old_sql = kept_sql;
        old_lower = kept_lower;
        old_count = kept_count;
        memcpy(old_words, kept_words, sizeof(PyObject *) * (size_t)kept_count);
        Py_INCREF(sql);
        kept_sql = sql;
        kept_lower = lower;
        kept_count = 0;
    } else {
        for (int i = 0; i < kept_count; i++) {
            if (same_words(kept_words[i], words))
                return PyBool_FromLong(kept_found[i]);
        }
    }
    int found = holds_any(kept_lower, size, words);
    if (kept_count < KEPT_ANSWERS) {
        Py_INCREF(words);
        kept_words[kept_count] = words;
        kept_found[kept_count++] = found;
    }
    release_kept(old_sql, old_lower, old_words, old_count);
    return PyBool_FromLong(found);
}

static PyMethodDef methods[] = {
    {"plain_key", plain_key, METH_O,
     "plain_key(sql) -> str | None: the verdict cache key of a plain text (numbers zeroed)."},
    {"literal_key", literal_key, METH_O,
     "literal_key(sql) -> str | None: a plain text with standard literals blanked."},
    {"mentions_any", (PyCFunction)(void (*)(void))mentions_any, METH_FASTCALL,
     "mentions_any(sql, words) -> bool | None: a lower-case word of `words` in ASCII `sql`, "
     "in any letter case (None: not ASCII)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sqlkey", "Compiled statement cache key and word pre-filter of the policy engine.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__sqlkey(void)
{
    init_tables();
    return PyModule_Create(&module);
}
