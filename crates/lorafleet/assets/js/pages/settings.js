// @ts-check
// #/settings: API tokens for scripts (shown once when created) and the integration endpoint.
import { api, messageOf } from '../api.js';
import { confirmDialog } from '../dialogs.js';
import { h } from '../dom.js';

/**
 * @param {any[]} tokens
 * @param {(t: any) => void} revoke
 */
function tokenTable(tokens, revoke) {
  if (tokens.length === 0) return h('p', { class: 'muted' }, 'No API tokens yet.');
  return h('table', { class: 'table' },
    h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'User'), h('th', null, 'Created'), h('th', null, 'Last used'), h('th', null, ''))),
    h('tbody', null, tokens.map((t) => h('tr', { testid: 'token-row' },
      h('td', null, t.name), h('td', null, t.username), h('td', null, t.created_at), h('td', null, t.last_used_at || 'never'),
      h('td', null, h('button', { class: 'btn danger', type: 'button', testid: 'token-revoke', onclick: () => revoke(t) }, 'Revoke'))))));
}

/** @type {import('../types.js').Page} */
export function settingsPage(view, ctx) {
  ctx.setTitle('Settings');
  const list = h('div', { testid: 'token-list' });
  const created = h('div', { testid: 'token-created' });
  const name = h('input', { type: 'text', placeholder: 'what it is for, e.g. grafana', testid: 'token-name', maxlength: '100' });
  const message = h('p', { class: 'muted' });

  /** @param {any} t */
  async function revoke(t) {
    const ok = await confirmDialog({ title: `Revoke the API token "${t.name}"?`, message: 'Scripts using it stop working.', danger: true, confirmLabel: 'Revoke', testid: 'confirm-revoke' });
    if (!ok) return;
    try { await api('DELETE', `/api/tokens/${t.id}`); } catch (e) { message.textContent = messageOf(e); }
    load();
  }
  async function load() {
    try { list.replaceChildren(tokenTable(await api('GET', '/api/tokens', undefined, { signal: ctx.signal }), revoke)); } catch (e) { message.textContent = messageOf(e); }
  }
  /** @param {Event} ev */
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
    } catch (e) { message.textContent = messageOf(e); }
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
  load();
  return { refresh: load };
}
