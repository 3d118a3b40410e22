// @ts-check
// #/devices: the device list at fleet scale. Search, filters, sort and page are the server's
// (GET /api/devices) and live in the URL (#/devices?status=online&sort=rssi&page=3), so a
// reload or a shared link shows the same list; live through the page's refresher.
import { api, isAbort, messageOf, statusOf } from '../api.js';
import { timeAgo } from '../clock.js';
import { h, badge, dash, errorBox } from '../dom.js';
import { countText, fmtDateTime, fmtNum, versionRaw, versionText } from '../format.js';
import { debounce, refresher } from '../schedule.js';

/** @typedef {import('../types.js').DeviceSummary} DeviceSummary */

export const PAGE_SIZES = [25, 50, 100, 500];
/** The list's filter parameters, as the API names them. */
const FILTERS = ['search', 'status', 'model', 'application', 'version', 'tag'];
/** Sortable columns and their first direction (newest, strongest, fullest first). */
const SORT_FIRST = { last_seen: 'desc', name: 'asc', dev_eui: 'asc', running_version: 'desc', rssi: 'desc', snr: 'desc', battery: 'desc' };

/**
 * @typedef {object} ListState
 * @property {Record<string, string>} filters
 * @property {string} sort
 * @property {string} order   asc | desc
 * @property {number} page    1-based
 * @property {number} size
 */

/** @returns {ListState} */
function defaults() {
  return { filters: {}, sort: 'last_seen', order: 'desc', page: 1, size: 50 };
}

// Kept across navigation so the top bar's "Devices" returns to the same list.
let listState = defaults();

/** @param {string} query  the hash's query @returns {ListState} */
export function stateFromQuery(query) {
  const q = new URLSearchParams(query);
  const s = defaults();
  for (const f of FILTERS) { const v = q.get(f); if (v) s.filters[f] = v; }
  const sort = q.get('sort');
  if (sort && sort in SORT_FIRST) s.sort = sort;
  const order = q.get('order');
  s.order = order === 'asc' || order === 'desc' ? order : SORT_FIRST[/** @type {keyof SORT_FIRST} */ (s.sort)];
  const size = Number(q.get('size'));
  if (PAGE_SIZES.includes(size)) s.size = size;
  const page = Math.floor(Number(q.get('page')));
  if (page >= 1) s.page = page;
  return s;
}

/** @param {ListState} s @returns {string} the hash's query, defaults left out */
export function queryFromState(s) {
  const q = new URLSearchParams();
  for (const f of FILTERS) if (s.filters[f]) q.set(f, s.filters[f]);
  if (s.sort !== 'last_seen') q.set('sort', s.sort);
  if (s.order !== SORT_FIRST[/** @type {keyof SORT_FIRST} */ (s.sort)]) q.set('order', s.order);
  if (s.size !== 50) q.set('size', String(s.size));
  if (s.page > 1) q.set('page', String(s.page));
  return q.toString();
}

/** Shows the state in the address bar without a navigation (hashchange would re-render). */
function writeUrl() {
  const q = queryFromState(listState);
  const want = '#/devices' + (q ? '?' + q : '');
  if (location.hash !== want) history.replaceState(history.state, '', want);
}

/** @param {DeviceSummary} d */
function statusBadge(d) {
  if (d.never_seen || d.status === 'never_seen') return badge('never seen', 'muted', 'No uplink received from this device yet', 'badge-never-seen');
  if (d.status === 'offline') return badge('offline', 'warn', 'Not heard for longer than the offline time', 'badge-offline');
  return null;
}

