// Costs, budgets and quotas (see costs.hpp) and their SQL entry points:
//   conveyor.account_create / account_update / account_status, charge, reserve, settle,
//   release_reservation, ledger_verify, cost_report, quota_define, quota_consume, quota_status,
//   rate_limit.
//
// No charge is ever lost: every change of an account's running totals is one UPDATE ... SET total =
// total + $amount whose WHERE clause carries the budget check, in the same statement as the ledger row
// it sums (a data-modifying WITH). Concurrent charges queue on the account row; under READ COMMITTED
// the waiting UPDATE re-checks its WHERE clause against the row as committed (so two charges never
// pass a hard budget together), under SERIALIZABLE it fails with 40001 and the caller retries. A
// statement that finds no row to update raises, so whatever else it wrote is rolled back with it.
//
// Reservations hold budget: reserved counts every open one. Each resolves exactly once because every
// resolution is an UPDATE ... WHERE state = 'open' (settle, release, expiry); a lapsed reservation is
// expired, and its amount freed, by the next charge or reserve on its account (in the same statement
// as the charge, before the budget check) and by conveyor.maintain().
#include <algorithm>
#include <memory>

#include "core/args.hpp"
#include "core/jsonb.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "core/uuid.hpp"
#include "core/xact_lock.hpp"
#include "costs/costs.hpp"
#include "monitor/monitor.hpp"
#include "idempotency/idempotency.hpp"

extern "C" {
#include "pgtime.h"
#include "storage/backendid.h"
}

namespace conveyor::costs {

using spi::Params;
using spi::Statement;

// Amounts are stored as numeric(24, 6): 6 decimal places, below 10^18 in magnitude.
constexpr int money_scale = 6;

// Accounts without a hard budget take charges on one of this many slot rows, picked by backend.
constexpr int account_slots = 16;

// Every charge holds the account's lock in share mode, account_update in exclusive mode: an account
// changes between slots and its single row only while no charge is in flight.
static void lock_account(const std::string &account, bool exclusive) {
    uint64 key = hash64(account);
    if (exclusive) xact_lock(LockSpace::account, key);
    else xact_lock_shared(LockSpace::account, key);
}

// ---------------------------------------------------------------------------------------------------
// Arguments

static std::optional<std::string> idempotency_key_arg(FunctionCallInfo fcinfo, int i) {
    return optional_key(fcinfo, i, "idempotency_key");
}

// quota_define's limit: sums of used units and costs (costs[operation] x units, each below 2^31) stay
// far inside bigint, and so do the projections quota_status makes.
constexpr int64 max_quota_limit = INT64CONST(1000000000000000);  // 10^15

static int32 items_arg(FunctionCallInfo fcinfo, int i) {
    require(fcinfo, i, "items");
    int32 items = PG_GETARG_INT32(i);
    if (items < 0) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("items must not be negative, not {}", items));
    return items;
}

// An amount as text for a message, clipped (numeric input may hold 100,000 digits).
static std::string numeric_text(Datum v) {
    return clipped(pg_guard([&] { return (const char *)DatumGetCString(DirectFunctionCall1(numeric_out, v)); }));
}

enum class Sign { positive, non_negative, negative };

// What is wrong with an amount, if anything (plain values: computed inside one guard).
struct MoneyCheck {
    bool nan, infinite, too_precise, too_large;
    int sign;
};

// A money argument: not NULL, finite, at most 6 decimal places (conveyor never rounds money), below
// 10^18 in magnitude, and of the sign the caller allows. Raises 22004/22023 naming the value.
static Datum money_arg(FunctionCallInfo fcinfo, int i, const char *name, Sign sign) {
    require(fcinfo, i, name);
    Datum v = pg_guard([&] { return NumericGetDatum(PG_GETARG_NUMERIC(i)); });
    MoneyCheck c = pg_guard([&] {
        MoneyCheck r{};
        Numeric n = DatumGetNumeric(v);
        r.nan = numeric_is_nan(n);
        r.infinite = numeric_is_inf(n);
        if (r.nan || r.infinite) return r;
        Datum rounded = DirectFunctionCall2(numeric_round, v, Int32GetDatum(money_scale));
        r.too_precise = !DatumGetBool(DirectFunctionCall2(numeric_eq, v, rounded));
        Datum limit = NumericGetDatum(int64_to_numeric(1000000000000000000LL));
        Datum magnitude = DirectFunctionCall1(numeric_abs, v);
        r.too_large = DatumGetBool(DirectFunctionCall2(numeric_ge, magnitude, limit));
        r.sign = DatumGetInt32(DirectFunctionCall2(numeric_cmp, v, NumericGetDatum(int64_to_numeric(0))));
        return r;
    });
    if (c.nan || c.infinite)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} {} is not a finite number", name, numeric_text(v)),
                    "Money is exact: NaN and infinity are not amounts.");
    std::string text = numeric_text(v);
    if (c.too_precise)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} {} has more than {} decimal places", name, text, money_scale),
                    "Amounts are stored with 6 decimal places and conveyor never rounds money.",
                    "Round the amount yourself, the way your provider bills it.");
    if (c.too_large)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} {} is out of range", name, text),
                    "Amounts must be below 10^18 in magnitude.");
    if (sign == Sign::positive && c.sign <= 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} must be positive, not {}", name, text));
    if (sign == Sign::non_negative && c.sign < 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("{} {} is negative", name, text),
                    "Negative amounts are refunds.", "Pass refund => true to record a refund.");
    if (sign == Sign::negative && c.sign >= 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("a refund must have a negative amount, not {}", text),
                    "refund => true records money coming back to the account.");
    return v;
}

