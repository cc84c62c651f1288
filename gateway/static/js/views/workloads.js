// The workloads page: what the registered workers offer, and the parameters each workload declares.

import {api} from '../api.js';
import {failure, h} from '../dom.js';
import {heading} from './common.js';

function paramTable(workload) {
  if (!workload.params.length) return h('p', {class: 'muted'}, 'Declares no parameters: its params are not checked.');
  return h('table', {class: 'params-table'},
    h('caption', {class: 'visually-hidden'}, `Parameters of ${workload.name}`),
    h('thead', null, h('tr', null, ['Parameter', 'Type', 'Default', 'Description'].map((t) => h('th', {scope: 'col'}, t)))),
    h('tbody', null, workload.params.map((p) => h('tr', {dataset: {param: p.name}},
      h('th', {scope: 'row'}, h('code', null, p.name)), h('td', null, p.type),
      h('td', null, p.default == null ? '—' : JSON.stringify(p.default)), h('td', null, p.description || '')))));
}

function card(workload) {
  const who = `${workload.healthy_workers} healthy of ${workload.workers.length} worker${workload.workers.length === 1 ? '' : 's'}`;
  const start = workload.evaluation_of
    ? h('a', {class: 'needs-operator', href: `#/new?kind=eval&workload=${encodeURIComponent(workload.evaluation_of)}`}, 'Evaluate…')
    : h('a', {class: 'needs-operator', href: `#/new?workload=${encodeURIComponent(workload.name)}`}, 'Train…');
  return h('article', {class: 'card workload', dataset: {workload: workload.name}},
    h('header', {class: 'worker-head'}, h('h2', null, workload.name), h('span', {class: 'muted small'}, who)),
    workload.evaluation_of ? h('p', {class: 'small'}, `Runs the evaluations of ${workload.evaluation_of}.`) : null,
    paramTable(workload), start);
}

export function mount(root) {
  const list = h('div', {class: 'workloads'});
  const status = h('div', {role: 'status', class: 'list-status'}, 'Loading…');
  root.append(h('div', {class: 'page-head'}, heading('Workloads')), status, list);

  async function load() {
    try {
      const reply = await api('/workloads');
      list.replaceChildren(...reply.workloads.map(card));
      status.textContent = reply.total ? `${reply.total} workloads offered`
        : 'No workloads offered yet: a worker lists its workloads when it registers.';
    } catch (error) {
      if (error.status !== 401) status.replaceChildren(failure(error, load));
    }
  }
  load();
  return () => {};
}
