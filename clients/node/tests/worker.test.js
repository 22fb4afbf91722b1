import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { LeaseLostError, PermanentError, Producer, Worker } from '../src/index.js';
import { connect, directUrl, events, jobStatus, makeQueue, memoryLogger, poolUrl, rows, unfinished, value, waitUntil } from './helpers.js';

function start(t, options) {
  const worker = new Worker({ direct: directUrl, pool: poolUrl, handleSignals: false, logger: memoryLogger(), ...options });
  const done = worker.run();
  t.after(async () => { worker.stop(); await done.catch(() => {}); });
  return { worker, done };
}

// The backends whose session waits on the queue (holds its wake lock, objsubid 6), with their names.
function waiters(db, queue) {
  return rows(db, `SELECT l.pid, a.application_name FROM pg_locks l
      JOIN conveyor.queues q ON l.classid = 0 AND l.objid = q.queue_id::oid
      JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 6 AND l.mode = 'ShareLock' AND l.granted AND q.name = $1`, [queue]);
}

test('shutdown releases the jobs not started and waits for the running one', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db);
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const ids = [];
  for (let n = 0; n < 4; n++) ids.push((await producer.enqueue(queue, { n }, { jobType: 'slow' })).jobId);
  const ran = [];
  let finish;
  const goOn = new Promise((resolve) => { finish = resolve; });
  const { worker, done } = start(t, {
    queue, concurrency: 1, prefetch: 3, workerId: 'shutdown-test', pollIntervalMs: 1000,
    handlers: { slow: async (job) => { ran.push(job.jobId); await goOn; return { done: true }; } },
  });
  await waitUntil(() => ran.length === 1, 'the first job started');
  await waitUntil(async () => (await value(db, "SELECT count(*)::int FROM conveyor.list_jobs($1, ARRAY['running'])", [queue])) === 4,
    'four jobs leased');
  worker.stop();
  // The three jobs not started go back to the queue while the running one is still at work.
  await waitUntil(async () => (await value(db, "SELECT count(*)::int FROM conveyor.list_jobs($1, ARRAY['pending'])", [queue])) === 3,
    'three jobs released');
  let finished = false;
  done.then(() => { finished = true; });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(finished, false, 'the worker waits for its running job');
  finish();
  await done;
  assert.equal(ran.length, 1);
  assert.equal(await jobStatus(db, ran[0]), 'completed');
  for (const id of ids.filter((id) => id !== ran[0])) {
    assert.equal(await jobStatus(db, id), 'pending');
    assert.equal((await events(db, id)).at(-1), 'released');
    assert.equal(await value(db, "SELECT (conveyor.get_job($1)->>'attempt')::int", [id]), 0, 'the attempt does not count');
  }
});

