/*
 * protocol._car_index: where every block of a streamed CAR v1 is, framed at C speed.
 *
 * A repo export can hold a million sections in no useful order, and a backfill needs a few
 * thousand of them (the commit, the MST nodes on the fm.plyr.* path, the plyr records). Framing
 * the sections (length varint, CID, block) one by one in Python costs more than the rest of the
 * extraction together, so this module does only that: as bytes arrive it walks the sections and
 * records, per block, its offset and length under a 64-bit key taken from the end of its CID (the
 * digest's last bytes).
 *
 * Nothing is hashed here and nothing here is trusted: `find` returns every block filed under the
 * key of the CID asked for, and the caller hashes a candidate against that CID before using it.
 * A lying section header or a key collision can only produce a candidate that fails that check.
 *
 * The CAR header is parsed by the caller, which tells the index where the first section starts.
 * The stored bytes themselves stay with the caller (memory or a spill file); the index holds
 * 16 bytes a slot, at most 10/7 slots a section.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

/* A section head is the length varint and the CID: at most 5 + (1 + 9 + 9 + 9 + 64) bytes. */
#define HEAD_MAX 128
#define MAX_DIGEST 64
#define LEN_BITS 24
#define MAX_OFFSET ((uint64_t)1 << (64 - LEN_BITS))
#define MAX_BLOCK (((uint64_t)1 << LEN_BITS) - 1)
#define PREFETCH_AHEAD 256

enum { HEAD_OK = 1, HEAD_MORE = 0, HEAD_BAD = -1 };

typedef struct {
    uint64_t key;
    uint64_t packed; /* block offset << LEN_BITS | block length; 0 marks an empty slot */
} Slot;

typedef struct {
    PyObject_HEAD
    uint64_t pos;         /* absolute offset where the next section starts */
    uint64_t fed;         /* absolute offset just past the bytes fed so far */
    uint64_t max_section; /* longest section accepted (CID + block) */
    Slot *slots;
    uint64_t capacity; /* a power of two */
    unsigned shift;    /* 64 - log2(capacity): the slot of a key is its mixed hash >> shift */
    uint64_t count;
    unsigned char head[HEAD_MAX]; /* a section head cut by the end of a chunk (bytes from pos) */
    Py_ssize_t head_len;
} SectionIndex;

typedef struct {
    uint64_t head_len;  /* varint + CID */
    uint64_t section;   /* the section length the varint gives (CID + block) */
    const unsigned char *cid;
    uint64_t cid_len;
} Head;

/* An unsigned LEB128 varint of at most `max_bytes` bytes. */
static int
read_varint(const unsigned char *p, Py_ssize_t avail, int max_bytes, uint64_t *value, int *used)
{
    uint64_t v = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (i >= avail)
            return HEAD_MORE;
        v |= (uint64_t)(p[i] & 0x7F) << (7 * i);
        if (p[i] < 0x80) {
            *value = v;
            *used = i + 1;
            return HEAD_OK;
        }
    }
    return HEAD_BAD;
}

static const char *head_error;

/* Parse the section head at p; HEAD_MORE when `avail` bytes do not hold all of it yet. */
static int
parse_head(const unsigned char *p, Py_ssize_t avail, uint64_t max_section, Head *h)
{
    uint64_t section, version, codec, hash, digest_len;
    int n, r;
    r = read_varint(p, avail, 5, &section, &n);
    if (r != HEAD_OK) {
        head_error = "CAR section length varint too long";
        return r;
    }
    if (section == 0 || section > max_section) {
        head_error = "bad CAR section length";
        return HEAD_BAD;
    }
    Py_ssize_t at = n;
    const unsigned char *cid = p + at;
    if (avail < at + 2)
        return HEAD_MORE;
    if (cid[0] == 0x12 && cid[1] == 0x20) {
        at += 34; /* CIDv0: a bare sha2-256 multihash */
    }
    else {
        r = read_varint(p + at, avail - at, 1, &version, &n);
        if (r == HEAD_OK && version != 1)
            r = HEAD_BAD;
        if (r != HEAD_OK) {
            head_error = "bad CID in CAR section: not CIDv0 or CIDv1";
            return r;
        }
        at += n;
        r = read_varint(p + at, avail - at, 9, &codec, &n);
        if (r != HEAD_OK) {
            head_error = "bad CID in CAR section: codec";
            return r;
        }
        at += n;
        r = read_varint(p + at, avail - at, 9, &hash, &n);
        if (r != HEAD_OK) {
            head_error = "bad CID in CAR section: hash code";
            return r;
        }
        at += n;
        r = read_varint(p + at, avail - at, 9, &digest_len, &n);
        if (r == HEAD_OK && digest_len > MAX_DIGEST)
            r = HEAD_BAD;
        if (r != HEAD_OK) {
            head_error = "bad CID in CAR section: digest length";
            return r;
        }
        at += n + (Py_ssize_t)digest_len;
    }
    if ((uint64_t)at - (uint64_t)(cid - p) > section) {
        head_error = "CAR section shorter than its CID";
        return HEAD_BAD;
    }
    if (avail < at)
        return HEAD_MORE;
    h->cid = cid;
    h->cid_len = (uint64_t)(at - (cid - p));
    h->head_len = (uint64_t)at;
    h->section = section;
    return HEAD_OK;
}

