// @ts-check
// #/firmware: the firmware library: upload (drop or pick), metadata, edit, delete; live.
import { can } from '../access.js';
import { api, bodyOf, isAbort, messageOf, uploadFile } from '../api.js';
import { timeAgo } from '../clock.js';
import { confirmDialog, modal, toast } from '../dialogs.js';
import { h, badge, errorBox } from '../dom.js';
import { fmtBytes, hex32 } from '../format.js';
import { refresher } from '../schedule.js';

const META_FIELDS = [['target', 'Target'], ['from_version', 'From version'], ['to_version', 'To version'], ['compression', 'Compression'], ['notes', 'Notes'], ['versioning', 'Versioning (semver, gps_time, unix_time, raw)']];

/**
 * The version as the image's devices write theirs (semver, GPS time), the raw value beside it.
 * @param {any} t  the image's signed-package trailer
 * @param {any} spelled  the API's `spelled`: { version: {raw, display}, versioning }
 */
function versionLine(t, spelled) {
  const raw = hex32(t.version);
  if (!spelled || spelled.versioning === 'raw') {
    return [h('span', { testid: 'fw-version' }, raw), ' ', h('span', { class: 'muted small', testid: 'fw-version-raw' }, `= ${t.version} (raw: no device on a version like it reported its versioning type)`)];
  }
  const type = spelled.versioning === 'semver' ? 'major.minor.patch' : spelled.versioning === 'gps_time' ? 'GPS time' : spelled.versioning;
  return [h('span', { testid: 'fw-version', 'data-versioning': spelled.versioning }, spelled.version.display), ' ',
    h('span', { class: 'muted small', testid: 'fw-version-raw' }, `(${type} as the devices report it; raw ${raw} = ${t.version})`)];
}

/**
 * @param {any} t  the image's signed-package trailer
 * @param {any} [spelled]
 */
function trailerText(t, spelled) {
  if (!t) return h('span', { class: 'muted' }, 'no signed trailer');
  /** @type {Record<string, string>} */
  const kinds = { full: 'full image', jdiff: 'JDIFF delta', ddelta: 'DDELTA delta' };
  const kind = kinds[t.kind] || t.kind;
  return h('div', { class: 'fw-trailer' },
    h('div', null, badge(kind, t.kind === 'full' ? 'ok' : 'pending'), ' ', versionLine(t, spelled)),
    t.kind !== 'full' ? h('div', { class: 'small' }, `applies to ${fmtBytes(t.old_firmware_size)} (${t.old_firmware_size} B) old firmware`) : null,
    h('div', { class: 'small muted mono', title: 'manufacturer UUID' }, `mfr ${t.manufacturer_uuid}`),
    h('div', { class: 'small muted mono', title: 'device class UUID' }, `class ${t.device_class_uuid}`));
}

/**
 * The metadata dialog; resolves to the changed fields (empty: nothing to save).
 * @param {any} img
 * @returns {Promise<Record<string, string | null>>}
 */
async function editMetadata(img) {
  /** @type {Record<string, HTMLInputElement | HTMLTextAreaElement>} */
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
  /** @type {Record<string, string | null>} */
  const patch = {};
  if (!ok) return patch;
  for (const [f] of META_FIELDS) if ((img[f] || '') !== inputs[f].value) patch[f] = inputs[f].value || null;
  return patch;
}

/** @param {any} r  the answer of POST /api/firmware/rescan */
function rescanResult(r) {
  const parts = [`${r.added.length} added`, `${r.updated.length} updated`, `${r.missing.length} missing`];
  if (r.duplicates.length) parts.push(`${r.duplicates.length} duplicates skipped`);
  return h('div', { class: r.dir_error || r.errors.length ? 'alert alert-warn' : 'alert alert-info', testid: 'rescan-result' },
    h('span', null, `Scanned ${r.dir}: ${parts.join(', ')}.`,
      r.dir_error ? ` ${r.dir_error}` : '',
      r.errors.map((/** @type {any} */ x) => ` ${x.file}: ${x.error}.`)));
}

/**
 * @param {any} img
 * @param {{ edit: (img: any) => void, remove: (img: any) => void }} actions
 */
