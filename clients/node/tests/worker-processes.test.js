import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Producer } from '../src/index.js';
import { connect, directUrl, makeQueue, poolUrl, rows, unfinished, value, waitUntil } from './helpers.js';

const JOBS = 2000;
const MAX_ATTEMPTS = 3;
const failing = (n) => n % 10 === 3;
const SLOW = [7, 8];  // their first attempt runs until its lease is taken back

test('four worker processes work 2,000 jobs with failures, a killed worker and lost leases: each completed once or dead', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db, { max_attempts: MAX_ATTEMPTS, backoff_base_seconds: 0, lease_seconds: 4 });
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const enqueued = [];
  for (let start = 0; start < JOBS; start += 500) {
    enqueued.push(...await producer.enqueueBatch(queue, Array.from({ length: 500 }, (_, i) => {
      const n = start + i;
      return { payload: { n, fail: failing(n), slow: SLOW.includes(n) }, jobType: 'fetch' };
    })));
  }
  const dir = mkdtempSync(join(tmpdir(), 'conveyor-node-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ids = [0, 1, 2, 3].map((i) => `node-stress-${i}`);
  const procs = ids.map((id, i) => fork(new URL('./stress-worker.js', import.meta.url),
    [directUrl, poolUrl, queue, join(dir, `runs${i}.txt`), id], { stdio: 'inherit' }));
  const exits = procs.map((p) => new Promise((resolve) => p.on('exit', (code, signal) => resolve({ code, signal }))));
  t.after(() => procs.forEach((p) => p.exitCode === null && p.kill('SIGKILL')));

  // An operator takes the slow jobs back while they run: their workers lose the leases.
  const slowIds = SLOW.map((n) => enqueued[n].jobId);
  await waitUntil(async () => (await value(db,
    "SELECT count(*)::int FROM unnest($1::uuid[]) j WHERE conveyor.get_job(j)->>'status' = 'running'", [slowIds])) === SLOW.length,
    'the slow jobs run');
  for (const id of slowIds) assert.equal(await value(db, 'SELECT conveyor.requeue($1)', [id]), true);
  // Their handlers notice at the next heartbeat (a third of the lease); wait for that before a worker is
  // killed, which could otherwise be one of theirs.
  const abortedRuns = () => ids.map((_, i) => join(dir, `runs${i}.txt`)).filter(existsSync)
    .flatMap((f) => readFileSync(f, 'utf8').split('\n')).filter((line) => / 1 aborted /.test(`${line} `)).length;
  await waitUntil(async () => abortedRuns() === SLOW.length, 'the slow jobs\' handlers saw their leases lost', 60000);

  // A worker dies mid-run: the jobs it held come back when their leases run out.
  const finished = () => value(db, 'SELECT count(*)::int FROM conveyor.job_history h JOIN conveyor.queues q USING (queue_id) WHERE q.name = $1', [queue]);
  await waitUntil(async () => (await finished()) >= 600, '600 jobs finished', 120000);
  // Every process is frozen first, so that the victim is killed while it holds jobs (their leases, 4 s,
  // outlive the check): an ack or a dequeue sent just before the freeze lands within the half second,
  // and the queue does not drain while the test looks. The one holding the most running jobs is killed
  // (any one may be between jobs at the freeze).
  let victim = -1;
  await waitUntil(async () => {
    for (const p of procs) p.kill('SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const holder = await value(db, `SELECT worker_id FROM conveyor.list_jobs($1, ARRAY['running'], lim => 1000)
      GROUP BY worker_id ORDER BY count(*) DESC, worker_id LIMIT 1`, [queue]);
    victim = ids.indexOf(holder);
    if (victim >= 0) procs[victim].kill('SIGKILL');
    for (const [i, p] of procs.entries()) if (i !== victim) p.kill('SIGCONT');
    // Before the next freeze, the workers catch up on their heartbeats (only the victim's leases may lapse).
    if (victim < 0) await new Promise((resolve) => setTimeout(resolve, 1000));
    return victim >= 0;
  }, 'a frozen worker holding jobs, to kill', 120000);
  await waitUntil(async () => (await unfinished(db, queue)) === 0, 'every job finished', 180000);
  for (const [i, p] of procs.entries()) if (i !== victim) p.kill('SIGTERM');
  const ends = await Promise.all(exits);
  assert.deepEqual(ends, procs.map((_, i) => (i === victim ? { code: null, signal: 'SIGKILL' } : { code: 0, signal: null })));

  const jobs = await rows(db, `
    SELECT h.job_id::text AS id, h.status, h.attempt, h.payload, h.last_error,
           count(*) FILTER (WHERE e.event = 'started')::int AS started,
           count(*) FILTER (WHERE e.event = 'succeeded')::int AS succeeded,
           count(*) FILTER (WHERE e.event = 'failed')::int AS failed,
           count(*) FILTER (WHERE e.event = 'expired')::int AS expired,
           count(*) FILTER (WHERE e.event = 'requeued')::int AS requeued,
           coalesce(array_agg(DISTINCT e.worker_id) FILTER (WHERE e.event = 'expired'), '{}') AS expired_by
    FROM conveyor.job_history h JOIN conveyor.queues q USING (queue_id) JOIN conveyor.job_events e USING (job_id)
    WHERE q.name = $1 GROUP BY 1, 2, 3, 4, 5`, [queue]);
  assert.equal(jobs.length, JOBS, 'every job is in history once');
  let expired = 0;
  for (const job of jobs) {
    const { n } = job.payload;
    // Every attempt the trail started ended once: succeeded, failed, expired or requeued.
    assert.equal(job.started, job.succeeded + job.failed + job.expired + job.requeued, `job ${n}: ${JSON.stringify(job)}`);
    if (failing(n)) {
      assert.deepEqual([job.status, job.succeeded, job.attempt, job.started], ['dead', 0, MAX_ATTEMPTS, MAX_ATTEMPTS], `job ${n}`);
      if (job.expired === 0) assert.equal(job.last_error, `planned failure ${n}`);
    } else {
      assert.deepEqual([job.status, job.succeeded, job.failed], ['completed', 1, 0], `job ${n}: completed exactly once`);
    }
    if (SLOW.includes(n)) assert.equal(job.requeued, 1, `slow job ${n} was taken back once`);
    // Only the killed worker let leases run out; the others kept theirs by heartbeats.
    assert.deepEqual(job.expired_by.filter((w) => w !== ids[victim]), [], `job ${n}`);
    expired += job.expired;
  }
  assert.ok(expired >= 1, 'the jobs the killed worker held expired');

  // The slow jobs' handlers saw their signals abort with LeaseLostError.
  const runs = ids.map((_, i) => join(dir, `runs${i}.txt`)).filter(existsSync)
    .flatMap((f) => readFileSync(f, 'utf8').trim().split('\n')).map((line) => line.split(' '));
  for (const id of slowIds) {
    assert.ok(runs.some(([job, attempt, outcome, reason]) => job === id && attempt === '1' && outcome === 'aborted' && reason === 'LeaseLostError'),
      `the handler of ${id} saw the lost lease; its runs: ${JSON.stringify(runs.filter(([job]) => job === id))}`);
  }
  const ran = new Set(runs.map(([job]) => job));
  assert.equal(ran.size, JOBS, 'every job ran');
});
