// The form that starts a training or an evaluation run (POST /api/v1/jobs, idempotent per form): the workload's
// declared parameters as fields (GET /api/v1/workloads), a map picked or uploaded (/api/v1/maps), and for an
// evaluation the training run and which of its checkpoints.

import {api} from '../api.js';
import {fmtBytes, h, shortId} from '../dom.js';
import {heading} from './common.js';
import {changedParams, paramFields, runName} from './params.js';

const WORKLOADS = ['2048', 'noop', 'sleep']; // until the workers' offer has loaded

function field(id, label, input, hint) {
  input.id = id;
  if (hint) input.setAttribute('aria-describedby', `${id}-hint`);
  return h('div', {class: 'field'}, h('label', {for: id}, label), input,
    hint ? h('small', {id: `${id}-hint`, class: 'muted'}, hint) : null);
}

const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);

export function mount(root, {params, ctx}) {
  let key = newKey(); // the same key on a resubmit (a double click, a retry) gives the same job
  let kind = params.get('kind') === 'eval' ? 'eval' : 'train';
  const error = h('div', {role: 'alert', class: 'form-error'});
  const checkpointList = h('datalist', {id: 'trained-jobs'});
  const input = {
    workload: h('input', {name: 'workload', required: true, list: 'workloads', autocomplete: 'off',
      value: params.get('workload') ?? (kind === 'eval' ? '2048-eval' : '2048'), pattern: '[A-Za-z0-9_.:\\-]+'}),
    iterations: h('input', {name: 'max_iterations', type: 'number', min: 1, step: 1, value: 1000, inputmode: 'numeric'}),
    checkpoint: h('input', {name: 'checkpoint_of', list: 'trained-jobs', autocomplete: 'off',
      value: params.get('checkpoint_of') ?? '', pattern: '[A-Za-z0-9_\\-]{1,64}'}),
    episodes: h('input', {name: 'episodes', type: 'number', min: 1, step: 1, value: 20, inputmode: 'numeric'}),
    params: h('textarea', {name: 'params', rows: 3, spellcheck: 'false', placeholder: '{"learning_rate": 0.001}'}),
    strict: h('input', {name: 'strict_params', type: 'checkbox', checked: true}),
    map: h('select', {name: 'map_id'}, h('option', {value: ''}, 'No map')),
    mapFile: h('input', {name: 'file', type: 'file'}),
    mapName: h('input', {name: 'map_name', autocomplete: 'off', maxlength: 200}),
    chosen: h('select', {name: 'checkpoint_ref'}, h('option', {value: ''}, 'Its newest good checkpoint')),
    priority: h('input', {name: 'priority', type: 'number', step: 1, value: 0}),
    gpus: h('input', {name: 'gpus', type: 'number', min: 0, step: 1, value: 0}),
    retries: h('input', {name: 'max_retries', type: 'number', min: 0, step: 1, value: 0}),
  };
  const trainFields = h('div', null, field('f-iterations', 'Iterations', input.iterations));
  const evalFields = h('div', null,
    field('f-checkpoint', 'Training run to evaluate', input.checkpoint, 'A training run with checkpoints.'),
    field('f-chosen', 'Checkpoint', input.chosen, 'Its newest, or one of its stored checkpoints by name.'),
    field('f-episodes', 'Episodes', input.episodes));
  let offers = new Map(); // workload name -> GET /api/v1/workloads entry
  let checkpoints = []; // of the chosen training run
  const declared = h('div', {class: 'declared'});
  const mapStatus = h('small', {role: 'status', class: 'muted'});
  const uploadButton = h('button', {type: 'button', class: 'secondary', onclick: uploadMap}, 'Upload map');
  const mapFields = h('fieldset', {class: 'maps'}, h('legend', null, 'Map'),
    field('f-map', 'Map', input.map, 'A file the run needs (a level, a config, a data shard); the workload reads it.'),
    h('details', null, h('summary', null, 'Upload a map'),
      field('f-map-file', 'Map file', input.mapFile),
      field('f-map-name', 'Map name (optional)', input.mapName, 'Shown in lists; the file name when empty.'),
      uploadButton, mapStatus));
  const submit = h('button', {type: 'submit'});
  const radios = ['train', 'eval'].map((k) => h('label', {class: 'radio'},
    h('input', {type: 'radio', name: 'kind', value: k, checked: k === kind, onchange: () => setKind(k)}),
    k === 'train' ? ' Training' : ' Evaluation'));
  const form = h('form', {class: 'card form', novalidate: true, onsubmit: send},
    h('fieldset', null, h('legend', null, 'Kind of run'), radios),
    field('f-workload', 'Workload', input.workload, 'A registered workload, such as 2048, noop or sleep.'),
    h('datalist', {id: 'workloads'}, [...WORKLOADS, '2048-eval'].map((w) => h('option', {value: w}))),
    checkpointList, trainFields, evalFields, declared, mapFields,
    field('f-params', 'Parameters (JSON, optional)', input.params, 'More parameters; these win over the fields.'),
    field('f-strict', 'Check parameters', input.strict,
      'Refuse parameters the workload does not declare (off: strict_params false).'),
    h('details', null, h('summary', null, 'More options'),
      field('f-priority', 'Priority', input.priority, 'Higher runs first.'),
      field('f-gpus', 'GPUs', input.gpus),
      field('f-retries', 'Retries after a failure', input.retries)),
    error, submit);
  root.append(h('div', {class: 'page-head'}, heading('New run')),
    h('p', {class: 'viewer-only notice'}, 'This is a viewer token: it can watch, but not start or stop runs.'),
    h('div', {class: 'needs-operator'}, form));

  function setKind(next) {
    kind = next;
    trainFields.hidden = kind !== 'train';
    evalFields.hidden = kind !== 'eval';
    submit.textContent = kind === 'train' ? 'Start training' : 'Start evaluation';
    if (kind === 'eval' && !input.workload.value.endsWith('-eval')) input.workload.value = `${input.workload.value}-eval`;
    if (kind === 'train' && input.workload.value.endsWith('-eval')) input.workload.value = input.workload.value.slice(0, -5);
    showParams();
  }

  /** The declared parameters of what this run would run (2048-eval for an evaluation of 2048). */
  function current() {
    const name = input.workload.value.trim();
    return offers.get(runName(name, kind, new Set(offers.keys()))) ?? offers.get(name) ?? null;
  }

  function showParams() {
    declared.replaceChildren(offers.size ? paramFields(current()) : '');
  }

  async function loadMaps(select) {
    const reply = await api('/maps');
    input.map.replaceChildren(h('option', {value: ''}, 'No map'), ...reply.maps.map((m) =>
      h('option', {value: m.id}, `${m.name} (${m.filename}, ${fmtBytes(m.size_bytes)})`)));
    if (select != null) input.map.value = String(select);
  }

  async function uploadMap() {
    const file = input.mapFile.files?.[0];
    if (!file) { mapStatus.textContent = 'Choose a file first.'; return; }
    const data = new FormData();
    data.append('file', file);
    if (input.mapName.value.trim()) data.append('name', input.mapName.value.trim());
    uploadButton.disabled = true;
    mapStatus.textContent = 'Uploading…';
    try {
      const map = await api('/maps/upload', {method: 'POST', body: data});
      await loadMaps(map.id);
      mapStatus.textContent = `Uploaded ${map.name} (map ${map.id}).`;
    } catch (problem) {
      mapStatus.textContent = problem.message;
    } finally {
      uploadButton.disabled = false;
    }
  }

  async function loadCheckpoints() {
    const id = input.checkpoint.value.trim();
    checkpoints = [];
    input.chosen.replaceChildren(h('option', {value: ''}, 'Its newest good checkpoint'));
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) return;
    try {
      checkpoints = (await api(`/jobs/${id}/checkpoints`)).checkpoints;
    } catch { return; }
    input.chosen.append(...[...checkpoints].reverse().map((c) =>
      h('option', {value: c.name}, `${c.name} (iteration ${c.iteration})`)));
  }

  function body() {
    const values = {kind, workload: input.workload.value.trim(), idempotency_key: key};
    const fromFields = changedParams(declared, current());
    const text = input.params.value.trim();
    let parsed = {};
    if (text) {
      try { parsed = JSON.parse(text); } catch { throw new Error('Parameters must be JSON, like {"learning_rate": 0.001}.'); }
      if (typeof parsed !== 'object' || Array.isArray(parsed) || parsed === null) throw new Error('Parameters must be a JSON object.');
    }
    if (text || Object.keys(fromFields).length) values.params = {...fromFields, ...parsed};
    if (!input.strict.checked) values.strict_params = false;
    if (input.map.value) values.map_id = Number(input.map.value);
    for (const [name, el] of [['priority', input.priority], ['gpus', input.gpus], ['max_retries', input.retries]]) {
      if (el.value !== '') values[name] = Number(el.value);
    }
    if (kind === 'train') {
      if (input.iterations.value) values.max_iterations = Number(input.iterations.value);
    } else {
      values.checkpoint_of = input.checkpoint.value.trim();
      values.episodes = Number(input.episodes.value);
      const ref = checkpoints.find((c) => c.name === input.chosen.value);
      if (ref) values.checkpoint_ref = {name: ref.name, sha256: ref.sha256, size: ref.size, iteration: ref.iteration};
      if (!values.checkpoint_of) throw new Error('Choose the training run whose checkpoint to evaluate.');
    }
    for (const el of [...Object.values(input), ...declared.querySelectorAll('input')]) {
      if (!el.closest('[hidden]') && !el.checkValidity()) throw new Error(`${el.labels?.[0]?.textContent ?? el.name}: ${el.validationMessage}`);
    }
    return values;
  }

  async function send(event) {
    event.preventDefault();
    error.replaceChildren();
    let values;
    try { values = body(); } catch (problem) { error.textContent = problem.message; return; }
    submit.disabled = true;
    try {
      const job = await api('/jobs', {method: 'POST', body: values});
      key = newKey();
      ctx.navigate(`#/job/${job.id}`);
    } catch (problem) {
      const extra = Array.isArray(problem.body?.extra) ? problem.body.extra.map((x) => x.message ?? JSON.stringify(x)) : [];
      error.replaceChildren(h('p', null, problem.message), ...extra.map((t) => h('p', {class: 'small'}, t)));
    } finally {
      submit.disabled = false;
    }
  }

  // Offer the training runs that have checkpoints as choices for an evaluation.
  api('/jobs?kind=train&limit=100').then((page) => {
    checkpointList.replaceChildren(...page.items.filter((j) => j.checkpoints > 0).map((j) =>
      h('option', {value: j.id}, `${j.workload} ${shortId(j.id)} (${j.status}, ${j.checkpoints} checkpoints)`)));
  }).catch(() => {});
  // What the workers offer: the workload choices and each one's declared parameters.
  api('/workloads').then((reply) => {
    offers = new Map(reply.workloads.map((w) => [w.name, w]));
    const names = reply.workloads.map((w) => w.name);
    if (names.length) form.querySelector('#workloads').replaceChildren(...names.map((w) => h('option', {value: w})));
    showParams();
  }).catch(() => {});
  loadMaps(params.get('map_id')).catch(() => {});
  input.workload.addEventListener('input', showParams);
  input.checkpoint.addEventListener('change', loadCheckpoints);
  if (input.checkpoint.value) loadCheckpoints();
  setKind(kind);
  return () => {};
}
