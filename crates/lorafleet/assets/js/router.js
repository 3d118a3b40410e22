// @ts-check
// Hash routes (#/devices/:devEui): one page on screen at a time, torn down when left.
import { h, errorBox } from './dom.js';
import { closeDialogs } from './dialogs.js';

/**
 * @typedef {object} Route
 * @property {string} pattern
 * @property {string[]} parts
 * @property {import('./types.js').Page} page
 * @property {string | null} nav   the top bar's label, if the page has one
 */

/** @type {Route[]} */
export const routes = [];

/**
 * Register a page. pattern like '/devices/:devEui'; opts.nav adds a top-bar entry.
 * @param {string} pattern
 * @param {import('./types.js').Page} page
 * @param {{ nav?: string }} [opts]
 */
export function route(pattern, page, opts = {}) {
  routes.push({ pattern, parts: pattern.split('/').filter(Boolean), page, nav: opts.nav || null });
}

/** @param {string} path */
function matchRoute(path) {
  const parts = path.split('/').filter(Boolean);
  for (const r of routes) {
    if (r.parts.length !== parts.length) continue;
    /** @type {Record<string, string>} */
    const params = {};
    let ok = true;
    for (let i = 0; i < parts.length && ok; i++) {
      const p = r.parts[i];
      if (p.startsWith(':')) {
        try { params[p.slice(1)] = decodeURIComponent(parts[i]); } catch { ok = false; }
      } else if (p !== parts[i]) ok = false;
    }
    if (ok) return { route: r, params };
  }
  return null;
}

export function currentPath() {
  const hash = location.hash.replace(/^#/, '');
  return hash.split('?')[0] || '/';
}

/** @param {string} name  a parameter of the hash's query (#/campaigns/new?firmware=3) */
export function queryParam(name) {
  const q = location.hash.split('?')[1] || '';
  return new URLSearchParams(q).get(name);
}

/** @param {string} path */
export function navigate(path) {
  if (currentPath() === path) router.render(); else location.hash = '#' + path;
}

/** @param {string} path */
function markNav(path) {
  const section = path.split('/')[1];
  for (const a of document.querySelectorAll('.nav a')) {
    const seg = (a.getAttribute('href') || '').replace(/^#/, '').split('/')[1];
    a.classList.toggle('active', section === seg);
    if (section === seg) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

/** @param {HTMLElement} view */
function notFound(view) {
  document.title = 'Not found · lorafleet';
  view.append(h('section', { class: 'empty-state' },
    h('h1', null, 'Page not found'),
    h('p', null, h('a', { href: '#/devices' }, 'Go to devices'))));
}

/**
 * Moves focus to the page's heading, so a screen reader announces the new page and the next
 * Tab starts in it. Pages that load first show their h1 a moment later: wait for it (2 s).
 */
export function focusHeading() {
  const view = router.view;
  if (!view) return;
  const focus = () => {
    const h1 = view.querySelector('h1');
    if (!h1) return false;
    if (!h1.hasAttribute('tabindex')) h1.setAttribute('tabindex', '-1');
    h1.focus({ preventScroll: true });
    return true;
  };
  if (focus()) return;
  const obs = new MutationObserver(() => { if (focus()) obs.disconnect(); });
  obs.observe(view, { childList: true, subtree: true });
  setTimeout(() => obs.disconnect(), 2000);
}

/** Whether focus is where the user put it on the new page (a field), not on what was left. */
const focusTaken = () => {
  const a = document.activeElement;
  return Boolean(a && a !== document.body && router.view && router.view.contains(a));
};

export const router = {
  /** Whether a page was shown before: the first one keeps the browser's own focus. */
  shown: false,

  /** @type {import('./types.js').PageHandle | null} what the page function returned */
  current: null,
  /** @type {AbortController | null} */
  controller: null,
  /** @type {HTMLElement | null} where pages go; null while signed out */
  view: null,

  teardown() {
    // Leaving the page cancels its dialogs, so an erase confirmed after navigating can never
    // hit a device no longer on screen.
    closeDialogs();
    if (this.controller) this.controller.abort();
    if (this.current && this.current.destroy) {
      try { this.current.destroy(); } catch (e) { console.error(e); }
    }
    this.current = null;
    this.controller = null;
  },

  render() {
    if (!this.view) return;
    const path = currentPath();
    if (path === '/' || path === '') { location.replace('#/devices'); return; }
    this.teardown();
    const view = this.view;
    view.replaceChildren();
    window.scrollTo(0, 0);
    markNav(path);
    const m = matchRoute(path);
    if (!m) { notFound(view); focusHeading(); return; }
    this.controller = new AbortController();
    /** @type {import('./types.js').PageCtx} */
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
      view.append(errorBox('This page failed to render: ' + (e instanceof Error ? e.message : String(e))));
    }
    if (this.shown && !focusTaken()) focusHeading();
    this.shown = true;
  },
};

window.addEventListener('hashchange', () => router.render());
