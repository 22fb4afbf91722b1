// Upserts inside the module: what its files share (upsert.hpp is what the rest of conveyor sees).
//
// A call of conveyor.upsert or conveyor.upsert_counts goes through the files in this order:
//   input.cpp   reads and checks the arguments, the options and every element; nothing is written
//   target.cpp  the cached description of the target table, shared by every call that uses it
//   plans.cpp   the statements of one shape, generated once per (target, shape, options) and kept
//   run.cpp     runs them in rounds until every element has an outcome; traces a failure to its element
//   upsert.cpp  the SQL entry points: operation_id, fence, audit, and the rows or counts returned
//
// A batch, per shape (the set of columns its elements carry; usually one per batch), runs a few
// set-based statements (Statements below):
//   Probe-and-insert    each element's row looked up by its key (one index probe): equal rows are
//                       unchanged and get no lock and no write; missing ones are inserted in key
//                       order, ON CONFLICT (key) DO NOTHING.
//   Lock-compare-update the differing rows, locked FOR UPDATE in key order and compared again against
//                       their latest version (a concurrent change is seen here), with the changed
//                       columns as {"col": {"old", "new"}}, then updated where they still differ, in
//                       the same statement.
//   Insert-first        after a batch of only new rows, the next batch of the shape is first tried as
//                       a plain insert in key order (no lookups); Map-inserted-keys tells which
//                       elements its returned keys belong to, and the others take the way through
//                       Probe-and-insert.
//   Classify            after a batch that found every row, the next batch of the shape is first
//                       classified without writing (Probe-and-insert's lookup alone); the differing
//                       ones go to Lock-compare-update, those not found to Probe-and-insert.
//   Touch-unchanged     option touch_unchanged: the unchanged rows locked in key order, compared
//                       again, and their touch columns set (those that differ by now go to
//                       Lock-compare-update).
// Elements whose row vanished or appeared between the statements (a concurrent delete or insert) go
// round again, a bounded number of times. Keys are inserted and locked in one fixed order (the key's
// order; bytewise for collatable types), so concurrent batches over overlapping keys never deadlock.
#pragma once

#include <map>
#include <memory>
#include <unordered_map>

#include "core/spi.hpp"

namespace conveyor::upsert {

// The most elements one call takes. Larger inputs are split by the caller into several calls.
constexpr size_t max_rows = 10000;
// Rounds for elements whose row was inserted or deleted concurrently between two statements.
constexpr int max_rounds = 5;

// ---------------------------------------------------------------------------------------------------
// The target table, as the catalog describes it (target.cpp)

struct Column {
    std::string name;   // as in the catalog
    std::string ident;  // quoted for SQL
    std::string literal; // quoted as a string literal (jsonb keys in generated SQL)
    AttrNumber attnum = 0;
    std::string type;   // as format_type_be spells it
    Oid type_oid = InvalidOid;
    std::string lock_order;  // ' COLLATE "C"' for collatable types, else empty
    bool generated = false;
    // "OPERATOR(schema.=)" of the type's default equality, or empty: compared as text.
    std::string eq;
};

// What Probe-and-insert and Classify say of each element, in their second column. Probe-and-insert
// also returns one extra row (ord, insert_count) whose first column is the number of rows it inserted.
enum class Classification : int32 {
    not_found = 0,     // no row with the key (and, in Probe-and-insert, not inserted: a row committed
                       // meanwhile, or a BEFORE INSERT trigger skipped it)
    inserted = 1,      // not found, and inserted by this statement
    unchanged = 2,     // found, equal in every compared column
    differs = 3,       // found, different: to Lock-compare-update
    insert_count = 4,  // the extra row of Probe-and-insert
};

// Which statement starts the next batch of a shape that is the whole batch: decided by the last one.
enum class Start : uint8 {
    probe,         // Probe-and-insert
    insert_first,  // the last batch was all new rows: Insert-first
    classify,      // the last batch found every row: Classify
};

// The kept statements of one shape (plans.cpp). Each SQL text lives beside its statement.
struct Statements {
    struct Kept {
        std::string sql;
        std::unique_ptr<spi::Statement> statement;  // null where the shape has no such statement
        // Prepares the kept plan from sql (sql must not change afterwards).
        void keep(std::vector<Oid> types) { statement = std::make_unique<spi::Statement>(sql.c_str(), std::move(types)); }
        explicit operator bool() const { return statement != nullptr; }
        spi::Rows run(const spi::Params &params) const { return statement->run(params); }
    };
    // Probe-and-insert over every element of the array, or over the positions $2 lists.
    Kept probe_all, probe_some;
    // Lock-compare-update; none when the shape compares no column.
    Kept lock_compare_update;
    // Insert-first and Map-inserted-keys; none when a key column's type has no array type.
    Kept insert_first, map_inserted_keys;
    Kept classify;
    // Classify over the positions $2 lists (mode 'update': nothing is inserted); prepared on first use.
    Kept classify_some;
    // The returning columns of the stored rows of the elements $2 lists (option returning); only in
    // the Statements kept under a returning signature (returning_for).
    Kept returning;
    // Touch-unchanged over the elements $2 lists; only with the option touch_unchanged.
    Kept touch_unchanged;
    Start start = Start::probe;

