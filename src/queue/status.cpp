// Status notifications: with a queue's status_notify option on, every change of a job's status
// (enqueue, dequeue, ack, release, retry, cancel, dead_letter, lease expiry) and every progress
// update is sent with NOTIFY on the channel conveyor_status, as a JSON object. PostgreSQL delivers a
// transaction's notifications when it commits, in the order they were sent, and those of different
// transactions in commit order; a rolled-back change sends nothing.
#include "queue/internal.hpp"

namespace conveyor::queue {

// The payloads describe each job as it is now (after the calling statement): from jobs, and for the
// jobs not there (finished) from job_history, whose partitions are read only then. `at` is the clock:
// two changes of one job in one transaction never make identical payloads (PostgreSQL would fold
// them into one).
static const char *active_payloads_sql =
    "SELECT pg_catalog.jsonb_build_object('job_id', j.job_id, 'queue', q.name,"
    "  'status', CASE WHEN j.state = 'running' THEN 'running' ELSE 'pending' END, 'attempt', j.attempt,"
    "  'percent', j.percent, 'step', j.step, 'at', pg_catalog.clock_timestamp())::text, j.job_id"
    " FROM conveyor.jobs j JOIN conveyor.queues q USING (queue_id) WHERE j.job_id = ANY($1)";
static const char *finished_payloads_sql =
    "SELECT pg_catalog.jsonb_build_object('job_id', h.job_id, 'queue', q.name, 'status', h.status::text,"
    "  'attempt', h.attempt, 'percent', h.percent, 'step', h.step, 'at', pg_catalog.clock_timestamp())::text, h.job_id"
    " FROM conveyor.job_history h JOIN conveyor.queues q USING (queue_id) WHERE h.job_id = ANY($1)";

static void send_status(const std::vector<pg_uuid_t> &ids) {
    static Statement active(active_payloads_sql, {UUIDARRAYOID});
    static Statement finished(finished_payloads_sql, {UUIDARRAYOID});
    std::map<pg_uuid_t, std::string, UuidLess> payloads;
    auto rows = active.run(Params().uuid_array(0, ids));
    for (uint64 r = 0; r < rows.size(); ++r) payloads.emplace(*rows.uuid(r, 1), *rows.text(r, 0));
    if (payloads.size() < ids.size()) {
        std::vector<pg_uuid_t> rest;
        for (const auto &id : ids)
            if (!payloads.count(id)) rest.push_back(id);
        auto done = finished.run(Params().uuid_array(0, rest));
        for (uint64 r = 0; r < done.size(); ++r) payloads.emplace(*done.uuid(r, 1), *done.text(r, 0));
    }
    // In the order the ids were given.
    for (const auto &id : ids) {
        auto it = payloads.find(id);
        if (it == payloads.end()) continue;  // gone (a dropped queue's job)
        const char *payload = it->second.c_str();
        pg_guard([&] { Async_Notify(status_channel, payload); });
    }
}

void status_changed(int32 queue_id, const std::vector<pg_uuid_t> &job_ids) {
    if (job_ids.empty() || !status_notify_on(queue_id)) return;
    send_status(job_ids);
}

void status_changed(const std::vector<std::pair<int32, pg_uuid_t>> &jobs) {
    std::vector<pg_uuid_t> ids;
    for (const auto &[queue_id, id] : jobs)
        if (status_notify_on(queue_id)) ids.push_back(id);
    if (!ids.empty()) send_status(ids);
}

} // namespace conveyor::queue
