// "Open on your phone": the dashboard's LAN address with a short-lived viewer sign-in, as a QR code. A new
// address (the `network` topic, after discovery records the change) draws a new code at once.

import {api} from '../api.js';
import {failure, fmtTime, h} from '../dom.js';
import {heading} from './common.js';

function qrImage(svg) {
  // As an image, never as markup: whatever the text holds, nothing in it runs.
  const withNs = svg.replace('<svg ', '<svg xmlns="http://www.w3.org/2000/svg" ');
  return h('img', {class: 'qr', src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(withNs)}`,
    alt: 'QR code of the dashboard link for your phone', width: 240, height: 240});
}

function addressList(addresses) {
  return h('ul', {class: 'plain addresses'}, addresses.map((a) => h('li', {dataset: {skipped: a.skipped || ''}},
    h('code', null, a.address), ` on ${a.interface}`, a.skipped ? h('span', {class: 'muted'}, ` (skipped: ${a.skipped})`) : '')));
}

function panel(link) {
  if (!link.url) {
    return h('section', {class: 'card phone', dataset: {state: 'none'}},
      h('p', null, 'No phone link: ', link.reason), link.addresses.length ? addressList(link.addresses) : '');
  }
  return h('section', {class: 'card phone', dataset: {state: 'ready', preferred: link.preferred || ''}},
    h('p', null, 'Scan this with the phone’s camera (same Wi-Fi or LAN as this machine). It signs in as a viewer.'),
    qrImage(link.svg),
    h('dl', {class: 'facts'},
      h('dt', null, 'Address'), h('dd', null, h('code', {class: 'phone-url'}, link.url.split('#')[0])),
      h('dt', null, 'Link works until'), h('dd', null, link.expires_at ? fmtTime(link.expires_at) : '—'),
      h('dt', null, 'Address since'), h('dd', null, link.changed_at ? fmtTime(link.changed_at) : '—'),
      h('dt', null, 'All addresses'), h('dd', null, addressList(link.addresses))),
    h('p', {class: 'muted'}, 'If this machine’s address changes, this code is redrawn here; a phone that used the '
      + 'old address needs the new code (a browser cannot look the platform up on the LAN).'));
}

export function mount(root, {ctx}) {
  const body = h('div', {role: 'status', class: 'list-status'}, 'Loading…');
  root.append(h('div', {class: 'page-head'}, heading('Open on your phone')), body);

  const show = (link) => body.replaceChildren(panel(link));

  async function load() {
    try {
      show(await api('/network/qr'));
    } catch (error) {
      if (error.status !== 401) body.replaceChildren(failure(error, load));
    }
  }

  function onMessage({detail: msg}) {
    if (msg.type === 'network') show(msg);
  }

  ctx.live.addEventListener('message', onMessage);
  const release = ctx.live.want(['network']);
  load();
  return () => {
    release();
    ctx.live.removeEventListener('message', onMessage);
  };
}
