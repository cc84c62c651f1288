// One job: status, progress bar and ETA, loss and metric curves drawing live, timeline, checkpoints, stop.

import {allProgress, api} from '../api.js';
import {LineChart} from '../chart.js';
import {
  ago, coalesce, failure, fmtBytes, fmtDuration, fmtInt, fmtTime, h, put, refreshTimes, shortId,
} from '../dom.js';
import {ProgressHistory, evolve, isActive, newer, progressOf, sampleOf} from '../model.js';
import {heading, kindLabel, progressBar, statusBadge} from './common.js';
import {Results} from './results.js';
import {timeline} from './timeline.js';

export function mount(root, {args: [jobId], ctx}) {
  let job = null;
  const events = new Map(); // seq → timeline entry
  const checkpoints = new Map(); // seq → checkpoint
  const history = new ProgressHistory();
  let loaded = false;
  let stopping = false;

  const head = h('div', {class: 'page-head'}, heading('Job ', h('code', null, shortId(jobId))));
  const actions = h('div', {class: 'actions'});
  const progressBox = h('section', {class: 'card', 'aria-labelledby': 'progress-h'});
  const charts = h('div', {class: 'charts'});
  const chartNote = h('p', {class: 'muted'});
  const metricPick = h('select', {id: 'metric-pick', onchange: () => drawCharts()});
  const picker = h('span', {class: 'metric-pick', hidden: true}, h('label', {for: 'metric-pick'}, 'Show '), metricPick);
  const lossChart = new LineChart({title: 'Loss', allowLog: true});
  const metricChart = new LineChart({title: 'Metric', control: picker});
  const curves = h('section', {class: 'card', 'aria-labelledby': 'curves-h'}, h('h2', {id: 'curves-h'}, 'Curves'),
    chartNote, charts);
  const results = new Results(jobId);
  const timelineBox = h('div');
  const checkpointsBox = h('div');
  const detailsBox = h('div');
  const message = h('div', {role: 'status', class: 'message'});
  const body = h('div', {class: 'job-body', hidden: true},
    progressBox,
    curves,
    results.element,
    h('div', {class: 'two-col'},
      h('section', {class: 'card', 'aria-labelledby': 'timeline-h'}, h('h2', {id: 'timeline-h'}, 'Timeline'), timelineBox),
      h('section', {class: 'card', 'aria-labelledby': 'ckpt-h'}, h('h2', {id: 'ckpt-h'}, 'Checkpoints'), checkpointsBox)),
    h('section', {class: 'card', 'aria-labelledby': 'details-h'}, h('h2', {id: 'details-h'}, 'Details'), detailsBox));
  const loading = h('p', {class: 'muted'}, 'Loading…');
  root.append(h('p', {class: 'crumbs'}, h('a', {href: '#/jobs'}, '← All jobs')), head, actions, message, loading, body);

  function drawHead() {
    head.replaceChildren(heading(`${kindLabel(job.kind)}: ${job.workload} `, h('code', {title: job.id}, shortId(job.id))),
      statusBadge(job.status));
    document.title = `${job.workload} ${shortId(job.id)} · ${job.status} · stoker`;
    const stop = h('button', {type: 'button', class: 'danger needs-operator', onclick: () => confirmStop(true),
      disabled: stopping || job.stop_requested}, job.stop_requested ? 'Stopping…' : 'Stop job');
    const evaluate = job.kind === 'train' && job.checkpoints > 0
      ? h('a', {class: 'button secondary needs-operator',
        href: `#/new?kind=eval&checkpoint_of=${job.id}&workload=${encodeURIComponent(evalWorkload(job.workload))}`},
      'Evaluate newest checkpoint') : null;
    actions.replaceChildren(...[isActive(job) ? stop : null, evaluate].filter(Boolean));
  }

  function confirmStop(ask) {
    if (!ask) { drawHead(); actions.querySelector('button')?.focus(); return; }
    actions.replaceChildren(h('div', {class: 'confirm', role: 'group', 'aria-label': 'Confirm stop'},
      h('span', null, 'Stop this job? A running job saves a checkpoint first.'),
      h('button', {type: 'button', class: 'danger', onclick: stop}, 'Yes, stop it'),
      h('button', {type: 'button', class: 'secondary', onclick: () => confirmStop(false)}, 'Keep running')));
    actions.querySelector('button').focus();
  }

  async function stop() {
    stopping = true;
    drawHead();
    try {
      await api(`/jobs/${jobId}/stop`, {method: 'POST'});
      message.textContent = 'Stop requested.';
    } catch (error) {
      stopping = false;
      drawHead();
      message.replaceChildren(failure(error));
    }
  }

  function drawProgress() {
    const rows = history.list();
    const p = progressOf(job, rows[rows.length - 1], rows);
    const unit = job.kind === 'eval' ? 'episodes' : 'iterations';
    const elapsed = job.started_at
      ? ((job.finished_at ? Date.parse(job.finished_at) : Date.now()) - Date.parse(job.started_at)) / 1000 : null;
    const facts = [];
    if (p.remaining != null) facts.push(`about ${fmtDuration(p.remaining)} left`);
    if (p.perSecond) facts.push(`${Number(p.perSecond.toPrecision(3))} ${unit}/s`);
    if (elapsed != null) facts.push(`${job.finished_at ? 'ran' : 'running'} for ${fmtDuration(elapsed)}`);
    put(progressBox,
      h('h2', {id: 'progress-h'}, 'Progress'),
      progressBar(p, {label: `Progress of ${job.workload}`, running: job.status === 'running'}),
      h('p', {class: 'progress-line'},
        p.total ? `${fmtInt(p.done)} of ${fmtInt(p.total)} ${unit}` : `${fmtInt(p.done)} ${unit}`,
        facts.length ? ` · ${facts.join(' · ')}` : ''),
      h('p', {class: 'muted small'}, `Attempt ${job.attempt}`, job.worker_id ? ` on worker ${job.worker_id}` : '',
        job.requeues ? ` · requeued ${job.requeues} time${job.requeues === 1 ? '' : 's'}` : ''),
      job.error ? h('p', {class: 'notice error'}, job.error) : null);
  }

  function drawCharts() {
    const names = history.seriesNames();
    const shown = [];
    if (names.loss) {
      lossChart.set(...history.series('loss'));
      shown.push(lossChart.element);
    }
    if (names.metrics.length) {
      const current = metricPick.value || (names.metrics.includes('score') ? 'score' : names.metrics[0]);
      if (metricPick.options.length !== names.metrics.length) {
        metricPick.replaceChildren(...names.metrics.map((n) => h('option', {value: n, selected: n === current}, n)));
      }
      metricPick.value = current;
      metricChart.setTitle(current);
      metricChart.set(...history.series(current));
      shown.push(metricChart.element);
    }
    picker.hidden = names.metrics.length < 2;
    chartNote.textContent = shown.length ? '' : history.list().length
      ? 'This workload reports no loss or metrics.' : 'No progress reported yet.';
    curves.hidden = job.kind === 'eval' && !shown.length; // its results say more than an empty chart
    if (charts.children.length !== shown.length) charts.replaceChildren(...shown);
  }

  function drawTimeline() {
    const entries = [...events.values()].sort((a, b) => a.seq - b.seq);
    timelineBox.replaceChildren(timeline(entries));
  }

  function drawCheckpoints() {
    const list = [...checkpoints.values()].sort((a, b) => b.seq - a.seq);
    if (!list.length) { checkpointsBox.replaceChildren(h('p', {class: 'muted'}, 'No checkpoints yet.')); return; }
    const shown = list.slice(0, 50);
    put(checkpointsBox, h('div', {class: 'table-wrap'}, h('table', {class: 'data'},
      h('caption', {class: 'visually-hidden'}, 'Checkpoints, newest first'),
      h('thead', null, h('tr', null, ['Iteration', 'Attempt', 'Size', 'Saved'].map((t) => h('th', {scope: 'col'}, t)))),
      h('tbody', null, shown.map((c) => h('tr', {title: `${c.name} · sha256 ${c.sha256}`},
        h('td', null, fmtInt(c.iteration)), h('td', null, c.attempt), h('td', null, fmtBytes(c.size)),
        h('td', null, ago(c.checkpointed_at))))))),
    list.length > shown.length ? h('p', {class: 'muted small'}, `and ${list.length - shown.length} older`) : null);
  }

  function drawDetails() {
    const rows = [
      ['Job id', h('code', null, job.id)], ['Kind', kindLabel(job.kind)], ['Workload', job.workload],
      ['Submitted', fmtTime(job.submitted_at)], ['Started', fmtTime(job.started_at)],
      ['Finished', fmtTime(job.finished_at)], ['Priority', job.priority], ['GPUs', job.gpus],
      ['Retries allowed', job.max_retries], ['Timeout', job.timeout_s ? fmtDuration(job.timeout_s) : 'none'],
    ];
    if (job.checkpoint_of) rows.push(['Evaluates', h('a', {href: `#/job/${job.checkpoint_of}`}, shortId(job.checkpoint_of))]);
    if (job.labels?.length) rows.push(['Labels', job.labels.join(', ')]);
    rows.push(['Parameters', h('pre', null, JSON.stringify(job.params ?? {}, null, 2))]);
    if (job.result) rows.push(['Result', h('pre', null, JSON.stringify(job.result, null, 2))]);
    detailsBox.replaceChildren(h('dl', {class: 'facts'}, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])));
  }

  const drawLive = coalesce(() => { if (job) { drawProgress(); drawCharts(); } });

  function drawAll() {
    drawHead();
    drawProgress();
    drawCharts();
    drawTimeline();
    drawCheckpoints();
    drawDetails();
  }

  async function load() {
    try {
      const [row, timelineReply, checkpointReply] = await Promise.all([
        api(`/jobs/${jobId}`), api(`/jobs/${jobId}/events`), api(`/jobs/${jobId}/checkpoints`)]);
      job = newer(job, row);
      for (const e of timelineReply.events) events.set(e.seq, e);
      // Events that came live while the row was being read may be newer than the row: fold them in.
      for (const e of [...events.values()].sort((a, b) => a.seq - b.seq)) {
        job = evolve(job, {seq: e.seq, event_type: e.type, event: e.event}) ?? job;
      }
      for (const c of checkpointReply.checkpoints) checkpoints.set(c.seq, c);
      const {samples} = await allProgress(jobId, 0);
      for (const sample of samples) history.add(sample);
      loaded = true;
      loading.remove();
      body.hidden = false;
      if (job.kind === 'eval') results.load();
      drawAll();
    } catch (error) {
      if (error.status === 401) return;
      loading.replaceChildren(failure(error.status === 404 ? new Error(`There is no job ${jobId}.`) : error, load));
    }
  }

  function onMessage({detail: msg}) {
    if (msg.id !== jobId) return;
    if (msg.type === 'event') {
      if (events.has(msg.seq)) return;
      events.set(msg.seq, {seq: msg.seq, time: msg.time, type: msg.event_type, event: msg.event});
      if (msg.event_type === 'JobCheckpointed') {
        const e = msg.event;
        checkpoints.set(msg.seq, {seq: msg.seq, attempt: e.attempt, iteration: e.iteration, name: e.name,
          sha256: e.sha256, size: e.size, checkpointed_at: e.checkpointed_at});
      }
      const next = evolve(job, msg);
      if (!next) return;
      job = next;
      stopping = stopping && isActive(job);
      if (!loaded) return;
      drawAll();
      if (job.kind === 'eval' && !isActive(job)) results.load();
    } else if (msg.type === 'progress') {
      if (history.add(sampleOf(msg)) && loaded) drawLive();
    } else if (msg.type === 'episode') {
      results.episode(msg.data);
    }
  }

  function onSynced({detail}) {
    if (detail.topics.includes(`job:${jobId}`) && (!detail.complete || !loaded)) load();
  }

  ctx.live.addEventListener('message', onMessage);
  ctx.live.addEventListener('synced', onSynced);
  const release = ctx.live.want([`job:${jobId}`]);
  const ticker = setInterval(() => {
    if (job && isActive(job)) drawProgress();
    refreshTimes(root);
  }, 1000);
  load();
  return () => {
    release();
    clearInterval(ticker);
    lossChart.destroy();
    metricChart.destroy();
    results.destroy();
    ctx.live.removeEventListener('message', onMessage);
    ctx.live.removeEventListener('synced', onSynced);
  };
}

/** The evaluation workload that goes with a training workload (`2048` → `2048-eval`), as the API pairs them. */
export const evalWorkload = (workload) => (workload.endsWith('-eval') ? workload : `${workload}-eval`);
