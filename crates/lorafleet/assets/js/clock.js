// @ts-check
// The network's clock: a simulated network may run faster than real time, and every time the
// devices report is on its clock, so "5 s ago" must be counted on it too.
// Every time the server stamps for the fleet is on that clock too (one clock, issue 10); only
// account times (users, tokens) are real time, and are marked so where they are shown.
import { h } from './dom.js';
import { fmtDuration, fmtUtc, fmtZoned, parseTime } from './format.js';

const netClock = { base: /** @type {number | null} */ (null), at: 0, scale: 1, simulated: false };

/** @param {{ now?: string, time_scale?: number, simulated?: boolean } | null | undefined} net  /api/info's `network` */
export function setNetClock(net) {
  const base = net && net.now ? Date.parse(net.now) : NaN;
  netClock.base = Number.isNaN(base) ? null : base;
  netClock.at = Date.now();
  netClock.scale = net && net.time_scale && net.time_scale > 0 ? net.time_scale : 1;
  netClock.simulated = Boolean(net && net.simulated);
}

/** Whether the fleet's times are a simulation's that runs faster (or slower) than real time. */
export const simulatedTime = () => netClock.simulated && netClock.scale !== 1;

/** How much faster than real time the fleet's clock runs. */
export const timeScale = () => netClock.scale;

/** The "simulated" mark next to a fleet time, when its clock is not real time. */
export function simMark() {
  if (!simulatedTime()) return null;
  return h('span', { class: 'sim-time', title: `simulated time: runs ×${netClock.scale} real time` }, 'simulated time');
}

/**
 * A duration on the fleet's clock, with the real time it takes when that clock runs faster:
 * "10 min 32 s simulated, about 21 s real".
 * @param {number | null | undefined} simSeconds
 */
export function fmtFleetDuration(simSeconds) {
  if (simSeconds == null || !simulatedTime()) return fmtDuration(simSeconds);
  const real = Number(simSeconds) / netClock.scale;
  return `${fmtDuration(simSeconds)} simulated, about ${fmtDuration(Math.round(real))} real`;
}

/**
 * A real-time duration (a poll interval, a timeout lorafleet counts in real seconds) with what
 * it is on the fleet's clock: "21 s real, about 10 min 30 s simulated".
 * @param {number | null | undefined} realSeconds
 */
export function fmtRealDuration(realSeconds) {
  if (realSeconds == null || !simulatedTime()) return fmtDuration(realSeconds);
  return `${fmtDuration(realSeconds)} real, about ${fmtDuration(Math.round(Number(realSeconds) * netClock.scale))} simulated`;
}

/**
 * An absolute time in the browser's zone (UTC on hover); fleet times get the simulated mark.
 * @param {string | null | undefined} t
 * @param {{ testid?: string, real?: boolean }} [opts]  real: a wall-clock time (accounts)
 */
export function absTime(t, opts = {}) {
  if (!t || !parseTime(t)) return h('span', { class: 'muted empty', testid: opts.testid }, '—');
  const el = h('time', { datetime: t, title: `${fmtUtc(t)} (UTC)`, testid: opts.testid }, fmtZoned(t));
  const mark = opts.real ? null : simMark();
  return mark ? h('span', { class: 'when' }, el, ' ', mark) : el;
}

export function netNow() {
  if (netClock.base == null) return Date.now();
  return netClock.base + (Date.now() - netClock.at) * netClock.scale;
}

/**
 * "just now", "5 min ago", "3 h ago", "2 d ago"
 * @param {string | null | undefined} t
 * @param {boolean} [real]  counted on the real clock (a time that is not the fleet's)
 */
export function relTime(t, real = false) {
  const d = parseTime(t);
  if (!d) return '—';
  const secs = Math.round(((real ? Date.now() : netNow()) - d.getTime()) / 1000);
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
 * @param {{ real?: boolean }} [opts]  real: a wall-clock time (firmware files, accounts)
 */
export function timeAgo(t, testid, opts = {}) {
  if (!t || !parseTime(t)) return h('span', { class: 'muted empty', testid }, '—');
  const el = h('time', { datetime: t, title: `${fmtZoned(t)} · ${fmtUtc(t)} (UTC)`, 'data-rel-time': t, 'data-real': opts.real ? 'true' : null, testid }, relTime(t, opts.real));
  return simulatedTime() && !opts.real ? h('span', { class: 'when' }, el, ' ', /** @type {HTMLElement} */ (simMark())) : el;
}

/**
 * Rewrites every relative time once per real second: on a simulated clock running x30 a
 * second is half a minute, so a slower ticker would show minutes-old text.
 */
export function startTicker() {
  setInterval(() => {
    for (const el of document.querySelectorAll('[data-rel-time]')) {
      const text = relTime(el.getAttribute('data-rel-time'), el.hasAttribute('data-real'));
      if (el.textContent !== text) el.textContent = text;
    }
  }, 1000);
}