static Datum optional_jsonb(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return (Datum)0;
    return pg_guard([&] { return PointerGetDatum(PG_GETARG_JSONB_P(i)); });
}

static Params &jsonb_or_null(Params &p, int i, Datum v) { return v ? p.datum(i, v) : p.null(i); }

static Error unknown_account(const std::string &account) {
    return Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("account {} does not exist", quoted(account)), "",
                 "Create it with conveyor.account_create.");
}

static Error unknown_quota(const std::string &name) {
    return Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("quota {} does not exist", quoted(name)), "",
                 "Define it with conveyor.quota_define.");
}

static void require_account(const std::string &account) {
    static Statement stmt("SELECT 1 FROM conveyor.accounts WHERE account = $1", {TEXTOID});
    if (stmt.run(Params().text(0, account)).size() == 0) throw unknown_account(account);
}

// Why a charge, reserve or settle found no account row it could update: the account is unknown
// (42704), or the amount would pass its hard budget (CV001, with the figures).
[[noreturn]] static void refuse(const std::string &account, const char *what, Datum amount) {
    static Statement stmt(
        "SELECT (a.total + COALESCE((SELECT sum(s.total) FROM conveyor.account_slots s WHERE s.account = a.account), 0))::text,"
        "  (a.reserved - COALESCE(x.lapsed, 0))::text, a.budget::text FROM conveyor.accounts a"
        " LEFT JOIN LATERAL (SELECT sum(r.amount) AS lapsed FROM conveyor.reservations r"
        "                    WHERE r.account = a.account AND r.state = 'open' AND r.expires_at <= pg_catalog.now()) x ON true"
        " WHERE a.account = $1",
        {TEXTOID});
    auto row = stmt.run(Params().text(0, account));
    if (row.size() == 0) throw unknown_account(account);
    throw Error(errcode_budget_exceeded,
                fmt::format("{} of {} would pass the budget of account {}", what, numeric_text(amount), quoted(account)),
                fmt::format("Spent {} and reserved {} of a budget of {}.", *row.text(0, 0), *row.text(0, 1),
                            row.text(0, 2).value_or("none")),
                "Raise the budget with conveyor.account_update, or spend less.");
}

// ---------------------------------------------------------------------------------------------------
// Accounts

