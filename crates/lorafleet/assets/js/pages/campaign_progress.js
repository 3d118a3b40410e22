// @ts-check
// The campaign page's "what is it waiting for" (issue 10 item 7): a panel with fragments sent
// of those planned, the multicast session's start and end, the next step and when it is due,
// and elapsed against expected time on both clocks; and the page's one per-device table (name,
// model, from -> to version in the device's spelling, stage, outcome with the check and verify
// methods used and the status answer as received, the stages seen, each step's time), filtered
// by stage and outcome. Rows are the campaign's `devices`, joined by DevEUI with
// `progress_summary.device_facts` of GET /api/campaigns/{id}.
import { absTime } from '../clock.js';
import { h, kv, badge } from '../dom.js';
import { fmtDateTime, fmtDuration } from '../format.js';
import { stageColor, stageLabel } from '../stages.js';

/** @typedef {import('../types.js').Campaign} Campaign */
/** @typedef {import('../types.js').StageInfo} StageInfo */
/** @typedef {import('../types.js').ProgressSummary} ProgressSummary */
/** @typedef {import('../types.js').BothClocks} BothClocks */
/** @typedef {import('../types.js').DeviceFact} DeviceFact */
/** @typedef {import('../types.js').CampaignDevice} CampaignDevice */

/** How each update ended, in words. @type {Record<string, string>} */
export const OUTCOME_WORDS = {
  verified: 'Verified', completed: 'Completed (not verified)', not_updated: 'Not updated', unreachable: 'Unreachable',
  refused: 'Refused', delivered_unverified: 'Fragments delivered, version not verifiable',
};
/** The filter value of devices without an outcome yet. */
const NO_OUTCOME = 'none';

/**
 * "12 min 4 s simulated · 24 s real" on a clock that runs faster than real time, else the
 * one duration, marked real.
 * @param {BothClocks | null | undefined} d
 * @param {number} scale
 */
export function bothClocks(d, scale) {
  if (!d) return '—';
  if (scale === 1) return `${fmtDuration(d.real_s)} (real time)`;
  return `${fmtDuration(d.simulated_s)} simulated · ${fmtDuration(d.real_s)} real`;
}

/** "in 24 s", "due now", "3 s overdue" on both clocks. @param {BothClocks} d @param {number} scale */
function dueText(d, scale) {
  if (Math.abs(d.real_s) < 1) return 'due now';
  const abs = { simulated_s: Math.abs(d.simulated_s), real_s: Math.abs(d.real_s) };
  return d.real_s > 0 ? `in ${bothClocks(abs, scale)}` : `${bothClocks(abs, scale)} overdue`;
}

/** @param {ProgressSummary} p */
function fragmentsLine(p) {
  const parts = h('span', { class: 'muted small' }, ` (${p.data_fragments} data + ${p.parity_fragments} parity)`);
  if (p.fragments_sent == null) return h('span', null, `${p.fragments_total} planned; the FUOTA service does not report how many it sent`, parts);
  const meter = h('progress', { class: 'cp-meter', max: String(Math.max(1, p.fragments_total)), value: String(p.fragments_sent), 'aria-label': 'Fragments sent' });
  return h('span', null, h('strong', null, `${p.fragments_sent} of ${p.fragments_total}`), ' sent', parts, ' ', meter);
}

/** @param {ProgressSummary} p */
function nextLine(p) {
  const n = p.next_step;
  if (!n) return p.phase === 'done' ? 'nothing: the campaign is over' : 'nothing scheduled';
  return h('span', { 'data-step': n.step },
    h('strong', null, n.label),
    n.at ? [' at ', absTime(n.at)] : null,
    n.due_in ? [' (', dueText(n.due_in, p.time_scale), ')'] : null);
}

/**
 * The progress panel; none before the server sends a summary (a list row, an old server).
 * @param {Campaign} c
 */
export function progressPanel(c) {
  const p = c.progress_summary;
  if (!p) return null;
  return h('div', { class: 'cp-summary', testid: 'progress-summary', 'data-phase': p.phase },
    kv([
      ['Phase', p.phase_label, 'progress-phase'],
      ['Fragments', fragmentsLine(p), 'progress-fragments'],
      ['Session start', absTime(p.session_start), 'progress-session-start'],
      ['Session end', absTime(p.session_end), 'progress-session-end'],
      ['Next', nextLine(p), 'progress-next'],
      ['Elapsed', bothClocks(p.elapsed, p.time_scale), 'progress-elapsed'],
      ['Expected', bothClocks(p.expected, p.time_scale), 'progress-expected'],
    ]));
}

