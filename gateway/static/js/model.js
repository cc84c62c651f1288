// The client's own small fold of job events (the same rules as the jobs projection), so a status changes on
// screen the moment its event arrives, and a job's progress history with "the newest report wins".

export const ACTIVE = ['queued', 'assigned', 'running', 'stopping'];
export const isActive = (job) => ACTIVE.includes(job?.status);

const FOLD = {
  JobSubmitted: (_job, e) => ({
    id: e.job_id, kind: e.kind, workload: e.workload, status: 'queued', attempt: 1, worker_id: null,
    priority: e.priority ?? 0, params: e.params ?? {}, max_iterations: e.max_iterations ?? null,
    episodes: e.episodes ?? null, checkpoint_of: e.checkpoint_of ?? null, gpus: e.gpus ?? 0, labels: e.labels ?? [],
    idempotency_key: e.idempotency_key ?? null, timeout_s: e.timeout_s ?? null, max_retries: e.max_retries ?? 0,
    submitted_at: e.submitted_at, assigned_at: null, started_at: null, finished_at: null, stop_requested: false,
    resumed_from: null, last_checkpoint: null, last_checkpoint_iteration: null, checkpoints: 0, requeues: 0,
    error: null, result: null,
  }),
  JobAssigned: (job, e) => ({...job, status: 'assigned', attempt: e.attempt, worker_id: e.worker_id,
    assigned_at: e.assigned_at}),
  JobStarted: (job, e) => ({...job, status: job.stop_requested ? 'stopping' : 'running', attempt: e.attempt,
    worker_id: e.worker_id, started_at: job.started_at ?? e.started_at, resumed_from: e.resumed_from ?? null}),
  JobCheckpointed: (job, e) => ({...job, last_checkpoint: e.name, last_checkpoint_iteration: e.iteration,
    checkpoints: job.checkpoints + 1}),
  JobCompleted: (job, e) => ({...job, status: 'completed', result: e.result ?? {}, finished_at: e.completed_at,
    error: null}),
  JobFailed: (job, e) => ({...job, status: 'failed', error: e.error, finished_at: e.failed_at}),
  JobStopRequested: (job) => ({...job, stop_requested: true,
    status: ['running', 'assigned'].includes(job.status) ? 'stopping' : job.status}),
  JobStopped: (job, e) => ({...job, status: 'stopped', finished_at: e.stopped_at, error: null}),
  JobRequeued: (job, e) => ({...job, status: 'queued', attempt: e.attempt, worker_id: null, finished_at: null,
    requeues: job.requeues + 1}),
  JobTimedOut: (job, e) => ({...job, status: 'timed_out', error: 'timed out', finished_at: e.timed_out_at}),
};

/**
 * A job row after one live event message (`{seq, event_type, event}`); the same row when the event is old
 * news (already folded into what the REST API returned), null when the job is unknown here.
 */
export function evolve(job, message) {
  const fold = FOLD[message.event_type];
  if (!fold) return job;
  if (job && job.updated_seq >= message.seq) return job;
  if (!job && message.event_type !== 'JobSubmitted') return null;
  return {...fold(job, message.event), updated_seq: message.seq};
}

/** Prefer whichever copy of a row has seen more of the log. */
export function newer(a, b) {
  if (!a) return b;
  if (!b) return a;
  return b.updated_seq >= a.updated_seq ? b : a;
}

/** A progress sample from a live message, in the REST API's shape. */
export const sampleOf = (message) => ({seq: message.seq, ...message.data});

/** One job's progress samples, deduplicated by sequence, one per iteration (a resumed attempt's win). */
export class ProgressHistory {
  constructor() {
    this.seqs = new Set();
    this.rows = [];
    this.lastSeq = 0;
    this.unsorted = [];
  }

  add(sample) {
    if (this.seqs.has(sample.seq)) return false;
    this.seqs.add(sample.seq);
    if (sample.seq > this.lastSeq && !this.unsorted.length) this.push(sample);
    else this.unsorted.push(sample);
    return true;
  }

  push(sample) {
    // A resumed attempt reports iterations again from its checkpoint on: drop what it replaces.
    const rows = this.rows;
    if (rows.length && rows[rows.length - 1].iteration >= sample.iteration) {
      let lo = 0;
      let hi = rows.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (rows[mid].iteration < sample.iteration) lo = mid + 1; else hi = mid;
      }
      rows.length = lo;
    }
    rows.push(sample);
    this.lastSeq = sample.seq;
  }

  /** The samples in order, one per iteration. */
  list() {
    if (this.unsorted.length) {
      // A sample older than the newest shown (a REST page after live messages): rebuild in sequence order.
      // Rows a resume replaced stay replaced: the sample that replaced them still comes after them.
      const all = [...this.rows, ...this.unsorted].sort((a, b) => a.seq - b.seq);
      this.rows = [];
      this.unsorted = [];
      this.lastSeq = 0;
      for (const sample of all) this.push(sample);
    }
    return this.rows;
  }

  latest() {
    const rows = this.list();
    return rows[rows.length - 1] ?? null;
  }

  /** Names of every metric reported, plus "loss" when any sample has one. */
  seriesNames() {
    const names = new Set();
    let loss = false;
    for (const sample of this.list()) {
      if (sample.loss != null) loss = true;
      for (const name of Object.keys(sample.metrics ?? {})) names.add(name);
    }
    return {loss, metrics: [...names].sort()};
  }

  /** [iterations, values] of the loss or of one metric, nulls where a sample lacks it. */
  series(name) {
    const rows = this.list();
    const xs = new Float64Array(rows.length);
    const ys = new Array(rows.length);
    rows.forEach((sample, i) => {
      xs[i] = sample.iteration;
      ys[i] = name === 'loss' ? sample.loss ?? null : sample.metrics?.[name] ?? null;
    });
    return [xs, ys];
  }
}

/** Iterations per second over the last minute of the current attempt (null until two samples differ). */
export function rate(rows, windowMs = 60000) {
  const last = rows[rows.length - 1];
  if (!last) return null;
  const end = Date.parse(last.at);
  let first = last;
  for (let i = rows.length - 2; i >= 0; i -= 1) {
    const sample = rows[i];
    if (sample.attempt !== last.attempt || end - Date.parse(sample.at) > windowMs) break;
    first = sample;
  }
  const seconds = (end - Date.parse(first.at)) / 1000;
  if (seconds < 0.5 || last.iteration <= first.iteration) return null;
  return (last.iteration - first.iteration) / seconds;
}

/** {done, total, fraction, remaining (s) | null} of a job from its newest sample. */
export function progressOf(job, latest, rows = []) {
  const total = latest?.total ?? job?.max_iterations ?? job?.episodes ?? null;
  const done = job?.status === 'completed' && total ? total : latest?.iteration ?? 0;
  let fraction = null; // unknown: a running job's first report has not come, or a finished job's is not here
  if (job?.status === 'completed') fraction = 1;
  else if (total && (latest || ['queued', 'assigned'].includes(job?.status))) fraction = Math.min(1, done / total);
  const perSecond = rate(rows);
  const remaining = isActive(job) && total && perSecond ? Math.max(0, (total - done) / perSecond) : null;
  return {done, total, fraction, remaining, perSecond};
}
