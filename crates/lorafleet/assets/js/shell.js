// @ts-check
// The shell around the pages: login form, top bar, banner, footer.
import { api, messageOf, setUnauthorizedHandler, state, statusOf } from './api.js';
import { setNetClock } from './clock.js';
import { h, errorBox, logo } from './dom.js';
import { ROLE_OF, scope } from './access.js';
import { currentPath, focusHeading, router, routes } from './router.js';
import { startStream, stopStream } from './stream.js';

const appRoot = () => /** @type {HTMLElement} */ (document.getElementById('app'));

function sessionExpired() {
  if (!state.session) return;
  state.session = null;
  stopStream();
  router.teardown();
  renderLogin('Your session has ended. Please sign in again.');
}

/**
 * @param {HTMLFormElement} form
 * @param {HTMLInputElement} username
 * @param {HTMLInputElement} password
 * @param {HTMLButtonElement} submit
 * @param {HTMLElement} error
 */
function onLogin(form, username, password, submit, error) {
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
      state.session = await api('POST', '/api/session', { username: username.value.trim(), password: password.value }, { noAuthRedirect: true });
      await enterApp();
    } catch (e) {
      error.textContent = statusOf(e) === 401 ? 'Wrong username or password.' : messageOf(e) || 'Sign-in failed.';
      password.select();
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });
}

/** @param {string} [notice] */
function renderLogin(notice) {
  router.teardown();
  router.view = null;
  document.title = 'Sign in · lorafleet';
  const username = h('input', { id: 'login-username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false', testid: 'login-username' });
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, testid: 'login-password' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary btn-block', testid: 'login-submit' }, 'Sign in');
  const error = h('p', { class: 'form-error', role: 'alert', testid: 'login-error' });
  const form = h('form', { class: 'login-card', novalidate: true },
    h('h1', { class: 'login-brand' }, logo(), h('span', null, 'lorafleet')),
    h('p', { class: 'login-sub' }, 'Sign in to manage your LoRaWAN fleet'),
    notice ? h('p', { class: 'alert alert-info', testid: 'login-notice' }, notice) : null,
    h('label', { for: 'login-username' }, 'Username'), username,
    h('label', { for: 'login-password' }, 'Password'), password,
    error, submit);
  onLogin(form, username, password, submit, error);
  appRoot().replaceChildren(h('main', { class: 'login-page' }, form));
  username.focus();
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
    if (statusOf(e) === 401) return;
    state.info = null; // the console still works without it
  }
  renderShell();
  startStream();
  if (currentPath() === '/' || currentPath() === '') location.replace('#/devices');
  router.render();
}

/** Skips the top bar: focuses the page's heading (a hash link would be taken for a route). */
function skipLink() {
  return h('a', {
    class: 'skip-link', href: '#view', testid: 'skip-link',
    onclick: (/** @type {Event} */ ev) => { ev.preventDefault(); focusHeading(); },
  }, 'Skip to content');
}

function topBar() {
  const session = state.session || { username: '' };
  const nav = h('nav', { class: 'nav', 'aria-label': 'Main' },
    routes.filter((r) => r.nav).map((r) =>
      h('a', { href: '#' + r.pattern, testid: `nav-${r.pattern.split('/')[1]}` }, r.nav)));
  const liveDot = h('span', { class: 'live', testid: 'live-indicator', title: 'Live updates', 'data-state': 'connecting' },
    h('span', { class: 'live-dot', 'aria-hidden': 'true' }), h('span', { class: 'live-text' }, 'connecting'));
  return h('header', { class: 'topbar', testid: 'topbar' },
    h('a', { class: 'brand', href: '#/devices' }, logo(), h('span', null, 'lorafleet')),
    nav,
    h('div', { class: 'topbar-right' },
      liveDot,
      h('span', { class: 'user', testid: 'current-user', title: `Signed in user, role ${ROLE_OF[scope()]}` }, session.username),
      h('button', { type: 'button', class: 'btn btn-ghost btn-small', testid: 'logout', onclick: logout }, 'Log out')));
}

/** @param {any} net */
function networkBanner(net) {
  if (net.simulated === true) {
    const scale = Number(net.time_scale) || 1;
    return h('div', { class: 'sim-banner', testid: 'simulated-banner' },
      'Simulated network — devices are virtual' +
      (scale !== 1 ? `; fleet times are simulated time, which runs ×${scale} real time` : ''));
  }
  if (net.kind === 'none') {
    return h('div', { class: 'sim-banner net-none-banner', testid: 'network-banner' },
      'No network server configured — uplinks are received, but requests and downlinks cannot be sent');
  }
  return null;
}

function renderShell() {
  const info = state.info || {};
  const net = info.network || {};
  const view = h('main', { class: 'view', id: 'view', tabindex: '-1' });
  const footerBits = ['lorafleet'];
  if (info.version) footerBits.push(`v${info.version}`);
  if (net.kind) footerBits.push(`network: ${net.kind}${net.region ? ` (${net.region})` : ''}`);
  const footer = h('footer', { class: 'footer', testid: 'footer' }, footerBits.join(' · '));
  document.body.setAttribute('data-scope', scope());
  appRoot().replaceChildren(skipLink(), topBar(), networkBanner(net) || '', view, footer);
  router.view = view;
}

export async function boot() {
  setUnauthorizedHandler(sessionExpired);
  try {
    state.session = await api('GET', '/api/session', undefined, { noAuthRedirect: true });
    await enterApp();
  } catch (e) {
    if (statusOf(e) === 401) { renderLogin(); return; }
    appRoot().replaceChildren(h('main', { class: 'login-page' },
      h('div', { class: 'login-card' },
        h('h1', { class: 'login-brand' }, logo(), h('span', null, 'lorafleet')),
        errorBox(messageOf(e) || 'The server could not be reached.', () => boot()))));
  }
}