/** @param {DeviceFact} d */
function versionCell(d) {
  const from = d.from_version ? d.from_version.display : 'not reported';
  const to = d.to_version ? d.to_version.version.display : 'unknown';
  return h('span', { class: 'nowrap', title: d.to_version ? `${d.to_version.versioning}, raw ${d.to_version.version.raw}` : null },
    h('span', { testid: 'fact-from' }, from), ' → ', h('strong', { testid: 'fact-to' }, to));
}

/** @param {StageInfo[]} stages @param {string} stage */
function stageCell(stages, stage) {
  const sw = h('span', { class: 'cp-swatch' });
  sw.style.background = stageColor(stages, stage);
  return h('span', { class: 'nowrap' }, sw, stageLabel(stages, stage));
}

/** @param {string | null | undefined} o */
function outcomeCell(o) {
  if (!o) return h('span', { class: 'muted' }, 'not yet');
  const kind = o === 'verified' || o === 'completed' ? 'ok' : o === 'delivered_unverified' ? 'warn' : 'err';
  return badge(OUTCOME_WORDS[o] || o, kind, null, 'device-outcome');
}

/**
 * @param {HTMLSelectElement} select
 * @param {[string, string][]} options  (value, text)
 */
function setOptions(select, options) {
  const keep = select.value;
  // A choice no device matches any more stays offered (with none), so that a refresh never
  // changes what the operator chose to look at.
  const all = keep && !options.some(([v]) => v === keep) ? [...options, /** @type {[string, string]} */ ([keep, `${select.selectedOptions[0]?.textContent?.replace(/ \(\d+\)$/, '') || keep} (0)`])] : options;
  select.replaceChildren(...all.map(([value, text]) => h('option', { value }, text)));
  select.value = keep;
}

/** @type {Record<string, string>} */
const METHOD_LABEL = { version_status: 'Version & Status', firmware_management: 'Firmware Management', none: 'no version method' };

/**
 * A FragSessionStatusAns in words, in the reading of the device's stack: the same bytes mean a
 * count of what is missing, or (LoRaMac-node) the highest fragment seen and the data fragments
 * lost, never lowered when parity recovers them.
 * @param {{ raw_hex: string, fields: Record<string, unknown>, reading: string }} fs
 */
export function fragStatusReading(fs) {
  const f = fs.fields || {};
  const errs = [f.memory_error ? 'not enough memory' : null, f.mic_error ? 'MIC mismatch' : null, f.session_does_not_exist ? 'no such session' : null].filter(Boolean);
  const said = fs.reading === 'highest_n'
    ? `highest fragment ${f.nb_frag_received}, ${f.missing_frag} data fragments lost (highest-N reading: parity may have recovered them)`
    : `${f.nb_frag_received} received, ${f.missing_frag} still missing (count reading)`;
  return errs.length ? `${said}; ${errs.join(', ')}` : said;
}

/** The check and verify methods the engine used, and the status answer raw and read. @param {CampaignDevice} d */
function methodNote(d) {
  const parts = [];
  if (d.check_method_used) parts.push(`checked by ${METHOD_LABEL[d.check_method_used] || d.check_method_used}`);
  if (d.verify_method_used) parts.push(`verified by ${METHOD_LABEL[d.verify_method_used] || d.verify_method_used}`);
  const fs = d.frag_status;
  return [
    parts.length ? h('div', { class: 'muted small', testid: 'device-methods' }, parts.join(', ')) : null,
    fs ? h('div', { class: 'muted small', testid: 'device-frag-status', 'data-reading': fs.reading },
      'FragSessionStatusAns ', h('code', { testid: 'frag-status-raw' }, fs.raw_hex), ': ', fragStatusReading(fs)) : null,
  ];
}

/** Steps the server stamps with the time the device got through them. */
export const STEP_TIMES = /** @type {const} */ ([
  ['mc_group_setup', 'mc_group_setup_at'], ['frag_session_setup', 'frag_session_setup_at'],
  ['mc_session_setup', 'mc_session_setup_at'], ['frag_status', 'frag_status_at'], ['completed', 'completed_at'],
]);
/** The step columns' short headers. */
const STEP_HEADS = ['Group setup', 'Frag. setup', 'Session setup', 'Frag. status', 'Completed'];

/**
 * @param {CampaignDevice} d
 * @param {DeviceFact | undefined} f
 * @param {StageInfo[]} stages
 * @param {(devEui: string) => Node} history  the stages the page saw the device in
 */
