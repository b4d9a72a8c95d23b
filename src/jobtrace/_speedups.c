/*
 * jobtrace's hot paths in C: opening and closing a span, calling a @trace'd function,
 * appending a record to the recorder's buffer, and formatting span ids for the store.
 *
 * jobtrace.tracing.spans holds the reference implementation in Python and the rules (see
 * its docstring); this module does exactly the same, about four times faster, because a
 * span in pure Python is mostly interpreter overhead (a dozen attribute stores and four
 * calls). Everything that is not per span stays in Python: settings are pushed in here by
 * spans._Settings when they change, and the rare paths (a warning, an exception's type
 * name) call back into Python functions handed over by install().
 *
 * The GIL protects the module state: every entry point holds it. The extension is
 * optional; JOBTRACE_NO_EXTENSIONS=1 or a failed build leaves the Python implementation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>

#if !defined(CLOCK_MONOTONIC)
#error "jobtrace's tracing speedups need clock_gettime(CLOCK_MONOTONIC)"
#endif

/* -- module state (one interpreter; the GIL guards it) ---------------------------------- */

static struct {
    /* settings, pushed by spans._Settings whenever one changes */
    int enabled;
    double sample_rate;
    long long max_spans;
    PyObject *parent_job;    /* str or None */
    PyObject *record;        /* callable taking one record tuple */
    PyObject *remote_parent; /* RemoteParent or None */
    long long clock_offset;  /* epoch ns - monotonic ns */
    PyObject *host;
    PyObject *pid;
    PyObject *service;       /* str or None: the process's service name, spans.service() */
    /* constants and callbacks, from install() */
    PyObject *current_var;   /* ContextVar of the current span */
    PyObject *job_var;       /* ContextVar of the current job */
    PyObject *unsampled;     /* spans.UNSAMPLED */
    PyObject *new_trace;     /* spans.NEW_TRACE: the next span is a root, whatever the env */
    PyObject *kind;          /* model.SPAN */
    PyObject *dropped_key;   /* "jobtrace.dropped_spans" */
    PyObject *error_type_name;
    PyObject *message;
    PyObject *short_repr;
    PyObject *check_name;
    PyObject *check_info;
    PyObject *thread_name;
    /* caches */
    long long ms;            /* the millisecond of the last root span ... */
    uint64_t ms_bits;        /* ... shifted into the top of a trace id's high word */
    uint64_t rng[4];         /* xoshiro256** */
} S;

static PyObject *str_id, *str_name, *str_args, *str_kwargs, *str_result, *str_function;
static PyObject *str_state, *str_sampled, *str_trace_id, *str_span_id, *str_thread_key;
static PyObject *str_empty_dict_repr;

static PyTypeObject *SpanType;
static PyTypeObject *TraceStateType;
static PyTypeObject *TracedFunctionType;
static PyTypeObject *AppenderType;

/* -- random ids and the clock ------------------------------------------------------------ */

static inline uint64_t rotl(const uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t next_random(void)
{
    uint64_t *s = S.rng;
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static inline long long monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A 128-bit trace id: 48 bits of epoch milliseconds, then 80 random bits (as _ids.trace_id). */
static PyObject *new_trace_id(long long start_ns)
{
    long long ms = start_ns / 1000000;
    if (ms != S.ms) {
        S.ms = ms;
        S.ms_bits = ((uint64_t)ms & 0xFFFFFFFFFFFFULL) << 16;
    }
    uint64_t hi = S.ms_bits | (next_random() >> 48);
    uint64_t lo = next_random();
    unsigned char bytes[16];
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(lo >> (8 * i));
        bytes[8 + i] = (unsigned char)(hi >> (8 * i));
    }
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(bytes, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    return _PyLong_FromByteArray(bytes, 16, 1, 0);
#endif
}

/* -- the per-trace counters ------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    long long kept;
    long long dropped;
} TraceStateObject;

static PyMemberDef trace_state_members[] = {
    {"kept", T_LONGLONG, offsetof(TraceStateObject, kept), 0, "spans recorded"},
    {"dropped", T_LONGLONG, offsetof(TraceStateObject, dropped), 0, "spans over the cap"},
    {NULL},
};

static void trace_state_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot trace_state_slots[] = {
    {Py_tp_doc, "Spans kept and dropped in one trace, in this process (for the cap)."},
    {Py_tp_members, trace_state_members},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_dealloc, trace_state_dealloc},
    {0, NULL},
};

static PyType_Spec trace_state_spec = {
    "jobtrace._speedups.TraceState",
    sizeof(TraceStateObject),
    0,
    Py_TPFLAGS_DEFAULT,
    trace_state_slots,
};

/* -- Span ---------------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *info;      /* dict or None */
    PyObject *trace_id;  /* int */
    PyObject *span_id;   /* int */
    PyObject *parent_id; /* int or None */
    PyObject *job_id;    /* str or None */
    PyObject *parent;    /* Span, RemoteParent or None */
    PyObject *state;     /* TraceState */
    PyObject *token;     /* contextvars.Token or None */
    long long start_ns;
    long long t0;        /* monotonic ns at start; -1 once ended or never started */
    char manual;         /* opened by start(): only those may be closed by stop() */
} SpanObject;

#define SPAN_FIELD(op, f) (((SpanObject *)(op))->f)

static int span_traverse(PyObject *op, visitproc visit, void *arg)
{
    SpanObject *self = (SpanObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->name);
    Py_VISIT(self->info);
    Py_VISIT(self->parent);
    Py_VISIT(self->token);
    Py_VISIT(self->job_id);
    return 0;
}

static int span_clear(PyObject *op)
{
    SpanObject *self = (SpanObject *)op;
    Py_CLEAR(self->name);
    Py_CLEAR(self->info);
    Py_CLEAR(self->trace_id);
    Py_CLEAR(self->span_id);
    Py_CLEAR(self->parent_id);
    Py_CLEAR(self->job_id);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->state);
    Py_CLEAR(self->token);
    return 0;
}

