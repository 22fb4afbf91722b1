// Locks: SQL entry points conveyor.lock_* and locks_cleanup (leases with fencing tokens),
// conveyor.entity_* (entity processing states) and conveyor.*advisory* (text-keyed advisory locks).
//
// Leases are rows of conveyor.locks, not session state, so they work behind a transaction-mode
// pooler. Every decision is one statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING,
// UPDATE/DELETE ... RETURNING), so two callers racing on a key are ordered by the row lock: the
// second re-evaluates its condition on the first one's committed row.
//
// Fencing tokens come from one sequence, conveyor.lock_token_seq: never reused, never wrapping,
// durable across restarts, and independent of whether a lease row still exists. lock_acquire draws
// its token while it holds the key's transaction-scoped lock (LockSpace::lease) until its
// transaction ends, so no other token for that key can be drawn and committed in between: each key's
// tokens grow in the order its leases are granted, even when a lease is released (its row deleted)
// and the key acquired afresh.
//
// Time is the server's clock when each statement runs, clock_timestamp(), not the transaction's
// start: a lease's age is right inside long transactions and procedures, and a statement that waited
// for a row lock judges staleness when it resumes.
#include <algorithm>

#include "core/args.hpp"
#include "core/message.hpp"
#include "core/spi.hpp"
#include "core/subxact.hpp"
#include "core/xact_lock.hpp"
#include "locks/locks.hpp"
#include "monitor/monitor.hpp"

extern "C" {
#include "commands/sequence.h"
#include "mb/pg_wchar.h"
}

namespace conveyor::locks {

using spi::Params;
using spi::Statement;

// ---------------------------------------------------------------------------------------------------
// Arguments

constexpr size_t max_name_bytes = max_key_bytes;  // keys, owners, entity types and ids (src/core/args.hpp)
constexpr int32 max_seconds = 30 * 86400;       // ttl, timeouts, staleness: 30 days at most
constexpr int32 max_timeout_ms = 86400 * 1000;  // advisory lock waits: one day at most

static int64 token_value(int64 v) {
    if (v <= 0)
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("token must be positive, not {}", v), "",
                    "Pass the token conveyor.lock_acquire returned.");
    return v;
}

static std::optional<int64> optional_token(FunctionCallInfo fcinfo, int i) {
    if (PG_ARGISNULL(i)) return std::nullopt;
    return token_value(PG_GETARG_INT64(i));
}

static int64 required_token(FunctionCallInfo fcinfo, int i) {
    require(fcinfo, i, "token");
    return token_value(PG_GETARG_INT64(i));
}


static Params &jsonb_param(Params &p, int i, Jsonb *jb) { return jb ? p.datum(i, JsonbPGetDatum(jb)) : p.null(i); }

static const char *ttl_hint = "A lease lives from 1 second to 30 days; keep a long task's lease alive with conveyor.lock_heartbeat.";

// ---------------------------------------------------------------------------------------------------
// Leases

// The key's lock while a token is drawn; a seed of its own keeps it apart from other hashes of text.
static uint64 lease_lock_key(const std::string &key) { return hash64(key, 0x6c65617365ULL /* "lease" */); }

// The next fencing token: nextval of conveyor.lock_token_seq, called directly (no statement).
static int64 next_token() {
    return pg_guard([] {
        Oid ns = get_namespace_oid("conveyor", false);
        Oid seq = get_relname_relid("lock_token_seq", ns);
        if (!OidIsValid(seq)) elog(ERROR, "sequence conveyor.lock_token_seq does not exist");
        return nextval_internal(seq, false);
    });
}

