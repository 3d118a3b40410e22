// @ts-check
// Live updates: Server-Sent Events at /api/stream, forwarded to the page on screen, and the
// badge in the top bar that says whether what the page shows is current:
//   connecting   -> the stream is opening
//   live         -> connected, and the page shows every change it was told of within 2 s
//   reconnecting -> the stream is down; the browser (or we, with back-off) reconnect
//   stale        -> connected, but the server said we fell behind (`resync`) or the page has
//                   not caught up with a change for more than STALE_MS; it reloads
import { api, state, statusOf } from './api.js';
import { router } from './router.js';
import { viewLag } from './schedule.js';

/** A view that has not shown a change for this long is no longer "live". */
const STALE_MS = 3000;

/** @typedef {'connecting' | 'live' | 'reconnecting' | 'stale'} LiveState */

const live = {
  /** @type {EventSource | null} */
  es: null,
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  retryTimer: undefined,
  /** @type {ReturnType<typeof setInterval> | undefined} */
  watchdog: undefined,
  attempts: 0,
  hadError: false,
  /** The server's `resync` is being answered by a reload. */
  resyncing: false,
};

/** @type {Record<LiveState, string>} */
const TITLES = {
  connecting: 'Connecting to live updates',
  live: 'Live updates connected',
  reconnecting: 'Live updates disconnected — reconnecting',
  stale: 'Live updates behind — reloading',
};

/** @param {LiveState} s */
function setIndicator(s) {
  const el = document.querySelector('[data-testid="live-indicator"]');
  if (!el || el.getAttribute('data-state') === s) return;
  el.setAttribute('data-state', s);
  el.classList.toggle('live-ok', s === 'live');
  el.classList.toggle('live-down', s === 'reconnecting');
  el.classList.toggle('live-stale', s === 'stale' || s === 'connecting');
  el.setAttribute('title', TITLES[s]);
  const text = el.querySelector('.live-text');
  if (text) text.textContent = s;
}

/** The badge while the stream is open: live unless the page lags. */
function connectedState() {
  return live.resyncing || viewLag() > STALE_MS ? 'stale' : 'live';
}

/**
 * @param {string} type
 * @param {unknown} data
 */
function dispatch(type, data) {
  const page = router.current;
  if (page && page.onEvent) {
    try { page.onEvent(type, data); } catch (e) { console.error(e); }
  }
}

/** After a gap (reconnect, resync) the page may have missed any change: reload it all. */
async function reloadPage() {
  live.resyncing = true;
  setIndicator('stale');
  const page = router.current;
  try {
    if (page && page.refresh) await page.refresh();
  } catch (e) {
    console.error(e);
  } finally {
    live.resyncing = false;
    if (live.es && live.es.readyState === EventSource.OPEN) setIndicator(connectedState());
  }
}

/** @param {string} type */
const forward = (type) => /** @param {MessageEvent} ev */ (ev) => {
  let data = null;
  try { data = JSON.parse(ev.data); } catch { data = ev.data; }
  dispatch(type, data);
};

/** @param {EventSource} es */
function onError(es) {
  if (live.es !== es) return;
  live.hadError = true;
  setIndicator('reconnecting');
  // While CONNECTING the browser retries by itself; once CLOSED (HTTP error, wrong content
  // type) we reconnect ourselves with back-off, checking the session first.
  if (es.readyState !== EventSource.CLOSED) return;
  es.close();
  live.es = null;
  const delay = Math.min(30000, 1000 * 2 ** live.attempts++);
  live.retryTimer = setTimeout(async () => {
    live.retryTimer = undefined;
    if (!state.session) return;
    try {
      await api('GET', '/api/session'); // a 401 here shows the login form
    } catch (e) {
      if (statusOf(e) === 401) return;
    }
    if (state.session) startStream();
  }, delay);
}

export function startStream() {
  stopStream();
  if (!state.session || typeof EventSource === 'undefined') return;
  const es = new EventSource('/api/stream', { withCredentials: true });
  live.es = es;
  setIndicator(live.hadError ? 'reconnecting' : 'connecting');
  es.addEventListener('open', () => {
    live.attempts = 0;
    setIndicator(connectedState());
    if (live.hadError) { live.hadError = false; reloadPage(); }
  });
  for (const type of ['device', 'campaign', 'firmware']) es.addEventListener(type, forward(type));
  es.addEventListener('resync', () => { reloadPage(); });
  es.addEventListener('error', () => onError(es));
  live.watchdog = setInterval(() => {
    if (live.es && live.es.readyState === EventSource.OPEN) setIndicator(connectedState());
  }, 500);
}

export function stopStream() {
  clearTimeout(live.retryTimer);
  clearInterval(live.watchdog);
  live.retryTimer = undefined;
  live.watchdog = undefined;
  if (live.es) { live.es.close(); live.es = null; }
}
