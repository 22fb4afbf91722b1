// A worker: waits for its queue on one direct session, dequeues in batches through a pool, runs
// handlers as async functions, heartbeats their leases, acks, and shuts down cleanly.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import pg from 'pg';
import { Retry, asPool, clientConfig, defaultLogger, isRetryable } from './db.js';

/** The reason of a handler's signal when the worker no longer holds the job's lease. */
export class LeaseLostError extends Error {
  constructor(jobId) {
    super(`the lease of job ${jobId} was lost: another worker may run it now`);
    this.name = 'LeaseLostError';
    this.jobId = jobId;
  }
}

/**
 * Thrown by a handler for a failure no retry can fix (the API answered 404: the channel is gone): the
 * worker acks the job with success false, the error's message and retry => false, so the job is dead
 * at once, with the reason 'not retryable', whatever attempts it has left. Any other error fails the
 * attempt, retried after backoff until max_attempts.
 */
export class PermanentError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PermanentError';
  }
}

/** The reason of a handler's signal when the worker stopped waiting for it at shutdown. */
export class ShutdownError extends Error {
  constructor(jobId) {
    super(`the worker shut down before job ${jobId} finished; its lease will run out`);
    this.name = 'ShutdownError';
    this.jobId = jobId;
  }
}

/**
 * @typedef {object} Job  a job as conveyor.dequeue hands it out
 * @property {string} jobId
 * @property {string | null} jobType
 * @property {string | null} groupKey
 * @property {any} payload
 * @property {number} priority
 * @property {number} attempt      this attempt's number, from 1
 * @property {Date} leaseUntil
 */

/** What a handler gets besides its job: the abort signal, progress and log lines. */
export class JobContext {
  constructor(worker, job, signal) {
    this.job = job;
    this.workerId = worker.workerId;
    /** Aborted when the lease is lost (reason: LeaseLostError) or at shutdown (reason: ShutdownError). */
    this.signal = signal;
    this._worker = worker;
  }

  /**
   * conveyor.progress: percent (0-100, null keeps it) and step (null keeps it); a new step adds a
   * `progress` event with details. Resolves false when the worker no longer holds the job.
   */
  async progress(percent = null, step = null, details = null) {
    const { rows } = await this._worker._query(
      'SELECT conveyor.progress($1, $2, $3::numeric, $4, $5::jsonb, attempt => $6) AS ok',
      [this.job.jobId, this.workerId, percent, step, details == null ? null : JSON.stringify(details), this.job.attempt]);
    return rows[0].ok;
  }

  /** conveyor.job_log: an event of the worker's own, stored as log:<event>; false when the lease is lost. */
  async log(event, details = null) {
    const { rows } = await this._worker._query(
      'SELECT conveyor.job_log($1, $2, $3, $4::jsonb, attempt => $5) AS ok',
      [this.job.jobId, this.workerId, event, details == null ? null : JSON.stringify(details), this.job.attempt]);
    return rows[0].ok;
  }
}

// The jobs' ids and attempts, for unnest(ids, attempts), by job id: one order for every statement, so
// two statements never lock the same rows in opposite orders.
function leaseArrays(items) {
  const jobs = items.map((i) => i.job).sort((a, b) => (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0));
  return [jobs.map((j) => j.jobId), jobs.map((j) => j.attempt)];
}

function handlerMap(handlers) {
  const map = handlers instanceof Map ? new Map(handlers) : new Map(Object.entries(handlers ?? {}));
  for (const [type, fn] of map) {
    if (typeof fn !== 'function') throw new TypeError(`the handler for job_type ${JSON.stringify(type)} is not a function`);
  }
  if (map.size === 0) throw new TypeError('a worker needs at least one handler');
  return map;
}

