// A job's events as a readable timeline: submitted → assigned → started → checkpointed … → completed.

import {fmtBytes, fmtInt, fmtTime, h} from '../dom.js';

const REQUEUE_REASONS = {
  worker_lost: 'its worker was lost', retry: 'retrying after a failure', shutdown: 'its worker shut down',
  worker_left: 'its worker left', rejected: 'the worker turned it down',
};

/** One line of text for an event. */
export function describe(type, e) {
  switch (type) {
    case 'JobSubmitted': {
      const size = e.max_iterations ? `, ${fmtInt(e.max_iterations)} iterations`
        : e.episodes ? `, ${fmtInt(e.episodes)} episodes` : '';
      return `Submitted: ${e.kind === 'eval' ? 'evaluation' : 'training'} of ${e.workload}${size}`;
    }
    case 'JobAssigned': return `Assigned to worker ${e.worker_id} (attempt ${e.attempt})`;
    case 'JobStarted': return `Started on ${e.worker_id}` +
      (e.resumed_from != null ? `, resuming from iteration ${fmtInt(e.resumed_from)}` : '') +
      (e.corrupt_checkpoints?.length ? ` (skipped ${e.corrupt_checkpoints.length} damaged checkpoint(s))` : '');
    case 'JobCheckpointed': return `Checkpoint at iteration ${fmtInt(e.iteration)} (${fmtBytes(e.size)})`;
    case 'JobCompleted': return 'Completed';
    case 'JobFailed': return `Failed: ${e.error}${e.will_retry ? ' (will retry)' : ''}`;
    case 'JobStopRequested': return `Stop requested${e.reason && e.reason !== 'requested' ? `: ${e.reason}` : ''}`;
    case 'JobStopped': return `Stopped${e.reason && e.reason !== 'requested' ? `: ${e.reason}` : ''}`;
    case 'JobRequeued': return `Requeued because ${REQUEUE_REASONS[e.reason] ?? e.reason}; attempt ${e.attempt} next`;
    case 'JobTimedOut': return 'Timed out';
    default: return type;
  }
}

const TONE = {
  JobCompleted: 'good', JobFailed: 'bad', JobTimedOut: 'bad', JobRequeued: 'warn', JobStopRequested: 'warn',
  JobStopped: 'warn', JobCheckpointed: 'quiet',
};

/** The timeline list; runs of checkpoints fold into one line so a long training stays readable. */
export function timeline(entries) {
  const items = [];
  for (let i = 0; i < entries.length; i += 1) {
    const entry = entries[i];
    let j = i;
    while (entry.type === 'JobCheckpointed' && entries[j + 1]?.type === 'JobCheckpointed') j += 1;
    if (j - i >= 2) {
      const last = entries[j];
      items.push(item(last, `${j - i + 1} checkpoints, iterations ${fmtInt(entry.event.iteration)} to ` +
        `${fmtInt(last.event.iteration)} (newest ${fmtBytes(last.event.size)})`));
      i = j;
    } else {
      items.push(item(entry, describe(entry.type, entry.event)));
    }
  }
  return h('ol', {class: 'timeline'}, items);
}

function item(entry, text) {
  const at = entry.time ?? entry.event?.submitted_at;
  return h('li', {class: `tl-${TONE[entry.type] ?? 'normal'}`, dataset: {type: entry.type}},
    h('time', {datetime: at ?? ''}, at ? fmtTime(at) : ''), h('span', null, text));
}
