// @ts-check
// #/settings: the signed-in user's role; for admins the users, the API tokens (shown once,
// with a copy button) and the ChirpStack integration token's rotation.
import { ROLE_HELP, ROLE_OF, can, copyButton, grantable, scope, shownOnce } from '../access.js';
import { api, messageOf, state } from '../api.js';
import { absTime } from '../clock.js';
import { confirmDialog, modal, toast } from '../dialogs.js';
import { card, h } from '../dom.js';

const ROLES = ['viewer', 'operator', 'admin'];

/** @param {string} [text] */
const actionsHead = (text = 'Actions') => h('th', { scope: 'col' }, text);

/**
 * A labelled <select>.
 * @param {string} id
 * @param {string} label
 * @param {string[]} values
 * @param {string} value
 * @param {Record<string, string>} [texts]
 */
function select(id, label, values, value, texts = {}) {
  const el = h('select', { id, name: id, testid: id },
    values.map((v) => h('option', { value: v, selected: v === value }, texts[v] || v)));
  return { el, field: h('div', { class: 'field' }, h('label', { for: id }, label), el) };
}

/**
 * @param {string} id
 * @param {string} label
 * @param {Record<string, string | boolean>} [attrs]
 */
function input(id, label, attrs = {}) {
  const el = h('input', { id, name: id, testid: id, ...attrs });
  return { el, field: h('div', { class: 'field' }, h('label', { for: id }, label), el) };
}

/**
 * @param {any} u
 * @param {() => void} reload
 */
function passwordDialog(u, reload) {
  const pw = h('input', { id: 'new-password', type: 'password', autocomplete: 'new-password', testid: 'new-password' });
  return modal({
    title: `New password for ${u.username}`,
    body: [h('label', { for: 'new-password' }, 'Password (at least 8 characters)'), pw,
      h('p', { class: 'muted small' }, 'The user\'s sessions end at once.')],
    confirmLabel: 'Change password',
    testid: 'password-dialog',
    validate: () => (pw.value.length < 8 ? 'The password needs at least 8 characters.' : null),
  }).then(async (ok) => {
    if (!ok) return;
    try { await api('PATCH', `/api/users/${encodeURIComponent(u.username)}`, { password: pw.value }); toast(`Password of ${u.username} changed`, 'ok'); } catch (e) { toast(messageOf(e), 'error'); }
    reload();
  });
}

/**
 * @param {any} u
 * @param {() => void} reload
 */
async function setDisabled(u, reload) {
  const disabled = !u.disabled;
  if (disabled) {
    const ok = await confirmDialog({
      title: `Disable ${u.username}?`,
      message: 'They are signed out at once and their API tokens stop working. You can enable them again.',
      confirmLabel: 'Disable', danger: true, testid: 'confirm-disable',
    });
    if (!ok) return;
  }
  try { await api('PATCH', `/api/users/${encodeURIComponent(u.username)}`, { disabled }); } catch (e) { toast(messageOf(e), 'error'); }
  reload();
}

/**
 * @param {any} u
 * @param {string} role
 * @param {() => void} reload
 */
async function setRole(u, role, reload) {
  try { await api('PATCH', `/api/users/${encodeURIComponent(u.username)}`, { role }); toast(`${u.username} is now ${role}`, 'ok'); } catch (e) { toast(messageOf(e), 'error'); }
  reload();
}

/**
 * @param {any[]} users
 * @param {() => void} reload
 */
function userTable(users, reload) {
  const me = state.session ? state.session.username : '';
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table table-cards', testid: 'user-table' },
    h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'User'), h('th', { scope: 'col' }, 'Role'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Created'), actionsHead())),
    h('tbody', null, users.map((u) => {
      const role = select(`role-${u.username}`, 'Role', ROLES, u.role);
      role.el.setAttribute('aria-label', `Role of ${u.username}`);
      role.el.addEventListener('change', () => setRole(u, role.el.value, reload));
      return h('tr', { testid: 'user-row', 'data-username': u.username },
        h('td', { 'data-label': 'User' }, h('strong', null, u.username), u.username === me ? h('span', { class: 'muted small' }, ' (you)') : null),
        h('td', { 'data-label': 'Role' }, role.el),
        h('td', { 'data-label': 'Status', testid: 'user-status' }, u.disabled ? h('span', { class: 'badge badge-err' }, 'disabled') : h('span', { class: 'badge badge-ok' }, 'enabled')),
        h('td', { 'data-label': 'Created' }, absTime(u.created_at, { real: true })),
        h('td', { 'data-label': 'Actions' }, h('div', { class: 'row-actions' },
          h('button', { type: 'button', class: 'btn btn-small', testid: 'user-password', onclick: () => passwordDialog(u, reload) }, 'Change password'),
          h('button', { type: 'button', class: `btn btn-small ${u.disabled ? '' : 'btn-danger-outline'}`, testid: 'user-disable', onclick: () => setDisabled(u, reload) }, u.disabled ? 'Enable' : 'Disable'))));
    }))));
}

