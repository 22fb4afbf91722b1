// Small shared pieces: time-ordered ids, stable hashing, transaction-scoped internal locks,
// set-returning results and jsonb reading.
#pragma once

#include "guard.hpp"

namespace conveyor {

// ---- UUID version 7 (RFC 9562, section 5.7) ----
// 48-bit Unix milliseconds, version 7, a 12-bit counter in rand_a that keeps ids from one backend
// strictly increasing within a millisecond (method 1 of section 6.2), variant 10, 62 random bits.
pg_uuid_t uuid_v7();
std::string uuid_text(const pg_uuid_t &u);
// A uuid as a Datum (a palloc'd copy in the current memory context).
Datum uuid_datum(const pg_uuid_t &u);
// Orders uuids bytewise, as PostgreSQL does: for sets and maps of job ids.
struct UuidLess {
    bool operator()(const pg_uuid_t &a, const pg_uuid_t &b) const { return std::memcmp(a.data, b.data, UUID_LEN) < 0; }
};

// ---- hashing ----
// XXH3 64-bit: frozen output on every platform since xxHash 0.8.0. With seed 0 this is plain
// XXH3_64bits (XXH3_64bits_withSeed(..., 0) is defined to equal it), which conveyor.advisory_key uses.
uint64 hash64(std::string_view bytes, uint64 seed = 0);

// ---- internal transaction-scoped locks ----
// Advisory locks in conveyor's own namespaces (objsubid 3 and up; pg_advisory_* use 1 and 2), held
// until the transaction ends, so they work behind a transaction-mode pooler. Callers that take several
// take them in ascending key order, which keeps them deadlock-free. wake: a queue's wake lock (see
// src/wakeup.hpp); lease: the key of a lease while lock_acquire draws its fencing token (src/locks.cpp);
// account: an account's budget mode (src/costs.cpp); snapshot: a (series, entity) while its captures
// are written (src/snapshot.cpp).
enum class LockSpace : uint16 { group = 3, dedup = 4, partition = 5, wake = 6, lease = 7, account = 8, snapshot = 9 };
LOCKTAG advisory_tag(LockSpace space, uint64 key);
void xact_lock(LockSpace space, uint64 key);
// The same lock in share mode: it excludes xact_lock holders only, not other sharers.
void xact_lock_shared(LockSpace space, uint64 key);
// Takes the lock only if it is free right now; returns whether it did.
bool try_xact_lock(LockSpace space, uint64 key);

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

// ---- time ----
// The transaction's now(), as SQL sees it.
inline TimestampTz tx_now() { return GetCurrentTransactionStartTimestamp(); }

// ---- jsonb reading ----
struct JsonField {
    std::string key;
    JsonbValue value;  // scalars only are meaningful; containers have type jbvBinary
};
// The top-level fields of a jsonb object, in storage order; throws 22023 if it is not an object.
std::vector<JsonField> jsonb_object_fields(Jsonb *jb, const std::string &what);
// The elements of a jsonb array; throws 22023 if it is not an array.
std::vector<JsonbValue> jsonb_array_elements(Jsonb *jb, const std::string &what);
const char *jsonb_type_name(const JsonbValue &v);
std::string jsonb_string(const JsonbValue &v);
// Integral number in [lo, hi]; throws 22023 naming `what` otherwise.
int64 jsonb_int(const JsonbValue &v, const std::string &what, int64 lo, int64 hi);
// A jsonb value (scalar or container) as a standalone Jsonb datum.
Datum jsonb_value_datum(const JsonbValue &v);
// Array of strings (or null); throws 22023 otherwise.
std::optional<std::vector<std::string>> jsonb_text_array(const JsonbValue &v, const std::string &what);

// ---- values in messages ----
// The one place messages quote values. A value longer than max_quoted_bytes is cut at a character
// boundary of the database encoding and marked with an ASCII ellipsis "...", so a message is never
// cut inside a character, converts to every client encoding the value itself converts to, and never
// approaches the 2048-byte buffers the boundary copies it into (src/guard.cpp).
constexpr size_t max_quoted_bytes = 200;
// The value itself, clipped as above (for numbers and other unquoted values of unbounded length).
std::string clipped(std::string_view s, size_t max_bytes = max_quoted_bytes);
// The value in double quotes, clipped (for messages only, never for SQL).
std::string quoted(std::string_view s);

} // namespace conveyor
