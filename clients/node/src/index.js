// conveyor's Node.js client: a Producer that enqueues and a Worker that runs jobs.
export { Producer } from './producer.js';
export { Worker, JobContext, LeaseLostError, PermanentError, ShutdownError } from './worker.js';
export { Retry, isRetryable, RETRY_SQLSTATES } from './db.js';