CONVEYOR_AUDITED_FUNCTION(conveyor_lock_acquire) {
    std::string key = required_name(fcinfo, 0, "key", max_name_bytes);
    std::string owner = required_name(fcinfo, 1, "owner", max_name_bytes);
    int32 ttl = required_int(fcinfo, 2, "ttl_seconds", 1, max_seconds, ttl_hint);
    auto correlation_id = arg_text(fcinfo, 3);
    Jsonb *metadata = optional_object(fcinfo, 4, "metadata");
    spi::Connection spi;
    // Another owner's live lease, as of now: NULL, without taking a lock or writing anything (so a
    // refused acquisition costs no WAL flush and does not queue behind the holder's transaction).
    // The answer is the one the upsert below would give at this instant.
    static Statement held_by_other(
        "SELECT true FROM conveyor.locks WHERE key = $1 AND owner <> $2"
        " AND heartbeat_at + pg_catalog.make_interval(secs => ttl_seconds) >= pg_catalog.clock_timestamp()",
        {TEXTOID, TEXTOID});
    if (held_by_other.run(Params().text(0, key).text(1, owner)).size() > 0) {
        spi.finish();
        PG_RETURN_NULL();
    }
    // Held to the end of the transaction: no other token for this key is drawn before ours commits.
    xact_lock(LockSpace::lease, lease_lock_key(key));
    int64 fresh = next_token();
    // New key: insert. Same owner: refresh the lease, keep the token. Stale lease of another owner:
    // take it over with the fresh token. Live lease of another owner (committed since the look
    // above, or a concurrent transaction's that we waited for): no row.
    static Statement stmt(
        "INSERT INTO conveyor.locks AS l (key, owner, token, ttl_seconds, acquired_at, heartbeat_at, correlation_id, metadata)"
        " VALUES ($1, $2, $6, $3, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp(), $4, $5)"
        " ON CONFLICT (key) DO UPDATE SET"
        "  token = CASE WHEN l.owner = excluded.owner THEN l.token ELSE excluded.token END,"
        "  acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at ELSE excluded.acquired_at END,"
        "  correlation_id = CASE WHEN l.owner = excluded.owner THEN COALESCE(excluded.correlation_id, l.correlation_id)"
        "                        ELSE excluded.correlation_id END,"
        "  metadata = CASE WHEN l.owner = excluded.owner THEN COALESCE(excluded.metadata, l.metadata) ELSE excluded.metadata END,"
        "  taken_from_owner = CASE WHEN l.owner = excluded.owner THEN l.taken_from_owner ELSE l.owner END,"
        "  taken_from_token = CASE WHEN l.owner = excluded.owner THEN l.taken_from_token ELSE l.token END,"
        "  owner = excluded.owner, ttl_seconds = excluded.ttl_seconds, heartbeat_at = excluded.heartbeat_at"
        " WHERE l.owner = excluded.owner"
        "    OR l.heartbeat_at + pg_catalog.make_interval(secs => l.ttl_seconds) < pg_catalog.clock_timestamp()"
        " RETURNING l.token, l.taken_from_owner, l.taken_from_token",
        {TEXTOID, TEXTOID, INT4OID, TEXTOID, JSONBOID, INT8OID});
    Params p;
    p.text(0, key).text(1, owner).int4(2, ttl).text(3, correlation_id);
    jsonb_param(p, 4, metadata);
    p.int8(5, fresh);
    auto rows = stmt.run(p);
    std::optional<int64> token = rows.size() ? rows.int8(0, 0) : std::nullopt;
    // The fresh token on a row that names a previous holder: this call took a stale lease over.
    if (token && *token == fresh) {
        auto old_owner = rows.text(0, 1);
        auto old_token = rows.int8(0, 2);
        if (old_token) {
            static Statement event(
                "INSERT INTO conveyor.lock_events (at, key, event, old_owner, old_token, new_owner, new_token)"
                " VALUES (pg_catalog.clock_timestamp(), $1, 'takeover', $2, $3, $4, $5)",
                {TEXTOID, TEXTOID, INT8OID, TEXTOID, INT8OID});
            event.run(Params().text(0, key).text(1, old_owner).int8(2, *old_token).text(3, owner).int8(4, fresh));
            monitor::record_event("lock_takeover", "locks", key,
                                  fmt::format("{{\"old_owner\": {}, \"old_token\": {}, \"new_owner\": {}, \"new_token\": {}}}",
                                              old_owner ? monitor::json_quoted(*old_owner) : "null", *old_token,
                                              monitor::json_quoted(owner), fresh));
        }
    }
    spi.finish();
    if (!token) PG_RETURN_NULL();
    PG_RETURN_INT64(*token);
}