static void span_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    span_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *span_alloc(PyTypeObject *type, PyObject *name, PyObject *info)
{
    SpanObject *self = (SpanObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->name = Py_NewRef(name);
    self->info = Py_NewRef(info);
    self->t0 = -1;
    return (PyObject *)self;
}

static PyObject *span_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return span_alloc(type, Py_None, Py_None);
}

/* Span(name, info=None): a bad name or info is logged (once) and corrected, never raised;
   the caller's info dict is copied so spans never share one. */
static int span_init(PyObject *op, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"name", "info", NULL};
    PyObject *name, *info = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:Span", kwlist, &name, &info)) {
        return -1;
    }
    SpanObject *self = (SpanObject *)op;
    PyObject *checked_name = PyUnicode_CheckExact(name)
        ? Py_NewRef(name) : PyObject_CallOneArg(S.check_name, name);
    if (checked_name == NULL) {
        return -1;
    }
    PyObject *checked_info;
    if (info == Py_None) {
        checked_info = Py_NewRef(Py_None);
    } else if (PyDict_CheckExact(info)) {
        checked_info = PyDict_Copy(info);
    } else {
        checked_info = PyObject_CallOneArg(S.check_info, info);
    }
    if (checked_info == NULL) {
        Py_DECREF(checked_name);
        return -1;
    }
    Py_XSETREF(self->name, checked_name);
    Py_XSETREF(self->info, checked_info);
    return 0;
}

static PyObject *become_unsampled(SpanObject *self)
{
    PyObject *token = PyContextVar_Set(S.current_var, S.unsampled);
    if (token == NULL) {
        return NULL;
    }
    Py_XSETREF(self->token, token);
    self->t0 = -1;
    return Py_NewRef(S.unsampled);
}

/* Start under the current span and become the current one: returns self, or UNSAMPLED
   (a new reference either way) when the trace is not recorded. */
static PyObject *span_start(SpanObject *self)
{
    if (!S.enabled) {
        self->t0 = -1;
        return Py_NewRef(S.unsampled);
    }
    PyObject *parent;
    if (PyContextVar_Get(S.current_var, Py_None, &parent) < 0) {
        return NULL;
    }
    long long t0 = monotonic_ns();
    long long start_ns = t0 + S.clock_offset;
    PyObject *trace_id, *parent_id, *state;

    if (parent == Py_None) {
        Py_DECREF(parent);
        parent = Py_NewRef(S.remote_parent);
    } else if (parent == S.new_trace) {
        Py_DECREF(parent);
        parent = Py_NewRef(Py_None);
    }
    if (parent == Py_None) {
        /* the root of a new trace: sampling is decided here, once for the whole trace */
        if (S.sample_rate < 1.0 &&
            (double)(next_random() >> 11) * (1.0 / 9007199254740992.0) >= S.sample_rate) {
            Py_DECREF(parent);
            return become_unsampled(self);
        }
        state = PyType_GenericAlloc(TraceStateType, 0);
        if (state == NULL) {
            Py_DECREF(parent);
            return NULL;
        }
        trace_id = new_trace_id(start_ns);
        if (trace_id == NULL) {
            Py_DECREF(state);
            Py_DECREF(parent);
            return NULL;
        }
        parent_id = Py_NewRef(Py_None);
    } else if (PyObject_TypeCheck(parent, SpanType)) {
        state = Py_NewRef(SPAN_FIELD(parent, state));
        trace_id = Py_NewRef(SPAN_FIELD(parent, trace_id));
        parent_id = Py_NewRef(SPAN_FIELD(parent, span_id));
    } else if (parent == S.unsampled) {
        Py_DECREF(parent);
        return become_unsampled(self);
    } else {
        /* a RemoteParent: a span in another process or service, known by its ids */
        PyObject *sampled = PyObject_GetAttr(parent, str_sampled);
        int is_sampled = sampled == NULL ? -1 : PyObject_IsTrue(sampled);
        Py_XDECREF(sampled);
        if (is_sampled <= 0) {
            Py_DECREF(parent);
            if (is_sampled < 0) {
                return NULL;
            }
            return become_unsampled(self);
        }
        state = PyObject_GetAttr(parent, str_state);
        trace_id = PyObject_GetAttr(parent, str_trace_id);
        parent_id = PyObject_GetAttr(parent, str_span_id);
        if (state != NULL && !Py_IS_TYPE(state, TraceStateType)) {
            Py_SETREF(state, PyType_GenericAlloc(TraceStateType, 0));
        }
        if (state == NULL || trace_id == NULL || parent_id == NULL) {
            Py_XDECREF(state);
            Py_XDECREF(trace_id);
            Py_XDECREF(parent_id);
            Py_DECREF(parent);
            return NULL;
        }
    }

    PyObject *job;
    if (PyContextVar_Get(S.job_var, Py_None, &job) < 0) {
        goto fail;
    }
    PyObject *job_id;
    if (job == Py_None) {
        job_id = Py_NewRef(S.parent_job);
    } else {
        job_id = PyObject_GetAttr(job, str_id);
    }
    Py_DECREF(job);
    if (job_id == NULL) {
        goto fail;
    }
    uint64_t bits = next_random();
    PyObject *span_id = PyLong_FromUnsignedLongLong(bits ? bits : 1);
    if (span_id == NULL) {
        Py_DECREF(job_id);
        goto fail;
    }
    PyObject *token = PyContextVar_Set(S.current_var, (PyObject *)self);
    if (token == NULL) {
        Py_DECREF(span_id);
        Py_DECREF(job_id);
        goto fail;
    }
    Py_XSETREF(self->parent, parent);
    Py_XSETREF(self->state, state);
    Py_XSETREF(self->trace_id, trace_id);
    Py_XSETREF(self->parent_id, parent_id);
    Py_XSETREF(self->job_id, job_id);
    Py_XSETREF(self->span_id, span_id);
    Py_XSETREF(self->token, token);
    self->start_ns = start_ns;
    self->t0 = t0;
    return Py_NewRef((PyObject *)self);

fail:
    Py_DECREF(state);
    Py_DECREF(trace_id);
    Py_DECREF(parent_id);
    Py_DECREF(parent);
    return NULL;
}

