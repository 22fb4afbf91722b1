// Enqueuing jobs: conveyor.enqueue and conveyor.enqueue_batch.
import { Retry, asPool, defaultLogger } from './db.js';

/**
 * @typedef {object} JobOptions
 * @property {string} [jobType]      the job's type; the worker picks its handler by it
 * @property {string} [groupKey]     at most one running job per group
 * @property {number} [priority]     1 to 10, 10 first (default 5)
 * @property {Date} [runAt]          when the job becomes due (default: now, the server's clock)
 * @property {string} [dedupKey]     while a pending or running job holds this key, enqueue returns it
 * @property {number} [maxAttempts]  1 to 1000 (default: the queue's)
 *
 * @typedef {JobOptions & {payload?: object}} BatchJob
 *
 * @typedef {object} Enqueued
 * @property {string} jobId
 * @property {boolean} wasDuplicate  true when dedupKey matched an active job (nothing was written)
 */

const OPTION_KEYS = ['jobType', 'groupKey', 'priority', 'runAt', 'dedupKey', 'maxAttempts'];
const BATCH_KEYS = new Set(['payload', ...OPTION_KEYS]);
// enqueue_batch's JSON field for each option.
const BATCH_FIELDS = {
  payload: 'payload', jobType: 'job_type', groupKey: 'group_key', priority: 'priority', runAt: 'run_at',
  dedupKey: 'dedup_key', maxAttempts: 'max_attempts',
};

function checkKeys(object, allowed, where) {
  const unknown = Object.keys(object).filter((k) => !allowed.has(k));
  if (unknown.length > 0) {
    throw new TypeError(`${where}unknown keys ${unknown.join(', ')}; allowed: ${[...allowed].join(', ')}`);
  }
}

function checkRunAt(runAt, where) {
  if (runAt == null) return null;
  if (!(runAt instanceof Date) || Number.isNaN(runAt.getTime())) throw new TypeError(`${where}runAt must be a valid Date`);
  return runAt.toISOString();  // UTC, with its Z: the same instant on any server time zone
}

export class Producer {
  /**
   * @param {string | object | import('pg').Pool} target  a connection string or pg config (a pool is made
   *   for it and ended by close()), or a pg.Pool of yours; it may point at pgbouncer in transaction mode
   * @param {{retry?: Retry, logger?: object}} [options]
   */
  constructor(target, { retry = new Retry(), logger = defaultLogger } = {}) {
    [this.pool, this._ownsPool] = asPool(target, { logger, applicationName: 'conveyor-producer' });
    this.retry = retry;
  }

  /**
   * Adds one job. A bad job is conveyor's error (a pg DatabaseError with its SQLSTATE, such as 22023).
   * @param {string} queue
   * @param {object} [payload]
   * @param {JobOptions} [options]
   * @returns {Promise<Enqueued>}
   */
  async enqueue(queue, payload = {}, options = {}) {
    checkKeys(options, new Set(OPTION_KEYS), '');
    const { jobType = null, groupKey = null, priority = 5, runAt = null, dedupKey = null, maxAttempts = null } = options;
    const params = [queue, JSON.stringify(payload ?? {}), jobType, groupKey, priority, checkRunAt(runAt, ''),
                    dedupKey, maxAttempts];
    const { rows } = await this.retry.run(() => this.pool.query(
      'SELECT job_id, was_duplicate FROM conveyor.enqueue(queue => $1, payload => $2::jsonb, job_type => $3,' +
      ' group_key => $4, priority => $5::int, run_at => coalesce($6::timestamptz, now()), dedup_key => $7,' +
      ' max_attempts => $8::int)', params));
    return { jobId: rows[0].job_id, wasDuplicate: rows[0].was_duplicate };
  }

  /**
   * Adds many jobs in one statement, all or none (a bad element fails the whole batch with
   * `jobs[i]: ...`). Returns one result per job, in the order given.
   * @param {string} queue
   * @param {BatchJob[]} jobs
   * @returns {Promise<Enqueued[]>}
   */
  async enqueueBatch(queue, jobs) {
    const elements = jobs.map((job, i) => {
      checkKeys(job, BATCH_KEYS, `jobs[${i}]: `);
      const element = {};
      for (const [key, value] of Object.entries(job)) {
        if (value == null) continue;
        element[BATCH_FIELDS[key]] = key === 'runAt' ? checkRunAt(value, `jobs[${i}]: `) : value;
      }
      return element;
    });
    if (elements.length === 0) return [];
    const { rows } = await this.retry.run(() => this.pool.query(
      'SELECT job_id, was_duplicate FROM conveyor.enqueue_batch($1, $2::jsonb) ORDER BY ord',
      [queue, JSON.stringify(elements)]));
    return rows.map((r) => ({ jobId: r.job_id, wasDuplicate: r.was_duplicate }));
  }

  /** Ends the pool the producer made (not one that was passed in). */
  async close() {
    if (this._ownsPool) await this.pool.end();
  }
}