CONVEYOR_AUDITED_FUNCTION(conveyor_account_create) {
    std::string account = required_key(fcinfo, 0, "account");
    Datum budget = PG_ARGISNULL(1) ? (Datum)0 : money_arg(fcinfo, 1, "budget", Sign::non_negative);
    std::string currency = required_name(fcinfo, 2, "currency");
    if (currency.size() != 3 || !std::all_of(currency.begin(), currency.end(), [](char c) { return c >= 'A' && c <= 'Z'; }))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("currency {} is not a three-letter code", quoted(currency)),
                    "", "Use an ISO 4217 code such as USD or EUR.");
    require(fcinfo, 3, "hard_limit");
    bool hard_limit = PG_GETARG_BOOL(3);
    Datum metadata = optional_jsonb(fcinfo, 4);
    spi::Connection spi;
    static Statement stmt(
        "INSERT INTO conveyor.accounts (account, budget, currency, hard_limit, metadata, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, pg_catalog.now(), pg_catalog.now()) ON CONFLICT (account) DO NOTHING RETURNING 1",
        {TEXTOID, NUMERICOID, TEXTOID, BOOLOID, JSONBOID});
    Params p;
    p.text(0, account).text(2, currency).boolean(3, hard_limit);
    if (budget) p.datum(1, budget);
    else p.null(1);
    jsonb_or_null(p, 4, metadata);
    if (stmt.run(p).size() == 0)
        throw Error(ERRCODE_DUPLICATE_OBJECT, fmt::format("account {} already exists", quoted(account)), "",
                    "Change it with conveyor.account_update.");
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_account_update) {
    std::string account = required_key(fcinfo, 0, "account");
    Datum budget = PG_ARGISNULL(1) ? (Datum)0 : money_arg(fcinfo, 1, "budget", Sign::non_negative);
    auto currency = arg_text(fcinfo, 2);
    if (currency && (currency->size() != 3 ||
                     !std::all_of(currency->begin(), currency->end(), [](char c) { return c >= 'A' && c <= 'Z'; })))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("currency {} is not a three-letter code", quoted(*currency)),
                    "", "Use an ISO 4217 code such as USD or EUR.");
    Datum metadata = optional_jsonb(fcinfo, 4);
    bool remove_budget = !PG_ARGISNULL(5) && PG_GETARG_BOOL(5);
    if (remove_budget && budget)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "budget and remove_budget => true contradict each other");
    spi::Connection spi;
    // With no charge in flight (the exclusive lock), the slots fold back into the account's row, so
    // that an account that gets a hard budget is decided by that row alone.
    lock_account(account, true);
    static Statement stmt(
        "WITH folded AS (DELETE FROM conveyor.account_slots WHERE account = $1 RETURNING total, entries)"
        " UPDATE conveyor.accounts SET budget = CASE WHEN $6 THEN NULL ELSE COALESCE($2, budget) END,"
        "  currency = COALESCE($3, currency), hard_limit = COALESCE($4, hard_limit), metadata = COALESCE($5, metadata),"
        "  total = total + COALESCE((SELECT sum(total) FROM folded), 0),"
        "  entries = entries + COALESCE((SELECT sum(entries) FROM folded), 0)::bigint,"
        "  updated_at = pg_catalog.now()"
        " WHERE account = $1 RETURNING 1",
        {TEXTOID, NUMERICOID, TEXTOID, BOOLOID, JSONBOID, BOOLOID});
    Params p;
    p.text(0, account).text(2, currency).boolean(5, remove_budget);
    if (budget) p.datum(1, budget);
    else p.null(1);
    if (PG_ARGISNULL(3)) p.null(3);
    else p.boolean(3, PG_GETARG_BOOL(3));
    jsonb_or_null(p, 4, metadata);
    if (stmt.run(p).size() == 0) throw unknown_account(account);
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_FUNCTION(conveyor_account_status) {
    auto account = arg_text(fcinfo, 0);
    ResultSet out(fcinfo);
    spi::Connection spi;
    // reserved and available leave out reservations that have lapsed but are not yet expired: they
    // hold nothing any more, and the next charge, reserve or maintain() frees them.
    static Statement stmt(
        "SELECT a.account, a.total + sl.total, a.reserved - COALESCE(x.lapsed, 0), a.budget,"
        "  a.budget - (a.total + sl.total) - (a.reserved - COALESCE(x.lapsed, 0)), a.entries + sl.entries,"
        "  COALESCE((SELECT pg_catalog.jsonb_object_agg(s.service, pg_catalog.jsonb_build_object("
        "               'amount', s.amount, 'items', s.items, 'entries', s.n) ORDER BY s.service)"
        "            FROM (SELECT l.service, sum(l.amount) AS amount, sum(l.items) AS items, count(*) AS n"
        "                  FROM conveyor.ledger l WHERE l.account = a.account GROUP BY l.service) s), '{}')"
        " FROM conveyor.accounts a"
        " CROSS JOIN LATERAL (SELECT COALESCE(sum(s.total), 0) AS total, COALESCE(sum(s.entries), 0)::bigint AS entries"
        "                     FROM conveyor.account_slots s WHERE s.account = a.account) sl"
        " LEFT JOIN LATERAL (SELECT sum(r.amount) AS lapsed FROM conveyor.reservations r"
        "                    WHERE r.account = a.account AND r.state = 'open' AND r.expires_at <= pg_catalog.now()) x ON true"
        " WHERE $1::text IS NULL OR a.account = $1 ORDER BY a.account",
        {TEXTOID});
    auto rows = stmt.run(Params().text(0, account));
    if (account && rows.size() == 0) throw unknown_account(*account);
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Charges

// The open reservations of account $1 that have lapsed, expired in the same statement as the charge
// or reservation that follows; `freed` is the amount they held.
#define EXPIRE_LAPSED                                                                                    \
    "WITH expired AS ("                                                                                  \
    "  UPDATE conveyor.reservations r SET state = 'expired', resolved_at = pg_catalog.now()"            \
    "  WHERE r.account = $1 AND r.state = 'open' AND r.expires_at <= pg_catalog.now()"                  \
    "  RETURNING r.amount),"                                                                             \
    " freed AS (SELECT COALESCE(sum(amount), 0)::numeric AS amount FROM expired),"

// A result stored under an idempotency key, as the row the first call returned.
static void emit_stored_charge(ResultSet &out, Datum result) {
    static Statement stmt(
        "SELECT ($1->>'entry_id')::uuid, ($1->>'total')::numeric, ($1->>'available')::numeric", {JSONBOID});
    spi::emit(out, stmt.run(Params().datum(0, result)));
}

static Error key_in_progress(const std::string &key) {
    return Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("idempotency key {} is in progress", quoted(key)),
                 "Another call with this key has begun and not finished.", "Retry later.");
}

