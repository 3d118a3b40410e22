// @ts-check
// #/campaigns/new and #/campaigns/:id/edit: the campaign form, with defaults, a plan previewed
// by the server as the fields change, and each refused field's reason next to it.
import { api, bodyOf, isAbort, messageOf, state, statusOf } from '../api.js';
import { toast } from '../dialogs.js';
import { h, card, errorBox } from '../dom.js';
import { fmtBytes } from '../format.js';
import { queryParam } from '../router.js';
import { debounce } from '../schedule.js';
import { planView } from './plan.js';
import { devicePicker } from './device_picker.js';
import { fillRollout, rolloutCard, rolloutInputs, rolloutOf } from './campaign_waves.js';
import { localInputOf, refusedView, startAtOf, zoneHelp } from './guards.js';

/** @typedef {HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement} Input */

/** @param {string} id @param {string} placeholder @param {string | number} [value] */
const text = (id, placeholder, value) => h('input', { type: 'text', id, placeholder, value: value ?? '', autocomplete: 'off', spellcheck: 'false', testid: `input-${id}` });
/** @param {string} id @param {string} placeholder @param {string | number} [value] */
const num = (id, placeholder, value) => h('input', { type: 'number', id, placeholder, value: value ?? '', testid: `input-${id}` });
/** @param {string} id @param {[string, string][]} options @param {string} value */
const select = (id, options, value) => {
  const el = h('select', { id, testid: `input-${id}` }, options.map(([v, l]) => h('option', { value: v }, l)));
  el.value = value;
  return el;
};

/** How the engine asks a device's version. @type {[string, string][]} */
const METHODS = [['auto', 'Auto (Version & Status, then Firmware Management)'], ['version_status', 'Version & Status'], ['firmware_management', 'Firmware Management (TS006)'], ['none', 'Do not ask']];

/** The form's inputs with their defaults, which depend on the network lorafleet talks to. */
function formInputs() {
  const info = state.info || {};
  const netKind = info.network && info.network.kind;
  const eu868 = !info.network || info.network.region === 'EU868';
  return {
    name: text('cf-name', 'e.g. Meters to 1.4.2'),
    driver: select('cf-driver', [['chirpstack-v4', 'ChirpStack v4 FUOTA service'], ['fuota-server-v3', 'chirpstack-fuota-server (v3)'], ['engine', 'lorafleet engine']], netKind === 'chirpstack-v4' ? 'chirpstack-v4' : netKind === 'simulated' ? 'engine' : 'fuota-server-v3'),
    lorawan: select('cf-lorawan', [['1.0', 'LoRaWAN 1.0.x (GenAppKey)'], ['1.1', 'LoRaWAN 1.1 (AppKey)']], '1.0'),
    genAppKey: text('cf-gen-app-key', '32 hex digits'),
    perDevice: h('textarea', { id: 'cf-per-device', rows: 3, placeholder: 'one per line: <DevEUI> <key>', spellcheck: 'false', testid: 'input-cf-per-device' }),
    mcClass: select('cf-class', [['C', 'Class C'], ['B', 'Class B']], 'C'),
    dr: num('cf-dr', eu868 ? '5' : 'RX2 DR', eu868 ? 5 : ''),
    freq: text('cf-frequency', eu868 ? '868.1' : 'RX2 frequency', eu868 ? '868.1' : ''),
    ping: num('cf-ping', '4'),
    group: num('cf-group', '0'),
    timeoutExp: num('cf-timeout-exp', 'auto'),
    ucTimeout: num('cf-uc-timeout', '150', 150),
    attempts: num('cf-attempts', '5', 5),
    fragSize: num('cf-frag-size', 'auto (largest for the DR)'),
    redundancy: num('cf-redundancy', '10', 10),
    sessionIndex: num('cf-session-index', '0'),
    matrix: num('cf-matrix', '0'),
    blockAck: num('cf-block-ack', '1'),
    descriptor: text('cf-descriptor', '00000000'),
    parity: select('cf-parity', [['fixed', 'Fixed: every parity fragment'], ['adaptive', 'Adaptive: while a device still needs them']], 'fixed'),
    status: select('cf-status', [['after_session', 'After the session'], ['after_enqueue', 'After the fragments are queued'], ['none', 'Do not ask']], 'after_session'),
    check: select('cf-check', [['refuse', 'Leave out devices that do not fit'], ['warn', 'Warn and update anyway'], ['off', 'No check (no Version & Status)']], 'refuse'),
    verify: select('cf-verify', [['true', 'Ask each device for its version'], ['false', 'Do not verify']], 'true'),
    rebootDelay: num('cf-reboot-delay', '60', 60),
    checkMethod: select('cf-check-method', METHODS, 'auto'),
    verifyMethod: select('cf-verify-method', METHODS, 'auto'),
    startAt: h('input', { type: 'datetime-local', id: 'cf-start-at', testid: 'input-cf-start-at' }),
    reinstall: select('cf-reinstall', [['false', 'Refuse devices that already run the image\'s version'], ['true', 'Send it to them again']], 'false'),
    rebootWith: select('cf-reboot-with', [['reboot_time', 'One reboot time for the group'], ['reboot_countdown', 'A countdown to that time (ST devices)']], 'reboot_time'),
    rollout: rolloutInputs(),
  };
}

