// @ts-check
// #/devices/:devEui: one device, its Version & Status requests, uplinks, events, downlinks.
import { can } from '../access.js';
import { api, isAbort, messageOf, statusOf } from '../api.js';
import { signalChart } from '../chart.js';
import { confirmDialog, toast } from '../dialogs.js';
import { h, badge, errorBox } from '../dom.js';
import { fmtDateTime } from '../format.js';
import { refresher } from '../schedule.js';
import { fmPanel } from './device_fm.js';
import { requestPanel } from './device_requests.js';
import { downlinkList, eventLog, firmwareHistory, identity, packagesView, statusCard, uplinkTable } from './device_sections.js';

/**
 * The manual downlink form; `reload` after a send (a refused downlink is recorded too).
 * @param {string} devEui
 * @param {() => void} reload
 */
function downlinkForm(devEui, reload) {
  const fport = h('input', { type: 'number', min: 1, max: 223, step: 1, id: 'dl-fport', name: 'f_port', required: true, class: 'input-small', testid: 'downlink-fport' });
  const data = h('input', { type: 'text', id: 'dl-data', name: 'data_hex', placeholder: 'e.g. 01 02 0a', autocomplete: 'off', spellcheck: 'false', class: 'mono', testid: 'downlink-data' });
  const confirmed = h('input', { type: 'checkbox', id: 'dl-confirmed', name: 'confirmed', testid: 'downlink-confirmed' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'downlink-submit' }, 'Queue downlink');
  const result = h('p', { class: 'form-result', role: 'status', testid: 'downlink-result' });
  /** @type {Record<string, HTMLInputElement>} */
  const inputs = { f_port: fport, data_hex: data, confirmed };
  const form = h('form', { class: 'form-grid', novalidate: true },
    h('label', { for: 'dl-fport' }, 'FPort'), fport,
    h('label', { for: 'dl-data' }, 'Payload (hex)'), data,
    h('span', null), h('label', { class: 'check' }, confirmed, ' Confirmed downlink'),
    h('span', null), h('div', null, submit),
    h('span', null), result);
  /** @param {string} msg @param {HTMLInputElement | null | undefined} input */
  const fail = (msg, input) => {
    result.textContent = msg; result.classList.add('err-text');
    if (input) { input.classList.add('invalid'); input.focus(); }
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const i of Object.values(inputs)) i.classList.remove('invalid');
    result.className = 'form-result';
    const port = Number(fport.value);
    const hex = data.value.replace(/[\s:]/g, '').toLowerCase();
    if (!Number.isInteger(port) || port < 1 || port > 223) { fail('FPort must be a whole number from 1 to 223.', fport); return; }
    if (!/^([0-9a-f]{2})*$/.test(hex)) { fail('Payload must be hex bytes, e.g. 01 02 0a.', data); return; }
    submit.disabled = true;
    result.textContent = 'Queueing…';
    try {
      await api('POST', `/api/devices/${encodeURIComponent(devEui)}/downlinks`, { f_port: port, data_hex: hex, confirmed: confirmed.checked });
      result.textContent = `Queued ${hex.length / 2} byte${hex.length === 2 ? '' : 's'} on port ${port}.`;
      result.classList.add('ok-text');
    } catch (e) {
      const field = e && typeof e === 'object' && 'field' in e ? String(e.field) : '';
      if (statusOf(e) !== 401) fail(messageOf(e), inputs[field]);
    } finally {
      submit.disabled = false;
      reload();
    }
  });
  return form;
}

/**
 * @param {import('../types.js').PageCtx} ctx
 * @param {string} devEui
 * @param {() => any} device
 * @param {HTMLButtonElement} removeBtn
 */
function onRemove(ctx, devEui, device, removeBtn) {
  removeBtn.addEventListener('click', async () => {
    const d = device();
    const name = d && d.name ? `${d.name} (${devEui})` : devEui;
    const ok = await confirmDialog({
      title: 'Remove device?', testid: 'confirm-remove', danger: true, confirmLabel: 'Remove device',
      message: `${name} will be removed from lorafleet together with its history. If it sends another uplink it will reappear.`,
    });
    if (!ok) return;
    removeBtn.disabled = true;
    try {
      await api('DELETE', `/api/devices/${encodeURIComponent(devEui)}`);
      toast(`Device ${devEui} removed`, 'ok');
      ctx.navigate('/devices');
    } catch (e) {
      removeBtn.disabled = false;
      if (statusOf(e) !== 401) toast(`Could not remove the device: ${messageOf(e)}`, 'error');
    }
  });
}

/** @param {string} title @param {...import('../dom.js').Child} body */
const section = (title, ...body) => h('section', { class: 'card' }, h('h2', { class: 'card-title' }, title), ...body);
/** @param {string} [testid] */
function loadingBody(testid) {
  return h('div', { class: 'card-body', testid }, h('p', { class: 'muted' }, 'Loading…'));
}

