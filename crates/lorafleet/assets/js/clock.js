// @ts-check
// The network's clock: a simulated network may run faster than real time, and every time the
// devices report is on its clock, so "5 s ago" must be counted on it too.
import { h } from './dom.js';
import { fmtDateTime, parseTime } from './format.js';

const netClock = { base: /** @type {number | null} */ (null), at: 0, scale: 1 };

/** @param {{ now?: string, time_scale?: number } | null | undefined} net  /api/info's `network` */
export function setNetClock(net) {
  const base = net && net.now ? Date.parse(net.now) : NaN;
  netClock.base = Number.isNaN(base) ? null : base;
  netClock.at = Date.now();
  netClock.scale = net && net.time_scale && net.time_scale > 0 ? net.time_scale : 1;
}

export function netNow() {
  if (netClock.base == null) return Date.now();
  return netClock.base + (Date.now() - netClock.at) * netClock.scale;
}

/**
 * "just now", "5 min ago", "3 h ago", "2 d ago"
 * @param {string | null | undefined} t
 */
export function relTime(t) {
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

/**
 * A <time> element whose relative text the ticker keeps up to date.
 * @param {string | null | undefined} t
 * @param {string} [testid]
 */
export function timeAgo(t, testid) {
  if (!t || !parseTime(t)) return h('span', { class: 'muted empty', testid }, '—');
  return h('time', { datetime: t, title: fmtDateTime(t), 'data-rel-time': t, testid }, relTime(t));
}

/**
 * Rewrites every relative time once per real second: on a simulated clock running x30 a
 * second is half a minute, so a slower ticker would show minutes-old text.
 */
export function startTicker() {
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-rel-time]')) {
      const text = relTime(el.getAttribute('data-rel-time'));
      if (el.textContent !== text) el.textContent = text;
    }
  }, 1000);
}
