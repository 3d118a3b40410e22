// @ts-check
// The campaign form's devices: either devices picked one by one (searched on the server, so a
// fleet of any size can be searched) or every device a filter selects (the device list's
// filter parameters, resolved when the campaign starts). Nothing is cut off silently: when a
// search matches more devices than the picker shows, it says so and offers the filter.
import { api, isAbort, messageOf } from '../api.js';
import { timeAgo } from '../clock.js';
import { h } from '../dom.js';
import { countText, versionText } from '../format.js';
import { debounce } from '../schedule.js';

/** Rows the picker shows at most; the rest are reached by searching or by a filter. */
const SHOWN = 200;
/** The filter parameters a campaign's device_filter takes, with their labels. */
const FILTER_FIELDS = [['model', 'Model'], ['version', 'Running version'], ['application', 'Application'],
  ['tag', 'Tag (key:value)'], ['search', 'Name or DevEUI contains']];

/**
 * @param {Set<string>} selected   the chosen DevEUIs (picking mode)
 * @param {() => void} onChange
 * @param {AbortSignal} signal
 */
export function devicePicker(selected, onChange, signal) {
  let mode = 'pick';
  /** @type {Record<string, string>} */
  const filter = {};
  /** @type {any[]} */
  let shown = [];
  let total = 0;
  /** More than `total` match: a broad search stopped counting there. */
  let totalMore = false;

  const modePick = h('input', { type: 'radio', name: 'cf-target', value: 'pick', checked: true, testid: 'target-pick' });
  const modeFilter = h('input', { type: 'radio', name: 'cf-target', value: 'filter', testid: 'target-filter' });
  const modes = h('div', { class: 'toolbar', role: 'radiogroup', 'aria-label': 'Which devices' },
    h('label', { class: 'check' }, modePick, ' Pick devices'),
    h('label', { class: 'check' }, modeFilter, ' Every device matching a filter'));

  // Picking: a server-side search, checkboxes, what is selected.
  const search = h('input', { type: 'search', placeholder: 'Search devices (name, DevEUI, application)', class: 'cf-filter', testid: 'device-filter', 'aria-label': 'Search devices' });
  const list = h('div', { class: 'cf-devices', id: 'cf-devices', tabindex: '-1', testid: 'device-picker' });
  const count = h('span', { class: 'muted small', testid: 'device-selected-count' });
  const note = h('p', { class: 'muted small', testid: 'device-picker-note' });
  const selectShown = h('button', { type: 'button', class: 'btn btn-small', testid: 'devices-all' }, 'Select shown');
  const clear = h('button', { type: 'button', class: 'btn btn-small' }, 'Clear');
  const useFilter = h('button', { type: 'button', class: 'btn btn-small', testid: 'use-filter', hidden: true }, 'Target them by filter instead');
  const pickPart = h('div', null, h('div', { class: 'toolbar' }, search, selectShown, clear, count), note, list);

  // Filtering: the parameters and how many devices they select now.
  /** @type {Record<string, HTMLInputElement>} */
  const inputs = {};
  const status = /** @type {HTMLSelectElement} */ (h('select', { testid: 'target-filter-status', 'aria-label': 'Status' },
    h('option', { value: '' }, 'Any status'), h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'offline' }, 'Offline'), h('option', { value: 'never_seen' }, 'Never seen')));
  const matchCount = h('p', { class: 'muted', testid: 'target-filter-count', 'aria-live': 'polite' });
  const filterPart = h('div', { hidden: true },
    h('div', { class: 'cf-grid' },
      FILTER_FIELDS.map(([key, label]) => {
        const input = /** @type {HTMLInputElement} */ (h('input', { type: 'text', id: `cf-target-${key}`, testid: `target-filter-${key}` }));
        inputs[key] = input;
        input.addEventListener('input', () => { readFilter(); countLater(); onChange(); });
        return h('div', { class: 'field' }, h('label', { for: `cf-target-${key}` }, label), input);
      }),
      h('div', { class: 'field' }, h('label', null, 'Status', status))),
    matchCount,
    h('p', { class: 'muted small' }, 'The campaign takes the devices the filter selects when it starts.'));
  status.addEventListener('change', () => { readFilter(); countLater(); onChange(); });

  function readFilter() {
    for (const k of Object.keys(filter)) delete filter[k];
    for (const [key] of FILTER_FIELDS) { const v = inputs[key].value.trim(); if (v) filter[key] = v; }
    if (status.value) filter.status = status.value;
  }

  /** @param {any} d */
  function row(d) {
    const eui = String(d.dev_eui).toLowerCase();
    const box = h('input', { type: 'checkbox', value: eui, checked: selected.has(eui), testid: 'device-option' });
    box.addEventListener('change', () => { if (box.checked) selected.add(eui); else selected.delete(eui); renderCount(); onChange(); });
    return h('label', { class: 'check cf-device', 'data-dev-eui': eui }, box,
      h('span', { class: 'mono' }, eui), ' ', h('span', null, d.name || ''), ' ',
      h('span', { class: 'muted small' }, d.model || 'model unknown', ' · ',
        d.running_version ? versionText(d.running_version) : 'version unknown', ' · seen ',
        d.never_seen ? 'never' : timeAgo(d.last_seen)));
  }

  function renderCount() { count.textContent = `${selected.size} selected`; }

  function renderList() {
    renderCount();
    if (shown.length === 0) {
      list.replaceChildren(h('p', { class: 'muted' }, search.value.trim() ? 'No device matches the search.' : 'No devices known yet.'));
    } else {
      list.replaceChildren(...shown.map(row));
    }
    const more = totalMore || total > shown.length;
    selectShown.textContent = `Select the ${shown.length} shown`;
    note.textContent = more
      ? `Showing ${shown.length} of ${countText(total, totalMore)} matching devices. Search to narrow the list, or target every matching device by filter.`
      : `${total} matching device${total === 1 ? '' : 's'}.`;
    useFilter.hidden = !more;
    if (more) note.append(' ', useFilter);
  }

  let seq = 0;
  async function loadShown() {
    const mine = ++seq;
    const q = new URLSearchParams({ sort: 'dev_eui', limit: String(SHOWN) });
    if (search.value.trim()) q.set('search', search.value.trim());
    try {
      const r = await api('GET', `/api/devices?${q}`, undefined, { signal });
      if (mine !== seq) return;
      shown = r.devices || [];
      total = Number(r.total) || 0;
      totalMore = r.total_is_lower_bound === true;
      renderList();
    } catch (e) {
      if (!isAbort(e)) list.replaceChildren(h('p', { class: 'field-error' }, messageOf(e)));
    }
  }

  let countSeq = 0;
  async function countMatching() {
    const mine = ++countSeq;
    try {
      const r = await api('GET', `/api/devices?${new URLSearchParams({ ...filter, limit: '1' })}`, undefined, { signal });
      if (mine !== countSeq) return;
      const n = Number(r.total) || 0;
      const one = n === 1 && r.total_is_lower_bound !== true;
      matchCount.textContent = `${countText(n, r.total_is_lower_bound)} device${one ? '' : 's'} match${one ? 'es' : ''} now.`;
    } catch (e) {
      if (!isAbort(e) && mine === countSeq) matchCount.textContent = messageOf(e);
    }
  }
  const countLater = debounce(countMatching, 300);
  const searchLater = debounce(loadShown, 300);
  search.addEventListener('input', searchLater);

  selectShown.addEventListener('click', () => { for (const d of shown) selected.add(String(d.dev_eui).toLowerCase()); renderList(); onChange(); });
  clear.addEventListener('click', () => { selected.clear(); renderList(); onChange(); });

  /** @param {string} m */
  function setMode(m) {
    mode = m;
    modePick.checked = m === 'pick';
    modeFilter.checked = m === 'filter';
    pickPart.hidden = m !== 'pick';
    filterPart.hidden = m !== 'filter';
    if (m === 'filter') { readFilter(); countMatching(); }
    onChange();
  }
  modePick.addEventListener('change', () => setMode('pick'));
  modeFilter.addEventListener('change', () => setMode('filter'));
  useFilter.addEventListener('click', () => {
    // Carry the search over: the filter then selects what the search matched.
    inputs.search.value = search.value.trim();
    setMode('filter');
  });

  return {
    toolbar: modes,
    list: h('div', null, pickPart, filterPart),
    /** The element the devices field's errors point at. */
    focusTarget: list,
    render: () => { renderCount(); loadShown(); },
    /** `devices` or `device_filter` of the request (the other one null, so an edit replaces it). */
    target() {
      return mode === 'filter'
        ? { devices: null, device_filter: { ...filter } }
        : { devices: [...selected], device_filter: null };
    },
    /** Puts a stored request's target back. @param {any} req */
    fill(req) {
      if (req.device_filter && typeof req.device_filter === 'object') {
        for (const [key] of FILTER_FIELDS) inputs[key].value = req.device_filter[key] || '';
        status.value = req.device_filter.status || '';
        setMode('filter');
      } else {
        for (const d of req.devices || []) selected.add(String(d).toLowerCase());
      }
    },
    hasTarget: () => (mode === 'filter' ? Object.keys(filter).length > 0 : selected.size > 0),
    cancel() { countLater.cancel(); searchLater.cancel(); },
  };
}