// Runs `stmt` ($1 key, $2 owner, $3 token or NULL) for the holder named by the call's first three
// arguments; true when it touched the lease.
static bool for_holder(FunctionCallInfo fcinfo, Statement &stmt) {
    std::string key = required_name(fcinfo, 0, "key", max_name_bytes);
    std::string owner = required_name(fcinfo, 1, "owner", max_name_bytes);
    auto token = optional_token(fcinfo, 2);
    spi::Connection spi;
    Params p;
    p.text(0, key).text(1, owner).int8(2, token);
    bool touched = stmt.run(p).size() > 0;
    spi.finish();
    return touched;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_lock_heartbeat) {
    // A holder whose lease went stale but was not taken over still holds it: the heartbeat revives it.
    static Statement stmt(
        "UPDATE conveyor.locks SET heartbeat_at = pg_catalog.clock_timestamp()"
        " WHERE key = $1 AND owner = $2 AND ($3::bigint IS NULL OR token = $3) RETURNING true",
        {TEXTOID, TEXTOID, INT8OID});
    PG_RETURN_BOOL(for_holder(fcinfo, stmt));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_lock_release) {
    static Statement stmt(
        "DELETE FROM conveyor.locks WHERE key = $1 AND owner = $2 AND ($3::bigint IS NULL OR token = $3) RETURNING true",
        {TEXTOID, TEXTOID, INT8OID});
    PG_RETURN_BOOL(for_holder(fcinfo, stmt));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_lock_force_release) {
    std::string key = required_name(fcinfo, 0, "key", max_name_bytes);
    spi::Connection spi;
    static Statement stmt(
        "WITH d AS (DELETE FROM conveyor.locks WHERE key = $1"
        "           RETURNING key, owner, token, ttl_seconds, acquired_at, heartbeat_at), "
        "ev AS (INSERT INTO conveyor.lock_events (at, key, event, old_owner, old_token, details)"
        "       SELECT pg_catalog.clock_timestamp(), d.key, 'force_release', d.owner, d.token,"
        "              pg_catalog.jsonb_build_object('by', session_user, 'acquired_at', d.acquired_at,"
        "                                            'last_heartbeat', d.heartbeat_at, 'ttl_seconds', d.ttl_seconds)"
        "       FROM d) "
        "SELECT owner, token FROM d",
        {TEXTOID});
    auto rows = stmt.run(Params().text(0, key));
    bool ok = rows.size() > 0;
    if (ok)
        monitor::record_event("lock_force_released", "locks", key,
                              fmt::format("{{\"owner\": {}, \"token\": {}}}", monitor::json_quoted(*rows.text(0, 0)),
                                          *rows.int8(0, 1)));
    spi.finish();
    PG_RETURN_BOOL(ok);
}

bool lock_token_is_live(const std::string &key, int64 token) {
    static Statement stmt(
        "SELECT true FROM conveyor.locks WHERE key = $1 AND token = $2"
        " AND heartbeat_at + pg_catalog.make_interval(secs => ttl_seconds) >= pg_catalog.clock_timestamp()"
        " FOR SHARE",
        {TEXTOID, INT8OID});
    return stmt.run(Params().text(0, key).int8(1, token)).size() > 0;
}

CONVEYOR_AUDITED_FUNCTION(conveyor_lock_check) {
    std::string key = required_name(fcinfo, 0, "key", max_name_bytes);
    int64 token = required_token(fcinfo, 1);
    spi::Connection spi;
    bool live = lock_token_is_live(key, token);
    spi.finish();
    PG_RETURN_BOOL(live);
}

// Deletes leases whose last heartbeat is older than stale_seconds (default: each lease's own ttl).
// A lease whose row another transaction holds right now (a fenced write, a heartbeat, a takeover)
// is skipped, not waited for.
static spi::Rows clean_up_stale(std::optional<int32> stale) {
    static Statement stmt(
        "WITH c AS (SELECT key FROM conveyor.locks"
        "           WHERE heartbeat_at + pg_catalog.make_interval(secs => COALESCE($1, ttl_seconds)) < pg_catalog.clock_timestamp()"
        "           FOR UPDATE SKIP LOCKED), "
        "d AS (DELETE FROM conveyor.locks l USING c WHERE l.key = c.key"
        "      RETURNING l.key, l.owner, l.token, l.ttl_seconds, l.heartbeat_at,"
        "        pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - l.acquired_at), 3) AS held_seconds), "
        "ev AS (INSERT INTO conveyor.lock_events (at, key, event, old_owner, old_token, details)"
        "       SELECT pg_catalog.clock_timestamp(), d.key, 'cleanup', d.owner, d.token,"
        "              pg_catalog.jsonb_build_object('last_heartbeat', d.heartbeat_at, 'ttl_seconds', d.ttl_seconds,"
        "                                            'stale_seconds', $1)"
        "       FROM d) "
        "SELECT key, owner, token, held_seconds FROM d ORDER BY key",
        {INT4OID});
    return stmt.run(Params().int4(0, stale));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_locks_cleanup) {
    // 0 deletes every lease without a heartbeat since this statement began: thresholds of 0 are legal.
    auto stale = optional_int(fcinfo, 0, "stale_seconds", 0, max_seconds);
    ResultSet out(fcinfo);
    spi::Connection spi;
    spi::emit(out, clean_up_stale(stale));
    spi.finish();
    return (Datum)0;
}

int64 clean_stale_leases() { return (int64)clean_up_stale(std::nullopt).size(); }

int64 maintain_locks() {
    static Statement purge(
        "DELETE FROM conveyor.lock_events WHERE at < pg_catalog.clock_timestamp() - interval '7 days'", {});
    return (int64)purge.run().affected();
}

// ---------------------------------------------------------------------------------------------------
// Entity processing states

static const char *timeout_hint = "Timeouts are from 0 seconds (any earlier acquisition has timed out) to 30 days.";

