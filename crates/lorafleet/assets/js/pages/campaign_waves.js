// @ts-check
// Waves (issue 10 item 6): the campaign page's wave table with the Resume button of a paused
// campaign, and the form's rollout fields (the engine's campaigns only).
import { h, badge, card } from '../dom.js';
import { stageBadge } from '../stages.js';

/** @typedef {import('../types.js').Campaign} Campaign */
/** @typedef {import('../types.js').CampaignWave} CampaignWave */
/** @typedef {import('../types.js').StageInfo} StageInfo */

/** @type {Record<string, string>} */
const WAVE_KIND = { pending: 'muted', running: 'pending', succeeded: 'ok', failed: 'err', skipped: 'muted' };

/** @param {number} x a share 0..1 */
const pct = (x) => `${Math.round(x * 100)} %`;

/**
 * A wave's multicast session in words: "TS004 v2, FPort 201".
 * @param {CampaignWave} w
 */
const sessionText = (w) => (w.session ? `TS004 v${w.session.fragmentation.version}, FPort ${w.session.fragmentation.f_port}` : '—');

/**
 * The campaign's waves, one row each; null without waves (no rollout, one multicast session).
 * @param {Campaign} c
 * @param {StageInfo[]} stages
 */
export function wavesCard(c, stages) {
  const waves = c.waves || [];
  if (!waves.length) return null;
  const r = c.rollout;
  const sessions = new Set(waves.map(sessionText)).size;
  const rows = waves.map((w) => h('tr', { testid: 'wave-row', 'data-wave': String(w.index), 'data-state': w.state },
    h('td', { 'data-label': 'Wave' }, w.rollout_wave && w.rollout_wave !== w.index ? `${w.index} (of ${w.rollout_wave})` : String(w.index)),
    h('td', { 'data-label': 'Reaches' }, `${w.percent} %`),
    h('td', { 'data-label': 'Session', testid: 'wave-session' }, sessionText(w)),
    h('td', { 'data-label': 'Devices', testid: 'wave-devices' }, String(w.devices.length)),
    h('td', { 'data-label': 'State' }, badge(w.state, WAVE_KIND[w.state] || 'muted', null, 'wave-state')),
    h('td', { 'data-label': 'Counts', testid: 'wave-counts' },
      Object.entries(w.counts).map(([stage, n]) => h('span', { class: 'wave-count' }, stageBadge(stages, stage), ` ${n} `)))));
  const rule = r
    ? [`The next wave starts when ${pct(r.success_threshold)} of a wave's devices are updated; over ${pct(r.error_threshold)} failed the campaign pauses`,
      r.pause_between_s ? `; ${r.pause_between_s} s between waves.` : '.']
    : ['The devices need more than one multicast session: each runs as a wave of its own, one after the other.'];
  const mixed = r && sessions > 1 ? ` The devices need ${sessions} multicast sessions: each wave of the rollout runs as one wave per session.` : '';
  return card(`Waves (${waves.length})`,
    h('p', { class: 'small muted', testid: 'wave-thresholds' }, ...rule, mixed),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact table-cards', testid: 'campaign-waves' },
      h('thead', null, h('tr', null, ['Wave', 'Reaches', 'Session', 'Devices', 'State', 'Devices per stage'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, rows))));
}

/**
 * Why a paused campaign waits, as an alert; null when it does not.
 * @param {Campaign} c
 */
export function pausedNote(c) {
  if (c.state !== 'paused') return null;
  return h('div', { class: 'alert alert-warn', testid: 'campaign-paused' },
    h('span', null, `Paused: ${c.paused_reason || 'waiting for the operator'}. Resume starts the next wave; cancel ends the campaign.`));
}

/**
 * The Resume button of a paused campaign (the caller checks the role).
 * @param {Campaign} c
 * @param {(method: string, path: string, what: string) => void} act
 */
export function resumeButton(c, act) {
  if (c.state !== 'paused') return null;
  return h('button', { type: 'button', class: 'btn btn-primary', testid: 'campaign-resume', onclick: () => act('POST', `/api/campaigns/${c.id}/resume`, 'Campaign resumed: the next wave starts') }, 'Resume');
}

/** The form's rollout inputs. */
export function rolloutInputs() {
  return {
    waves: h('input', { type: 'text', id: 'cf-waves', placeholder: 'e.g. 5, 25, 100 (empty: all devices at once)', autocomplete: 'off', spellcheck: 'false', testid: 'input-cf-waves' }),
    success: h('input', { type: 'number', id: 'cf-success-threshold', placeholder: '0.9', step: '0.05', min: '0', max: '1', testid: 'input-cf-success-threshold' }),
    error: h('input', { type: 'number', id: 'cf-error-threshold', placeholder: '0.2', step: '0.05', min: '0', max: '1', testid: 'input-cf-error-threshold' }),
    pause: h('input', { type: 'number', id: 'cf-pause-between', placeholder: '0', min: '0', testid: 'input-cf-pause-between' }),
  };
}

/** @typedef {ReturnType<typeof rolloutInputs>} RolloutInputs */

/** @param {HTMLInputElement} el */
const numOrUndef = (el) => (el.value.trim() === '' ? undefined : Number(el.value));

/**
 * The request's `rollout`, or undefined when no waves are given.
 * @param {RolloutInputs} r
 */
export function rolloutOf(r) {
  const list = r.waves.value.split(/[\s,;%]+/).filter(Boolean);
  if (!list.length) return undefined;
  return {
    // A value that is not a number is sent as such, so that the server names the wave.
    waves: list.map((p) => ({ percent: Number.isNaN(Number(p)) ? p : Number(p) })),
    success_threshold: numOrUndef(r.success),
    error_threshold: numOrUndef(r.error),
    pause_between_s: numOrUndef(r.pause),
  };
}

/**
 * Puts a stored request's rollout back into the form.
 * @param {RolloutInputs} r
 * @param {any} rollout
 */
export function fillRollout(r, rollout) {
  if (!rollout) return;
  if (Array.isArray(rollout.waves)) r.waves.value = rollout.waves.map((/** @type {any} */ w) => w.percent).join(', ');
  /** @param {HTMLInputElement} el @param {unknown} v */
  const set = (el, v) => { if (v !== undefined && v !== null) el.value = String(v); };
  set(r.success, rollout.success_threshold);
  set(r.error, rollout.error_threshold);
  set(r.pause, rollout.pause_between_s);
}

/**
 * The form's rollout card; `field` registers each input for its errors.
 * @param {RolloutInputs} r
 * @param {(name: string, label: string, el: HTMLInputElement, help?: string) => HTMLElement} field
 */
export function rolloutCard(r, field) {
  return card('Waves (lorafleet engine)',
    h('div', { class: 'cf-grid' },
      field('rollout.waves', 'Waves (cumulative % of the devices)', r.waves, 'Each wave is its own multicast session over its share of the devices; the last is 100. Empty: every device in one session.'),
      field('rollout.success_threshold', 'Success threshold (0–1)', r.success, 'Share of a wave\'s devices that must be updated before the next wave starts.'),
      field('rollout.error_threshold', 'Error threshold (0–1)', r.error, 'Over this share of failed devices the campaign pauses and waits for you (resume or cancel).'),
      field('rollout.pause_between_s', 'Pause between waves (s)', r.pause)));
}
