// Drives a Node-only peer (pg-boss) through its own client, and the raw floor and SELECT 1 through
// the same client library (node-postgres, the pg that pg-boss uses), for bench/peers/run.sh.
//   node node_driver.mjs NODE_MODULES SYSTEM OP SECONDS CLIENTS [N]
//   SYSTEM: pgboss | raw | select1     OP: setup | prefill (N jobs) | enqueue | enqueue_batch | claim | claim_many
// Connects with the PG* environment. Prints one line: "jobs seconds drained" (drained = 1 when a
// claim came back short, i.e. the backlog ran dry during the run).
import { createRequire } from "node:module";
import { join } from "node:path";

const [modules, system, op, seconds = "10", clients = "4", count = "0"] = process.argv.slice(2);
const require = createRequire(join(modules, "noop.js"));
const pg = require("pg");
const PgBoss = require("pg-boss");
const QUEUE = `peers_${op}`;   // pg-boss: one queue per operation (a prefill names its queue in PEERS_QUEUE)
const conn = { host: process.env.PGHOST, port: Number(process.env.PGPORT), user: process.env.PGUSER, database: process.env.PGDATABASE };
const payload = (n) => ({ channel_id: `UC${n}`, n });
const rand = () => 1 + Math.floor(Math.random() * 1000000);
const batch = () => Array.from({ length: 100 }, (_, i) => payload(i + 1));

async function withBoss(clientCount, fn) {
    // No supervisor (maintenance, archiving) and no scheduler during a run: only the calls measured.
    const boss = new PgBoss({ ...conn, max: clientCount, supervise: false, schedule: false, migrate: true });
    boss.on("error", (e) => { console.error(e); process.exit(1); });
    await boss.start();
    try { return await fn(boss); } finally { await boss.stop({ graceful: false, wait: true }); }
}

// Runs CLIENTS loops of STEP for SECONDS; STEP returns [jobs done, short?].
async function timed(step, clientCount) {
    const end = Date.now() + Number(seconds) * 1000;
    const start = process.hrtime.bigint();
    let jobs = 0, drained = 0;
    await Promise.all(Array.from({ length: clientCount }, async (_, c) => {
        while (Date.now() < end) {
            const [done, short] = await step(c);
            jobs += done;
            if (short) drained = 1;
        }
    }));
    const secs = Number(process.hrtime.bigint() - start) / 1e9;
    return `${jobs} ${secs.toFixed(3)} ${drained}`;
}

async function bossRun(boss, n) {
    const q = QUEUE;
    switch (op) {
        case "enqueue": return timed(async () => { await boss.send(q, payload(rand())); return [1, false]; }, n);
        case "enqueue_batch": return timed(async () => { await boss.insert(batch().map((data) => ({ name: q, data }))); return [100, false]; }, n);
        case "claim": return timed(async () => {
            const jobs = await boss.fetch(q, { batchSize: 1 });
            if (jobs.length) await boss.complete(q, jobs[0].id);
            return [jobs.length, jobs.length < 1];
        }, n);
        case "claim_many": return timed(async () => {
            const jobs = await boss.fetch(q, { batchSize: 100 });
            if (jobs.length) await boss.complete(q, jobs.map((j) => j.id));
            return [jobs.length, jobs.length < 100];
        }, n);
    }
    throw new Error(`unknown op ${op}`);
}

// The raw floor and SELECT 1: one connection per client, prepared (named) statements.
const RAW = {
    enqueue: ["INSERT INTO raw.jobs (payload) VALUES ($1)", () => [payload(rand())], 1],
    enqueue_batch: ["INSERT INTO raw.jobs (payload) SELECT e -> 'payload' FROM jsonb_array_elements($1::jsonb) AS e",
        () => [JSON.stringify(batch().map((p) => ({ payload: p })))], 100],
    claim: ["DELETE FROM raw.jobs WHERE id = (SELECT id FROM raw.jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, payload", () => [], 1],
    claim_many: ["DELETE FROM raw.jobs WHERE id = ANY (ARRAY(SELECT id FROM raw.jobs ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)) RETURNING id, payload", () => [], 100],
    select1: ["SELECT 1", () => [], 1],
};
async function rawRun(n, key) {
    const [text, values, per] = RAW[key];
    const conns = await Promise.all(Array.from({ length: n }, async () => { const c = new pg.Client(conn); await c.connect(); return c; }));
    try {
        return await timed(async (c) => {
            const r = await conns[c].query({ name: `raw_${key}`, text, values: values() });
            if (key.startsWith("claim")) return [r.rowCount, r.rowCount < per];
            return [per, false];
        }, n);
    } finally { await Promise.all(conns.map((c) => c.end())); }
}

let out;
if (system === "pgboss" && op === "setup") {
    out = await withBoss(1, async (boss) => {
        for (const q of ["enqueue", "enqueue_batch", "claim", "claim_many"]) await boss.createQueue(`peers_${q}`);
        return "ok";
    });
} else if (system === "pgboss" && op === "prefill") {
    // N ready jobs into PEERS_QUEUE through the client's insert, 5,000 per call.
    out = await withBoss(1, async (boss) => {
        for (let left = Number(count); left > 0; left -= 5000) {
            await boss.insert(Array.from({ length: Math.min(left, 5000) }, (_, i) => ({ name: process.env.PEERS_QUEUE, data: payload(i) })));
        }
        return "ok";
    });
} else if (system === "pgboss") {
    out = await withBoss(Number(clients), (boss) => bossRun(boss, Number(clients)));
} else if (system === "raw" || system === "select1") {
    out = await rawRun(Number(clients), system === "select1" ? "select1" : op);
} else throw new Error(`unknown system ${system}`);
console.log(out);