CONVEYOR_AUDITED_FUNCTION(conveyor_entity_acquire) {
    std::string type = required_name(fcinfo, 0, "entity_type", max_name_bytes);
    std::string id = required_name(fcinfo, 1, "entity_id", max_name_bytes);
    int32 timeout = required_int(fcinfo, 2, "timeout_seconds", 0, max_seconds, timeout_hint);
    auto correlation_id = arg_text(fcinfo, 3);
    auto max_attempts = optional_int(fcinfo, 4, "max_attempts", 1, 1000);
    spi::Connection spi;
    // One statement decides: new -> IN_PROGRESS; PENDING -> IN_PROGRESS; FAILED -> IN_PROGRESS (a retry)
    // or DEAD when its attempts are used up; IN_PROGRESS older than the timeout -> IN_PROGRESS (a
    // recovery, recorded with the previous lock time). COMPLETED, DEAD and a live IN_PROGRESS: no row.
    // ($6: are the attempts used up? Evaluated on the conflicting row.)
    static Statement stmt(
        "INSERT INTO conveyor.entities AS e (entity_type, entity_id, state, attempts, max_attempts, timeout_seconds,"
        "    last_processed_at, metadata, created_at, updated_at)"
        " VALUES ($1, $2, 'IN_PROGRESS', 1, $5, $3, pg_catalog.clock_timestamp(),"
        "         pg_catalog.jsonb_build_object('correlation_id', $4::text), pg_catalog.clock_timestamp(),"
        "         pg_catalog.clock_timestamp())"
        " ON CONFLICT (entity_type, entity_id) DO UPDATE SET"
        "  state = CASE WHEN e.state = 'FAILED' AND e.attempts >= COALESCE($5, e.max_attempts) THEN 'DEAD' ELSE 'IN_PROGRESS' END,"
        "  attempts = CASE WHEN e.state = 'FAILED' AND e.attempts >= COALESCE($5, e.max_attempts) THEN e.attempts"
        "                  ELSE e.attempts + 1 END,"
        "  max_attempts = COALESCE($5, e.max_attempts),"
        "  timeout_seconds = $3,"
        "  last_processed_at = CASE WHEN e.state = 'FAILED' AND e.attempts >= COALESCE($5, e.max_attempts)"
        "                           THEN e.last_processed_at ELSE pg_catalog.clock_timestamp() END,"
        "  metadata = e.metadata || CASE"
        "    WHEN e.state = 'FAILED' AND e.attempts >= COALESCE($5, e.max_attempts) THEN"
        "      pg_catalog.jsonb_build_object('dead', pg_catalog.jsonb_build_object('reason', 'max_attempts reached',"
        "        'attempts', e.attempts, 'max_attempts', COALESCE($5, e.max_attempts), 'at', pg_catalog.clock_timestamp()))"
        "    WHEN e.state = 'FAILED' THEN"
        "      pg_catalog.jsonb_build_object('correlation_id', COALESCE($4::text, e.metadata->>'correlation_id'),"
        "        'retry_info', pg_catalog.jsonb_build_object('previous_error', e.last_error, 'previous_attempts', e.attempts,"
        "          'retried_at', pg_catalog.clock_timestamp(), 'correlation_id', COALESCE($4::text, e.metadata->>'correlation_id')))"
        "    WHEN e.state = 'IN_PROGRESS' THEN"
        "      pg_catalog.jsonb_build_object('correlation_id', COALESCE($4::text, e.metadata->>'correlation_id'),"
        "        'timeout_recovery', pg_catalog.jsonb_build_object('previous_lock_time', e.last_processed_at,"
        "          'timeout_seconds', $3, 'recovered_at', pg_catalog.clock_timestamp(),"
        "          'correlation_id', COALESCE($4::text, e.metadata->>'correlation_id')))"
        "    ELSE pg_catalog.jsonb_build_object('correlation_id', COALESCE($4::text, e.metadata->>'correlation_id'))"
        "  END,"
        "  updated_at = pg_catalog.clock_timestamp()"
        " WHERE e.state IN ('PENDING', 'FAILED')"
        "    OR (e.state = 'IN_PROGRESS'"
        "        AND e.last_processed_at + pg_catalog.make_interval(secs => $3) < pg_catalog.clock_timestamp())"
        " RETURNING e.state",
        {TEXTOID, TEXTOID, INT4OID, TEXTOID, INT4OID});
    auto rows = stmt.run(Params().text(0, type).text(1, id).int4(2, timeout).text(3, correlation_id).int4(4, max_attempts));
    bool acquired = rows.size() > 0 && *rows.text(0, 0) == "IN_PROGRESS";
    spi.finish();
    PG_RETURN_BOOL(acquired);
}