    // Frees every kept plan. Never while one of them is executing.
    void release();
};

struct Target {
    Oid relid = InvalidOid;
    bool stale = false;
    // BEFORE ROW triggers may skip a row (return NULL) or change it: their decisions are reported.
    bool before_insert_trigger = false;
    bool before_update_trigger = false;
    std::string qualified;  // "schema"."table", quoted
    std::string display;    // schema.table, for messages
    std::vector<Column> columns;
    std::unordered_map<std::string, int> by_name;
    // Usable ON CONFLICT arbiters: unique, immediate, valid, no predicate, no expressions.
    struct Key {
        std::string index;
        std::vector<int> cols;  // indexes into columns, sorted
        std::string why_not;    // set when the index cannot serve (partial, expressions, deferrable)
    };
    std::vector<Key> keys;
    std::string ord_alias;  // a column name for the element's position that no column of the table has
    std::map<std::string, std::unique_ptr<Statements>> plans;  // by shape signature
};

// The description of relid, held by the caller for as long as it uses it (or its statements).
// Stale descriptions are retired, and their plans freed once no call holds them.
std::shared_ptr<Target> target_for(Oid relid);

// ---------------------------------------------------------------------------------------------------
// One call (input.cpp reads it)

// Several elements with one key in a batch: an error, or keep the first / the last of them.
enum class OnDuplicate : uint8 { error, first, last };
// upsert: insert or update; insert: existing rows are left alone; update: missing rows are not inserted.
enum class Mode : uint8 { upsert, insert, update };

struct Options {
    std::vector<int> touch;      // column indexes
    std::vector<int> immutable;  // column indexes, created_at included when the table has it
    bool strict = true;
    std::optional<std::string> operation_id;
    std::optional<std::string> fence_key;
    int64 fence_token = 0;
    bool audit = false;
    OnDuplicate on_duplicate = OnDuplicate::error;
    Mode mode = Mode::upsert;
    bool skip_errors = false;    // on_error 'skip'
    std::vector<int> returning;  // column indexes, in the order given
    bool has_returning = false;
    bool touch_unchanged = false;  // unchanged rows get their touch columns set too
};

struct Element {
    const JsonbContainer *obj = nullptr;
};

struct Shape {
    std::vector<int> present;  // column indexes the elements carry (touch columns excluded), sorted
    std::vector<int> compared; // present, minus key, immutable (and created_at) columns
    std::vector<size_t> ords;  // elements of this shape, in input order
};

// skipped: a BEFORE ROW trigger on the target returned NULL for the element's insert or update.
// duplicate: another element of the batch has the same key and was kept (on_duplicate first/last).
// exists: mode 'insert' found the row. missing: mode 'update' found no row. error: on_error 'skip'
// set the element aside (changed says why).
enum class Action : char {
    none = 0, inserted = 'i', updated = 'u', unchanged = '=', skipped = 's',
    duplicate = 'd', exists = 'e', missing = 'm', error = 'x'
};

struct Outcome {
    Action action = Action::none;
    Datum changed = (Datum)0;  // jsonb, for updated rows; {"sqlstate", "message"} for errors
    Datum row = (Datum)0;      // jsonb of the returning columns, or 0
    bool key_read = true;      // false: an error before the element's key was read (key NULL)
};

struct Call {
    std::shared_ptr<Target> t;  // held for the whole call (see target_for)
    std::vector<int> key;
    Options opt;
    Jsonb *rows = nullptr;
    Jsonb *options = nullptr;  // as given, or nullptr
    std::vector<Element> elements;
    std::vector<JsonbValue> key_values;  // element i's key column k at [i * key.size() + k]
    std::vector<Shape> shapes;
    std::vector<Outcome> out;
    std::vector<uint8_t> misses;  // rounds in which element i was neither found nor inserted
    bool rls = false;
    bool want_changed = true;  // false: only counts are returned, and nothing records what changed
};

// Reads and checks the arguments and every element, and the caller's rights; nothing is written.
void prepare(Call &call, FunctionCallInfo fcinfo);

// "rows[i]", as messages name an element.
inline std::string at(size_t i) { return fmt::format("rows[{}]", i); }
// "col=value, ..." of element i's key, for messages.
std::string key_text(const Call &call, size_t i);

// ---------------------------------------------------------------------------------------------------
// The statements of a shape (plans.cpp) and running them (run.cpp)

// The kept statements for the shape, generated on first use.
Statements &statements_for(Target &t, const std::vector<int> &key, const Options &o, const Shape &shape);

// The kept statement of option returning for these key and returning columns.
Statements::Kept &returning_for(Target &t, const std::vector<int> &key, const std::vector<int> &returning);

// Upserts every element of the call until each has an outcome.
void run_all(Call &call);
// on_error 'skip': the same, but a batch that fails is split until the failing elements are found;
// they get the action error, the others are written.
void run_all_skipping(Call &call);
// {"sqlstate": ..., "message": ...}: what the action error reports in changed.
Datum error_json(int sqlstate, const std::string &message);
// Fills the row of each element whose row is stored (option returning).
void read_returning(Call &call);
// The batch failed with `error`: the error to raise, traced to its element (and, for a value that
// does not convert, its column) where that can be done.
ErrorData *trace_error(Call &call, ErrorData *error);

} // namespace conveyor::upsert
