// What the tests share. The database comes from the environment:
//   CONVEYOR_TEST_URL        a direct connection string to a database with the conveyor extension
//                            (required), e.g. postgresql://postgres@/test?host=/tmp/sock&port=5432
//   CONVEYOR_TEST_POOL_URL   where producers' and workers' calls go, e.g. pgbouncer in transaction
//                            mode in front of the same database (default: CONVEYOR_TEST_URL)
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

export const directUrl = process.env.CONVEYOR_TEST_URL;
if (!directUrl) throw new Error('CONVEYOR_TEST_URL is not set');
export const poolUrl = process.env.CONVEYOR_TEST_POOL_URL || directUrl;

/** A direct connection for setting up and checking; ended after the test (after its queues are dropped). */
export async function connect(t) {
  const db = new pg.Client({ connectionString: directUrl, application_name: 'conveyor-node-test' });
  await db.connect();
  db.queues = [];
  t.after(async () => {
    for (const name of db.queues) await db.query('SELECT conveyor.drop_queue($1, force => true)', [name]);
    await db.end();
  });
  return db;
}

/** db.query's rows. */
export async function rows(db, text, params = []) {
  return (await db.query(text, params)).rows;
}

/** The first column of the first row. */
export async function value(db, text, params = []) {
  const result = await db.query({ text, values: params, rowMode: 'array' });
  return result.rows[0]?.[0];
}

/** A fresh queue, dropped with its jobs after the test. */
export async function makeQueue(db, options = {}) {
  const name = `node_${randomBytes(5).toString('hex')}`;
  await db.query('SELECT conveyor.create_queue($1, $2::jsonb)', [name, JSON.stringify(options)]);
  db.queues.push(name);
  return name;
}

/** Polls condition() until it is true; throws past limitMs (a stuck worker). */
export async function waitUntil(condition, what, limitMs = 60000) {
  const deadline = Date.now() + limitMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${limitMs / 1000} s`);
    await sleep(50);
  }
}

export function unfinished(db, queue) {
  return value(db, "SELECT count(*)::int FROM conveyor.list_jobs($1, ARRAY['pending', 'running'], lim => 1000)", [queue]);
}

export function jobStatus(db, jobId) {
  return value(db, "SELECT conveyor.get_job($1)->>'status'", [jobId]);
}

export async function events(db, jobId) {
  return (await rows(db, 'SELECT event FROM conveyor.job_events($1)', [jobId])).map((r) => r.event);
}

/** Collects the worker's log lines instead of printing them. */
export function memoryLogger() {
  const lines = [];
  const add = (level) => (...args) => lines.push(`${level}: ${args.join(' ')}`);
  return { lines, debug: add('debug'), info: add('info'), warn: add('warn'), error: add('error') };
}
