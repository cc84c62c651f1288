// The jobs page: a live table of jobs, filtered by status and kind, a page at a time.

import {api} from '../api.js';
import {ago, coalesce, failure, h, refreshTimes, shortId} from '../dom.js';
import {ACTIVE, evolve, isActive, newer, progressOf} from '../model.js';
import {heading, kindLabel, progressBar, statusBadge} from './common.js';

const FILTERS = [
  ['all', 'All', []],
  ['active', 'Active', ACTIVE],
  ['running', 'Running', ['running', 'stopping']],
  ['queued', 'Queued', ['queued', 'assigned']],
  ['completed', 'Completed', ['completed']],
  ['failed', 'Failed', ['failed', 'timed_out']],
  ['stopped', 'Stopped', ['stopped']],
];
const KINDS = [['', 'All kinds'], ['train', 'Training'], ['eval', 'Evaluation']];
const PAGE = 50;

const link = (status, kind) => `#/jobs?status=${status}${kind ? `&kind=${kind}` : ''}`;

export function mount(root, {params, ctx}) {
  const filter = FILTERS.find(([key]) => key === params.get('status')) ?? FILTERS[0];
  const kind = KINDS.some(([key]) => key === params.get('kind')) ? params.get('kind') : '';
  const jobs = new Map();
  const progress = new Map(); // job id → latest progress sample
  const rows = new Map(); // job id → <tr>
  let cursor = null;
  let loaded = false;

  const tbody = h('tbody');
  const status = h('div', {class: 'list-status', role: 'status'});
  const more = h('button', {type: 'button', class: 'secondary', hidden: true, onclick: () => load(false)}, 'Load more');
  const table = h('table', {class: 'jobs cards'},
    h('caption', {class: 'visually-hidden'}, `${filter[1]} jobs, newest first`),
    h('thead', null, h('tr', null, ['Job', 'Status', 'Progress', 'Worker', 'Submitted']
      .map((name) => h('th', {scope: 'col'}, name)))),
    tbody);
  const kindSelect = h('select', {id: 'kind-filter', onchange: (e) => ctx.navigate(link(filter[0], e.target.value))},
    KINDS.map(([key, label]) => h('option', {value: key, selected: key === kind}, label)));
  root.append(
    h('div', {class: 'page-head'}, heading('Jobs'),
      h('a', {href: '#/new', class: 'button needs-operator'}, 'New run')),
    h('div', {class: 'filters'},
      h('nav', {'aria-label': 'Filter by status'}, h('ul', {class: 'chips'}, FILTERS.map(([key, label]) => h('li', null,
        h('a', {href: link(key, kind), 'aria-current': key === filter[0] ? 'page' : null}, label))))),
      h('label', {for: 'kind-filter', class: 'visually-hidden'}, 'Kind'), kindSelect),
    h('div', {class: 'table-wrap'}, table), status, more);

  const matches = (job) => (!filter[2].length || filter[2].includes(job.status)) && (!kind || job.kind === kind);

  function row(job) {
    const known = progress.get(job.id);
    const bar = progressBar(progressOf(job, known), {label: `Progress of ${job.workload} ${shortId(job.id)}`,
      running: job.status === 'running'});
    return [
      h('td', {'data-label': 'Job'},
        h('a', {href: `#/job/${job.id}`, class: 'job-link'}, h('span', {class: 'workload'}, job.workload), ' ',
          h('code', {title: job.id}, shortId(job.id))),
        h('div', {class: 'muted small'}, kindLabel(job.kind))),
      h('td', {'data-label': 'Status'}, statusBadge(job.status)),
      h('td', {'data-label': 'Progress'}, bar),
      h('td', {'data-label': 'Worker'}, job.worker_id ? h('code', null, job.worker_id) : '—'),
      h('td', {'data-label': 'Submitted'}, ago(job.submitted_at)),
    ];
  }

  function draw(job) {
    let tr = rows.get(job.id);
    if (!tr) {
      tr = h('tr', {dataset: {job: job.id}});
      rows.set(job.id, tr);
    }
    tr.dataset.status = job.status;
    tr.replaceChildren(...row(job));
    return tr;
  }

  function redraw() {
    const ordered = [...jobs.values()].sort((a, b) => (b.submitted_at.localeCompare(a.submitted_at) || b.id.localeCompare(a.id)));
    tbody.replaceChildren(...ordered.map(draw));
    table.hidden = !ordered.length;
    status.textContent = ordered.length ? '' : loaded ? 'No jobs here yet. Start one with New run, stoker submit or the REST API.' : 'Loading…';
  }

  const dirty = new Set();
  const flush = coalesce(() => {
    for (const id of dirty) if (jobs.has(id)) draw(jobs.get(id));
    dirty.clear();
  });

  async function load(reset) {
    const query = new URLSearchParams({limit: String(PAGE)});
    for (const s of filter[2]) query.append('status', s);
    if (kind) query.set('kind', kind);
    if (!reset && cursor) query.set('cursor', cursor);
    try {
      const page = await api(`/jobs?${query}`);
      for (const job of page.items) jobs.set(job.id, newer(jobs.get(job.id), job));
      cursor = page.next_cursor;
      loaded = true;
      more.hidden = !cursor;
      redraw();
      lookUpProgress(page.items);
    } catch (error) {
      if (error.status === 401) return;
      status.replaceChildren(failure(error, () => load(reset)));
    }
  }

  // A running job's row carries its newest progress report (GET /api/v1/jobs): no status call per row.
  function lookUpProgress(items) {
    for (const job of items) {
      const p = job.progress;
      if (!p || progress.has(job.id)) continue;
      progress.set(job.id, {seq: 0, iteration: p.iteration, total: p.total});
      dirty.add(job.id);
    }
    flush();
  }

  function onMessage({detail: message}) {
    if (message.type === 'event' && message.aggregate === 'job') {
      const before = jobs.get(message.id);
      const after = evolve(before, message);
      if (!after || after === before) return;
      if (!before && !matches(after)) return;
      jobs.set(after.id, after);
      if (!before) redraw(); else { dirty.add(after.id); flush(); }
    } else if (message.type === 'progress' && jobs.has(message.id)) {
      const last = progress.get(message.id);
      if (!last || message.seq > last.seq) progress.set(message.id, {seq: message.seq, ...message.data});
      dirty.add(message.id);
      flush();
    }
  }

  function onSynced({detail}) {
    const ours = detail.topics.includes('jobs') || detail.topics.includes('progress');
    if (ours && (!detail.complete || !loaded)) load(true);
  }

  ctx.live.addEventListener('message', onMessage);
  ctx.live.addEventListener('synced', onSynced);
  const release = ctx.live.want(['jobs', 'progress']);
  const ticker = setInterval(() => refreshTimes(tbody), 1000);
  redraw();
  load(true);
  return () => {
    release();
    clearInterval(ticker);
    ctx.live.removeEventListener('message', onMessage);
    ctx.live.removeEventListener('synced', onSynced);
  };
}