/* The key of a CID: its last 8 bytes (digest bytes), zero-padded on the left if shorter. */
static inline uint64_t
cid_key(const unsigned char *cid, uint64_t len)
{
    unsigned char tail[8] = {0};
    uint64_t take = len < 8 ? len : 8;
    memcpy(tail + (8 - take), cid + len - take, take);
    uint64_t key;
    memcpy(&key, tail, 8);
    return key;
}

static inline uint64_t
slot_of(const SectionIndex *self, uint64_t key)
{
    /* Digests are already uniform; the multiply spreads short (identity) CIDs too. */
    return (key * 0x9E3779B97F4A7C15ULL) >> self->shift;
}

static int
grow(SectionIndex *self)
{
    uint64_t capacity = self->capacity ? self->capacity * 2 : 1024;
    Slot *slots = PyMem_Calloc((size_t)capacity, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Slot *old = self->slots;
    uint64_t old_capacity = self->capacity;
    self->slots = slots;
    self->capacity = capacity;
    self->shift = 64 - (unsigned)__builtin_ctzll(capacity);
    for (uint64_t i = 0; i < old_capacity; i++) {
        if (old[i].packed == 0)
            continue;
        uint64_t s = slot_of(self, old[i].key);
        while (slots[s].packed != 0)
            s = (s + 1) & (capacity - 1);
        slots[s] = old[i];
    }
    PyMem_Free(old);
    return 0;
}

/* File the block of the section starting at self->pos, whose head is `h`. */
static int
add_section(SectionIndex *self, const Head *h)
{
    uint64_t offset = self->pos + h->head_len;
    uint64_t length = h->section - h->cid_len;
    if (length > MAX_BLOCK || offset >= MAX_OFFSET) {
        PyErr_SetString(PyExc_ValueError, "CAR section too large to index");
        return -1;
    }
    if ((self->count + 1) * 10 > self->capacity * 7 && grow(self) < 0)
        return -1;
    uint64_t key = cid_key(h->cid, h->cid_len);
    uint64_t s = slot_of(self, key);
    while (self->slots[s].packed != 0)
        s = (s + 1) & (self->capacity - 1);
    self->slots[s].key = key;
    self->slots[s].packed = (offset << LEN_BITS) | length; /* offset > 0: the header came first */
    self->count++;
    self->pos += (h->head_len - h->cid_len) + h->section;
    return 0;
}

static int
bad_head(void)
{
    PyErr_SetString(PyExc_ValueError, head_error);
    return -1;
}

/* Frame the sections in data[0:n], which sits at absolute offset `base`. */
static int
frame(SectionIndex *self, const unsigned char *data, Py_ssize_t n, uint64_t base)
{
    Head h;
    uint64_t end = base + (uint64_t)n;
    while (self->pos < end) {
        Py_ssize_t rel = (Py_ssize_t)(self->pos - base);
        /* Where the next heads will be is known only once this one is read; asking for the
         * bytes a few cache lines ahead keeps the walk from waiting on memory (-35%). */
        if (rel + PREFETCH_AHEAD < n)
            __builtin_prefetch(data + rel + PREFETCH_AHEAD);
        if (rel + 2 * PREFETCH_AHEAD < n)
            __builtin_prefetch(data + rel + 2 * PREFETCH_AHEAD);
        int r = parse_head(data + rel, n - rel, self->max_section, &h);
        if (r == HEAD_BAD)
            return bad_head();
        if (r == HEAD_MORE) {
            /* The rest of this chunk is the start of a head (shorter than HEAD_MAX). */
            memcpy(self->head, data + rel, (size_t)(n - rel));
            self->head_len = n - rel;
            return 0;
        }
        if (add_section(self, &h) < 0)
            return -1;
    }
    return 0;
}

static int
SectionIndex_init(SectionIndex *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"start", "max_section", NULL};
    unsigned long long start = 0, max_section = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KK", kwlist, &start, &max_section))
        return -1;
    if (start == 0 || max_section == 0 || max_section > MAX_BLOCK) {
        PyErr_SetString(PyExc_ValueError, "start and max_section must be positive (max 16 MiB)");
        return -1;
    }
    PyMem_Free(self->slots);
    self->slots = NULL;
    self->capacity = 0;
    self->count = 0;
    self->pos = self->fed = start;
    self->max_section = max_section;
    self->head_len = 0;
    return grow(self);
}

