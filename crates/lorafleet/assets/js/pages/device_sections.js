// @ts-check
// The device page's read-only sections: identity, firmware status, uplinks, events, firmware
// history and downlinks. Each is a function of the API's answer.
import { absTime, fmtFleetDuration, relTime, timeAgo } from '../clock.js';
import { h, badge, dash } from '../dom.js';
import {
  compactJson, fmtBytes, fmtId, fmtNum, parseTime, spacedHex,
  versionRaw, versionText, versioningName,
} from '../format.js';
import { commandLabel } from './device_requests.js';

/**
 * @param {string} label
 * @param {import('../dom.js').Child} value
 * @param {string} testid
 */
function field(label, value, testid) {
  const empty = value == null || value === '' || (Array.isArray(value) && value.length === 0);
  return [h('dt', null, label), h('dd', { testid }, empty ? dash() : value)];
}

/** @param {string | null | undefined} t  absolute time, then relative in brackets */
const when = (t) => (t ? [absTime(t), ' ', h('span', { class: 'muted', 'data-rel-time': t }, relTime(t))] : null);

/**
 * @param {any} d  the device
 * @param {string} devEui
 */
export function identity(d, devEui) {
  const tags = d.tags && typeof d.tags === 'object' ? Object.entries(d.tags) : [];
  const lu = d.last_uplink;
  return h('dl', { class: 'kv', testid: 'identity' },
    field('DevEUI', h('span', { class: 'mono' }, d.dev_eui || devEui), 'identity-dev-eui'),
    field('Name', d.name, 'identity-name'),
    field('Application', d.application, 'identity-application'),
    field('Device profile', d.device_profile, 'identity-device-profile'),
    field('DevAddr', d.dev_addr ? h('span', { class: 'mono' }, d.dev_addr) : null, 'identity-dev-addr'),
    field('Tags', tags.length ? h('span', { class: 'tags' }, tags.map(([k, v]) =>
      h('span', { class: 'tag' }, h('span', { class: 'tag-k' }, k), h('span', { class: 'tag-v' }, typeof v === 'string' ? v : compactJson(v))))) : null, 'identity-tags'),
    field('First seen', when(d.first_seen), 'identity-first-seen'),
    d.joined_at ? field('Joined', when(d.joined_at), 'identity-joined') : null,
    field('Last seen', d.never_seen ? h('span', { class: 'muted' }, 'never') : when(d.last_seen), 'identity-last-seen'),
    field('Battery', d.battery == null ? null : fmtNum(d.battery, '%', Number.isInteger(Number(d.battery)) ? 0 : 1), 'identity-battery'),
    field('Link margin', d.margin == null ? null : fmtNum(d.margin, 'dB'), 'identity-margin'),
    field('Last uplink', lu ? `FCnt ${lu.f_cnt ?? '—'} · port ${lu.f_port ?? '—'} · RSSI ${fmtNum(lu.rssi, 'dBm')} · SNR ${fmtNum(lu.snr, 'dB')} · ${lu.gateway_count ?? '?'} gateway${lu.gateway_count === 1 ? '' : 's'}` : null, 'identity-last-uplink'));
}

/** @param {string | null | undefined} t */
function reported(t) {
  return parseTime(t) ? h('span', { class: 'reported muted' }, 'reported ', timeAgo(t)) : null;
}

/** @param {any} running @param {string | undefined} at */
function runningNode(running, at) {
  const text = running ? versionText(running.version) : '';
  const raw = running ? versionRaw(running.version) : null;
  return [
    h('span', { class: 'version', testid: 'status-running-version' }, text),
    running ? null : h('span', { class: 'muted' }, 'not reported'),
    running ? h('span', { class: 'muted small', testid: 'status-running-version-raw' },
      [raw && !text.includes(raw) ? `raw ${raw}` : null,
        running.slot != null ? `slot ${running.slot}` : null].filter(Boolean).join(' · ')) : null,
    reported(at),
  ];
}