CONVEYOR_AUDITED_FUNCTION(conveyor_charge) {
    std::string account = required_key(fcinfo, 0, "account");
    std::string service = required_key(fcinfo, 1, "service");
    bool refund = !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
    Datum amount = money_arg(fcinfo, 2, "amount", refund ? Sign::negative : Sign::non_negative);
    int32 items = items_arg(fcinfo, 3);
    Datum metadata = optional_jsonb(fcinfo, 4);
    auto key = idempotency_key_arg(fcinfo, 5);
    ResultSet out(fcinfo);
    spi::Connection spi;
    lock_account(account, false);

    std::string scope = "charge:" + account;
    if (key) {
        static Statement request(
            "SELECT pg_catalog.jsonb_build_object('service', $1::text, 'amount', $2::numeric, 'items', $3::int4,"
            " 'refund', $4::bool)",
            {TEXTOID, NUMERICOID, INT4OID, BOOLOID});
        auto r = request.run(Params().text(0, service).datum(1, amount).int4(2, items).boolean(3, refund));
        idempotency::Claim claim = idempotency::begin(scope, *key, r.datum(0, 0), 86400);
        if (!claim.acquired) {
            if (claim.state != "completed" || claim.result_null) throw key_in_progress(*key);
            emit_stored_charge(out, claim.result);
            spi.finish();
            return (Datum)0;
        }
    }

    // strict: a hard budget decides, on the account's row (the UPDATE's WHERE clause). Otherwise the
    // charge goes to this backend's slot row, and the account's row is touched only to free lapsed
    // reservations. The returned total adds the account's row and every slot.
    static Statement stmt(
        "WITH m AS (SELECT a.hard_limit AND a.budget IS NOT NULL AS strict, a.total, a.reserved, a.budget"
        "           FROM conveyor.accounts a WHERE a.account = $1),"
        " expired AS ("
        "  UPDATE conveyor.reservations r SET state = 'expired', resolved_at = pg_catalog.now()"
        "  WHERE r.account = $1 AND r.state = 'open' AND r.expires_at <= pg_catalog.now()"
        "  RETURNING r.amount),"
        " freed AS (SELECT COALESCE(sum(amount), 0)::numeric AS amount FROM expired),"
        " acct AS ("
        "  UPDATE conveyor.accounts a SET total = a.total + CASE WHEN m.strict THEN $3 ELSE 0 END,"
        "         reserved = a.reserved - freed.amount,"
        "         entries = a.entries + CASE WHEN m.strict THEN 1 ELSE 0 END, updated_at = pg_catalog.now()"
        "  FROM freed, m"
        "  WHERE a.account = $1 AND (m.strict OR freed.amount > 0)"
        "    AND (NOT m.strict OR $3 <= 0 OR a.total + a.reserved - freed.amount + $3 <= a.budget)"
        "  RETURNING a.total, a.reserved, a.budget),"
        " slot AS ("
        "  INSERT INTO conveyor.account_slots AS s (account, slot, total, entries)"
        "  SELECT $1, $8, $3, 1 FROM m WHERE NOT m.strict"
        "  ON CONFLICT (account, slot) DO UPDATE SET total = s.total + excluded.total, entries = s.entries + 1"
        "  RETURNING s.total),"
        " info AS ("
        "  SELECT t.total, t.reserved, t.budget FROM acct t"
        "  UNION ALL"
        "  SELECT m.total, m.reserved - freed.amount, m.budget FROM freed, m"
        "  WHERE NOT m.strict AND NOT EXISTS (SELECT FROM acct)),"
        " done AS ("
        "  SELECT i.total + CASE WHEN m.strict THEN 0 ELSE (SELECT total FROM slot) + COALESCE((SELECT sum(o.total)"
        "           FROM conveyor.account_slots o WHERE o.account = $1 AND o.slot <> $8), 0) END AS total,"
        "         i.reserved, i.budget"
        "  FROM info i, m),"
        " ins AS ("
        "  INSERT INTO conveyor.ledger (entry_id, account, service, amount, items, metadata, created_at)"
        "  SELECT $5, $1, $2, $3, $4, $6, pg_catalog.now() FROM done RETURNING 1)"
        " SELECT $5, d.total, d.budget - d.total - d.reserved, (SELECT count(*) FROM ins),"
        "   CASE WHEN $7 THEN pg_catalog.jsonb_build_object('entry_id', $5, 'total', d.total,"
        "     'available', d.budget - d.total - d.reserved) END"
        " FROM done d",
        {TEXTOID, TEXTOID, NUMERICOID, INT4OID, UUIDOID, JSONBOID, BOOLOID, INT4OID});
    pg_uuid_t entry = uuid_v7();
    Params p;
    p.text(0, account).text(1, service).datum(2, amount).int4(3, items).uuid(4, entry).boolean(6, key.has_value());
    p.int4(7, (int32)(MyBackendId % account_slots));
    jsonb_or_null(p, 5, metadata);
    auto rows = stmt.run(p);
    if (rows.size() == 0) refuse(account, refund ? "refund" : "charge", amount);
    if (key) idempotency::finish(scope, *key, rows.datum(0, 4));
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Reservations

CONVEYOR_AUDITED_FUNCTION(conveyor_reserve) {
    std::string account = required_key(fcinfo, 0, "account");
    Datum amount = money_arg(fcinfo, 1, "amount", Sign::positive);
    int32 ttl = required_int(fcinfo, 2, "ttl_seconds", 1, 7 * 86400);
    auto key = idempotency_key_arg(fcinfo, 3);
    spi::Connection spi;

    std::string scope = "reserve:" + account;
    if (key) {
        static Statement request("SELECT pg_catalog.jsonb_build_object('amount', $1::numeric, 'ttl_seconds', $2::int4)",
                                 {NUMERICOID, INT4OID});
        auto r = request.run(Params().datum(0, amount).int4(1, ttl));
        idempotency::Claim claim = idempotency::begin(scope, *key, r.datum(0, 0), 86400);
        if (!claim.acquired) {
            if (claim.state != "completed" || claim.result_null) throw key_in_progress(*key);
            static Statement stored("SELECT ($1->>'reservation_id')::uuid", {JSONBOID});
            pg_uuid_t id = *stored.run(Params().datum(0, claim.result)).uuid(0, 0);
            spi.finish();
            PG_RETURN_DATUM(uuid_datum(id));  // after finish: in the caller's memory context
        }
    }

    static Statement stmt(
        EXPIRE_LAPSED
        " acct AS ("
        "  UPDATE conveyor.accounts a SET reserved = a.reserved - freed.amount + $2, updated_at = pg_catalog.now()"
        "  FROM freed"
        "  WHERE a.account = $1 AND (NOT a.hard_limit OR a.budget IS NULL"
        "        OR a.total + a.reserved - freed.amount + $2 <= a.budget)"
        "  RETURNING 1),"
        " ins AS ("
        "  INSERT INTO conveyor.reservations (reservation_id, account, amount, state, created_at, expires_at)"
        "  SELECT $3, $1, $2, 'open', pg_catalog.now(), pg_catalog.now() + pg_catalog.make_interval(secs => $4)"
        "  FROM acct RETURNING 1)"
        " SELECT (SELECT count(*) FROM ins) FROM acct",
        {TEXTOID, NUMERICOID, UUIDOID, INT4OID});
    pg_uuid_t id = uuid_v7();
    auto rows = stmt.run(Params().text(0, account).datum(1, amount).uuid(2, id).int4(3, ttl));
    if (rows.size() == 0) refuse(account, "reservation", amount);
    if (key) {
        std::string result = fmt::format("{{\"reservation_id\": \"{}\"}}", uuid_text(id));
        const char *s = result.c_str();
        Datum jb = pg_guard([&] { return DirectFunctionCall1(jsonb_in, CStringGetDatum(s)); });
        idempotency::finish(scope, *key, jb);
    }
    spi.finish();
    PG_RETURN_DATUM(uuid_datum(id));
}

// Why a reservation could not be settled or released: unknown (42704) or already resolved (55000).
struct ReservationState {
    bool found = false;
    std::string state;
    bool lapsed = false;
    std::string account;
};

static ReservationState reservation_state(const pg_uuid_t &id) {
    static Statement stmt(
        "SELECT state, expires_at <= pg_catalog.now(), account FROM conveyor.reservations WHERE reservation_id = $1",
        {UUIDOID});
    auto row = stmt.run(Params().uuid(0, id));
    if (row.size() == 0) return {};
    return {true, *row.text(0, 0), *row.boolean(0, 1), *row.text(0, 2)};
}

static Error unknown_reservation(const pg_uuid_t &id) {
    return Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("reservation {} does not exist", uuid_text(id)));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_settle) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "reservation_id");
    Datum actual = money_arg(fcinfo, 1, "actual", Sign::non_negative);
    std::string service = required_key(fcinfo, 2, "service");
    int32 items = items_arg(fcinfo, 3);
    Datum metadata = optional_jsonb(fcinfo, 4);
    ResultSet out(fcinfo);
    spi::Connection spi;
    // Settling more than was reserved charges the difference, which a hard budget may refuse.
    static Statement stmt(
        "WITH res AS ("
        "  UPDATE conveyor.reservations r SET state = 'settled', resolved_at = pg_catalog.now(), entry_id = $5"
        "  WHERE r.reservation_id = $1 AND r.state = 'open' AND r.expires_at > pg_catalog.now()"
        "  RETURNING r.account, r.amount),"
        " acct AS ("
        "  UPDATE conveyor.accounts a SET total = a.total + $2, reserved = a.reserved - res.amount,"
        "         entries = a.entries + 1, updated_at = pg_catalog.now()"
        "  FROM res"
        "  WHERE a.account = res.account AND (NOT a.hard_limit OR a.budget IS NULL OR $2 <= res.amount"
        "        OR a.total + a.reserved - res.amount + $2 <= a.budget)"
        "  RETURNING a.account, a.total, a.budget - a.total - a.reserved AS available),"
        " ins AS ("
        "  INSERT INTO conveyor.ledger (entry_id, account, service, amount, items, metadata, reservation_id, created_at)"
        "  SELECT $5, acct.account, $3, $2, $4, $6, $1, pg_catalog.now() FROM acct RETURNING 1)"
        " SELECT $5, acct.total, acct.available, (SELECT count(*) FROM ins), (SELECT count(*) FROM res)"
        " FROM (SELECT 1) one LEFT JOIN acct ON true",
        {UUIDOID, NUMERICOID, TEXTOID, INT4OID, UUIDOID, JSONBOID});
    pg_uuid_t entry = uuid_v7();
    Params p;
    p.uuid(0, id).datum(1, actual).text(2, service).int4(3, items).uuid(4, entry);
    jsonb_or_null(p, 5, metadata);
    auto rows = stmt.run(p);
    if (*rows.int8(0, 4) == 0) {
        ReservationState s = reservation_state(id);
        if (!s.found) throw unknown_reservation(id);
        std::string state = s.state == "open" && s.lapsed ? "expired" : s.state;
        throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    fmt::format("reservation {} is {}", uuid_text(id), state),
                    "A reservation resolves once: settled, released or expired.",
                    state == "expired" ? "Charge the actual amount with conveyor.charge, or reserve with a longer ttl_seconds."
                                       : "");
    }
    bool null;
    rows.datum(0, 1, &null);
    if (null) {
        ReservationState s = reservation_state(id);
        refuse(s.account, "settlement", actual);
    }
    spi::emit(out, rows);  // its one row: the result's three columns come first
    spi.finish();
    return (Datum)0;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_release_reservation) {
    pg_uuid_t id = required_uuid(fcinfo, 0, "reservation_id");
    spi::Connection spi;
    static Statement stmt(
        "WITH res AS ("
        "  UPDATE conveyor.reservations r SET state = 'released', resolved_at = pg_catalog.now()"
        "  WHERE r.reservation_id = $1 AND r.state = 'open' RETURNING r.account, r.amount),"
        " acct AS ("
        "  UPDATE conveyor.accounts a SET reserved = a.reserved - res.amount, updated_at = pg_catalog.now()"
        "  FROM res WHERE a.account = res.account RETURNING 1)"
        " SELECT count(*) FROM acct",
        {UUIDOID});
    bool released = *stmt.run(Params().uuid(0, id)).int8(0, 0) == 1;
    if (!released) {
        ReservationState s = reservation_state(id);
        if (!s.found) throw unknown_reservation(id);
        if (s.state == "settled")
            throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fmt::format("reservation {} is settled", uuid_text(id)),
                        "A settled reservation has been charged; a refund is a charge with refund => true.");
    }
    spi.finish();
    PG_RETURN_BOOL(released);
}

