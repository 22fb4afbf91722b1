// conveyor_fuzz: coverage-guided fuzzing (libFuzzer) of conveyor's argument readers, JSON readers and
// option parsers, inside a PostgreSQL backend. They run on PostgreSQL's Jsonb and FunctionCallInfo, so
// a stand-alone fuzzer binary cannot link them; this test-only library holds conveyor's own objects
// (every src/*/*.cpp, instrumented the same way) and libFuzzer's runtime without main, and
// conveyor_fuzz.run(args) hands a callback to LLVMFuzzerRunDriver in the backend that calls it.
//
// One input is: a selector byte ('a' + target index, modulo the number of targets), then the fields
// of that target separated by NUL bytes (a SQL text can hold no NUL, so nothing is lost). A field that
// is absent is SQL NULL; an empty field is NULL for every type but text. Each field is converted the
// way a SQL call's argument would be (jsonb_in, int4in, numeric_in, timestamptz_in, a text[] split at
// commas); a field that is not valid UTF-8 or that its input function refuses makes the input
// uninteresting (return -1: libFuzzer does not keep it).
//
// Every call runs in a subtransaction that is always rolled back, under pg_guard. A PostgreSQL error
// or a conveyor::Error is an expected rejection; SQLSTATE XX000 (internal error, which is also what a
// stray C++ exception becomes at conveyor's boundary), a broken property of a reader, a crash or a
// sanitizer report is a finding: the harness prints it and aborts, and libFuzzer writes the input.
#include <dlfcn.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "core/args.hpp"
#include "core/guard.hpp"
#include "core/jsonb.hpp"
#include "core/subxact.hpp"

extern "C" {
#include "catalog/pg_collation.h"
#include "catalog/pg_proc.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "utils/regproc.h"
#include "utils/catcache.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
}

#undef fprintf
#undef snprintf

// conveyor's entry points, compiled into this library (CONVEYOR_FUNCTION defines them extern "C").
extern "C" {
Datum conveyor_create_queue(PG_FUNCTION_ARGS);
Datum conveyor_alter_queue(PG_FUNCTION_ARGS);
Datum conveyor_enqueue(PG_FUNCTION_ARGS);
Datum conveyor_enqueue_batch(PG_FUNCTION_ARGS);
Datum conveyor_upsert(PG_FUNCTION_ARGS);
Datum conveyor_upsert_counts(PG_FUNCTION_ARGS);
Datum conveyor_lock_acquire(PG_FUNCTION_ARGS);
Datum conveyor_entity_acquire(PG_FUNCTION_ARGS);
Datum conveyor_entity_complete(PG_FUNCTION_ARGS);
Datum conveyor_account_create(PG_FUNCTION_ARGS);
Datum conveyor_account_update(PG_FUNCTION_ARGS);
Datum conveyor_quota_define(PG_FUNCTION_ARGS);
Datum conveyor_charge(PG_FUNCTION_ARGS);
Datum conveyor_snapshot(PG_FUNCTION_ARGS);
Datum conveyor_snapshot_batch(PG_FUNCTION_ARGS);
Datum conveyor_idempotency_begin(PG_FUNCTION_ARGS);
Datum conveyor_idempotency_finish(PG_FUNCTION_ARGS);

// libFuzzer's entry point when it is linked without its main (libclang_rt.fuzzer_no_main).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
}

