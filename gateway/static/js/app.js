// The dashboard's entry point: sign-in, the one live connection, the connection banner, and hash routing.

import {api, onUnauthorized} from './api.js';
import {clearToken, currentToken, setToken, takeTokenFromUrl} from './auth.js';
import {h} from './dom.js';
import {Live} from './live.js';
import * as alertsView from './views/alerts.js';
import {startHealth} from './views/health.js';
import * as hostsView from './views/hosts.js';
import * as jobView from './views/job.js';
import * as jobsView from './views/jobs.js';
import {renderLogin} from './views/login.js';
import * as phoneView from './views/phone.js';
import * as submitView from './views/submit.js';
import * as workersView from './views/workers.js';
import * as workloadsView from './views/workloads.js';

const ROUTES = [
  [/^\/jobs$/, jobsView],
  [/^\/job\/([A-Za-z0-9_-]{1,64})$/, jobView],
  [/^\/workers$/, workersView],
  [/^\/hosts$/, hostsView],
  [/^\/alerts$/, alertsView],
  [/^\/new$/, submitView],
  [/^\/phone$/, phoneView],
  [/^\/workloads$/, workloadsView],
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const banner = document.getElementById('conn');
const healthStrip = document.getElementById('health');
const signOutButton = document.getElementById('signout');

let live = null;
let unmount = null;
let stopHealth = null;
let bannerTimer = 0;

const ctx = {
  get live() { return live; },
  navigate(hash) { location.hash = hash; },
};

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/jobs';
  const [path, query = ''] = raw.split('?');
  return {path, params: new URLSearchParams(query)};
}

function route() {
  if (!live) return;
  unmount?.();
  unmount = null;
  const {path, params} = parseHash();
  for (const [pattern, view] of ROUTES) {
    const match = path.match(pattern);
    if (!match) continue;
    document.title = 'stoker';
    main.replaceChildren();
    unmount = view.mount(main, {args: match.slice(1), params, ctx});
    for (const a of nav.querySelectorAll('a')) {
      const section = a.getAttribute('href').slice(1);
      a.toggleAttribute('aria-current', path === section || (section === '/jobs' && path.startsWith('/job/')));
      if (a.hasAttribute('aria-current')) a.setAttribute('aria-current', 'page');
    }
    main.querySelector('h1')?.focus({preventScroll: true});
    return;
  }
  location.replace('#/jobs');
}

function showBanner({state, retryAt}) {
  clearInterval(bannerTimer);
  banner.dataset.state = state;
  const say = (text, detail = '') => banner.replaceChildren(h('span', {class: 'dot', 'aria-hidden': 'true'}), text,
    detail ? h('span', {class: 'countdown', 'aria-hidden': 'true'}, detail) : '');
  if (state === 'live') say('Live');
  else if (state === 'connecting') say('Connecting…');
  else if (state === 'reconnecting') say('Reconnecting…');
  else if (state === 'offline') say('Offline: this device has no network. Reconnecting when it is back.');
  else if (state === 'waiting') {
    const tick = () => {
      const left = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      banner.querySelector('.countdown').textContent = left ? ` in ${left} s` : '';
    };
    say('Connection lost. Reconnecting automatically', ' ');
    tick();
    bannerTimer = setInterval(tick, 1000);
  } else say('');
}

function start(token) {
  document.body.classList.add('signed-in');
  nav.hidden = false;
  signOutButton.hidden = false;
  live = new Live(token);
  live.addEventListener('state', (e) => showBanner(e.detail));
  live.addEventListener('welcome', (e) => { document.body.dataset.role = e.detail.role; });
  live.addEventListener('unauthorized', () => signOut('Your token is no longer accepted: it was revoked or has expired.'));
  live.want(['jobs']); // always: job events keep every view's statuses current
  live.start();
  stopHealth = startHealth(healthStrip);
  route();
}

/** Back to the login screen, with nothing of the data left on the page. */
function signOut(message) {
  unmount?.();
  unmount = null;
  live?.stop();
  live = null;
  stopHealth?.();
  stopHealth = null;
  clearInterval(bannerTimer);
  clearToken();
  delete document.body.dataset.role;
  document.body.classList.remove('signed-in');
  document.title = 'Sign in · stoker';
  nav.hidden = true;
  signOutButton.hidden = true;
  banner.replaceChildren();
  delete banner.dataset.state;
  renderLogin(main, {message, onSubmit: signIn});
}

async function signIn(token) {
  await api('/jobs?limit=1', {token}); // throws (401, 429, offline) before anything is stored or shown
  setToken(token);
  if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/jobs');
  start(token);
}

onUnauthorized(() => {
  if (live) signOut('Your token is no longer accepted: it was revoked or has expired.');
});
signOutButton.addEventListener('click', () => signOut('Signed out.'));
window.addEventListener('hashchange', () => {
  const fromLink = takeTokenFromUrl();
  if (fromLink) { signOut(); signIn(fromLink).catch((e) => signOut(e.message)); return; }
  route();
});

async function boot() {
  const fromLink = takeTokenFromUrl();
  if (fromLink) {
    try {
      await signIn(fromLink);
    } catch (error) {
      signOut(error.status === 401 ? 'The login link has expired or was revoked. Paste a token instead.' : error.message);
    }
    return;
  }
  const token = currentToken();
  if (!token) { signOut(); return; }
  try {
    await api('/jobs?limit=1', {token}); // a revoked or expired token must not show a single row
  } catch (error) {
    if (error.status === 401) { signOut('Your token is no longer accepted: it was revoked or has expired.'); return; }
    // Offline or the gateway restarting: show the shell; the live connection retries by itself.
  }
  start(token);
}

if ('serviceWorker' in navigator) {
  window.addEventListener('load', () => {
    navigator.serviceWorker.register('/sw.js').then(async () => {
      // A page that loaded while the worker was activating can miss its claim: ask the active worker again.
      const ready = await navigator.serviceWorker.ready;
      if (!navigator.serviceWorker.controller) ready.active?.postMessage({type: 'claim'});
    }).catch(() => {});
  });
}
boot();