static PyObject *thread_name(void)
{
    /* cached per thread in the thread state's dict; a thread renamed after its first span
       keeps the old name, as in the Python implementation */
    PyObject *dict = PyThreadState_GetDict();
    if (dict != NULL) {
        PyObject *name = PyDict_GetItemWithError(dict, str_thread_key);
        if (name != NULL) {
            return Py_NewRef(name);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    PyObject *name = PyObject_CallNoArgs(S.thread_name);
    if (name != NULL && dict != NULL && PyDict_SetItem(dict, str_thread_key, name) < 0) {
        Py_CLEAR(name);
    }
    return name;
}

/* Record the span, once. Never raises: a failure here must not reach the traced code. */
static void span_finish(SpanObject *self, PyObject *error)
{
    long long duration = monotonic_ns() - self->t0;
    if (self->t0 < 0) {
        return;
    }
    self->t0 = -1;
    TraceStateObject *state = (TraceStateObject *)self->state;
    PyObject *parent = self->parent;
    PyObject *record = NULL, *item;
    if (parent == NULL || parent == Py_None || !PyObject_TypeCheck(parent, SpanType)) {
        /* this process's root of the trace is always kept, and reports the overflow */
        if (state->dropped) {
            PyObject *dropped = PyLong_FromLongLong(state->dropped);
            if (dropped == NULL) {
                goto error;
            }
            int failed;
            if (self->info == NULL || self->info == Py_None) {
                PyObject *info = PyDict_New();
                failed = info == NULL || PyDict_SetItem(info, S.dropped_key, dropped) < 0;
                if (info != NULL) {
                    Py_XSETREF(self->info, info);
                }
            } else {
                failed = PyObject_SetItem(self->info, S.dropped_key, dropped) < 0;
            }
            Py_DECREF(dropped);
            if (failed) {
                goto error;
            }
        }
    } else if (state->kept >= S.max_spans) {
        state->dropped++;
        return;
    }
    state->kept++;

    record = PyTuple_New(15);
    if (record == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 0, Py_NewRef(S.kind));
    PyTuple_SET_ITEM(record, 1, Py_NewRef(self->trace_id));
    PyTuple_SET_ITEM(record, 2, Py_NewRef(self->span_id));
    PyTuple_SET_ITEM(record, 3, Py_NewRef(self->parent_id));
    PyTuple_SET_ITEM(record, 4, Py_NewRef(self->name));
    if ((item = PyLong_FromLongLong(self->start_ns)) == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 5, item);
    if ((item = PyLong_FromLongLong(duration)) == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 6, item);
    PyTuple_SET_ITEM(record, 7, Py_NewRef(self->info ? self->info : Py_None));
    if (error == NULL || error == Py_None) {
        PyTuple_SET_ITEM(record, 8, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(record, 9, Py_NewRef(Py_None));
    } else {
        if ((item = PyObject_CallOneArg(S.error_type_name, error)) == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(record, 8, item);
        if ((item = PyObject_CallOneArg(S.message, error)) == NULL) {
            goto error;
        }
        PyTuple_SET_ITEM(record, 9, item);
    }
    PyTuple_SET_ITEM(record, 10, Py_NewRef(self->job_id));
    PyTuple_SET_ITEM(record, 11, Py_NewRef(S.host));
    PyTuple_SET_ITEM(record, 12, Py_NewRef(S.pid));
    if ((item = thread_name()) == NULL) {
        goto error;
    }
    PyTuple_SET_ITEM(record, 13, item);
    PyTuple_SET_ITEM(record, 14, Py_NewRef(S.service));
    /* A record that holds no container the collector tracks cannot be part of a cycle, so
       it is untracked now rather than at its first collection: thousands of them wait in
       the buffer for the writer, and every collection would walk them all. */
    if (self->info == NULL || self->info == Py_None ||
        (PyDict_CheckExact(self->info) && !PyObject_GC_IsTracked(self->info))) {
        PyObject_GC_UnTrack(record);
    }
    /* the recorder's append never raises; whatever happens, the traced code goes on */
    item = PyObject_CallOneArg(S.record, record);
    Py_DECREF(record);
    if (item == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(item);
    return;

error:
    Py_XDECREF(record);
    PyErr_Clear();
}

/* Leave: restore the previous current span, then record. */
static void span_leave(SpanObject *self, PyObject *error)
{
    PyObject *token = self->token;
    if (token != NULL && token != Py_None) {
        self->token = NULL;
        if (PyContextVar_Reset(S.current_var, token) < 0) {
            /* left in another context (a generator, a callback): restore by reference */
            PyErr_Clear();
            PyObject *previous = self->t0 >= 0 && self->parent ? self->parent : Py_None;
            PyObject *t = PyContextVar_Set(S.current_var, previous);
            if (t == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(t);
        }
        Py_DECREF(token);
    }
    if (self->t0 >= 0) {
        span_finish(self, error);
    }
}

static PyObject *span_enter_method(PyObject *self, PyObject *unused)
{
    PyObject *result = span_start((SpanObject *)self);
    if (result == NULL) {
        /* never into the user's code: the block runs untraced */
        PyErr_Clear();
        ((SpanObject *)self)->t0 = -1;
        return Py_NewRef(S.unsampled);
    }
    return result;
}

static PyObject *span_exit_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *error = nargs >= 2 ? args[1] : Py_None;
    span_leave((SpanObject *)self, error);
    Py_RETURN_NONE;
}

static PyObject *span_end_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    span_finish((SpanObject *)self, nargs >= 1 ? args[0] : Py_None);
    Py_RETURN_NONE;
}

static PyObject *span_set_method(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set(key, value) takes two arguments");
        return NULL;
    }
    SpanObject *self = (SpanObject *)op;
    if (self->info == NULL || self->info == Py_None) {
        PyObject *info = PyDict_New();
        if (info == NULL || PyDict_SetItem(info, args[0], args[1]) < 0) {
            Py_XDECREF(info);
            return NULL;
        }
        Py_XSETREF(self->info, info);
    } else if (PyObject_SetItem(self->info, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef span_methods[] = {
    {"__enter__", span_enter_method, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))span_exit_method, METH_FASTCALL, NULL},
    {"end", (PyCFunction)(void (*)(void))span_end_method, METH_FASTCALL,
     "end(error=None)\n--\n\nRecord the span (once); ``error`` is the exception that ended it."},
    {"set", (PyCFunction)(void (*)(void))span_set_method, METH_FASTCALL,
     "set(key, value)\n--\n\nAttach an attribute to this span's info (recorded when it ends)."},
    {NULL},
};

static PyMemberDef span_members[] = {
    {"name", T_OBJECT, offsetof(SpanObject, name), 0, NULL},
    {"info", T_OBJECT, offsetof(SpanObject, info), 0, NULL},
    {"trace_id", T_OBJECT, offsetof(SpanObject, trace_id), READONLY, NULL},
    {"span_id", T_OBJECT, offsetof(SpanObject, span_id), READONLY, NULL},
    {"parent_id", T_OBJECT, offsetof(SpanObject, parent_id), READONLY, NULL},
    {"job_id", T_OBJECT, offsetof(SpanObject, job_id), READONLY, NULL},
    {"start_ns", T_LONGLONG, offsetof(SpanObject, start_ns), READONLY, NULL},
    {"_parent", T_OBJECT, offsetof(SpanObject, parent), READONLY, NULL},
    {"_state", T_OBJECT, offsetof(SpanObject, state), READONLY, NULL},
    {"_token", T_OBJECT, offsetof(SpanObject, token), 0, NULL},
    {"_t0", T_LONGLONG, offsetof(SpanObject, t0), READONLY, NULL},
    {"_manual", T_BOOL, offsetof(SpanObject, manual), 0, NULL},
    {NULL},
};

static PyType_Slot span_slots[] = {
    {Py_tp_doc, "A timed trace point. Add attributes while it runs with set()."},
    {Py_tp_new, span_new},
    {Py_tp_init, span_init},
    {Py_tp_dealloc, span_dealloc},
    {Py_tp_traverse, span_traverse},
    {Py_tp_clear, span_clear},
    {Py_tp_methods, span_methods},
    {Py_tp_members, span_members},
    {0, NULL},
};

static PyType_Spec span_spec = {
    "jobtrace.tracing.spans.Span",
    sizeof(SpanObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    span_slots,
};

/* -- @trace for plain functions -------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *fn;
    PyObject *name;      /* the span name */
    PyObject *qualname;  /* module.qualname of fn */
    PyObject *base_info; /* dict or None: the decorator's info, copied per call */
    PyObject *dict;      /* __dict__: __wrapped__, __name__, __doc__, ... */
    PyObject *weakrefs;
    vectorcallfunc vectorcall;
    char hide_args;
    char keep_result;
} TracedFunctionObject;

#define REPR_LIMIT 1000 /* characters of an argument list or result kept, as _short_repr */

static PyObject *short_repr(PyObject *value)
{
    PyObject *text = PyObject_Repr(value);
    if (text == NULL) {
        /* a broken __repr__: the Python helper says so instead */
        PyErr_Clear();
        return PyObject_CallOneArg(S.short_repr, value);
    }
    if (PyUnicode_GET_LENGTH(text) > REPR_LIMIT) {
        PyObject *out = PyObject_CallOneArg(S.short_repr, value);
        Py_DECREF(text);
        return out;
    }
    return text;
}

#define FAST_REPR_MAX_ARGS 8

/* repr(args) for the common case, arguments that are ints, strings, floats, bools, None or
   bytes: the same text as the tuple's repr, without its recursion guard (these cannot
   recurse), which costs more than the rest. NULL without an error means "not this case". */
static PyObject *atoms_repr(PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > FAST_REPR_MAX_ARGS) {
        return NULL;
    }
    PyObject *parts[FAST_REPR_MAX_ARGS];
    Py_ssize_t length = 2 + (nargs == 1) + 2 * (nargs > 1 ? nargs - 1 : 0);
    Py_UCS4 maxchar = 127;
    Py_ssize_t done = 0;
    PyObject *result = NULL;
    for (; done < nargs; done++) {
        PyObject *arg = args[done];
        PyTypeObject *type = Py_TYPE(arg);
        if (!(type == &PyUnicode_Type || type == &PyLong_Type || type == &PyFloat_Type ||
              type == &PyBool_Type || type == &PyBytes_Type || arg == Py_None)) {
            goto out;
        }
        PyObject *part = type->tp_repr(arg);
        if (part == NULL) {
            PyErr_Clear();
            goto out;
        }
        parts[done] = part;
        length += PyUnicode_GET_LENGTH(part);
        if (PyUnicode_MAX_CHAR_VALUE(part) > maxchar) {
            maxchar = PyUnicode_MAX_CHAR_VALUE(part);
        }
        if (length > REPR_LIMIT) { /* the general path truncates */
            done++;
            goto out;
        }
    }
    result = PyUnicode_New(length, maxchar);
    if (result == NULL) {
        PyErr_Clear();
        goto out;
    }
    Py_ssize_t at = 0;
    PyUnicode_WriteChar(result, at++, '(');
    for (Py_ssize_t i = 0; i < nargs; i++) {
        if (i > 0) {
            PyUnicode_WriteChar(result, at++, ',');
            PyUnicode_WriteChar(result, at++, ' ');
        }
        Py_ssize_t n = PyUnicode_GET_LENGTH(parts[i]);
        PyUnicode_CopyCharacters(result, at, parts[i], 0, n);
        at += n;
    }
    if (nargs == 1) {
        PyUnicode_WriteChar(result, at++, ',');
    }
    PyUnicode_WriteChar(result, at, ')');
out:
    for (Py_ssize_t i = 0; i < done; i++) {
        Py_DECREF(parts[i]);
    }
    return result;
}

static PyObject *args_repr(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *text = atoms_repr(args, nargs);
    if (text != NULL) {
        return text;
    }
    PyObject *tuple = PyTuple_New(nargs);
    if (tuple == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
    }
    text = short_repr(tuple);
    Py_DECREF(tuple);
    return text;
}

/* This call's own info: {"function": {"name", "args", "kwargs"}} over a copy of the
   decorator's info. */
static PyObject *call_info(TracedFunctionObject *self, PyObject *const *args, size_t nargsf,
                           PyObject *kwnames)
{
    PyObject *function = PyDict_New();
    if (function == NULL) {
        return NULL;
    }
    if (PyDict_SetItem(function, str_name, self->qualname) < 0) {
        goto fail;
    }
    if (!self->hide_args) {
        Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
        PyObject *text = args_repr(args, nargs);
        if (text == NULL || PyDict_SetItem(function, str_args, text) < 0) {
            Py_XDECREF(text);
            goto fail;
        }
        Py_DECREF(text);
        if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) {
            text = Py_NewRef(str_empty_dict_repr);
        } else {
            PyObject *kwargs = PyDict_New();
            if (kwargs == NULL) {
                goto fail;
            }
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
                if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                    Py_DECREF(kwargs);
                    goto fail;
                }
            }
            text = short_repr(kwargs);
            Py_DECREF(kwargs);
        }
        if (text == NULL || PyDict_SetItem(function, str_kwargs, text) < 0) {
            Py_XDECREF(text);
            goto fail;
        }
        Py_DECREF(text);
    }
    PyObject *info = self->base_info == Py_None ? PyDict_New() : PyDict_Copy(self->base_info);
    if (info == NULL || PyDict_SetItem(info, str_function, function) < 0) {
        Py_XDECREF(info);
        goto fail;
    }
    /* Inserting a dict makes the collector track `info`; but `function` holds only strings
       (untracked), so unless the decorator's info holds containers there is no cycle. */
    if (!PyObject_GC_IsTracked(function) &&
        (self->base_info == Py_None || !PyObject_GC_IsTracked(self->base_info))) {
        PyObject_GC_UnTrack(info);
    }
    Py_DECREF(function);
    return info;

fail:
    Py_DECREF(function);
    return NULL;
}

