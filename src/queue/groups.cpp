// Groups and dedup keys: their transaction-scoped locks, and which job heads each group (the lock
// order and the states are described in src/queue/internal.hpp).
#include <algorithm>

#include "queue/internal.hpp"

namespace conveyor::queue {

static uint64 group_lock_key(int32 queue_id, const std::string &group) {
    return hash64(group, (uint64)(uint32)queue_id + 1);
}

void lock_groups(const std::set<GroupKey> &groups) {
    std::vector<uint64> keys;
    keys.reserve(groups.size());
    for (const auto &g : groups) keys.push_back(group_lock_key(g.first, g.second));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (uint64 k : keys) xact_lock(LockSpace::group, k);
}

std::set<GroupKey> try_lock_groups(const std::set<GroupKey> &groups) {
    std::vector<std::pair<uint64, GroupKey>> keyed;
    for (const auto &g : groups) keyed.emplace_back(group_lock_key(g.first, g.second), g);
    std::sort(keyed.begin(), keyed.end());
    std::set<GroupKey> got;
    for (const auto &[k, g] : keyed)
        if (try_xact_lock(LockSpace::group, k)) got.insert(g);
    return got;
}

static uint64 dedup_lock_key(int32 queue_id, const std::string &key) {
    return hash64(key, ((uint64)(uint32)queue_id + 1) << 32);
}

void lock_dedup_keys(int32 queue_id, const std::vector<std::string> &dedup_keys) {
    std::vector<uint64> keys;
    for (const auto &k : dedup_keys) keys.push_back(dedup_lock_key(queue_id, k));
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    for (uint64 k : keys) xact_lock(LockSpace::dedup, k);
}

std::optional<pg_uuid_t> active_job_with_dedup_key(int32 queue_id, const std::string &key) {
    static Statement stmt("SELECT job_id FROM conveyor.jobs WHERE queue_id = $1 AND dedup_key = $2",
                          {INT4OID, TEXTOID});
    auto rows = stmt.run(Params().int4(0, queue_id).text(1, key));
    if (rows.size() == 0) return std::nullopt;
    return rows.uuid(0, 0);
}

// Where a waiting job should run before its group's ready (unclaimed) head, the head steps back to
// waiting; fill_group_heads then promotes the better job. Used where jobs join a group's waiting
// set while it may have a head (due scheduled jobs, retries). A head a worker is claiming right now
// is skipped: it is taken, not waited for.
void rebalance_group_heads(int32 queue_id, const std::vector<std::string> &groups) {
    if (groups.empty()) return;
    static Statement stmt(
        "WITH g AS (SELECT DISTINCT group_key FROM pg_catalog.unnest($2::text[]) AS u(group_key)), "
        "best AS ("
        "  SELECT g.group_key, w.priority, w.run_at FROM g CROSS JOIN LATERAL ("
        "    SELECT priority, run_at FROM conveyor.jobs w"
        "    WHERE w.queue_id = $1 AND w.group_key = g.group_key AND w.state = 'waiting'"
        "    ORDER BY w.priority DESC, w.run_at, w.job_id LIMIT 1) w), "
        "heads AS ("
        "  SELECT h.job_id FROM conveyor.jobs h JOIN best b ON h.group_key = b.group_key"
        "  WHERE h.queue_id = $1 AND h.state = 'ready'"
        "    AND (b.priority > h.priority OR (b.priority = h.priority AND b.run_at < h.run_at))"
        "  FOR UPDATE OF h SKIP LOCKED) "
        "UPDATE conveyor.jobs j SET state = 'waiting' FROM heads WHERE j.job_id = heads.job_id",
        {INT4OID, TEXTARRAYOID});
    stmt.run(Params().int4(0, queue_id).text_array(1, groups));
}

// For each group (all of one queue) that has no ready or running job, the best waiting job becomes
// ready. Callers hold the groups' locks. A waiting job whose row another transaction holds (an
// operator cancelling it) is passed over rather than waited for.
void fill_group_heads(int32 queue_id, const std::vector<std::string> &groups) {
    if (groups.empty()) return;
    static Statement stmt(
        "WITH g AS (SELECT DISTINCT group_key FROM pg_catalog.unnest($2::text[]) AS u(group_key)), "
        "best AS ("
        "  SELECT w.job_id FROM g CROSS JOIN LATERAL ("
        "    SELECT job_id FROM conveyor.jobs w"
        "    WHERE w.queue_id = $1 AND w.group_key = g.group_key AND w.state = 'waiting'"
        "    ORDER BY w.priority DESC, w.run_at, w.job_id LIMIT 1 FOR UPDATE SKIP LOCKED) w"
        "  WHERE NOT EXISTS (SELECT 1 FROM conveyor.jobs h WHERE h.queue_id = $1 AND h.group_key = g.group_key"
        "                    AND h.state IN ('ready', 'running'))) "
        "UPDATE conveyor.jobs j SET state = 'ready' FROM best WHERE j.job_id = best.job_id AND j.state = 'waiting'",
        {INT4OID, TEXTARRAYOID});
    stmt.run(Params().int4(0, queue_id).text_array(1, groups));
}

// The same for groups of any queues.
void fill_group_heads(const std::set<GroupKey> &groups) {
    std::map<int32, std::vector<std::string>> by_queue;
    for (const auto &g : groups) by_queue[g.first].push_back(g.second);
    for (const auto &[queue_id, keys] : by_queue) fill_group_heads(queue_id, keys);
}

// Groups left with waiting jobs but no ready or running one (fill_group_heads passes over a waiting
// job whose row another transaction holds, and that transaction may leave it waiting) get their next
// head, where the group's lock is free.
int64 repair_groups() {
    static Statement headless(
        "SELECT DISTINCT w.queue_id, w.group_key FROM conveyor.jobs w WHERE w.state = 'waiting'"
        " AND NOT EXISTS (SELECT 1 FROM conveyor.jobs h WHERE h.queue_id = w.queue_id AND h.group_key = w.group_key"
        "                 AND h.state IN ('ready', 'running'))",
        {});
    auto hl = headless.run();
    std::set<GroupKey> groups;
    for (uint64 r = 0; r < hl.size(); ++r) groups.insert({*hl.int4(r, 0), *hl.text(r, 1)});
    groups = try_lock_groups(groups);
    fill_group_heads(groups);
    return (int64)groups.size();
}

} // namespace conveyor::queue
