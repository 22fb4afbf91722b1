#include "util.hpp"

#include <algorithm>

#include "text.hpp"

#define XXH_INLINE_ALL
#include <xxhash.h>

extern "C" {
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "storage/backendid.h"
#include "utils/tuplestore.h"
}

namespace conveyor {

// ---- UUID version 7 ----

static int64 last_ms = 0;
static uint16 counter = 0;

static pg_uuid_t uuid_v7_at(int64 ms) {
    // Keep ids from this backend strictly increasing: within one millisecond the 12-bit counter
    // advances; if it overflows, or the clock stepped back, borrow the next millisecond.
    if (ms <= last_ms) {
        ms = last_ms;
        if (++counter > 0x0FFF) {
            ++ms;
            counter = (uint16)(pg_prng_uint32(&pg_global_prng_state) & 0x01FF);
        }
    } else {
        // Start each millisecond at a random low counter so ids stay hard to guess yet leave room.
        counter = (uint16)(pg_prng_uint32(&pg_global_prng_state) & 0x01FF);
    }
    last_ms = ms;
    uint64 rnd = pg_prng_uint64(&pg_global_prng_state);
    pg_uuid_t u;
    u.data[0] = (uint8)(ms >> 40);
    u.data[1] = (uint8)(ms >> 32);
    u.data[2] = (uint8)(ms >> 24);
    u.data[3] = (uint8)(ms >> 16);
    u.data[4] = (uint8)(ms >> 8);
    u.data[5] = (uint8)ms;
    u.data[6] = (uint8)(0x70 | ((counter >> 8) & 0x0F));
    u.data[7] = (uint8)(counter & 0xFF);
    u.data[8] = (uint8)(0x80 | ((rnd >> 56) & 0x3F));
    for (int i = 9; i < 16; ++i) u.data[i] = (uint8)(rnd >> (8 * (15 - i)));
    return u;
}

pg_uuid_t uuid_v7() {
    TimestampTz now = GetCurrentTimestamp();  // microseconds since 2000-01-01
    int64 unix_ms = now / 1000 + (int64)(POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000;
    return uuid_v7_at(unix_ms);
}

Datum uuid_datum(const pg_uuid_t &u) {
    const pg_uuid_t *src = &u;
    return pg_guard([&] {
        auto *copy = (pg_uuid_t *)palloc(sizeof(pg_uuid_t));
        *copy = *src;
        return UUIDPGetDatum(copy);
    });
}

std::string uuid_text(const pg_uuid_t &u) {
    static const char hex[] = "0123456789abcdef";
    std::string s;
    s.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) s.push_back('-');
        s.push_back(hex[u.data[i] >> 4]);
        s.push_back(hex[u.data[i] & 0x0F]);
    }
    return s;
}

// ---- hashing ----

uint64 hash64(std::string_view bytes, uint64 seed) {
    return seed ? XXH3_64bits_withSeed(bytes.data(), bytes.size(), seed) : XXH3_64bits(bytes.data(), bytes.size());
}

// ---- internal locks ----

LOCKTAG advisory_tag(LockSpace space, uint64 key) {
    LOCKTAG tag;
    SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32)(key >> 32), (uint32)key, (uint16)space);
    return tag;
}

void xact_lock(LockSpace space, uint64 key) {
    LOCKTAG tag = advisory_tag(space, key);
    pg_guard([&] { (void)LockAcquire(&tag, ExclusiveLock, false, false); });
}

void xact_lock_shared(LockSpace space, uint64 key) {
    LOCKTAG tag = advisory_tag(space, key);
    pg_guard([&] { (void)LockAcquire(&tag, ShareLock, false, false); });
}

bool try_xact_lock(LockSpace space, uint64 key) {
    LOCKTAG tag = advisory_tag(space, key);
    return pg_guard([&] { return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL; });
}

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

// ---- jsonb ----

const char *jsonb_type_name(const JsonbValue &v) {
    switch (v.type) {
    case jbvNull: return "null";
    case jbvString: return "string";
    case jbvNumeric: return "number";
    case jbvBool: return "boolean";
    case jbvBinary: {
        const JsonbContainer *c = v.val.binary.data;
        return JsonContainerIsArray(c) ? "array" : "object";
    }
    case jbvArray: return "array";
    case jbvObject: return "object";
    default: return "unknown";
    }
}

static const char *container_kind(Jsonb *jb) {
    if (JB_ROOT_IS_SCALAR(jb)) return "scalar";
    return JB_ROOT_IS_ARRAY(jb) ? "array" : "object";
}

