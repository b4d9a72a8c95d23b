/*
 * jobtrace's approximate peak-memory tracker: which Python stacks allocated the memory
 * that was live when the process's heap peaked (Fil/Sciagraph semantics), cheaply enough
 * to stay on by default.
 *
 * How:
 * - It wraps CPython's RAW allocator domain and pymalloc's arena allocator (or, without
 *   pymalloc, the MEM and OBJ domains) and, once numpy is imported, numpy's default
 *   array-data handler, so Python objects, bytes/bytearray buffers and array data all
 *   pass through it, while the small-object churn of Python code does not.
 * - Allocations are sampled by bytes: a countdown drawn from an exponential distribution
 *   (mean `interval` bytes) is decreased by each allocation's size, and the allocation that
 *   takes it below zero is sampled. Every allocation larger than a few intervals is
 *   therefore sampled, small ones statistically. A sample stands for size / (1 - e^(-size /
 *   interval)) bytes, the unbiased estimate of the bytes its stack allocated (as in
 *   tcmalloc's and Go's heap profilers).
 * - A sample captures the Python stack (code object and instruction offset per frame, no
 *   allocation: frame objects are not materialised), interns it, and adds its weight to
 *   the stack's live bytes; freeing a sampled pointer subtracts it again. The unsampled
 *   majority costs one subtraction on allocation and one probe of a sparse hash table on
 *   free.
 * - When the estimated live total passes the last snapshot by more than 1 % (or one
 *   interval), every stack's live bytes are copied to its "at peak" bytes: the profile of
 *   the peak, within 1 % of it, at a cost bounded by the number of stacks per 1 % growth.
 *
 * Thread safety: the GIL guards all state. CPython calls the arena allocator and the MEM
 * and OBJ domains with the GIL held; RAW and numpy's handler may be called without it, and
 * such calls are passed through untouched (a free without the GIL leaves a stale entry
 * behind, which a later allocation at the same address replaces).
 *
 * Nothing here calls back into Python or allocates through PyMem while inside a hook, so
 * the hooks never re-enter themselves nor trigger the garbage collector. Internal tables
 * use libc's allocator directly.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030b0000
#error "jobtrace._memtrack needs CPython 3.11 or newer"
#endif

/* The interpreter's frame layout (internal headers): walking frames without creating
 * frame objects is what lets a hook capture the stack without allocating. */
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE

#define MAX_DEPTH 256

/* -- frames and interned stacks ----------------------------------------------------------- */

typedef struct {
    PyCodeObject *code; /* strong reference, so the pointer stays meaningful */
    int lasti;          /* instruction index; turned into a line number only when read */
} frame_t;

typedef struct {
    uint64_t hash;
    uint32_t start; /* index of its first frame in `frames` (innermost first) */
    uint32_t depth;
    int64_t live;    /* estimated live bytes allocated by this stack */
    int64_t at_peak; /* `live` at the last snapshot */
} stack_t;

static frame_t *frames;
static size_t frames_len, frames_cap;
static stack_t *stacks;
static size_t stacks_len, stacks_cap;
static uint32_t *stack_index; /* open addressing: stack id + 1, 0 = empty */
static size_t stack_index_cap;

/* -- live sampled allocations -------------------------------------------------------------- */

typedef struct {
    uintptr_t ptr; /* 0 = empty slot */
    int64_t weight;
    uint32_t stack;
} alloc_t;

static alloc_t *allocs;
static size_t allocs_len, allocs_mask; /* capacity = mask + 1, a power of two */

/* -- sampling and totals ------------------------------------------------------------------- */

static int installed;
static int active;            /* hooks installed and tracking (0: pass-through) */
static double interval = 262144.0;
static int64_t countdown;
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static int64_t live_total, peak_total, snapshot_total;
static uint64_t sample_count, stale_frees;

