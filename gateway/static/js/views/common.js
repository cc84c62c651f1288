// Pieces several views show: status badges, progress bars, the page heading.

import {fmtInt, fmtPercent, h} from '../dom.js';

const LABELS = {timed_out: 'timed out'};

export function statusBadge(status) {
  return h('span', {class: `badge status-${status}`}, LABELS[status] ?? status);
}

export const kindLabel = (kind) => (kind === 'eval' ? 'Evaluation' : 'Training');

/** A labelled progress bar; an unknown fraction shows an indeterminate bar only while the job runs. */
export function progressBar({fraction, done, total}, {label, running = false}) {
  const text = fraction == null ? (running ? 'running' : '—') : fmtPercent(fraction);
  const bar = h('progress', {max: 1, 'aria-label': label, dataset: {fraction: fraction ?? ''}});
  if (fraction != null) bar.value = fraction;
  else if (!running) bar.value = 0;
  const title = total ? `${fmtInt(done)} of ${fmtInt(total)}` : null;
  return h('span', {class: 'progress', title}, bar, h('span', {class: 'progress-text'}, text));
}

/** The view's heading, focused after navigation so screen readers announce the new page. */
export function heading(text, ...extra) {
  return h('h1', {tabindex: '-1'}, text, ...extra);
}