function imageRow(img, actions) {
  const meta = META_FIELDS.filter(([f]) => img[f]).map(([f, label]) => h('div', { class: 'small' }, h('span', { class: 'muted' }, `${label}: `), img[f]));
  return h('tr', { testid: 'firmware-row', 'data-id': img.id },
    h('td', { 'data-label': 'Image' },
      h('a', { href: `/api/firmware/${img.id}/download`, testid: 'firmware-name', download: '' }, img.file_name),
      h('div', { class: 'small muted' }, img.source === 'dir' ? 'firmware directory' : 'uploaded', ' · added ', timeAgo(img.added_at, undefined, { real: true })),
      img.missing_at ? badge('file missing', 'warn') : null,
      img.running_campaigns.length ? badge(`in ${img.running_campaigns.length} running campaign(s)`, 'pending') : null),
    h('td', { 'data-label': 'Size', class: 'num nowrap' }, fmtBytes(img.size), h('div', { class: 'small muted' }, `${img.size} B`)),
    h('td', { 'data-label': 'SHA-256', class: 'mono small', title: img.sha256 }, `${img.sha256.slice(0, 16)}…`),
    h('td', { 'data-label': 'Package', testid: 'firmware-trailer' }, trailerText(img.trailer, img.spelled), img.trailer_error ? h('div', { class: 'err-text small' }, img.trailer_error) : null),
    h('td', { 'data-label': 'Metadata', testid: 'firmware-meta' }, meta.length ? meta : h('span', { class: 'muted' }, '—')),
    can('operate') ? h('td', { 'data-label': 'Actions', class: 'nowrap' },
      h('a', { class: 'btn btn-small', href: `#/campaigns/new?firmware=${img.id}`, testid: 'firmware-campaign' }, 'Campaign…'), ' ',
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => actions.edit(img), testid: 'firmware-edit' }, 'Edit'), ' ',
      h('button', { type: 'button', class: 'btn btn-small btn-danger-outline', onclick: () => actions.remove(img), testid: 'firmware-delete' }, 'Delete')) : null);
}

/**
 * The drop zone and file input; `upload` gets the chosen file.
 * @param {(file: File | null | undefined) => Promise<void>} upload
 */
function dropZone(upload) {
  const input = h('input', { type: 'file', id: 'fw-file', class: 'visually-hidden', testid: 'firmware-file-input' });
  const drop = h('label', { for: 'fw-file', class: 'fw-drop', testid: 'firmware-drop' },
    h('strong', null, 'Drop a firmware image here'), h('span', { class: 'muted' }, ' or click to choose a file'));
  input.addEventListener('change', async () => {
    await upload(input.files && input.files[0]);
    input.value = '';
  });
  for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('fw-drop-over'); });
  for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('fw-drop-over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); upload(e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0]); });
  return [input, drop];
}

/** @type {import('../types.js').Page} */
export function firmwarePage(view, ctx) {
  ctx.setTitle('Firmware');
  const count = h('span', { class: 'count', testid: 'firmware-count' });
  const alertBox = h('div', { testid: 'firmware-alert' });
  const list = h('div', { class: 'loading muted' }, 'Loading…');
  const progress = h('p', { class: 'muted small', testid: 'upload-status' });

  /** @param {File | null | undefined} file */
  async function upload(file) {
    if (!file) return;
    alertBox.replaceChildren();
    progress.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
    try {
      const img = await uploadFile(file);
      progress.textContent = '';
      toast(`Uploaded ${img.file_name}`, 'ok');
      live.poke();
    } catch (e) {
      progress.textContent = '';
      const body = bodyOf(e);
      const extra = body && body.existing ? h('a', { href: `#/firmware?image=${body.existing.id}` }, ` (image #${body.existing.id})`) : null;
      alertBox.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert', testid: 'upload-error' }, h('span', null, messageOf(e), extra)));
    }
  }

  async function rescan() {
    try {
      alertBox.replaceChildren(rescanResult(await api('POST', '/api/firmware/rescan')));
      live.poke();
    } catch (e) { alertBox.replaceChildren(errorBox(messageOf(e))); }
  }

  const actions = {
    /** @param {any} img */
    async edit(img) {
      const patch = await editMetadata(img);
      if (Object.keys(patch).length === 0) return;
      try { await api('PATCH', `/api/firmware/${img.id}`, patch); toast('Saved', 'ok'); live.poke(); } catch (e) { toast(messageOf(e), 'error'); }
    },
    /** @param {any} img */
    async remove(img) {
      const ok = await confirmDialog({ title: `Delete ${img.file_name}?`, message: 'The image file is deleted from the server. Campaigns that used it keep their history.', danger: true, confirmLabel: 'Delete', testid: 'fw-delete' });
      if (!ok) return;
      try { await api('DELETE', `/api/firmware/${img.id}`); toast('Deleted', 'ok'); live.poke(); } catch (e) { alertBox.replaceChildren(errorBox(messageOf(e))); }
    },
  };

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
        h('thead', null, h('tr', null, ['Image', 'Size', 'SHA-256', 'Package', 'Metadata', can('operate') ? 'Actions' : null].map((t) => (t ? h('th', { scope: 'col' }, t) : null)))),
        h('tbody', null, r.images.map((/** @type {any} */ img) => imageRow(img, actions))))));
    } catch (e) {
      if (!isAbort(e)) list.replaceChildren(errorBox(messageOf(e), () => live.now()));
    }
  }

  view.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Firmware ', count),
      can('operate') ? h('div', { class: 'toolbar' }, h('button', { type: 'button', class: 'btn', onclick: rescan, testid: 'firmware-rescan' }, 'Rescan directory')) : null),
    alertBox,
    can('operate') ? h('section', { class: 'card' }, h('div', { class: 'card-body' }, dropZone(upload), progress)) : '',
    h('section', { class: 'card' }, list));
  const live = refresher(load);
  live.now();
  return {
    refresh: () => live.now(),
    onEvent(type) { if (type === 'firmware') live.poke(); },
    destroy() { live.cancel(); },
  };
}