static PyMemAllocatorEx orig_mem, orig_obj, hook_mem, hook_obj;
static PyObjectArenaAllocator hook_arena;

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static int64_t next_countdown(void)
{
    /* xorshift64*: a private generator, so sampling never disturbs `random`'s state */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545F4914F6CDD1DULL;
    double u = ((double)(r >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
    double value = -log(u) * interval;
    return value < 1.0 ? 1 : (int64_t)value;
}

static int grow(void **array, size_t *cap, size_t need, size_t item)
{
    if (need <= *cap)
        return 0;
    size_t cap2 = *cap ? *cap : 64;
    while (cap2 < need)
        cap2 *= 2;
    void *p = realloc(*array, cap2 * item);
    if (p == NULL)
        return -1;
    *array = p;
    *cap = cap2;
    return 0;
}

/* Capture the current thread's stack (innermost first) into `out`; returns its depth. */
static int capture(frame_t *out)
{
    PyThreadState *tstate = PyThreadState_GET();
    if (tstate == NULL)
        return 0;
#if PY_VERSION_HEX >= 0x030d0000
    _PyInterpreterFrame *f = tstate->current_frame;
#else
    _PyInterpreterFrame *f = tstate->cframe ? tstate->cframe->current_frame : NULL;
#endif
    int depth = 0;
    for (; f != NULL && depth < MAX_DEPTH; f = f->previous) {
        if (_PyFrame_IsIncomplete(f))
            continue;
#if PY_VERSION_HEX >= 0x030d0000
        PyObject *exe = f->f_executable;
        if (exe == NULL || !PyCode_Check(exe))
            continue;
        out[depth].code = (PyCodeObject *)exe;
#else
        out[depth].code = f->f_code;
#endif
        out[depth].lasti = _PyInterpreterFrame_LASTI(f);
        depth++;
    }
    return depth;
}

/* The id of the stack `fr[0:depth]`, interned; UINT32_MAX when out of memory. */
static uint32_t intern_stack(frame_t *fr, int depth)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)depth;
    for (int i = 0; i < depth; i++)
        h = mix64(h ^ (uintptr_t)fr[i].code ^ ((uint64_t)(uint32_t)fr[i].lasti << 40));
    if (stack_index_cap == 0 || (stacks_len + 1) * 2 > stack_index_cap) {
        size_t cap2 = stack_index_cap ? stack_index_cap * 2 : 1024;
        uint32_t *idx = calloc(cap2, sizeof(uint32_t));
        if (idx == NULL)
            return UINT32_MAX;
        for (size_t s = 0; s < stacks_len; s++) {
            size_t j = stacks[s].hash & (cap2 - 1);
            while (idx[j])
                j = (j + 1) & (cap2 - 1);
            idx[j] = (uint32_t)s + 1;
        }
        free(stack_index);
        stack_index = idx;
        stack_index_cap = cap2;
    }
    size_t mask = stack_index_cap - 1, j = h & mask;
    for (; stack_index[j]; j = (j + 1) & mask) {
        stack_t *s = &stacks[stack_index[j] - 1];
        if (s->hash == h && s->depth == (uint32_t)depth &&
            memcmp(&frames[s->start], fr, (size_t)depth * sizeof(frame_t)) == 0)
            return stack_index[j] - 1;
    }
    if (grow((void **)&stacks, &stacks_cap, stacks_len + 1, sizeof(stack_t)) < 0 ||
        grow((void **)&frames, &frames_cap, frames_len + (size_t)depth, sizeof(frame_t)) < 0)
        return UINT32_MAX;
    for (int i = 0; i < depth; i++)
        Py_INCREF(fr[i].code);
    memcpy(&frames[frames_len], fr, (size_t)depth * sizeof(frame_t));
    stack_t *s = &stacks[stacks_len];
    s->hash = h;
    s->start = (uint32_t)frames_len;
    s->depth = (uint32_t)depth;
    s->live = 0;
    s->at_peak = 0;
    frames_len += (size_t)depth;
    stack_index[j] = (uint32_t)stacks_len + 1;
    return (uint32_t)stacks_len++;
}

static void snapshot(void)
{
    for (size_t i = 0; i < stacks_len; i++)
        stacks[i].at_peak = stacks[i].live;
    snapshot_total = live_total;
}

static inline size_t slot_of(uintptr_t ptr) { return (size_t)mix64(ptr) & allocs_mask; }

/* Forget `ptr` if it was sampled (backward-shift deletion keeps probes short). */
static void untrack(uintptr_t ptr)
{
    size_t i = slot_of(ptr);
    while (allocs[i].ptr != ptr) {
        if (allocs[i].ptr == 0)
            return;
        i = (i + 1) & allocs_mask;
    }
    alloc_t *a = &allocs[i];
    if (a->stack < stacks_len)
        stacks[a->stack].live -= a->weight;
    live_total -= a->weight;
    allocs_len--;
    size_t hole = i;
    for (size_t k = (i + 1) & allocs_mask; allocs[k].ptr; k = (k + 1) & allocs_mask) {
        size_t home = slot_of(allocs[k].ptr);
        /* can the entry at k move into the hole? (its home is not in (hole, k]) */
        if (((k - home) & allocs_mask) >= ((k - hole) & allocs_mask)) {
            allocs[hole] = allocs[k];
            hole = k;
        }
    }
    allocs[hole].ptr = 0;
}