test('a handler that blocks past its lease sees its signal abort with LeaseLostError', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db, { backoff_base_seconds: 0 });
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const { jobId } = await producer.enqueue(queue, {}, { jobType: 'long' });
  const dir = mkdtempSync(join(tmpdir(), 'conveyor-node-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const reaped = join(dir, 'reaped');
  const seen = [];
  const long = async (job, ctx) => {
    if (job.attempt > 1) { seen.push(['again', job.attempt]); return null; }
    // Another process reaps the job once its 1 s lease is over, while this handler holds the event
    // loop (no heartbeat can run) until that is done.
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      import pg from 'pg'; import { writeFileSync } from 'node:fs';
      const db = new pg.Client(${JSON.stringify(directUrl)}); await db.connect();
      for (;;) {
        await new Promise((r) => setTimeout(r, 300));
        const { rows } = await db.query("SELECT conveyor.reap($1) AS n", [${JSON.stringify(queue)}]);
        if (rows[0].n > 0) break;
      }
      await db.end(); writeFileSync(${JSON.stringify(reaped)}, 'done');`], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: 'inherit' });
    const stall = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < 600 && !existsSync(reaped); i++) Atomics.wait(stall, 0, 0, 100);
    await new Promise((resolve) => child.on('exit', resolve));
    seen.push(['stalled', existsSync(reaped)]);
    // The heartbeat may have found the lease lost while this handler waited for the child: an abort
    // listener added after the abort never fires.
    if (!ctx.signal.aborted) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 30000);
        ctx.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
      });
    }
    seen.push(['aborted', ctx.signal.aborted, ctx.signal.reason]);
    return { late: true };
  };
  start(t, { queue, handlers: { long }, concurrency: 1, leaseSeconds: 1, pollIntervalMs: 200, workerId: 'lease-test' });
  // On a failure, what the handler saw and the job's events say where it went wrong.
  const story = async () => `seen: ${JSON.stringify(seen)}; events: ${(await events(db, jobId)).join(' ')}`;
  await waitUntil(async () => (await jobStatus(db, jobId)) === 'completed', 'the job completed')
    .catch(async (err) => { err.message += ` (${await story()})`; throw err; });
  assert.deepEqual(seen[0], ['stalled', true], await story());
  assert.equal(seen[1][0], 'aborted', await story());
  assert.equal(seen[1][1], true);
  assert.ok(seen[1][2] instanceof LeaseLostError, await story());
  assert.equal(seen[1][2].jobId, jobId);
  assert.deepEqual(seen[2], ['again', 2], await story());
  const trail = await events(db, jobId);
  assert.ok(trail.includes('expired'), trail.join(' '));
  // The first run's outcome, after its lease was lost, changed nothing: one success, the second run's.
  assert.equal(trail.filter((e) => e === 'succeeded').length, 1);
  assert.equal(trail.filter((e) => e === 'started').length, 2);
});

test('a job leased again by the same worker runs again, and the old run is aborted and not acked', async (t) => {
  // One worker with a free slot: after the operator's requeue the job comes back to this same worker
  // while its first run still goes on. The first run must be aborted at once and its outcome dropped:
  // the succeeded event is the second attempt's, with its stats.
  const db = await connect(t);
  const queue = await makeQueue(db);
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const { jobId } = await producer.enqueue(queue, {}, { jobType: 'long' });
  const seen = [];
  let firstStarted = false;
  let secondStarted;
  const second = new Promise((resolve) => { secondStarted = resolve; });
  let firstReturned;
  const firstDone = new Promise((resolve) => { firstReturned = resolve; });
  const within = (promise, ms) => {  // true when promise settles within ms; its timer never outlives it
    let timer;
    const late = new Promise((resolve) => { timer = setTimeout(() => resolve(false), ms); });
    return Promise.race([promise.then(() => true), late]).finally(() => clearTimeout(timer));
  };
  const long = async (job, ctx) => {
    if (job.attempt === 1) {
      firstStarted = true;
      const aborted = ctx.signal.aborted || await within(new Promise((resolve) => {
        ctx.signal.addEventListener('abort', resolve, { once: true });
      }), 60000);
      seen.push([1, 'aborted', aborted, ctx.signal.reason instanceof LeaseLostError]);
      seen.push([1, 'saw the second run', await within(second, 60000)]);
      firstReturned();
      return { run: 1 };
    }
    secondStarted();
    seen.push([2, 'aborted', ctx.signal.aborted]);
    await within(firstDone, 60000);
    await new Promise((resolve) => setTimeout(resolve, 500));  // the first run's ack, had it been sent, has landed
    return { run: 2 };
  };
  // A 60 s lease: no heartbeat within the test, so only the second dequeue can tell the first run.
  const { worker, done } = start(t, { queue, handlers: { long }, concurrency: 2, leaseSeconds: 60, pollIntervalMs: 200, workerId: 'relet-test' });
  await waitUntil(() => firstStarted, 'the first run started');
  assert.equal(await value(db, 'SELECT conveyor.requeue($1)', [jobId]), true);
  await waitUntil(async () => (await jobStatus(db, jobId)) === 'completed', 'the job completed')
    .catch((err) => { err.message += ` (seen: ${JSON.stringify(seen)})`; throw err; });
  worker.stop();
  await done;
  assert.deepEqual(seen.map((s) => JSON.stringify(s)).sort(),
    [[1, 'aborted', true, true], [1, 'saw the second run', true], [2, 'aborted', false]].map((s) => JSON.stringify(s)).sort());
  const trail = await rows(db, 'SELECT event, worker_id, details FROM conveyor.job_events($1)', [jobId]);
  assert.deepEqual(trail.filter((e) => e.event === 'succeeded').map((e) => [e.details.attempt, e.details.stats]),
    [[2, { run: 2 }]], JSON.stringify(trail));
  assert.deepEqual(trail.filter((e) => e.event === 'started').map((e) => e.worker_id), ['relet-test', 'relet-test']);
  assert.ok(!trail.some((e) => e.event === 'failed'));
  assert.ok(worker.logger.lines.some((l) => /came back to relet-test \(attempt 2\)/.test(l)), worker.logger.lines.join('\n'));
});

test('failures, unknown job types, progress and log lines', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db, { max_attempts: 1 });
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const ok = (await producer.enqueue(queue, { url: 'https://example.org/a' }, { jobType: 'download' })).jobId;
  const bad = (await producer.enqueue(queue, {}, { jobType: 'parse' })).jobId;
  const odd = (await producer.enqueue(queue, {}, { jobType: 'mystery' })).jobId;
  const answers = [];
  class ParseError extends Error { name = 'ParseError'; }
  start(t, {
    queue, concurrency: 2, pollIntervalMs: 500,
    handlers: {
      download: async (job, ctx) => {
        answers.push(await ctx.progress(40, 'download', { url: job.payload.url }));
        answers.push(await ctx.progress(70));
        answers.push(await ctx.log('parse.started', { bytes: 10 }));
        return { bytes: 10 };
      },
      parse: async () => { throw new ParseError('no title in the page'); },
    },
  });
  await waitUntil(async () => (await unfinished(db, queue)) === 0, 'the three jobs finished');
  assert.deepEqual(answers, [true, true, true]);
  const done = await value(db, 'SELECT conveyor.get_job($1)', [ok]);
  assert.deepEqual([done.status, Number(done.percent), done.step], ['completed', 70, 'download']);
  const trail = Object.fromEntries((await rows(db, 'SELECT event, details FROM conveyor.job_events($1)', [ok])).map((r) => [r.event, r.details]));
  assert.deepEqual(trail.progress.details, { url: 'https://example.org/a' });
  assert.deepEqual(trail['log:parse.started'], { bytes: 10 });
  assert.deepEqual(trail.succeeded.stats, { bytes: 10 });

  const failed = await value(db, 'SELECT conveyor.get_job($1)', [bad]);
  assert.deepEqual([failed.status, failed.last_error], ['dead', 'no title in the page']);
  const details = await value(db, "SELECT details FROM conveyor.job_events($1) WHERE event = 'failed'", [bad]);
  assert.deepEqual(details.stats, { exception: 'ParseError' });

  const unknown = await value(db, 'SELECT conveyor.get_job($1)', [odd]);
  assert.equal(unknown.status, 'dead');
  assert.match(unknown.last_error, /^no handler for job_type "mystery" in worker .* \(it handles "download", "parse"\)$/);
});

test('a PermanentError makes the job dead at once; any other error is retried', async (t) => {
  const db = await connect(t);
  // Five attempts each, and a backoff long enough that the retried job stays waiting.
  const queue = await makeQueue(db, { max_attempts: 5, backoff_base_seconds: 3600 });
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const gone = (await producer.enqueue(queue, { channelId: 'UCgone' }, { jobType: 'refresh' })).jobId;
  const flaky = (await producer.enqueue(queue, { channelId: 'UCflaky' }, { jobType: 'refresh' })).jobId;
  start(t, {
    queue, concurrency: 2, pollIntervalMs: 500,
    handlers: {
      refresh: async (job) => {
        if (job.payload.channelId === 'UCgone') throw new PermanentError('channel gone');
        throw new Error('HTTP 503');
      },
    },
  });
  await waitUntil(async () => {
    const [row] = await rows(db, "SELECT conveyor.get_job($1)->>'status' AS gone, conveyor.get_job($2)->>'state' AS flaky", [gone, flaky]);
    return row.gone === 'dead' && row.flaky === 'scheduled';
  }, 'both jobs failed once');
  const dead = await value(db, 'SELECT conveyor.get_job($1)', [gone]);
  assert.deepEqual([dead.status, dead.attempt, dead.last_error, dead.reason], ['dead', 1, 'channel gone', 'not retryable']);
  assert.deepEqual(await events(db, gone), ['enqueued', 'started', 'failed', 'dead']);
  assert.deepEqual(await rows(db, 'SELECT reason FROM conveyor.dead_jobs($1)', [queue]), [{ reason: 'not retryable' }]);
  const retried = await value(db, 'SELECT conveyor.get_job($1)', [flaky]);
  assert.deepEqual([retried.status, retried.attempt, retried.last_error], ['pending', 1, 'HTTP 503']);
});

test('a worker whose dequeues go through the pool is woken by an enqueue, not by its poll interval', async (t) => {
  const db = await connect(t);
  const queue = await makeQueue(db);
  const producer = new Producer(poolUrl);
  t.after(() => producer.close());
  const ran = [];
  let finish;
  const goOn = new Promise((resolve) => { finish = resolve; });
  // Ten minutes between polls: only a notification can bring these jobs within the test's limits.
  const { worker } = start(t, {
    queue, concurrency: 1, pollIntervalMs: 600000, workerId: 'wake-test',
    handlers: { fetch: async (job) => { ran.push(job.payload.n); if (job.payload.n === 1) await goOn; } },
  });
  const listening = async () => (await waiters(db, queue)).some((w) => w.application_name === `conveyor-worker ${worker.workerId} listen`);
  await waitUntil(listening, 'the worker waits on its direct session', 30000);
  const { jobId } = await producer.enqueue(queue, { n: 1 }, { jobType: 'fetch' });
  await waitUntil(() => ran.length === 1, 'the enqueue woke the worker', 30000);
  // While it works, producers need not notify it.
  await waitUntil(async () => (await waiters(db, queue)).length === 0, 'stop_waiting while working', 30000);
  finish();
  await waitUntil(async () => (await jobStatus(db, jobId)) === 'completed', 'the job completed', 30000);
  await waitUntil(listening, 'the worker waits again', 30000);

  // Its listening connection is cut: it connects again, waits again, and the next enqueue wakes it.
  const [{ pid }] = await waiters(db, queue);
  assert.equal(await value(db, 'SELECT pg_terminate_backend($1)', [pid]), true);
  await waitUntil(async () => (await waiters(db, queue)).some((w) => w.pid !== pid), 'a new listening session waits', 30000);
  await producer.enqueue(queue, { n: 2 }, { jobType: 'fetch' });
  await waitUntil(() => ran.length === 2, 'the enqueue woke the reconnected worker', 30000);
  assert.deepEqual(ran, [1, 2]);
  assert.ok(worker.logger.lines.some((l) => /the listening connection broke/.test(l)), worker.logger.lines.join('\n'));
});