// The current state of an entity, or an error naming it when it does not exist.
static std::string entity_state_or_raise(const std::string &type, const std::string &id) {
    static Statement stmt("SELECT state FROM conveyor.entities WHERE entity_type = $1 AND entity_id = $2",
                          {TEXTOID, TEXTOID});
    auto rows = stmt.run(Params().text(0, type).text(1, id));
    if (rows.size() == 0)
        throw Error(ERRCODE_UNDEFINED_OBJECT, fmt::format("entity {} {} does not exist", clipped(type), quoted(id)), "",
                    "Start processing it with conveyor.entity_acquire.");
    return *rows.text(0, 0);
}

static void not_in_progress(const std::string &type, const std::string &id, const std::string &state, const char *action) {
    throw Error(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                fmt::format("cannot {} entity {} {}: it is {}, not IN_PROGRESS", action, clipped(type), quoted(id), state), "",
                "Only an entity acquired with conveyor.entity_acquire can be completed or failed.");
}

CONVEYOR_AUDITED_FUNCTION(conveyor_entity_complete) {
    std::string type = required_name(fcinfo, 0, "entity_type", max_name_bytes);
    std::string id = required_name(fcinfo, 1, "entity_id", max_name_bytes);
    Jsonb *metadata = optional_object(fcinfo, 2, "metadata");
    spi::Connection spi;
    static Statement stmt(
        "UPDATE conveyor.entities SET state = 'COMPLETED', last_error = NULL,"
        "  metadata = metadata || COALESCE($3, '{}'::jsonb)"
        "             || pg_catalog.jsonb_build_object('completed_at', pg_catalog.clock_timestamp()),"
        "  updated_at = pg_catalog.clock_timestamp()"
        " WHERE entity_type = $1 AND entity_id = $2 AND state = 'IN_PROGRESS' RETURNING true",
        {TEXTOID, TEXTOID, JSONBOID});
    Params p;
    p.text(0, type).text(1, id);
    jsonb_param(p, 2, metadata);
    if (stmt.run(p).size() == 0) not_in_progress(type, id, entity_state_or_raise(type, id), "complete");
    spi.finish();
    PG_RETURN_VOID();
}

CONVEYOR_AUDITED_FUNCTION(conveyor_entity_fail) {
    std::string type = required_name(fcinfo, 0, "entity_type", max_name_bytes);
    std::string id = required_name(fcinfo, 1, "entity_id", max_name_bytes);
    auto error = arg_text(fcinfo, 2);
    if (!error) throw Error(ERRCODE_NULL_VALUE_NOT_ALLOWED, "error must not be NULL", "", "Say why it failed.");
    bool dead = required_bool(fcinfo, 3, "dead");
    spi::Connection spi;
    // DEAD when asked, or when the attempts entity_acquire was allowed are used up.
    static Statement stmt(
        "UPDATE conveyor.entities SET"
        "  state = CASE WHEN $4 OR attempts >= max_attempts THEN 'DEAD' ELSE 'FAILED' END,"
        "  last_error = $3,"
        "  metadata = metadata || pg_catalog.jsonb_build_object('failed_at', pg_catalog.clock_timestamp()),"
        "  updated_at = pg_catalog.clock_timestamp()"
        " WHERE entity_type = $1 AND entity_id = $2 AND state = 'IN_PROGRESS' RETURNING state",
        {TEXTOID, TEXTOID, TEXTOID, BOOLOID});
    auto rows = stmt.run(Params().text(0, type).text(1, id).text(2, *error).boolean(3, dead));
    if (rows.size() == 0) not_in_progress(type, id, entity_state_or_raise(type, id), "fail");
    std::string state = *rows.text(0, 0);
    spi.finish();
    PG_RETURN_TEXT_P(pg_guard([&] { return cstring_to_text_with_len(state.data(), (int)state.size()); }));
}

static spi::Rows reset_stuck(const std::optional<std::string> &type, int32 stuck) {
    static Statement stmt(
        "WITH r AS (UPDATE conveyor.entities e SET state = 'PENDING',"
        "    metadata = e.metadata || pg_catalog.jsonb_build_object('reset', pg_catalog.jsonb_build_object("
        "      'previous_state', e.state, 'previous_lock_time', e.last_processed_at, 'stuck_seconds', $2,"
        "      'reset_at', pg_catalog.clock_timestamp())),"
        "    updated_at = pg_catalog.clock_timestamp()"
        "  WHERE e.state = 'IN_PROGRESS' AND ($1::text IS NULL OR e.entity_type = $1)"
        "    AND e.last_processed_at < pg_catalog.clock_timestamp() - pg_catalog.make_interval(secs => $2)"
        "  RETURNING e.entity_type, e.entity_id) "
        "SELECT entity_type, entity_id, 'IN_PROGRESS'::text FROM r ORDER BY 1, 2",
        {TEXTOID, INT4OID});
    return stmt.run(Params().text(0, type).int4(1, stuck));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_entity_reset) {
    auto type = optional_key(fcinfo, 0, "entity_type");
    int32 stuck = required_int(fcinfo, 1, "stuck_seconds", 0, max_seconds);
    ResultSet out(fcinfo);
    spi::Connection spi;
    spi::emit(out, reset_stuck(type, stuck));
    spi.finish();
    return (Datum)0;
}