static int insert(uintptr_t ptr, int64_t weight, uint32_t stack)
{
    if ((allocs_len + 1) * 2 > allocs_mask + 1) {
        size_t cap2 = (allocs_mask + 1) * 2;
        alloc_t *old = allocs;
        size_t old_cap = allocs_mask + 1;
        alloc_t *fresh = calloc(cap2, sizeof(alloc_t));
        if (fresh == NULL)
            return -1;
        allocs = fresh;
        allocs_mask = cap2 - 1;
        for (size_t k = 0; k < old_cap; k++) {
            if (old[k].ptr) {
                size_t j = slot_of(old[k].ptr);
                while (allocs[j].ptr)
                    j = (j + 1) & allocs_mask;
                allocs[j] = old[k];
            }
        }
        free(old);
    }
    size_t j = slot_of(ptr);
    while (allocs[j].ptr && allocs[j].ptr != ptr)
        j = (j + 1) & allocs_mask;
    if (allocs[j].ptr == ptr) { /* a stale entry (freed without the GIL): replace it */
        if (allocs[j].stack < stacks_len)
            stacks[allocs[j].stack].live -= allocs[j].weight;
        live_total -= allocs[j].weight;
        allocs_len--;
    }
    allocs[j].ptr = ptr;
    allocs[j].weight = weight;
    allocs[j].stack = stack;
    allocs_len++;
    return 0;
}

/* A sampled allocation of `size` bytes at `ptr`, standing for `weight` bytes. */
static void on_sample(void *ptr, size_t size, double weight)
{
    frame_t fr[MAX_DEPTH];
    int depth = capture(fr);
    uint32_t stack = intern_stack(fr, depth);
    if (stack == UINT32_MAX || insert((uintptr_t)ptr, (int64_t)weight, stack) < 0)
        return; /* out of memory for our own tables: the sample is lost, not the program */
    sample_count++;
    stacks[stack].live += (int64_t)weight;
    live_total += (int64_t)weight;
    if (live_total > peak_total)
        peak_total = live_total;
    int64_t margin = snapshot_total / 100;
    if (margin < (int64_t)interval)
        margin = (int64_t)interval;
    if (live_total > snapshot_total + margin)
        snapshot();
}

static void sampled(void *ptr, size_t size)
{
    countdown = next_countdown();
    double s = (double)size;
    on_sample(ptr, size, s >= 20.0 * interval ? s : s / (1.0 - exp(-s / interval)));
}

#define AFTER_ALLOC(p, size)                                                                 \
    do {                                                                                     \
        if ((p) != NULL && active && (countdown -= (int64_t)(size)) <= 0)                    \
            sampled((p), (size));                                                            \
    } while (0)

#define BEFORE_FREE(p)                                                                       \
    do {                                                                                     \
        if (allocs_len && (p) != NULL)                                                       \
            untrack((uintptr_t)(p));                                                         \
    } while (0)

/* -- CPython's allocators --------------------------------------------------------------------
 *
 * Default layout (pymalloc): blocks of up to 512 bytes come from pymalloc's 1 MiB arenas,
 * larger ones from the RAW domain. So the RAW domain and the arena allocator see every
 * byte of the Python heap while the small-object churn that dominates Python code passes
 * by untouched: a new arena is attributed whole to the allocation that needed it, and
 * freeing the arena (once empty) releases it. RAW may be called without the GIL; such
 * calls are passed through (see the top of the file).
 *
 * Without pymalloc (PYTHONMALLOC=malloc) the MEM and OBJ domains are wrapped instead,
 * with the same sampling for every block. ctx: the wrapped allocator. */

static PyMemAllocatorEx orig_raw;

/* Whether this thread holds the GIL: the thread state running Python now is this thread's
 * own. (PyGILState_Check answers 1 without looking once subinterpreters exist.) */
static inline int holds_gil(void)
{
#if PY_VERSION_HEX >= 0x030d0000
    PyThreadState *now = PyThreadState_GetUnchecked();
#else
    PyThreadState *now = _PyThreadState_UncheckedGet();
#endif
    return now != NULL && now == PyGILState_GetThisThreadState();
}
static PyObjectArenaAllocator orig_arena;
static int domains; /* 1: MEM and OBJ hooked; 0: RAW and arenas */

