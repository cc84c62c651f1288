// The token: pasted once (or carried by the login link), kept in this browser's localStorage.

const KEY = 'stoker.token';
let memory = null; // used when localStorage is unavailable

export function getToken() {
  try { return localStorage.getItem(KEY); } catch { return null; }
}

export function setToken(token) {
  try { localStorage.setItem(KEY, token); } catch { /* private mode: the token lives until the tab closes */ }
  memory = token;
}

export function clearToken() {
  try { localStorage.removeItem(KEY); } catch { /* nothing stored */ }
  memory = null;
}

/** The token from storage, or from memory when storage is unavailable. */
export function currentToken() {
  return getToken() ?? memory;
}

/**
 * `stoker up` prints a link ending in #token=…: take the token and remove it from the address bar
 * (and from history), so it is neither bookmarked nor shown over someone's shoulder.
 */
export function takeTokenFromUrl() {
  const match = location.hash.match(/^#token=([^&]+)/);
  if (!match) return null;
  history.replaceState(null, '', `${location.pathname}${location.search}#/jobs`);
  return decodeURIComponent(match[1]).trim() || null;
}
