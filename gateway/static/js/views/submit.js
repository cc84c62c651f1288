// The form that starts a training or an evaluation run (POST /api/v1/jobs, idempotent per form).

import {api} from '../api.js';
import {h, shortId} from '../dom.js';
import {heading} from './common.js';

const WORKLOADS = ['2048', 'noop', 'sleep'];

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
    params: h('textarea', {name: 'params', rows: 3, spellcheck: 'false', placeholder: '{"lr": 0.001}'}),
    priority: h('input', {name: 'priority', type: 'number', step: 1, value: 0}),
    gpus: h('input', {name: 'gpus', type: 'number', min: 0, step: 1, value: 0}),
    retries: h('input', {name: 'max_retries', type: 'number', min: 0, step: 1, value: 0}),
  };
  const trainFields = h('div', null, field('f-iterations', 'Iterations', input.iterations));
  const evalFields = h('div', null,
    field('f-checkpoint', 'Training run to evaluate', input.checkpoint, 'Its newest checkpoint is evaluated.'),
    field('f-episodes', 'Episodes', input.episodes));
  const submit = h('button', {type: 'submit'});
  const radios = ['train', 'eval'].map((k) => h('label', {class: 'radio'},
    h('input', {type: 'radio', name: 'kind', value: k, checked: k === kind, onchange: () => setKind(k)}),
    k === 'train' ? ' Training' : ' Evaluation'));
  const form = h('form', {class: 'card form', novalidate: true, onsubmit: send},
    h('fieldset', null, h('legend', null, 'Kind of run'), radios),
    field('f-workload', 'Workload', input.workload, 'A registered workload, such as 2048, noop or sleep.'),
    h('datalist', {id: 'workloads'}, [...WORKLOADS, '2048-eval'].map((w) => h('option', {value: w}))),
    checkpointList, trainFields, evalFields,
    field('f-params', 'Parameters (JSON, optional)', input.params, 'Hyper-parameters passed to the workload.'),
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
  }

  function body() {
    const values = {kind, workload: input.workload.value.trim(), idempotency_key: key};
    const text = input.params.value.trim();
    if (text) {
      let parsed;
      try { parsed = JSON.parse(text); } catch { throw new Error('Parameters must be JSON, like {"lr": 0.001}.'); }
      if (typeof parsed !== 'object' || Array.isArray(parsed) || parsed === null) throw new Error('Parameters must be a JSON object.');
      values.params = parsed;
    }
    for (const [name, el] of [['priority', input.priority], ['gpus', input.gpus], ['max_retries', input.retries]]) {
      if (el.value !== '') values[name] = Number(el.value);
    }
    if (kind === 'train') {
      if (input.iterations.value) values.max_iterations = Number(input.iterations.value);
    } else {
      values.checkpoint_of = input.checkpoint.value.trim();
      values.episodes = Number(input.episodes.value);
      if (!values.checkpoint_of) throw new Error('Choose the training run whose checkpoint to evaluate.');
    }
    for (const el of Object.values(input)) {
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
  setKind(kind);
  return () => {};
}
