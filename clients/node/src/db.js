// Connections and retries shared by the producer and the worker.
//
// Every call is one statement sent with pool.query and no statement name: node-postgres then uses the
// unnamed prepared statement, which lives only until the next Parse on that server connection, so the
// calls work directly against PostgreSQL and behind pgbouncer in transaction pooling mode alike.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';

// Serialization failure, deadlock, lock not available: conveyor never swallows them, callers retry.
export const RETRY_SQLSTATES = new Set(['40001', '40P01', '55P03']);
// The server went away under the connection (terminated backend, shutdown, cannot connect now).
const DISCONNECT_SQLSTATES = new Set(['57P01', '57P02', '57P03']);
// Errors of the socket itself, raised by Node's net module.
const SOCKET_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ENOENT', 'EHOSTUNREACH',
                              'ENETUNREACH', 'EAI_AGAIN']);
// node-postgres raises these without a code when the connection breaks.
const DROPPED_MESSAGES = [
  'Connection terminated',
  'Client has encountered a connection error and is not queryable',
  'Client was closed and is not queryable',
  'timeout exceeded when trying to connect',
];

/** True for the errors a caller retries: 40001, 40P01, 55P03 and a dropped connection. */
export function isRetryable(err) {
  if (err == null || typeof err !== 'object') return false;
  const code = err.code;
  if (err instanceof pg.DatabaseError) {
    return RETRY_SQLSTATES.has(code) || DISCONNECT_SQLSTATES.has(code) || (typeof code === 'string' && code.startsWith('08'));
  }
  if (typeof code === 'string' && SOCKET_CODES.has(code)) return true;
  const message = String(err.message ?? '');
  return DROPPED_MESSAGES.some((m) => message.startsWith(m));
}

/**
 * Exponential backoff with jitter for retryable errors: baseMs * 2^n, capped at capMs, scaled by a
 * random factor in [0.5, 1]; at most `attempts` tries in all.
 */
export class Retry {
  /**
   * @param {{attempts?: number, baseMs?: number, capMs?: number,
   *          onRetry?: (err: Error, attempt: number, delayMs: number) => void}} [options]
   */
  constructor({ attempts = 8, baseMs = 50, capMs = 5000, onRetry = null } = {}) {
    if (!Number.isInteger(attempts) || attempts < 1) throw new RangeError('attempts must be an integer of at least 1');
    this.attempts = attempts;
    this.baseMs = baseMs;
    this.capMs = capMs;
    this.onRetry = onRetry;
  }

  delayMs(n) {
    return Math.min(this.capMs, this.baseMs * 2 ** n) * (0.5 + Math.random() / 2);
  }

  /**
   * Calls fn until it resolves, a non-retryable error, or the last attempt; an aborted signal ends the
   * wait between attempts (the last error is thrown).
   * @template T
   * @param {() => Promise<T>} fn
   * @param {AbortSignal} [signal]
   * @returns {Promise<T>}
   */
  async run(fn, signal) {
    for (let n = 1; ; n++) {
      try {
        return await fn();
      } catch (err) {
        if (!isRetryable(err) || n >= this.attempts || signal?.aborted) throw err;
        const wait = this.delayMs(n - 1);
        this.onRetry?.(err, n, wait);
        try {
          await sleep(wait, undefined, signal ? { signal } : undefined);
        } catch {
          throw err; // aborted while waiting
        }
      }
    }
  }
}

function isPool(value) {
  return value != null && typeof value === 'object' && typeof value.query === 'function' &&
    typeof value.connect === 'function';
}

/**
 * A pg.Pool for a connection string or config, or the pool given. Returns [pool, owned].
 * An idle connection that breaks makes the pool emit 'error'; without a listener Node would exit.
 */
export function asPool(target, { max = 10, logger, applicationName } = {}) {
  if (isPool(target)) return [target, false];
  const config = typeof target === 'string' ? { connectionString: target } : { ...(target ?? {}) };
  config.max ??= max;
  if (applicationName) config.application_name ??= applicationName;
  const pool = new pg.Pool(config);
  pool.on('error', (err) => logger?.warn?.(`conveyor: an idle pooled connection broke: ${err.message}`));
  return [pool, true];
}

export function clientConfig(target, applicationName) {
  const config = typeof target === 'string' ? { connectionString: target } : { ...(target ?? {}) };
  if (applicationName) config.application_name ??= applicationName;
  return config;
}

// By default: warnings and errors to stderr, nothing else.
export const defaultLogger = {
  debug() {},
  info() {},
  warn: (...args) => console.warn(...args),
  error: (...args) => console.error(...args),
};