/** @param {DeviceSummary} d */
function deviceRow(d) {
  const href = '#/devices/' + encodeURIComponent(d.dev_eui);
  const badges = [];
  const st = statusBadge(d);
  if (st) badges.push(st);
  if (d.reappeared_at) badges.push(badge('reappeared', 'warn', `Removed, then sent again at ${fmtDateTime(d.reappeared_at)}`, 'badge-reappeared'));
  const tr = h('tr', { class: 'clickable', testid: 'device-row', 'data-dev-eui': d.dev_eui },
    h('td', { 'data-label': 'Name', class: 'cell-name' },
      h('a', { href, testid: 'device-name' }, d.name ? d.name : h('span', { class: 'muted' }, '(unnamed)')),
      badges.length ? h('span', { class: 'badges' }, badges) : null),
    h('td', { 'data-label': 'DevEUI', class: 'mono' }, d.dev_eui),
    h('td', { 'data-label': 'Application' }, d.application || dash()),
    h('td', { 'data-label': 'Model' }, d.model || dash()),
    h('td', { 'data-label': 'Version', title: versionRaw(d.running_version) || '', testid: 'device-version' },
      d.running_version ? versionText(d.running_version) : dash()),
    h('td', { 'data-label': 'RSSI', class: 'num', testid: 'device-rssi' }, fmtNum(d.rssi, 'dBm')),
    h('td', { 'data-label': 'SNR', class: 'num', testid: 'device-snr' }, fmtNum(d.snr, 'dB', 1)),
    h('td', { 'data-label': 'Battery', class: 'num' }, fmtNum(d.battery, '%', 0)),
    h('td', { 'data-label': 'Last seen' }, d.never_seen ? h('span', { class: 'muted' }, 'never') : timeAgo(d.last_seen, 'device-last-seen')));
  tr.addEventListener('click', (ev) => {
    const target = /** @type {Element | null} */ (ev.target);
    if ((target && target.closest('a')) || String(window.getSelection() || '')) return;
    location.hash = href;
  });
  return tr;
}

/** @param {(sort: string) => void} onSort */
function tableHead(onSort) {
  /** @param {string | null} key @param {string} label @param {string} [cls] */
  const th = (key, label, cls) => {
    if (!key) return h('th', { scope: 'col', class: cls || null }, label);
    const active = listState.sort === key;
    const dir = active ? (listState.order === 'desc' ? 'descending' : 'ascending') : null;
    const next = active ? (listState.order === 'desc' ? 'ascending' : 'descending') : (SORT_FIRST[/** @type {keyof SORT_FIRST} */ (key)] === 'desc' ? 'descending' : 'ascending');
    const button = h('button', { type: 'button', class: 'th-sort', testid: `sort-${key}`, title: `Sort by ${label.toLowerCase()}, ${next}` },
      label, h('span', { 'aria-hidden': 'true' }, active ? (listState.order === 'desc' ? ' ▾' : ' ▴') : ''));
    button.addEventListener('click', () => onSort(key));
    return h('th', { scope: 'col', 'aria-sort': dir, class: cls || null }, button);
  };
  return h('thead', null, h('tr', null,
    th('name', 'Name'), th('dev_eui', 'DevEUI'), th(null, 'Application'), th(null, 'Model'),
    th('running_version', 'Running version'), th('rssi', 'RSSI', 'num'), th('snr', 'SNR', 'num'),
    th('battery', 'Battery', 'num'), th('last_seen', 'Last seen')));
}

function emptyList() {
  const filtered = Object.keys(listState.filters).length > 0;
  return h('div', { class: 'empty-state', testid: 'device-list-empty' },
    filtered
      ? h('p', null, 'No device matches these filters.')
      : [h('p', null, 'No devices yet.'),
        h('p', { class: 'muted' }, 'Devices appear here as soon as they send an uplink through the network server integration.')]);
}

/**
 * @param {HTMLElement} pager
 * @param {number} shown
 * @param {number} total
 * @param {boolean} more  more than `total` match (a broad search stopped counting there)
 * @param {() => void} changed
 */