/** @type {import('../types.js').Page} */
export function devicePage(view, ctx) {
  const devEui = ctx.params.devEui;
  ctx.setTitle(devEui);
  /** @type {any} */
  let device = null;
  /** @type {import('../types.js').Uplink[]} */
  let uplinks = [];
  let gone = false;
  const UPLINKS_SHOWN = window.matchMedia('(max-width: 700px)').matches ? 8 : 20;
  let showAllUplinks = false;

  // The skeleton is built once; sections are re-filled on every refresh so that forms keep
  // what the user typed.
  const title = h('h1', { class: 'device-title', testid: 'device-title' }, devEui);
  const headBadges = h('span', { class: 'badges' });
  const removeBtn = h('button', { type: 'button', class: 'btn btn-danger-outline', testid: 'remove-device' }, 'Remove device');
  const pageError = h('div', { class: 'page-error' });
  const identityBody = loadingBody();
  const statusBody = loadingBody('status-card');
  const historyBody = loadingBody('firmware-history');
  const packagesBody = loadingBody();
  const eventsBody = loadingBody();
  const chartBox = h('div', { class: 'chart', testid: 'uplink-chart' });
  const chart = signalChart(chartBox);
  const uplinkBody = h('div', { class: 'table-wrap' }, h('p', { class: 'muted' }, 'Loading…'));
  const downlinksBody = h('div', { class: 'recent-downlinks' });
  const requests = requestPanel(devEui, { device: () => device, reload: () => live.poke() });
  const fm = fmPanel(devEui, { record: () => device && device.firmware_management, reload: () => live.poke() });

  view.append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/devices', testid: 'back-to-devices' }, '‹ Devices')),
    h('div', { class: 'page-head device-head' },
      h('div', { class: 'device-head-main' }, title, h('div', { class: 'device-sub' }, h('span', { class: 'mono', testid: 'device-eui' }, devEui), headBadges)),
      can('operate') ? h('div', { class: 'toolbar' }, removeBtn) : null),
    pageError,
    h('div', { class: 'grid-2' }, section('Device', identityBody), section('Firmware status', statusBody)),
    h('div', { class: 'grid-2' },
      section('Version & Status requests', requests.element),
      section('Firmware Management', fm.element)),
    h('div', { class: 'grid-2' }, section('Firmware history', historyBody), section('Packages and limits', packagesBody)),
    section('Signal', h('div', { class: 'card-body' }, chartBox)),
    section('Uplink history', uplinkBody),
    h('div', { class: 'grid-2' },
      section('Events', eventsBody),
      section('Downlinks', h('div', { class: 'card-body' }, can('operate') ? downlinkForm(devEui, () => live.poke()) : null, downlinksBody))));
  onRemove(ctx, devEui, () => device, removeBtn);

  const renderUplinks = () => uplinkBody.replaceChildren(uplinkTable(uplinks, {
    shown: UPLINKS_SHOWN, showAll: showAllUplinks,
    toggle: () => { showAllUplinks = !showAllUplinks; renderUplinks(); },
  }));

  /** @param {boolean} withUplinks */
  function render(withUplinks) {
    const d = device;
    removeBtn.disabled = false;
    ctx.setTitle(d.name || devEui);
    title.replaceChildren(d.name ? d.name : h('span', { class: 'muted' }, '(unnamed)'));
    headBadges.replaceChildren(
      d.never_seen ? badge('never seen', 'muted', 'No uplink received yet', 'badge-never-seen') : '',
      d.reappeared_at ? badge('reappeared', 'warn', `Removed, then sent again at ${fmtDateTime(d.reappeared_at)}`, 'badge-reappeared') : '');
    identityBody.replaceChildren(identity(d, devEui));
    statusBody.replaceChildren(statusCard(d.status || {}));
    requests.render(Array.isArray(d.status_requests) ? d.status_requests : []);
    fm.render(d.firmware_management);
    packagesBody.replaceChildren(packagesView(d));
    eventsBody.replaceChildren(eventLog(Array.isArray(d.events) ? d.events : []));
    historyBody.replaceChildren(firmwareHistory(Array.isArray(d.firmware_history) ? d.firmware_history : []));
    downlinksBody.replaceChildren(downlinkList(Array.isArray(d.downlinks) ? d.downlinks : null));
    if (withUplinks) { renderUplinks(); chart.draw(uplinks); }
  }

  /** @param {unknown} e */
  function showLoadError(e) {
    if (statusOf(e) !== 404) { pageError.replaceChildren(errorBox(`Could not load the device: ${messageOf(e)}`, () => live.now())); return; }
    gone = true;
    removeBtn.disabled = true;
    pageError.replaceChildren(h('div', { class: 'alert alert-warn', testid: 'device-missing' },
      'This device is not (or no longer) known to lorafleet. It will reappear here if it sends an uplink. ',
      h('a', { href: '#/devices' }, 'Back to devices')));
  }

  async function load() {
    const base = `/api/devices/${encodeURIComponent(devEui)}`;
    try {
      const [d, u] = await Promise.all([
        api('GET', base, undefined, { signal: ctx.signal }),
        api('GET', `${base}/uplinks?limit=100`, undefined, { signal: ctx.signal }).catch((e) => {
          if (isAbort(e) || statusOf(e) === 401 || statusOf(e) === 404) throw e;
          return { uplinks: null, error: messageOf(e) };
        }),
      ]);
      if (ctx.signal.aborted) return;
      gone = false;
      device = d;
      uplinks = Array.isArray(u.uplinks) ? u.uplinks : [];
      pageError.replaceChildren(u.error ? errorBox(`Uplink history unavailable: ${u.error}`) : '');
      render(!u.error);
    } catch (e) {
      if (isAbort(e) || statusOf(e) === 401) return;
      showLoadError(e);
    }
  }

  const live = refresher(load);
  live.now();
  return {
    refresh: () => live.now(),
    onEvent(type, data) {
      if (type !== 'device') return;
      const mine = data && typeof data.dev_eui === 'string' && data.dev_eui.toLowerCase() === devEui.toLowerCase();
      if (mine || gone) live.poke();
    },
    destroy() { live.cancel(); chart.destroy(); },
  };
}
