// The alerts page: open and resolved alerts, newest first, each with what to do (GET /api/v1/alerts?all=true,
// read again every 10 s), and the switch for desktop notifications of new ones.

import {api} from '../api.js';
import {ago, failure, h, refreshTimes, shortId} from '../dom.js';
import {heading} from './common.js';
import {askNotifications, notificationsOn, notificationsSupported, stopNotifications} from './notify.js';

const PERIOD_MS = 10000;

function target(alert) {
  if (alert.target_kind === 'job') {
    return h('a', {href: `#/job/${alert.target}`}, 'job ', h('code', {title: alert.target}, shortId(alert.target)));
  }
  return h('span', null, 'host ', h('code', null, alert.target));
}

function item(alert) {
  const value = alert.value == null ? '' : ` (value ${alert.value}, threshold ${alert.threshold})`;
  return h('li', {class: `card alert alert-${alert.status}`, dataset: {alert: alert.id, rule: alert.rule}},
    h('h3', null, h('span', {class: `badge ${alert.status === 'open' ? 'worker-lost' : 'worker-healthy'}`}, alert.status),
      ' ', alert.rule, ' on ', target(alert)),
    h('p', null, alert.message, value),
    h('p', {class: 'muted'}, 'raised ', ago(alert.raised_at),
      alert.resolved_at ? [' · resolved ', ago(alert.resolved_at), ` (${alert.reason})`] : ''),
    alert.status === 'open' ? h('p', {class: 'advice'}, h('strong', null, 'What to do: '), alert.advice) : '');
}

function notifyControl() {
  const box = h('p', {class: 'notify'});
  const draw = () => {
    if (!notificationsSupported()) { box.replaceChildren('This browser cannot show notifications.'); return; }
    if (notificationsOn()) {
      box.replaceChildren('Desktop notifications of new alerts are on while the dashboard is open. ',
        h('button', {type: 'button', class: 'link', onclick: () => { stopNotifications(); draw(); }}, 'Turn off'));
    } else if (Notification.permission === 'denied') {
      box.replaceChildren('Notifications are blocked for this site in the browser\'s settings.');
    } else {
      box.replaceChildren(h('button', {type: 'button', id: 'notify-on',
        onclick: async () => { await askNotifications(); draw(); }}, 'Notify me of new alerts on this device'));
    }
  };
  draw();
  return box;
}

export function mount(root) {
  const open = h('ul', {class: 'plain alerts', 'aria-label': 'Open alerts'});
  const resolved = h('ul', {class: 'plain alerts', 'aria-label': 'Resolved alerts'});
  const status = h('div', {role: 'status', class: 'list-status'}, 'Loading…');
  const openHead = h('h2', null, 'Open');
  const resolvedHead = h('h2', null, 'Resolved');
  root.append(h('div', {class: 'page-head'}, heading('Alerts')), notifyControl(), status, openHead, open,
    resolvedHead, resolved);
  let timer = 0;
  let stopped = false;

  async function load() {
    clearTimeout(timer);
    try {
      const {items} = await api('/alerts?all=true&limit=200');
      const current = items.filter((a) => a.status === 'open');
      open.replaceChildren(...(current.length ? current.map(item) : [h('li', {class: 'muted'}, 'No open alerts.')]));
      resolved.replaceChildren(...items.filter((a) => a.status !== 'open').map(item));
      openHead.textContent = `Open (${current.length})`;
      resolvedHead.textContent = `Resolved (${items.length - current.length})`;
      status.textContent = items.length ? '' : 'No alerts yet. Rules are set in [monitor] of stoker.toml.';
    } catch (error) {
      if (error.status !== 401) status.replaceChildren(failure(error, load));
    }
    if (!stopped) timer = setTimeout(load, PERIOD_MS);
  }

  const ticker = setInterval(() => refreshTimes(root), 1000);
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(ticker);
  };
}