namespace {

using namespace conveyor;

// ---- the targets --------------------------------------------------------------------------------

enum Kind : char {
    T = 't',   // text
    J = 'j',   // jsonb (jsonb_in)
    I = 'i',   // int4 (int4in)
    L = 'l',   // int8 (int8in)
    B = 'b',   // boolean (boolin)
    N = 'n',   // numeric (numeric_in)
    S = 's',   // timestamptz (timestamptz_in, the session's TimeZone)
    A = 'a',   // text[] (the field split at commas)
    R = 'r',   // regclass: the harness's upsert target (conveyor_fuzz.target); takes no field
};

struct Target {
    const char *name;       // also the SQL function's name in schema conveyor, for its result type
    PGFunction fn;          // nullptr: one of the harness's own reader checks
    const char *kinds;      // one Kind per argument
    bool retset;
};

void check_readers(const std::vector<std::string> &fields);
void check_args(const std::vector<std::string> &fields);

const Target targets[] = {
    {"json_readers", nullptr, "", false},                                 // 'a'
    {"arg_readers", nullptr, "", false},                                  // 'b'
    {"create_queue", conveyor_create_queue, "tj", false},                 // 'c'
    {"alter_queue", conveyor_alter_queue, "tj", false},                   // 'd'
    {"enqueue", conveyor_enqueue, "tjttisti", true},                      // 'e'
    {"enqueue_batch", conveyor_enqueue_batch, "tj", true},                // 'f'
    {"upsert", conveyor_upsert, "rjaj", true},                            // 'g'
    {"upsert_counts", conveyor_upsert_counts, "rjaj", true},              // 'h'
    {"lock_acquire", conveyor_lock_acquire, "ttitj", false},              // 'i'
    {"entity_acquire", conveyor_entity_acquire, "ttiti", false},          // 'j'
    {"entity_complete", conveyor_entity_complete, "ttj", false},          // 'k'
    {"account_create", conveyor_account_create, "tntbj", false},          // 'l'
    {"account_update", conveyor_account_update, "tntbjb", false},         // 'm'
    {"quota_define", conveyor_quota_define, "tlttj", false},              // 'n'
    {"charge", conveyor_charge, "ttnijtb", true},                         // 'o'
    {"snapshot", conveyor_snapshot, "ttjstt", true},                      // 'p'
    {"snapshot_batch", conveyor_snapshot_batch, "tjtt", true},            // 'q'
    {"idempotency_begin", conveyor_idempotency_begin, "tji", true},       // 'r'
    {"idempotency_finish", conveyor_idempotency_finish, "tj", false},     // 's'
};
constexpr size_t n_targets = sizeof targets / sizeof targets[0];

// Filled once per run: the SQL function's OID (for its result type) and the upsert target's OID.
Oid target_oids[n_targets];
Oid upsert_target = InvalidOid;
MemoryContext iteration_context = nullptr;
uint64 executions = 0;

// Where libFuzzer's exit() returns to (see exit() below), and whether the callback is running.
sigjmp_buf *driver_return = nullptr;
int driver_status = 0;
bool in_callback = false;
bool driver_ran = false;
bool verbose = false;  // replaying input files: say what each call did

[[noreturn]] void finding(const char *what, const std::string &detail) {
    std::fprintf(stderr, "\n==conveyor_fuzz== FINDING: %s: %s\n", what, detail.c_str());
    std::fflush(stderr);
    std::abort();  // libFuzzer's SIGABRT handler writes the input as crash-<sha1>
}

// An input that is not worth keeping (a field its input function refuses).
struct Uninteresting {};

// ---- arguments from fields ----------------------------------------------------------------------

Datum input(PGFunction in, const std::string &s, Oid typioparam = InvalidOid) {
    const char *cs = s.c_str();
    try {
        return pg_guard([&] { return DirectFunctionCall3(in, CStringGetDatum(cs), ObjectIdGetDatum(typioparam), Int32GetDatum(-1)); });
    } catch (const PgError &) {
        throw Uninteresting{};
    }
}

Datum text_array(const std::string &s) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
        size_t comma = s.find(',', start);
        parts.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    std::vector<Datum> elems;
    for (const auto &p : parts) elems.push_back(PointerGetDatum(cstring_to_text_with_len(p.data(), (int)p.size())));
    Datum *e = elems.data();
    int n = (int)elems.size();
    return pg_guard([&] { return PointerGetDatum(construct_array(e, n, TEXTOID, -1, false, TYPALIGN_INT)); });
}

