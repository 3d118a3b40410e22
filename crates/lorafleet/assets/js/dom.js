// @ts-check
// Building DOM. Every server- or device-supplied string becomes a Text node (h() children) or
// textContent; innerHTML is never used, so nothing a device sends is parsed as HTML.

/** @typedef {Node | string | number | null | undefined | false} Leaf */
// Nested lists, as page code builds them (three levels; JSDoc aliases cannot recurse).
/** @typedef {Leaf | Leaf[] | (Leaf | Leaf[])[] | (Leaf | Leaf[] | (Leaf | Leaf[])[])[]} Child */
/** @typedef {Record<string, string | number | boolean | null | undefined | ((ev: any) => unknown)>} Props */

/**
 * @template {Element} E
 * @param {E} el
 * @param {readonly unknown[]} children
 * @returns {E}
 */
function append(el, children) {
  for (const c of children) {
    if (Array.isArray(c)) append(el, c);
    else if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/**
 * @param {Element} el
 * @param {Props | null | undefined} props
 */
function setProps(el, props) {
  if (!props) return;
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (typeof v === 'function') {
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    } else if (k === 'testid') el.setAttribute('data-testid', String(v));
    // Properties, not attributes: they hold what the user sees after the first render.
    else if (k === 'value' && 'value' in el) /** @type {HTMLInputElement} */ (el).value = String(v);
    else if (k === 'checked' && 'checked' in el) /** @type {HTMLInputElement} */ (el).checked = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

/**
 * h('div', {class: 'x', testid: 'y', onclick: fn}, 'text', child, [more])
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props | null} [props]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  setProps(el, props);
  return append(el, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * @param {string} tag
 * @param {Props | null} [props]
 * @param {...Child} children
 * @returns {SVGElement}
 */
export function svg(tag, props, ...children) {
  const el = /** @type {SVGElement} */ (document.createElementNS(SVG_NS, tag));
  setProps(el, props);
  return append(el, children);
}

/** Placeholder for a missing value. */
export const dash = () => h('span', { class: 'muted empty' }, '—');

/**
 * @param {string} text
 * @param {string} kind  ok | err | warn | pending | muted
 * @param {string | null} [title]
 * @param {string} [testid]
 */
export function badge(text, kind, title, testid) {
  return h('span', { class: `badge badge-${kind}`, title, testid }, text);
}

/**
 * @param {string} message
 * @param {() => unknown} [onRetry]
 */
export function errorBox(message, onRetry) {
  return h('div', { class: 'alert alert-error', role: 'alert', testid: 'error' },
    h('span', null, message),
    onRetry ? h('button', { class: 'btn btn-small', type: 'button', onclick: onRetry }, 'Retry') : null);
}

/**
 * A card with a title and a body.
 * @param {string | null} title
 * @param {...Child} body
 */
export function card(title, ...body) {
  return h('section', { class: 'card' }, title ? h('h2', { class: 'card-title' }, title) : null, h('div', { class: 'card-body' }, ...body));
}

/**
 * A definition list; falsy pairs are left out.
 * @param {([string, Child, string?] | null | false)[]} pairs
 */
export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map((p) => (p
    ? [h('dt', null, p[0]), h('dd', { testid: p[2] }, p[1] == null || p[1] === '' ? '—' : p[1])]
    : null)));
}

/** The lorafleet mark: a gateway's waves. */
export function logo() {
  return svg('svg', { class: 'logo', viewBox: '0 0 32 32', width: 24, height: 24, 'aria-hidden': 'true' },
    svg('rect', { width: 32, height: 32, rx: 7, class: 'logo-bg' }),
    svg('path', { d: 'M8 20a11 11 0 0 1 16 0M11 23a6.5 6.5 0 0 1 10 0', class: 'logo-wave' }),
    svg('circle', { cx: 16, cy: 25.5, r: 2, class: 'logo-dot' }));
}
