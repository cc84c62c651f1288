// Small DOM and formatting helpers shared by every view: no framework, just functions.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(key === 'className' ? 'class' : key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/jobs'}, 'Jobs'). Text children are never parsed as HTML. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** Replace an element's children; null and false children are left out, as in `h`. */
export function put(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

const integer = new Intl.NumberFormat(undefined, {maximumFractionDigits: 0});
const percent = new Intl.NumberFormat(undefined, {style: 'percent', maximumFractionDigits: 0});

export const fmtInt = (n) => (n == null ? '—' : integer.format(n));
export const fmtPercent = (fraction) => percent.format(fraction);

/** A number with about four significant digits, in a form that stays short. */
export function fmtNum(n) {
  if (n == null || Number.isNaN(n)) return '—';
  const abs = Math.abs(n);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return n.toExponential(2);
  return Number(n.toPrecision(4)).toLocaleString(undefined, {maximumFractionDigits: 6});
}

/** Seconds as "45 s", "3 min 20 s", "2 h 5 min", "3 d 4 h". */
export function fmtDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '—';
  const t = Math.max(0, Math.round(seconds));
  if (t < 60) return `${t} s`;
  if (t < 3600) return `${Math.floor(t / 60)} min${t % 60 ? ` ${t % 60} s` : ''}`;
  if (t < 86400) return `${Math.floor(t / 3600)} h${t % 3600 >= 60 ? ` ${Math.floor((t % 3600) / 60)} min` : ''}`;
  return `${Math.floor(t / 86400)} d ${Math.floor((t % 86400) / 3600)} h`;
}

/** "12 s ago", "3 min ago"; for anything older than a day the date itself. */
export function fmtAgo(iso, now = Date.now()) {
  if (!iso) return '—';
  const ms = now - Date.parse(iso);
  if (ms < 5000) return 'just now';
  if (ms < 86400000) return `${fmtDuration(ms / 1000).split(' ').slice(0, 2).join(' ')} ago`;
  return fmtTime(iso);
}

export function fmtTime(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, {dateStyle: 'medium', timeStyle: 'medium'}) : '—';
}

export function fmtBytes(n) {
  if (n == null) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** The end of an id: ULIDs start with their timestamp, so the tail is what tells two apart. */
export const shortId = (id) => (id && id.length > 10 ? `…${id.slice(-8)}` : id ?? '');

/** A <time> element showing a relative time, refreshed by `refreshTimes`. */
export function ago(iso) {
  return h('time', {datetime: iso ?? '', title: fmtTime(iso), dataset: {ago: iso ?? ''}}, fmtAgo(iso));
}

export function refreshTimes(root) {
  const now = Date.now();
  for (const el of root.querySelectorAll('time[data-ago]')) {
    if (el.dataset.ago) el.textContent = fmtAgo(el.dataset.ago, now);
  }
}

/** Call `fn` at most once per animation frame, however often it is asked for (live bursts). */
export function coalesce(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; fn(); });
  };
}

/** Call `fn` once things have been quiet for `ms`. */
export function debounce(fn, ms) {
  let timer = 0;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

/** A message area for a failed load, with a retry button. */
export function failure(error, retry) {
  return h('div', {class: 'notice error', role: 'alert'},
    h('p', null, error?.message ?? String(error)),
    retry ? h('button', {type: 'button', onclick: retry}, 'Try again') : null);
}