static void keep_result(SpanObject *span, PyObject *result)
{
    if (span->info == NULL || !PyDict_Check(span->info)) {
        return;
    }
    PyObject *function = PyDict_GetItemWithError(span->info, str_function);
    if (function == NULL || !PyDict_Check(function)) {
        PyErr_Clear();
        return;
    }
    PyObject *text = short_repr(result);
    if (text == NULL || PyDict_SetItem(function, str_result, text) < 0) {
        PyErr_Clear();
    }
    Py_XDECREF(text);
}

static PyObject *traced_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames)
{
    TracedFunctionObject *self = (TracedFunctionObject *)op;
    if (!S.enabled) {
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
    PyObject *span = NULL, *bound = NULL;
    PyObject *info = call_info(self, args, nargsf, kwnames);
    if (info != NULL) {
        span = span_alloc(SpanType, self->name, info);
        Py_DECREF(info);
    }
    if (span != NULL) {
        bound = span_start((SpanObject *)span);
    }
    if (bound == NULL) {
        /* tracing failed (out of memory): the call itself must still happen */
        PyErr_Clear();
        Py_XDECREF(span);
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
    PyObject *result = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    if (result == NULL) {
        /* record the exception and let it propagate unchanged */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
        span_leave((SpanObject *)span, exc);
        PyErr_SetRaisedException(exc);
#else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL) {
            PyException_SetTraceback(value, tb);
        }
        span_leave((SpanObject *)span, value);
        PyErr_Restore(type, value, tb);
#endif
    } else {
        if (self->keep_result && bound == span) {
            keep_result((SpanObject *)span, result);
        }
        span_leave((SpanObject *)span, NULL);
    }
    Py_DECREF(bound);
    Py_DECREF(span);
    return result;
}

static PyObject *traced_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"fn", "name", "qualname", "info", "hide_args", "hide_result", NULL};
    PyObject *fn, *name, *qualname, *info;
    int hide_args, hide_result;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OUUOpp:TracedFunction", kwlist, &fn, &name,
                                     &qualname, &info, &hide_args, &hide_result)) {
        return NULL;
    }
    if (info != Py_None && !PyDict_Check(info)) {
        PyErr_SetString(PyExc_TypeError, "info must be a dict or None");
        return NULL;
    }
    TracedFunctionObject *self = (TracedFunctionObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->fn = Py_NewRef(fn);
    self->name = Py_NewRef(name);
    self->qualname = Py_NewRef(qualname);
    self->base_info = Py_NewRef(info);
    self->hide_args = (char)hide_args;
    self->keep_result = (char)!hide_result;
    self->vectorcall = traced_vectorcall;
    return (PyObject *)self;
}