// Sets argument i of fcinfo from field f (nullptr: absent) as kind k.
void set_arg(FunctionCallInfo fcinfo, int i, char k, const std::string *f) {
    NullableDatum &a = fcinfo->args[i];
    a.isnull = false;
    if (k == R) {
        a.value = ObjectIdGetDatum(upsert_target);
        return;
    }
    if (!f || (f->empty() && k != T)) {
        a.isnull = true;
        a.value = (Datum)0;
        return;
    }
    switch (k) {
    case T: a.value = PointerGetDatum(cstring_to_text_with_len(f->data(), (int)f->size())); break;
    case J: a.value = input(jsonb_in, *f); break;
    case I: a.value = input(int4in, *f); break;
    case L: a.value = input(int8in, *f); break;
    case B: a.value = input(boolin, *f); break;
    case N: a.value = input(numeric_in, *f, NUMERICOID); break;
    case S: a.value = input(timestamptz_in, *f); break;
    case A: a.value = text_array(*f); break;
    default: finding("harness", "unknown argument kind");
    }
}

// ---- the JSON readers ---------------------------------------------------------------------------

// The integer value of a numeric if it is one that fits int64 (computed apart from jsonb_int).
std::optional<int64> numeric_as_int64(Numeric num) {
    bool integral = false;
    int64 out = 0;
    try {
        out = pg_guard([&] {
            Datum rounded = DirectFunctionCall2(numeric_round, NumericGetDatum(num), Int32GetDatum(0));
            integral = !numeric_is_nan(num) && DatumGetBool(DirectFunctionCall2(numeric_eq, rounded, NumericGetDatum(num)));
            return integral ? DatumGetInt64(DirectFunctionCall1(numeric_int8, NumericGetDatum(num))) : (int64)0;
        });
    } catch (const PgError &) {
        return std::nullopt;  // out of int64's range
    }
    if (!integral) return std::nullopt;
    return out;
}

// jsonb_int(v, lo, hi) against its contract: accepts exactly the integers in [lo, hi] and returns
// them unchanged; anything else is 22023. (Every caller's range lies within int32.)
void check_jsonb_int(const JsonbValue &v, int64 lo, int64 hi) {
    std::optional<int64> expected;
    if (v.type == jbvNumeric) {
        auto n = numeric_as_int64(v.val.numeric);
        if (n && *n >= lo && *n <= hi) expected = n;
    }
    try {
        int64 got = jsonb_int(v, "fuzz", lo, hi);
        if (!expected || *expected != got)
            finding("jsonb_int", fmt::format("accepted {} for [{}, {}] ({})", got, lo, hi,
                                             expected ? "expected " + std::to_string(*expected) : "expected a rejection"));
    } catch (const Error &e) {
        if (e.sqlstate != ERRCODE_INVALID_PARAMETER_VALUE) finding("jsonb_int", "rejected with a SQLSTATE other than 22023: " + e.message);
        if (expected) finding("jsonb_int", fmt::format("rejected {} for [{}, {}]: {}", *expected, lo, hi, e.message));
    }
}

void check_value(const JsonbValue &v, int64 lo, int64 hi) {
    (void)jsonb_type_name(v);
    check_jsonb_int(v, lo, hi);
    if (v.type == jbvString) (void)jsonb_string(v);
    // Round trip through a standalone Jsonb.
    Jsonb *standalone = (Jsonb *)DatumGetPointer(jsonb_value_datum(v));
    try {
        auto arr = jsonb_text_array(v, "fuzz");
        bool is_array = v.type == jbvBinary && JsonContainerIsArray(v.val.binary.data) && !JsonContainerIsScalar(v.val.binary.data);
        if (arr && (!is_array || arr->size() != JsonContainerSize(&standalone->root)))
            finding("jsonb_text_array", "returned strings for what is not an array of that many strings");
        if (!arr && v.type != jbvNull) finding("jsonb_text_array", "returned NULL for a non-null value");
    } catch (const Error &e) {
        if (e.sqlstate != ERRCODE_INVALID_PARAMETER_VALUE) finding("jsonb_text_array", e.message);
    }
}

