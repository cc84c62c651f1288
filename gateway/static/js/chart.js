// Our own SVG charts: line charts of thousands of points (downsampled per pixel column, spikes kept), with
// axes, ticks, a pointer read-out and a data table for those who do not read pictures; and a histogram.

import {fmtInt, fmtNum, h, s} from './dom.js';

const HEIGHT = 220;
const MARGIN = {top: 10, right: 14, bottom: 30, left: 58};

/** Round tick values (1, 2 or 5 times a power of ten) covering [min, max]. */
export function ticks(min, max, count = 5) {
  if (!Number.isFinite(min) || !Number.isFinite(max)) return [];
  if (max <= min) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / magnitude;
  const step = (norm >= 7.5 ? 10 : norm >= 3.5 ? 5 : norm >= 1.5 ? 2 : 1) * magnitude;
  const out = [];
  for (let v = Math.ceil(min / step - 1e-9) * step; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * At most about 4 points per bucket of the x range: the first, lowest, highest and last of each, in order,
 * so that a drawn line looks exactly like the full one at this width. Null values are left out.
 */
export function downsample(xs, ys, buckets) {
  const outX = [];
  const outY = [];
  const n = xs.length;
  if (n <= buckets * 4) {
    for (let i = 0; i < n; i += 1) if (ys[i] != null) { outX.push(xs[i]); outY.push(ys[i]); }
    return [outX, outY];
  }
  const x0 = xs[0];
  const width = (xs[n - 1] - x0) / buckets || 1;
  let i = 0;
  while (i < n) {
    const bucket = Math.floor((xs[i] - x0) / width);
    let first = -1; let last = -1; let lo = -1; let hi = -1;
    for (; i < n && Math.floor((xs[i] - x0) / width) === bucket; i += 1) {
      if (ys[i] == null) continue;
      if (first < 0) first = i;
      last = i;
      if (lo < 0 || ys[i] < ys[lo]) lo = i;
      if (hi < 0 || ys[i] > ys[hi]) hi = i;
    }
    if (first < 0) continue;
    for (const k of [...new Set([first, lo, hi, last])].sort((a, b) => a - b)) { outX.push(xs[k]); outY.push(ys[k]); }
  }
  return [outX, outY];
}

function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

function padded([lo, hi]) {
  if (lo === hi) return lo === 0 ? [-1, 1] : [lo - Math.abs(lo) * 0.1, hi + Math.abs(hi) * 0.1];
  const pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}

let chartCount = 0;

/** A line chart of one series over iterations; `set(xs, ys)` as often as you like, it draws once per frame. */
export class LineChart {
  constructor({title, unit = '', xLabel = 'iteration', allowLog = false, control = null}) {
    chartCount += 1;
    const id = `chart-${chartCount}`;
    this.title = title;
    this.xLabel = xLabel;
    this.unit = unit;
    this.log = false;
    this.xs = [];
    this.ys = [];
    this.summary = h('span', {class: 'chart-summary', id: `${id}-summary`});
    this.svg = s('svg', {role: 'img', 'aria-labelledby': `${id}-title ${id}-summary`, class: 'chart-svg'});
    this.table = h('div', {class: 'table-wrap'});
    const details = h('details', {class: 'chart-data', ontoggle: () => this.fillTable(details.open)},
      h('summary', null, 'Data as a table'), this.table);
    const logBox = allowLog ? h('label', {class: 'chart-log'},
      h('input', {type: 'checkbox', onchange: (e) => { this.log = e.target.checked; this.schedule(); }}),
      ' log scale') : null;
    this.element = h('figure', {class: 'chart'},
      h('figcaption', null, h('strong', {id: `${id}-title`}, title), ' ', this.summary, logBox, control),
      this.svg, details);
    this.details = details;
    this.pending = false;
    this.observer = new ResizeObserver(() => this.schedule());
    this.observer.observe(this.svg);
    this.svg.addEventListener('pointermove', (e) => this.point(e));
    this.svg.addEventListener('pointerleave', () => this.hideMarker());
  }

  setTitle(title) {
    this.title = title;
    this.element.querySelector('figcaption strong').textContent = title;
  }

  set(xs, ys) {
    this.xs = xs;
    this.ys = ys;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  destroy() {
    this.observer.disconnect();
  }

  draw() {
    const width = Math.max(200, Math.round(this.svg.clientWidth || this.svg.parentElement?.clientWidth || 600));
    const plotW = width - MARGIN.left - MARGIN.right;
    const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
    this.svg.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
    const useLog = this.log && this.ys.every((v) => v == null || v > 0);
    const values = useLog ? this.ys.map((v) => (v == null ? null : Math.log10(v))) : this.ys;
    const [xs, ys] = downsample(this.xs, values, Math.max(50, Math.floor(plotW)));
    this.drawn = {xs, ys};
    this.updateSummary();
    if (!xs.length) {
      this.svg.replaceChildren(s('text', {x: width / 2, y: HEIGHT / 2, class: 'chart-empty', 'text-anchor': 'middle'},
        'No data yet'));
      return;
    }
    const [x0, x1] = xs.length > 1 ? [xs[0], xs[xs.length - 1]] : [xs[0] - 1, xs[0] + 1];
    const [y0, y1] = padded(extent(ys));
    const px = (x) => MARGIN.left + ((x - x0) / (x1 - x0)) * plotW;
    const py = (y) => MARGIN.top + (1 - (y - y0) / (y1 - y0)) * plotH;
    this.scale = {px, py, x0, x1};
    const grid = [];
    for (const t of ticks(y0, y1, 4)) {
      const y = py(t);
      grid.push(s('line', {x1: MARGIN.left, x2: width - MARGIN.right, y1: y, y2: y, class: 'grid'}));
      grid.push(s('text', {x: MARGIN.left - 6, y: y + 4, 'text-anchor': 'end', class: 'tick'},
        useLog ? fmtNum(10 ** t) : fmtNum(t)));
    }
    for (const t of ticks(x0, x1, Math.max(2, Math.floor(plotW / 90)))) {
      if (t !== Math.round(t) && x1 - x0 > 10) continue;
      const x = px(t);
      if (x < MARGIN.left + 16) continue; // would collide with the axis label
      grid.push(s('line', {x1: x, x2: x, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 5, class: 'axis'}));
      grid.push(s('text', {x, y: HEIGHT - 10, 'text-anchor': 'middle', class: 'tick'}, fmtInt(t)));
    }
    let d = '';
    for (let i = 0; i < xs.length; i += 1) d += `${i ? 'L' : 'M'}${px(xs[i]).toFixed(1)} ${py(ys[i]).toFixed(1)}`;
    const line = s('path', {d, class: 'line'});
    const single = xs.length === 1 ? s('circle', {cx: px(xs[0]), cy: py(ys[0]), r: 3, class: 'dot'}) : null;
    this.marker = s('g', {class: 'marker', visibility: 'hidden'},
      s('circle', {r: 4}), s('rect', {height: 20, rx: 3}), s('text', {y: 0}));
    this.svg.replaceChildren(
      s('line', {x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: MARGIN.top + plotH, class: 'axis'}),
      s('line', {x1: MARGIN.left, x2: width - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH,
        class: 'axis'}),
      ...grid, line, single, this.marker,
      s('text', {x: MARGIN.left - 6, y: HEIGHT - 10, 'text-anchor': 'end', class: 'axis-label'}, this.xLabel));
    if (this.details.open) this.fillTable(true);
  }

  updateSummary() {
    const xs = this.xs;
    const n = this.ys.filter((v) => v != null).length;
    if (!n) { this.summary.textContent = 'no values reported yet'; return; }
    let lastI = -1; let lowI = -1; let highI = -1;
    this.ys.forEach((v, i) => {
      if (v == null) return;
      lastI = i;
      if (lowI < 0 || v < this.ys[lowI]) lowI = i;
      if (highI < 0 || v > this.ys[highI]) highI = i;
    });
    this.summary.textContent = `latest ${fmtNum(this.ys[lastI])} at iteration ${fmtInt(xs[lastI])}; ` +
      `lowest ${fmtNum(this.ys[lowI])}, highest ${fmtNum(this.ys[highI])}; ${fmtInt(n)} points`;
  }

  fillTable(open) {
    if (!open) return;
    // A readable number of rows: the drawn points thinned to at most 100, in the original units.
    const [xs, ys] = downsample(this.xs, this.ys, 25);
    const step = Math.max(1, Math.ceil(xs.length / 100));
    const rows = [];
    for (let i = 0; i < xs.length; i += step) rows.push(h('tr', null, h('td', null, fmtInt(xs[i])), h('td', null, fmtNum(ys[i]))));
    this.table.replaceChildren(h('table', {class: 'data'},
      h('thead', null, h('tr', null, h('th', {scope: 'col'}, this.xLabel), h('th', {scope: 'col'}, this.title))),
      h('tbody', null, rows)));
  }

  point(event) {
    if (!this.drawn?.xs.length || !this.scale || !this.marker) return;
    const box = this.svg.getBoundingClientRect();
    const width = Number(this.svg.viewBox.baseVal.width) || box.width;
    const x = ((event.clientX - box.left) / box.width) * width;
    const {xs, ys} = this.drawn;
    const target = this.scale.x0 + ((x - MARGIN.left) / (width - MARGIN.left - MARGIN.right)) * (this.scale.x1 - this.scale.x0);
    let lo = 0;
    let hi = xs.length - 1;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (xs[mid] < target) lo = mid + 1; else hi = mid; }
    if (lo > 0 && Math.abs(xs[lo - 1] - target) < Math.abs(xs[lo] - target)) lo -= 1;
    const cx = this.scale.px(xs[lo]);
    const cy = this.scale.py(ys[lo]);
    const value = this.log ? 10 ** ys[lo] : ys[lo];
    const [circle, rect, text] = this.marker.children;
    circle.setAttribute('cx', cx);
    circle.setAttribute('cy', cy);
    text.textContent = `${fmtInt(xs[lo])}: ${fmtNum(value)}`;
    const textW = text.textContent.length * 7 + 10;
    const left = Math.min(Math.max(cx - textW / 2, MARGIN.left), width - MARGIN.right - textW);
    const top = cy > 40 ? cy - 30 : cy + 10;
    rect.setAttribute('x', left);
    rect.setAttribute('y', top);
    rect.setAttribute('width', textW);
    text.setAttribute('x', left + 5);
    text.setAttribute('y', top + 14);
    this.marker.setAttribute('visibility', 'visible');
  }

  hideMarker() {
    this.marker?.setAttribute('visibility', 'hidden');
  }
}

/** Bins of equal width over the values' range (Sturges' rule, at most 30). */
export function bins(values) {
  if (!values.length) return [];
  const [lo, hi] = extent(values);
  if (lo === hi) return [{from: lo, to: hi, count: values.length}];
  const k = Math.min(30, Math.ceil(Math.log2(values.length)) + 1);
  const width = (hi - lo) / k;
  const out = Array.from({length: k}, (_, i) => ({from: lo + i * width, to: lo + (i + 1) * width, count: 0}));
  for (const v of values) out[Math.min(k - 1, Math.floor((v - lo) / width))].count += 1;
  return out;
}

/** A histogram figure of `values` (e.g. evaluation scores). */
export function histogram(values, {title, label}) {
  const groups = bins(values);
  const width = 640;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const top = Math.max(1, ...groups.map((g) => g.count));
  const py = (c) => MARGIN.top + (1 - c / top) * plotH;
  const bar = plotW / Math.max(1, groups.length);
  const parts = [];
  for (const t of ticks(0, top, 4)) {
    if (t !== Math.round(t)) continue;
    parts.push(s('line', {x1: MARGIN.left, x2: width - MARGIN.right, y1: py(t), y2: py(t), class: 'grid'}));
    parts.push(s('text', {x: MARGIN.left - 6, y: py(t) + 4, 'text-anchor': 'end', class: 'tick'}, fmtInt(t)));
  }
  groups.forEach((g, i) => {
    const x = MARGIN.left + i * bar;
    parts.push(s('rect', {x: x + 1, y: py(g.count), width: Math.max(1, bar - 2), height: MARGIN.top + plotH - py(g.count),
      class: 'bar'}, s('title', null, `${fmtNum(g.from)} to ${fmtNum(g.to)}: ${g.count}`)));
    if (groups.length <= 12 || i % Math.ceil(groups.length / 8) === 0) {
      parts.push(s('text', {x, y: HEIGHT - 10, 'text-anchor': 'middle', class: 'tick'}, fmtNum(g.from)));
    }
  });
  if (groups.length > 1) {
    parts.push(s('text', {x: MARGIN.left + groups.length * bar, y: HEIGHT - 10, 'text-anchor': 'end', class: 'tick'},
      fmtNum(groups[groups.length - 1].to)));
  }
  const peak = groups.reduce((best, g) => (g.count > best.count ? g : best), {count: -1});
  const summary = values.length
    ? `${fmtInt(values.length)} values; most (${peak.count}) between ${fmtNum(peak.from)} and ${fmtNum(peak.to)}`
    : 'no values yet';
  chartCount += 1;
  const id = `chart-${chartCount}`;
  return h('figure', {class: 'chart'},
    h('figcaption', null, h('strong', {id: `${id}-title`}, title), ' ', h('span', {id: `${id}-summary`}, summary)),
    s('svg', {viewBox: `0 0 ${width} ${HEIGHT}`, role: 'img', 'aria-labelledby': `${id}-title ${id}-summary`,
      class: 'chart-svg'},
      s('line', {x1: MARGIN.left, x2: width - MARGIN.right, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH, class: 'axis'}),
      ...parts),
    h('details', {class: 'chart-data'}, h('summary', null, 'Data as a table'),
      h('div', {class: 'table-wrap'}, h('table', {class: 'data'},
        h('thead', null, h('tr', null, h('th', {scope: 'col'}, label), h('th', {scope: 'col'}, 'count'))),
        h('tbody', null, groups.map((g) => h('tr', null,
          h('td', null, `${fmtNum(g.from)} – ${fmtNum(g.to)}`), h('td', null, fmtInt(g.count)))))))));
}

/**
 * A sparkline: a small SVG line of one series over time, 0..max on the y axis (percentages by default),
 * with a text alternative as its accessible name. `points` are [time in ms, value or null].
 */
export function sparkline(points, {label, max = 100, width = 160, height = 32}) {
  const [xs, ys] = downsample(points.map((p) => p[0]), points.map((p) => p[1]), width / 2);
  const svg = s('svg', {class: 'spark', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
    'aria-label': xs.length ? `${label}: ${ys.length} samples from ${fmtNum(Math.min(...ys))} to ${fmtNum(Math.max(...ys))}, `
      + `now ${fmtNum(ys[ys.length - 1])}` : `${label}: no samples yet`, preserveAspectRatio: 'none'});
  if (xs.length < 2) return svg;
  const x0 = xs[0];
  const span = xs[xs.length - 1] - x0 || 1;
  const at = (i) => `${((xs[i] - x0) / span * width).toFixed(1)},${(height - 1 - Math.max(0, Math.min(max, ys[i])) / max * (height - 2)).toFixed(1)}`;
  svg.append(s('polyline', {points: xs.map((_, i) => at(i)).join(' '), fill: 'none', 'vector-effect': 'non-scaling-stroke'}));
  return svg;
}
