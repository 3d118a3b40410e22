// @ts-check
// #/campaigns: every campaign with its outcome; live.
import { can } from '../access.js';
import { api, isAbort, messageOf } from '../api.js';
import { timeAgo } from '../clock.js';
import { h, badge, errorBox } from '../dom.js';
import { refresher } from '../schedule.js';

/** @type {Record<string, string>} */
const STATE_KIND = { draft: 'muted', scheduled: 'pending', running: 'pending', paused: 'warn', completed: 'ok', failed: 'err', cancelled: 'muted' };

/**
 * The campaign's state; `label` is the server's `state_label` ("completed with failures" for a
 * completed campaign with failed devices, which then reads as a warning, not a success).
 * @param {string} s @param {string} [label]
 */
export const stateBadge = (s, label) => badge(label || s,
  label && label !== s ? 'warn' : (STATE_KIND[s] || 'muted'), null, 'campaign-state');

/**
 * @param {Record<string, number>} counts  devices per stage
 * @param {number} total
 */
export function countsText(counts, total) {
  const done = (counts.completed || 0);
  const failed = (counts.failed || 0);
  const parts = [`${done}/${total} completed`];
  if (failed) parts.push(`${failed} failed`);
  return parts.join(', ');
}

/** @param {any} c  a campaign summary */
function campaignRow(c) {
  return h('tr', { testid: 'campaign-row', 'data-id': c.id, 'data-state': c.state },
    h('td', { 'data-label': 'Campaign' }, h('a', { href: `#/campaigns/${c.id}`, testid: 'campaign-name' }, c.name)),
    h('td', { 'data-label': 'State' }, stateBadge(c.state, c.state_label), c.error ? h('div', { class: 'err-text small' }, c.error) : null),
    h('td', { 'data-label': 'Image' }, c.firmware_file_name || `#${c.firmware_id}`),
    h('td', { 'data-label': 'Driver' }, c.driver),
    h('td', { 'data-label': 'Devices' }, countsText(c.counts, c.devices)),
    h('td', { 'data-label': 'Created' }, timeAgo(c.created_at)),
    h('td', { 'data-label': 'Finished' }, timeAgo(c.completed_at)));
}

/** @type {import('../types.js').Page} */
export function campaignsPage(view, ctx) {
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
        h('tbody', null, r.campaigns.map(campaignRow)))));
    } catch (e) {
      if (!isAbort(e)) list.replaceChildren(errorBox(messageOf(e), () => live.now()));
    }
  }
  view.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Campaigns'),
      can('operate') ? h('a', { class: 'btn btn-primary', href: '#/campaigns/new', testid: 'campaign-new' }, 'New campaign') : null),
    h('section', { class: 'card' }, list));
  const live = refresher(load);
  live.now();
  return {
    refresh: () => live.now(),
    onEvent(type) { if (type === 'campaign') live.poke(); },
    destroy() { live.cancel(); },
  };
}
