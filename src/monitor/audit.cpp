// The audit trail: conveyor.audit_log, written by audited_call (the body of every entry point declared
// with CONVEYOR_AUDITED_FUNCTION) in the transaction of the call, and read by conveyor.audit().
//
// Which calls are recorded is decided here, in audit_class(), from the privilege map itself: a function
// that only conveyor_admin may execute is an admin action (always recorded) unless it is periodic
// upkeep (upkeep_functions below); one conveyor_worker may execute is a worker call (recorded when
// the setting audit.worker_calls is on); one a reader may execute, or one no role may execute, is
// never recorded. test/pgtap/audit.sql lists the admin-only functions from the catalog and checks that
// each one writes its row.
#include <unordered_map>

#include "core/args.hpp"
#include "core/jsonb.hpp"
#include "core/message.hpp"
#include "core/owner.hpp"
#include "core/partitions.hpp"
#include "core/spi.hpp"
#include "monitor/internal.hpp"

extern "C" {
#include "catalog/pg_proc.h"
#include "utils/acl.h"
#include "utils/inval.h"
#include "utils/syscache.h"
}

namespace conveyor::monitor {

using spi::Params;
using spi::Statement;

DailyPartitions audit_partitions{"audit_log", {{"at", "(at)"}, {"function_at", "(function_name, at)"}}};

// Admin-only functions that are periodic upkeep (pg_cron runs them), not operator decisions: not
// recorded. Adding a name here is the whole decision; an admin-only function absent from this list
// is recorded (schedule_maintenance and unschedule_maintenance are operator actions: recorded).
static const char *const upkeep_functions[] = {"maintain", "aggregate_metrics"};
// Admin-only functions that only read: never recorded.
static const char *const admin_readers[] = {"audit"};

// Each argument and the result are recorded at most this long (text clipped at a character boundary;
// a longer JSON value is recorded as its clipped text).
constexpr size_t max_recorded_bytes = 2000;

enum class AuditClass { none, worker, admin };

struct AuditedFunction {
    AuditClass audit_class = AuditClass::none;
    std::string name;                    // conveyor.<proname>
    std::vector<std::string> arg_names;  // "$n" for an unnamed one
    std::vector<Oid> arg_types;
    Oid result_type = InvalidOid;
    bool returns_set = false;
    bool security_definer = false;
};

// What this backend knows of each function, by oid; emptied whenever pg_proc changes (a GRANT, a
// REVOKE, the extension dropped and created again).
static std::unordered_map<Oid, AuditedFunction> known_functions;

static void forget_functions(Datum, int, uint32) { known_functions.clear(); }

void register_audit_callbacks() {
    pg_guard([] { CacheRegisterSyscacheCallback(PROCOID, forget_functions, (Datum)0); });
}

template <size_t N>
static bool listed(const char *const (&names)[N], const std::string &proname) {
    for (const char *n : names)
        if (proname == n) return true;
    return false;
}

static bool role_may_execute(const char *role, Oid fn) {
    return pg_guard([&] {
        Oid r = get_role_oid(role, true);
        return OidIsValid(r) && pg_proc_aclcheck(fn, r, ACL_EXECUTE) == ACLCHECK_OK;
    });
}

static AuditClass audit_class(Oid fn, const std::string &proname) {
    if (role_may_execute("conveyor_reader", fn)) return AuditClass::none;
    if (role_may_execute("conveyor_worker", fn)) return AuditClass::worker;
    if (!role_may_execute("conveyor_admin", fn)) return AuditClass::none;
    if (listed(upkeep_functions, proname) || listed(admin_readers, proname)) return AuditClass::none;
    return AuditClass::admin;
}

static const AuditedFunction &function_of(Oid fn) {
    auto found = known_functions.find(fn);
    if (found != known_functions.end()) return found->second;
    AuditedFunction f;
    const char *proname = nullptr;
    int nargs = 0;
    char **names = nullptr;
    int named = 0;
    Oid types[FUNC_MAX_ARGS];
    pg_guard([&] {
        HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
        if (!HeapTupleIsValid(tuple)) elog(ERROR, "cache lookup failed for function %u", fn);
        Form_pg_proc form = (Form_pg_proc)GETSTRUCT(tuple);
        proname = pstrdup(NameStr(form->proname));
        nargs = form->pronargs;
        for (int i = 0; i < nargs; ++i) types[i] = form->proargtypes.values[i];
        f.result_type = form->prorettype;
        f.returns_set = form->proretset;
        f.security_definer = form->prosecdef;
        bool names_null, modes_null;
        Datum arg_names = SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_proargnames, &names_null);
        Datum arg_modes = SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_proargmodes, &modes_null);
        if (!names_null) named = get_func_input_arg_names(arg_names, modes_null ? PointerGetDatum(nullptr) : arg_modes, &names);
        ReleaseSysCache(tuple);
    });
    f.name = std::string("conveyor.") + proname;
    for (int i = 0; i < nargs; ++i) {
        f.arg_types.push_back(types[i]);
        f.arg_names.push_back(i < named && names[i] && names[i][0] ? names[i] : fmt::format("${}", i + 1));
    }
    f.audit_class = audit_class(fn, proname);
    return known_functions.emplace(fn, std::move(f)).first->second;
}

