// @ts-check
// The device page's Firmware Management (TS006) buttons and what the device reported through
// it: devices whose stack has no Version & Status (LoRaMac-node, ST, LoRa Basics Modem).
import { api, messageOf, statusOf } from '../api.js';
import { timeAgo } from '../clock.js';
import { h, dash } from '../dom.js';

/** @typedef {{ cmd: string, label: string, help: string }} FmCommand */

/** @type {FmCommand[]} */
const FM_COMMANDS = [
  { cmd: 'package_version', label: 'Package version', help: 'Firmware Management package identifier and version' },
  { cmd: 'dev_version', label: 'Device version', help: 'Running firmware and hardware version (DevVersionReq)' },
  { cmd: 'upgrade_image', label: 'Image status', help: 'Status and version of the received image (DevUpgradeImageReq)' },
  { cmd: 'reboot_countdown', label: 'Reboot after…', help: 'Reboot after the given seconds (DevRebootCountdownReq)' },
  { cmd: 'reboot_time', label: 'Reboot at…', help: 'Reboot at the given time (DevRebootTimeReq)' },
  { cmd: 'delete_image', label: 'Delete image', help: 'Delete the received image of the version it reported (DevDeleteImageReq)' },
];

/** A version as the device sent it (4 bytes) and as it reads (dotted). @param {any} v */
function versionText(v) {
  if (!v) return null;
  return h('span', { testid: 'fm-version' }, v.dotted ? h('strong', null, v.dotted) : null, v.dotted ? ' ' : null,
    h('span', { class: 'mono small muted', title: v.value != null ? `raw ${v.value}` : null }, `0x${v.hex}`));
}

/** @param {any} field  a record field with its time */
function reported(field) {
  if (!field) return dash();
  return h('span', null, field.hex ? versionText(field) : field.status || JSON.stringify(field), ' ', h('span', { class: 'muted small' }, timeAgo(field.at)));
}

/** In words: what the received image is. @type {Record<string, string>} */
const IMAGE_WORDS = { absent: 'no image', corrupt: 'corrupt', incompatible: 'incompatible (another hardware)', valid: 'valid' };

/** @param {any} img  the record's `image` */
function imageText(img) {
  if (!img) return dash();
  return h('span', { 'data-status': img.status }, IMAGE_WORDS[img.status] || img.status, img.version ? [', version ', versionText(img.version)] : null, ' ', h('span', { class: 'muted small' }, timeAgo(img.at)));
}

/** @param {any} r  the record's `reboot` */
function rebootText(r) {
  if (!r) return dash();
  return h('span', null, r.in_s != null ? `in ${r.in_s} s` : r.cancelled ? 'cancelled' : 'cannot reboot then', ' ', h('span', { class: 'muted small' }, timeAgo(r.at)));
}

/**
 * @param {string} devEui
 * @param {{ reload: () => void, record: () => any }} page
 */
export function fmPanel(devEui, page) {
  const error = h('p', { class: 'form-error', role: 'alert', testid: 'fm-error' });
  const sent = h('p', { class: 'muted small', testid: 'fm-sent' });
  const countdown = h('input', { type: 'number', min: 1, step: 1, value: '60', class: 'input-small', 'aria-label': 'Seconds until the reboot', testid: 'fm-countdown' });
  const at = h('input', { type: 'datetime-local', class: 'input-small', 'aria-label': 'Reboot time', testid: 'fm-reboot-at' });
  const recordBody = h('dl', { class: 'kv', testid: 'fm-record' });

  /** @param {string} cmd @returns {Record<string, unknown> | null} */
  function body(cmd) {
    /** @type {Record<string, unknown>} */
    const b = { command: cmd };
    if (cmd === 'reboot_countdown') {
      const n = Number(countdown.value);
      if (!Number.isInteger(n) || n < 1) { error.textContent = 'Seconds until the reboot: a whole number of at least 1.'; return null; }
      b.countdown_s = n;
    }
    if (cmd === 'reboot_time') {
      const t = new Date(at.value);
      if (!at.value || Number.isNaN(t.getTime())) { error.textContent = 'Choose the reboot time.'; return null; }
      b.at = t.toISOString();
    }
    if (cmd === 'delete_image') {
      const rec = page.record();
      const v = rec && rec.image && rec.image.version && rec.image.version.hex;
      if (!v) { error.textContent = 'Ask the image status first: the delete names the image\'s version.'; return null; }
      b.version = v;
    }
    return b;
  }

  /** @param {FmCommand} c @param {HTMLButtonElement} btn */
  async function send(c, btn) {
    error.textContent = '';
    const b = body(c.cmd);
    if (!b) return;
    btn.disabled = true;
    try {
      const res = await api('POST', `/api/devices/${encodeURIComponent(devEui)}/firmware-management-requests`, b);
      sent.textContent = `${c.label.replace('…', '')} queued (${res && res.payload_hex}); the device answers on FPort 203 with its next uplink.`;
      page.reload();
    } catch (e) {
      if (statusOf(e) !== 401) error.textContent = `${c.label.replace('…', '')}: ${messageOf(e)}`;
    } finally {
      btn.disabled = false;
    }
  }

  const grid = h('div', { class: 'vs-grid' }, FM_COMMANDS.map((c) => {
    const btn = h('button', { type: 'button', class: `btn ${c.cmd === 'delete_image' ? 'btn-danger-outline' : ''} vs-button`, title: c.help, testid: `fm-button-${c.cmd}` }, c.label);
    btn.addEventListener('click', () => send(c, btn));
    const extra = c.cmd === 'reboot_countdown' ? countdown : c.cmd === 'reboot_time' ? at : null;
    return h('div', { class: 'vs-item' }, h('div', { class: 'vs-line' }, btn, extra));
  }));

  /** @param {any} rec  the device's firmware_management record */
  function render(rec) {
    const r = rec || {};
    const del = r.delete_image;
    recordBody.replaceChildren(
      h('dt', null, 'Package'), h('dd', { testid: 'fm-package' }, r.package ? h('span', null, `identifier ${r.package.identifier}, version ${r.package.version} `, h('span', { class: 'muted small' }, timeAgo(r.package.at))) : dash()),
      h('dt', null, 'Firmware'), h('dd', { testid: 'fm-firmware' }, reported(r.firmware_version)),
      h('dt', null, 'Hardware'), h('dd', { testid: 'fm-hardware' }, reported(r.hardware_version)),
      h('dt', null, 'Received image'), h('dd', { testid: 'fm-image' }, imageText(r.image)),
      h('dt', null, 'Reboot'), h('dd', { testid: 'fm-reboot' }, rebootText(r.reboot)),
      ...(del ? [h('dt', null, 'Delete image'), h('dd', { testid: 'fm-delete' }, del.deleted ? 'deleted' : `refused${del.no_valid_image ? ' (no valid image)' : ''}${del.invalid_version ? ' (another version)' : ''}`, ' ', h('span', { class: 'muted small' }, timeAgo(del.at)))] : []));
  }

  const element = h('div', { class: 'card-body' },
    h('p', { class: 'muted small' }, 'Firmware Management (TS006) for stacks without Version & Status; each request is queued as a downlink on FPort 203.'),
    grid, error, sent, recordBody);
  return { element, render };
}