int64 expire_reservations(int64 limit) {
    static Statement stmt(
        "WITH exp AS ("
        "  UPDATE conveyor.reservations r SET state = 'expired', resolved_at = pg_catalog.now()"
        "  WHERE r.reservation_id IN (SELECT reservation_id FROM conveyor.reservations"
        "                             WHERE state = 'open' AND expires_at <= pg_catalog.now()"
        "                             ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
        "    AND r.state = 'open'"
        "  RETURNING r.account, r.amount),"
        " s AS (SELECT account, sum(amount) AS amount, count(*) AS n FROM exp GROUP BY account),"
        " upd AS (UPDATE conveyor.accounts a SET reserved = a.reserved - s.amount, updated_at = pg_catalog.now()"
        "         FROM s WHERE a.account = s.account RETURNING s.n)"
        " SELECT COALESCE(sum(n), 0)::bigint FROM upd",
        {INT8OID});
    return *stmt.run(Params().int8(0, limit)).int8(0, 0);
}

// ---------------------------------------------------------------------------------------------------
// Verification and reports

CONVEYOR_FUNCTION(conveyor_ledger_verify) {
    auto account = arg_text(fcinfo, 0);
    ResultSet out(fcinfo);
    spi::Connection spi;
    // One statement, one snapshot: totals and the rows they sum are read at the same instant.
    static Statement stmt(
        "SELECT a.account, a.total + sl.total, COALESCE(l.amount, 0), a.reserved, COALESCE(r.amount, 0),"
        "  a.total + sl.total = COALESCE(l.amount, 0) AND a.entries + sl.entries = COALESCE(l.n, 0)"
        "  AND a.reserved = COALESCE(r.amount, 0)"
        " FROM conveyor.accounts a"
        " CROSS JOIN LATERAL (SELECT COALESCE(sum(s.total), 0) AS total, COALESCE(sum(s.entries), 0) AS entries"
        "                     FROM conveyor.account_slots s WHERE s.account = a.account) sl"
        " LEFT JOIN LATERAL (SELECT sum(amount) AS amount, count(*) AS n FROM conveyor.ledger"
        "                    WHERE account = a.account) l ON true"
        " LEFT JOIN LATERAL (SELECT sum(amount) AS amount FROM conveyor.reservations"
        "                    WHERE account = a.account AND state = 'open') r ON true"
        " WHERE $1::text IS NULL OR a.account = $1 ORDER BY a.account",
        {TEXTOID});
    auto rows = stmt.run(Params().text(0, account));
    if (account && rows.size() == 0) throw unknown_account(*account);
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_cost_report) {
    std::string account = required_key(fcinfo, 0, "account");
    Datum since = PG_ARGISNULL(1) ? (Datum)0 : PG_GETARG_DATUM(1);
    Datum until = PG_ARGISNULL(2) ? (Datum)0 : PG_GETARG_DATUM(2);
    std::string bucket = required_name(fcinfo, 3, "bucket");
    if (bucket != "hour" && bucket != "day" && bucket != "week" && bucket != "month")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("bucket {} is not one of hour, day, week, month", quoted(bucket)));
    if (since && until && DatumGetTimestampTz(since) > DatumGetTimestampTz(until))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "since must not be after until");
    ResultSet out(fcinfo);
    spi::Connection spi;
    require_account(account);
    // Buckets follow the session's TimeZone, as date_trunc does.
    static Statement stmt(
        "SELECT pg_catalog.date_trunc($4, created_at), service, sum(items)::bigint, sum(amount)"
        " FROM conveyor.ledger WHERE account = $1"
        "   AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID});
    Params p;
    p.text(0, account).text(3, bucket);
    if (since) p.datum(1, since);
    else p.null(1);
    if (until) p.datum(2, until);
    else p.null(2);
    spi::emit(out, stmt.run(p));
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Quotas

static void check_period(const std::string &period) {
    if (period != "hour" && period != "day" && period != "month")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("period {} is not one of hour, day, month", quoted(period)),
                    "Quotas reset on calendar windows.");
}