// Fields: jsonb, lo, hi (int4 text; default 0 and 1000).
void check_readers(const std::vector<std::string> &fields) {
    if (fields.empty() || fields[0].empty()) throw Uninteresting{};
    Jsonb *jb = DatumGetJsonbP(input(jsonb_in, fields[0]));
    int64 lo = fields.size() > 1 && !fields[1].empty() ? DatumGetInt32(input(int4in, fields[1])) : 0;
    int64 hi = fields.size() > 2 && !fields[2].empty() ? DatumGetInt32(input(int4in, fields[2])) : 1000;
    uint32 size = JB_ROOT_IS_SCALAR(jb) ? 1 : JsonContainerSize(&jb->root);
    bool is_object = JB_ROOT_IS_OBJECT(jb), is_array = JB_ROOT_IS_ARRAY(jb) && !JB_ROOT_IS_SCALAR(jb);
    try {
        auto fs = jsonb_object_fields(jb, "fuzz");
        if (!is_object || fs.size() != size) finding("jsonb_object_fields", fmt::format("{} fields of a container of {}", fs.size(), size));
        for (const auto &f : fs) check_value(f.value, lo, hi);
    } catch (const Error &e) {
        if (is_object || e.sqlstate != ERRCODE_INVALID_PARAMETER_VALUE) finding("jsonb_object_fields", e.message);
    }
    try {
        auto es = jsonb_array_elements(jb, "fuzz");
        if (!is_array || es.size() != size) finding("jsonb_array_elements", fmt::format("{} elements of a container of {}", es.size(), size));
        for (const auto &e : es) check_value(e, lo, hi);
    } catch (const Error &e) {
        if (is_array || e.sqlstate != ERRCODE_INVALID_PARAMETER_VALUE) finding("jsonb_array_elements", e.message);
    }
}

// ---- the argument readers -----------------------------------------------------------------------