/** @typedef {ReturnType<typeof formInputs>} Inputs */

/** @param {Input} el */
const intOrNull = (el) => (el.value.trim() === '' ? undefined : Number(el.value));
/** @param {Input} el */
const strOrNull = (el) => (el.value.trim() === '' ? undefined : el.value.trim());

/** @param {Inputs} f */
function keysOf(f) {
  /** @type {Record<string, unknown>} */
  const keys = { lorawan_version: f.lorawan.value };
  if (f.genAppKey.value.trim()) keys.gen_app_key = f.genAppKey.value.trim();
  /** @type {Record<string, Record<string, string>>} */
  const per = {};
  for (const line of f.perDevice.value.split('\n')) {
    const [eui, key] = line.trim().split(/[\s=,;]+/);
    if (eui && key) per[eui] = f.lorawan.value === '1.1' ? { app_key: key } : { gen_app_key: key };
  }
  if (Object.keys(per).length) keys.per_device = per;
  return keys;
}

/**
 * The request the form stands for (POST /api/campaigns).
 * @param {Inputs} f
 * @param {HTMLSelectElement} firmwareSel
 * @param {{ devices: string[] | null, device_filter: Record<string, string> | null }} target
 */
function requestOf(f, firmwareSel, target) {
  const freq = strOrNull(f.freq);
  return {
    name: strOrNull(f.name),
    firmware_id: firmwareSel.value ? Number(firmwareSel.value) : undefined,
    ...target,
    driver: f.driver.value,
    keys: keysOf(f),
    multicast: {
      class: f.mcClass.value, dr: intOrNull(f.dr), frequency: freq === undefined ? undefined : Number(freq),
      ping_slot_periodicity: intOrNull(f.ping), group_id: intOrNull(f.group), timeout_exp: intOrNull(f.timeoutExp),
    },
    unicast: { timeout_s: intOrNull(f.ucTimeout), attempts: intOrNull(f.attempts) },
    fragmentation: {
      fragment_size: f.fragSize.value.trim() === '' ? null : Number(f.fragSize.value),
      redundancy: intOrNull(f.redundancy), session_index: intOrNull(f.sessionIndex), matrix: intOrNull(f.matrix),
      block_ack_delay: intOrNull(f.blockAck), descriptor_hex: strOrNull(f.descriptor),
      parity: f.parity.value,
    },
    request_frag_status: f.status.value,
    // null, not absent: an edit's merge patch then clears a start time or reinstall removed here.
    start_at: startAtOf(f.startAt.value) ?? null,
    allow_reinstall: f.reinstall.value === 'true',
    engine: f.driver.value === 'engine'
      ? { check: f.check.value, verify: f.verify.value === 'true', reboot_delay_s: intOrNull(f.rebootDelay), check_method: f.checkMethod.value, verify_method: f.verifyMethod.value, reboot_with: f.rebootWith.value }
      : undefined,
    rollout: f.driver.value === 'engine' ? rolloutOf(f.rollout) : undefined,
  };
}

/**
 * Puts a stored request (a draft being edited) back into the form.
 * @param {Inputs} f
 * @param {any} req
 */