int64 reset_stuck_entities(int32 stuck_seconds) { return (int64)reset_stuck(std::nullopt, stuck_seconds).size(); }

// Puts an entity in any state, creating it when missing: for pipelines and operators that write states
// directly (a stuck entity sent back to PENDING, a state table kept by hand). Moving into IN_PROGRESS
// counts an attempt; staying IN_PROGRESS only restarts its clock (last_processed_at), like a
// heartbeat. Returns the previous state, NULL for a new entity.
static const char *entity_states[] = {"PENDING", "IN_PROGRESS", "COMPLETED", "FAILED", "DEAD"};

CONVEYOR_AUDITED_FUNCTION(conveyor_entity_set) {
    std::string type = required_name(fcinfo, 0, "entity_type", max_name_bytes);
    std::string id = required_name(fcinfo, 1, "entity_id", max_name_bytes);
    std::string state = required_text(fcinfo, 2, "state");
    if (std::find(std::begin(entity_states), std::end(entity_states), state) == std::end(entity_states))
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("invalid entity state {}", quoted(state)), "",
                    "state is one of PENDING, IN_PROGRESS, COMPLETED, FAILED, DEAD.");
    auto error = arg_text(fcinfo, 3);
    Jsonb *metadata = optional_object(fcinfo, 4, "metadata");
    spi::Connection spi;
    // The previous state is the one the upsert replaced: ON CONFLICT DO UPDATE sees the latest committed
    // row (after waiting for a racing writer), records its state in metadata.set.previous_state, and
    // RETURNING reads it back; a snapshot read before the upsert could miss a racing insert.
    static Statement stmt(
        "INSERT INTO conveyor.entities AS e (entity_type, entity_id, state, attempts, timeout_seconds,"
        "    last_processed_at, last_error, metadata, created_at, updated_at)"
        " VALUES ($1, $2, $3, CASE WHEN $3 = 'IN_PROGRESS' THEN 1 ELSE 0 END, 1800, pg_catalog.clock_timestamp(),"
        "         CASE WHEN $3 IN ('FAILED', 'DEAD') THEN $4 END, COALESCE($5, '{}'::jsonb)"
        "           || pg_catalog.jsonb_build_object('set', pg_catalog.jsonb_build_object('state', $3::text,"
        "                'previous_state', NULL, 'at', pg_catalog.clock_timestamp(), 'by', session_user)),"
        "         pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp())"
        " ON CONFLICT (entity_type, entity_id) DO UPDATE SET"
        "  state = $3,"
        "  attempts = e.attempts + CASE WHEN $3 = 'IN_PROGRESS' AND e.state <> 'IN_PROGRESS' THEN 1 ELSE 0 END,"
        "  last_processed_at = CASE WHEN $3 = 'IN_PROGRESS' THEN pg_catalog.clock_timestamp() ELSE e.last_processed_at END,"
        "  last_error = CASE WHEN $3 = 'COMPLETED' THEN NULL ELSE COALESCE($4, e.last_error) END,"
        "  metadata = e.metadata || COALESCE($5, '{}'::jsonb)"
        "    || pg_catalog.jsonb_build_object('set', pg_catalog.jsonb_build_object('state', $3::text,"
        "         'previous_state', e.state, 'at', pg_catalog.clock_timestamp(), 'by', session_user)),"
        "  updated_at = pg_catalog.clock_timestamp()"
        " RETURNING e.metadata -> 'set' ->> 'previous_state'",
        {TEXTOID, TEXTOID, TEXTOID, TEXTOID, JSONBOID});
    Params p;
    p.text(0, type).text(1, id).text(2, state).text(3, error);
    jsonb_param(p, 4, metadata);
    auto rows = stmt.run(p);
    auto previous = rows.text(0, 0);
    spi.finish();
    if (!previous) PG_RETURN_NULL();
    PG_RETURN_TEXT_P(pg_guard([&] { return cstring_to_text_with_len(previous->data(), (int)previous->size()); }));
}