export class Worker {
  /**
   * @param {object} options
   * @param {string} options.queue
   * @param {Record<string, Function> | Map<string | null, Function>} options.handlers  job_type -> async
   *   (job, ctx) => stats; a Map may hold the key null for jobs without a job_type
   * @param {string | object} options.direct  connection string or pg config of the listening session:
   *   PostgreSQL itself (or pgbouncer in session mode), never a transaction-mode pooler
   * @param {string | object | import('pg').Pool} [options.pool]  everything else (default: `direct`)
   * @param {number} [options.concurrency]       handlers running at once (default 4)
   * @param {number} [options.prefetch]          jobs leased beyond those running, kept ready (default 0)
   * @param {string} [options.workerId]          default host:pid:random
   * @param {number} [options.leaseSeconds]      default: the queue's lease_seconds
   * @param {number} [options.pollIntervalMs]    longest wait without a notification (default 5000)
   * @param {number} [options.shutdownTimeoutMs] how long shutdown waits for running handlers (default 30000)
   * @param {Retry} [options.retry]
   * @param {boolean} [options.handleSignals]    stop on SIGTERM while run() runs (default true)
   * @param {object} [options.logger]            {info, warn, error}; default: warnings and errors to stderr
   */
  constructor({
    queue, handlers, direct, pool = undefined, concurrency = 4, prefetch = 0, workerId = undefined,
    leaseSeconds = null, pollIntervalMs = 5000, shutdownTimeoutMs = 30000, retry = new Retry(),
    handleSignals = true, logger = defaultLogger,
  }) {
    if (typeof queue !== 'string' || queue === '') throw new TypeError('queue must be a non-empty string');
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new RangeError('concurrency must be an integer of at least 1');
    if (!Number.isInteger(prefetch) || prefetch < 0) throw new RangeError('prefetch must be an integer of 0 or more');
    if (leaseSeconds != null && (!Number.isInteger(leaseSeconds) || leaseSeconds < 1)) {
      throw new RangeError('leaseSeconds must be an integer of at least 1');
    }
    if (direct == null) throw new TypeError('direct (the listening session\'s connection) is required');
    this.queue = queue;
    this.handlers = handlerMap(handlers);
    this.concurrency = concurrency;
    this.prefetch = prefetch;
    this.workerId = workerId ?? `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
    this.leaseSeconds = leaseSeconds;
    this.pollIntervalMs = pollIntervalMs;
    this.shutdownTimeoutMs = shutdownTimeoutMs;
    this.retry = retry;
    this.handleSignals = handleSignals;
    this.logger = logger;
    this._directConfig = clientConfig(direct, `conveyor-worker ${this.workerId} listen`);
    [this._pool, this._ownsPool] = asPool(pool ?? direct, {
      max: concurrency + 2, logger, applicationName: `conveyor-worker ${this.workerId}`,
    });

    this._leased = new Map();      // jobId -> {job, ctx, controller, beatEveryMs, nextBeat, started, finishing, lost, superseded}
    this._superseded = 0;          // runs still going whose job this worker has leased again (see _take)
    this._running = new Set();     // promises of the handlers running
    this._stop = new AbortController();
    this._direct = null;           // the listening pg.Client
    this._waiting = false;         // the direct session waits on the queue (wait_for, no stop_waiting since)
    this._notified = false;        // a notification for the queue came since the last dequeue
    this._wakeLoop = null;         // ends the main loop's current sleep
    this._wakeBeats = null;        // ends the heartbeat loop's current sleep
    this._started = false;
  }

  /** Stops taking jobs; run() then releases the jobs not started, waits for the running ones, and resolves. */
  stop() {
    if (!this._stop.signal.aborted) this._stop.abort();
    this._wakeLoop?.();
  }

  /**
   * Works until stop(), SIGTERM or the signal given, then shuts down; resolves when done. Rejects
   * on an error it cannot retry (such as an unknown queue), after shutting down.
   * @param {{signal?: AbortSignal}} [options]
   */
  async run({ signal } = {}) {
    if (this._started) throw new Error('a Worker runs once');
    this._started = true;
    const onStop = () => this.stop();
    if (this.handleSignals) process.on('SIGTERM', onStop);
    if (signal?.aborted) this.stop();
    signal?.addEventListener('abort', onStop, { once: true });
    const beats = this._heartbeatLoop();
    try {
      await this._loop();
    } finally {
      try {
        await this._shutdown();
      } finally {
        this._beatsStopped = true;
        this._wakeBeats?.();
        await beats;
        await this._closeDirect();
        if (this._ownsPool) await this._pool.end().catch(() => {});
        if (this.handleSignals) process.off('SIGTERM', onStop);
        signal?.removeEventListener('abort', onStop);
      }
    }
  }

  get stopping() {
    return this._stop.signal.aborted;
  }

  // ---- the main loop -------------------------------------------------------------------------------

  async _loop() {
    // Dequeues go through the pool. When it finds nothing, the direct session calls wait_for, which
    // makes producers notify it; when jobs come, stop_waiting, so that they do not while it works.
    let failures = 0;
    while (!this.stopping) {
      this._startBuffered();
      const free = this.concurrency + this.prefetch - this._leased.size - this._superseded;
      if (free <= 0) {
        await this._sleep(this.pollIntervalMs, false);  // a finished job wakes it
        continue;
      }
      try {
        this._notified = false;
        const jobs = await this._dequeue(free);
        if (jobs.length > 0) {
          this._take(jobs);
          if (this._waiting) await this._stopWaiting();
        } else if (!this._waiting) {
          const ready = await this._waitFor();
          if (!ready.includes(this.queue)) await this._sleep(this.pollIntervalMs);
        } else {
          await this._sleep(this.pollIntervalMs);
        }
        failures = 0;
      } catch (err) {
        if (this.stopping) break;
        if (!isRetryable(err)) throw err;
        failures += 1;
        this.logger.error(`conveyor: waiting for or dequeuing from ${this.queue} failed (${err.message}); trying again`);
        await this._closeDirect();
        await this._sleep(this.retry.delayMs(Math.min(failures, 8)));
      }
    }
  }

  async _dequeue(maxCount) {
    const { rows } = await this.retry.run(() => this._pool.query(
      'SELECT d.job_id, d.job_type, d.group_key, d.payload, d.priority, d.attempt, d.lease_until,' +
      ' extract(epoch FROM d.lease_until - now())::float8 AS lease_left' +
      ' FROM conveyor.dequeue($1, $2, $3::int, $4::int) d',
      [this.queue, this.workerId, maxCount, this.leaseSeconds]), this._stop.signal);
    const now = performance.now();
    return rows.map((r) => {
      const job = Object.freeze({
        jobId: r.job_id, jobType: r.job_type, groupKey: r.group_key, payload: r.payload,
        priority: r.priority, attempt: r.attempt, leaseUntil: r.lease_until,
      });
      const controller = new AbortController();
      // The lease's length by the server's clock; beats at a third of it.
      const beatEveryMs = Math.max(200, (r.lease_left * 1000) / 3);
      return {
        job, controller, ctx: new JobContext(this, job, controller.signal), beatEveryMs,
        nextBeat: now + beatEveryMs, started: false, finishing: false, lost: false, superseded: false,
      };
    });
  }

  _take(items) {
    for (const item of items) {
      const old = this._leased.get(item.job.jobId);
      if (old) {
        // The lease this worker held was lost (an operator's requeue, an expiry) and the job came back
        // to this same worker. The old run is aborted and its outcome dropped (_runJob; its calls name
        // its attempt, so none acts on the new lease), and it keeps its slot until its handler returns.
        old.lost = true;
        old.superseded = true;
        if (old.started) this._superseded += 1;
        this.logger.warn(`conveyor: job ${item.job.jobId} came back to ${this.workerId} (attempt ${item.job.attempt}) ` +
                         `while its attempt ${old.job.attempt} still ran: aborting the old run`);
        old.controller.abort(new LeaseLostError(item.job.jobId));
      }
      this._leased.set(item.job.jobId, item);
    }
    this._wakeBeats?.();
    this._startBuffered();
  }

  _startBuffered() {
    if (this.stopping) return;
    let running = this._running.size;
    for (const item of this._leased.values()) {
      if (running >= this.concurrency) break;
      if (item.started) continue;
      item.started = true;
      running += 1;
      const done = this._runJob(item);
      this._running.add(done);
      done.finally(() => this._running.delete(done));
    }
  }

  // ---- the listening session -----------------------------------------------------------------------

  async _ensureDirect() {
    if (this._direct) return this._direct;
    const client = new pg.Client(this._directConfig);
    const dropped = (err) => {
      if (this._direct !== client) return;
      if (err && !this.stopping) this.logger.warn(`conveyor: the listening connection broke: ${err.message}`);
      this._direct = null;
      this._waiting = false;  // the session's waits ended with it
      client.end().catch(() => {});
      this._wakeLoop?.();
    };
    client.on('error', dropped);
    client.on('end', () => dropped(null));
    client.on('notification', (msg) => {
      if (msg.channel === 'conveyor' && msg.payload === this.queue) {
        this._notified = true;
        if (this._leased.size < this.concurrency + this.prefetch) this._wakeLoop?.();
      }
    });
    try {
      await client.connect();
    } catch (err) {
      client.end().catch(() => {});
      throw err;
    }
    this._direct = client;
    return client;
  }

  async _waitFor() {
    // Not retried here: a failure drops the connection and the loop starts over.
    const client = await this._ensureDirect();
    const { rows } = await client.query('SELECT conveyor.wait_for($1::text[]) AS ready', [[this.queue]]);
    if (this._direct === client) this._waiting = true;
    return rows[0].ready;
  }

  async _stopWaiting() {
    this._waiting = false;
    const client = this._direct;
    if (!client) return;
    try {
      await client.query('SELECT conveyor.stop_waiting($1::text[])', [[this.queue]]);
    } catch (err) {
      // Ending the session ends its waits as well.
      this.logger.warn(`conveyor: stop_waiting failed (${err.message}); dropping the listening connection`);
      await this._closeDirect();
    }
  }

  async _closeDirect() {
    const client = this._direct;
    this._direct = null;
    this._waiting = false;
    if (client) await client.end().catch(() => {});
  }

  /** Until a finished job, stop(), ms milliseconds, or (when byNotification) a notification for the queue. */
  _sleep(ms, byNotification = true) {
    if (this.stopping || (byNotification && this._notified)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self._wakeLoop === done) self._wakeLoop = null;
        resolve();
      }
      this._wakeLoop = done;
    });
  }

  // ---- running a job -------------------------------------------------------------------------------

  async _runJob(item) {
    const { job, ctx } = item;
    const handler = this.handlers.get(job.jobType);
    let success = false;
    let error = null;
    let stats = null;
    let retry = true;
    if (handler === undefined) {
      const known = [...this.handlers.keys()].map((t) => JSON.stringify(t)).sort().join(', ');
      error = `no handler for job_type ${JSON.stringify(job.jobType)} in worker ${this.workerId} (it handles ${known})`;
    } else {
      try {
        const result = await handler(job, ctx);
        success = true;
        if (result != null && typeof result === 'object' && !Array.isArray(result)) stats = result;
      } catch (err) {
        error = (err instanceof Error ? err.message : String(err)) || err?.name || 'error';
        retry = !(err instanceof PermanentError);
        stats = { exception: err instanceof Error ? err.name : typeof err };
        this.logger.info(`conveyor: job ${job.jobId} (${job.jobType}) failed: ${error}`);
      }
    }
    item.finishing = true;
    try {
      if (item.lost) {
        // No ack: the lease is gone (the server would refuse it: it names this run's attempt).
        this.logger.warn(`conveyor: job ${job.jobId}: its lease was lost while its handler ran; its outcome is dropped`);
        return;
      }
      // Fenced by worker_id and attempt: after a lost lease it returns false and changes nothing, even
      // when this worker has leased the job again since; and so does a retry of an ack that committed
      // but whose answer was lost.
      const { rows } = await this._query(
        'SELECT conveyor.ack($1, $2, $3, $4::jsonb, $5, retry => $6, attempt => $7) AS acked',
        [job.jobId, success, error, stats == null ? null : JSON.stringify(stats), this.workerId, retry, job.attempt]);
      if (!rows[0].acked) this.logger.warn(`conveyor: job ${job.jobId} was no longer leased to ${this.workerId}: its ack changed nothing`);
    } catch (err) {
      this.logger.error(`conveyor: ack of job ${job.jobId} failed (${err.message}); its lease will run out and it will be retried`);
    } finally {
      if (item.superseded) this._superseded -= 1;
      else if (this._leased.get(job.jobId) === item) this._leased.delete(job.jobId);
      this._wakeLoop?.();
    }
  }

  _query(text, params) {
    return this.retry.run(() => this._pool.query(text, params));
  }

  // ---- heartbeats ----------------------------------------------------------------------------------

  async _heartbeatLoop() {
    while (!this._beatsStopped) {
      const now = performance.now();
      const due = [...this._leased.values()].filter((i) => i.nextBeat <= now && !i.lost && !i.finishing);
      if (due.length > 0) await this._beat(due, now);
      let next = performance.now() + 1000;
      for (const item of this._leased.values()) if (!item.lost) next = Math.min(next, item.nextBeat);
      const pause = Math.min(Math.max(next - performance.now(), 10), 1000);
      await new Promise((resolve) => {
        const timer = setTimeout(() => { this._wakeBeats = null; resolve(); }, pause);
        this._wakeBeats = () => { clearTimeout(timer); this._wakeBeats = null; resolve(); };
      });
    }
  }

  async _beat(due, now) {
    const [ids, attempts] = leaseArrays(due);
    let leases;
    try {
      const { rows } = await this._query(
        'SELECT j::text AS job_id, conveyor.heartbeat(j, $1, $2::int, attempt => a) AS lease_until' +
        ' FROM unnest($3::uuid[], $4::int[]) AS l(j, a)',
        [this.workerId, this.leaseSeconds, ids, attempts]);
      leases = new Map(rows.map((r) => [r.job_id, r.lease_until]));
    } catch (err) {
      this.logger.error(`conveyor: heartbeat failed (${err.message}); trying again in a second`);
      for (const item of due) item.nextBeat = now + Math.min(1000, item.beatEveryMs);
      return;
    }
    for (const item of due) {
      if (item.finishing) continue;
      if (leases.get(item.job.jobId) == null) {
        item.lost = true;
        this.logger.warn(`conveyor: the lease of job ${item.job.jobId} was lost: aborting its handler`);
        item.controller.abort(new LeaseLostError(item.job.jobId));
      } else {
        item.nextBeat = now + item.beatEveryMs;
      }
    }
  }

  // ---- shutting down -------------------------------------------------------------------------------

  async _shutdown() {
    this.stop();
    const unstarted = [...this._leased.values()].filter((i) => !i.started);
    for (const item of unstarted) this._leased.delete(item.job.jobId);
    if (unstarted.length > 0) {
      const [ids, attempts] = leaseArrays(unstarted);
      try {
        // release does not count the attempt, and the job is due at once for another worker.
        const { rows } = await this._query(
          'SELECT count(*) FILTER (WHERE conveyor.release(j, $1, attempt => a))::int AS released' +
          ' FROM unnest($2::uuid[], $3::int[]) AS l(j, a)',
          [this.workerId, ids, attempts]);
        this.logger.info(`conveyor: released ${rows[0].released} of ${ids.length} jobs not started`);
      } catch (err) {
        this.logger.error(`conveyor: could not release ${ids.length} jobs not started (${err.message}); their leases will run out`);
      }
    }
    if (this._running.size > 0) {
      let timer;
      const timeout = new Promise((resolve) => { timer = setTimeout(resolve, this.shutdownTimeoutMs); });
      await Promise.race([Promise.allSettled([...this._running]), timeout]);
      clearTimeout(timer);
    }
    for (const item of this._leased.values()) {
      this.logger.warn(`conveyor: job ${item.job.jobId} still running at shutdown: aborting it; its lease will run out`);
      item.controller.abort(new ShutdownError(item.job.jobId));
    }
  }
}