function fill(f, req) {
  // The stored request keeps the frequency as typed: MHz from this form, Hz from the API.
  /** @param {Input} el @param {unknown} v */
  const set = (el, v) => { if (v !== undefined && v !== null) el.value = el === f.freq && Number(v) >= 10000 ? String(Number(v) / 1e6) : String(v); };
  set(f.name, req.name);
  if (req.driver) f.driver.value = req.driver;
  const mc = req.multicast || {};
  if (mc.class) f.mcClass.value = mc.class;
  set(f.dr, mc.dr); set(f.freq, mc.frequency); set(f.ping, mc.ping_slot_periodicity); set(f.group, mc.group_id); set(f.timeoutExp, mc.timeout_exp);
  const uc = req.unicast || {};
  set(f.ucTimeout, uc.timeout_s); set(f.attempts, uc.attempts);
  const fr = req.fragmentation || {};
  set(f.fragSize, fr.fragment_size); set(f.redundancy, fr.redundancy); set(f.sessionIndex, fr.session_index);
  set(f.matrix, fr.matrix); set(f.blockAck, fr.block_ack_delay); set(f.descriptor, fr.descriptor_hex);
  if (fr.parity) f.parity.value = fr.parity;
  if (req.request_frag_status) f.status.value = req.request_frag_status;
  const en = req.engine || {};
  if (en.check) f.check.value = en.check;
  if (en.check_method) f.checkMethod.value = en.check_method;
  if (en.verify_method) f.verifyMethod.value = en.verify_method;
  if (en.reboot_with) f.rebootWith.value = en.reboot_with;
  if (en.verify !== undefined && en.verify !== null) f.verify.value = String(en.verify);
  set(f.rebootDelay, en.reboot_delay_s);
  fillRollout(f.rollout, req.rollout);
  if (req.start_at) f.startAt.value = localInputOf(req.start_at);
  f.reinstall.value = req.allow_reinstall ? 'true' : 'false';
}

// Field errors from the server name fields like "multicast.dr" or "keys.per_device.<eui>".
/** @type {Record<string, string>} */
const FIELD_OF = {
  name: 'name', firmware_id: 'firmware_id', devices: 'devices', driver: 'driver', keys: 'keys.gen_app_key',
  'keys.gen_app_key': 'keys.gen_app_key', 'keys.lorawan_version': 'keys.lorawan_version',
};

/**
 * Field errors next to their inputs: `field()` registers each.
 * @param {() => void} onChange
 */
function fieldErrors(onChange) {
  /** @type {Record<string, HTMLElement>} */
  const errors = {};
  /** @type {Record<string, HTMLElement>} */
  const inputs = {};
  const general = h('div', { testid: 'form-error' });
  return {
    general, errors, inputs,
    /** @param {string} name @param {string} label @param {Input} el @param {string} [help] */
    field(name, label, el, help) {
      inputs[name] = el;
      el.setAttribute('data-field', name);
      el.addEventListener('input', onChange);
      el.addEventListener('change', onChange);
      const err = h('p', { class: 'field-error', testid: `error-${name}` });
      errors[name] = err;
      return h('div', { class: 'cf-field' }, h('label', { for: el.id }, label), el, help ? h('p', { class: 'muted small cf-help' }, help) : null, err);
    },
    /** @param {{ field: string, error: string }[]} list */
    show(list) {
      for (const el of Object.values(errors)) el.textContent = '';
      for (const el of Object.values(inputs)) el.classList.remove('invalid');
      general.replaceChildren();
      const unplaced = [];
      for (const e of list) {
        let key = FIELD_OF[e.field] || e.field;
        if (key.startsWith('keys.per_device')) key = 'keys.per_device';
        if (key.startsWith('rollout.waves')) key = 'rollout.waves';
        const el = errors[key];
        if (!el) { unplaced.push(e); continue; }
        el.textContent = el.textContent ? `${el.textContent} ${e.error}` : e.error;
        if (inputs[key]) inputs[key].classList.add('invalid');
      }
      if (unplaced.length) {
        general.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert' },
          h('ul', { class: 'cf-errors' }, unplaced.map((e) => h('li', null, h('code', null, e.field), ' ', e.error)))));
      }
    },
  };
}

/** @typedef {[name: string, label: string, el: Input, help?: string]} FieldRow */

/**
 * A card whose fields stand in a grid, one row of the table each.
 * @param {ReturnType<typeof fieldErrors>} fe
 * @param {string} title
 * @param {FieldRow[]} rows
 */
function gridCard(fe, title, rows) {
  return card(title,
    h('div', { class: 'cf-grid' }, ...rows.map(([name, label, el, help]) => fe.field(name, label, el, help))));
}