std::vector<JsonField> jsonb_object_fields(Jsonb *jb, const std::string &what) {
    if (!JB_ROOT_IS_OBJECT(jb))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON object, not {}", what, container_kind(jb)));
    std::vector<JsonField> out;
    JsonbContainer *root = &jb->root;
    uint32 n = JsonContainerSize(root);
    out.reserve(n);
    // Use the iterator once: WJB_KEY followed by WJB_VALUE (containers arrive as jbvBinary).
    struct Pair { JsonbValue k, v; };
    std::vector<Pair> pairs(n);
    Pair *dst = pairs.data();
    pg_guard([&] {
        JsonbIterator *it = JsonbIteratorInit(root);
        JsonbValue v;
        JsonbIteratorToken tok;
        uint32 idx = 0;
        bool have_key = false;
        while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE) {
            if (tok == WJB_KEY) {
                dst[idx].k = v;
                have_key = true;
            } else if (tok == WJB_VALUE && have_key) {
                dst[idx].v = v;
                ++idx;
                have_key = false;
            }
        }
    });
    for (auto &p : pairs) out.push_back(JsonField{std::string(p.k.val.string.val, p.k.val.string.len), p.v});
    return out;
}

std::vector<JsonbValue> jsonb_array_elements(Jsonb *jb, const std::string &what) {
    if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be a JSON array, not {}", what, container_kind(jb)));
    JsonbContainer *root = &jb->root;
    uint32 n = JsonContainerSize(root);
    std::vector<JsonbValue> out(n);
    JsonbValue *dst = out.data();
    pg_guard([&] {
        JsonbIterator *it = JsonbIteratorInit(root);
        JsonbValue v;
        JsonbIteratorToken tok;
        uint32 idx = 0;
        while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
            if (tok == WJB_ELEM) dst[idx++] = v;
    });
    return out;
}

std::string jsonb_string(const JsonbValue &v) { return std::string(v.val.string.val, v.val.string.len); }

int64 jsonb_int(const JsonbValue &v, const std::string &what, int64 lo, int64 hi) {
    if (v.type != jbvNumeric)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an integer, not {}", what, jsonb_type_name(v)));
    Numeric num = v.val.numeric;
    bool ok = false;
    int64 out = pg_guard([&] {
        // numeric_int4_opt_error reports non-integral or out-of-range values without raising.
        Datum rounded = DirectFunctionCall2(numeric_round, NumericGetDatum(num), Int32GetDatum(0));
        bool integral = DatumGetBool(DirectFunctionCall2(numeric_eq, rounded, NumericGetDatum(num)));
        bool err = false;
        int64 r = integral ? (int64)numeric_int4_opt_error(num, &err) : 0;
        ok = integral && !err;
        return r;
    });
    if (ok && out >= lo && out <= hi) return out;
    std::string text = clipped(pg_guard([&] { return (const char *)numeric_normalize(num); }));
    throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an integer between {} and {}, not {}", what, lo, hi, text));
}

Datum jsonb_value_datum(const JsonbValue &v) {
    const JsonbValue *src = &v;
    return pg_guard([&] { return JsonbPGetDatum(JsonbValueToJsonb(const_cast<JsonbValue *>(src))); });
}

std::optional<std::vector<std::string>> jsonb_text_array(const JsonbValue &v, const std::string &what) {
    if (v.type == jbvNull) return std::nullopt;
    if (v.type != jbvBinary || !JsonContainerIsArray(v.val.binary.data) || JsonContainerIsScalar(v.val.binary.data))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an array of strings, not {}", what, jsonb_type_name(v)));
    Jsonb *jb = (Jsonb *)DatumGetPointer(jsonb_value_datum(v));
    std::vector<std::string> out;
    for (const auto &e : jsonb_array_elements(jb, what)) {
        if (e.type != jbvString)
            throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be an array of strings; found a {}", what, jsonb_type_name(e)));
        out.push_back(jsonb_string(e));
    }
    return out;
}

// ---- values in messages ----

std::string clipped(std::string_view s, size_t max_bytes) {
    if (s.size() <= max_bytes) return std::string(s);
    // The mark is ASCII "...", not U+2026: a message must convert to every client encoding (a LATIN1
    // client shown U+2026 would get 22P05 instead of the real error).
    static constexpr std::string_view dots = ascii_ellipsis;
    int encoding = GetDatabaseEncoding();
    if (encoding == PG_UTF8) return clip_utf8(s, max_bytes, dots);
    // Another server encoding: pg_encoding_mbcliplen finds the longest whole-character prefix (it
    // stops at a NUL, which text never holds, and raises nothing).
    if (max_bytes < dots.size()) return std::string();
    const char *data = s.data();
    int len = (int)std::min<size_t>(s.size(), PG_INT32_MAX);
    int limit = (int)(max_bytes - dots.size());
    int cut = pg_guard([&] { return pg_encoding_mbcliplen(encoding, data, len, limit); });
    std::string out(s.substr(0, (size_t)cut));
    out += dots;
    return out;
}

std::string quoted(std::string_view s) {
    std::string out = "\"";
    out += clipped(s);
    out += '"';
    return out;
}

} // namespace conveyor