static int traced_traverse(PyObject *op, visitproc visit, void *arg)
{
    TracedFunctionObject *self = (TracedFunctionObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->fn);
    Py_VISIT(self->base_info);
    Py_VISIT(self->dict);
    return 0;
}

static int traced_clear(PyObject *op)
{
    TracedFunctionObject *self = (TracedFunctionObject *)op;
    Py_CLEAR(self->fn);
    Py_CLEAR(self->name);
    Py_CLEAR(self->qualname);
    Py_CLEAR(self->base_info);
    Py_CLEAR(self->dict);
    return 0;
}

static void traced_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (((TracedFunctionObject *)op)->weakrefs != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    traced_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* A method when looked up on an instance, like a plain function. */
static PyObject *traced_descr_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static PyObject *traced_repr(PyObject *op)
{
    return PyUnicode_FromFormat("<traced function %U at %p>",
                                ((TracedFunctionObject *)op)->qualname, op);
}

/* Pickled by reference, as the module-level function it replaces (process pools). */
static PyObject *traced_reduce(PyObject *op, PyObject *unused)
{
    return PyObject_GetAttrString(op, "__qualname__");
}

static PyMethodDef traced_methods[] = {
    {"__reduce__", traced_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyMemberDef traced_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(TracedFunctionObject, vectorcall), READONLY},
    {"__dictoffset__", T_PYSSIZET, offsetof(TracedFunctionObject, dict), READONLY},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(TracedFunctionObject, weakrefs), READONLY},
    {"__jobtrace_span_name__", T_OBJECT, offsetof(TracedFunctionObject, name), READONLY},
    {NULL},
};

