// @ts-check
// The device page's Version & Status buttons, their request states and the erase-slot dialog.
import { can } from '../access.js';
import { api, messageOf, statusOf } from '../api.js';
import { timeAgo } from '../clock.js';
import { confirmDialog, modal } from '../dialogs.js';
import { h, badge } from '../dom.js';
import { parseTime, spacedHex } from '../format.js';

/** @typedef {import('../types.js').StatusRequest} StatusRequest */
/** @typedef {{ cmd: string, label: string, help: string, nbSlots?: boolean, danger?: boolean }} Command */

/** Version & Status requests, in the order they are shown. @type {Command[]} */
const VS_COMMANDS = [
  { cmd: 'package_version', label: 'Package version', help: 'Protocol package identifier, version and versioning type' },
  { cmd: 'version_running', label: 'Running version', help: 'Firmware version running now and its slot' },
  { cmd: 'version_stored', label: 'Stored versions', help: 'Firmware versions stored in the slots', nbSlots: true },
  { cmd: 'space_status', label: 'Space status', help: 'Free heap and slot size' },
  { cmd: 'uptime', label: 'Uptime', help: 'Time since the last device reset' },
  { cmd: 'device_description', label: 'Device description', help: 'Manufacturer and device identifiers' },
  { cmd: 'erase_slot', label: 'Erase slot…', help: 'Erase the firmware image in one slot', danger: true },
];

/** @param {string} cmd */
export const commandLabel = (cmd) => (VS_COMMANDS.find((c) => c.cmd === cmd) || { label: cmd }).label.replace('…', '');

/** @param {string} s */
function stateKind(s) {
  return s === 'answered' ? 'ok' : s === 'failed' ? 'err' : s === 'pending' || s === 'sending' ? 'pending' : 'muted';
}

/** @param {StatusRequest} r */
const byTime = (r) => (parseTime(r.requested_at) || new Date(0)).getTime();

/** @param {StatusRequest[]} recent */
function requestTable(recent) {
  return h('table', { class: 'table table-compact table-cards', testid: 'request-table' },
    h('thead', null, h('tr', null, ['Request', 'Payload', 'State', 'Sent', 'Answered'].map((t) => h('th', null, t)))),
    h('tbody', null, recent.map((r) => h('tr', { testid: 'request-row', 'data-state': r.state },
      h('td', { 'data-label': 'Request' }, commandLabel(r.command)),
      h('td', { 'data-label': 'Payload', class: 'mono' }, spacedHex(r.payload_hex) || '—'),
      h('td', { 'data-label': 'State' }, badge(r.state, stateKind(r.state), r.error || ''), r.error ? h('span', { class: 'small err-text' }, ' ', r.error) : null),
      h('td', { 'data-label': 'Sent' }, timeAgo(r.requested_at, 'request-sent')),
      h('td', { 'data-label': 'Answered' }, timeAgo(r.answered_at, 'request-answered'))))));
}

/**
 * Asks which slot to erase, then for confirmation; null when the user backs out.
 * @param {string} devEui
 * @param {any} device
 * @returns {Promise<number | null>}
 */
async function askEraseSlot(devEui, device) {
  const slots = device && device.status && device.status.package && device.status.package.slots;
  const running = device && device.status && device.status.running;
  const input = h('input', { type: 'number', min: 0, max: 15, step: 1, required: true, id: 'erase-slot', class: 'input-small', testid: 'erase-slot-input' });
  const chosen = await modal({
    title: 'Erase a firmware slot', testid: 'erase-dialog', danger: true, confirmLabel: 'Continue',
    body: [
      h('label', { for: 'erase-slot' }, 'Slot to erase (0–15)'), input,
      slots != null ? h('p', { class: 'muted small' }, `The device reported ${slots} slot${slots === 1 ? '' : 's'}.`) : null,
      running && running.slot != null ? h('p', { class: 'muted small' }, `Slot ${running.slot} holds the running firmware.`) : null,
    ],
    validate() {
      const n = Number(input.value);
      if (input.value === '' || !Number.isInteger(n) || n < 0 || n > 15) return 'Enter a slot number from 0 to 15.';
      return null;
    },
  });
  if (!chosen) return null;
  const slot = Number(input.value);
  const ok = await confirmDialog({
    title: `Erase slot ${slot}?`, testid: 'confirm-erase', danger: true, confirmLabel: `Erase slot ${slot}`,
    message: `The firmware image stored in slot ${slot} on ${devEui} will be erased. This cannot be undone.`,
  });
  return ok ? slot : null;
}

/**
 * The request buttons with the state of each command's latest request.
 * @param {string} devEui
 * @param {{ device: () => any, reload: () => void }} page
 */
