// @ts-check
// The API client: the session, the CSRF header, errors with the server's message.

/** The signed-in session and what /api/info said. */
export const state = {
  /** @type {{ username: string, csrf_token?: string, scope?: string } | null} */
  session: null,
  /** @type {any} */
  info: null,
};

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   * @param {string | null} [field]
   * @param {any} [body]
   */
  constructor(status, message, field, body) {
    super(message);
    this.status = status;
    this.field = field || null;
    /** @type {any} */
    this.body = body || null;
  }
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** What to do when the session ended (the shell shows the login form); set by the shell. */
let onUnauthorized = () => {};

/** @param {() => void} fn */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/** @param {unknown} e */
export const isAbort = (e) => e instanceof Error && e.name === 'AbortError';

/** @returns {Record<string, string>} */
function baseHeaders() {
  // X-Requested-With marks console requests (lets the server skip a Basic-auth challenge).
  return { Accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' };
}

/** @param {Response} res */
async function readJson(res) {
  if (res.status === 204) return null;
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return null; }
}

/**
 * @param {Response} res
 * @param {any} data
 */
function errorOf(res, data) {
  const msg = data && typeof data.error === 'string' && data.error
    ? data.error
    : `Request failed: HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`;
  return new ApiError(res.status, msg, data && data.field, data);
}

/**
 * @typedef {object} ApiOpts
 * @property {AbortSignal} [signal]
 * @property {boolean} [noAuthRedirect]  a 401 is the caller's business (the login form)
 * @property {boolean} [retried]
 */

/**
 * JSON request. Sends the CSRF token on state-changing methods; a 401 (outside the login
 * endpoints) drops back to the login form. Throws ApiError with the server's message.
 * @param {string} method
 * @param {string} path
 * @param {unknown} [body]
 * @param {ApiOpts} [opts]
 * @returns {Promise<any>}
 */
export async function api(method, path, body, opts = {}) {
  const headers = baseHeaders();
  /** @type {RequestInit} */
  const init = { method, credentials: 'same-origin', headers, signal: opts.signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const token = state.session && state.session.csrf_token;
  if (UNSAFE.has(method) && token) headers['X-CSRF-Token'] = token;

  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError(0, 'Cannot reach the lorafleet server. Check your connection and try again.');
  }

  if (res.status === 401 && !opts.noAuthRedirect) {
    onUnauthorized();
    throw new ApiError(401, 'Your session has ended. Please sign in again.');
  }
  // A stale CSRF token (e.g. the session was renewed in another tab): refresh it once.
  if (res.status === 403 && UNSAFE.has(method) && token && !opts.retried) {
    try {
      const s = await api('GET', '/api/session', undefined, { noAuthRedirect: true });
      if (s && s.csrf_token && s.csrf_token !== token) {
        state.session = s;
        return api(method, path, body, { ...opts, retried: true });
      }
    } catch { /* fall through to the original error */ }
  }

  const data = await readJson(res);
  if (!res.ok) throw errorOf(res, data);
  return data;
}

/**
 * POST /api/firmware as multipart; resolves to the image or throws ApiError with the body.
 * @param {File} file
 */
export async function uploadFile(file) {
  const form = new FormData();
  form.append('file', file, file.name);
  const headers = baseHeaders();
  const csrf = state.session && state.session.csrf_token;
  if (csrf) headers['X-CSRF-Token'] = csrf;
  let res;
  try {
    res = await fetch('/api/firmware', { method: 'POST', body: form, headers, credentials: 'same-origin' });
  } catch {
    throw new ApiError(0, 'Cannot reach the lorafleet server.');
  }
  const data = await readJson(res);
  if (!res.ok) throw new ApiError(res.status, (data && data.error) || `Upload failed: HTTP ${res.status}`, data && data.field, data);
  return data;
}

/** @param {unknown} e @returns {number} the HTTP status of a failed request, 0 for others */
export const statusOf = (e) => (e instanceof ApiError ? e.status : 0);

/** @param {unknown} e */
export const messageOf = (e) => (e instanceof Error ? e.message : String(e));

/** @param {unknown} e @returns {any} the JSON body of a failed request */
export const bodyOf = (e) => (e instanceof ApiError ? e.body : null);