/** @param {any} pkg @param {string | undefined} at */
function packageNode(pkg, at) {
  if (!pkg) return null;
  return [
    h('span', null, [
      pkg.identifier != null ? `package ${pkg.identifier}` : null,
      pkg.version != null ? `v${versionText(pkg.version)}` : null,
      pkg.versioning_type != null ? versioningName(pkg.versioning_type) : null,
      pkg.slots != null ? `${pkg.slots} slot${pkg.slots === 1 ? '' : 's'}` : null,
    ].filter(Boolean).join(' · ')),
    reported(at)];
}

/** @param {any[] | null} stored @param {any} running @param {string | undefined} at */
function storedNode(stored, running, at) {
  if (stored == null) return null;
  return [
    stored.length === 0 ? h('span', { class: 'muted' }, 'no stored images') :
      h('ul', { class: 'slots' }, stored.map((s) => h('li', { testid: 'status-stored-slot', 'data-slot': s.slot },
        h('span', { class: 'slot-no' }, `slot ${s.slot}`), ' ',
        h('span', { class: 'version', title: versionRaw(s.version) || '' }, versionText(s.version) || '—'),
        running && running.slot === s.slot ? badge('running', 'ok') : ''))),
    reported(at)];
}

/** @param {any} st @param {Record<string, string>} at */
function spaceNode(st, at) {
  if (st.heap_available == null && st.slot_size == null) return null;
  return [
    h('span', null, [
      st.heap_available != null ? `heap ${fmtBytes(st.heap_available)} free` : null,
      st.slot_size != null ? `slot size ${fmtBytes(st.slot_size)}` : null,
    ].filter(Boolean).join(' · ')),
    reported(at.space)];
}

/** @param {any} st  the device's Version & Status record */
export function statusCard(st) {
  /** @type {Record<string, string>} */
  const at = st.reported_at || {};
  const running = st.running;
  const uptimeNode = st.uptime_s != null ? h('span', { testid: 'status-uptime-text' },
    `up ${fmtFleetDuration(st.uptime_s)}`,
    parseTime(at.uptime) ? [', reported ', timeAgo(at.uptime)] : null) : null;
  const mfr = fmtId(st.manufacturer_id);
  const did = fmtId(st.device_id);
  return h('dl', { class: 'kv' },
    field('Running version', runningNode(running, at.running), 'status-running'),
    field('Package', packageNode(st.package, at.package), 'status-package'),
    field('Stored slots', storedNode(Array.isArray(st.stored) ? st.stored : null, running, at.stored), 'status-stored'),
    field('Space', spaceNode(st, at), 'status-space'),
    field('Uptime', uptimeNode, 'status-uptime'),
    // Both ids come from one DeviceDescription answer: show its age once.
    field('Manufacturer ID', mfr ? [h('span', { class: 'mono' }, mfr), reported(at.description)] : null, 'status-manufacturer-id'),
    field('Device ID', did ? [h('span', { class: 'mono' }, did), mfr ? null : reported(at.description)] : null, 'status-device-id'));
}

/** @param {import('../types.js').Uplink} u */
function uplinkRow(u) {
  return h('tr', { testid: 'uplink-row' },
    h('td', { 'data-label': 'Time', class: 'nowrap' }, absTime(u.received_at, { testid: 'uplink-time' })),
    h('td', { 'data-label': 'FCnt', class: 'num' }, u.f_cnt ?? '—'),
    h('td', { 'data-label': 'FPort', class: 'num' }, u.f_port ?? '—'),
    h('td', { 'data-label': 'DR', class: 'num' }, u.dr ?? '—'),
    h('td', { 'data-label': 'RSSI', class: 'num nowrap' }, fmtNum(u.rssi, 'dBm')),
    h('td', { 'data-label': 'SNR', class: 'num nowrap' }, fmtNum(u.snr, 'dB')),
    h('td', { 'data-label': 'Hex', class: 'mono hex' }, spacedHex(u.data_hex) || dash()),
    h('td', { 'data-label': 'Text', class: 'text-cell' }, u.data_text != null ? u.data_text : dash()),
    h('td', { 'data-label': 'Decoded', class: 'mono json' }, u.object != null ? compactJson(u.object) : dash()));
}