static void check_time_zone(const std::string &tz) {
    const char *name = tz.c_str();
    bool known = pg_guard([&] { return pg_tzset(name) != nullptr; });
    if (!known)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("time zone {} is not recognized", quoted(tz)), "",
                    "Use an IANA time zone name such as America/Los_Angeles.");
}

CONVEYOR_AUDITED_FUNCTION(conveyor_quota_define) {
    std::string name = required_key(fcinfo, 0, "name");
    require(fcinfo, 1, "quota_limit");
    int64 limit = PG_GETARG_INT64(1);
    if (limit < 1) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("quota_limit must be positive, not {}", limit));
    if (limit > max_quota_limit)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("quota_limit must be at most {}, not {}", max_quota_limit, limit),
                    "Used units, costs and projections of a quota are summed as bigint.");
    std::string period = required_name(fcinfo, 2, "period");
    check_period(period);
    std::string tz = required_name(fcinfo, 3, "reset_tz");
    check_time_zone(tz);
    Datum costs = (Datum)0;
    if (!PG_ARGISNULL(4)) {
        Jsonb *jb = pg_guard([&] { return PG_GETARG_JSONB_P(4); });
        for (const auto &f : jsonb_object_fields(jb, "costs")) {
            if (f.key.empty()) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "costs must not name an empty operation");
            check_key(f.key, "an operation named in costs");
            jsonb_int(f.value, fmt::format("costs of operation {}", quoted(f.key)), 0, PG_INT32_MAX);
        }
        costs = PointerGetDatum(jb);
    }
    spi::Connection spi;
    // A redefinition keeps what was used in the current window if the window stays the same.
    static Statement stmt(
        "INSERT INTO conveyor.quotas AS q (name, quota_limit, period, reset_tz, costs, used, window_start, window_end, created_at)"
        " SELECT $1, $2, $3, $4, $5, 0, w.window_start, w.window_end, pg_catalog.now()"
        " FROM conveyor.quota_window($3, $4, pg_catalog.now()) w"
        " ON CONFLICT (name) DO UPDATE SET quota_limit = excluded.quota_limit, period = excluded.period,"
        "   reset_tz = excluded.reset_tz, costs = excluded.costs,"
        "   used = CASE WHEN q.window_start = excluded.window_start AND q.window_end = excluded.window_end"
        "               THEN q.used ELSE 0 END,"
        "   window_start = excluded.window_start, window_end = excluded.window_end",
        {TEXTOID, INT8OID, TEXTOID, TEXTOID, JSONBOID});
    Params p;
    p.text(0, name).int8(1, limit).text(2, period).text(3, tz);
    jsonb_or_null(p, 4, costs);
    stmt.run(p);
    spi.finish();
    PG_RETURN_VOID();
}