// Fields: a text (arg 0), an int4 (arg 1), a jsonb (arg 2), a uuid (arg 3), a timestamptz (arg 4),
// and max_bytes for required_name (int4 text). Each reader is called through a FunctionCallInfo built
// by hand, as a SQL call would fill it, and checked against its documented contract.
void check_args(const std::vector<std::string> &fields) {
    LOCAL_FCINFO(fcinfo, 5);
    InitFunctionCallInfoData(*fcinfo, nullptr, 5, DEFAULT_COLLATION_OID, nullptr, nullptr);
    const char kinds[] = {T, I, J, 'u', S};
    for (int i = 0; i < 5; ++i) {
        const std::string *f = (size_t)i < fields.size() ? &fields[i] : nullptr;
        if (kinds[i] == 'u') {
            fcinfo->args[i].isnull = !f || f->empty();
            fcinfo->args[i].value = fcinfo->args[i].isnull ? (Datum)0 : input(uuid_in, *f);
        } else
            set_arg(fcinfo, i, kinds[i], f);
    }
    int32 max_bytes = fields.size() > 5 && !fields[5].empty() ? DatumGetInt32(input(int4in, fields[5])) : 64;
    if (max_bytes < 0) throw Uninteresting{};
    const bool text_null = fcinfo->args[0].isnull;
    const std::string *text = text_null ? nullptr : &fields[0];

    auto expect = [](bool ok, const char *reader, const std::string &what) {
        if (!ok) finding(reader, what);
    };
    // Calls reader; true if it returned, false if it threw Error with one of the allowed SQLSTATEs.
    auto accepted = [](const char *reader, auto &&call, std::initializer_list<int> allowed) {
        try {
            call();
            return true;
        } catch (const Error &e) {
            for (int s : allowed)
                if (e.sqlstate == s) return false;
            finding(reader, "unexpected SQLSTATE: " + e.message);
        }
    };

    auto t = arg_text(fcinfo, 0);
    expect(t.has_value() == !text_null && (!t || *t == *text), "arg_text", "did not return the argument");
    bool ok = accepted("required_text", [&] { (void)required_text(fcinfo, 0, "fuzz"); }, {ERRCODE_NULL_VALUE_NOT_ALLOWED});
    expect(ok == !text_null, "required_text", "accepted NULL or refused a value");
    ok = accepted("required_name", [&] { (void)required_name(fcinfo, 0, "fuzz", (size_t)max_bytes); },
                  {ERRCODE_NULL_VALUE_NOT_ALLOWED, ERRCODE_INVALID_PARAMETER_VALUE});
    expect(ok == (text && !text->empty() && (max_bytes == 0 || text->size() <= (size_t)max_bytes)), "required_name",
           "accepted or refused against its contract");
    ok = accepted("required_key", [&] { (void)required_key(fcinfo, 0, "fuzz"); },
                  {ERRCODE_NULL_VALUE_NOT_ALLOWED, ERRCODE_INVALID_PARAMETER_VALUE});
    expect(ok == (text && !text->empty() && text->size() <= max_key_bytes), "required_key", "accepted or refused against its contract");
    for (bool allow_empty : {false, true}) {
        std::optional<std::string> k;
        ok = accepted("optional_key", [&] { k = optional_key(fcinfo, 0, "fuzz", allow_empty); }, {ERRCODE_INVALID_PARAMETER_VALUE});
        expect(ok == (!text || ((allow_empty || !text->empty()) && text->size() <= max_key_bytes)), "optional_key",
               "accepted or refused against its contract");
        expect(!ok || k.has_value() == !text_null, "optional_key", "NULL in, value out or the reverse");
    }
    if (text) {
        ok = accepted("check_key", [&] { check_key(*text, "fuzz"); }, {ERRCODE_INVALID_PARAMETER_VALUE});
        expect(ok == (text->size() <= max_key_bytes), "check_key", "accepted or refused against its contract");
    }

    auto n = arg_int(fcinfo, 1);
    expect(n.has_value() == !fcinfo->args[1].isnull, "arg_int", "NULL in, value out or the reverse");

    Jsonb *jb = arg_jsonb(fcinfo, 2);
    expect((jb == nullptr) == fcinfo->args[2].isnull, "arg_jsonb", "NULL in, value out or the reverse");

    ok = accepted("required_uuid", [&] { (void)required_uuid(fcinfo, 3, "fuzz"); }, {ERRCODE_NULL_VALUE_NOT_ALLOWED});
    expect(ok == !fcinfo->args[3].isnull, "required_uuid", "accepted NULL or refused a value");

    TimestampTz got = 0;
    ok = accepted("required_time", [&] { got = required_time(fcinfo, 4, "fuzz"); },
                  {ERRCODE_NULL_VALUE_NOT_ALLOWED, ERRCODE_INVALID_PARAMETER_VALUE});
    if (!fcinfo->args[4].isnull) {
        TimestampTz ts = DatumGetTimestampTz(fcinfo->args[4].value);
        bool in_range = ts >= min_time && ts < max_time;
        expect(ok == in_range && (!ok || got == ts), "required_time", "accepted or refused against its contract");
        (void)timestamptz_text(ts);
    } else
        expect(!ok, "required_time", "accepted NULL");
}

// ---- calling an entry point ---------------------------------------------------------------------

void call_target(size_t t, const std::vector<std::string> &fields) {
    const Target &tg = targets[t];
    if (!tg.fn) {
        if (t == 0) check_readers(fields);
        else check_args(fields);
        return;
    }
    const int nargs = (int)std::strlen(tg.kinds);
    FmgrInfo flinfo;
    std::memset(&flinfo, 0, sizeof flinfo);
    flinfo.fn_addr = tg.fn;
    flinfo.fn_oid = target_oids[t];
    flinfo.fn_nargs = (short)nargs;
    flinfo.fn_strict = false;
    flinfo.fn_retset = tg.retset;
    flinfo.fn_mcxt = CurrentMemoryContext;
    ReturnSetInfo rsinfo;
    std::memset(&rsinfo, 0, sizeof rsinfo);
    if (tg.retset) {
        rsinfo.type = T_ReturnSetInfo;
        rsinfo.econtext = pg_guard([] { return CreateStandaloneExprContext(); });
        rsinfo.allowedModes = SFRM_ValuePerCall | SFRM_Materialize;
        rsinfo.returnMode = SFRM_ValuePerCall;
        rsinfo.isDone = ExprSingleResult;
    }
    LOCAL_FCINFO(fcinfo, FUNC_MAX_ARGS);
    InitFunctionCallInfoData(*fcinfo, &flinfo, nargs, DEFAULT_COLLATION_OID, nullptr,
                             tg.retset ? (fmNodePtr)&rsinfo : nullptr);
    size_t f = 0;
    for (int i = 0; i < nargs; ++i) {
        char k = tg.kinds[i];
        const std::string *field = nullptr;
        if (k != R) {
            if (f < fields.size()) field = &fields[f];
            ++f;
        }
        set_arg(fcinfo, i, k, field);
    }
    pg_guard([&] {
        (void)FunctionCallInvoke(fcinfo);
        if (rsinfo.setResult) tuplestore_end(rsinfo.setResult);
    });
}