static bool is_json_number(const char *s) {
    // Type output of numbers also gives NaN and (-)Infinity, which JSON cannot carry unquoted.
    return std::strcmp(s, "NaN") != 0 && std::strcmp(s, "Infinity") != 0 && std::strcmp(s, "-Infinity") != 0;
}

// A value as JSON text: numbers and booleans as themselves, json and jsonb embedded, composites as
// objects, everything else as the string of its type output; long values clipped.
static std::string json_value(Datum value, Oid type, bool isnull) {
    if (isnull) return "null";
    Oid base = pg_guard([&] { return getBaseType(type); });
    bool composite = pg_guard([&] { return type_is_rowtype(base); });
    const char *shown = pg_guard([&] {
        if (composite) return text_to_cstring(DatumGetTextPP(DirectFunctionCall1(row_to_json, value)));
        Oid output;
        bool varlena;
        getTypeOutputInfo(base, &output, &varlena);
        return OidOutputFunctionCall(output, value);
    });
    size_t len = std::strlen(shown);
    switch (base) {
        case INT2OID: case INT4OID: case INT8OID: case OIDOID: case FLOAT4OID: case FLOAT8OID: case NUMERICOID:
            return is_json_number(shown) ? std::string(shown) : json_quoted(shown);
        case BOOLOID:
            return shown[0] == 't' ? "true" : "false";
        case JSONOID: case JSONBOID:
            if (len <= max_recorded_bytes) return std::string(shown, len);
            break;
        default:
            if (composite && len <= max_recorded_bytes) return std::string(shown, len);
    }
    return json_quoted(clipped(std::string_view(shown, len), max_recorded_bytes));
}

static std::string arguments_json(const AuditedFunction &f, FunctionCallInfo fcinfo) {
    std::string out = "{";
    for (size_t i = 0; i < f.arg_types.size() && (int)i < fcinfo->nargs; ++i) {
        if (i) out += ", ";
        out += json_quoted(f.arg_names[i]);
        out += ": ";
        out += json_value(fcinfo->args[i].value, f.arg_types[i], fcinfo->args[i].isnull);
    }
    out += "}";
    return out;
}

static std::string result_json(const AuditedFunction &f, FunctionCallInfo fcinfo, Datum result) {
    if (f.returns_set) {
        auto *rsinfo = (ReturnSetInfo *)fcinfo->resultinfo;
        int64 rows = rsinfo && rsinfo->setResult ? pg_guard([&] { return tuplestore_tuple_count(rsinfo->setResult); }) : 0;
        return fmt::format("{{\"rows\": {}}}", rows);
    }
    if (f.result_type == VOIDOID) return "null";
    return json_value(result, f.result_type, fcinfo->isnull);
}

static std::string role_name(Oid role) {
    const char *name = pg_guard([&] { return GetUserNameFromId(role, true); });
    return name ? name : fmt::format("{}", role);
}

// One row of the log; returns its audit_id. A NULL result is an application's call without one.
static int64 insert_row(const std::string &session_name, const std::string &calling_name, const std::string &function,
                        const std::string &arguments, const std::optional<std::string> &result) {
    spi::Connection spi;
    audit_partitions.ensure_current();
    static Statement insert(
        "INSERT INTO conveyor.audit_log (audit_id, at, session_user_name, current_user_name, client_addr,"
        " application_name, function_name, arguments, result)"
        " VALUES (pg_catalog.nextval('conveyor.audit_id_seq'), pg_catalog.clock_timestamp(), $1, $2,"
        " pg_catalog.inet_client_addr(), pg_catalog.current_setting('application_name'), $3, $4::jsonb, $5::jsonb)"
        " RETURNING audit_id",
        {TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID});
    int64 id = *insert.run(Params().text(0, session_name).text(1, calling_name).text(2, function).text(3, arguments)
                               .text(4, result)).int8(0, 0);
    spi.finish();
    return id;
}

static void record_call(const AuditedFunction &f, FunctionCallInfo fcinfo, Datum result, Oid session_role, Oid calling_role) {
    std::string arguments = arguments_json(f, fcinfo);
    std::string result_doc = result_json(f, fcinfo, result);
    std::string session_name = role_name(session_role), calling_name = role_name(calling_role);
    if (f.security_definer) {
        insert_row(session_name, calling_name, f.name, arguments, result_doc);
    } else {  // an invoker function (upsert) runs as its caller, who may not write the audit log
        OwnerScope owner;
        insert_row(session_name, calling_name, f.name, arguments, result_doc);
    }
}

