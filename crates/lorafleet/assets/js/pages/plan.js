// @ts-check
// A campaign's plan (fragments, airtime, session, duration, redundancy advice), shown by the
// campaign form while it is filled in and by the campaign page.
import { fmtFleetDuration } from '../clock.js';
import { h, kv, svg } from '../dom.js';
import { fmtBytes, fmtDuration, fmtMhz, fmtMs, fmtPct } from '../format.js';

/**
 * Completion share against redundancy, with the planned redundancy marked.
 * @param {[number, number][]} curve
 * @param {number} planned
 */
function curveChart(curve, planned) {
  const W = 360, H = 140, m = { l: 36, r: 10, t: 8, b: 26 };
  const xs = curve.map((c) => c[0]);
  const xMax = Math.max(1, ...xs, planned);
  /** @param {number} v */
  const x = (v) => m.l + (v / xMax) * (W - m.l - m.r);
  /** @param {number} v */
  const y = (v) => m.t + (1 - v) * (H - m.t - m.b);
  const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': 'Share of devices completing by redundancy', testid: 'advice-chart' });
  for (const v of [0, 0.5, 1]) {
    g.append(svg('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: 'grid-line' }));
    g.append(svg('text', { x: m.l - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, `${v * 100}%`));
  }
  g.append(svg('polyline', { points: curve.map((c) => `${x(c[0])},${y(c[1])}`).join(' '), fill: 'none', stroke: '#0d9488', 'stroke-width': 2 }));
  for (const c of curve) g.append(svg('circle', { cx: x(c[0]), cy: y(c[1]), r: 2.5, fill: '#0d9488' }, svg('title', null, `${c[0]} parity: ${(c[1] * 100).toFixed(1)} %`)));
  g.append(svg('line', { x1: x(planned), x2: x(planned), y1: m.t, y2: H - m.b, stroke: '#b45309', 'stroke-dasharray': '3 3' }));
  g.append(svg('text', { x: x(planned) + 3, y: m.t + 10, class: 'tick' }, 'planned'));
  g.append(svg('text', { x: (W + m.l) / 2, y: H - 6, 'text-anchor': 'middle', class: 'tick' }, 'parity fragments'));
  return g;
}

/** Where the plan's figures come from, in words. @type {Record<string, string>} */
const INTERVAL_SOURCE = { device_profile: 'from the network server\'s device profile', observed: 'observed uplink interval', default: 'no interval known: the unicast timeout' };
/** @type {Record<string, string>} */
const LOSS_SOURCE = { simulated: 'the simulated network\'s configured loss', fcnt_gaps: 'uplink loss from frame-counter gaps', default: 'no loss measured: the default' };

/** @param {any} loss  the plan's `loss` */
function lossText(loss) {
  if (!loss) return null;
  const frames = loss.source === 'fcnt_gaps' || (loss.source === 'default' && loss.frames) ? ` over ${loss.frames} frames` : '';
  return `${fmtPct(loss.value)} — ${LOSS_SOURCE[loss.source] || loss.source}${frames}`;
}

/**
 * Each sub-band the campaign transmits in, with its duty cycle and the air time spent there.
 * @param {any[] | undefined} bands
 */
function subBands(bands) {
  if (!bands || bands.length === 0) return null;
  return h('div', { class: 'plan-bands' },
    h('h3', { class: 'sub-title' }, 'Sub-bands used'),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table table-cards', testid: 'plan-sub-bands' },
      h('thead', null, h('tr', null, ['Sub-band', 'Duty cycle', 'Air time', 'Carries'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, bands.map((b) => h('tr', { testid: 'plan-sub-band', 'data-band': b.band },
        h('td', { 'data-label': 'Sub-band' }, b.band),
        h('td', { 'data-label': 'Duty cycle' }, b.duty_cycle != null ? `${fmtPct(b.duty_cycle)} (${fmtDuration(b.allowed_per_hour_s)} per hour)` : 'no duty cycle (dwell time limit)'),
        h('td', { 'data-label': 'Air time' }, `${b.airtime_s} s`),
        h('td', { 'data-label': 'Carries' }, (b.carries || []).join(', '))))))));
}

/** @param {any} p  the plan */
const sessionCount = (p) => (p.sessions || []).length;

/**
 * The multicast sessions the engine runs one after the other (a mixed fleet: one per TS004
 * version and FPort); nothing for one session.
 * @param {any} p  the plan
 */
function sessionsView(p) {
  if (sessionCount(p) < 2) return null;
  return h('div', { class: 'plan-sessions' },
    h('h3', { class: 'sub-title' }, `Multicast sessions (${sessionCount(p)}, one after the other)`),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table table-cards', testid: 'plan-sessions' },
      h('thead', null, h('tr', null, ['Session', 'Devices', 'Air time'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', null, p.sessions.map((/** @type {any} */ s) => h('tr', { testid: 'plan-session-row' },
        h('td', { 'data-label': 'Session' }, `TS004 v${s.session.fragmentation.version}, FPort ${s.session.fragmentation.f_port}`),
        h('td', { 'data-label': 'Devices' }, String(s.devices)),
        h('td', { 'data-label': 'Air time' }, fmtDuration(s.airtime_total_s))))))));
}

/** @param {any} p  the plan */
function advice(p) {
  const adv = p.redundancy_advice;
  if (!adv) return null;
  return h('div', { class: 'plan-advice', testid: 'plan-advice' },
    h('h3', { class: 'sub-title' }, `Redundancy at ${fmtPct(adv.loss)} loss`),
    p.loss ? h('p', { class: 'small muted', testid: 'plan-loss' }, `Loss: ${lossText(p.loss)}`) : null,
    h('p', null, adv.suggested_redundancy != null
      ? `${adv.suggested_redundancy} parity fragments (${adv.suggested_percent} %) complete ${fmtPct(adv.target)} of devices${adv.simulated ? ` in ${adv.trials} simulated devices` : ' (estimate)'}; the planned ${p.redundancy_fragments} complete about ${fmtPct(adv.completion_at_planned)}.`
      : 'No redundancy reaches the target within the 14-bit fragment counter.'),
    adv.curve && adv.curve.length ? curveChart(adv.curve, p.redundancy_fragments) : null);
}

/**
 * The gateways the multicast group is bound to (lorafleet's engine on ChirpStack v4): the
 * fewest that heard every device recently, or the campaign's own list.
 * @param {{ gateways: string[], explicit: boolean, unheard: string[] } | null | undefined} g
 */
function gatewaysView(g) {
  if (!g) return null;
  const how = g.explicit ? 'as given in multicast.gateways' : 'the fewest gateways that heard every device recently';
  return h('div', { class: 'plan-gateways', testid: 'plan-gateways', 'data-explicit': String(Boolean(g.explicit)) },
    h('h3', { class: 'sub-title' }, 'Multicast gateways'),
    g.gateways.length
      ? h('p', null, `${g.gateways.length} gateway${g.gateways.length === 1 ? '' : 's'}, ${how}: `,
        g.gateways.map((id, i) => [i ? ', ' : '', h('code', { testid: 'plan-gateway' }, id)]))
      : h('p', null, 'None chosen (no device heard recently): ChirpStack sends from every gateway of the tenant.'),
    g.unheard && g.unheard.length ? h('p', { class: 'small muted', testid: 'plan-gateways-unheard' }, `Not heard by any gateway recently: ${g.unheard.join(', ')}`) : null);
}

/** A plan warning that a device would refuse the session for its limits. @param {any} w */
const isLimitWarning = (w) => /^the device would refuse the session/.test(w.message || '');

/** @param {any} w */
const warningItem = (w) => h('li', { testid: isLimitWarning(w) ? 'plan-limit-warning' : 'plan-warning' }, w.dev_eui ? [h('span', { class: 'mono' }, w.dev_eui), ': '] : null, w.message);

/**
 * The limits the campaign states for its devices' fragment decoders, and the warnings for the
 * devices that would refuse the session.
 * @param {any} p  the plan
 * @param {any} settings
 */
function limitsView(p, settings) {
  const fields = ['max_fragment_size', 'max_fragments', 'max_parity'];
  /** @param {any} l */
  const text = (l) => fields.filter((f) => l && l[f] != null).map((f) => `${f} ${l[f]}`).join(', ');
  const campaign = settings && text(settings.device_limits);
  const model = settings && text(settings.model_device_limits);
  const own = settings && settings.device_overrides ? Object.entries(settings.device_overrides).filter(([, o]) => text(/** @type {any} */ (o).device_limits)) : [];
  const warnings = (p.warnings || []).filter(isLimitWarning);
  if (!campaign && !model && own.length === 0 && warnings.length === 0) return null;
  return h('div', { class: 'plan-limits', testid: 'plan-limits' },
    h('h3', { class: 'sub-title' }, 'Device limits'),
    kv(/** @type {[string, string][]} */ ([
      ...(campaign ? [['Campaign', campaign]] : []),
      ...(model ? [['Model (firmware sidecar)', model]] : []),
      ...own.map(([eui, o]) => [eui, text(/** @type {any} */ (o).device_limits)]),
    ])),
    warnings.length ? h('div', { class: 'alert alert-warn' }, h('ul', null, warnings.map(warningItem))) : null);
}

/**
 * @param {any} p         the plan
 * @param {any} settings  the validated settings (for "auto" markers)
 */
export function planView(p, settings) {
  if (!p || p.data_fragments == null) return h('p', { class: 'muted' }, 'No plan.');
  const warnings = (p.warnings || []).filter((/** @type {any} */ w) => !isLimitWarning(w)).map(warningItem);
  return h('div', { class: 'plan' },
    h('div', { class: 'plan-grid' },
      kv([
        ['Image', `${fmtBytes(p.image_size)} (${p.image_size} B)`],
        ['Data rate', `DR${p.dr} · ${p.modulation} · ${fmtMhz(p.frequency)}`],
        ['Fragment size', `${p.fragment_size} B (max ${p.max_fragment_size} B)${settings && settings.fragmentation.fragment_size_auto ? ' · auto' : ''}`, 'plan-fragment-size'],
        ['Data fragments', String(p.data_fragments), 'plan-data-fragments'],
        ['Redundancy', `${p.redundancy_fragments} parity fragments${p.redundancy_percent_sent != null ? ` (${p.redundancy_percent_sent} % sent to ChirpStack)` : ''}`, 'plan-redundancy'],
        ['Bytes on air', `${p.bytes_on_air} B in ${p.total_fragments} frames of ${p.frame_bytes} B`],
      ]),
      kv([
        ['Time on air', `${fmtMs(p.airtime_per_fragment_ms)} per fragment, ${fmtDuration(p.airtime_total_s)} in total${sessionCount(p) > 1 ? ` per session, ${sessionCount(p)} sessions` : ''}`, 'plan-airtime'],
        ['Fragment spacing', `${p.fragment_interval_s} s${p.duty_cycle != null ? ` (duty cycle ${fmtPct(p.duty_cycle)})` : ''}`],
        ['Session needed', fmtFleetDuration(p.session_needed_s)],
        ['Session', `timeout ${p.timeout_exp} → ${fmtFleetDuration(p.session_length_s)}`, 'plan-session'],
        ['Expected duration', `${fmtFleetDuration(p.expected_duration_s)} (${p.unicast_steps} unicast steps of ~${fmtDuration(p.uplink_interval_s)})`, 'plan-duration'],
        ['Uplink interval', `${fmtDuration(p.uplink_interval_s)}: ${INTERVAL_SOURCE[p.uplink_interval_source || (p.uplink_interval_observed ? 'observed' : 'default')] || p.uplink_interval_source}`, 'plan-uplink-interval'],
        ['Worst case', fmtFleetDuration(p.worst_case_duration_s)],
      ])),
    advice(p),
    subBands(p.sub_bands),
    sessionsView(p),
    gatewaysView(p.gateways),
    limitsView(p, settings),
    warnings.length ? h('div', { class: 'alert alert-warn plan-warnings' }, h('ul', null, warnings)) : null);
}
