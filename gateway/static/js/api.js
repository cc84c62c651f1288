// REST calls to /api/v1 with the bearer token; a 401 anywhere sends the user back to the login screen.

import {currentToken} from './auth.js';

export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let unauthorized = () => {};

/** Who to tell when the gateway stops accepting the token (revoked or expired). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** Call the API; resolves to the JSON body. `accept` lists error statuses that still carry a useful body. */
export async function api(path, {method = 'GET', body, signal, accept = [], token} = {}) {
  const headers = {Accept: 'application/json'};
  const secret = token ?? currentToken();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  const form = body instanceof FormData; // a file upload: the browser writes the multipart header itself
  if (body !== undefined && !form) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method, headers, signal, cache: 'no-store', body: body === undefined || form ? body : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'Cannot reach the gateway. Is stoker running, and is this device online?');
  }
  const data = await response.json().catch(() => null);
  if (response.ok || accept.includes(response.status)) return data;
  const detail = data?.detail ?? response.statusText;
  if (response.status === 401 && !token) unauthorized(detail);
  throw new ApiError(response.status, explain(response.status, detail), data);
}

function explain(status, detail) {
  if (status === 403) return `Not allowed with this token: ${detail}`;
  if (status === 429) return `Too many attempts: ${detail}`;
  if (status === 503) return `The platform is not ready: ${detail}`;
  return detail || `Request failed (${status})`;
}

/** Every page of a list endpoint that pages with `next_since` (progress history). */
export async function allProgress(jobId, since = 0, signal) {
  const samples = [];
  const limit = 10000;
  for (let page = 0; page < 50; page += 1) { // at most 500,000 samples: a week of a busy job
    const data = await api(`/jobs/${jobId}/progress?since=${since}&limit=${limit}`, {signal});
    samples.push(...data.samples);
    if (data.samples.length < limit) return {samples, next: data.next_since};
    since = data.next_since;
  }
  return {samples, next: since};
}