/**
 * The form's cards; `fe.field` registers each input for its errors.
 * @param {Inputs} f
 * @param {ReturnType<typeof fieldErrors>} fe
 * @param {HTMLSelectElement} firmwareSel
 * @param {ReturnType<typeof devicePicker>} picker
 * @param {HTMLElement} engineCard
 */
function formCards(f, fe, firmwareSel, picker, engineCard) {
  return [
    gridCard(fe, 'Campaign', [
      ['name', 'Name', f.name],
      ['firmware_id', 'Firmware image', firmwareSel],
      ['driver', 'FUOTA service', f.driver, 'ChirpStack v4 reads the device keys itself; the v3 FUOTA server needs them below.'],
    ]),
    card('Devices', picker.toolbar, picker.list, h('p', { class: 'field-error', testid: 'error-devices' })),
    gridCard(fe, 'Start and guards', [
      ['start_at', 'Start at', f.startAt, zoneHelp()],
      ['allow_reinstall', 'Devices already on this version', f.reinstall, 'Devices whose model does not match the image are always refused.'],
    ]),
    gridCard(fe, 'Keys', [
      ['keys.lorawan_version', 'LoRaWAN version', f.lorawan],
      ['keys.gen_app_key', 'GenAppKey (all devices)', f.genAppKey, 'The McRootKey of each device is derived from it. Never shown again once saved.'],
      ['keys.per_device', 'Keys per device', f.perDevice],
    ]),
    gridCard(fe, 'Multicast', [
      ['multicast.class', 'Class', f.mcClass],
      ['multicast.dr', 'Data rate', f.dr],
      ['multicast.frequency', 'Frequency (MHz)', f.freq],
      ['multicast.ping_slot_periodicity', 'Ping-slot periodicity (Class B)', f.ping],
      ['multicast.group_id', 'Group id', f.group],
      ['multicast.timeout_exp', 'Session timeout exponent', f.timeoutExp, 'Empty: the smallest that fits every fragment. Class C: 2^n s; Class B: 2^n beacon periods. 0–15.'],
    ]),
    gridCard(fe, 'Unicast steps', [
      ['unicast.timeout_s', 'Answer timeout (s)', f.ucTimeout, 'At least the devices\' uplink interval.'],
      ['unicast.attempts', 'Attempts', f.attempts],
    ]),
    gridCard(fe, 'Fragmentation', [
      ['fragmentation.fragment_size', 'Fragment size (bytes)', f.fragSize],
      ['fragmentation.redundancy', 'Redundancy (parity fragments)', f.redundancy],
      ['fragmentation.parity', 'Parity', f.parity, 'Adaptive (lorafleet\'s engine): parity in groups with a status request between them, stopping once no device needs more; the redundancy is then the most it sends.'],
      ['fragmentation.session_index', 'Session index', f.sessionIndex],
      ['fragmentation.matrix', 'Matrix', f.matrix],
      ['fragmentation.block_ack_delay', 'Block ack delay', f.blockAck],
      ['fragmentation.descriptor_hex', 'Descriptor (4 bytes hex)', f.descriptor],
      ['request_frag_status', 'Ask devices for their status', f.status],
    ]),
    engineCard,
  ];
}

/**
 * @param {HTMLElement} view
 * @param {import("../types.js").PageCtx} ctx
 * @param {string | null} editId
 */
