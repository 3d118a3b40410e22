// @ts-check
// What the rollout guards show (issue 10 item 6): the devices a draft's image must not go to
// with the reason, and a scheduled start with its time zone; shared by the campaign form and
// the campaign page.
import { h } from '../dom.js';
import { fmtUtc, fmtZoned, pad, parseTime } from '../format.js';

/** @typedef {{ dev_eui: string, reason: string, code: string }} Refusal */

/** @type {Record<string, string>} */
const CODE_LABEL = { incompatible: 'Incompatible', already_running: 'Already runs this version' };

/**
 * The refused devices, or nothing when there are none.
 * @param {Refusal[] | undefined} refused
 */
export function refusedView(refused) {
  if (!refused || refused.length === 0) return null;
  return h('div', { class: 'alert alert-warn', role: 'status', testid: 'campaign-refused' },
    h('div', null,
      h('strong', null, `${refused.length} device${refused.length === 1 ? '' : 's'} refused for this image`),
      h('p', { class: 'small' }, 'Start is refused while they remain: remove them from the campaign, or allow reinstalling for devices that already run the version.'),
      h('ul', { class: 'refused-list' }, refused.map((r) =>
        h('li', { testid: 'refused-device', 'data-dev-eui': r.dev_eui, 'data-code': r.code },
          h('a', { class: 'mono', href: `#/devices/${r.dev_eui}` }, r.dev_eui), ' ',
          h('span', { class: 'badge badge-warn' }, CODE_LABEL[r.code] || r.code), ' ',
          h('span', { testid: 'refused-reason' }, r.reason))))));
}

/** The browser's offset as RFC 3339 writes it at `d`: +01:00. @param {Date} d */
function offsetOf(d) {
  const m = -d.getTimezoneOffset();
  const sign = m >= 0 ? '+' : '-';
  const a = Math.abs(m);
  return `${sign}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}

/**
 * A `datetime-local` value (the browser's time zone) as RFC 3339 with its offset; undefined
 * when empty, the text itself when it does not parse (the server then names the field).
 * @param {string} local
 */
export function startAtOf(local) {
  const v = local.trim();
  if (!v) return undefined;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) return v;
  const secs = v.length === 16 ? `${v}:00` : v;
  return `${secs}${offsetOf(d)}`;
}

/** RFC 3339 to a `datetime-local` value in the browser's zone. @param {string | null | undefined} t */
export function localInputOf(t) {
  const d = parseTime(t);
  if (!d) return '';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** The browser's time zone, as the form's help says it. */
export function zoneHelp() {
  const d = new Date();
  let name = '';
  try { name = Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch { name = ''; }
  return `In your time zone${name ? ` (${name}, UTC${offsetOf(d)})` : ` (UTC${offsetOf(d)})`}; empty: start when Start is pressed. A time in the past starts at once.`;
}

/**
 * "Starts 2026-12-24 08:00:00 CET", local with its zone and UTC on hover.
 * @param {string | null | undefined} startAt
 * @param {string} state
 */
export function startAtView(startAt, state) {
  if (!startAt || (state !== 'draft' && state !== 'scheduled')) return null;
  return h('p', { class: 'small', testid: 'campaign-start-at' },
    h('span', { class: 'muted' }, state === 'scheduled' ? 'Scheduled to start ' : 'Starts when started, at '),
    h('time', { datetime: startAt, title: `${fmtUtc(startAt)} (UTC)`, testid: 'campaign-start-at-time' }, fmtZoned(startAt)));
}