// The units an operation costs: units, or with an operation, costs[operation] x units (default 1).
#define QUOTA_COST "(CASE WHEN $3::text IS NULL THEN $2 ELSE (q.costs ->> $3)::bigint * $2 END)"
#define QUOTA_LAPSED "(q.window_end <= pg_catalog.now())"
// The same cost in numeric, for the limit check: it cannot overflow whatever a stored row holds, and
// the SET (in bigint) runs only for a row whose new total passed the check, so within quota_limit.
#define QUOTA_COST_NUMERIC "(CASE WHEN $3::text IS NULL THEN $2::numeric ELSE (q.costs ->> $3)::numeric * $2 END)"

CONVEYOR_AUDITED_FUNCTION(conveyor_quota_consume) {
    std::string name = required_key(fcinfo, 0, "name");
    std::optional<int32> units;
    if (!PG_ARGISNULL(1)) {
        units = PG_GETARG_INT32(1);
        if (*units < 0) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("units must not be negative, not {}", *units));
    }
    auto operation = arg_text(fcinfo, 2);
    if (operation && operation->empty()) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "operation must not be empty");
    if (operation) check_key(*operation, "operation");
    auto key = idempotency_key_arg(fcinfo, 3);
    ResultSet out(fcinfo);
    spi::Connection spi;

    std::string scope = "quota:" + name;
    if (key) {
        static Statement request("SELECT pg_catalog.jsonb_build_object('units', $1::int4, 'operation', $2::text)",
                                 {INT4OID, TEXTOID});
        auto r = request.run(Params().int4(0, units).text(1, operation));
        idempotency::Claim claim = idempotency::begin(scope, *key, r.datum(0, 0), 86400);
        if (!claim.acquired) {
            if (claim.state != "completed" || claim.result_null) throw key_in_progress(*key);
            static Statement stored(
                "SELECT ($1->>'allowed')::boolean, ($1->>'used')::bigint, ($1->>'remaining')::bigint,"
                " ($1->>'reset_at')::timestamptz",
                {JSONBOID});
            spi::emit(out, stored.run(Params().datum(0, claim.result)));
            spi.finish();
            return (Datum)0;
        }
    }

    // One UPDATE: it starts the next window if this one has ended, and adds the cost only if the
    // result stays within the limit. A concurrent consume waits for the row and re-checks its WHERE
    // clause against the committed row (READ COMMITTED) or fails with 40001 (SERIALIZABLE).
    static Statement consume(
        "UPDATE conveyor.quotas q SET"
        "  used = CASE WHEN " QUOTA_LAPSED " THEN 0 ELSE q.used END + " QUOTA_COST ","
        "  window_start = CASE WHEN " QUOTA_LAPSED
        "    THEN (conveyor.quota_window(q.period, q.reset_tz, pg_catalog.now())).window_start ELSE q.window_start END,"
        "  window_end = CASE WHEN " QUOTA_LAPSED
        "    THEN (conveyor.quota_window(q.period, q.reset_tz, pg_catalog.now())).window_end ELSE q.window_end END"
        " WHERE q.name = $1"
        "   AND CASE WHEN " QUOTA_LAPSED " THEN 0 ELSE q.used END::numeric + " QUOTA_COST_NUMERIC " <= q.quota_limit"
        " RETURNING true, q.used, q.quota_limit - q.used, q.window_end,"
        "   CASE WHEN $4 THEN pg_catalog.jsonb_build_object('allowed', true, 'used', q.used,"
        "     'remaining', q.quota_limit - q.used, 'reset_at', q.window_end) END",
        {TEXTOID, INT8OID, TEXTOID, BOOLOID});
    Params p;
    p.text(0, name).int8(1, units.value_or(1)).text(2, operation).boolean(3, key.has_value());
    auto rows = consume.run(p);
    if (rows.size() == 1) {
        if (key) idempotency::finish(scope, *key, rows.datum(0, 4));
        // The call that used the window up: once per window, in this transaction.
        if (*rows.int8(0, 2) == 0 && units.value_or(1) > 0)
            monitor::record_event("quota_exhausted", "costs", name,
                                  fmt::format("{{\"used\": {}, \"reset_at\": {}}}", *rows.int8(0, 1),
                                              monitor::json_quoted(*rows.text(0, 3))));
        spi::emit(out, rows);
        spi.finish();
        return (Datum)0;
    }
    // Refused, or not a quota, or not an operation it knows.
    static Statement refused(
        "SELECT false, CASE WHEN " QUOTA_LAPSED " THEN 0 ELSE q.used END,"
        "  q.quota_limit - CASE WHEN " QUOTA_LAPSED " THEN 0 ELSE q.used END,"
        "  CASE WHEN " QUOTA_LAPSED " THEN (conveyor.quota_window(q.period, q.reset_tz, pg_catalog.now())).window_end"
        "       ELSE q.window_end END,"
        "  $3::text IS NULL OR COALESCE(q.costs ? $3, false),"
        "  (SELECT pg_catalog.string_agg(k, ', ' ORDER BY k) FROM pg_catalog.jsonb_object_keys(q.costs) k)"
        " FROM conveyor.quotas q WHERE q.name = $1",
        {TEXTOID, INT8OID, TEXTOID});
    auto row = refused.run(p);
    if (row.size() == 0) throw unknown_quota(name);
    if (!*row.boolean(0, 4))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("operation {} has no cost in quota {}", quoted(*operation), quoted(name)),
                    row.text(0, 5) ? fmt::format("Its costs name: {}.", *row.text(0, 5)) : "The quota defines no costs.",
                    "Pass units instead, or add the operation with conveyor.quota_define.");
    // A refused call consumes nothing, and a retry with the same key may try again.
    if (key) idempotency::release(scope, *key);
    spi::emit(out, row);
    spi.finish();
    return (Datum)0;
}

