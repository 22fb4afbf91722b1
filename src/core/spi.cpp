#include "spi.hpp"
#include "subxact.hpp"
#include "uuid.hpp"

extern "C" {
#include "utils/guc.h"
#include "utils/tuplestore.h"
}

namespace conveyor {

// ---- set-returning functions ----

ResultSet::ResultSet(FunctionCallInfo fcinfo) {
    // The caller's expected row type, when it passes one, spares building the function's result type
    // from the catalog on every call.
    auto *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
    bits32 flags = rsinfo && IsA(rsinfo, ReturnSetInfo) && rsinfo->expectedDesc ? MAT_SRF_USE_EXPECTED_DESC : 0;
    pg_guard([&] { InitMaterializedSRF(fcinfo, flags); });
    store_ = rsinfo->setResult;
    desc_ = rsinfo->setDesc;
}

void ResultSet::add(const Datum *values, const bool *nulls) {
    Tuplestorestate *store = store_;
    TupleDesc desc = desc_;
    pg_guard([&] { tuplestore_putvalues(store, desc, const_cast<Datum *>(values), const_cast<bool *>(nulls)); });
}

} // namespace conveyor

namespace conveyor::spi {

Connection::Connection() {
    pg_guard([] {
        if (SPI_connect() != SPI_OK_CONNECT) elog(ERROR, "SPI_connect failed");
    });
    open_ = true;
}

Connection::~Connection() {
    if (!open_) return;
    open_ = false;
    // Unwinding after an error: the transaction is about to abort and AtEOXact_SPI would clean up,
    // but we finish here so the memory context stack is the one the boundary expects.
    try {
        pg_guard([] { SPI_finish(); });
    } catch (...) {
    }
}

void Connection::finish() {
    if (!open_) return;
    open_ = false;
    pg_guard([] {
        if (SPI_finish() != SPI_OK_FINISH) elog(ERROR, "SPI_finish failed");
    });
}

Datum keep(Datum value, bool by_value, int16 typlen) {
    return pg_guard([&] {
        Datum flat = !by_value && typlen == -1 ? PointerGetDatum(PG_DETOAST_DATUM(value)) : value;
        return SPI_datumTransfer(flat, by_value, typlen);
    });
}

Params &Params::null(int i) {
    values[i] = (Datum)0;
    nulls[i] = 'n';
    return *this;
}

Params &Params::text(int i, std::string_view v) {
    const char *p = v.data();
    size_t n = v.size();
    values[i] = pg_guard([&] { return PointerGetDatum(cstring_to_text_with_len(p, (int)n)); });
    nulls[i] = ' ';
    return *this;
}

Params &Params::text(int i, const std::optional<std::string> &v) { return v ? text(i, *v) : null(i); }

Params &Params::int4(int i, int32 v) {
    values[i] = Int32GetDatum(v);
    nulls[i] = ' ';
    return *this;
}

Params &Params::int4(int i, const std::optional<int32> &v) { return v ? int4(i, *v) : null(i); }

Params &Params::int8(int i, const std::optional<int64> &v) { return v ? int8(i, *v) : null(i); }

Params &Params::int8(int i, int64 v) {
    values[i] = Int64GetDatum(v);
    nulls[i] = ' ';
    return *this;
}

Params &Params::boolean(int i, bool v) {
    values[i] = BoolGetDatum(v);
    nulls[i] = ' ';
    return *this;
}

Params &Params::float8(int i, double v) {
    values[i] = Float8GetDatum(v);
    nulls[i] = ' ';
    return *this;
}

Params &Params::datum(int i, Datum v) {
    values[i] = v;
    nulls[i] = ' ';
    return *this;
}

Params &Params::uuid(int i, const pg_uuid_t &v) {
    values[i] = uuid_datum(v);
    nulls[i] = ' ';
    return *this;
}

// Builds a one-dimensional array from datums already of element type `elem`.
static Datum make_array(const Datum *elems, const bool *elem_nulls, int n, Oid elem) {
    return pg_guard([&] {
        int16 typlen;
        bool byval;
        char align;
        get_typlenbyvalalign(elem, &typlen, &byval, &align);
        int dims[1] = {n};
        int lbs[1] = {1};
        return PointerGetDatum(construct_md_array(const_cast<Datum *>(elems), const_cast<bool *>(elem_nulls),
                                                  1, dims, lbs, elem, typlen, byval, align));
    });
}

template <typename T, typename Conv>
static Datum array_of(const std::vector<T> &v, Oid elem, Conv conv) {
    std::vector<Datum> d(v.size());
    std::unique_ptr<bool[]> nulls(new bool[v.size() + 1]());
    for (size_t k = 0; k < v.size(); ++k) d[k] = conv(v[k]);
    return make_array(d.data(), nulls.get(), (int)v.size(), elem);
}

Params &Params::text_array(int i, const std::vector<std::string> &v) {
    values[i] = array_of(v, TEXTOID, [](const std::string &s) {
        const char *p = s.data();
        size_t n = s.size();
        return pg_guard([&] { return PointerGetDatum(cstring_to_text_with_len(p, (int)n)); });
    });
    nulls[i] = ' ';
    return *this;
}

Params &Params::int4_array(int i, const std::vector<int32> &v) {
    values[i] = array_of(v, INT4OID, [](int32 x) { return Int32GetDatum(x); });
    nulls[i] = ' ';
    return *this;
}

Params &Params::timestamptz_array(int i, const std::vector<TimestampTz> &v) {
    values[i] = array_of(v, TIMESTAMPTZOID, [](TimestampTz x) { return TimestampTzGetDatum(x); });
    nulls[i] = ' ';
    return *this;
}

Params &Params::jsonb_array(int i, const std::vector<Datum> &v) {
    values[i] = array_of(v, JSONBOID, [](Datum x) { return x; });
    nulls[i] = ' ';
    return *this;
}

Params &Params::uuid_array(int i, const std::vector<pg_uuid_t> &v) {
    // One palloc for all elements: pass-by-reference datums pointing into it.
    size_t n = v.size();
    const pg_uuid_t *src = v.data();
    auto *block = pg_guard([&] {
        auto *b = (pg_uuid_t *)palloc(sizeof(pg_uuid_t) * (n ? n : 1));
        if (n) memcpy(b, src, sizeof(pg_uuid_t) * n);
        return b;
    });
    std::vector<Datum> d(n);
    std::unique_ptr<bool[]> nulls_(new bool[n + 1]());
    for (size_t k = 0; k < n; ++k) d[k] = UUIDPGetDatum(&block[k]);
    values[i] = make_array(d.data(), nulls_.get(), (int)n, UUIDOID);
    nulls[i] = ' ';
    return *this;
}

Datum Rows::datum(uint64 row, int col, bool *isnull) const {
    bool n = false;
    HeapTuple tup = table_->vals[row];
    TupleDesc td = table_->tupdesc;
    Datum d = pg_guard([&] { return SPI_getbinval(tup, td, col + 1, &n); });
    if (isnull) *isnull = n;
    return d;
}

std::optional<std::string> Rows::text(uint64 row, int col) const {
    // Any type: text goes through detoast, others through their output function.
    Oid type = SPI_gettypeid(table_->tupdesc, col + 1);
    return value(row, col, [&](Datum d) {
        return std::string(pg_guard([&] {
            if (type == TEXTOID || type == VARCHAROID) return (const char *)text_to_cstring((::text *)DatumGetPointer(d));
            Oid out;
            bool varlena;
            getTypeOutputInfo(type, &out, &varlena);
            return (const char *)OidOutputFunctionCall(out, d);
        }));
    });
}

std::optional<int32> Rows::int4(uint64 row, int col) const { return value(row, col, [](Datum d) { return DatumGetInt32(d); }); }

std::optional<int64> Rows::int8(uint64 row, int col) const { return value(row, col, [](Datum d) { return DatumGetInt64(d); }); }

std::optional<bool> Rows::boolean(uint64 row, int col) const { return value(row, col, [](Datum d) { return DatumGetBool(d); }); }

std::optional<pg_uuid_t> Rows::uuid(uint64 row, int col) const {
    return value(row, col, [](Datum d) { return *DatumGetUUIDP(d); });
}

SPIPlanPtr Statement::plan() {
    if (plan_) return plan_;
    const char *sql = sql_;
    int nargs = (int)types_.size();
    Oid *types = types_.data();
    plan_ = pg_guard([&] {
        // A generic plan, made once and reused: every statement here is a point or index-range
        // lookup whose best plan does not depend on the values, and replanning each call cost
        // more than executing. This also holds under plan_cache_mode = force_custom_plan.
        SPIPlanPtr p = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);
        if (!p) elog(ERROR, "SPI_prepare failed (%s) for: %s", SPI_result_code_string(SPI_result), sql);
        if (SPI_keepplan(p) != 0) elog(ERROR, "SPI_keepplan failed");
        return p;
    });
    return plan_;
}