function renderPager(pager, shown, total, more, changed) {
  // Past a lower bound the last page is unknown: a full page may have another after it.
  const known = Math.max(1, Math.ceil(total / listState.size));
  const pages = more ? Math.max(known, listState.page + (shown === listState.size ? 1 : 0)) : known;
  const from = total === 0 ? 0 : (listState.page - 1) * listState.size + 1;
  const to = more ? from - 1 + shown : Math.min(total, from - 1 + shown);
  /** @param {number} p */
  const go = (p) => { listState.page = Math.min(Math.max(1, p), pages); changed(); };
  const prev = h('button', { type: 'button', class: 'btn btn-small', testid: 'page-prev', disabled: listState.page <= 1 }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn btn-small', testid: 'page-next', disabled: listState.page >= pages }, 'Next ›');
  prev.addEventListener('click', () => go(listState.page - 1));
  next.addEventListener('click', () => go(listState.page + 1));
  const jump = h('input', { type: 'number', class: 'page-jump', min: '1', max: more ? undefined : String(pages), value: String(listState.page), 'aria-label': 'Page number', testid: 'page-jump' });
  jump.addEventListener('change', () => go(Math.floor(Number(jump.value)) || 1));
  const size = h('select', { class: 'sort', 'aria-label': 'Devices per page', testid: 'page-size' },
    PAGE_SIZES.map((n) => h('option', { value: String(n) }, `${n} per page`)));
  size.value = String(listState.size);
  size.addEventListener('change', () => {
    // Keep the first device on screen in view: its page under the new size.
    const first = (listState.page - 1) * listState.size;
    listState.size = Number(size.value);
    listState.page = Math.floor(first / listState.size) + 1;
    changed();
  });
  pager.replaceChildren(
    h('span', { class: 'muted', testid: 'page-range' }, total === 0 ? '' : `${from}–${to} of ${countText(total, more)}`),
    h('span', { class: 'pager-buttons' }, size,
      total > listState.size ? [prev, h('label', { class: 'page-of' }, 'Page ', jump, more ? '' : ` of ${pages}`), next] : ''));
}

const SORT_LABELS = [['last_seen', 'Last seen'], ['name', 'Name'], ['dev_eui', 'DevEUI'], ['running_version', 'Running version'],
  ['rssi', 'RSSI'], ['snr', 'SNR'], ['battery', 'Battery']];

/** @param {() => void} changed @param {(key: string) => void} onSort */
function filterBar(changed, onSort) {
  /** @param {string} key @param {string} label @param {string} placeholder */
  const text = (key, label, placeholder) => {
    const input = h('input', { type: 'search', class: 'filter', placeholder, 'aria-label': label, title: label, value: listState.filters[key] || '', testid: `filter-${key}` });
    const apply = debounce(() => {
      const v = input.value.trim();
      if (v) listState.filters[key] = v; else delete listState.filters[key];
      listState.page = 1;
      changed();
    }, 300);
    input.addEventListener('input', apply);
    return { input, cancel: apply.cancel };
  };
  const search = text('search', 'Search devices: name, DevEUI, application or DevAddr', 'Search devices…');
  search.input.classList.add('search');
  search.input.setAttribute('data-testid', 'device-search');
  const model = text('model', 'Model (tag, device profile or device description)', 'Model');
  const application = text('application', 'Application', 'Application');
  const version = text('version', 'Running version, e.g. 1.3.0 or a raw value', 'Version');
  const tag = text('tag', 'Tag as key:value', 'tag key:value');
  const status = h('select', { class: 'sort', 'aria-label': 'Status', testid: 'filter-status' },
    h('option', { value: '' }, 'Any status'), h('option', { value: 'online' }, 'Online'),
    h('option', { value: 'offline' }, 'Offline'), h('option', { value: 'never_seen' }, 'Never seen'));
  status.value = listState.filters.status || '';
  status.addEventListener('change', () => {
    if (status.value) listState.filters.status = status.value; else delete listState.filters.status;
    listState.page = 1;
    changed();
  });
  // The column headers sort too; on a phone the table becomes cards without them.
  const sort = h('select', { class: 'sort', 'aria-label': 'Sort devices by', testid: 'device-sort' },
    SORT_LABELS.map(([v, label]) => h('option', { value: v }, `Sort: ${label}`)));
  sort.value = listState.sort;
  sort.addEventListener('change', () => onSort(sort.value));
  const parts = [search, model, application, version, tag];
  return {
    search: search.input,
    el: h('div', { class: 'toolbar filters', testid: 'device-filters' }, parts.map((p) => p.input), status, sort),
    cancel: () => parts.forEach((p) => p.cancel()),
  };
}

/** @type {import('../types.js').Page} */
export function devicesPage(view, ctx) {
  ctx.setTitle('Devices');
  const query = location.hash.split('?')[1] || '';
  if (query) listState = stateFromQuery(query);
  writeUrl();
  const count = h('span', { class: 'count', testid: 'device-count' });
  const body = h('div', { class: 'list-body' }, h('p', { class: 'muted loading' }, 'Loading devices…'));
  const pager = h('div', { class: 'pager' });
  const changed = () => { writeUrl(); live.now(); };
  /** A header clicked again turns its order round; another sort starts in its first direction. */
  const onSort = (/** @type {string} */ key) => {
    if (listState.sort === key) listState.order = listState.order === 'desc' ? 'asc' : 'desc';
    else { listState.sort = key; listState.order = SORT_FIRST[/** @type {keyof SORT_FIRST} */ (key)]; }
    listState.page = 1;
    sortSelect.value = listState.sort;
    changed();
  };
  const filters = filterBar(changed, (key) => { if (key !== listState.sort) onSort(key); });
  const sortSelect = /** @type {HTMLSelectElement} */ (filters.el.querySelector('[data-testid="device-sort"]'));
  view.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Devices', ' ', count)),
    filters.el, body, pager);

  /** @param {DeviceSummary[]} devices @param {number} total @param {boolean} more */
  function renderList(devices, total, more) {
    count.textContent = countText(total, more);
    count.title = `${countText(total, more)} device${total === 1 && !more ? '' : 's'}`;
    body.replaceChildren(devices.length === 0 ? emptyList()
      : h('div', { class: 'table-scroll' }, h('table', { class: 'table table-cards devices', testid: 'device-table' },
        tableHead(onSort), h('tbody', null, devices.map(deviceRow)))));
    renderPager(pager, devices.length, total, more, changed);
  }

  const listQuery = () => String(new URLSearchParams({ ...listState.filters, sort: listState.sort, order: listState.order,
    limit: String(listState.size), offset: String((listState.page - 1) * listState.size) }));

  async function load() {
    const q = listQuery();
    try {
      /** @type {import('../types.js').DeviceList} */
      const data = await api('GET', `/api/devices?${q}`, undefined, { signal: ctx.signal });
      if (ctx.signal.aborted) return;
      // A sort, filter or page chosen while this answer was on its way: the headers would show
      // the new choice over rows of the old one.
      if (q !== listQuery()) return load();
      const total = Number(data.total) || 0;
      const devices = Array.isArray(data.devices) ? data.devices : [];
      const more = data.total_is_lower_bound === true;
      if (devices.length === 0 && listState.page > 1 && total > 0) {
        // The page we were on emptied (devices removed, or a link to a page past the end).
        listState.page = Math.max(1, Math.ceil(total / listState.size));
        writeUrl();
        return load();
      }
      renderList(devices, total, more);
    } catch (e) {
      if (isAbort(e) || statusOf(e) === 401) return;
      // A filter the server refuses names its parameter: say which.
      body.replaceChildren(errorBox(messageOf(e), () => live.now()));
    }
  }

  const live = refresher(load);
  live.now();
  return {
    refresh: () => live.now(),
    onEvent(type) { if (type === 'device') live.poke(); },
    destroy() { filters.cancel(); live.cancel(); },
  };
}
