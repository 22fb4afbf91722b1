import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Producer, Retry } from '../src/index.js';
import { connect, makeQueue, poolUrl, rows, value, waitUntil } from './helpers.js';

test('enqueue returns the job, and a dedup key returns wasDuplicate', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db);
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const first = await producer.enqueue(queue, { channel_id: 'UC1' },
    { jobType: 'refresh', groupKey: 'UC1', priority: 8, dedupKey: 'refresh:UC1', maxAttempts: 3 });
  const second = await producer.enqueue(queue, { channel_id: 'UC1', other: 1 }, { jobType: 'refresh', dedupKey: 'refresh:UC1' });
  assert.equal(first.wasDuplicate, false);
  assert.deepEqual(second, { jobId: first.jobId, wasDuplicate: true });
  const job = await value(db, 'SELECT conveyor.get_job($1)', [first.jobId]);
  assert.deepEqual(job.payload, { channel_id: 'UC1' });
  assert.deepEqual([job.job_type, job.group_key, job.priority, job.max_attempts], ['refresh', 'UC1', 8, 3]);
  assert.equal(await value(db, 'SELECT count(*)::int FROM conveyor.list_jobs($1)', [queue]), 1);
});

test('runAt schedules the job; options are checked before anything is sent', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db);
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const later = new Date(Date.now() + 3600 * 1000);
  const { jobId } = await producer.enqueue(queue, {}, { runAt: later });
  const runAt = await value(db, "SELECT (conveyor.get_job($1)->>'run_at')::timestamptz", [jobId]);
  assert.equal(runAt.getTime(), later.getTime());
  await assert.rejects(producer.enqueue(queue, {}, { runAt: '2030-01-01' }), TypeError);
  await assert.rejects(producer.enqueue(queue, {}, { job_type: 'a' }), /unknown keys job_type/);
  assert.equal(await value(db, 'SELECT count(*)::int FROM conveyor.list_jobs($1)', [queue]), 1);
});

test('enqueueBatch keeps the order and reports duplicates', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db);
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const existing = await producer.enqueue(queue, { n: 0 }, { dedupKey: 'k0' });
  const when = new Date(Date.UTC(2031, 4, 1, 12, 0, 0));
  const result = await producer.enqueueBatch(queue, [
    { payload: { n: 1 }, jobType: 'a' },
    { payload: { n: 2 }, dedupKey: 'k0' },
    { payload: { n: 3 }, dedupKey: 'k3', runAt: when, priority: 9, groupKey: 'g' },
    { payload: { n: 4 }, dedupKey: 'k3' },
  ]);
  assert.deepEqual(result.map((r) => r.wasDuplicate), [false, true, false, true]);
  assert.equal(result[1].jobId, existing.jobId);
  assert.equal(result[3].jobId, result[2].jobId);
  const jobs = await rows(db, 'SELECT conveyor.get_job(j) AS job FROM unnest($1::uuid[]) WITH ORDINALITY AS u(j, i) ORDER BY i',
    [result.map((r) => r.jobId)]);
  assert.deepEqual(jobs.map((r) => r.job.payload.n), [1, 0, 3, 3]);
  assert.equal(jobs[0].job.job_type, 'a');
  assert.deepEqual([jobs[2].job.priority, jobs[2].job.group_key], [9, 'g']);
  assert.equal(new Date(jobs[2].job.run_at).getTime(), when.getTime());
  assert.equal(await value(db, 'SELECT count(*)::int FROM conveyor.list_jobs($1)', [queue]), 3);
  assert.deepEqual(await producer.enqueueBatch(queue, []), []);
  await assert.rejects(producer.enqueueBatch(queue, [{ payload: {} }, { payload: {}, color: 'red' }]),
    /^TypeError: jobs\[1\]: unknown keys color/);
  // A bad element is conveyor's 22023, naming it, and nothing is written.
  await assert.rejects(producer.enqueueBatch(queue, [{ payload: { n: 5 } }, { payload: { n: 6 }, priority: 11 }]),
    (err) => err.code === '22023' && /jobs\[1\]/.test(err.message));
  assert.equal(await value(db, 'SELECT count(*)::int FROM conveyor.list_jobs($1)', [queue]), 3);
});

test('a call whose connection drops is retried on a new one', async (t) => {
  const db = await connect(t);
  const holder = await connect(t);
  const queue = await makeQueue(db);
  const retried = [];
  const producer = new Producer(poolUrl, { retry: new Retry({ onRetry: (err) => retried.push(err) }) });
  t.after(() => producer.close());
  // The holder's open transaction holds the dedup key, so the producer's enqueue waits on it; its
  // server backend is then terminated under it.
  await holder.query('BEGIN');
  await holder.query("SELECT conveyor.enqueue($1, '{\"n\": 1}', dedup_key => 'k')", [queue]);
  const pending = producer.enqueue(queue, { n: 2 }, { dedupKey: 'k' });
  let victim;
  await waitUntil(async () => {
    victim = await value(db, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()" +
      " AND wait_event_type = 'Lock' AND query LIKE '%conveyor.enqueue(queue =>%'");
    return victim != null;
  }, 'the producer waits on the dedup key');
  assert.equal(await value(db, 'SELECT pg_terminate_backend($1)', [victim]), true);
  await sleep(200);  // let the first attempt fail before the key is free
  await holder.query('ROLLBACK');
  const { jobId, wasDuplicate } = await pending;
  assert.equal(wasDuplicate, false);
  assert.ok(retried.length >= 1, 'the enqueue was retried');
  assert.equal(await value(db, 'SELECT count(*)::int FROM conveyor.list_jobs($1)', [queue]), 1);
  assert.equal(await value(db, "SELECT conveyor.get_job($1)->'payload'->>'n'", [jobId]), '2');
});

test('other errors are raised at once', async (t) => {
  const retried = [];
  const producer = new Producer(poolUrl, { retry: new Retry({ onRetry: (err) => retried.push(err) }) });
  t.after(() => producer.close());
  await assert.rejects(producer.enqueue('no_such_queue_here', {}), (err) => err.code === '42704');
  assert.equal(retried.length, 0);
});

test('Retry retries 40001, 40P01 and 55P03 with backoff, and nothing else', async () => {
  const { default: pg } = await import('pg');
  const failing = (codes) => {
    let calls = 0;
    return {
      fn: async () => {
        const code = codes[calls++];
        if (code === undefined) return 'done';
        const err = new pg.DatabaseError(`failed with ${code}`, 0, 'error');
        err.code = code;
        throw err;
      },
      calls: () => calls,
    };
  };
  const retry = new Retry({ attempts: 5, baseMs: 1, capMs: 5 });
  const transient = failing(['40001', '40P01', '55P03']);
  assert.equal(await retry.run(transient.fn), 'done');
  assert.equal(transient.calls(), 4);
  const unique = failing(['23505']);
  await assert.rejects(retry.run(unique.fn), /failed with 23505/);
  assert.equal(unique.calls(), 1);
  const endless = failing(Array(10).fill('40001'));
  await assert.rejects(retry.run(endless.fn), /failed with 40001/);
  assert.equal(endless.calls(), 5, 'at most attempts calls');
});
