// lorafleet web console.
//
// Plain ES2020, no build step, no framework. Served by the lorafleet binary at /assets/app.js.
//
// Layout of this file:
//   1. small helpers (DOM building, formatting)      — every device-supplied string goes through
//      textContent / Text nodes; innerHTML is never used.
//   2. API client (session, CSRF header, 401 handling)
//   3. live updates (Server-Sent Events at /api/stream)
//   4. shell (login form, top bar, banner, router)
//   5. pages — each page is a function registered in the route table at the bottom:
//
//        route('/firmware', firmwarePage, { nav: 'Firmware' });
//
//      A page function receives (view, ctx) where `view` is an empty element to fill and
//      ctx = { params, signal, setTitle, navigate }. It may return
//      { refresh(), onEvent(type, data), destroy() }; all optional. `onEvent` receives every
//      server-sent event ('device', 'campaign', ...) plus 'reconnect' after the stream was down.
(() => {
  'use strict';

  // ---------------------------------------------------------------------------------------
  // 1. Helpers
  // ---------------------------------------------------------------------------------------

  /** Append children (strings become Text nodes, so they are never parsed as HTML). */
  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  function setProps(el, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k === 'testid') el.setAttribute('data-testid', v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else if (k === 'value' || k === 'checked') el[k] = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }

  /** h('div', {class: 'x', testid: 'y', onclick: fn}, 'text', child, [more]) */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    setProps(el, props);
    return append(el, children);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, props, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setProps(el, props);
    return append(el, children);
  }

  function debounce(fn, ms) {
    let t = null;
    const d = (...args) => {
      clearTimeout(t);
      t = setTimeout(() => { t = null; fn(...args); }, ms);
    };
    d.cancel = () => { clearTimeout(t); t = null; };
    return d;
  }

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function parseTime(t) {
    if (!t) return null;
    const d = new Date(t);
    return Number.isNaN(d.getTime()) ? null : d;
  }

  /** Local time, compact and sortable: 2024-05-01 13:37:05 */
  function fmtDateTime(t) {
    const d = parseTime(t);
    if (!d) return '—';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  /** "3 d 4 h", "4 h 12 min", "12 min 5 s", "45 s" */
  function fmtDuration(totalSeconds) {
    if (totalSeconds == null || !Number.isFinite(Number(totalSeconds))) return '—';
    let s = Math.max(0, Math.floor(Number(totalSeconds)));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const hr = Math.floor(s / 3600); s -= hr * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d > 0) return hr > 0 ? `${d} d ${hr} h` : `${d} d`;
    if (hr > 0) return m > 0 ? `${hr} h ${m} min` : `${hr} h`;
    if (m > 0) return s > 0 ? `${m} min ${s} s` : `${m} min`;
    return `${s} s`;
  }

  /** The network's clock: a simulated network may run faster than real time, and every time
   *  the devices report is on its clock, so "5 s ago" must be counted on it too. */
  const netClock = { base: null, at: 0, scale: 1 };
  function setNetClock(net) {
    const base = net && net.now ? Date.parse(net.now) : NaN;
    netClock.base = Number.isNaN(base) ? null : base;
    netClock.at = Date.now();
    netClock.scale = net && net.time_scale > 0 ? net.time_scale : 1;
  }
  function netNow() {
    if (netClock.base == null) return Date.now();
    return netClock.base + (Date.now() - netClock.at) * netClock.scale;
  }

  /** "just now", "5 min ago", "3 h ago", "2 d ago" */
  function relTime(t) {
    const d = parseTime(t);
    if (!d) return '—';
    const secs = Math.round((netNow() - d.getTime()) / 1000);
    if (secs < 10) return 'just now';
    if (secs < 60) return `${secs} s ago`;
    const mins = Math.floor(secs / 60);
    if (mins < 60) return `${mins} min ago`;
    const hours = Math.floor(mins / 60);
    if (hours < 48) return `${hours} h ago`;
    return `${Math.floor(hours / 24)} d ago`;
  }

  /** Placeholder for a missing value. */
  const dash = () => h('span', { class: 'muted empty' }, '—');

  /** A <time> element that keeps its relative text up to date (see the ticker below). */
  function timeAgo(t, testid) {
    if (!parseTime(t)) return h('span', { class: 'muted empty', testid }, '—');
    return h('time', { datetime: t, title: fmtDateTime(t), 'data-rel-time': t, testid }, relTime(t));
  }

  setInterval(() => {
    for (const el of document.querySelectorAll('[data-rel-time]')) {
      el.textContent = relTime(el.getAttribute('data-rel-time'));
    }
  }, 15000);

  function fmtBytes(n) {
    if (n == null || !Number.isFinite(Number(n))) return '—';
    n = Number(n);
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
  }

  const hex32 = (n) => '0x' + (Number(n) >>> 0).toString(16).padStart(8, '0');

  /** Versions are {raw: u32, display: string}; tolerate plain values too. */
  function versionText(v) {
    if (v == null) return '';
    if (typeof v === 'object') return v.display != null && v.display !== '' ? String(v.display) : (v.raw != null ? hex32(v.raw) : '');
    return String(v);
  }
  function versionRaw(v) {
    return v && typeof v === 'object' && v.raw != null ? hex32(v.raw) : null;
  }

  /** Version & Status VersioningType (a nibble; the server may also send a name). */
  function versioningName(t) {
    const names = { 0: 'no versioning scheme', 1: 'major.minor.patch', 2: 'GPS time' };
    if (typeof t === 'number') return names[t] || `versioning type ${t} (reserved)`;
    return `versioning ${typeof t === 'object' ? compactJson(t) : t}`;
  }

  function fmtId(v) {
    if (v == null || v === '') return null;
    if (typeof v === 'number') return `${v} (0x${v.toString(16).toUpperCase()})`;
    return String(v);
  }

  function fmtNum(v, unit, digits) {
    if (v == null || v === '' || !Number.isFinite(Number(v))) return '—';
    const n = Number(v);
    const s = digits != null ? n.toFixed(digits) : String(n);
    return unit ? `${s} ${unit}` : s;
  }

  function spacedHex(hex) {
    if (!hex) return '';
    return String(hex).replace(/\s+/g, '').replace(/(..)(?=.)/g, '$1 ');
  }

  function compactJson(v) {
    if (v == null) return '';
    try { return JSON.stringify(v); } catch { return String(v); }
  }

  function badge(text, kind, title, testid) {
    return h('span', { class: `badge badge-${kind}`, title, testid }, text);
  }

  function errorBox(message, onRetry) {
    return h('div', { class: 'alert alert-error', role: 'alert', testid: 'error' },
      h('span', null, message),
      onRetry ? h('button', { class: 'btn btn-small', type: 'button', onclick: onRetry }, 'Retry') : null);
  }

  // Toast notifications (bottom-right on desktop, bottom on phones).
  function toast(message, kind = 'info') {
    let box = document.querySelector('.toasts');
    if (!box) { box = h('div', { class: 'toasts', 'aria-live': 'polite' }); document.body.append(box); }
    const t = h('div', { class: `toast toast-${kind}`, testid: 'toast' }, message);
    box.append(t);
    setTimeout(() => t.classList.add('toast-out'), 3500);
    setTimeout(() => t.remove(), 4000);
  }

  /**
   * Modal dialog built on <dialog>. `body` is a node (or list); resolves to the value of the
   * button pressed (`false` for cancel / Escape). `validate()` may return an error string that
   * blocks the confirm button.
   */
  function modal({ title, body, confirmLabel = 'OK', danger = false, testid = 'dialog', validate }) {
    return new Promise((resolve) => {
      const err = h('p', { class: 'field-error', testid: `${testid}-error` });
      const ok = h('button', { type: 'submit', class: `btn ${danger ? 'btn-danger' : 'btn-primary'}`, testid: `${testid}-confirm` }, confirmLabel);
      const cancel = h('button', { type: 'button', class: 'btn', testid: `${testid}-cancel` }, 'Cancel');
      const form = h('form', { method: 'dialog', class: 'dialog-form', novalidate: true },
        h('h2', { class: 'dialog-title' }, title),
        h('div', { class: 'dialog-body' }, body),
        err,
        h('div', { class: 'dialog-actions' }, cancel, ok));
      const dlg = h('dialog', { class: 'dialog', testid }, form);
      let result = false;
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const problem = validate ? validate() : null;
        if (problem) { err.textContent = problem; return; }
        result = true;
        dlg.close();
      });
      cancel.addEventListener('click', () => dlg.close());
      dlg.addEventListener('close', () => { dlg.remove(); resolve(result); });
      document.body.append(dlg);
      dlg.showModal();
      const first = dlg.querySelector('input');
      (first || ok).focus();
    });
  }

  function confirmDialog(opts) {
    return modal({ ...opts, body: h('p', null, opts.message) });
  }

  // ---------------------------------------------------------------------------------------
  // 2. API client
  // ---------------------------------------------------------------------------------------

  const state = {
    session: null,      // {username, csrf_token}
    info: null,         // /api/info
  };

  class ApiError extends Error {
    constructor(status, message, field, body) {
      super(message);
      this.status = status;
      this.field = field || null;
      this.body = body || null;
    }
  }

  const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

  /**
   * JSON request. Sends the CSRF token on state-changing methods; a 401 (outside the login
   * endpoints) drops back to the login form. Throws ApiError with the server's message.
   */
  async function api(method, path, body, opts = {}) {
    // X-Requested-With marks console requests (lets the server skip a Basic-auth challenge).
    const headers = { Accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' };
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
      if (e && e.name === 'AbortError') throw e;
      throw new ApiError(0, 'Cannot reach the lorafleet server. Check your connection and try again.');
    }

    if (res.status === 401 && !opts.noAuthRedirect) {
      sessionExpired();
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

    let data = null;
    if (res.status !== 204) {
      const text = await res.text();
      if (text) { try { data = JSON.parse(text); } catch { data = null; } }
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' && data.error
        ? data.error
        : `Request failed: HTTP ${res.status}${res.statusText ? ' ' + res.statusText : ''}`;
      throw new ApiError(res.status, msg, data && data.field, data);
    }
    return data;
  }

  const isAbort = (e) => e && e.name === 'AbortError';

  // ---------------------------------------------------------------------------------------
  // 3. Live updates (Server-Sent Events)
  // ---------------------------------------------------------------------------------------

  const live = {
    es: null,
    retryTimer: null,
    attempts: 0,
    hadError: false,
  };

  function setLiveIndicator(ok) {
    const el = document.querySelector('[data-testid="live-indicator"]');
    if (!el) return;
    el.classList.toggle('live-ok', ok);
    el.classList.toggle('live-down', !ok);
    el.title = ok ? 'Live updates connected' : 'Live updates disconnected — reconnecting';
    el.lastChild.textContent = ok ? 'live' : 'reconnecting';
  }

  function startStream() {
    stopStream();
    if (!state.session || typeof EventSource === 'undefined') return;
    const es = new EventSource('/api/stream', { withCredentials: true });
    live.es = es;
    es.addEventListener('open', () => {
      live.attempts = 0;
      setLiveIndicator(true);
      if (live.hadError) { live.hadError = false; dispatchEvent('reconnect', null); }
    });
    const forward = (type) => (ev) => {
      let data = null;
      try { data = JSON.parse(ev.data); } catch { data = ev.data; }
      dispatchEvent(type, data);
    };
    es.addEventListener('device', forward('device'));
    es.addEventListener('campaign', forward('campaign'));
    es.addEventListener('firmware', forward('firmware'));
    es.addEventListener('error', () => {
      if (live.es !== es) return;
      live.hadError = true;
      setLiveIndicator(false);
      // While CONNECTING the browser retries by itself; once CLOSED (HTTP error, wrong content
      // type) we reconnect ourselves with back-off, checking the session first.
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        live.es = null;
        const delay = Math.min(30000, 1000 * 2 ** live.attempts++);
        live.retryTimer = setTimeout(async () => {
          live.retryTimer = null;
          if (!state.session) return;
          try {
            await api('GET', '/api/session'); // a 401 here shows the login form
          } catch (e) {
            if (e.status === 401) return;
          }
          if (state.session) startStream();
        }, delay);
      }
    });
  }

  function stopStream() {
    clearTimeout(live.retryTimer);
    live.retryTimer = null;
    if (live.es) { live.es.close(); live.es = null; }
  }

  function dispatchEvent(type, data) {
    const page = router.current;
    if (page && page.onEvent) {
      try { page.onEvent(type, data); } catch (e) { console.error(e); }
    }
  }

  // ---------------------------------------------------------------------------------------
  // 4. Shell: login, top bar, router
  // ---------------------------------------------------------------------------------------

  const appRoot = () => document.getElementById('app');

  const routes = [];
  /** Register a page. pattern like '/devices/:devEui'; opts.nav adds a top-bar entry. */
  function route(pattern, page, opts = {}) {
    const entry = { pattern, parts: pattern.split('/').filter(Boolean), page, nav: opts.nav || null };
    // Registering a pattern again (fuota.js replacing a placeholder) keeps its place in the nav.
    const i = routes.findIndex((r) => r.pattern === pattern);
    if (i >= 0) routes[i] = { ...entry, nav: entry.nav || routes[i].nav }; else routes.push(entry);
  }

  function matchRoute(path) {
    const parts = path.split('/').filter(Boolean);
    for (const r of routes) {
      if (r.parts.length !== parts.length) continue;
      const params = {};
      let ok = true;
      for (let i = 0; i < parts.length; i++) {
        const p = r.parts[i];
        if (p.startsWith(':')) {
          try { params[p.slice(1)] = decodeURIComponent(parts[i]); } catch { ok = false; break; }
        } else if (p !== parts[i]) { ok = false; break; }
      }
      if (ok) return { route: r, params };
    }
    return null;
  }

  function currentPath() {
    const hash = location.hash.replace(/^#/, '');
    return hash.split('?')[0] || '/';
  }

  function navigate(path) {
    if (currentPath() === path) router.render(); else location.hash = '#' + path;
  }

  const router = {
    current: null,        // what the page function returned
    controller: null,     // AbortController of the current page
    view: null,

    teardown() {
      // A dialog belongs to the page that opened it: leaving the page cancels it, so an erase
      // confirmed after navigating can never hit a device no longer on screen.
      for (const dlg of document.querySelectorAll('dialog.dialog')) dlg.close();
      if (this.controller) this.controller.abort();
      if (this.current && this.current.destroy) {
        try { this.current.destroy(); } catch (e) { console.error(e); }
      }
      this.current = null;
      this.controller = null;
    },

    render() {
      if (!state.session || !this.view) return;
      const path = currentPath();
      if (path === '/' || path === '') { location.replace('#/devices'); return; }
      this.teardown();
      const view = this.view;
      view.replaceChildren();
      window.scrollTo(0, 0);
      const m = matchRoute(path);
      for (const a of document.querySelectorAll('.nav a')) {
        const seg = a.getAttribute('href').replace(/^#/, '').split('/')[1];
        a.classList.toggle('active', path.split('/')[1] === seg);
        if (path.split('/')[1] === seg) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
      }
      if (!m) {
        document.title = 'Not found · lorafleet';
        view.append(h('section', { class: 'empty-state' },
          h('h1', null, 'Page not found'),
          h('p', null, h('a', { href: '#/devices' }, 'Go to devices'))));
        return;
      }
      this.controller = new AbortController();
      const ctx = {
        params: m.params,
        signal: this.controller.signal,
        setTitle: (t) => { document.title = t ? `${t} · lorafleet` : 'lorafleet'; },
        navigate,
      };
      ctx.setTitle(m.route.nav || '');
      try {
        this.current = m.route.page(view, ctx) || {};
      } catch (e) {
        console.error(e);
        view.append(errorBox('This page failed to render: ' + e.message));
      }
    },
  };

  window.addEventListener('hashchange', () => router.render());

  function sessionExpired() {
    if (!state.session) return;
    state.session = null;
    stopStream();
    router.teardown();
    renderLogin('Your session has ended. Please sign in again.');
  }

  function renderLogin(notice) {
    router.teardown();
    router.view = null;
    document.title = 'Sign in · lorafleet';
    const username = h('input', { id: 'login-username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', testid: 'login-username' });
    const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit' }, 'Sign in');
    const error = h('p', { class: 'form-error', role: 'alert', testid: 'login-error' });
    const form = h('form', { class: 'login-card', novalidate: true },
      h('div', { class: 'login-brand' }, logo(), h('span', null, 'lorafleet')),
      h('p', { class: 'login-sub' }, 'Sign in to manage your LoRaWAN fleet'),
      notice ? h('p', { class: 'alert alert-info', testid: 'login-notice' }, notice) : null,
      h('label', { for: 'login-username' }, 'Username'), username,
      h('label', { for: 'login-password' }, 'Password'), password,
      error, submit);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      error.textContent = '';
      if (!username.value.trim() || !password.value) {
        error.textContent = 'Enter your username and password.';
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Signing in…';
      try {
        const s = await api('POST', '/api/session', { username: username.value.trim(), password: password.value }, { noAuthRedirect: true });
        state.session = s;
        await enterApp();
      } catch (e) {
        if (e.status === 401) error.textContent = 'Wrong username or password.';
        else error.textContent = e.message || 'Sign-in failed.';
        password.select();
        submit.disabled = false;
        submit.textContent = 'Sign in';
      }
    });
    appRoot().replaceChildren(h('main', { class: 'login-page' }, form));
    username.focus();
  }

  function logo() {
    return svg('svg', { class: 'logo', viewBox: '0 0 32 32', width: 24, height: 24, 'aria-hidden': 'true' },
      svg('rect', { width: 32, height: 32, rx: 7, class: 'logo-bg' }),
      svg('path', { d: 'M8 20a11 11 0 0 1 16 0M11 23a6.5 6.5 0 0 1 10 0', class: 'logo-wave' }),
      svg('circle', { cx: 16, cy: 25.5, r: 2, class: 'logo-dot' }));
  }

  async function logout() {
    try { await api('DELETE', '/api/session', undefined, { noAuthRedirect: true }); } catch { /* signed out locally anyway */ }
    state.session = null;
    stopStream();
    renderLogin('You have been signed out.');
  }

  async function enterApp() {
    try {
      state.info = await api('GET', '/api/info');
      setNetClock(state.info && state.info.network);
    } catch (e) {
      if (e.status === 401) return;
      state.info = null; // the console still works without it
    }
    renderShell();
    startStream();
    if (currentPath() === '/' || currentPath() === '') location.replace('#/devices');
    router.render();
  }

  function renderShell() {
    const info = state.info || {};
    const net = info.network || {};
    const nav = h('nav', { class: 'nav', 'aria-label': 'Main' },
      routes.filter((r) => r.nav).map((r) =>
        h('a', { href: '#' + r.pattern, testid: `nav-${r.pattern.split('/')[1]}` }, r.nav)));
    const liveDot = h('span', { class: 'live', testid: 'live-indicator', title: 'Live updates' },
      h('span', { class: 'live-dot', 'aria-hidden': 'true' }), h('span', { class: 'live-text' }, 'connecting'));
    const header = h('header', { class: 'topbar', testid: 'topbar' },
      h('a', { class: 'brand', href: '#/devices' }, logo(), h('span', null, 'lorafleet')),
      nav,
      h('div', { class: 'topbar-right' },
        liveDot,
        h('span', { class: 'user', testid: 'current-user', title: 'Signed in user' }, state.session.username),
        h('button', { type: 'button', class: 'btn btn-ghost btn-small', testid: 'logout', onclick: logout }, 'Log out')));
    let banner = null;
    if (net.simulated === true) {
      const scale = Number(net.time_scale) || 1;
      banner = h('div', { class: 'sim-banner', role: 'status', testid: 'simulated-banner' },
        'Simulated network — devices are virtual' +
        (scale !== 1 ? `; simulated time runs ×${scale}` : ''));
    } else if (net.kind === 'none') {
      banner = h('div', { class: 'sim-banner net-none-banner', role: 'status', testid: 'network-banner' },
        'No network server configured — uplinks are received, but requests and downlinks cannot be sent');
    }
    const view = h('main', { class: 'view', id: 'view' });
    const footerBits = ['lorafleet'];
    if (info.version) footerBits.push(`v${info.version}`);
    if (net.kind) footerBits.push(`network: ${net.kind}${net.region ? ` (${net.region})` : ''}`);
    const footer = h('footer', { class: 'footer', testid: 'footer' }, footerBits.join(' · '));
    appRoot().replaceChildren(header, banner || '', view, footer);
    router.view = view;
  }

  async function boot() {
    try {
      const s = await api('GET', '/api/session', undefined, { noAuthRedirect: true });
      state.session = s;
      await enterApp();
    } catch (e) {
      if (e.status === 401) { renderLogin(); return; }
      appRoot().replaceChildren(h('main', { class: 'login-page' },
        h('div', { class: 'login-card' },
          h('div', { class: 'login-brand' }, logo(), h('span', null, 'lorafleet')),
          errorBox(e.message || 'The server could not be reached.', () => boot()))));
    }
  }

  // ---------------------------------------------------------------------------------------
  // 5. Pages
  // ---------------------------------------------------------------------------------------

  const PAGE_SIZE = 50;
  // Kept across navigation so "back to devices" returns to the same search and page.
  const listState = { search: '', offset: 0, sort: 'last_seen' };
  const SORTS = [['last_seen', 'Last seen'], ['name', 'Name'], ['dev_eui', 'DevEUI']];

  function devicesPage(view, ctx) {
    ctx.setTitle('Devices');
    const search = h('input', {
      type: 'search', class: 'search', placeholder: 'Search devices…', title: 'Name, DevEUI, application or DevAddr',
      'aria-label': 'Search devices', value: listState.search, testid: 'device-search',
    });
    const count = h('span', { class: 'count', testid: 'device-count' });
    const sort = h('select', { class: 'sort', 'aria-label': 'Sort devices by', testid: 'device-sort' },
      SORTS.map(([v, label]) => h('option', { value: v }, `Sort: ${label}`)));
    sort.value = listState.sort;
    sort.addEventListener('change', () => { listState.sort = sort.value; listState.offset = 0; load(); });
    const body = h('div', { class: 'list-body' }, h('p', { class: 'muted loading' }, 'Loading devices…'));
    const pager = h('div', { class: 'pager' });

    view.append(
      h('div', { class: 'page-head' },
        h('h1', null, 'Devices', ' ', count),
        h('div', { class: 'toolbar' }, search, sort)),
      body, pager);

    let seq = 0;
    async function load() {
      const my = ++seq;
      const q = new URLSearchParams({
        search: listState.search, limit: String(PAGE_SIZE), offset: String(listState.offset), sort: listState.sort,
      });
      try {
        const data = await api('GET', `/api/devices?${q}`, undefined, { signal: ctx.signal });
        if (my !== seq || ctx.signal.aborted) return;
        const total = Number(data.total) || 0;
        const devices = Array.isArray(data.devices) ? data.devices : [];
        if (devices.length === 0 && listState.offset > 0 && total > 0) {
          // The page we were on emptied (devices removed): go back to the last page.
          listState.offset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
          load();
          return;
        }
        renderList(devices, total);
      } catch (e) {
        if (isAbort(e) || my !== seq || e.status === 401) return;
        body.replaceChildren(errorBox(e.message, load));
      }
    }

    function renderList(devices, total) {
      count.textContent = `${total}`;
      count.title = `${total} device${total === 1 ? '' : 's'}`;
      if (devices.length === 0) {
        body.replaceChildren(h('div', { class: 'empty-state', testid: 'device-list-empty' },
          listState.search
            ? h('p', null, 'No device matches “', listState.search, '”.')
            : [h('p', null, 'No devices yet.'),
              h('p', { class: 'muted' }, 'Devices appear here as soon as they send an uplink through the network server integration.')]));
      } else {
        const table = h('table', { class: 'table table-cards devices', testid: 'device-table' },
          h('thead', null, h('tr', null,
            h('th', { 'aria-sort': listState.sort === 'name' ? 'ascending' : null }, 'Name', listState.sort === 'name' ? ' ▴' : ''),
            h('th', { 'aria-sort': listState.sort === 'dev_eui' ? 'ascending' : null }, 'DevEUI', listState.sort === 'dev_eui' ? ' ▴' : ''),
            h('th', null, 'Application'), h('th', null, 'Running version'),
            h('th', { 'aria-sort': listState.sort === 'last_seen' ? 'descending' : null }, 'Last seen', listState.sort === 'last_seen' ? ' ▾' : ''))),
          h('tbody', null, devices.map(deviceRow)));
        body.replaceChildren(table);
      }
      const from = total === 0 ? 0 : listState.offset + 1;
      const to = Math.min(total, listState.offset + devices.length);
      const prev = h('button', { type: 'button', class: 'btn btn-small', testid: 'page-prev', disabled: listState.offset <= 0 },
        '‹ Previous');
      const next = h('button', { type: 'button', class: 'btn btn-small', testid: 'page-next', disabled: to >= total },
        'Next ›');
      prev.addEventListener('click', () => { listState.offset = Math.max(0, listState.offset - PAGE_SIZE); load(); });
      next.addEventListener('click', () => { listState.offset += PAGE_SIZE; load(); });
      pager.replaceChildren(
        h('span', { class: 'muted', testid: 'page-range' }, total === 0 ? '' : `${from}–${to} of ${total}`),
        total > PAGE_SIZE ? h('span', { class: 'pager-buttons' }, prev, next) : '');
    }

    function deviceRow(d) {
      const href = '#/devices/' + encodeURIComponent(d.dev_eui);
      const badges = [];
      if (d.never_seen) badges.push(badge('never seen', 'muted', 'No uplink received from this device yet', 'badge-never-seen'));
      if (d.reappeared_at) badges.push(badge('reappeared', 'warn', `Removed, then sent again at ${fmtDateTime(d.reappeared_at)}`, 'badge-reappeared'));
      const tr = h('tr', { class: 'clickable', testid: 'device-row', 'data-dev-eui': d.dev_eui },
        h('td', { 'data-label': 'Name', class: 'cell-name' },
          h('a', { href, testid: 'device-name' }, d.name ? d.name : h('span', { class: 'muted' }, '(unnamed)')),
          badges.length ? h('span', { class: 'badges' }, badges) : null),
        h('td', { 'data-label': 'DevEUI', class: 'mono' }, d.dev_eui),
        h('td', { 'data-label': 'Application' }, d.application || dash()),
        h('td', { 'data-label': 'Version', title: versionRaw(d.running_version) || '' },
          d.running_version ? versionText(d.running_version) : dash()),
        h('td', { 'data-label': 'Last seen' }, d.never_seen ? h('span', { class: 'muted' }, 'never') : timeAgo(d.last_seen)));
      tr.addEventListener('click', (ev) => {
        if (ev.target.closest('a') || window.getSelection().toString()) return;
        location.hash = href;
      });
      return tr;
    }

    const onSearch = debounce(() => {
      listState.search = search.value.trim();
      listState.offset = 0;
      load();
    }, 300);
    search.addEventListener('input', onSearch);
    const refresh = debounce(load, 300);

    load();
    return {
      refresh: load,
      onEvent(type) { if (type === 'device' || type === 'reconnect') refresh(); },
      destroy() { onSearch.cancel(); refresh.cancel(); },
    };
  }

  // Version & Status requests, in the order they are shown.
  const VS_COMMANDS = [
    { cmd: 'package_version', label: 'Package version', help: 'Protocol package identifier, version and versioning type' },
    { cmd: 'version_running', label: 'Running version', help: 'Firmware version running now and its slot' },
    { cmd: 'version_stored', label: 'Stored versions', help: 'Firmware versions stored in the slots', nbSlots: true },
    { cmd: 'space_status', label: 'Space status', help: 'Free heap and slot size' },
    { cmd: 'uptime', label: 'Uptime', help: 'Time since the last device reset' },
    { cmd: 'device_description', label: 'Device description', help: 'Manufacturer and device identifiers' },
    { cmd: 'erase_slot', label: 'Erase slot…', help: 'Erase the firmware image in one slot', danger: true },
  ];

  function devicePage(view, ctx) {
    const devEui = ctx.params.devEui;
    ctx.setTitle(devEui);
    let device = null;
    let uplinks = [];
    // Requests sent from this page that the server list may not show yet: cmd -> request.
    const localReqs = {};
    const UPLINKS_SHOWN = window.matchMedia('(max-width: 700px)').matches ? 8 : 20;
    let showAllUplinks = false;

    // --- skeleton (built once; sections are re-filled on every refresh so that forms keep
    // what the user typed) ---
    const title = h('h1', { class: 'device-title', testid: 'device-title' }, devEui);
    const headBadges = h('span', { class: 'badges' });
    const removeBtn = h('button', { type: 'button', class: 'btn btn-danger-outline', testid: 'remove-device' }, 'Remove device');
    const pageError = h('div', { class: 'page-error' });
    const identityBody = h('div', { class: 'card-body' }, h('p', { class: 'muted' }, 'Loading…'));
    const statusBody = h('div', { class: 'card-body', testid: 'status-card' }, h('p', { class: 'muted' }, 'Loading…'));
    const vsError = h('p', { class: 'form-error', role: 'alert', testid: 'vs-error' });
    const recentReqs = h('div', { class: 'recent-requests' });
    const chartBox = h('div', { class: 'chart', testid: 'uplink-chart' });
    const uplinkBody = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading…'));
    const eventsBody = h('div', { class: 'card-body' }, h('p', { class: 'muted' }, 'Loading…'));
    const historyBody = h('div', { class: 'card-body', testid: 'firmware-history' }, h('p', { class: 'muted' }, 'Loading…'));
    const downlinksBody = h('div', { class: 'recent-downlinks' });
    const nbSlots = h('input', { type: 'number', min: 0, max: 15, step: 1, class: 'input-tiny', placeholder: 'all', 'aria-label': 'Number of slots (optional)', title: 'Number of slots to report (optional)', testid: 'vs-nb-slots' });

    const vsButtons = {};
    const vsStates = {};
    const vsGrid = h('div', { class: 'vs-grid' }, VS_COMMANDS.map((c) => {
      const btn = h('button', { type: 'button', class: `btn ${c.danger ? 'btn-danger-outline' : ''} vs-button`, title: c.help, testid: `vs-button-${c.cmd}` }, c.label);
      btn.addEventListener('click', () => onCommand(c));
      const st = h('span', { class: 'req-state', testid: `request-state-${c.cmd}`, 'data-state': 'none' });
      vsButtons[c.cmd] = btn;
      vsStates[c.cmd] = st;
      return h('div', { class: 'vs-item' },
        h('div', { class: 'vs-line' }, btn, c.nbSlots ? h('label', { class: 'nb-slots' }, 'slots ', nbSlots) : null),
        st);
    }));

    const dl = downlinkForm();

    view.append(
      h('div', { class: 'crumbs' }, h('a', { href: '#/devices', testid: 'back-to-devices' }, '‹ Devices')),
      h('div', { class: 'page-head device-head' },
        h('div', { class: 'device-head-main' }, title, h('div', { class: 'device-sub' }, h('span', { class: 'mono', testid: 'device-eui' }, devEui), headBadges)),
        h('div', { class: 'toolbar' }, removeBtn)),
      pageError,
      h('div', { class: 'grid-2' },
        h('section', { class: 'card' }, h('h2', { class: 'card-title' }, 'Device'), identityBody),
        h('section', { class: 'card' }, h('h2', { class: 'card-title' }, 'Firmware status'), statusBody)),
      h('section', { class: 'card' },
        h('h2', { class: 'card-title' }, 'Version & Status requests'),
        h('div', { class: 'card-body' },
          h('p', { class: 'muted small' }, 'Each request is queued as a downlink; the device answers on its status port with its next uplink.'),
          vsGrid, vsError, recentReqs)),
      h('section', { class: 'card' }, h('h2', { class: 'card-title' }, 'Firmware history'), historyBody),
      h('section', { class: 'card' },
        h('h2', { class: 'card-title' }, 'Signal'),
        h('div', { class: 'card-body' }, chartBox)),
      h('section', { class: 'card' },
        h('h2', { class: 'card-title' }, 'Uplink history'), uplinkBody),
      h('div', { class: 'grid-2' },
        h('section', { class: 'card' }, h('h2', { class: 'card-title' }, 'Events'), eventsBody),
        h('section', { class: 'card' }, h('h2', { class: 'card-title' }, 'Downlinks'), h('div', { class: 'card-body' }, dl.form, downlinksBody))));

    removeBtn.addEventListener('click', async () => {
      const name = device && device.name ? `${device.name} (${devEui})` : devEui;
      const ok = await confirmDialog({
        title: 'Remove device?', testid: 'confirm-remove', danger: true, confirmLabel: 'Remove device',
        message: `${name} will be removed from lorafleet together with its history. If it sends another uplink it will reappear.`,
      });
      if (!ok) return;
      removeBtn.disabled = true;
      try {
        await api('DELETE', `/api/devices/${encodeURIComponent(devEui)}`);
        toast(`Device ${devEui} removed`, 'ok');
        navigate('/devices');
      } catch (e) {
        removeBtn.disabled = false;
        if (e.status !== 401) toast(`Could not remove the device: ${e.message}`, 'error');
      }
    });

    // --- loading ---
    let seq = 0;
    let gone = false;
    async function load() {
      const my = ++seq;
      const base = `/api/devices/${encodeURIComponent(devEui)}`;
      try {
        const [d, u] = await Promise.all([
          api('GET', base, undefined, { signal: ctx.signal }),
          api('GET', `${base}/uplinks?limit=100`, undefined, { signal: ctx.signal }).catch((e) => {
            if (isAbort(e) || e.status === 401 || e.status === 404) throw e;
            return { uplinks: null, error: e.message };
          }),
        ]);
        if (my !== seq || ctx.signal.aborted) return;
        gone = false;
        device = d;
        uplinks = Array.isArray(u.uplinks) ? u.uplinks : [];
        pageError.replaceChildren(u.error ? errorBox(`Uplink history unavailable: ${u.error}`) : '');
        render(u.error ? null : uplinks);
      } catch (e) {
        if (isAbort(e) || my !== seq || e.status === 401) return;
        if (e.status === 404) {
          gone = true;
          removeBtn.disabled = true;
          pageError.replaceChildren(h('div', { class: 'alert alert-warn', testid: 'device-missing' },
            'This device is not (or no longer) known to lorafleet. It will reappear here if it sends an uplink. ',
            h('a', { href: '#/devices' }, 'Back to devices')));
        } else {
          pageError.replaceChildren(errorBox(`Could not load the device: ${e.message}`, load));
        }
      }
    }

    function render(uplinkList) {
      const d = device;
      removeBtn.disabled = false;
      ctx.setTitle(d.name || devEui);
      title.replaceChildren(d.name ? d.name : h('span', { class: 'muted' }, '(unnamed)'));
      headBadges.replaceChildren(
        d.never_seen ? badge('never seen', 'muted', 'No uplink received yet', 'badge-never-seen') : '',
        d.reappeared_at ? badge('reappeared', 'warn', `Removed, then sent again at ${fmtDateTime(d.reappeared_at)}`, 'badge-reappeared') : '');
      identityBody.replaceChildren(identity(d));
      statusBody.replaceChildren(statusCard(d.status || {}));
      renderRequests(Array.isArray(d.status_requests) ? d.status_requests : []);
      eventsBody.replaceChildren(eventLog(Array.isArray(d.events) ? d.events : []));
      historyBody.replaceChildren(firmwareHistory(Array.isArray(d.firmware_history) ? d.firmware_history : []));
      downlinksBody.replaceChildren(downlinkList(Array.isArray(d.downlinks) ? d.downlinks : null));
      if (uplinkList) {
        uplinkBody.replaceChildren(uplinkTable(uplinkList));
        drawChart(chartBox, uplinkList);
      }
    }

    function field(label, value, testid) {
      const empty = value == null || value === '' || (Array.isArray(value) && value.length === 0);
      return [h('dt', null, label), h('dd', { testid }, empty ? dash() : value)];
    }

    function identity(d) {
      const tags = d.tags && typeof d.tags === 'object' ? Object.entries(d.tags) : [];
      const lu = d.last_uplink;
      return h('dl', { class: 'kv', testid: 'identity' },
        field('DevEUI', h('span', { class: 'mono' }, d.dev_eui || devEui), 'identity-dev-eui'),
        field('Name', d.name, 'identity-name'),
        field('Application', d.application, 'identity-application'),
        field('Device profile', d.device_profile, 'identity-device-profile'),
        field('DevAddr', d.dev_addr ? h('span', { class: 'mono' }, d.dev_addr) : null, 'identity-dev-addr'),
        field('Tags', tags.length ? h('span', { class: 'tags' }, tags.map(([k, v]) =>
          h('span', { class: 'tag' }, h('span', { class: 'tag-k' }, k), h('span', { class: 'tag-v' }, typeof v === 'string' ? v : compactJson(v))))) : null, 'identity-tags'),
        field('First seen', d.first_seen ? [fmtDateTime(d.first_seen), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.first_seen), ')')] : null, 'identity-first-seen'),
        d.joined_at ? field('Joined', [fmtDateTime(d.joined_at), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.joined_at), ')')], 'identity-joined') : null,
        field('Last seen', d.never_seen ? h('span', { class: 'muted' }, 'never') : d.last_seen ? [fmtDateTime(d.last_seen), ' ', h('span', { class: 'muted' }, '(', timeAgo(d.last_seen), ')')] : null, 'identity-last-seen'),
        field('Battery', d.battery == null ? null : fmtNum(d.battery, '%', Number.isInteger(Number(d.battery)) ? 0 : 1), 'identity-battery'),
        field('Link margin', d.margin == null ? null : fmtNum(d.margin, 'dB'), 'identity-margin'),
        field('Last uplink', lu ? `FCnt ${lu.f_cnt ?? '—'} · port ${lu.f_port ?? '—'} · RSSI ${fmtNum(lu.rssi, 'dBm')} · SNR ${fmtNum(lu.snr, 'dB')} · ${lu.gateway_count ?? '?'} gateway${lu.gateway_count === 1 ? '' : 's'}` : null, 'identity-last-uplink'));
    }

    function reported(t) {
      return parseTime(t) ? h('span', { class: 'reported muted' }, 'reported ', timeAgo(t)) : null;
    }

    function statusCard(st) {
      const at = st.reported_at || {};
      const pkg = st.package;
      const running = st.running;
      const runningText = running ? versionText(running.version) : '';
      const runningRaw = running ? versionRaw(running.version) : null;
      const stored = Array.isArray(st.stored) ? st.stored : null;

      const runningNode = [
        h('span', { class: 'version', testid: 'status-running-version' }, runningText),
        running ? null : h('span', { class: 'muted' }, 'not reported'),
        running ? h('span', { class: 'muted small', testid: 'status-running-version-raw' },
          [runningRaw && !runningText.includes(runningRaw) ? `raw ${runningRaw}` : null,
            running.slot != null ? `slot ${running.slot}` : null].filter(Boolean).join(' · ')) : null,
        reported(at.running),
      ];

      const pkgNode = pkg ? [
        h('span', null, [
          pkg.identifier != null ? `package ${pkg.identifier}` : null,
          pkg.version != null ? `v${versionText(pkg.version)}` : null,
          pkg.versioning_type != null ? versioningName(pkg.versioning_type) : null,
          pkg.slots != null ? `${pkg.slots} slot${pkg.slots === 1 ? '' : 's'}` : null,
        ].filter(Boolean).join(' · ')),
        reported(at.package)] : null;

      const storedNode = stored == null ? null : [
        stored.length === 0 ? h('span', { class: 'muted' }, 'no stored images') :
          h('ul', { class: 'slots' }, stored.map((s) => h('li', { testid: 'status-stored-slot', 'data-slot': s.slot },
            h('span', { class: 'slot-no' }, `slot ${s.slot}`), ' ',
            h('span', { class: 'version', title: versionRaw(s.version) || '' }, versionText(s.version) || '—'),
            running && running.slot === s.slot ? badge('running', 'ok') : ''))),
        reported(at.stored)];

      const hasSpace = st.heap_available != null || st.slot_size != null;
      const spaceNode = hasSpace ? [
        h('span', null, [
          st.heap_available != null ? `heap ${fmtBytes(st.heap_available)} free` : null,
          st.slot_size != null ? `slot size ${fmtBytes(st.slot_size)}` : null,
        ].filter(Boolean).join(' · ')),
        reported(at.space)] : null;

      const uptimeNode = st.uptime_s != null ? h('span', { testid: 'status-uptime-text' },
        `up ${fmtDuration(st.uptime_s)}`,
        parseTime(at.uptime) ? [', reported ', timeAgo(at.uptime)] : null) : null;

      const mfr = fmtId(st.manufacturer_id);
      const did = fmtId(st.device_id);

      return h('dl', { class: 'kv' },
        field('Running version', runningNode, 'status-running'),
        field('Package', pkgNode, 'status-package'),
        field('Stored slots', storedNode, 'status-stored'),
        field('Space', spaceNode, 'status-space'),
        field('Uptime', uptimeNode, 'status-uptime'),
        // Both ids come from one DeviceDescription answer: show its age once.
        field('Manufacturer ID', mfr ? [h('span', { class: 'mono' }, mfr), reported(at.description)] : null, 'status-manufacturer-id'),
        field('Device ID', did ? [h('span', { class: 'mono' }, did), mfr ? null : reported(at.description)] : null, 'status-device-id'));
    }

    // Latest request per command: the server's list, plus what this page sent but the server
    // list does not include yet.
    function renderRequests(list) {
      const byTime = (r) => (parseTime(r.requested_at) || new Date(0)).getTime();
      const latest = {};
      for (const r of list) {
        const cur = latest[r.command];
        if (!cur || byTime(r) > byTime(cur) || (byTime(r) === byTime(cur) && String(r.id) > String(cur.id))) latest[r.command] = r;
      }
      for (const [cmd, r] of Object.entries(localReqs)) {
        if (r.id != null && list.some((x) => String(x.id) === String(r.id))) { delete localReqs[cmd]; continue; }
        if (!latest[cmd] || byTime(r) >= byTime(latest[cmd])) latest[cmd] = r;
      }
      for (const c of VS_COMMANDS) setReqState(c.cmd, latest[c.cmd]);

      const recent = [...list].sort((a, b) => byTime(b) - byTime(a)).slice(0, 8);
      if (recent.length === 0) { recentReqs.replaceChildren(); return; }
      const label = (cmd) => (VS_COMMANDS.find((c) => c.cmd === cmd) || { label: cmd }).label.replace('…', '');
      recentReqs.replaceChildren(
        h('h3', { class: 'sub-title' }, 'Recent requests'),
        h('table', { class: 'table table-compact table-cards', testid: 'request-table' },
          h('thead', null, h('tr', null, h('th', null, 'Request'), h('th', null, 'Payload'), h('th', null, 'State'), h('th', null, 'Sent'), h('th', null, 'Answered'))),
          h('tbody', null, recent.map((r) => h('tr', { testid: 'request-row', 'data-state': r.state },
            h('td', { 'data-label': 'Request' }, label(r.command)),
            h('td', { 'data-label': 'Payload', class: 'mono' }, spacedHex(r.payload_hex) || '—'),
            h('td', { 'data-label': 'State' }, badge(r.state, stateKind(r.state), r.error || ''), r.error ? h('span', { class: 'small err-text' }, ' ', r.error) : null),
            h('td', { 'data-label': 'Sent' }, timeAgo(r.requested_at)),
            h('td', { 'data-label': 'Answered' }, timeAgo(r.answered_at)))))));
    }

    function stateKind(s) {
      return s === 'answered' ? 'ok' : s === 'failed' ? 'err' : s === 'pending' || s === 'sending' ? 'pending' : 'muted';
    }

    function setReqState(cmd, r) {
      const el = vsStates[cmd];
      const btn = vsButtons[cmd];
      const s = r ? r.state : 'none';
      el.setAttribute('data-state', s);
      btn.setAttribute('data-state', s);
      btn.classList.toggle('is-pending', s === 'pending' || s === 'sending');
      if (!r) { el.replaceChildren(h('span', { class: 'muted' }, 'not requested')); return; }
      if (s === 'sending') { el.replaceChildren(badge('sending…', 'pending')); return; }
      const parts = [badge(s, stateKind(s), r.error || '')];
      if (s === 'answered' && r.answered_at) parts.push(' ', timeAgo(r.answered_at));
      else if (r.requested_at) parts.push(' sent ', timeAgo(r.requested_at));
      if (s === 'failed' && r.error) parts.push(h('span', { class: 'err-text small' }, ` ${r.error}`));
      el.replaceChildren(...parts);
    }

    async function onCommand(c) {
      vsError.textContent = '';
      const body = { command: c.cmd };
      if (c.cmd === 'version_stored' && nbSlots.value !== '') {
        const n = Number(nbSlots.value);
        if (!Number.isInteger(n) || n < 0 || n > 15) { vsError.textContent = 'Number of slots must be a whole number from 0 to 15 (empty or 0: the device default).'; nbSlots.focus(); return; }
        body.nb_slots = n;
      }
      if (c.cmd === 'erase_slot') {
        const slot = await askEraseSlot();
        if (slot == null) return;
        body.slot = slot;
      }
      const btn = vsButtons[c.cmd];
      btn.disabled = true;
      const prev = localReqs[c.cmd];
      localReqs[c.cmd] = { command: c.cmd, state: 'sending', requested_at: new Date().toISOString() };
      setReqState(c.cmd, localReqs[c.cmd]);
      try {
        const res = await api('POST', `/api/devices/${encodeURIComponent(devEui)}/status-requests`, body);
        localReqs[c.cmd] = { id: res && res.id, command: c.cmd, state: 'pending', requested_at: new Date().toISOString(), payload_hex: res && res.payload_hex };
        setReqState(c.cmd, localReqs[c.cmd]);
        load();
      } catch (e) {
        if (prev) localReqs[c.cmd] = prev; else delete localReqs[c.cmd];
        if (device) renderRequests(Array.isArray(device.status_requests) ? device.status_requests : []);
        else setReqState(c.cmd, null);
        if (e.status !== 401) vsError.textContent = `${c.label.replace('…', '')}: ${e.message}`;
      } finally {
        btn.disabled = false;
      }
    }

    async function askEraseSlot() {
      const slots = device && device.status && device.status.package && device.status.package.slots;
      const input = h('input', { type: 'number', min: 0, max: 15, step: 1, required: true, id: 'erase-slot', class: 'input-small', testid: 'erase-slot-input' });
      const running = device && device.status && device.status.running;
      const chosen = await modal({
        title: 'Erase a firmware slot', testid: 'erase-dialog', danger: true, confirmLabel: 'Continue',
        body: [
          h('label', { for: 'erase-slot' }, 'Slot to erase (0–15)'), input,
          slots != null ? h('p', { class: 'muted small' }, `The device reported ${slots} slot${slots === 1 ? '' : 's'}.`) : null,
          running && running.slot != null ? h('p', { class: 'muted small' }, `Slot ${running.slot} holds the running firmware.`) : null,
        ],
        validate() {
          const n = Number(input.value);
          if (input.value === '' || !Number.isInteger(n) || n < 0 || n > 15) return 'Enter a slot number from 0 to 15.';
          return null;
        },
      });
      if (!chosen) return null;
      const slot = Number(input.value);
      const ok = await confirmDialog({
        title: `Erase slot ${slot}?`, testid: 'confirm-erase', danger: true, confirmLabel: `Erase slot ${slot}`,
        message: `The firmware image stored in slot ${slot} on ${devEui} will be erased. This cannot be undone.`,
      });
      return ok ? slot : null;
    }

    function uplinkTable(all) {
      if (all.length === 0) return h('p', { class: 'muted pad' }, 'No uplinks received yet.');
      const list = showAllUplinks ? all : all.slice(0, UPLINKS_SHOWN);
      const more = all.length > UPLINKS_SHOWN
        ? h('div', { class: 'more-row' },
          h('span', { class: 'muted' }, `Showing ${list.length} of ${all.length} uplinks`),
          h('button', {
            type: 'button', class: 'btn btn-small', testid: 'uplinks-toggle',
            onclick: () => { showAllUplinks = !showAllUplinks; uplinkBody.replaceChildren(uplinkTable(uplinks)); },
          }, showAllUplinks ? 'Show fewer' : `Show all ${all.length}`))
        : null;
      return h('div', null, h('table', { class: 'table table-cards uplinks', testid: 'uplink-table' },
        h('thead', null, h('tr', null,
          ['Time', 'FCnt', 'FPort', 'DR', 'RSSI', 'SNR', 'Data (hex)', 'Text', 'Decoded'].map((t) => h('th', null, t)))),
        h('tbody', null, list.map((u) => h('tr', { testid: 'uplink-row' },
          h('td', { 'data-label': 'Time', class: 'nowrap', title: relTime(u.received_at) }, fmtDateTime(u.received_at)),
          h('td', { 'data-label': 'FCnt', class: 'num' }, u.f_cnt ?? '—'),
          h('td', { 'data-label': 'FPort', class: 'num' }, u.f_port ?? '—'),
          h('td', { 'data-label': 'DR', class: 'num' }, u.dr ?? '—'),
          h('td', { 'data-label': 'RSSI', class: 'num nowrap' }, fmtNum(u.rssi, 'dBm')),
          h('td', { 'data-label': 'SNR', class: 'num nowrap' }, fmtNum(u.snr, 'dB')),
          h('td', { 'data-label': 'Hex', class: 'mono hex' }, spacedHex(u.data_hex) || dash()),
          h('td', { 'data-label': 'Text', class: 'text-cell' }, u.data_text != null ? u.data_text : dash()),
          h('td', { 'data-label': 'Decoded', class: 'mono json' }, u.object != null ? compactJson(u.object) : dash()))))), more);
    }

    function eventLog(events) {
      if (events.length === 0) return h('p', { class: 'muted' }, 'No events yet.');
      const sorted = [...events].sort((a, b) => ((parseTime(b.at) || 0) - (parseTime(a.at) || 0)));
      return h('ol', { class: 'events', testid: 'event-log' }, sorted.map((e) =>
        h('li', { class: 'event', testid: 'event-row', 'data-kind': e.kind },
          h('span', { class: 'event-time', title: fmtDateTime(e.at) }, fmtDateTime(e.at)),
          h('span', { class: 'event-kind' }, e.kind || 'event'),
          h('span', { class: 'event-msg' }, e.message || ''))));
    }

    // Running versions as the device reported them, and the campaigns that updated it.
    function firmwareHistory(entries) {
      if (entries.length === 0) return h('p', { class: 'muted' }, 'No version reported yet. Ask for the running version above.');
      return h('ol', { class: 'events', testid: 'firmware-history-list' }, entries.map((e) => {
        const kind = e.outcome ? (e.outcome === 'verified' || e.outcome === 'completed' ? 'status' : 'error') : 'request';
        return h('li', { class: 'event', testid: 'firmware-history-row', 'data-kind': kind },
          h('span', { class: 'event-time', title: fmtDateTime(e.at) }, fmtDateTime(e.at)),
          h('span', { class: 'event-kind' }, e.version ? e.version.display : (e.outcome || 'campaign')),
          h('span', { class: 'event-msg' },
            e.campaign_id ? [h('a', { href: `#/campaigns/${e.campaign_id}` }, `#${e.campaign_id}`), ' '] : null,
            e.message || ''));
      }));
    }

    // Downlink states as the server records them: requested -> enqueued -> sent ->
    // acknowledged / answered, or failed.
    function downlinkKind(state) {
      if (state === 'failed') return 'err';
      if (state === 'acknowledged' || state === 'answered') return 'ok';
      return 'pending';
    }

    function downlinkList(list) {
      if (!list || list.length === 0) return '';
      const label = (cmd) => (VS_COMMANDS.find((c) => c.cmd === cmd) || { label: cmd }).label.replace('…', '');
      const recent = list.slice(0, 10);
      return h('div', null,
        h('h3', { class: 'sub-title' }, 'Recent downlinks'),
        h('table', { class: 'table table-compact table-cards', testid: 'downlink-table' },
          h('thead', null, h('tr', null, ['Queued', 'FPort', 'Data (hex)', 'What', 'State'].map((t) => h('th', null, t)))),
          h('tbody', null, recent.map((d) => h('tr', { testid: 'downlink-row', 'data-state': d.state },
            h('td', { 'data-label': 'Queued', class: 'nowrap' }, timeAgo(d.requested_at)),
            h('td', { 'data-label': 'FPort', class: 'num' }, d.f_port ?? '—'),
            h('td', { 'data-label': 'Data', class: 'mono hex' }, spacedHex(d.data_hex) || '—'),
            h('td', { 'data-label': 'What' }, d.status_command ? label(d.status_command) : 'manual', d.confirmed ? h('span', { class: 'muted small' }, ' · confirmed') : null),
            h('td', { 'data-label': 'State' }, badge(d.state || '?', downlinkKind(d.state), d.error || ''),
              d.error ? h('span', { class: 'small err-text' }, ' ', d.error) : null))))),
        list.length > recent.length ? h('p', { class: 'muted small' }, `and ${list.length - recent.length} older`) : null);
    }

    function downlinkForm() {
      const fport = h('input', { type: 'number', min: 1, max: 223, step: 1, id: 'dl-fport', name: 'f_port', required: true, class: 'input-small', testid: 'downlink-fport' });
      const data = h('input', { type: 'text', id: 'dl-data', name: 'data_hex', placeholder: 'e.g. 01 02 0a', autocomplete: 'off', spellcheck: 'false', class: 'mono', testid: 'downlink-data' });
      const confirmed = h('input', { type: 'checkbox', id: 'dl-confirmed', name: 'confirmed', testid: 'downlink-confirmed' });
      const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'downlink-submit' }, 'Queue downlink');
      const result = h('p', { class: 'form-result', role: 'status', testid: 'downlink-result' });
      const inputs = { f_port: fport, data_hex: data, confirmed };
      const form = h('form', { class: 'form-grid', novalidate: true },
        h('label', { for: 'dl-fport' }, 'FPort'), fport,
        h('label', { for: 'dl-data' }, 'Payload (hex)'), data,
        h('span', null), h('label', { class: 'check' }, confirmed, ' Confirmed downlink'),
        h('span', null), h('div', null, submit),
        h('span', null), result);
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        for (const i of Object.values(inputs)) i.classList.remove('invalid');
        result.className = 'form-result';
        const port = Number(fport.value);
        const hex = data.value.replace(/[\s:]/g, '').toLowerCase();
        const fail = (msg, input) => {
          result.textContent = msg; result.classList.add('err-text');
          if (input) { input.classList.add('invalid'); input.focus(); }
        };
        if (!Number.isInteger(port) || port < 1 || port > 223) return fail('FPort must be a whole number from 1 to 223.', fport);
        if (!/^([0-9a-f]{2})*$/.test(hex)) return fail('Payload must be hex bytes, e.g. 01 02 0a.', data);
        submit.disabled = true;
        result.textContent = 'Queueing…';
        try {
          await api('POST', `/api/devices/${encodeURIComponent(devEui)}/downlinks`, { f_port: port, data_hex: hex, confirmed: confirmed.checked });
          result.textContent = `Queued ${hex.length / 2} byte${hex.length === 2 ? '' : 's'} on port ${port}.`;
          result.classList.add('ok-text');
          load();
        } catch (e) {
          load(); // a refused downlink is recorded too
          if (e.status !== 401) fail(e.message, e.field && inputs[e.field]);
        } finally {
          submit.disabled = false;
        }
      });
      return { form };
    }

    const refresh = debounce(load, 300);
    load();
    return {
      refresh: load,
      onEvent(type, data) {
        if (type === 'reconnect') { refresh(); return; }
        if (type === 'device' && data && typeof data.dev_eui === 'string' &&
          data.dev_eui.toLowerCase() === devEui.toLowerCase()) refresh();
        else if (type === 'device' && gone) refresh();
      },
      destroy() { refresh.cancel(); chartBox._ro && chartBox._ro.disconnect(); },
    };
  }

  // --- RSSI / SNR chart: inline SVG, two series on two y axes ---------------------------

  function niceTicks(min, max, count) {
    if (!(max > min)) { min -= 1; max += 1; }
    const raw = (max - min) / count;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const n = raw / mag;
    const step = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
    const lo = Math.floor(min / step) * step;
    const hi = Math.ceil(max / step) * step;
    const ticks = [];
    for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toFixed(6)));
    return { lo, hi, ticks };
  }

  function drawChart(box, uplinks) {
    box._uplinks = uplinks;
    if (!box._ro && typeof ResizeObserver !== 'undefined') {
      let lastW = 0;
      box._ro = new ResizeObserver(() => {
        const w = box.clientWidth;
        if (w && Math.abs(w - lastW) > 4) { lastW = w; renderChart(box, box._uplinks); }
      });
      box._ro.observe(box);
    }
    renderChart(box, uplinks);
  }

  function renderChart(box, uplinks) {
    const pts = (uplinks || [])
      .map((u) => ({ t: parseTime(u.received_at), rssi: u.rssi, snr: u.snr, fcnt: u.f_cnt }))
      .filter((p) => p.t)
      .sort((a, b) => a.t - b.t);
    const rssiPts = pts.filter((p) => Number.isFinite(Number(p.rssi)) && p.rssi !== null);
    const snrPts = pts.filter((p) => Number.isFinite(Number(p.snr)) && p.snr !== null);
    if (rssiPts.length === 0 && snrPts.length === 0) {
      box.replaceChildren(h('p', { class: 'muted' }, 'No signal data yet — the chart fills in as uplinks arrive.'));
      return;
    }
    const W = Math.max(280, box.clientWidth || 640);
    const H = W < 500 ? 220 : 260;
    const m = { l: 52, r: 52, t: 14, b: 34 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;

    const t0 = pts[0].t.getTime();
    let t1 = pts[pts.length - 1].t.getTime();
    const span = t1 - t0;
    const tPad = span === 0 ? 60000 : 0;
    const tx = (t) => m.l + (span === 0 ? iw / 2 : ((t - t0) / (t1 - t0)) * iw);
    if (tPad) t1 = t0;

    const rs = rssiPts.map((p) => Number(p.rssi));
    const ss = snrPts.map((p) => Number(p.snr));
    const ry = niceTicks(rs.length ? Math.min(...rs) : -120, rs.length ? Math.max(...rs) : -40, 4);
    const sy = niceTicks(ss.length ? Math.min(...ss) : -10, ss.length ? Math.max(...ss) : 10, 4);
    const yR = (v) => m.t + ih - ((v - ry.lo) / (ry.hi - ry.lo)) * ih;
    const yS = (v) => m.t + ih - ((v - sy.lo) / (sy.hi - sy.lo)) * ih;

    const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': `RSSI and SNR of the last ${pts.length} uplinks` });

    // grid + left (RSSI) axis
    for (const v of ry.ticks) {
      const y = yR(v);
      g.append(svg('line', { x1: m.l, x2: m.l + iw, y1: y, y2: y, class: 'grid-line' }));
      g.append(svg('text', { x: m.l - 6, y: y + 4, 'text-anchor': 'end', class: 'tick tick-rssi' }, String(v)));
    }
    // right (SNR) axis ticks
    for (const v of sy.ticks) {
      g.append(svg('text', { x: m.l + iw + 6, y: yS(v) + 4, 'text-anchor': 'start', class: 'tick tick-snr' }, String(v)));
    }
    // x axis
    g.append(svg('line', { x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih, class: 'axis-line' }));
    const multiDay = span > 20 * 3600 * 1000;
    const fmtT = (ms) => {
      const d = new Date(ms);
      const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
      return multiDay ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : (span < 120000 ? `${hm}:${pad(d.getSeconds())}` : hm);
    };
    const nx = span === 0 ? 1 : Math.max(2, Math.min(6, Math.floor(iw / (multiDay ? 110 : 80))));
    let lastLabel = null;
    for (let i = 0; i < nx; i++) {
      const t = span === 0 ? t0 : t0 + (span * i) / (nx - 1);
      const x = tx(t);
      const label = fmtT(t);
      g.append(svg('line', { x1: x, x2: x, y1: m.t + ih, y2: m.t + ih + 4, class: 'axis-line' }));
      if (label === lastLabel) continue; // short spans: don't repeat the same minute/second
      lastLabel = label;
      g.append(svg('text', { x, y: m.t + ih + 17, 'text-anchor': span === 0 ? 'middle' : i === 0 ? 'start' : i === nx - 1 ? 'end' : 'middle', class: 'tick' }, label));
    }
    // axis titles
    g.append(svg('text', { x: 12, y: m.t + ih / 2, transform: `rotate(-90 12 ${m.t + ih / 2})`, 'text-anchor': 'middle', class: 'axis-title tick-rssi' }, 'RSSI (dBm)'));
    g.append(svg('text', { x: W - 10, y: m.t + ih / 2, transform: `rotate(90 ${W - 10} ${m.t + ih / 2})`, 'text-anchor': 'middle', class: 'axis-title tick-snr' }, 'SNR (dB)'));
    g.append(svg('text', { x: m.l + iw / 2, y: H - 2, 'text-anchor': 'middle', class: 'axis-title' }, 'Time'));

    const series = (list, val, y, cls, unit) => {
      if (list.length > 1) {
        g.append(svg('polyline', { points: list.map((p) => `${tx(p.t.getTime()).toFixed(1)},${y(Number(val(p))).toFixed(1)}`).join(' '), class: `series ${cls}` }));
      }
      const r = list.length > 60 ? 2 : 3;
      for (const p of list) {
        g.append(svg('circle', { cx: tx(p.t.getTime()).toFixed(1), cy: y(Number(val(p))).toFixed(1), r, class: `dot ${cls}` },
          svg('title', null, `${fmtDateTime(p.t.toISOString())}${p.fcnt != null ? ` · FCnt ${p.fcnt}` : ''} · ${val(p)} ${unit}`)));
      }
    };
    series(snrPts, (p) => p.snr, yS, 'series-snr', 'dB');
    series(rssiPts, (p) => p.rssi, yR, 'series-rssi', 'dBm');

    const legend = h('div', { class: 'legend' },
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-rssi' }), 'RSSI (dBm, left axis)'),
      h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-snr' }), 'SNR (dB, right axis)'),
      h('span', { class: 'muted small' }, `${pts.length} uplink${pts.length === 1 ? '' : 's'}`));
    box.replaceChildren(legend, g);
  }

  // --- placeholders for pages another change fills in ---------------------------------

  function comingSoon(title, text) {
    return (view, ctx) => {
      ctx.setTitle(title);
      view.append(
        h('div', { class: 'page-head' }, h('h1', null, title)),
        h('section', { class: 'card empty-state', testid: 'coming-soon' },
          h('h2', null, 'Coming soon'),
          h('p', { class: 'muted' }, text)));
    };
  }

  // ---------------------------------------------------------------------------------------
  // Route table
  // ---------------------------------------------------------------------------------------

  // API tokens for scripts (shown once when created) and the integration endpoint.
  function settingsPage(view, ctx) {
    ctx.setTitle('Settings');
    const list = h('div', { testid: 'token-list' });
    const created = h('div', { testid: 'token-created' });
    const name = h('input', { type: 'text', placeholder: 'what it is for, e.g. grafana', testid: 'token-name', maxlength: '100' });
    const message = h('p', { class: 'muted' });
    async function load() {
      const tokens = await api('GET', '/api/tokens');
      list.replaceChildren(tokens.length === 0
        ? h('p', { class: 'muted' }, 'No API tokens yet.')
        : h('table', { class: 'table' },
            h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'User'), h('th', null, 'Created'), h('th', null, 'Last used'), h('th', null, ''))),
            h('tbody', null, tokens.map((t) => h('tr', { testid: 'token-row' },
              h('td', null, t.name), h('td', null, t.username), h('td', null, t.created_at), h('td', null, t.last_used_at || 'never'),
              h('td', null, h('button', { class: 'btn danger', type: 'button', onclick: async () => {
                if (!confirm(`Revoke the API token "${t.name}"? Scripts using it stop working.`)) return;
                await api('DELETE', `/api/tokens/${t.id}`);
                load();
              } }, 'Revoke')))))));
    }
    async function create(ev) {
      ev.preventDefault();
      message.textContent = '';
      try {
        const t = await api('POST', '/api/tokens', { name: name.value.trim() });
        created.replaceChildren(h('section', { class: 'card' },
          h('p', null, 'Copy this token now; it is not shown again:'),
          h('pre', { testid: 'token-secret' }, t.token)));
        name.value = '';
        load();
      } catch (e) { message.textContent = e.message; }
    }
    view.append(
      h('div', { class: 'page-head' }, h('h1', null, 'Settings')),
      h('section', { class: 'card' },
        h('h2', null, 'API tokens'),
        h('p', { class: 'muted' }, 'Scripts authenticate with "Authorization: Bearer <token>". Tokens are stored hashed.'),
        h('form', { onsubmit: create }, name, ' ', h('button', { class: 'btn', type: 'submit', testid: 'token-create' }, 'Create token'), message),
        created, list),
      h('section', { class: 'card' },
        h('h2', null, 'ChirpStack integration'),
        h('p', null, 'HTTP integration URL: ', h('code', null, `${location.origin}/api/integrations/chirpstack`)),
        h('p', { class: 'muted' }, 'Header: Authorization = Bearer <integration token> (printed by the server on its first start, or set with integration.token).')));
    load().catch((e) => { message.textContent = e.message; });
  }
  route('/devices', devicesPage, { nav: 'Devices' });
  route('/devices/:devEui', devicePage);
  route('/firmware', comingSoon('Firmware', 'Upload firmware images and manage their versions here.'), { nav: 'Firmware' });
  route('/campaigns', comingSoon('Campaigns', 'Plan and follow firmware-update-over-the-air campaigns here.'), { nav: 'Campaigns' });
  route('/settings', settingsPage, { nav: 'Settings' });

  // What other console scripts (fuota.js) build their pages with.
  window.lorafleet = {
    route, api, ApiError, isAbort, navigate, h, svg, debounce, badge, errorBox, toast, modal, confirmDialog,
    fmtDateTime, fmtDuration, fmtBytes, relTime, timeAgo, niceTicks, netNow,
    csrfToken: () => (state.session && state.session.csrf_token) || null,
    info: () => state.info,
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
