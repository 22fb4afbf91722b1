// SPI, the one way conveyor runs SQL.
//
// Statement prepares its SQL once per backend (SPI_prepare + SPI_keepplan) with typed parameters
// and keeps the plan; values only ever travel as parameters. PostgreSQL's plan cache re-analyses a
// kept plan when the objects it uses change, so DROP/CREATE EXTENSION in a live session is safe.
// Every call into SPI goes through pg_guard.
#pragma once

#include <memory>

#include "guard.hpp"

namespace conveyor {

// ---- set-returning functions ----
class ResultSet {
  public:
    explicit ResultSet(FunctionCallInfo fcinfo);
    int natts() const { return desc_->natts; }
    void add(const Datum *values, const bool *nulls);

  private:
    Tuplestorestate *store_;
    TupleDesc desc_;
};

} // namespace conveyor

namespace conveyor::spi {

// SPI_connect for the lifetime of the object. It lives above every guard (never inside one).
class Connection {
  public:
    Connection();
    ~Connection();
    Connection(const Connection &) = delete;
    Connection &operator=(const Connection &) = delete;
    void finish();

  private:
    bool open_ = false;
};

// The one way a result outlives SPI_finish: a copy in the memory context that was current when the
// (outermost open) SPI connection began. A varlena value is detoasted first, so the copy stands alone.
Datum keep(Datum value, bool by_value, int16 typlen);

constexpr int max_params = 24;

// Parameter values for one execution. Plain storage only (no destructor), so guarded calls may use it.
class Params {
  public:
    Params &null(int i);
    Params &text(int i, std::string_view v);
    Params &text(int i, const std::string &v) { return text(i, std::string_view(v)); }
    Params &text(int i, const char *v) { return text(i, std::string_view(v)); }
    Params &text(int i, const std::optional<std::string> &v);
    Params &int4(int i, int32 v);
    Params &int4(int i, const std::optional<int32> &v);
    Params &int8(int i, int64 v);
    Params &int8(int i, const std::optional<int64> &v);
    Params &boolean(int i, bool v);
    Params &float8(int i, double v);
    Params &datum(int i, Datum v);  // already of the declared type
    Params &uuid(int i, const pg_uuid_t &v);
    Params &text_array(int i, const std::vector<std::string> &v);
    Params &int4_array(int i, const std::vector<int32> &v);
    Params &uuid_array(int i, const std::vector<pg_uuid_t> &v);
    Params &timestamptz_array(int i, const std::vector<TimestampTz> &v);
    Params &jsonb_array(int i, const std::vector<Datum> &v);

    Datum values[max_params] = {};
    char nulls[max_params];
    Params() { std::memset(nulls, ' ', sizeof nulls); }
};

// The rows the last statement returned (SPI_tuptable), read by column number (0-based).
class Rows {
  public:
    uint64 size() const { return count_; }
    // The rows the statement processed (inserted, updated, deleted or returned), with or without
    // RETURNING: what SPI_processed said right after it.
    uint64 affected() const { return affected_; }
    Datum datum(uint64 row, int col, bool *isnull = nullptr) const;
    // The value at (row, col) converted by conv(Datum), or nullopt where it is NULL: the one "datum or
    // NULL" reader the typed ones below and the modules' own conversions use.
    template <typename F>
    auto value(uint64 row, int col, F &&conv) const -> std::optional<decltype(conv(Datum()))> {
        bool isnull;
        Datum d = datum(row, col, &isnull);
        if (isnull) return std::nullopt;
        return conv(d);
    }
    std::optional<std::string> text(uint64 row, int col) const;
    std::optional<int32> int4(uint64 row, int col) const;
    std::optional<int64> int8(uint64 row, int col) const;
    std::optional<bool> boolean(uint64 row, int col) const;
    std::optional<pg_uuid_t> uuid(uint64 row, int col) const;
    // The result of the statement SPI ran last.
    static Rows last();

  private:
    SPITupleTable *table_ = nullptr;
    uint64 count_ = 0;
    uint64 affected_ = 0;
};

class Statement {
  public:
    Statement(const char *sql, std::initializer_list<Oid> types) : sql_(sql), types_(types) {}
    Statement(const char *sql, std::vector<Oid> types) : sql_(sql), types_(std::move(types)) {}
    // Runs the statement (read-write, fresh snapshot under READ COMMITTED). limit 0 = all rows.
    Rows run(const Params &params, long limit = 0);
    Rows run() { return run(Params{}); }
    // Frees the kept plan (the next run prepares it again). Never while the plan is executing.
    void release();

  private:
    SPIPlanPtr plan();
    const char *sql_;
    std::vector<Oid> types_;
    SPIPlanPtr plan_ = nullptr;
};

// Returns every row of a statement's result as rows of a set-returning function, column for column.
void emit(ResultSet &out, const Rows &rows);

// Runs SQL text that is not worth a kept plan (DDL on partitions, admin paths). Values still go as
// parameters; identifiers in `sql` must already be quoted with quote_identifier.
Rows run_once(const std::string &sql, const std::vector<Oid> &types, const Params &params);

} // namespace conveyor::spi
