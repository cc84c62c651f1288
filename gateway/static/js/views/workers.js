// The workers page: each machine's state, hardware, load and the jobs it runs, kept live by heartbeats.

import {api} from '../api.js';
import {ago, debounce, failure, fmtInt, h, refreshTimes, shortId} from '../dom.js';
import {heading} from './common.js';

/** A 0–100 % meter with its figure (also the hosts page's). */
export function meter(label, percent) {
  if (percent == null) return h('span', {class: 'muted'}, '—');
  const value = Math.max(0, Math.min(100, percent));
  return h('span', {class: 'meter-wrap'},
    h('meter', {min: 0, max: 100, low: 70, high: 90, optimum: 0, value, 'aria-label': label}),
    h('span', null, `${Math.round(value)}%`));
}

function card(worker) {
  const gpus = worker.gpus.length
    ? worker.gpus.map((g) => `${g.name} (${fmtInt(g.memory_mb / 1024)} GB)`).join(', ') : 'none';
  const running = worker.running_jobs.length
    ? h('ul', {class: 'plain'}, worker.running_jobs.map((id) => h('li', null,
      h('a', {href: `#/job/${id}`}, h('code', {title: id}, shortId(id))))))
    : h('span', {class: 'muted'}, 'idle');
  return h('article', {class: 'card worker', dataset: {worker: worker.id, status: worker.status}},
    h('header', {class: 'worker-head'},
      h('h2', null, worker.hostname, ' ', h('code', {class: 'small'}, worker.id)),
      h('span', {class: `badge worker-${worker.status}`}, worker.status)),
    h('dl', {class: 'facts'},
      h('dt', null, 'GPUs'), h('dd', null, gpus),
      h('dt', null, 'CPU'), h('dd', null, `${worker.cpu_cores} cores `, meter(`CPU load of ${worker.hostname}`, worker.cpu_percent)),
      h('dt', null, 'Memory'), h('dd', null, `${fmtInt(worker.ram_mb / 1024)} GB `,
        meter(`Memory use of ${worker.hostname}`, worker.memory_percent)),
      h('dt', null, 'Slots'), h('dd', null, worker.free_slots == null ? `${worker.slots}`
        : `${worker.free_slots} free of ${worker.slots}`),
      h('dt', null, 'Running'), h('dd', null, running),
      h('dt', null, 'Last seen'), h('dd', null, worker.last_seen ? ago(worker.last_seen) : '—'),
      h('dt', null, 'Addresses'), h('dd', null, worker.addresses.join(', ') || '—'),
      h('dt', null, 'Labels'), h('dd', null, worker.labels.join(', ') || '—'),
      h('dt', null, 'Version'), h('dd', null, worker.version)));
}

export function mount(root, {ctx}) {
  const workers = new Map();
  let loaded = false;
  const list = h('div', {class: 'workers'});
  const status = h('div', {role: 'status', class: 'list-status'}, 'Loading…');
  root.append(h('div', {class: 'page-head'}, heading('Workers')), status, list);

  function draw() {
    const all = [...workers.values()].sort((a, b) => (a.status === b.status ? a.id.localeCompare(b.id)
      : a.status === 'healthy' ? -1 : b.status === 'healthy' ? 1 : a.status.localeCompare(b.status)));
    list.replaceChildren(...all.map(card));
    const healthy = all.filter((w) => w.status === 'healthy').length;
    status.textContent = all.length ? `${healthy} of ${all.length} workers healthy`
      : 'No workers yet. `stoker up` starts one here; `stoker worker --nats …` adds another machine.';
  }

  async function load() {
    try {
      const reply = await api('/workers');
      workers.clear();
      for (const w of reply.items) workers.set(w.id, w);
      loaded = true;
      draw();
    } catch (error) {
      if (error.status !== 401) status.replaceChildren(failure(error, load));
    }
  }
  const reload = debounce(load, 300);

  function onMessage({detail: msg}) {
    if (msg.type === 'heartbeat') {
      const w = workers.get(msg.id);
      if (!w) { reload(); return; }
      const beat = msg.data;
      workers.set(w.id, {...w, last_seen: beat.at, free_slots: beat.free_slots, cpu_percent: beat.cpu_percent,
        memory_percent: beat.memory_percent, running_jobs: [...beat.running]});
      draw();
    } else if (msg.type === 'event' && msg.aggregate === 'worker') {
      reload(); // registration, loss, return: the REST view has the whole record
    }
  }

  function onSynced({detail}) {
    if (detail.topics.includes('workers') && (!detail.complete || !loaded)) load();
  }

  ctx.live.addEventListener('message', onMessage);
  ctx.live.addEventListener('synced', onSynced);
  const release = ctx.live.want(['workers']);
  const ticker = setInterval(() => refreshTimes(list), 1000);
  load();
  return () => {
    release();
    clearInterval(ticker);
    ctx.live.removeEventListener('message', onMessage);
    ctx.live.removeEventListener('synced', onSynced);
  };
}