CONVEYOR_FUNCTION(conveyor_quota_status) {
    auto name = arg_text(fcinfo, 0);
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT q.name, e.used, q.quota_limit, greatest(q.quota_limit - e.used, 0), e.window_end,"
        "  p.projected_usage, p.risk_level"
        " FROM conveyor.quotas q"
        " CROSS JOIN LATERAL (SELECT CASE WHEN " QUOTA_LAPSED " THEN 0 ELSE q.used END AS used,"
        "   CASE WHEN " QUOTA_LAPSED " THEN w.window_start ELSE q.window_start END AS window_start,"
        "   CASE WHEN " QUOTA_LAPSED " THEN w.window_end ELSE q.window_end END AS window_end"
        "   FROM conveyor.quota_window(q.period, q.reset_tz, pg_catalog.now()) w) e"
        " CROSS JOIN LATERAL conveyor.quota_projection(e.used, q.quota_limit, e.window_start, e.window_end,"
        "   pg_catalog.now()) p"
        " WHERE $1::text IS NULL OR q.name = $1 ORDER BY q.name",
        {TEXTOID});
    auto rows = stmt.run(Params().text(0, name));
    if (name && rows.size() == 0) throw unknown_quota(*name);
    spi::emit(out, rows);
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Rate limits: GCRA. Each key keeps its theoretical arrival time (tat). A request at `now` with
// emission interval T = per_seconds / rate and burst B is allowed when max(tat, now) + T - now <=
// B x T, which then becomes the new tat. B requests pass at once, then one every T.

CONVEYOR_AUDITED_FUNCTION(conveyor_rate_limit) {
    std::string key = required_key(fcinfo, 0, "key");
    require(fcinfo, 1, "rate");
    int32 rate = PG_GETARG_INT32(1);
    if (rate < 1) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("rate must be positive, not {}", rate));
    int32 per = required_int(fcinfo, 2, "per_seconds", 1, 366 * 86400);
    int32 burst = PG_ARGISNULL(3) ? rate : PG_GETARG_INT32(3);
    if (burst < 1) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("burst must be positive, not {}", burst));
    int64 interval = std::max<int64>((int64)per * USECS_PER_SEC / rate, 1);
    // burst x interval is how far ahead of now a key's tat may run: at most 366 days (the longest
    // per_seconds), so tat arithmetic never nears bigint's range.
    constexpr int64 max_tolerance = INT64CONST(366) * USECS_PER_DAY;
    if ((int64)burst > max_tolerance / interval)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE,
                    fmt::format("burst {} is too large for {} per {} seconds", burst, rate, per),
                    "burst x per_seconds / rate must be at most 31622400 seconds (366 days).");
    int64 tolerance = interval * burst;
    int64 now = GetCurrentTimestamp();
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement take(
        "INSERT INTO conveyor.rate_limits AS r (key, tat) VALUES ($1, $2 + $3)"
        " ON CONFLICT (key) DO UPDATE SET tat = greatest(r.tat, $2) + $3"
        " WHERE greatest(r.tat, $2) + $3 - $2 <= $4 RETURNING 1",
        {TEXTOID, INT8OID, INT8OID, INT8OID});
    static Statement read("SELECT tat FROM conveyor.rate_limits WHERE key = $1", {TEXTOID});
    Params p;
    p.text(0, key).int8(1, now).int8(2, interval).int8(3, tolerance);
    bool allowed = take.run(p).size() == 1;
    int32 retry_ms = 0;
    if (!allowed) {
        auto row = read.run(p);
        int64 wait_us = row.size() ? *row.int8(0, 0) + interval - tolerance - now : 0;
        retry_ms = (int32)std::min<int64>(std::max<int64>((wait_us + 999) / 1000, 1), PG_INT32_MAX);
    }
    Datum values[2] = {BoolGetDatum(allowed), Int32GetDatum(retry_ms)};
    bool nulls[2] = {false, false};
    out.add(values, nulls);
    spi.finish();
    return (Datum)0;
}

int64 purge_rate_limits() {
    static Statement stmt("DELETE FROM conveyor.rate_limits WHERE tat < $1", {INT8OID});
    return (int64)stmt.run(Params().int8(0, GetCurrentTimestamp())).affected();
}

} // namespace conveyor::costs