/**
 * @param {import('../types.js').Uplink[]} all
 * @param {{ shown: number, showAll: boolean, toggle: () => void }} opts
 */
export function uplinkTable(all, { shown, showAll, toggle }) {
  if (all.length === 0) return h('p', { class: 'muted pad' }, 'No uplinks received yet.');
  const list = showAll ? all : all.slice(0, shown);
  const more = all.length > shown
    ? h('div', { class: 'more-row' },
      h('span', { class: 'muted' }, `Showing ${list.length} of ${all.length} uplinks`),
      h('button', { type: 'button', class: 'btn btn-small', testid: 'uplinks-toggle', onclick: toggle },
        showAll ? 'Show fewer' : `Show all ${all.length}`))
    : null;
  return h('div', null, h('table', { class: 'table table-cards uplinks', testid: 'uplink-table' },
    h('thead', null, h('tr', null,
      ['Time', 'FCnt', 'FPort', 'DR', 'RSSI', 'SNR', 'Data (hex)', 'Text', 'Decoded'].map((t) => h('th', null, t)))),
    h('tbody', null, list.map(uplinkRow))), more);
}

/** @param {{ at: string, kind?: string, message?: string }[]} events */
export function eventLog(events) {
  if (events.length === 0) return h('p', { class: 'muted' }, 'No events yet.');
  const time = (/** @type {string} */ t) => (parseTime(t) || new Date(0)).getTime();
  const sorted = [...events].sort((a, b) => time(b.at) - time(a.at));
  return h('ol', { class: 'events', testid: 'event-log', tabindex: '0', 'aria-label': 'Event log' }, sorted.map((e) =>
    h('li', { class: 'event', testid: 'event-row', 'data-kind': e.kind },
      h('span', { class: 'event-time' }, absTime(e.at)),
      h('span', { class: 'event-kind' }, e.kind || 'event'),
      h('span', { class: 'event-msg' }, e.message || ''))));
}

/**
 * Running versions as the device reported them, and the campaigns that updated it.
 * @param {any[]} entries
 */
export function firmwareHistory(entries) {
  if (entries.length === 0) return h('p', { class: 'muted' }, 'No version reported yet. Ask for the running version above.');
  return h('ol', { class: 'events', testid: 'firmware-history-list', tabindex: '0', 'aria-label': 'Firmware history' }, entries.map((e) => {
    const kind = e.outcome ? (e.outcome === 'verified' || e.outcome === 'completed' ? 'status' : 'error') : 'request';
    return h('li', { class: 'event', testid: 'firmware-history-row', 'data-kind': kind },
      h('span', { class: 'event-time' }, absTime(e.at)),
      h('span', { class: 'event-kind' }, e.version ? e.version.display : (e.outcome || 'campaign')),
      h('span', { class: 'event-msg' },
        e.campaign_id ? [h('a', { href: `#/campaigns/${e.campaign_id}` }, `#${e.campaign_id}`), ' '] : null,
        e.message || ''));
  }));
}

/**
 * Downlink states as the server records them: requested -> enqueued -> sent ->
 * acknowledged / answered, or failed.
 * @param {string} state
 */
function downlinkKind(state) {
  if (state === 'failed') return 'err';
  if (state === 'acknowledged' || state === 'answered') return 'ok';
  return 'pending';
}