static void *py_malloc(void *ctx, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    void *p = a->malloc(a->ctx, size);
    AFTER_ALLOC(p, size);
    return p;
}

static void *py_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = ctx;
    void *p = a->calloc(a->ctx, nelem, elsize);
    AFTER_ALLOC(p, nelem * elsize);
    return p;
}

static void *py_realloc(void *ctx, void *ptr, size_t size)
{
    PyMemAllocatorEx *a = ctx;
    void *p = a->realloc(a->ctx, ptr, size);
    if (p != NULL) { /* on failure the old block lives on, still tracked */
        BEFORE_FREE(ptr);
        AFTER_ALLOC(p, size);
    }
    return p;
}

static void py_free(void *ctx, void *ptr)
{
    PyMemAllocatorEx *a = ctx;
    BEFORE_FREE(ptr);
    a->free(a->ctx, ptr);
}

static void *raw_malloc(void *ctx, size_t size)
{
    void *p = orig_raw.malloc(orig_raw.ctx, size);
    if (holds_gil())
        AFTER_ALLOC(p, size);
    return p;
}

static void *raw_calloc(void *ctx, size_t nelem, size_t elsize)
{
    void *p = orig_raw.calloc(orig_raw.ctx, nelem, elsize);
    if (holds_gil())
        AFTER_ALLOC(p, nelem * elsize);
    return p;
}

static void *raw_realloc(void *ctx, void *ptr, size_t size)
{
    void *p = orig_raw.realloc(orig_raw.ctx, ptr, size);
    if (p != NULL && holds_gil()) {
        BEFORE_FREE(ptr);
        AFTER_ALLOC(p, size);
    }
    return p;
}

static void raw_free(void *ctx, void *ptr)
{
    if (allocs_len && ptr != NULL) {
        if (holds_gil())
            untrack((uintptr_t)ptr);
        else
            stale_frees++; /* unsynchronised counter: a diagnostic only */
    }
    orig_raw.free(orig_raw.ctx, ptr);
}

static void *arena_alloc(void *ctx, size_t size)
{
    void *p = orig_arena.alloc(orig_arena.ctx, size);
    /* An arena is always recorded, whole: it is rare and large. */
    if (p != NULL && active)
        on_sample(p, size, (double)size);
    return p;
}

static void arena_free(void *ctx, void *ptr, size_t size)
{
    BEFORE_FREE(ptr);
    orig_arena.free(orig_arena.ctx, ptr, size);
}

/* -- numpy's array data (PyDataMem_Handler, version 1) -------------------------------------- */

typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} np_allocator_t;

typedef struct {
    char name[127];
    uint8_t version;
    np_allocator_t allocator;
} np_handler_t;

static np_handler_t *np_handler; /* numpy's default handler, patched in place */
static np_allocator_t np_orig;

static void *np_malloc(void *ctx, size_t size)
{
    void *p = np_orig.malloc(ctx, size);
    if (holds_gil())
        AFTER_ALLOC(p, size);
    return p;
}

static void *np_calloc(void *ctx, size_t nelem, size_t elsize)
{
    void *p = np_orig.calloc(ctx, nelem, elsize);
    if (holds_gil())
        AFTER_ALLOC(p, nelem * elsize);
    return p;
}

static void *np_realloc(void *ctx, void *ptr, size_t size)
{
    void *p = np_orig.realloc(ctx, ptr, size);
    if (p != NULL && holds_gil()) {
        BEFORE_FREE(ptr);
        AFTER_ALLOC(p, size);
    }
    return p;
}

static void np_free(void *ctx, void *ptr, size_t size)
{
    if (holds_gil())
        BEFORE_FREE(ptr);
    else if (allocs_len)
        stale_frees++; /* unsynchronised counter: a diagnostic only */
    np_orig.free(ctx, ptr, size);
}

/* -- Python API ----------------------------------------------------------------------------- */

static int ours(PyMemAllocatorDomain domain, PyMemAllocatorEx *hook)
{
    PyMemAllocatorEx now;
    PyMem_GetAllocator(domain, &now);
    return now.malloc == hook->malloc && now.ctx == hook->ctx;
}