void Statement::release() {
    SPIPlanPtr p = plan_;
    plan_ = nullptr;
    if (p) pg_guard([&] { SPI_freeplan(p); });
}

// A statement SPI refused to run. Transaction control and COPY are a caller's mistake, not an internal
// error; anything else is one.
static void spi_refused(int rc, const char *what) {
    if (rc == SPI_ERROR_TRANSACTION)
        ereport(ERROR, (errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
                        errmsg("transaction control statements cannot run inside a conveyor function")));
    if (rc == SPI_ERROR_COPY)
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("COPY cannot run inside a conveyor function")));
    elog(ERROR, "%s failed: %s", what, SPI_result_code_string(rc));
}

// ---- the search_path every statement resolves under ----
// Every conveyor function pins this path with its SET clause, but code of the caller's that runs in
// the middle of a call (a trigger, a column DEFAULT or a CHECK on an upsert target) may change it
// with set_config, and PostgreSQL re-parses a kept plan under the search_path current at execution.
// So each statement is prepared and run under the pinned path, re-pinned for its duration when it
// differs: an operator or function the caller planted in a schema of their own never resolves into
// conveyor's statements, least of all those run as the extension's owner.
static const char *const pinned_search_path = "pg_catalog, conveyor, pg_temp";

// Runs f (which prepares and executes statements) under the pinned search_path: as it is when it is
// already pinned (one strcmp, the usual case), else with the path set for f alone.
template <typename F>
static void pinned(F &&f) {
    if (namespace_search_path && std::strcmp(namespace_search_path, pinned_search_path) == 0) f();
    else with_setting("search_path", pinned_search_path, f);
}

