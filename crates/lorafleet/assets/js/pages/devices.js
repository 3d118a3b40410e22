// @ts-check
// #/devices: the device list, with search, sort and pages; live.
import { api, isAbort, messageOf, statusOf } from '../api.js';
import { timeAgo } from '../clock.js';
import { h, badge, dash, errorBox } from '../dom.js';
import { fmtDateTime, versionRaw, versionText } from '../format.js';
import { debounce, refresher } from '../schedule.js';

/** @typedef {import('../types.js').DeviceSummary} DeviceSummary */

const PAGE_SIZE = 50;
// Kept across navigation so "back to devices" returns to the same search and page.
const listState = { search: '', offset: 0, sort: 'last_seen' };
const SORTS = [['last_seen', 'Last seen'], ['name', 'Name'], ['dev_eui', 'DevEUI']];

/** @param {DeviceSummary} d */
function deviceRow(d) {
  const href = '#/devices/' + encodeURIComponent(d.dev_eui);
  const badges = [];
  if (d.never_seen) badges.push(badge('never seen', 'muted', 'No uplink received from this device yet', 'badge-never-seen'));
  if (d.reappeared_at) badges.push(badge('reappeared', 'warn', `Removed, then sent again at ${fmtDateTime(d.reappeared_at)}`, 'badge-reappeared'));
  const tr = h('tr', { class: 'clickable', testid: 'device-row', 'data-dev-eui': d.dev_eui },
    h('td', { 'data-label': 'Name', class: 'cell-name' },
      h('a', { href, testid: 'device-name' }, d.name ? d.name : h('span', { class: 'muted' }, '(unnamed)')),
      badges.length ? h('span', { class: 'badges' }, badges) : null),
    h('td', { 'data-label': 'DevEUI', class: 'mono' }, d.dev_eui),
    h('td', { 'data-label': 'Application' }, d.application || dash()),
    h('td', { 'data-label': 'Version', title: versionRaw(d.running_version) || '' },
      d.running_version ? versionText(d.running_version) : dash()),
    h('td', { 'data-label': 'Last seen' }, d.never_seen ? h('span', { class: 'muted' }, 'never') : timeAgo(d.last_seen, 'device-last-seen')));
  tr.addEventListener('click', (ev) => {
    const target = /** @type {Element | null} */ (ev.target);
    if ((target && target.closest('a')) || String(window.getSelection() || '')) return;
    location.hash = href;
  });
  return tr;
}

/** @param {string} sort */
function tableHead(sort) {
  /** @param {string} key @param {string} label @param {boolean} desc */
  const th = (key, label, desc) => h('th', { 'aria-sort': sort === key ? (desc ? 'descending' : 'ascending') : null },
    label, sort === key ? (desc ? ' ▾' : ' ▴') : '');
  return h('thead', null, h('tr', null,
    th('name', 'Name', false), th('dev_eui', 'DevEUI', false),
    h('th', null, 'Application'), h('th', null, 'Running version'),
    th('last_seen', 'Last seen', true)));
}

function emptyList() {
  return h('div', { class: 'empty-state', testid: 'device-list-empty' },
    listState.search
      ? h('p', null, 'No device matches “', listState.search, '”.')
      : [h('p', null, 'No devices yet.'),
        h('p', { class: 'muted' }, 'Devices appear here as soon as they send an uplink through the network server integration.')]);
}

/**
 * @param {HTMLElement} pager
 * @param {number} shown
 * @param {number} total
 * @param {() => void} load
 */
function renderPager(pager, shown, total, load) {
  const from = total === 0 ? 0 : listState.offset + 1;
  const to = Math.min(total, listState.offset + shown);
  const prev = h('button', { type: 'button', class: 'btn btn-small', testid: 'page-prev', disabled: listState.offset <= 0 }, '‹ Previous');
  const next = h('button', { type: 'button', class: 'btn btn-small', testid: 'page-next', disabled: to >= total }, 'Next ›');
  prev.addEventListener('click', () => { listState.offset = Math.max(0, listState.offset - PAGE_SIZE); load(); });
  next.addEventListener('click', () => { listState.offset += PAGE_SIZE; load(); });
  pager.replaceChildren(
    h('span', { class: 'muted', testid: 'page-range' }, total === 0 ? '' : `${from}–${to} of ${total}`),
    total > PAGE_SIZE ? h('span', { class: 'pager-buttons' }, prev, next) : '');
}

/** @type {import('../types.js').Page} */
export function devicesPage(view, ctx) {
  ctx.setTitle('Devices');
  const search = h('input', {
    type: 'search', class: 'search', placeholder: 'Search devices…', title: 'Name, DevEUI, application or DevAddr',
    'aria-label': 'Search devices', value: listState.search, testid: 'device-search',
  });
  const count = h('span', { class: 'count', testid: 'device-count' });
  const sort = h('select', { class: 'sort', 'aria-label': 'Sort devices by', testid: 'device-sort' },
    SORTS.map(([v, label]) => h('option', { value: v }, `Sort: ${label}`)));
  sort.value = listState.sort;
  const body = h('div', { class: 'list-body' }, h('p', { class: 'muted loading' }, 'Loading devices…'));
  const pager = h('div', { class: 'pager' });
  view.append(
    h('div', { class: 'page-head' },
      h('h1', null, 'Devices', ' ', count),
      h('div', { class: 'toolbar' }, search, sort)),
    body, pager);

  /** @param {DeviceSummary[]} devices @param {number} total */
  function renderList(devices, total) {
    count.textContent = `${total}`;
    count.title = `${total} device${total === 1 ? '' : 's'}`;
    body.replaceChildren(devices.length === 0 ? emptyList()
      : h('table', { class: 'table table-cards devices', testid: 'device-table' },
        tableHead(listState.sort), h('tbody', null, devices.map(deviceRow))));
    renderPager(pager, devices.length, total, () => live.now());
  }

  async function load() {
    const q = new URLSearchParams({
      search: listState.search, limit: String(PAGE_SIZE), offset: String(listState.offset), sort: listState.sort,
    });
    try {
      /** @type {import('../types.js').DeviceList} */
      const data = await api('GET', `/api/devices?${q}`, undefined, { signal: ctx.signal });
      if (ctx.signal.aborted) return;
      const total = Number(data.total) || 0;
      const devices = Array.isArray(data.devices) ? data.devices : [];
      if (devices.length === 0 && listState.offset > 0 && total > 0) {
        // The page we were on emptied (devices removed): go back to the last page.
        listState.offset = Math.max(0, Math.floor((total - 1) / PAGE_SIZE) * PAGE_SIZE);
        return load();
      }
      renderList(devices, total);
    } catch (e) {
      if (isAbort(e) || statusOf(e) === 401) return;
      body.replaceChildren(errorBox(messageOf(e), () => live.now()));
    }
  }

  const live = refresher(load);
  sort.addEventListener('change', () => { listState.sort = sort.value; listState.offset = 0; live.now(); });
  const onSearch = debounce(() => {
    listState.search = search.value.trim();
    listState.offset = 0;
    live.now();
  }, 300);
  search.addEventListener('input', onSearch);

  live.now();
  return {
    refresh: () => live.now(),
    onEvent(type) { if (type === 'device') live.poke(); },
    destroy() { onSearch.cancel(); live.cancel(); },
  };
}
