// lorafleet console: firmware library and FUOTA campaigns.
//
// Plain ES2020, no build step. Loaded after app.js, whose `window.lorafleet` gives the route
// table, the API client and the DOM helpers. Every server-supplied string goes through text
// nodes (h() children) or textContent; innerHTML is never used.
//
// Pages:  #/firmware            library: upload (drop or pick), metadata, edit, delete
//         #/campaigns           campaigns with their outcome
//         #/campaigns/new       form with defaults, live plan and field errors (?firmware=<id>)
//         #/campaigns/:id       plan, progress, stages over time, devices, service log
//         #/campaigns/:id/edit  the form for a draft
(() => {
  'use strict';
  const L = window.lorafleet;
  if (!L) return;
  const { h, svg, api, badge, errorBox, toast, confirmDialog, modal, fmtDateTime, fmtDuration, fmtBytes, timeAgo, debounce } = L;

  const STAGES = ['pending', 'check', 'mc_group_setup', 'frag_session_setup', 'mc_session_setup', 'fragments', 'frag_status', 'verify', 'completed', 'failed', 'cancelled'];
  const STAGE_LABEL = {
    pending: 'Pending', check: 'Checking version and space', mc_group_setup: 'Multicast group setup', frag_session_setup: 'Fragmentation setup',
    mc_session_setup: 'Multicast session setup', fragments: 'Receiving fragments', frag_status: 'Fragmentation status',
    verify: 'Verifying the new version', completed: 'Completed', failed: 'Failed', cancelled: 'Cancelled',
  };
  const STAGE_COLOR = {
    pending: '#cbd5e1', check: '#bae6fd', mc_group_setup: '#93c5fd', frag_session_setup: '#60a5fa', mc_session_setup: '#3b82f6',
    fragments: '#6366f1', frag_status: '#a855f7', verify: '#14b8a6', completed: '#16a34a', failed: '#dc2626', cancelled: '#94a3b8',
  };
  // The engine's report per device: how the update ended.
  const OUTCOME_LABEL = { verified: 'Verified', completed: 'Completed (not verified)', not_updated: 'Not updated', unreachable: 'Unreachable', refused: 'Refused' };
  const outcomeBadge = (o) => (o ? badge(OUTCOME_LABEL[o] || o, o === 'verified' || o === 'completed' ? 'ok' : 'err', null, 'device-outcome') : '');
  const STATE_KIND = { draft: 'muted', running: 'pending', completed: 'ok', failed: 'err', cancelled: 'muted' };
  const stateBadge = (s) => badge(s, STATE_KIND[s] || 'muted', null, 'campaign-state');
  const stageBadge = (s) => badge(STAGE_LABEL[s] || s, s === 'completed' ? 'ok' : s === 'failed' ? 'err' : s === 'pending' || s === 'cancelled' ? 'muted' : 'pending');

  function queryParam(name) {
    const q = location.hash.split('?')[1] || '';
    return new URLSearchParams(q).get(name);
  }

  function card(title, ...body) {
    return h('section', { class: 'card' }, title ? h('h2', { class: 'card-title' }, title) : null, h('div', { class: 'card-body' }, ...body));
  }

  function kv(pairs) {
    return h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v, testid]) => [h('dt', null, k), h('dd', { testid }, v == null || v === '' ? '—' : v)]));
  }

  const fmtMs = (ms) => (ms == null ? '—' : ms < 1000 ? `${Number(ms).toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`);
  const fmtPct = (x) => (x == null ? '—' : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`);
  const fmtMhz = (hz) => (hz == null ? '—' : `${(hz / 1e6).toFixed(3)} MHz`);

  // ---------------------------------------------------------------------------------------
  // Firmware library
  // ---------------------------------------------------------------------------------------

  /** POST /api/firmware as multipart; resolves to the image or throws ApiError with the body. */
  async function uploadFile(file) {
    const form = new FormData();
    form.append('file', file, file.name);
    const headers = { Accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest' };
    const csrf = L.csrfToken();
    if (csrf) headers['X-CSRF-Token'] = csrf;
    let res;
    try {
      res = await fetch('/api/firmware', { method: 'POST', body: form, headers, credentials: 'same-origin' });
    } catch {
      throw new L.ApiError(0, 'Cannot reach the lorafleet server.');
    }
    let data = null;
    try { data = await res.json(); } catch { data = null; }
    if (!res.ok) throw new L.ApiError(res.status, (data && data.error) || `Upload failed: HTTP ${res.status}`, data && data.field, data);
    return data;
  }

  function trailerText(t) {
    if (!t) return h('span', { class: 'muted' }, 'no signed trailer');
    const kind = { full: 'full image', jdiff: 'JDIFF delta', ddelta: 'DDELTA delta' }[t.kind] || t.kind;
    return h('div', { class: 'fw-trailer' },
      h('div', null, badge(kind, t.kind === 'full' ? 'ok' : 'pending'), ' ', h('span', { testid: 'fw-version' }, `v${t.version}`), ' ', h('span', { class: 'muted small' }, `(${t.version_time})`)),
      t.kind !== 'full' ? h('div', { class: 'small' }, `applies to ${fmtBytes(t.old_firmware_size)} (${t.old_firmware_size} B) old firmware`) : null,
      h('div', { class: 'small muted mono', title: 'manufacturer UUID' }, `mfr ${t.manufacturer_uuid}`),
      h('div', { class: 'small muted mono', title: 'device class UUID' }, `class ${t.device_class_uuid}`));
  }

  const META_FIELDS = [['target', 'Target'], ['from_version', 'From version'], ['to_version', 'To version'], ['compression', 'Compression'], ['notes', 'Notes']];

  function firmwarePage(view, ctx) {
    ctx.setTitle('Firmware');
    const count = h('span', { class: 'count', testid: 'firmware-count' });
    const alertBox = h('div', { testid: 'firmware-alert' });
    const list = h('div', { class: 'loading muted' }, 'Loading…');
    const input = h('input', { type: 'file', id: 'fw-file', class: 'visually-hidden', testid: 'firmware-file-input' });
    const drop = h('label', { for: 'fw-file', class: 'fw-drop', testid: 'firmware-drop' },
      h('strong', null, 'Drop a firmware image here'), h('span', { class: 'muted' }, ' or click to choose a file'));
    const progress = h('p', { class: 'muted small', testid: 'upload-status' });

    async function upload(file) {
      if (!file) return;
      alertBox.replaceChildren();
      progress.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
      try {
        const img = await uploadFile(file);
        progress.textContent = '';
        toast(`Uploaded ${img.file_name}`, 'ok');
        load();
      } catch (e) {
        progress.textContent = '';
        const extra = e.body && e.body.existing ? h('a', { href: `#/firmware?image=${e.body.existing.id}` }, ` (image #${e.body.existing.id})`) : null;
        alertBox.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert', testid: 'upload-error' }, h('span', null, e.message, extra)));
      } finally {
        input.value = '';
      }
    }
    input.addEventListener('change', () => upload(input.files && input.files[0]));
    for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('fw-drop-over'); });
    for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('fw-drop-over'));
    drop.addEventListener('drop', (e) => { e.preventDefault(); upload(e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0]); });

    async function rescan() {
      try {
        const r = await api('POST', '/api/firmware/rescan');
        const parts = [`${r.added.length} added`, `${r.updated.length} updated`, `${r.missing.length} missing`];
        if (r.duplicates.length) parts.push(`${r.duplicates.length} duplicates skipped`);
        alertBox.replaceChildren(h('div', { class: r.dir_error || r.errors.length ? 'alert alert-warn' : 'alert alert-info', testid: 'rescan-result' },
          h('span', null, `Scanned ${r.dir}: ${parts.join(', ')}.`,
            r.dir_error ? ` ${r.dir_error}` : '',
            r.errors.map((x) => ` ${x.file}: ${x.error}.`))));
        load();
      } catch (e) { alertBox.replaceChildren(errorBox(e.message)); }
    }

    async function edit(img) {
      const inputs = {};
      const body = META_FIELDS.map(([f, label]) => {
        const el = f === 'notes'
          ? h('textarea', { id: `fw-${f}`, rows: 3, testid: `fw-edit-${f}` })
          : h('input', { type: 'text', id: `fw-${f}`, testid: `fw-edit-${f}` });
        el.value = img[f] || '';
        inputs[f] = el;
        return h('div', { class: 'fw-edit-row' }, h('label', { for: `fw-${f}` }, label), el);
      });
      const ok = await modal({ title: `Edit ${img.file_name}`, body, confirmLabel: 'Save', testid: 'fw-edit' });
      if (!ok) return;
      const patch = {};
      for (const [f] of META_FIELDS) if ((img[f] || '') !== inputs[f].value) patch[f] = inputs[f].value || null;
      if (Object.keys(patch).length === 0) return;
      try { await api('PATCH', `/api/firmware/${img.id}`, patch); toast('Saved', 'ok'); load(); } catch (e) { toast(e.message, 'error'); }
    }

    async function remove(img) {
      const ok = await confirmDialog({ title: `Delete ${img.file_name}?`, message: 'The image file is deleted from the server. Campaigns that used it keep their history.', danger: true, confirmLabel: 'Delete', testid: 'fw-delete' });
      if (!ok) return;
      try { await api('DELETE', `/api/firmware/${img.id}`); toast('Deleted', 'ok'); load(); } catch (e) { alertBox.replaceChildren(errorBox(e.message)); }
    }

    function row(img) {
      const meta = META_FIELDS.filter(([f]) => img[f]).map(([f, label]) => h('div', { class: 'small' }, h('span', { class: 'muted' }, `${label}: `), img[f]));
      return h('tr', { testid: 'firmware-row', 'data-id': img.id },
        h('td', { 'data-label': 'Image' },
          h('a', { href: `/api/firmware/${img.id}/download`, testid: 'firmware-name', download: '' }, img.file_name),
          h('div', { class: 'small muted' }, img.source === 'dir' ? 'firmware directory' : 'uploaded', ' · added ', timeAgo(img.added_at)),
          img.missing_at ? badge('file missing', 'warn') : null,
          img.running_campaigns.length ? badge(`in ${img.running_campaigns.length} running campaign(s)`, 'pending') : null),
        h('td', { 'data-label': 'Size', class: 'num nowrap' }, fmtBytes(img.size), h('div', { class: 'small muted' }, `${img.size} B`)),
        h('td', { 'data-label': 'SHA-256', class: 'mono small', title: img.sha256 }, `${img.sha256.slice(0, 16)}…`),
        h('td', { 'data-label': 'Package', testid: 'firmware-trailer' }, trailerText(img.trailer), img.trailer_error ? h('div', { class: 'err-text small' }, img.trailer_error) : null),
        h('td', { 'data-label': 'Metadata', testid: 'firmware-meta' }, meta.length ? meta : h('span', { class: 'muted' }, '—')),
        h('td', { 'data-label': '', class: 'nowrap' },
          h('a', { class: 'btn btn-small', href: `#/campaigns/new?firmware=${img.id}`, testid: 'firmware-campaign' }, 'Campaign…'), ' ',
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => edit(img), testid: 'firmware-edit' }, 'Edit'), ' ',
          h('button', { type: 'button', class: 'btn btn-small btn-danger-outline', onclick: () => remove(img), testid: 'firmware-delete' }, 'Delete')));
    }

    async function load() {
      try {
        const r = await api('GET', '/api/firmware', undefined, { signal: ctx.signal });
        count.textContent = String(r.images.length);
        list.className = '';
        if (r.images.length === 0) {
          list.replaceChildren(h('p', { class: 'muted pad' }, 'No images yet. Upload one above, or put files in the firmware directory and rescan.'));
          return;
        }
        list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table table-cards', testid: 'firmware-table' },
          h('thead', null, h('tr', null, ['Image', 'Size', 'SHA-256', 'Package', 'Metadata', ''].map((t) => h('th', null, t)))),
          h('tbody', null, r.images.map(row)))));
      } catch (e) {
        if (!L.isAbort(e)) list.replaceChildren(errorBox(e.message, load));
      }
    }

    view.append(
      h('div', { class: 'page-head' }, h('h1', null, 'Firmware ', count),
        h('div', { class: 'toolbar' }, h('button', { type: 'button', class: 'btn', onclick: rescan, testid: 'firmware-rescan' }, 'Rescan directory'))),
      alertBox,
      h('section', { class: 'card' }, h('div', { class: 'card-body' }, input, drop, progress)),
      h('section', { class: 'card' }, list));
    load();
    const refresh = debounce(load, 300);
    return {
      refresh: load,
      onEvent(type) { if (type === 'firmware' || type === 'reconnect') refresh(); },
      destroy() { refresh.cancel(); },
    };
  }

  // ---------------------------------------------------------------------------------------
  // Campaign list
  // ---------------------------------------------------------------------------------------

  function countsText(counts, total) {
    const done = (counts.completed || 0);
    const failed = (counts.failed || 0);
    const parts = [`${done}/${total} completed`];
    if (failed) parts.push(`${failed} failed`);
    return parts.join(', ');
  }

  function campaignsPage(view, ctx) {
    ctx.setTitle('Campaigns');
    const list = h('div', { class: 'loading muted' }, 'Loading…');
    async function load() {
      try {
        const r = await api('GET', '/api/campaigns', undefined, { signal: ctx.signal });
        list.className = '';
        if (r.campaigns.length === 0) {
          list.replaceChildren(h('p', { class: 'muted pad' }, 'No campaigns yet.'));
          return;
        }
        list.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'table table-cards', testid: 'campaign-table' },
          h('thead', null, h('tr', null, ['Campaign', 'State', 'Image', 'Driver', 'Devices', 'Created', 'Finished'].map((t) => h('th', null, t)))),
          h('tbody', null, r.campaigns.map((c) => h('tr', { testid: 'campaign-row', 'data-id': c.id, 'data-state': c.state },
            h('td', { 'data-label': 'Campaign' }, h('a', { href: `#/campaigns/${c.id}`, testid: 'campaign-name' }, c.name)),
            h('td', { 'data-label': 'State' }, stateBadge(c.state), c.error ? h('div', { class: 'err-text small' }, c.error) : null),
            h('td', { 'data-label': 'Image' }, c.firmware_file_name || `#${c.firmware_id}`),
            h('td', { 'data-label': 'Driver' }, c.driver),
            h('td', { 'data-label': 'Devices' }, countsText(c.counts, c.devices)),
            h('td', { 'data-label': 'Created' }, timeAgo(c.created_at)),
            h('td', { 'data-label': 'Finished' }, timeAgo(c.completed_at))))))));
      } catch (e) {
        if (!L.isAbort(e)) list.replaceChildren(errorBox(e.message, load));
      }
    }
    view.append(
      h('div', { class: 'page-head' }, h('h1', null, 'Campaigns'),
        h('a', { class: 'btn btn-primary', href: '#/campaigns/new', testid: 'campaign-new' }, 'New campaign')),
      h('section', { class: 'card' }, list));
    load();
    const refresh = debounce(load, 400);
    return { refresh: load, onEvent(type) { if (type === 'campaign' || type === 'reconnect') refresh(); }, destroy() { refresh.cancel(); } };
  }

  // ---------------------------------------------------------------------------------------
  // Campaign form
  // ---------------------------------------------------------------------------------------

  function campaignForm(view, ctx, editId) {
    ctx.setTitle(editId ? 'Edit campaign' : 'New campaign');
    const errors = {};      // field -> error element
    const inputs = {};      // field -> input element
    const generalError = h('div', { testid: 'form-error' });
    const planBox = h('div', { testid: 'plan-preview' }, h('p', { class: 'muted' }, 'The plan appears here once the settings are valid.'));
    let devices = [];
    const selected = new Set();

    function field(name, label, el, help) {
      inputs[name] = el;
      el.setAttribute('data-field', name);
      el.addEventListener('input', schedule);
      el.addEventListener('change', schedule);
      const err = h('p', { class: 'field-error', testid: `error-${name}` });
      errors[name] = err;
      return h('div', { class: 'cf-field' }, h('label', { for: el.id }, label), el, help ? h('p', { class: 'muted small cf-help' }, help) : null, err);
    }
    const text = (id, placeholder, value) => h('input', { type: 'text', id, placeholder, value: value ?? '', autocomplete: 'off', spellcheck: 'false', testid: `input-${id}` });
    const num = (id, placeholder, value) => h('input', { type: 'number', id, placeholder, value: value ?? '', testid: `input-${id}` });
    const select = (id, options, value) => {
      const el = h('select', { id, testid: `input-${id}` }, options.map(([v, l]) => h('option', { value: v }, l)));
      el.value = value;
      return el;
    };

    const info = L.info() || {};
    const netKind = info.network && info.network.kind;
    const eu868 = !info.network || info.network.region === 'EU868';
    const firmwareSel = h('select', { id: 'cf-firmware', testid: 'input-cf-firmware' }, h('option', { value: '' }, 'Choose an image…'));
    const deviceFilter = h('input', { type: 'search', placeholder: 'Filter devices', class: 'cf-filter', testid: 'device-filter' });
    const deviceList = h('div', { class: 'cf-devices', id: 'cf-devices', tabindex: '-1', testid: 'device-picker' });
    const deviceCount = h('span', { class: 'muted small', testid: 'device-selected-count' });

    const f = {
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
      status: select('cf-status', [['after_session', 'After the session'], ['after_enqueue', 'After the fragments are queued'], ['none', 'Do not ask']], 'after_session'),
      check: select('cf-check', [['refuse', 'Leave out devices that do not fit'], ['warn', 'Warn and update anyway'], ['off', 'No check (no Version & Status)']], 'refuse'),
      verify: select('cf-verify', [['true', 'Ask each device for its version'], ['false', 'Do not verify']], 'true'),
      rebootDelay: num('cf-reboot-delay', '60', 60),
    };

    const intOrNull = (el) => (el.value.trim() === '' ? undefined : Number(el.value));
    const strOrNull = (el) => (el.value.trim() === '' ? undefined : el.value.trim());

    function body() {
      const keys = { lorawan_version: f.lorawan.value };
      if (f.genAppKey.value.trim()) keys.gen_app_key = f.genAppKey.value.trim();
      const per = {};
      for (const line of f.perDevice.value.split('\n')) {
        const [eui, key] = line.trim().split(/[\s=,;]+/);
        if (eui && key) per[eui] = f.lorawan.value === '1.1' ? { app_key: key } : { gen_app_key: key };
      }
      if (Object.keys(per).length) keys.per_device = per;
      let freq = strOrNull(f.freq);
      if (freq !== undefined) freq = Number(freq);
      return {
        name: strOrNull(f.name),
        firmware_id: firmwareSel.value ? Number(firmwareSel.value) : undefined,
        devices: [...selected],
        driver: f.driver.value,
        keys,
        multicast: {
          class: f.mcClass.value, dr: intOrNull(f.dr), frequency: freq,
          ping_slot_periodicity: intOrNull(f.ping), group_id: intOrNull(f.group), timeout_exp: intOrNull(f.timeoutExp),
        },
        unicast: { timeout_s: intOrNull(f.ucTimeout), attempts: intOrNull(f.attempts) },
        fragmentation: {
          fragment_size: f.fragSize.value.trim() === '' ? null : Number(f.fragSize.value),
          redundancy: intOrNull(f.redundancy), session_index: intOrNull(f.sessionIndex), matrix: intOrNull(f.matrix),
          block_ack_delay: intOrNull(f.blockAck), descriptor_hex: strOrNull(f.descriptor),
        },
        request_frag_status: f.status.value,
        engine: f.driver.value === 'engine'
          ? { check: f.check.value, verify: f.verify.value === 'true', reboot_delay_s: intOrNull(f.rebootDelay) }
          : undefined,
      };
    }

    function fill(req) {
      // The stored request keeps the frequency as typed: MHz from this form, Hz from the API.
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
      if (req.request_frag_status) f.status.value = req.request_frag_status;
      const en = req.engine || {};
      if (en.check) f.check.value = en.check;
      if (en.verify !== undefined && en.verify !== null) f.verify.value = String(en.verify);
      set(f.rebootDelay, en.reboot_delay_s);
      for (const d of req.devices || []) selected.add(String(d).toLowerCase());
      if (req.firmware_id) firmwareSel.value = String(req.firmware_id);
    }

    // Field errors from the server name fields like "multicast.dr" or "keys.per_device.<eui>".
    const FIELD_OF = {
      name: 'name', firmware_id: 'firmware_id', devices: 'devices', driver: 'driver', keys: 'keys.gen_app_key',
      'keys.gen_app_key': 'keys.gen_app_key', 'keys.lorawan_version': 'keys.lorawan_version',
    };
    function showErrors(list) {
      for (const el of Object.values(errors)) el.textContent = '';
      for (const el of Object.values(inputs)) el.classList.remove('invalid');
      generalError.replaceChildren();
      const unplaced = [];
      for (const e of list || []) {
        let key = FIELD_OF[e.field] || e.field;
        if (key.startsWith('keys.per_device')) key = 'keys.per_device';
        const el = errors[key];
        if (el) {
          el.textContent = el.textContent ? `${el.textContent} ${e.error}` : e.error;
          if (inputs[key]) inputs[key].classList.add('invalid');
        } else unplaced.push(e);
      }
      if (unplaced.length) {
        generalError.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert' },
          h('ul', { class: 'cf-errors' }, unplaced.map((e) => h('li', null, h('code', null, e.field), ' ', e.error)))));
      }
    }

    let seq = 0;
    async function preview() {
      const mine = ++seq;
      try {
        const r = await api('POST', '/api/campaigns/preview', body(), { signal: ctx.signal });
        if (mine !== seq) return;
        showErrors([]);
        planBox.replaceChildren(planView(r.plan, r.settings));
        save.disabled = false;
      } catch (e) {
        if (L.isAbort(e) || mine !== seq) return;
        if (e.status === 422 && e.body && e.body.fields) {
          showErrors(e.body.fields);
          planBox.replaceChildren(h('p', { class: 'muted', testid: 'plan-invalid' }, 'Fix the fields marked in red to see the plan.'));
        } else {
          generalError.replaceChildren(errorBox(e.message));
        }
      }
    }
    const schedule = debounce(preview, 350);

    // Only the engine checks devices before and verifies them after (Version & Status).
    const engineCard = card('Check and verify (lorafleet engine)',
      h('div', { class: 'cf-grid' },
        field('engine.check', 'Before: running version and slot size', f.check, 'A device whose slot is smaller than the image, or that runs another version than a delta\'s from_version.'),
        field('engine.verify', 'After: verify the new version', f.verify),
        field('engine.reboot_delay_s', 'Reboot delay (s)', f.rebootDelay, 'Time after the session before the devices are asked for their version.')));
    const showEngine = () => { engineCard.hidden = f.driver.value !== 'engine'; };
    f.driver.addEventListener('change', showEngine);
    showEngine();
    const save = h('button', { type: 'submit', class: 'btn btn-primary', testid: 'campaign-save' }, editId ? 'Save draft' : 'Create draft');
    const form = h('form', { class: 'cf-form', novalidate: true },
      card('Campaign',
        h('div', { class: 'cf-grid' },
          field('name', 'Name', f.name),
          field('firmware_id', 'Firmware image', firmwareSel),
          field('driver', 'FUOTA service', f.driver, 'ChirpStack v4 reads the device keys itself; the v3 FUOTA server needs them below.'))),
      card('Devices',
        h('div', { class: 'toolbar' }, deviceFilter,
          h('button', { type: 'button', class: 'btn btn-small', testid: 'devices-all', onclick: () => { for (const d of visibleDevices()) selected.add(d.dev_eui); renderDevices(); schedule(); } }, 'Select shown'),
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => { selected.clear(); renderDevices(); schedule(); } }, 'Clear'),
          deviceCount),
        deviceList,
        h('p', { class: 'field-error', testid: 'error-devices' })),
      card('Keys',
        h('div', { class: 'cf-grid' },
          field('keys.lorawan_version', 'LoRaWAN version', f.lorawan),
          field('keys.gen_app_key', 'GenAppKey (all devices)', f.genAppKey, 'The McRootKey of each device is derived from it. Never shown again once saved.'),
          field('keys.per_device', 'Keys per device', f.perDevice))),
      card('Multicast',
        h('div', { class: 'cf-grid' },
          field('multicast.class', 'Class', f.mcClass),
          field('multicast.dr', 'Data rate', f.dr),
          field('multicast.frequency', 'Frequency (MHz)', f.freq),
          field('multicast.ping_slot_periodicity', 'Ping-slot periodicity (Class B)', f.ping),
          field('multicast.group_id', 'Group id', f.group),
          field('multicast.timeout_exp', 'Session timeout exponent', f.timeoutExp, 'Empty: the smallest that fits every fragment. Class C: 2^n s; Class B: 2^n beacon periods. 0–15.'))),
      card('Unicast steps',
        h('div', { class: 'cf-grid' },
          field('unicast.timeout_s', 'Answer timeout (s)', f.ucTimeout, 'At least the devices\' uplink interval.'),
          field('unicast.attempts', 'Attempts', f.attempts))),
      card('Fragmentation',
        h('div', { class: 'cf-grid' },
          field('fragmentation.fragment_size', 'Fragment size (bytes)', f.fragSize),
          field('fragmentation.redundancy', 'Redundancy (parity fragments)', f.redundancy),
          field('fragmentation.session_index', 'Session index', f.sessionIndex),
          field('fragmentation.matrix', 'Matrix', f.matrix),
          field('fragmentation.block_ack_delay', 'Block ack delay', f.blockAck),
          field('fragmentation.descriptor_hex', 'Descriptor (4 bytes hex)', f.descriptor),
          field('request_frag_status', 'Ask devices for their status', f.status))),
      engineCard,
      card('Plan', planBox),
      generalError,
      h('div', { class: 'toolbar' }, save, h('a', { class: 'btn', href: editId ? `#/campaigns/${editId}` : '#/campaigns' }, 'Cancel')));
    // The devices field's error element lives in the picker card.
    errors.devices = form.querySelector('[data-testid="error-devices"]');
    inputs.devices = deviceList;

    function visibleDevices() {
      const q = deviceFilter.value.trim().toLowerCase();
      return devices.filter((d) => !q || d.dev_eui.includes(q) || (d.name || '').toLowerCase().includes(q));
    }
    function renderDevices() {
      const shown = visibleDevices();
      deviceCount.textContent = `${selected.size} selected`;
      if (devices.length === 0) { deviceList.replaceChildren(h('p', { class: 'muted' }, 'No devices known yet.')); return; }
      deviceList.replaceChildren(...shown.slice(0, 500).map((d) => {
        const box = h('input', { type: 'checkbox', value: d.dev_eui, checked: selected.has(d.dev_eui), testid: 'device-option' });
        box.addEventListener('change', () => { if (box.checked) selected.add(d.dev_eui); else selected.delete(d.dev_eui); deviceCount.textContent = `${selected.size} selected`; schedule(); });
        return h('label', { class: 'check cf-device', 'data-dev-eui': d.dev_eui }, box, h('span', { class: 'mono' }, d.dev_eui), ' ', h('span', { class: 'muted' }, d.name || ''));
      }));
    }
    deviceFilter.addEventListener('input', renderDevices);

    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      schedule.cancel();
      save.disabled = true;
      try {
        const c = editId ? await api('PATCH', `/api/campaigns/${editId}`, body()) : await api('POST', '/api/campaigns', body());
        toast(editId ? 'Draft saved' : 'Draft created', 'ok');
        ctx.navigate(`/campaigns/${c.id}`);
      } catch (e) {
        if (e.status === 422 && e.body && e.body.fields) showErrors(e.body.fields);
        else generalError.replaceChildren(errorBox(e.message));
      } finally { save.disabled = false; }
    });

    view.append(h('div', { class: 'page-head' }, h('div', null,
      h('div', { class: 'crumbs' }, h('a', { href: '#/campaigns' }, 'Campaigns')),
      h('h1', null, editId ? 'Edit campaign' : 'New campaign'))), form);

    (async () => {
      try {
        const [fw, devs, existing] = await Promise.all([
          api('GET', '/api/firmware', undefined, { signal: ctx.signal }),
          api('GET', '/api/devices?limit=1000&sort=dev_eui', undefined, { signal: ctx.signal }),
          editId ? api('GET', `/api/campaigns/${editId}`, undefined, { signal: ctx.signal }) : Promise.resolve(null),
        ]);
        for (const img of fw.images) firmwareSel.append(h('option', { value: img.id }, `${img.file_name} (${fmtBytes(img.size)})`));
        devices = devs.devices.map((d) => ({ dev_eui: String(d.dev_eui).toLowerCase(), name: d.name }));
        const pre = queryParam('firmware');
        if (pre) firmwareSel.value = pre;
        if (existing) fill(existing.request || {});
        showEngine();
        renderDevices();
        if (firmwareSel.value && selected.size) preview();
      } catch (e) {
        if (!L.isAbort(e)) generalError.replaceChildren(errorBox(e.message));
      }
    })();
    return { destroy() { schedule.cancel(); } };
  }

  // ---------------------------------------------------------------------------------------
  // Plan
  // ---------------------------------------------------------------------------------------

  function planView(p, settings) {
    if (!p || p.data_fragments == null) return h('p', { class: 'muted' }, 'No plan.');
    const adv = p.redundancy_advice;
    const warnings = (p.warnings || []).map((w) => h('li', { testid: 'plan-warning' }, w.dev_eui ? [h('span', { class: 'mono' }, w.dev_eui), ': '] : null, w.message));
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
          ['Time on air', `${fmtMs(p.airtime_per_fragment_ms)} per fragment, ${fmtDuration(p.airtime_total_s)} in total`, 'plan-airtime'],
          ['Fragment spacing', `${p.fragment_interval_s} s${p.duty_cycle != null ? ` (duty cycle ${fmtPct(p.duty_cycle)})` : ''}`],
          ['Session needed', fmtDuration(p.session_needed_s)],
          ['Session', `timeout ${p.timeout_exp} → ${fmtDuration(p.session_length_s)}`, 'plan-session'],
          ['Expected duration', `${fmtDuration(p.expected_duration_s)} (${p.unicast_steps} unicast steps of ~${fmtDuration(p.uplink_interval_s)}${p.uplink_interval_observed ? ', observed uplink interval' : ''})`, 'plan-duration'],
          ['Worst case', fmtDuration(p.worst_case_duration_s)],
        ])),
      adv ? h('div', { class: 'plan-advice', testid: 'plan-advice' },
        h('h3', { class: 'sub-title' }, `Redundancy at ${fmtPct(adv.loss)} loss`),
        h('p', null, adv.suggested_redundancy != null
          ? `${adv.suggested_redundancy} parity fragments (${adv.suggested_percent} %) complete ${fmtPct(adv.target)} of devices${adv.simulated ? ` in ${adv.trials} simulated devices` : ' (estimate)'}; the planned ${p.redundancy_fragments} complete about ${fmtPct(adv.completion_at_planned)}.`
          : 'No redundancy reaches the target within the 14-bit fragment counter.'),
        adv.curve && adv.curve.length ? curveChart(adv.curve, p.redundancy_fragments) : null) : null,
      warnings.length ? h('div', { class: 'alert alert-warn plan-warnings' }, h('ul', null, warnings)) : null);
  }

  /** Completion share against redundancy, with the planned redundancy marked. */
  function curveChart(curve, planned) {
    const W = 360, H = 140, m = { l: 36, r: 10, t: 8, b: 26 };
    const xs = curve.map((c) => c[0]);
    const xMax = Math.max(1, ...xs, planned);
    const x = (v) => m.l + (v / xMax) * (W - m.l - m.r);
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

  // ---------------------------------------------------------------------------------------
  // Campaign page
  // ---------------------------------------------------------------------------------------

  function progressBar(counts, total) {
    const bar = h('div', { class: 'cp-bar', role: 'img', testid: 'progress-bar', 'aria-label': countsText(counts, total) });
    for (const s of STAGES) {
      const n = counts[s] || 0;
      if (!n || !total) continue;
      const seg = h('span', { class: 'cp-seg', title: `${STAGE_LABEL[s]}: ${n}` });
      seg.style.width = `${(100 * n) / total}%`;
      seg.style.background = STAGE_COLOR[s];
      bar.append(seg);
    }
    return bar;
  }

  /** Devices per stage over time, as stacked steps. */
  function stageChart(progress, endTime) {
    const pts = progress.map((p) => ({ t: new Date(p.at).getTime(), c: p.counts })).filter((p) => Number.isFinite(p.t));
    if (pts.length === 0) return h('p', { class: 'muted' }, 'No progress yet.');
    const t0 = pts[0].t;
    const t1 = Math.max(endTime || Date.now(), pts[pts.length - 1].t, t0 + 1000);
    const total = Math.max(1, ...pts.map((p) => Object.values(p.c).reduce((a, b) => a + b, 0)));
    const W = 640, H = 200, m = { l: 34, r: 10, t: 10, b: 24 };
    const x = (t) => m.l + ((t - t0) / (t1 - t0)) * (W - m.l - m.r);
    const y = (v) => m.t + (1 - v / total) * (H - m.t - m.b);
    const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg', role: 'img', 'aria-label': 'Devices per stage over time', testid: 'stage-chart' });
    for (const v of [0, total]) {
      g.append(svg('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: 'grid-line' }));
      g.append(svg('text', { x: m.l - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, String(v)));
    }
    // Stack from the final stages up, so completed devices sit at the bottom.
    const order = [...STAGES].reverse();
    for (let i = 0; i < pts.length; i++) {
      const a = pts[i].t;
      const b = i + 1 < pts.length ? pts[i + 1].t : t1;
      let base = 0;
      for (const s of order) {
        const n = pts[i].c[s] || 0;
        if (!n) continue;
        g.append(svg('rect', { x: x(a), width: Math.max(1, x(b) - x(a)), y: y(base + n), height: y(base) - y(base + n), fill: STAGE_COLOR[s] },
          svg('title', null, `${STAGE_LABEL[s]}: ${n}`)));
        base += n;
      }
    }
    g.append(svg('text', { x: m.l, y: H - 6, class: 'tick' }, fmtDateTime(new Date(t0).toISOString())));
    g.append(svg('text', { x: W - m.r, y: H - 6, 'text-anchor': 'end', class: 'tick' }, fmtDateTime(new Date(t1).toISOString())));
    const legend = h('div', { class: 'cp-legend' }, STAGES.filter((s) => pts.some((p) => p.c[s])).map((s) => {
      const sw = h('span', { class: 'cp-swatch' });
      sw.style.background = STAGE_COLOR[s];
      return h('span', { class: 'small' }, sw, STAGE_LABEL[s]);
    }));
    return h('div', null, g, legend);
  }

  function campaignPage(view, ctx) {
    const id = ctx.params.id;
    const head = h('div', { class: 'page-head' });
    const alerts = h('div');
    const body = h('div', { class: 'loading muted' }, 'Loading…');
    view.append(head, alerts, body);
    let current = null;

    async function act(method, path, what) {
      alerts.replaceChildren();
      try {
        await api(method, path);
        toast(what, 'ok');
        load();
      } catch (e) {
        const fields = e.body && e.body.fields;
        alerts.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert', testid: 'action-error' },
          h('div', null, h('strong', null, e.message),
            fields && fields.length > 1 ? h('ul', null, fields.map((x) => h('li', null, h('code', null, x.field), ' ', x.error))) : null)));
      }
    }

    function render(c) {
      current = c;
      ctx.setTitle(c.name);
      const total = c.devices.length;
      const actions = [];
      if (c.state === 'draft') {
        actions.push(h('button', { type: 'button', class: 'btn btn-primary', testid: 'campaign-start', onclick: () => act('POST', `/api/campaigns/${id}/start`, 'Campaign started') }, 'Start'));
        actions.push(h('a', { class: 'btn', href: `#/campaigns/${id}/edit`, testid: 'campaign-edit' }, 'Edit'));
      }
      if (c.state === 'draft' || c.state === 'running') {
        actions.push(h('button', {
          type: 'button', class: 'btn btn-danger-outline', testid: 'campaign-cancel',
          onclick: async () => {
            if (await confirmDialog({ title: 'Cancel this campaign?', message: c.driver === 'fuota-server-v3' ? 'The v3 FUOTA server cannot cancel a deployment: it runs on there, lorafleet stops following it.' : 'The deployment is deleted on the FUOTA service.', danger: true, confirmLabel: 'Cancel campaign', testid: 'confirm-cancel' })) act('POST', `/api/campaigns/${id}/cancel`, 'Campaign cancelled');
          },
        }, 'Cancel campaign'));
      }
      if (c.state !== 'running') {
        actions.push(h('button', {
          type: 'button', class: 'btn btn-danger-outline', testid: 'campaign-delete',
          onclick: async () => {
            if (await confirmDialog({ title: 'Delete this campaign?', message: 'Its log and history are deleted too.', danger: true, confirmLabel: 'Delete', testid: 'confirm-delete' })) {
              try { await api('DELETE', `/api/campaigns/${id}`); ctx.navigate('/campaigns'); } catch (e) { alerts.replaceChildren(errorBox(e.message)); }
            }
          },
        }, 'Delete'));
      }
      head.replaceChildren(
        h('div', null,
          h('div', { class: 'crumbs' }, h('a', { href: '#/campaigns' }, 'Campaigns')),
          h('h1', { testid: 'campaign-title' }, c.name, ' ', stateBadge(c.state)),
          h('div', { class: 'muted small' }, `#${c.id} · ${c.driver} · `,
            c.firmware ? h('a', { href: '#/firmware' }, c.firmware.file_name) : `image #${c.firmware_id}`,
            ` · created ${fmtDateTime(c.created_at)}`, c.started_at ? ` · started ${fmtDateTime(c.started_at)}` : '', c.completed_at ? ` · ended ${fmtDateTime(c.completed_at)}` : '')),
        h('div', { class: 'toolbar' }, actions));

      const notes = [];
      if (c.error) notes.push(h('div', { class: 'alert alert-error', testid: 'campaign-error' }, h('span', null, c.error)));
      if (c.last_poll_error && c.state === 'running') notes.push(h('div', { class: 'alert alert-warn', testid: 'campaign-poll-error' }, h('span', null, `The FUOTA service does not answer: ${c.last_poll_error} — lorafleet keeps trying.`)));
      if (!alerts.querySelector('[data-testid="action-error"]')) alerts.replaceChildren(...notes);

      const counts = h('div', { class: 'cp-counts' }, STAGES.filter((s) => c.counts[s]).map((s) =>
        h('span', { class: 'cp-count', testid: `stage-count-${s}` }, h('strong', null, String(c.counts[s])), ' ', STAGE_LABEL[s])));
      const done = (c.counts.completed || 0) + (c.counts.failed || 0) + (c.counts.cancelled || 0);

      const table = h('div', { class: 'table-wrap' }, h('table', { class: 'table table-compact table-cards', testid: 'campaign-devices' },
        h('thead', null, h('tr', null, ['Device', 'Stage', 'Outcome', 'Group setup', 'Frag. setup', 'Session setup', 'Frag. status', 'Completed', 'Error'].map((t) => h('th', null, t)))),
        h('tbody', null, c.devices.map((d) => h('tr', { testid: 'campaign-device-row', 'data-dev-eui': d.dev_eui, 'data-stage': d.stage },
          h('td', { 'data-label': 'Device', class: 'mono' }, h('a', { href: `#/devices/${d.dev_eui}` }, d.dev_eui)),
          h('td', { 'data-label': 'Stage' }, stageBadge(d.stage)),
          h('td', { 'data-label': 'Outcome' }, outcomeBadge(d.outcome)),
          ...['mc_group_setup_at', 'frag_session_setup_at', 'mc_session_setup_at', 'frag_status_at', 'completed_at'].map((k) =>
            h('td', { 'data-label': k, class: 'nowrap small' }, d[k] ? fmtDateTime(d[k]) : '—')),
          h('td', { 'data-label': 'Error', class: 'err-text small' }, d.error || ''))))));

      const log = c.log.length === 0 ? h('p', { class: 'muted' }, 'Nothing logged yet.')
        : h('ol', { class: 'events', testid: 'campaign-log' }, [...c.log].reverse().map((l) =>
          h('li', { class: 'event', 'data-kind': l.level === 'error' ? 'error' : l.level === 'warning' ? 'removed' : l.source === 'service' ? 'status' : 'request', testid: 'campaign-log-row' },
            h('span', { class: 'event-time' }, fmtDateTime(l.at)),
            h('span', { class: 'event-kind' }, l.source === 'service' ? 'service' : l.level),
            h('span', { class: 'event-msg' }, l.dev_eui ? [h('span', { class: 'mono' }, l.dev_eui), ' '] : null, l.message))));

      body.className = '';
      body.replaceChildren(
        card('Progress',
          progressBar(c.counts, total),
          h('p', { class: 'small muted', testid: 'progress-text' }, `${done} of ${total} devices finished · ${countsText(c.counts, total)}`),
          counts),
        card('Devices per stage over time', stageChart(c.progress || [], c.completed_at ? new Date(c.completed_at).getTime() : null)),
        card('Plan', planView(c.plan, c.settings)),
        card(`Devices (${total})`, table),
        card('Log', log));
    }

    async function load() {
      try {
        render(await api('GET', `/api/campaigns/${encodeURIComponent(id)}`, undefined, { signal: ctx.signal }));
      } catch (e) {
        if (!L.isAbort(e)) body.replaceChildren(errorBox(e.message, load));
      }
    }
    load();
    const refresh = debounce(load, 250);
    return {
      refresh: load,
      onEvent(type, data) {
        if (type === 'reconnect') refresh();
        else if (type === 'campaign' && data && String(data.id) === String(id)) refresh();
        else if (type === 'campaign' && !current) refresh();
      },
      destroy() { refresh.cancel(); },
    };
  }

  L.route('/firmware', firmwarePage, { nav: 'Firmware' });
  L.route('/campaigns', campaignsPage, { nav: 'Campaigns' });
  L.route('/campaigns/new', (view, ctx) => campaignForm(view, ctx, null));
  L.route('/campaigns/:id', campaignPage);
  L.route('/campaigns/:id/edit', (view, ctx) => campaignForm(view, ctx, ctx.params.id));
})();