/** @param {AbortSignal} signal */
function usersCard(signal) {
  const list = h('div', { testid: 'user-list' }, h('p', { class: 'muted' }, 'Loading…'));
  const name = input('user-name', 'User name', { autocomplete: 'off', required: true, maxlength: '100' });
  const pw = input('user-password-new', 'Password', { type: 'password', autocomplete: 'new-password', required: true });
  const role = select('user-role', 'Role', ROLES, 'viewer');
  const message = h('p', { class: 'form-error', role: 'alert', testid: 'user-error' });
  async function load() {
    try { list.replaceChildren(userTable(await api('GET', '/api/users', undefined, { signal }), load)); } catch (e) { list.replaceChildren(h('p', { class: 'form-error' }, messageOf(e))); }
  }
  /** @param {Event} ev */
  async function create(ev) {
    ev.preventDefault();
    message.textContent = '';
    try {
      await api('POST', '/api/users', { username: name.el.value.trim(), password: pw.el.value, role: role.el.value });
      toast(`User ${name.el.value.trim()} added`, 'ok');
      name.el.value = ''; pw.el.value = '';
      load();
    } catch (e) { message.textContent = messageOf(e); }
  }
  const form = h('form', { class: 'inline-form', onsubmit: create, novalidate: true, testid: 'user-form' },
    name.field, pw.field, role.field,
    h('div', { class: 'field field-submit' }, h('button', { class: 'btn btn-primary', type: 'submit', testid: 'user-create' }, 'Add user')));
  load();
  return { el: card('Users', h('p', { class: 'muted' }, ROLES.map((r, i) => [i ? '; ' : '', h('strong', null, r), ` ${ROLE_HELP[r]}`]), '.'), form, message, list), load };
}

/**
 * @param {any[]} tokens
 * @param {(t: any) => void} revoke
 */
function tokenTable(tokens, revoke) {
  if (tokens.length === 0) return h('p', { class: 'muted' }, 'No API tokens yet.');
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table table-cards', testid: 'token-table' },
    h('thead', null, h('tr', null, ['Name', 'Scope', 'User', 'Created', 'Last used'].map((c) => h('th', { scope: 'col' }, c)), actionsHead())),
    h('tbody', null, tokens.map((t) => h('tr', { testid: 'token-row' },
      h('td', { 'data-label': 'Name' }, t.name),
      h('td', { 'data-label': 'Scope', testid: 'token-scope' }, t.scope),
      h('td', { 'data-label': 'User' }, t.username),
      h('td', { 'data-label': 'Created' }, absTime(t.created_at, { real: true })),
      h('td', { 'data-label': 'Last used' }, t.last_used_at ? absTime(t.last_used_at, { real: true }) : h('span', { class: 'muted' }, 'never')),
      h('td', { 'data-label': 'Actions' }, h('button', { class: 'btn btn-small btn-danger-outline', type: 'button', testid: 'token-revoke', onclick: () => revoke(t) }, 'Revoke')))))));
}