static void
SectionIndex_dealloc(SectionIndex *self)
{
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
SectionIndex_feed(SectionIndex *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = view.buf;
    Py_ssize_t n = view.len;
    uint64_t base = self->fed;
    int ok = 0;
    if (self->head_len > 0) {
        /* Finish the head cut by the previous chunk from a small joined copy. */
        unsigned char joined[HEAD_MAX];
        Py_ssize_t take = HEAD_MAX - self->head_len;
        if (take > n)
            take = n;
        memcpy(joined, self->head, (size_t)self->head_len);
        memcpy(joined + self->head_len, data, (size_t)take);
        Head h;
        int r = parse_head(joined, self->head_len + take, self->max_section, &h);
        if (r == HEAD_BAD) {
            ok = bad_head();
        }
        else if (r == HEAD_MORE) {
            memcpy(self->head + self->head_len, data, (size_t)take);
            self->head_len += take;
        }
        else {
            self->head_len = 0;
            ok = add_section(self, &h);
            if (ok == 0)
                ok = frame(self, data, n, base);
        }
    }
    else {
        ok = frame(self, data, n, base);
    }
    self->fed = base + (uint64_t)n;
    PyBuffer_Release(&view);
    if (ok < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
SectionIndex_finish(SectionIndex *self, PyObject *Py_UNUSED(ignored))
{
    if (self->head_len > 0 || self->pos != self->fed) {
        PyErr_SetString(PyExc_ValueError, "truncated CAR: the last section is incomplete");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
SectionIndex_find(SectionIndex *self, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint64_t key = cid_key(view.buf, (uint64_t)view.len);
    PyBuffer_Release(&view);
    PyObject *found = PyList_New(0);
    if (found == NULL)
        return NULL;
    uint64_t s = slot_of(self, key);
    while (self->slots[s].packed != 0) {
        if (self->slots[s].key == key) {
            uint64_t packed = self->slots[s].packed;
            PyObject *pair = Py_BuildValue(
                "(KK)", (unsigned long long)(packed >> LEN_BITS),
                (unsigned long long)(packed & MAX_BLOCK));
            if (pair == NULL || PyList_Append(found, pair) < 0) {
                Py_XDECREF(pair);
                Py_DECREF(found);
                return NULL;
            }
            Py_DECREF(pair);
        }
        s = (s + 1) & (self->capacity - 1);
    }
    return found;
}

static PyObject *
SectionIndex_get_sections(SectionIndex *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->count);
}

static PyObject *
SectionIndex_get_position(SectionIndex *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->pos);
}

static PyObject *
SectionIndex_get_memory(SectionIndex *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->capacity * sizeof(Slot));
}

static PyMethodDef SectionIndex_methods[] = {
    {"feed", (PyCFunction)SectionIndex_feed, METH_O,
     "feed(data): frame the next bytes of the CAR (any bytes-like object)."},
    {"finish", (PyCFunction)SectionIndex_finish, METH_NOARGS,
     "finish(): end of input; ValueError if the last section is incomplete."},
    {"find", (PyCFunction)SectionIndex_find, METH_O,
     "find(cid) -> [(offset, length), ...]: the blocks filed under the CID's key (unverified)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SectionIndex_getset[] = {
    {"sections", (getter)SectionIndex_get_sections, NULL, "sections framed so far", NULL},
    {"position", (getter)SectionIndex_get_position, NULL, "where the next section starts", NULL},
    {"memory", (getter)SectionIndex_get_memory, NULL, "bytes held by the index", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SectionIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "protocol._car_index.SectionIndex",
    .tp_doc = PyDoc_STR(
        "SectionIndex(start, max_section): the blocks of a CAR by CID key, framed as fed."),
    .tp_basicsize = sizeof(SectionIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SectionIndex_init,
    .tp_dealloc = (destructor)SectionIndex_dealloc,
    .tp_methods = SectionIndex_methods,
    .tp_getset = SectionIndex_getset,
};

static struct PyModuleDef car_index_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "protocol._car_index",
    .m_doc = "Native framing of CAR v1 sections (see indexer/backfill/car_index.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__car_index(void)
{
    if (PyType_Ready(&SectionIndexType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&car_index_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&SectionIndexType);
    if (PyModule_AddObject(module, "SectionIndex", (PyObject *)&SectionIndexType) < 0) {
        Py_DECREF(&SectionIndexType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
