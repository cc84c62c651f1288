// A workload's declared parameters (GET /api/v1/workloads) as form inputs; only the values changed are sent.

import {h} from '../dom.js';

/** The workload an evaluation of `name` runs where it is offered (`2048` → `2048-eval`), else `name`. */
export function runName(name, kind, offered) {
  if (kind !== 'eval' || name.endsWith('-eval')) return name;
  return offered.has(`${name}-eval`) ? `${name}-eval` : name;
}

function inputFor(param) {
  const id = `p-${param.name}`;
  const base = {id, name: param.name, dataset: {param: param.name, type: param.type}};
  if (param.type.startsWith('boolean')) {
    return h('input', {...base, type: 'checkbox', checked: param.default === true});
  }
  if (param.enum) {
    return h('select', base, h('option', {value: ''}, `default (${param.default ?? 'none'})`),
      param.enum.map((v) => h('option', {value: JSON.stringify(v)}, String(v))));
  }
  const numeric = /^(integer|number)/.test(param.type);
  const attrs = {...base, type: numeric ? 'number' : 'text', placeholder: param.default ?? '', autocomplete: 'off'};
  if (numeric) {
    attrs.step = param.type.startsWith('integer') ? 1 : 'any';
    attrs.inputmode = param.type.startsWith('integer') ? 'numeric' : 'decimal';
    if (param.minimum != null) attrs.min = param.minimum;
    if (param.maximum != null) attrs.max = param.maximum;
  }
  return h('input', attrs);
}

/** A fieldset with one labelled input per declared parameter, its default as the placeholder. */
export function paramFields(workload) {
  if (!workload?.params?.length) {
    return h('p', {class: 'muted small', id: 'declared-none'},
      workload ? `${workload.name} declares no parameters: give any as JSON below.`
        : 'No worker offers this workload (yet): its parameters are not known.');
  }
  return h('fieldset', {class: 'params', id: 'declared-params'},
    h('legend', null, `Parameters of ${workload.name}`),
    workload.params.map((p) => {
      const input = inputFor(p);
      const hint = `${p.description || p.name}${p.default != null ? ` (default ${p.default})` : ''}`;
      return h('div', {class: 'field'}, h('label', {for: input.id}, p.name), input,
        h('small', {class: 'muted'}, hint));
    }));
}

/** The parameters the user set in `root`'s declared inputs (a checkbox only when it differs from the default). */
export function changedParams(root, workload) {
  const out = {};
  for (const p of workload?.params ?? []) {
    const el = root.querySelector(`[data-param="${CSS.escape(p.name)}"]`);
    if (!el) continue;
    if (el.type === 'checkbox') {
      if (el.checked !== (p.default === true)) out[p.name] = el.checked;
    } else if (el.value !== '') {
      if (el.tagName === 'SELECT') out[p.name] = JSON.parse(el.value);
      else if (/^(integer|number)/.test(p.type)) out[p.name] = Number(el.value);
      else out[p.name] = el.value;
    }
  }
  return out;
}