function campaignForm(view, ctx, editId) {
  ctx.setTitle(editId ? 'Edit campaign' : 'New campaign');
  const planBox = h('div', { testid: 'plan-preview' }, h('p', { class: 'muted' }, 'The plan appears here once the settings are valid.'));
  const selected = new Set();
  const f = formInputs();
  const firmwareSel = h('select', { id: 'cf-firmware', testid: 'input-cf-firmware' }, h('option', { value: '' }, 'Choose an image…'));
  const schedule = debounce(preview, 350);
  const fe = fieldErrors(schedule);
  const picker = devicePicker(selected, schedule, ctx.signal);
  const save = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'campaign-save' }, editId ? 'Save draft' : 'Create draft');

  // Only the engine checks devices before and verifies them after (Version & Status).
  const engineCard = card('Check and verify (lorafleet engine)',
    h('div', { class: 'cf-grid' },
      fe.field('engine.check', 'Before: running version and slot size', f.check, 'A device whose slot is smaller than the image, or that runs another version than a delta\'s from_version.'),
      fe.field('engine.verify', 'After: verify the new version', f.verify),
      fe.field('engine.reboot_delay_s', 'Reboot delay (s)', f.rebootDelay, 'Time after the session before the devices are asked for their version.'),
      fe.field('engine.check_method', 'Check by', f.checkMethod, 'Auto: Version & Status first, then Firmware Management (TS006), remembered per device.'),
      fe.field('engine.verify_method', 'Verify by', f.verifyMethod),
      fe.field('engine.reboot_with', 'Firmware Management reboot', f.rebootWith)));
  // Waves too: each wave is a session of the engine's own.
  const wavesCard = rolloutCard(f.rollout, fe.field);
  const showEngine = () => { engineCard.hidden = f.driver.value !== 'engine'; wavesCard.hidden = engineCard.hidden; };
  f.driver.addEventListener('change', showEngine);
  showEngine();

  const form = h('form', { class: 'cf-form', novalidate: true },
    formCards(f, fe, firmwareSel, picker, engineCard),
    wavesCard,
    card('Plan', planBox),
    fe.general,
    h('div', { class: 'toolbar' }, save, h('a', { class: 'btn', href: editId ? `#/campaigns/${editId}` : '#/campaigns' }, 'Cancel')));
  // The devices field's error element lives in the picker card.
  fe.errors.devices = /** @type {HTMLElement} */ (form.querySelector('[data-testid="error-devices"]'));
  fe.inputs.devices = picker.focusTarget;

  let seq = 0;
  async function preview() {
    const mine = ++seq;
    try {
      const r = await api('POST', '/api/campaigns/preview', requestOf(f, firmwareSel, picker.target()), { signal: ctx.signal });
      if (mine !== seq) return;
      fe.show([]);
      planBox.replaceChildren(...[refusedView(r.refused), planView(r.plan, r.settings)].filter((x) => x !== null));
      save.disabled = false;
    } catch (e) {
      if (isAbort(e) || mine !== seq) return;
      const body = bodyOf(e);
      if (statusOf(e) === 422 && body && body.fields) {
        fe.show(body.fields);
        planBox.replaceChildren(h('p', { class: 'muted', testid: 'plan-invalid' }, 'Fix the fields marked in red to see the plan.'));
      } else {
        fe.general.replaceChildren(errorBox(messageOf(e)));
      }
    }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    schedule.cancel();
    save.disabled = true;
    const body = requestOf(f, firmwareSel, picker.target());
    try {
      const c = editId ? await api('PATCH', `/api/campaigns/${editId}`, body) : await api('POST', '/api/campaigns', body);
      toast(editId ? 'Draft saved' : 'Draft created', 'ok');
      ctx.navigate(`/campaigns/${c.id}`);
    } catch (e) {
      const err = bodyOf(e);
      if (statusOf(e) === 422 && err && err.fields) fe.show(err.fields);
      else fe.general.replaceChildren(errorBox(messageOf(e)));
    } finally { save.disabled = false; }
  });

  view.append(h('div', { class: 'page-head' }, h('div', null,
    h('div', { class: 'crumbs' }, h('a', { href: '#/campaigns' }, 'Campaigns')),
    h('h1', null, editId ? 'Edit campaign' : 'New campaign'))), form);

  (async () => {
    try {
      const [fw, existing] = await Promise.all([
        api('GET', '/api/firmware', undefined, { signal: ctx.signal }),
        editId ? api('GET', `/api/campaigns/${editId}`, undefined, { signal: ctx.signal }) : Promise.resolve(null),
      ]);
      for (const img of fw.images) firmwareSel.append(h('option', { value: img.id }, `${img.file_name} (${fmtBytes(img.size)})`));
      const pre = queryParam('firmware');
      if (pre) firmwareSel.value = pre;
      if (existing) {
        const req = existing.request || {};
        fill(f, req);
        picker.fill(req);
        if (req.firmware_id) firmwareSel.value = String(req.firmware_id);
      }
      showEngine();
      picker.render();
      if (firmwareSel.value && picker.hasTarget()) preview();
    } catch (e) {
      if (!isAbort(e)) fe.general.replaceChildren(errorBox(messageOf(e)));
    }
  })();
  return { destroy() { schedule.cancel(); picker.cancel(); } };
}

/** @type {import('../types.js').Page} */
export const newCampaignPage = (view, ctx) => campaignForm(view, ctx, null);
/** @type {import('../types.js').Page} */
export const editCampaignPage = (view, ctx) => campaignForm(view, ctx, ctx.params.id);
