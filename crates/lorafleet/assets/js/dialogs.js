// @ts-check
// Toasts and modal dialogs (<dialog>), never the browser's own confirm().
import { h } from './dom.js';

/**
 * Toast notification (bottom-right on desktop, bottom on phones).
 * @param {string} message
 * @param {'info' | 'ok' | 'error'} [kind]
 */
export function toast(message, kind = 'info') {
  let box = document.querySelector('.toasts');
  if (!box) { box = h('div', { class: 'toasts', 'aria-live': 'polite' }); document.body.append(box); }
  const t = h('div', { class: `toast toast-${kind}`, testid: 'toast' }, message);
  box.append(t);
  setTimeout(() => t.classList.add('toast-out'), 3500);
  setTimeout(() => t.remove(), 4000);
}

/**
 * @typedef {object} ModalOpts
 * @property {string} title
 * @property {import('./dom.js').Child} body
 * @property {string} [confirmLabel]
 * @property {boolean} [danger]
 * @property {string} [testid]
 * @property {() => string | null} [validate]  an error string blocks the confirm button
 */

/**
 * Modal dialog built on <dialog>; resolves to true when confirmed, false on cancel / Escape.
 * @param {ModalOpts} opts
 * @returns {Promise<boolean>}
 */
export function modal({ title, body, confirmLabel = 'OK', danger = false, testid = 'dialog', validate }) {
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

/** @param {Omit<ModalOpts, 'body'> & { message: string }} opts */
export function confirmDialog(opts) {
  return modal({ ...opts, body: h('p', null, opts.message) });
}

/** Closes every open dialog: a dialog belongs to the page that opened it. */
export function closeDialogs() {
  for (const dlg of document.querySelectorAll('dialog.dialog')) /** @type {HTMLDialogElement} */ (dlg).close();
}