CONVEYOR_FUNCTION(conveyor_entity_state) {
    std::string type = required_name(fcinfo, 0, "entity_type", max_name_bytes);
    std::string id = required_name(fcinfo, 1, "entity_id", max_name_bytes);
    spi::Connection spi;
    static Statement stmt(
        "SELECT pg_catalog.jsonb_build_object('entity_type', entity_type, 'entity_id', entity_id, 'state', state,"
        "  'attempts', attempts, 'max_attempts', max_attempts, 'timeout_seconds', timeout_seconds,"
        "  'last_processed_at', last_processed_at, 'last_error', last_error, 'metadata', metadata,"
        "  'created_at', created_at, 'updated_at', updated_at)"
        " FROM conveyor.entities WHERE entity_type = $1 AND entity_id = $2",
        {TEXTOID, TEXTOID});
    auto rows = stmt.run(Params().text(0, type).text(1, id));
    if (rows.size() == 0) {
        spi.finish();
        PG_RETURN_NULL();
    }
    Datum result = spi::keep(rows.datum(0, 0), false, -1);
    spi.finish();
    PG_RETURN_DATUM(result);
}

CONVEYOR_FUNCTION(conveyor_entity_stats) {
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT entity_type, state, count(*),"
        "  pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - min(updated_at)), 3)"
        " FROM conveyor.entities GROUP BY entity_type, state ORDER BY entity_type, state",
        {});
    spi::emit(out, stmt.run());
    spi.finish();
    return (Datum)0;
}

// An entity and a lease are paired by the lease key '<entity_type>:<entity_id>'.
CONVEYOR_AUDITED_FUNCTION(conveyor_entity_inconsistencies) {
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "WITH ip AS ("
        "  SELECT e.*, l.owner, l.token, l.heartbeat_at, l.ttl_seconds, l.key AS lease_key"
        "  FROM conveyor.entities e"
        "  LEFT JOIN conveyor.locks l ON l.key = e.entity_type || ':' || e.entity_id"
        "  WHERE e.state = 'IN_PROGRESS'), "
        "issues AS ("
        "  SELECT entity_type, entity_id, state, 'in_progress_timed_out' AS issue,"
        "    pg_catalog.jsonb_build_object('last_processed_at', last_processed_at, 'timeout_seconds', timeout_seconds) AS details"
        "  FROM ip WHERE last_processed_at + pg_catalog.make_interval(secs => timeout_seconds) < pg_catalog.clock_timestamp()"
        "  UNION ALL"
        "  SELECT entity_type, entity_id, state, 'in_progress_without_live_lease',"
        "    pg_catalog.jsonb_build_object('owner', owner, 'token', token, 'last_heartbeat', heartbeat_at, 'ttl_seconds', ttl_seconds)"
        "  FROM ip WHERE lease_key IS NOT NULL"
        "    AND heartbeat_at + pg_catalog.make_interval(secs => ttl_seconds) < pg_catalog.clock_timestamp()"
        "  UNION ALL"
        "  SELECT e.entity_type, e.entity_id, e.state, 'live_lease_not_in_progress',"
        "    pg_catalog.jsonb_build_object('owner', l.owner, 'token', l.token, 'last_heartbeat', l.heartbeat_at,"
        "                                  'ttl_seconds', l.ttl_seconds)"
        "  FROM conveyor.locks l"
        "  JOIN conveyor.entities e ON e.entity_type = pg_catalog.split_part(l.key, ':', 1)"
        "    AND e.entity_id = pg_catalog.substr(l.key, pg_catalog.length(pg_catalog.split_part(l.key, ':', 1)) + 2)"
        "  WHERE l.key LIKE '%:%' AND e.state <> 'IN_PROGRESS'"
        "    AND l.heartbeat_at + pg_catalog.make_interval(secs => l.ttl_seconds) >= pg_catalog.clock_timestamp()) "
        "SELECT entity_type, entity_id, state, entity_type || ':' || entity_id, issue, details FROM issues"
        " ORDER BY 1, 2, 5",
        {});
    spi::emit(out, stmt.run());
    spi.finish();
    return (Datum)0;
}

// ---------------------------------------------------------------------------------------------------
// Text-keyed advisory locks: PostgreSQL's own advisory locks on the bigint advisory_key(key), so
// conveyor.try_advisory_lock('x') and pg_try_advisory_lock(conveyor.advisory_key('x')) are one lock.

