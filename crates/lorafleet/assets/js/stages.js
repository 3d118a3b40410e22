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

// Steps in progress run from light blue to violet in their order; the end states have fixed,
// distinct colours.
const STEP_COLORS = ['#cbd5e1', '#bae6fd', '#93c5fd', '#60a5fa', '#3b82f6', '#6366f1', '#a855f7', '#14b8a6', '#0ea5e9', '#f59e0b'];
/** @type {Record<string, string>} */
const FINAL_COLORS = { completed: '#16a34a', failed: '#dc2626', cancelled: '#94a3b8' };

/**
 * @param {StageInfo[]} stages
 * @param {string} id
 */
export function stageColor(stages, id) {
  if (FINAL_COLORS[id]) return FINAL_COLORS[id];
  const i = stages.findIndex((s) => s.id === id);
  return STEP_COLORS[Math.max(0, i) % STEP_COLORS.length];
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
