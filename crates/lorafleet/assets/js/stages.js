// @ts-check
// The campaign stages, as the server lists them (GET /api/campaigns/stages): the Rust enum is
// the one list; the console only adds colours.
import { api } from './api.js';
import { badge } from './dom.js';

/** @typedef {import('./types.js').StageInfo} StageInfo */

/** @type {Promise<StageInfo[]> | null} */
let loading = null;

/**
 * The stages in order; fetched once per page load (a failed fetch is tried again next time).
 * @returns {Promise<StageInfo[]>}
 */
export function loadStages() {
  if (!loading) {
    loading = api('GET', '/api/campaigns/stages').then((list) => {
      /** @type {StageInfo[]} */
      const stages = Array.isArray(list) ? list : [];
      return [...stages].sort((a, b) => a.order - b.order);
    });
    loading.catch(() => { loading = null; });
  }
  return loading;
}

/**
 * One colour per stage, each of its own hue so that neighbouring stages in the bar and the
 * chart tell apart (verifying teal, failed red, completed green, cancelled slate); the one
 * table every stage colour on the page comes from.
 * @type {Readonly<Record<string, string>>}
 */
export const STAGE_COLORS = Object.freeze({
  pending: '#cbd5e1',
  check: '#0ea5e9',
  mc_group_setup: '#6366f1',
  frag_session_setup: '#a855f7',
  mc_session_setup: '#ec4899',
  fragments: '#f59e0b',
  frag_status: '#84cc16',
  verify: '#0d9488',
  completed: '#15803d',
  failed: '#dc2626',
  cancelled: '#475569',
});
// A stage the server adds before the console knows it still gets a colour of its own.
const SPARE_COLORS = ['#b45309', '#be185d', '#1d4ed8', '#4d7c0f'];

/**
 * @param {StageInfo[]} stages
 * @param {string} id
 */
export function stageColor(stages, id) {
  if (STAGE_COLORS[id]) return STAGE_COLORS[id];
  const i = stages.findIndex((s) => s.id === id);
  return SPARE_COLORS[Math.max(0, i) % SPARE_COLORS.length];
}

/**
 * @param {StageInfo[]} stages
 * @param {string} id
 */
export function stageLabel(stages, id) {
  const s = stages.find((x) => x.id === id);
  return s ? s.label : id;
}

/**
 * @param {StageInfo[]} stages
 * @param {string} id
 */
export function stageBadge(stages, id) {
  const kind = id === 'completed' ? 'ok' : id === 'failed' ? 'err' : id === 'pending' || id === 'cancelled' ? 'muted' : 'pending';
  return badge(stageLabel(stages, id), kind);
}