// ---- the callback -------------------------------------------------------------------------------

std::string sqlstate_text(int code) { return unpack_sql_state(code); }

std::optional<std::string> arg_text_of(Datum d) { return std::string(pg_guard([&] { return (const char *)TextDatumGetCString(d); })); }

int one_input(const uint8_t *data, size_t size) {
    if (size == 0) return -1;
    const size_t t = (size_t)(uint8_t)(data[0] - 'a') % n_targets;
    const char *rest = (const char *)data + 1;
    const size_t len = size - 1;
    std::vector<std::string> fields;
    if (len > 0) {
        size_t start = 0;
        for (size_t i = 0; i <= len; ++i)
            if (i == len || rest[i] == '\0') {
                fields.emplace_back(rest + start, i - start);
                start = i + 1;
            }
    }
    // A SQL caller can only send valid text of the database encoding.
    for (const auto &fl : fields)
        if (!pg_verifymbstr(fl.data(), (int)fl.size(), true)) return -1;

    ++executions;
    in_callback = true;
    int rc = 0;
    MemoryContext old = MemoryContextSwitchTo(iteration_context);
    MemoryContext outer_boundary = boundary_context;
    boundary_context = iteration_context;
    try {
        ErrorData *e = try_and_roll_back([&] { call_target(t, fields); });
        if (verbose)
            std::fprintf(stderr, "conveyor_fuzz: %s: %s%s%s\n", targets[t].name, e ? unpack_sql_state(e->sqlerrcode) : "accepted",
                         e ? " " : "", e && e->message ? e->message : "");
        if (e && e->sqlerrcode == ERRCODE_INTERNAL_ERROR)
            finding(targets[t].name, fmt::format("SQLSTATE XX000: {}{}{}", e->message ? e->message : "",
                                                  e->detail ? " DETAIL: " : "", e->detail ? e->detail : ""));
    } catch (const Uninteresting &) {
        if (verbose) std::fprintf(stderr, "conveyor_fuzz: %s: a field its input function refuses\n", targets[t].name);
        rc = -1;
    } catch (const Error &e) {
        if (verbose) std::fprintf(stderr, "conveyor_fuzz: %s: %s %s\n", targets[t].name, unpack_sql_state(e.sqlstate), e.what());
        if (e.sqlstate == ERRCODE_INTERNAL_ERROR) finding(targets[t].name, "conveyor::Error XX000: " + e.message);
    } catch (const PgError &e) {
        // Raised outside the subtransaction (argument conversion is inside it): only the harness's
        // own steps get here.
        finding("harness", fmt::format("PostgreSQL error outside the subtransaction: {} ({})", e.what(), sqlstate_text(e.sqlstate())));
    } catch (const std::exception &e) {
        finding(targets[t].name, std::string("C++ exception: ") + e.what());
    }
    boundary_context = outer_boundary;
    MemoryContextSwitchTo(old);
    MemoryContextReset(iteration_context);
    in_callback = false;
    return rc;
}