function deviceRow(d, f, stages, history) {
  const name = f && f.name;
  return h('tr', { testid: 'campaign-device-row', 'data-dev-eui': d.dev_eui, 'data-stage': d.stage, 'data-outcome': d.outcome || NO_OUTCOME },
    h('td', { 'data-label': 'Device' }, h('a', { href: `#/devices/${d.dev_eui}` }, name || h('span', { class: 'mono' }, d.dev_eui)), name ? h('div', { class: 'mono small muted' }, d.dev_eui) : null),
    h('td', { 'data-label': 'Model' }, (f && f.model) || h('span', { class: 'muted' }, 'unknown')),
    h('td', { 'data-label': 'From → to' }, f ? versionCell(f) : h('span', { class: 'muted' }, '—')),
    h('td', { 'data-label': 'Stage' }, stageCell(stages, d.stage)),
    h('td', { 'data-label': 'Outcome' }, outcomeCell(d.outcome), methodNote(d)),
    h('td', { 'data-label': 'Stages so far' }, history(d.dev_eui)),
    ...STEP_TIMES.map(([stage, k]) =>
      h('td', { 'data-label': stageLabel(stages, stage), class: 'nowrap small' }, d[k] ? fmtDateTime(d[k]) : '—')),
    h('td', { 'data-label': 'Error', class: 'err-text small' }, d.error || ''));
}

/**
 * The page's per-device table with its filters; one per page, so the filters keep their
 * choice while the page refreshes under them.
 */
export function deviceFacts() {
  const stageFilter = h('select', { class: 'filter', testid: 'facts-filter-stage', id: 'facts-filter-stage' });
  const outcomeFilter = h('select', { class: 'filter', testid: 'facts-filter-outcome', id: 'facts-filter-outcome' });
  const count = h('span', { class: 'muted small', testid: 'facts-count', 'aria-live': 'polite' });
  const table = h('div', { class: 'table-wrap' });
  /** @type {{ devices: CampaignDevice[], facts: Map<string, DeviceFact>, stages: StageInfo[], history: (devEui: string) => Node } | null} */
  let last = null;

  function draw() {
    if (!last) return;
    const { devices, facts, stages, history } = last;
    const shown = devices.filter((d) => (!stageFilter.value || d.stage === stageFilter.value)
      && (!outcomeFilter.value || (d.outcome || NO_OUTCOME) === outcomeFilter.value));
    count.textContent = `${shown.length} of ${devices.length} devices`;
    const heads = ['Device', 'Model', 'From → to', 'Stage', 'Outcome', 'Stages so far', ...STEP_HEADS, 'Error'];
    table.replaceChildren(h('table', { class: 'table table-compact table-cards cp-steps', testid: 'campaign-devices' },
      h('thead', null, h('tr', null, heads.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, shown.map((d) => deviceRow(d, facts.get(d.dev_eui), stages, history)))));
  }
  stageFilter.addEventListener('change', draw);
  outcomeFilter.addEventListener('change', draw);

  const el = h('div', { class: 'cp-facts-view' },
    h('div', { class: 'toolbar filters' },
      h('label', { for: 'facts-filter-stage', class: 'small' }, 'Stage '), stageFilter,
      h('label', { for: 'facts-filter-outcome', class: 'small' }, 'Outcome '), outcomeFilter,
      count),
    table);
  return {
    el,
    /**
     * @param {Campaign} c
     * @param {StageInfo[]} stages
     * @param {(devEui: string) => Node} history
     */
    update(c, stages, history) {
      const devices = c.devices;
      const facts = new Map((c.progress_summary ? c.progress_summary.device_facts : []).map((f) => [f.dev_eui, f]));
      /** @param {(d: CampaignDevice) => string} key */
      const tally = (key) => devices.reduce((m, d) => m.set(key(d), (m.get(key(d)) || 0) + 1), new Map());
      const byStage = tally((d) => d.stage);
      const byOutcome = tally((d) => d.outcome || NO_OUTCOME);
      setOptions(stageFilter, [['', 'All stages'], ...stages.filter((s) => byStage.has(s.id)).map((s) => /** @type {[string, string]} */ ([s.id, `${s.label} (${byStage.get(s.id)})`]))]);
      setOptions(outcomeFilter, [['', 'All outcomes'], ...[...byOutcome.keys()].sort().map((o) => /** @type {[string, string]} */ ([o, `${o === NO_OUTCOME ? 'Not yet' : OUTCOME_WORDS[o] || o} (${byOutcome.get(o)})`]))]);
      last = { devices, facts, stages, history };
      draw();
    },
  };
}
