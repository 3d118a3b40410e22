// @ts-check
// What the signed-in user may do. The server enforces it (403 naming the role needed); the
// console only leaves out what would be refused, so a viewer sees no button it cannot use.
import { state } from './api.js';
import { toast } from './dialogs.js';
import { h } from './dom.js';

/** @typedef {'read' | 'operate' | 'admin'} Scope */

/** @type {Record<Scope, number>} */
const RANK = { read: 0, operate: 1, admin: 2 };

/** The role that grants a scope, in the operator's words. */
/** @type {Record<Scope, string>} */
export const ROLE_OF = { read: 'viewer', operate: 'operator', admin: 'admin' };

/** @type {Record<string, string>} */
export const ROLE_HELP = {
  viewer: 'reads everything, changes nothing',
  operator: 'also sends requests and downlinks, manages firmware and campaigns',
  admin: 'also manages users, API tokens and settings',
};

/** @returns {Scope} the session's scope; unknown counts as read-only */
export function scope() {
  const s = state.session && /** @type {any} */ (state.session).scope;
  return s === 'operate' || s === 'admin' ? s : 'read';
}

/** @param {Scope} need */
export const can = (need) => RANK[scope()] >= RANK[need];

/** @returns {Scope[]} the scopes a token made now may have: never wider than the user's */
export const grantable = () => /** @type {Scope[]} */ (['read', 'operate', 'admin']).filter((s) => can(s));

/**
 * Copies text to the clipboard; where the Clipboard API is refused (an insecure origin), the
 * text is selected so Ctrl+C finishes the job.
 * @param {string} text
 * @param {HTMLElement} [source]  the element showing the text, selected on failure
 */
async function copy(text, source) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Copied to the clipboard', 'ok');
  } catch {
    if (source) {
      const range = document.createRange();
      range.selectNodeContents(source);
      const sel = window.getSelection();
      if (sel) { sel.removeAllRanges(); sel.addRange(range); }
    }
    toast('Copy refused by the browser: the text is selected, press Ctrl+C', 'info');
  }
}

/**
 * A secret shown once, with a copy button.
 * @param {string} label  what it is, e.g. "API token"
 * @param {string} secret
 * @param {string} testid
 */
export function shownOnce(label, secret, testid) {
  const code = h('code', { class: 'secret', testid: `${testid}-secret` }, secret);
  return h('div', { class: 'alert alert-info shown-once', role: 'status', testid },
    h('p', null, h('strong', null, `New ${label}. `), 'Copy it now: it is not shown again.'),
    h('div', { class: 'secret-line' }, code,
      h('button', { type: 'button', class: 'btn btn-small', testid: `${testid}-copy`, onclick: () => copy(secret, code) }, 'Copy')));
}

/**
 * A copy button for a value shown elsewhere.
 * @param {string} text
 * @param {string} label  its accessible name, e.g. "Copy the integration URL"
 * @param {string} [testid]
 */
export const copyButton = (text, label, testid) =>
  h('button', { type: 'button', class: 'btn btn-small', 'aria-label': label, testid, onclick: () => copy(text) }, 'Copy');