/** @param {AbortSignal} signal */
function tokensCard(signal) {
  const list = h('div', { testid: 'token-list' });
  const created = h('div', { testid: 'token-created' });
  const name = input('token-name', 'What it is for', { placeholder: 'e.g. grafana', maxlength: '100', autocomplete: 'off' });
  const scopes = grantable();
  const sc = select('token-scope', 'Scope', scopes, scopes.includes('read') ? 'read' : scopes[0],
    { read: 'read (GET only)', operate: 'operate (also requests, downlinks, campaigns)', admin: 'admin (also users, tokens, settings)' });
  const message = h('p', { class: 'form-error', role: 'alert', testid: 'token-error' });

  /** @param {any} t */
  async function revoke(t) {
    const ok = await confirmDialog({ title: `Revoke the API token "${t.name}"?`, message: 'Scripts using it stop working at once.', danger: true, confirmLabel: 'Revoke', testid: 'confirm-revoke' });
    if (!ok) return;
    try { await api('DELETE', `/api/tokens/${t.id}`); } catch (e) { message.textContent = messageOf(e); }
    load();
  }
  async function load() {
    try { list.replaceChildren(tokenTable(await api('GET', '/api/tokens', undefined, { signal }), revoke)); } catch (e) { message.textContent = messageOf(e); }
  }
  /** @param {Event} ev */
  async function create(ev) {
    ev.preventDefault();
    message.textContent = '';
    try {
      const t = await api('POST', '/api/tokens', { name: name.el.value.trim(), scope: sc.el.value });
      created.replaceChildren(shownOnce(`API token "${t.name}" (scope ${t.scope})`, t.token, 'token-shown'));
      name.el.value = '';
      load();
    } catch (e) { message.textContent = messageOf(e); }
  }
  load();
  return {
    el: card('API tokens',
      h('p', { class: 'muted' }, 'Scripts authenticate with "Authorization: Bearer <token>". A token\'s scope is never wider than your role; tokens are stored hashed.'),
      h('form', { class: 'inline-form', onsubmit: create, novalidate: true }, name.field, sc.field,
        h('div', { class: 'field field-submit' }, h('button', { class: 'btn btn-primary', type: 'submit', testid: 'token-create' }, 'Create token'))),
      message, created, list),
    load,
  };
}

/** @param {AbortSignal} signal */
function integrationCard(signal) {
  const url = `${location.origin}/api/integrations/chirpstack`;
  const tokenBox = h('div', { testid: 'integration-token' });
  async function rotate() {
    const ok = await confirmDialog({
      title: 'Rotate the integration token?',
      message: 'The current token stops working at once: ChirpStack\'s HTTP integration needs the new one, shown once.',
      confirmLabel: 'Rotate', danger: true, testid: 'confirm-rotate',
    });
    if (!ok) return;
    try {
      const r = await api('POST', '/api/settings/integration-token/rotate');
      tokenBox.replaceChildren(shownOnce('integration token', r.token, 'integration-shown'));
    } catch (e) { toast(messageOf(e), 'error'); }
  }
  async function load() {
    if (!can('admin')) return;
    try {
      const info = await api('GET', '/api/settings/integration-token', undefined, { signal });
      tokenBox.replaceChildren(info.rotatable
        ? h('div', { class: 'toolbar' }, h('span', null, 'The token was generated by lorafleet (kept as a hash).'),
          h('button', { type: 'button', class: 'btn btn-danger-outline', testid: 'integration-rotate', onclick: rotate }, 'Rotate token'))
        : h('p', { class: 'muted' }, 'The token is set in the configuration (integration.token); change it there.'));
    } catch (e) { tokenBox.replaceChildren(h('p', { class: 'form-error' }, messageOf(e))); }
  }
  load();
  return card('ChirpStack integration',
    h('p', { class: 'secret-line' }, 'HTTP integration URL: ', h('code', { testid: 'integration-url' }, url), copyButton(url, 'Copy the integration URL', 'integration-url-copy')),
    h('p', { class: 'muted' }, 'Header: Authorization = Bearer <integration token>.'),
    tokenBox);
}

/** @type {import('../types.js').Page} */
export function settingsPage(view, ctx) {
  ctx.setTitle('Settings');
  const me = state.session ? state.session.username : '';
  const role = ROLE_OF[scope()];
  const account = card('Your account',
    h('p', { testid: 'my-role' }, 'Signed in as ', h('strong', null, me), ', role ', h('strong', null, role), `: ${ROLE_HELP[role]}.`),
    can('admin') ? null : h('p', { class: 'muted' }, 'Users, API tokens and the integration token are managed by an admin.'));
  /** @type {(() => Promise<void>)[]} */
  const loaders = [];
  const cards = [account];
  if (can('admin')) {
    const users = usersCard(ctx.signal);
    const tokens = tokensCard(ctx.signal);
    cards.push(users.el, tokens.el);
    loaders.push(users.load, tokens.load);
  }
  cards.push(integrationCard(ctx.signal));
  view.append(h('div', { class: 'page-head' }, h('h1', null, 'Settings')), h('div', { class: 'settings' }, cards));
  return { refresh: async () => { await Promise.all(loaders.map((l) => l())); } };
}