// XXH3-64 (seed 0) of the key's UTF-8 bytes, as a signed bigint.
static int64 advisory_key_of(FunctionCallInfo fcinfo, int i) {
    require(fcinfo, i, "key");
    text *t = pg_guard([&] { return PG_GETARG_TEXT_PP(i); });
    const char *bytes = VARDATA_ANY(t);
    int len = (int)VARSIZE_ANY_EXHDR(t);
    if (len == 0) throw Error(ERRCODE_INVALID_PARAMETER_VALUE, "key must not be empty");
    // The same bytes in every database, whatever its encoding.
    const char *utf8 = pg_guard([&] { return (const char *)pg_server_to_any(bytes, len, PG_UTF8); });
    size_t n = utf8 == bytes ? (size_t)len : std::strlen(utf8);
    return (int64)hash64(std::string_view(utf8, n));
}

static int32 timeout_ms_arg(FunctionCallInfo fcinfo, int i) {
    return required_int(fcinfo, i, "timeout_ms", 1, max_timeout_ms,
                        "Wait from 1 ms to one day; for no wait at all use conveyor.try_advisory_lock.");
}

static bool call_bool(PGFunction f, int64 key) {
    return pg_guard([&] { return DatumGetBool(DirectFunctionCall1(f, Int64GetDatum(key))); });
}

// Waits at most timeout_ms for the lock. The wait runs in a subtransaction with lock_timeout set for
// it alone: a timeout rolls the subtransaction back and returns false; the caller's transaction and
// its lock_timeout are as they were. Any other error (deadlock, cancel) reaches the caller unchanged.
static bool lock_within(int64 key, int32 timeout_ms, bool session) {
    if (call_bool(session ? pg_try_advisory_lock_int8 : pg_try_advisory_xact_lock_int8, key)) return true;
    PGFunction wait = session ? pg_advisory_lock_int8 : pg_advisory_xact_lock_int8;
    std::string setting = std::to_string(timeout_ms);
    try {
        in_subtransaction([&] {
            with_setting("lock_timeout", setting.c_str(), [&] { pg_guard([&] { DirectFunctionCall1(wait, Int64GetDatum(key)); }); });
        });
        return true;
    } catch (const PgError &e) {
        if (e.sqlstate() != ERRCODE_LOCK_NOT_AVAILABLE) throw;
        return false;
    }
}

CONVEYOR_AUDITED_FUNCTION(conveyor_advisory_key) { PG_RETURN_INT64(advisory_key_of(fcinfo, 0)); }

CONVEYOR_AUDITED_FUNCTION(conveyor_try_advisory_lock) { PG_RETURN_BOOL(call_bool(pg_try_advisory_lock_int8, advisory_key_of(fcinfo, 0))); }

CONVEYOR_AUDITED_FUNCTION(conveyor_try_advisory_xact_lock) {
    PG_RETURN_BOOL(call_bool(pg_try_advisory_xact_lock_int8, advisory_key_of(fcinfo, 0)));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_advisory_lock) {
    int64 key = advisory_key_of(fcinfo, 0);
    PG_RETURN_BOOL(lock_within(key, timeout_ms_arg(fcinfo, 1), true));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_advisory_xact_lock) {
    int64 key = advisory_key_of(fcinfo, 0);
    PG_RETURN_BOOL(lock_within(key, timeout_ms_arg(fcinfo, 1), false));
}

CONVEYOR_AUDITED_FUNCTION(conveyor_advisory_unlock) { PG_RETURN_BOOL(call_bool(pg_advisory_unlock_int8, advisory_key_of(fcinfo, 0))); }

// Releases every session-level hold this session has on the key (session advisory locks stack:
// each pg_advisory_lock needs its own unlock).
CONVEYOR_AUDITED_FUNCTION(conveyor_advisory_unlock_all) {
    int64 key = advisory_key_of(fcinfo, 0);
    int32 released = pg_guard([&] {
        LOCKTAG tag;
        SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32)((uint64)key >> 32), (uint32)key, 1);
        int32 n = 0;
        while (LockHeldByMe(&tag, ExclusiveLock) && LockRelease(&tag, ExclusiveLock, true)) ++n;
        return n;
    });
    PG_RETURN_INT32(released);
}

// Held by any session (in any mode) in this database, as pg_locks shows it.
CONVEYOR_AUDITED_FUNCTION(conveyor_advisory_lock_held) {
    uint64 key = (uint64)advisory_key_of(fcinfo, 0);
    spi::Connection spi;
    static Statement stmt(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND database = $1"
        " AND classid = $2 AND objid = $3 AND objsubid = 1 AND granted)",
        {OIDOID, OIDOID, OIDOID});
    Params p;
    p.datum(0, ObjectIdGetDatum(MyDatabaseId)).datum(1, ObjectIdGetDatum((Oid)(uint32)(key >> 32)));
    p.datum(2, ObjectIdGetDatum((Oid)(uint32)key));
    bool held = *stmt.run(p).boolean(0, 0);
    spi.finish();
    PG_RETURN_BOOL(held);
}

} // namespace conveyor::locks