static PyGetSetDef traced_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyType_Slot traced_slots[] = {
    {Py_tp_doc, "A function traced by @jobtrace.trace: each call is a span."},
    {Py_tp_new, traced_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_descr_get, traced_descr_get},
    {Py_tp_repr, traced_repr},
    {Py_tp_dealloc, traced_dealloc},
    {Py_tp_traverse, traced_traverse},
    {Py_tp_clear, traced_clear},
    {Py_tp_methods, traced_methods},
    {Py_tp_members, traced_members},
    {Py_tp_getset, traced_getset},
    {0, NULL},
};

static PyType_Spec traced_spec = {
    "jobtrace.tracing.api.TracedFunction",
    sizeof(TracedFunctionObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL |
        Py_TPFLAGS_METHOD_DESCRIPTOR,
    traced_slots,
};

/* -- the recorder's append -------------------------------------------------------------- */

/* Recorder.record in C: append one record to the buffer (a full buffer hands the record to
   the recorder's overflow, which spills the oldest records to the spool first), and wake
   the writer when a batch is ready (or on the first record in this process, which starts
   it). Never raises. The rules are Recorder._record's, which runs when this module is not
   built. */
typedef struct {
    PyObject_HEAD
    PyObject *buf;    /* collections.deque */
    PyObject *append; /* buf.append */
    PyObject *wake;   /* Recorder._wake_writer */
    PyObject *overflow; /* Recorder._overflow */
    Py_ssize_t capacity;
    Py_ssize_t flush_at;
    char woken;       /* the writer was asked to start in this process */
    vectorcallfunc vectorcall;
} AppenderObject;

static void call_quietly(PyObject *callable, PyObject *arg)
{
    PyObject *result = arg ? PyObject_CallOneArg(callable, arg) : PyObject_CallNoArgs(callable);
    if (result == NULL) {
        PyErr_Clear();
    }
    Py_XDECREF(result);
}

static PyObject *appender_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames)
{
    AppenderObject *self = (AppenderObject *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "record(record) takes one argument");
        return NULL;
    }
    Py_ssize_t n = PyObject_Length(self->buf);
    if (n < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (n >= self->capacity) {
        call_quietly(self->overflow, args[0]);
        Py_RETURN_NONE;
    }
    call_quietly(self->append, args[0]);
    if (n >= self->flush_at || !self->woken) {
        self->woken = 1;
        call_quietly(self->wake, NULL);
    }
    Py_RETURN_NONE;
}

static int appender_target(AppenderObject *self, PyObject *buf)
{
    PyObject *append = PyObject_GetAttrString(buf, "append");
    if (append == NULL) {
        return -1;
    }
    Py_XSETREF(self->buf, Py_NewRef(buf));
    Py_XSETREF(self->append, append);
    self->woken = 0;
    return 0;
}