export function requestPanel(devEui, page) {
  /** Requests sent from this page that the server list may not show yet: cmd -> request. @type {Record<string, StatusRequest>} */
  const localReqs = {};
  /** @type {StatusRequest[]} */
  let serverList = [];
  const vsError = h('p', { class: 'form-error', role: 'alert', testid: 'vs-error' });
  const recentReqs = h('div', { class: 'recent-requests' });
  const nbSlots = h('input', { type: 'number', min: 0, max: 15, step: 1, class: 'input-tiny', placeholder: 'all', 'aria-label': 'Number of slots (optional)', title: 'Number of slots to report (optional)', testid: 'vs-nb-slots' });
  /** @type {Record<string, HTMLButtonElement>} */
  const buttons = {};
  /** @type {Record<string, HTMLElement>} */
  const states = {};

  /** @param {string} cmd @param {StatusRequest | undefined | null} r */
  function setReqState(cmd, r) {
    const el = states[cmd];
    const btn = buttons[cmd];
    const s = r ? r.state : 'none';
    el.setAttribute('data-state', s);
    btn.setAttribute('data-state', s);
    btn.classList.toggle('is-pending', s === 'pending' || s === 'sending');
    if (!r) { el.replaceChildren(h('span', { class: 'muted' }, 'not requested')); return; }
    if (s === 'sending') { el.replaceChildren(badge('sending…', 'pending')); return; }
    /** @type {import('../dom.js').Child[]} */
    const parts = [badge(s, stateKind(s), r.error || '')];
    if (s === 'answered' && r.answered_at) parts.push(' ', timeAgo(r.answered_at));
    else if (r.requested_at) parts.push(' sent ', timeAgo(r.requested_at));
    if (s === 'failed' && r.error) parts.push(h('span', { class: 'err-text small' }, ` ${r.error}`));
    el.replaceChildren(...parts.map((p) => (p instanceof Node ? p : String(p))));
  }

  /** Latest request per command: the server's list, plus what this page sent that it lacks. */
  function latestByCommand() {
    /** @type {Record<string, StatusRequest>} */
    const latest = {};
    for (const r of serverList) {
      const cur = latest[r.command];
      if (!cur || byTime(r) > byTime(cur) || (byTime(r) === byTime(cur) && String(r.id) > String(cur.id))) latest[r.command] = r;
    }
    for (const [cmd, r] of Object.entries(localReqs)) {
      if (r.id != null && serverList.some((x) => String(x.id) === String(r.id))) { delete localReqs[cmd]; continue; }
      if (!latest[cmd] || byTime(r) >= byTime(latest[cmd])) latest[cmd] = r;
    }
    return latest;
  }

  /** @param {StatusRequest[]} list */
  function render(list) {
    serverList = list;
    const latest = latestByCommand();
    for (const c of VS_COMMANDS) setReqState(c.cmd, latest[c.cmd]);
    const recent = [...list].sort((a, b) => byTime(b) - byTime(a)).slice(0, 8);
    recentReqs.replaceChildren(...(recent.length === 0 ? [] : [h('h3', { class: 'sub-title' }, 'Recent requests'), requestTable(recent)]));
  }

  /** @param {Command} c @returns {Promise<Record<string, unknown> | null>} */
  async function requestBody(c) {
    /** @type {Record<string, unknown>} */
    const body = { command: c.cmd };
    if (c.cmd === 'version_stored' && nbSlots.value !== '') {
      const n = Number(nbSlots.value);
      if (!Number.isInteger(n) || n < 0 || n > 15) { vsError.textContent = 'Number of slots must be a whole number from 0 to 15 (empty or 0: the device default).'; nbSlots.focus(); return null; }
      body.nb_slots = n;
    }
    if (c.cmd === 'erase_slot') {
      const slot = await askEraseSlot(devEui, page.device());
      if (slot == null) return null;
      body.slot = slot;
    }
    return body;
  }

  /** @param {Command} c */
  async function onCommand(c) {
    vsError.textContent = '';
    const body = await requestBody(c);
    if (!body) return;
    const btn = buttons[c.cmd];
    btn.disabled = true;
    const prev = localReqs[c.cmd];
    localReqs[c.cmd] = { command: c.cmd, state: 'sending', requested_at: new Date().toISOString() };
    setReqState(c.cmd, localReqs[c.cmd]);
    try {
      const res = await api('POST', `/api/devices/${encodeURIComponent(devEui)}/status-requests`, body);
      localReqs[c.cmd] = { id: res && res.id, command: c.cmd, state: 'pending', requested_at: new Date().toISOString(), payload_hex: res && res.payload_hex };
      setReqState(c.cmd, localReqs[c.cmd]);
      page.reload();
    } catch (e) {
      if (prev) localReqs[c.cmd] = prev; else delete localReqs[c.cmd];
      render(serverList);
      if (statusOf(e) !== 401) vsError.textContent = `${c.label.replace('…', '')}: ${messageOf(e)}`;
    } finally {
      btn.disabled = false;
    }
  }

  const grid = h('div', { class: 'vs-grid' }, VS_COMMANDS.map((c) => {
    const btn = h('button', { type: 'button', class: `btn ${c.danger ? 'btn-danger-outline' : ''} vs-button`, title: c.help, testid: `vs-button-${c.cmd}` }, c.label);
    btn.addEventListener('click', () => onCommand(c));
    const st = h('span', { class: 'req-state', testid: `request-state-${c.cmd}`, 'data-state': 'none' });
    buttons[c.cmd] = btn;
    states[c.cmd] = st;
    return h('div', { class: 'vs-item' },
      h('div', { class: 'vs-line' }, btn, c.nbSlots ? h('label', { class: 'nb-slots' }, 'slots ', nbSlots) : null),
      st);
  }));

  const element = h('div', { class: 'card-body' },
    h('p', { class: 'muted small' }, 'Each request is queued as a downlink; the device answers on its status port with its next uplink.'),
    can('operate') ? grid : h('p', { class: 'muted', testid: 'requests-need-operator' }, 'Sending requests needs the operator role.'), vsError, recentReqs);
  return { element, render };
}
