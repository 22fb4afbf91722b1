// One worker process of the four-process test: runs until SIGTERM (or SIGKILL).
// Each handler run appends "<job_id> <attempt> <outcome>" to the file runsPath. Jobs whose payload
// says fail throw; a slow job's first attempt waits until its signal aborts.
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from '../src/index.js';

const [directUrl, poolUrl, queue, runsPath, workerId] = process.argv.slice(2);
const record = (job, outcome) => appendFileSync(runsPath, `${job.jobId} ${job.attempt} ${outcome}\n`);

async function fetch(job, ctx) {
  const { n, fail, slow } = job.payload;
  if (slow && job.attempt === 1) {
    if (!ctx.signal.aborted) {  // a listener added after the abort would never fire
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 60000);
        ctx.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
      });
    }
    record(job, `aborted ${ctx.signal.reason?.name}`);
    return { aborted: true };
  }
  await sleep(2 + (n % 7));  // a little work, so that a worker always holds jobs
  record(job, fail ? 'fail' : 'ok');
  if (fail) throw new Error(`planned failure ${n}`);
  return { n };
}

await new Worker({
  queue, handlers: { fetch }, concurrency: 4, direct: directUrl, pool: poolUrl, workerId, pollIntervalMs: 1000,
}).run();