/** @param {any[] | null} list */
export function downlinkList(list) {
  if (!list || list.length === 0) return '';
  const recent = list.slice(0, 10);
  return h('div', null,
    h('h3', { class: 'sub-title' }, 'Recent downlinks'),
    h('table', { class: 'table table-compact table-cards', testid: 'downlink-table' },
      h('thead', null, h('tr', null, ['Queued', 'FPort', 'Data (hex)', 'What', 'State'].map((t) => h('th', null, t)))),
      h('tbody', null, recent.map((d) => h('tr', { testid: 'downlink-row', 'data-state': d.state },
        h('td', { 'data-label': 'Queued', class: 'nowrap' }, timeAgo(d.requested_at)),
        h('td', { 'data-label': 'FPort', class: 'num' }, d.f_port ?? '—'),
        h('td', { 'data-label': 'Data', class: 'mono hex' }, spacedHex(d.data_hex) || '—'),
        h('td', { 'data-label': 'What' }, d.status_command ? commandLabel(d.status_command) : 'manual', d.confirmed ? h('span', { class: 'muted small' }, ' · confirmed') : null),
        h('td', { 'data-label': 'State' }, badge(d.state || '?', downlinkKind(d.state), d.error || ''),
          d.error ? h('span', { class: 'small err-text' }, ' ', d.error) : null))))),
    list.length > recent.length ? h('p', { class: 'muted small' }, `and ${list.length - recent.length} older`) : null);
}

/** The packages' names as the specifications call them. */
const PACKAGES = /** @type {const} */ ([
  ['clock_sync', 'Clock sync (TS003)'], ['multicast_setup', 'Multicast setup (TS005)'], ['fragmentation', 'Fragmentation (TS004)'],
  ['firmware_management', 'Firmware Management (TS006)'], ['version_status', 'Version & Status'],
]);

/**
 * The app-layer packages in effect for the device (versions and FPorts: the defaults, or its
 * device profile's on the network server) and its fragment-decoder limits when a campaign
 * stated them (`packages`, `device_limits` of GET /api/devices/{dev_eui}).
 * @param {any} d  the device
 */
export function packagesView(d) {
  const p = d.packages;
  if (!p) return h('p', { class: 'muted' }, 'Not reported by this server.');
  const source = p.source === 'device_profile'
    ? h('span', null, 'From the device profile ', h('strong', null, (p.device_profile && (p.device_profile.name || p.device_profile.id)) || ''), ' on the network server; the rest are the packages\' defaults.')
    : 'The packages\' defaults (the network server keeps no app-layer parameters for this device).';
  /** @param {string} key */
  const cell = (key) => {
    const x = p[key];
    if (!x) return '—';
    const parts = [x.version != null ? `v${x.version}` : null, `FPort ${x.f_port}`];
    if (key === 'clock_sync' && !x.enabled) parts.push(p.clock_sync_answered_by_network ? 'answered by the network server' : 'not answered by lorafleet');
    return parts.filter(Boolean).join(' · ');
  };
  const l = d.device_limits;
  /** @type {[string, string][]} */
  const limitRows = l ? /** @type {[string, string][]} */ ([['max_fragment_size', 'Largest fragment'], ['max_fragments', 'Most data fragments'], ['max_parity', 'Most parity fragments']])
    .filter(([k]) => l[k] != null).map(([k, label]) => [label, k === 'max_fragment_size' ? `${l[k]} B` : String(l[k])]) : [];
  return h('div', { testid: 'device-packages', 'data-source': p.source },
    h('p', { class: 'muted small' }, source, ' A campaign\'s packages and per-device overrides apply on top while it runs.'),
    p.note ? h('div', { class: 'alert alert-warn small', testid: 'device-packages-note' }, h('span', null, p.note)) : null,
    h('dl', { class: 'kv' }, PACKAGES.map(([key, label]) => [h('dt', null, label), h('dd', { testid: `package-${key}` }, cell(key))])),
    h('h3', { class: 'sub-title' }, 'Device limits'),
    limitRows.length
      ? h('div', { testid: 'device-limits' },
        h('dl', { class: 'kv' }, limitRows.map(([label, v]) => [h('dt', null, label), h('dd', null, v)])),
        h('p', { class: 'muted small' }, 'As held by ', h('a', { href: `#/campaigns/${l.campaign_id}` }, `campaign #${l.campaign_id}`), ' (its override for the device, its own limits, the firmware sidecar\'s).'))
      : h('p', { class: 'muted small', testid: 'device-limits' }, 'Not known: no campaign stated limits for this device.'));
}