Rows Statement::run(const Params &params, long limit) {
    const Params *pp = &params;
    pinned([&] {
        SPIPlanPtr p = plan();
        pg_guard([&] {
            int rc = SPI_execute_plan(p, const_cast<Datum *>(pp->values), pp->nulls, false, limit);
            if (rc < 0) spi_refused(rc, "SPI_execute_plan");
        });
    });
    return Rows::last();
}

Rows Rows::last() {
    Rows rows;
    rows.table_ = SPI_tuptable;
    rows.count_ = SPI_tuptable ? SPI_processed : 0;
    rows.affected_ = SPI_processed;
    return rows;
}

Rows run_once(const std::string &sql, const std::vector<Oid> &types, const Params &params) {
    const char *q = sql.c_str();
    int nargs = (int)types.size();
    const Oid *t = types.data();
    const Params *pp = &params;
    pinned([&] {
        pg_guard([&] {
            int rc = SPI_execute_with_args(q, nargs, const_cast<Oid *>(t), const_cast<Datum *>(pp->values),
                                           pp->nulls, false, 0);
            if (rc < 0) spi_refused(rc, "SPI_execute_with_args");
        });
    });
    return Rows::last();
}

void emit(ResultSet &out, const Rows &rows) {
    std::vector<Datum> values(out.natts());
    std::unique_ptr<bool[]> nulls(new bool[out.natts()]);
    for (uint64 r = 0; r < rows.size(); ++r) {
        for (int c = 0; c < out.natts(); ++c) values[c] = rows.datum(r, c, &nulls[c]);
        out.add(values.data(), nulls.get());
    }
}

} // namespace conveyor::spi

namespace conveyor {

int push_setting(const char *name, const char *value) {
    return pg_guard([&] {
        int level = NewGUCNestLevel();
        (void)set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
        return level;
    });
}

void pop_settings(int level, bool ok) noexcept {
    try {
        pg_guard([&] { AtEOXact_GUC(ok, level); });
    } catch (...) {
        // The (sub)transaction's abort pops the level in any case.
    }
}

} // namespace conveyor
