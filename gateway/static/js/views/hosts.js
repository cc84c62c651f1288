// The hosts page: a card per machine a monitor samples, with live CPU, memory, disk and GPU figures and
// sparklines of the last hour (GET /api/v1/hosts, read again every 10 s while the page is open).

import {api} from '../api.js';
import {sparkline} from '../chart.js';
import {ago, failure, fmtBytes, h, refreshTimes} from '../dom.js';
import {heading} from './common.js';
import {meter} from './workers.js';

const PERIOD_MS = 10000;
const STALE_S = 60; // no sample for this long: the card says the host is silent

function series(history, key) {
  return history.map((p) => [Date.parse(p.at), p[key]]);
}

function figure(name, label, percent, history, key, extra = '') {
  return [h('dt', null, name),
    h('dd', null, meter(`${label}`, percent), extra ? h('span', {class: 'muted'}, ` ${extra}`) : '',
      sparkline(series(history, key), {label: `${label}, last hour`}))];
}

function gpuLines(summary) {
  if (!summary.gpus.length) return h('span', {class: 'muted'}, summary.gpu_note || 'no GPU');
  return h('ul', {class: 'plain'}, summary.gpus.map((g) => h('li', {dataset: {gpu: String(g.index)}},
    `${g.index}: ${g.name || 'GPU'} `, meter(`GPU ${g.index} utilisation`, g.utilization_percent),
    h('span', {class: 'muted'}, ` mem ${g.memory_percent == null ? '—' : `${Math.round(g.memory_percent)}%`}`
      + ` · ${g.temperature_c == null ? '—' : `${Math.round(g.temperature_c)} °C`}`
      + `${g.power_w == null ? '' : ` · ${Math.round(g.power_w)} W`}`))));
}

function card({summary, sample, history}) {
  const silent = summary.age_s > STALE_S;
  const disk = summary.disk_path ? `${summary.disk_path}${summary.disk_full_in_h != null
    ? `, full in ~${Math.round(summary.disk_full_in_h)} h` : ''}` : '';
  const busiest = [...sample.processes].sort((a, b) => b.cpu_percent - a.cpu_percent).slice(0, 3);
  return h('article', {class: 'card host', dataset: {host: summary.host_id, state: silent ? 'silent' : 'live'}},
    h('header', {class: 'worker-head'},
      h('h2', null, summary.hostname || summary.host_id, ' ', h('code', {class: 'small'}, summary.host_id)),
      h('span', {class: `badge ${silent ? 'worker-lost' : 'worker-healthy'}`}, silent ? 'silent' : 'live')),
    h('dl', {class: 'facts'},
      figure('CPU', `CPU of ${summary.host_id}`, summary.cpu_percent, history, 'cpu',
        summary.load.length ? `load ${summary.load.map((x) => x.toFixed(2)).join(' ')}` : ''),
      figure('Memory', `Memory of ${summary.host_id}`, summary.memory_percent, history, 'memory',
        `swap ${Math.round(summary.swap_percent)}%`),
      figure('Disk', `Fullest disk of ${summary.host_id}`, summary.disk_percent, history, 'disk', disk),
      h('dt', null, 'GPUs'), h('dd', null, gpuLines(summary),
        summary.gpus.length ? sparkline(series(history, 'gpu'), {label: `Busiest GPU of ${summary.host_id}, last hour`}) : ''),
      h('dt', null, 'Processes'), h('dd', null, busiest.length ? h('ul', {class: 'plain'}, busiest.map((p) => h('li', null,
        `${p.name} (${p.pid}) ${Math.round(p.cpu_percent)}% CPU, ${fmtBytes(p.rss_bytes)}`))) : '—'),
      h('dt', null, 'Sampled'), h('dd', null, ago(summary.sampled_at))));
}

export function mount(root) {
  const list = h('div', {class: 'workers hosts'});
  const status = h('div', {role: 'status', class: 'list-status'}, 'Loading…');
  root.append(h('div', {class: 'page-head'}, heading('Hosts')), status, list);
  let timer = 0;
  let stopped = false;

  async function load() {
    clearTimeout(timer);
    try {
      const reply = await api('/hosts?history_s=3600');
      list.replaceChildren(...reply.items.map(card));
      const silent = reply.items.filter((v) => v.summary.age_s > STALE_S).length;
      status.textContent = reply.items.length
        ? `${reply.items.length} host(s) sampled${silent ? `, ${silent} silent` : ''}`
        : 'No host samples yet: `stoker up` and `stoker worker` run a monitor on their machine.';
    } catch (error) {
      if (error.status !== 401) status.replaceChildren(failure(error, load));
    }
    if (!stopped) timer = setTimeout(load, PERIOD_MS);
  }

  const ticker = setInterval(() => refreshTimes(list), 1000);
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(ticker);
  };
}