static PyObject *mt_start(PyObject *self, PyObject *args)
{
    double every;
    int use_domains = 0;
    if (!PyArg_ParseTuple(args, "d|p", &every, &use_domains))
        return NULL;
    if (!(every >= 1.0)) {
        PyErr_SetString(PyExc_ValueError, "the sampling interval must be at least 1 byte");
        return NULL;
    }
    if (allocs == NULL) {
        allocs = calloc(1024, sizeof(alloc_t));
        if (allocs == NULL)
            return PyErr_NoMemory();
        allocs_mask = 1023;
    }
    interval = every;
    countdown = next_countdown();
    /* A new session's peak starts from what is live now. */
    peak_total = live_total;
    snapshot();
    if (!installed) {
        domains = use_domains;
        if (domains) {
            PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
            PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
            hook_mem = (PyMemAllocatorEx){&orig_mem, py_malloc, py_calloc, py_realloc, py_free};
            hook_obj = (PyMemAllocatorEx){&orig_obj, py_malloc, py_calloc, py_realloc, py_free};
            PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &hook_mem);
            PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook_obj);
        } else {
            /* The hooks keep the wrapped allocators' ctx (they ignore it): a thread that
             * reads the allocator while it is being replaced, without the GIL as RAW
             * allows, then gets a ctx valid for either function. */
            PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &orig_raw);
            hook_mem = (PyMemAllocatorEx){orig_raw.ctx, raw_malloc, raw_calloc, raw_realloc,
                                          raw_free};
            PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &hook_mem);
            PyObject_GetArenaAllocator(&orig_arena);
            hook_arena = (PyObjectArenaAllocator){orig_arena.ctx, arena_alloc, arena_free};
            PyObject_SetArenaAllocator(&hook_arena);
        }
        installed = 1;
    }
    active = 1;
    Py_RETURN_NONE;
}

static PyObject *mt_stop(PyObject *self, PyObject *unused)
{
    active = 0;
    /* Unhook only if nobody wrapped us since (tracemalloc may have): otherwise stay in
     * place as a pass-through, since unhooking would unhook them too. */
    if (installed && domains && ours(PYMEM_DOMAIN_MEM, &hook_mem) &&
        ours(PYMEM_DOMAIN_OBJ, &hook_obj)) {
        PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &orig_mem);
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &orig_obj);
        installed = 0;
    } else if (installed && !domains && ours(PYMEM_DOMAIN_RAW, &hook_mem)) {
        PyObjectArenaAllocator now;
        PyObject_GetArenaAllocator(&now);
        if (now.alloc == arena_alloc) {
            PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &orig_raw);
            PyObject_SetArenaAllocator(&orig_arena);
            installed = 0;
        }
    }
    if (np_handler != NULL) {
        np_handler->allocator.malloc = np_orig.malloc;
        np_handler->allocator.calloc = np_orig.calloc;
        np_handler->allocator.realloc = np_orig.realloc;
        np_handler->allocator.free = np_orig.free;
        np_handler = NULL;
    }
    /* Every sampled block may now be freed unseen: forget them all. */
    if (allocs != NULL)
        memset(allocs, 0, (allocs_mask + 1) * sizeof(alloc_t));
    allocs_len = 0;
    for (size_t i = 0; i < stacks_len; i++)
        stacks[i].live = stacks[i].at_peak = 0;
    live_total = peak_total = snapshot_total = 0;
    Py_RETURN_NONE;
}

/* Whether [addr, addr + size) lies in one writable mapping of this process (Linux's
 * /proc/self/maps): numpy's handler is patched only where the write cannot fault. */
static int writable(const void *addr, size_t size)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    if (maps == NULL)
        return 0;
    uintptr_t start, end, a = (uintptr_t)addr;
    char perms[8];
    int ok = 0;
    char line[512];
    while (fgets(line, sizeof line, maps) != NULL) {
        if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %7s", &start, &end, perms) == 3 &&
            start <= a && a + size <= end) {
            ok = perms[1] == 'w';
            break;
        }
    }
    fclose(maps);
    return ok;
}