// Arguments: libFuzzer's command line (text[]), and the file its output (stderr) goes to (NULL: the
// server log).
Datum run_impl(FunctionCallInfo fcinfo) {
    if (driver_ran)
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "libFuzzer has already run in this session", "",
                    "Its state lives on in the process: run it again from a new session.");
    static std::vector<std::string> args;  // libFuzzer keeps pointers into argv
    static std::vector<char *> argv;
    args.assign(1, "conveyor_fuzz");
    if (PG_ARGISNULL(0)) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "args must not be NULL");
    Datum *elems;
    bool *nulls;
    int n;
    pg_guard([&] {
        deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
    });
    for (int i = 0; i < n; ++i)
        if (!nulls[i]) args.emplace_back(*arg_text_of(elems[i]));
    for (size_t i = 1; i < args.size(); ++i) {
        struct stat st;
        if (args[i][0] != '-' && stat(args[i].c_str(), &st) == 0 && S_ISREG(st.st_mode)) verbose = true;
    }
    argv.clear();
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (auto path = arg_text(fcinfo, 1)) {
        int fd = open(path->c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd < 0) throw Error(ERRCODE_IO_ERROR, fmt::format("could not open {}: {}", *path, std::strerror(errno)));
        dup2(fd, 2);
        close(fd);
    }
    // Only the result type of the SQL functions is read (set-returning ones), so any overload does.
    for (size_t t = 0; t < n_targets; ++t) {
        if (!targets[t].fn) continue;
        const char *name = targets[t].name;
        target_oids[t] = pg_guard([&] {
            Oid found = InvalidOid;
            Oid ns = get_namespace_oid("conveyor", false);
            CatCList *list = SearchSysCacheList1(PROCNAMEARGSNSP, CStringGetDatum(name));
            for (int i = 0; i < list->n_members; ++i) {
                Form_pg_proc p = (Form_pg_proc)GETSTRUCT(&list->members[i]->tuple);
                if (p->pronamespace == ns) found = p->oid;
            }
            ReleaseSysCacheList(list);
            return found;
        });
        if (!OidIsValid(target_oids[t])) throw Error(ERRCODE_UNDEFINED_FUNCTION, fmt::format("function conveyor.{} not found", name));
    }
    upsert_target = pg_guard([] { return DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum("conveyor_fuzz.target"))); });
    iteration_context = pg_guard([] { return AllocSetContextCreate(TopTransactionContext, "conveyor_fuzz iteration", ALLOCSET_DEFAULT_SIZES); });
    int argc = (int)args.size();
    char **argvp = argv.data();
    // libFuzzer ends with exit() when it is done (-max_total_time, -runs, inputs replayed). In a
    // backend that would run the C++ static destructors of this library before PostgreSQL's own
    // atexit hook aborts the open transaction, whose callbacks (conveyor's) then use destroyed
    // objects. exit() below brings libFuzzer back here instead: the call returns libFuzzer's status
    // and the backend goes on normally. (A finding ends the process with _Exit or a signal.)
    MemoryContext context = CurrentMemoryContext;
    const detail::ErrorStacks stacks;
    sigjmp_buf back;
    driver_ran = true;
    int rc;
    if (sigsetjmp(back, 0) == 0) {
        driver_return = &back;
        rc = LLVMFuzzerRunDriver(&argc, &argvp, one_input);
    } else
        rc = driver_status;
    driver_return = nullptr;
    stacks.restore();
    MemoryContextSwitchTo(context);
    std::fprintf(stderr, "conveyor_fuzz: %llu inputs run by the harness, libFuzzer's exit status %d\n",
                 (unsigned long long)executions, rc);
    std::fflush(stderr);
    PG_RETURN_INT32(rc);
}

} // namespace

// libFuzzer's calls to exit() bind to this one (it is local to this library: exports.map): when the
// driver is done (not inside the callback) it returns to run_impl; any other exit is the real one.
extern "C" __attribute__((noreturn)) void exit(int status) noexcept {
    if (driver_return && !in_callback) {
        driver_status = status;
        siglongjmp(*driver_return, 1);
    }
    using exit_fn = void (*)(int);
    static exit_fn real = (exit_fn)dlsym(RTLD_NEXT, "exit");
    real(status);
    __builtin_unreachable();
}

extern "C" {
__attribute__((visibility("default"))) Datum conveyor_fuzz_run(PG_FUNCTION_ARGS);
PG_FUNCTION_INFO_V1(conveyor_fuzz_run);
Datum conveyor_fuzz_run(PG_FUNCTION_ARGS) {
    return conveyor::at_boundary([fcinfo] { return run_impl(fcinfo); });
}
}
