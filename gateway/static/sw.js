// The service worker: keeps the app shell (page, modules, styles, icons) so the dashboard opens without a
// network and shows its own "offline, reconnecting" state. The API and the socket are never cached: their
// data is live or it is nothing. The gateway fills in VERSION and SHELL when it serves this file.

const VERSION = "dev";
const SHELL = ["/"];
const CACHE = `stoker-shell-${VERSION}`;

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE)
    .then((cache) => cache.addAll(SHELL.map((url) => new Request(url, {cache: 'reload'}))))
    .then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('stoker-shell-') && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// A page that navigated while this worker was activating is not controlled by its claim: it asks again.
self.addEventListener('message', (event) => {
  if (event.data && event.data.type === 'claim') event.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (request.mode === 'navigate' && url.pathname === '/') {
    event.respondWith(networkFirst(request, '/'));
  } else if (url.pathname.startsWith('/static/')) {
    event.respondWith(networkFirst(request, url.pathname));
  }
});

// Network first: on localhost the network is fast and always the newest; the cache is for when it is gone.
async function networkFirst(request, key) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) cache.put(key, response.clone());
    return response;
  } catch (error) {
    const cached = await cache.match(key);
    if (cached) return cached;
    throw error;
  }
}

// A click on an alert's notification (views/notify.js) brings a dashboard tab forward on its Alerts page.
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(self.clients.matchAll({type: 'window'}).then((tabs) => {
    const tab = tabs[0];
    if (!tab) return self.clients.openWindow('/#/alerts');
    return tab.navigate(new URL('/#/alerts', self.location.origin).href).then((t) => (t ?? tab).focus());
  }));
});