Datum audited_call(FunctionCallInfo fcinfo, Datum (*body)(FunctionCallInfo)) {
    if (!fcinfo->flinfo || !OidIsValid(fcinfo->flinfo->fn_oid)) return body(fcinfo);
    Oid fn = fcinfo->flinfo->fn_oid;
    AuditClass audit_class = function_of(fn).audit_class;
    if (audit_class == AuditClass::none) return body(fcinfo);
    if (audit_class == AuditClass::worker && !setting_bool("audit.worker_calls")) return body(fcinfo);
    AuditedFunction f = function_of(fn);  // a copy: the body may empty the cache (a GRANT, DDL)
    // The caller. Inside a SECURITY DEFINER function GetUserId() is already conveyor's owner: the
    // role that called is then the outer user, the one SET ROLE chose, which no security-definer
    // function can change (so a call through someone's own security-definer wrapper records the role
    // that called the wrapper). Inside an invoker function GetUserId() is the caller itself. The
    // session user is the one that logged in (or SET SESSION AUTHORIZATION chose).
    Oid session_role = GetSessionUserId();
    Oid calling_role = f.security_definer ? GetOuterUserId() : GetUserId();
    Datum result = body(fcinfo);
    // A call in a read-only transaction changed nothing, and could not be recorded.
    if (XactReadOnly) return result;
    // A database still at 0.1 (before ALTER EXTENSION conveyor UPDATE) has no audit log.
    if (!OidIsValid(conveyor_relid("audit_log"))) return result;
    record_call(f, fcinfo, result, session_role, calling_role);
    return result;
}

// ---- conveyor.audit_record(): applications' own rows ------------------------------------------------

// An application's function (typically its own SECURITY DEFINER RPC) records its call in the same log,
// with the caller context conveyor computes, never one the caller passes: the session user, and the
// role that called (the outer user: the role that called the application's wrapper, not its owner).
// Names under "conveyor." are conveyor's own rows and cannot be written this way. Each argument and the
// result are clipped as conveyor's own rows are. In a read-only transaction nothing is recorded (NULL).
CONVEYOR_FUNCTION(conveyor_audit_record) {
    std::string function = required_key(fcinfo, 0, "function_name");
    std::string prefix = function.substr(0, std::min<size_t>(function.size(), 9));
    for (char &c : prefix) c = (char)std::tolower((unsigned char)c);
    if (prefix == "conveyor.")
        throw Error(ERRCODE_INVALID_PARAMETER_VALUE, fmt::format("function_name {} names a conveyor function", quoted(function)),
                    "", "Rows of conveyor's own functions are written by the calls themselves; name the application's function.");
    require(fcinfo, 1, "arguments");
    Jsonb *arguments = optional_object(fcinfo, 1, "arguments");
    std::string arguments_doc = "{";
    bool first = true;
    for (const JsonField &field : jsonb_object_fields(arguments, "arguments")) {
        if (!first) arguments_doc += ", ";
        first = false;
        arguments_doc += json_quoted(field.key);
        arguments_doc += ": ";
        arguments_doc += json_value(jsonb_value_datum(field.value), JSONBOID, false);
    }
    arguments_doc += "}";
    std::optional<std::string> result_doc;  // no result: NULL (a JSON null result is 'null')
    if (!PG_ARGISNULL(2)) result_doc = json_value(PG_GETARG_DATUM(2), JSONBOID, false);
    if (XactReadOnly) PG_RETURN_NULL();
    std::string session_name = role_name(GetSessionUserId()), calling_name = role_name(GetOuterUserId());
    int64 id = insert_row(session_name, calling_name, function, arguments_doc, result_doc);
    PG_RETURN_INT64(id);
}

// ---- conveyor.audit() -------------------------------------------------------------------------------

CONVEYOR_FUNCTION(conveyor_audit) {
    require(fcinfo, 0, "since");  // a filter bound: any time, infinities too
    TimestampTz since = PG_GETARG_TIMESTAMPTZ(0);
    std::optional<std::string> actor = optional_key(fcinfo, 1, "actor");
    std::optional<std::string> function = optional_key(fcinfo, 2, "function");
    // A bare name is conveyor's function; a qualified one (app.rpc) an application's (audit_record).
    if (function && function->find('.') == std::string::npos) function = "conveyor." + *function;
    ResultSet out(fcinfo);
    spi::Connection spi;
    static Statement stmt(
        "SELECT audit_id, at, session_user_name, current_user_name, client_addr, application_name, function_name,"
        " arguments, result FROM conveyor.audit_log"
        " WHERE at >= $1 AND ($2::text IS NULL OR session_user_name = $2) AND ($3::text IS NULL OR function_name = $3)"
        " ORDER BY at, audit_id",
        {TIMESTAMPTZOID, TEXTOID, TEXTOID});
    spi::emit(out, stmt.run(Params().datum(0, TimestampTzGetDatum(since)).text(1, actor).text(2, function)));
    spi.finish();
    return (Datum)0;
}

} // namespace conveyor::monitor