static PyObject *appender_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"buf", "wake", "overflow", "capacity", "flush_at", NULL};
    PyObject *buf, *wake, *overflow;
    Py_ssize_t capacity, flush_at;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnn:Appender", kwlist, &buf, &wake, &overflow,
                                     &capacity, &flush_at)) {
        return NULL;
    }
    AppenderObject *self = (AppenderObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->wake = Py_NewRef(wake);
    self->overflow = Py_NewRef(overflow);
    self->capacity = capacity;
    self->flush_at = flush_at;
    self->vectorcall = appender_vectorcall;
    if (appender_target(self, buf) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *appender_retarget(PyObject *op, PyObject *buf)
{
    if (appender_target((AppenderObject *)op, buf) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int appender_traverse(PyObject *op, visitproc visit, void *arg)
{
    AppenderObject *self = (AppenderObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->buf);
    Py_VISIT(self->append);
    Py_VISIT(self->wake);
    Py_VISIT(self->overflow);
    return 0;
}

static int appender_clear(PyObject *op)
{
    AppenderObject *self = (AppenderObject *)op;
    Py_CLEAR(self->buf);
    Py_CLEAR(self->append);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->overflow);
    return 0;
}

static void appender_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    appender_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef appender_methods[] = {
    {"retarget", appender_retarget, METH_O,
     "retarget(buf)\n--\n\nAppend to a new buffer from now on (a forked child's own)."},
    {NULL},
};

static PyMemberDef appender_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(AppenderObject, vectorcall), READONLY},
    {"capacity", T_PYSSIZET, offsetof(AppenderObject, capacity), 0, "records the buffer holds"},
    {"flush_at", T_PYSSIZET, offsetof(AppenderObject, flush_at), 0, "wake the writer past this"},
    {NULL},
};

static PyType_Slot appender_slots[] = {
    {Py_tp_doc, "Recorder.record: queue one record; never blocks, never raises."},
    {Py_tp_new, appender_new},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_dealloc, appender_dealloc},
    {Py_tp_traverse, appender_traverse},
    {Py_tp_clear, appender_clear},
    {Py_tp_methods, appender_methods},
    {Py_tp_members, appender_members},
    {0, NULL},
};

static PyType_Spec appender_spec = {
    "jobtrace._speedups.Appender",
    sizeof(AppenderObject),
    0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    appender_slots,
};

/* -- module functions ----------------------------------------------------------------------- */

static int set_object(PyObject **slot, PyObject *value)
{
    Py_XSETREF(*slot, Py_NewRef(value));
    return 0;
}

/* install(current_var, job_var, unsampled, new_trace, kind, dropped_key, error_type_name,
           message, short_repr, check_name, check_info, thread_name) */
static PyObject *mod_install(PyObject *module, PyObject *args)
{
    PyObject *o[12];
    if (!PyArg_UnpackTuple(args, "install", 12, 12, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                           &o[6], &o[7], &o[8], &o[9], &o[10], &o[11])) {
        return NULL;
    }
    PyObject **slots[12] = {&S.current_var, &S.job_var, &S.unsampled, &S.new_trace,
                            &S.kind, &S.dropped_key, &S.error_type_name, &S.message,
                            &S.short_repr, &S.check_name, &S.check_info, &S.thread_name};
    for (int i = 0; i < 12; i++) {
        set_object(slots[i], o[i]);
    }
    Py_RETURN_NONE;
}

/* set(name, value): one setting, pushed by spans._Settings / _Clock / _Process. */
static PyObject *mod_set(PyObject *module, PyObject *args)
{
    const char *name;
    PyObject *value;
    if (!PyArg_ParseTuple(args, "sO:set", &name, &value)) {
        return NULL;
    }
    if (strcmp(name, "enabled") == 0) {
        int truth = PyObject_IsTrue(value);
        if (truth < 0) {
            return NULL;
        }
        S.enabled = truth;
    } else if (strcmp(name, "sample_rate") == 0) {
        double rate = PyFloat_AsDouble(value);
        if (rate == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        S.sample_rate = rate;
    } else if (strcmp(name, "max_spans") == 0 || strcmp(name, "clock_offset") == 0) {
        long long number = PyLong_AsLongLong(value);
        if (number == -1 && PyErr_Occurred()) {
            return NULL;
        }
        *(name[0] == 'm' ? &S.max_spans : &S.clock_offset) = number;
    } else if (strcmp(name, "parent_job") == 0) {
        set_object(&S.parent_job, value);
    } else if (strcmp(name, "record") == 0) {
        set_object(&S.record, value);
    } else if (strcmp(name, "remote_parent") == 0) {
        set_object(&S.remote_parent, value);
    } else if (strcmp(name, "host") == 0) {
        set_object(&S.host, value);
    } else if (strcmp(name, "pid") == 0) {
        set_object(&S.pid, value);
    } else if (strcmp(name, "service") == 0) {
        set_object(&S.service, value);
    } else {
        PyErr_Format(PyExc_KeyError, "unknown tracing setting %s", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* seed(bytes): reseed the id generator (at import and in a forked child). */
static PyObject *mod_seed(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len < 32) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "seed needs 32 bytes");
        return NULL;
    }
    memcpy(S.rng, view.buf, 32);
    PyBuffer_Release(&view);
    if (!(S.rng[0] | S.rng[1] | S.rng[2] | S.rng[3])) {
        S.rng[0] = 1; /* the one state xoshiro cannot leave */
    }
    Py_RETURN_NONE;
}

static PyObject *mod_monotonic_ns(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong(monotonic_ns());
}

/* hex_ids(column, fmt): [format(v, fmt) if type(v) is int else v for v in column], for
 * fmt "016x" or "032x" (span and trace ids the store writes as hex). An int that does not
 * fit the width, or is negative, goes through format() itself, so the result is the same. */
static const char hex_digits[] = "0123456789abcdef";

static void put_hex(char *out, unsigned long long v)
{
    for (int i = 15; i >= 0; i--) {
        out[i] = hex_digits[v & 15];
        v >>= 4;
    }
}

static PyObject *hex_id(PyObject *v, int wide, PyObject *fmt, PyObject *sixty_four)
{
    char text[32];
    unsigned long long low, high = 0;
    if (wide) {
        PyObject *top = PyNumber_Rshift(v, sixty_four);
        if (top == NULL) {
            return NULL;
        }
        high = PyLong_AsUnsignedLongLong(top);
        Py_DECREF(top);
        low = PyLong_AsUnsignedLongLongMask(v);
    } else {
        low = PyLong_AsUnsignedLongLong(v);
    }
    if (PyErr_Occurred()) { /* negative, or wider than fmt */
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
            return NULL;
        }
        PyErr_Clear();
        return PyObject_Format(v, fmt);
    }
    if (wide) {
        put_hex(text, high);
    }
    put_hex(text + (wide ? 16 : 0), low);
    return PyUnicode_FromStringAndSize(text, wide ? 32 : 16);
}

