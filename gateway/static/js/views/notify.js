// Desktop and phone notifications of new alerts while the dashboard is open (the Notification API; asked for
// only on a click). The health strip hands every report's open alerts to `notifyNew`.

const WANTED = 'stoker.notify';
const seen = new Set();
let primed = false;

export const notificationsSupported = () => 'Notification' in window;

export function notificationsOn() {
  return notificationsSupported() && Notification.permission === 'granted' && localStorage.getItem(WANTED) === '1';
}

/** Ask for permission (call from a click); resolves to whether notifications are now on. */
export async function askNotifications() {
  if (!notificationsSupported()) return false;
  const answer = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  if (answer === 'granted') localStorage.setItem(WANTED, '1');
  return notificationsOn();
}

export function stopNotifications() {
  localStorage.removeItem(WANTED);
}

async function show(alert) {
  const title = `stoker: ${alert.rule} on ${alert.target}`;
  const options = {body: `${alert.message}\n${alert.advice}`, tag: alert.id, icon: '/static/icons/icon-192.png'};
  const registration = await navigator.serviceWorker?.getRegistration?.().catch(() => null);
  if (registration?.showNotification) await registration.showNotification(title, options);
  else new Notification(title, options);
}

/** Notify the alerts not seen before (those open when the page loaded count as seen). */
export function notifyNew(alerts) {
  const fresh = alerts.filter((a) => !seen.has(a.id));
  for (const a of alerts) seen.add(a.id);
  if (!primed) { primed = true; return []; }
  if (notificationsOn()) for (const a of fresh) show(a).catch(() => {});
  return fresh;
}
