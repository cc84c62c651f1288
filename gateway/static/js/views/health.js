// The health strip: the platform's own health (NATS, streams, services, read-model lag), refreshed while visible.

import {api} from '../api.js';
import {fmtInt, h} from '../dom.js';
import {notifyNew} from './notify.js';

const PERIOD_MS = 15000;

function item(ok, text, title) {
  return h('li', {class: ok ? 'ok' : 'bad', title}, h('span', {class: 'dot', 'aria-hidden': 'true'}),
    text, h('span', {class: 'visually-hidden'}, ok ? ' (fine)' : ' (not fine)'));
}

function render(strip, report) {
  const lag = Math.max(0, ...report.projections.map((p) => p.lag));
  const items = [
    h('li', {class: `overall ${report.state}`}, `Platform ${report.state}`),
    item(report.nats.connected, 'NATS', report.nats.url ?? ''),
    ...report.services.map((s) => item(s.up, s.name, s.up ? `${s.instances} instance(s), ${s.versions.join(', ')}`
      : 'not answering')),
    item(lag < 100, `read models ${lag ? `${fmtInt(lag)} behind` : 'current'}`,
      report.projections.map((p) => `${p.name}: ${p.lag} behind`).join(', ')),
    item(report.store.ok, report.store.dialect, report.store.error ?? ''),
    h('li', {class: report.open_alerts ? 'bad alerts' : 'ok alerts'}, h('span', {class: 'dot', 'aria-hidden': 'true'}),
      h('a', {href: '#/alerts'}, report.open_alerts ? `${fmtInt(report.open_alerts)} open alert(s)` : 'no open alerts')),
  ];
  notifyNew(report.alerts ?? []);
  strip.replaceChildren(h('ul', null, items));
}

/** Keep the strip current until the returned function is called. */
export function startHealth(strip) {
  let timer = 0;
  let stopped = false;
  async function tick() {
    clearTimeout(timer);
    if (stopped) return;
    if (document.visibilityState !== 'hidden') {
      try {
        render(strip, await api('/health', {accept: [503]}));
      } catch (error) {
        strip.replaceChildren(h('ul', null, h('li', {class: 'overall down'}, 'Gateway unreachable')));
      }
    }
    if (!stopped) timer = setTimeout(tick, PERIOD_MS);
  }
  const wake = () => { if (document.visibilityState === 'visible') tick(); };
  document.addEventListener('visibilitychange', wake);
  strip.hidden = false;
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener('visibilitychange', wake);
    strip.hidden = true;
    strip.replaceChildren();
  };
}