static PyObject *mod_hex_ids(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "hex_ids(column, fmt) takes a sequence and a str");
        return NULL;
    }
    int wide;
    if (PyUnicode_CompareWithASCIIString(args[1], "032x") == 0) {
        wide = 1;
    } else if (PyUnicode_CompareWithASCIIString(args[1], "016x") == 0) {
        wide = 0;
    } else {
        PyErr_SetString(PyExc_ValueError, "hex_ids formats '016x' or '032x'");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(args[0], "hex_ids needs a sequence");
    if (seq == NULL) {
        return NULL;
    }
    PyObject *sixty_four = PyLong_FromLong(64);
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *out = sixty_four == NULL ? NULL : PyList_New(n);
    PyObject *previous = NULL, *previous_text = NULL; /* borrowed from items and out */
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *v = items[i];
        PyObject *item;
        if (v == previous) { /* a trace's spans share its id object, siblings their parent's */
            item = Py_NewRef(previous_text);
        } else if (PyLong_CheckExact(v)) {
            item = hex_id(v, wide, args[1], sixty_four);
        } else {
            item = Py_NewRef(v);
        }
        if (item == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
        previous = v;
        previous_text = item;
    }
    Py_XDECREF(sixty_four);
    Py_DECREF(seq);
    return out;
}

static PyMethodDef module_methods[] = {
    {"install", mod_install, METH_VARARGS, "Hand over the Python objects the hot path uses."},
    {"set", mod_set, METH_VARARGS, "Push one tracing setting."},
    {"seed", mod_seed, METH_O, "Reseed the span id generator with 32 random bytes."},
    {"monotonic_ns", mod_monotonic_ns, METH_NOARGS, "The clock spans are timed with."},
    {"hex_ids", (PyCFunction)(void (*)(void))mod_hex_ids, METH_FASTCALL,
     "Span and trace ids as fixed-width hex, for the store's writer."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "jobtrace._speedups",
    "Hot paths in C (see jobtrace.tracing.spans and jobtrace.recorder for the rules).",
    -1,
    module_methods,
};

static int intern(PyObject **slot, const char *text)
{
    *slot = PyUnicode_InternFromString(text);
    return *slot == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__speedups(void)
{
    if (intern(&str_id, "id") < 0 || intern(&str_name, "name") < 0 ||
        intern(&str_args, "args") < 0 || intern(&str_kwargs, "kwargs") < 0 ||
        intern(&str_result, "result") < 0 || intern(&str_function, "function") < 0 ||
        intern(&str_state, "_state") < 0 || intern(&str_sampled, "sampled") < 0 ||
        intern(&str_trace_id, "trace_id") < 0 || intern(&str_span_id, "span_id") < 0 ||
        intern(&str_thread_key, "jobtrace.thread_name") < 0 ||
        intern(&str_empty_dict_repr, "{}") < 0) {
        return NULL;
    }
    S.enabled = 0; /* until spans._Settings pushes the real settings */
    S.sample_rate = 1.0;
    S.max_spans = 10000;
    S.parent_job = Py_NewRef(Py_None);
    S.record = Py_NewRef(Py_None);
    S.remote_parent = Py_NewRef(Py_None);
    S.host = Py_NewRef(Py_None);
    S.pid = Py_NewRef(Py_None);
    S.service = Py_NewRef(Py_None);
    S.rng[0] = 0x9E3779B97F4A7C15ULL;

    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    TraceStateType = (PyTypeObject *)PyType_FromSpec(&trace_state_spec);
    SpanType = (PyTypeObject *)PyType_FromSpec(&span_spec);
    TracedFunctionType = (PyTypeObject *)PyType_FromSpec(&traced_spec);
    AppenderType = (PyTypeObject *)PyType_FromSpec(&appender_spec);
    if (TraceStateType == NULL || SpanType == NULL || TracedFunctionType == NULL ||
        AppenderType == NULL ||
        PyModule_AddObjectRef(module, "Appender", (PyObject *)AppenderType) < 0 ||
        PyModule_AddObjectRef(module, "TraceState", (PyObject *)TraceStateType) < 0 ||
        PyModule_AddObjectRef(module, "Span", (PyObject *)SpanType) < 0 ||
        PyModule_AddObjectRef(module, "TracedFunction", (PyObject *)TracedFunctionType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