static PyObject *mt_hook_numpy(PyObject *self, PyObject *api_capsule)
{
    /* numpy's C API table (`_ARRAY_API`): [211] the C feature version, [306] a pointer to
     * PyDataMem_DefaultHandler, a "mem_handler" capsule around the default handler. Its
     * functions are replaced in place (the struct lives in numpy's writable data), so
     * arrays made in every thread and context are seen; PyDataMem_SetHandler would only
     * cover the calling context. */
    if (!installed || np_handler != NULL)
        Py_RETURN_FALSE;
    void **api = PyCapsule_GetPointer(api_capsule, NULL);
    if (api == NULL)
        return NULL;
    unsigned int (*feature_version)(void) = (unsigned int (*)(void))api[211];
    if (feature_version == NULL || feature_version() < 0x0000000f) /* numpy 1.22 */
        Py_RETURN_FALSE;
    PyObject *capsule = *(PyObject **)api[306];
    if (capsule == NULL || !PyCapsule_IsValid(capsule, "mem_handler"))
        Py_RETURN_FALSE;
    np_handler_t *h = PyCapsule_GetPointer(capsule, "mem_handler");
    if (h == NULL || h->version != 1 || strncmp(h->name, "default_allocator", 127) != 0 ||
        h->allocator.malloc == NULL || h->allocator.free == NULL ||
        !writable(&h->allocator, sizeof h->allocator)) {
        PyErr_Clear();
        Py_RETURN_FALSE;
    }
    np_orig = h->allocator;
    np_handler = h;
    h->allocator.malloc = np_malloc;
    h->allocator.calloc = np_calloc;
    h->allocator.realloc = np_realloc;
    h->allocator.free = np_free;
    Py_RETURN_TRUE;
}

static PyObject *mt_reset_peak(PyObject *self, PyObject *unused)
{
    peak_total = live_total;
    snapshot();
    Py_RETURN_NONE;
}

static PyObject *build_peak(void);

/* (peak bytes, [(frames root first as ((file, function, line), …), bytes), …]) */
static PyObject *mt_peak(PyObject *self, PyObject *unused)
{
    /* Building the result allocates: sampling is paused meanwhile, so the tables stay as
     * they are while they are read. */
    int was_active = active;
    active = 0;
    PyObject *result = build_peak();
    active = was_active;
    return result;
}

static PyObject *build_peak(void)
{
    size_t n = stacks_len;
    int64_t *at = malloc((n ? n : 1) * sizeof(int64_t));
    if (at == NULL)
        return PyErr_NoMemory();
    for (size_t i = 0; i < n; i++)
        at[i] = stacks[i].at_peak;
    int64_t peak = peak_total;
    PyObject *list = PyList_New(0);
    if (list == NULL)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        if (at[i] <= 0)
            continue;
        uint32_t start = stacks[i].start, depth = stacks[i].depth;
        PyObject *tuple = PyTuple_New(depth);
        if (tuple == NULL)
            goto fail;
        for (uint32_t k = 0; k < depth; k++) {
            frame_t *f = &frames[start + depth - 1 - k]; /* root first */
            int line = PyCode_Addr2Line(f->code, f->lasti * (int)sizeof(_Py_CODEUNIT));
            PyObject *item = Py_BuildValue("(OOi)", f->code->co_filename,
                                           f->code->co_qualname, line);
            if (item == NULL) {
                Py_DECREF(tuple);
                goto fail;
            }
            PyTuple_SET_ITEM(tuple, k, item);
        }
        PyObject *pair = Py_BuildValue("(NL)", tuple, (long long)at[i]);
        if (pair == NULL || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            goto fail;
        }
        Py_DECREF(pair);
    }
    free(at);
    return Py_BuildValue("(LN)", (long long)peak, list);
fail:
    free(at);
    Py_XDECREF(list);
    return NULL;
}

static PyObject *mt_stats(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("{s:L,s:L,s:n,s:n,s:K,s:K,s:i,s:i}", "live", (long long)live_total,
                         "peak", (long long)peak_total, "tracked", (Py_ssize_t)allocs_len,
                         "stacks", (Py_ssize_t)stacks_len, "samples",
                         (unsigned long long)sample_count, "stale_frees",
                         (unsigned long long)stale_frees, "active", active, "numpy",
                         np_handler != NULL);
}

static PyMethodDef methods[] = {
    {"start", mt_start, METH_VARARGS,
     "start(interval): hook the MEM and OBJ domains, sampling every ~interval bytes."},
    {"stop", mt_stop, METH_NOARGS, "Stop tracking and unhook where possible."},
    {"hook_numpy", mt_hook_numpy, METH_O,
     "hook_numpy(_ARRAY_API capsule) -> bool: also track numpy's array data."},
    {"reset_peak", mt_reset_peak, METH_NOARGS, "Start a new peak from the live bytes now."},
    {"peak", mt_peak, METH_NOARGS, "(peak bytes, [(frames root first, bytes at peak), ...])"},
    {"stats", mt_stats, METH_NOARGS, "Counters, for tests and diagnostics."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "jobtrace._memtrack",
    "Sampled allocation tracking for jobtrace's approximate peak-memory profile.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__memtrack(void) { return PyModule_Create(&module_def); }
