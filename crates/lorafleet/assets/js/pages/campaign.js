// @ts-check
// #/campaigns/:id: a campaign's progress, stages over time, plan, devices with the stages each
// went through, and the service's log; live.
import { can } from '../access.js';
import { api, bodyOf, isAbort, messageOf } from '../api.js';
import { absTime } from '../clock.js';
import { confirmDialog, toast } from '../dialogs.js';
import { h, card, errorBox, svg } from '../dom.js';
import { fmtDateTime, hex32 } from '../format.js';
import { refresher } from '../schedule.js';
import { loadStages, stageColor, stageLabel } from '../stages.js';
import { countsText, stateBadge } from './campaigns.js';
import { planView } from './plan.js';
import { refusedView, startAtView } from './guards.js';
import { STEP_TIMES, deviceFacts, progressPanel } from './campaign_progress.js';
import { pausedNote, resumeButton, wavesCard } from './campaign_waves.js';

/** @typedef {import('../types.js').StageInfo} StageInfo */
/** @typedef {import('../types.js').Campaign} Campaign */
/** @typedef {import('../types.js').CampaignDevice} CampaignDevice */
/** @typedef {{ stage: string, at: string, source: 'seen' | 'server' }} HistoryEntry */

/**
 * The stages each device went through: every stage this page saw it in, and the steps the
 * server stamped (a step shorter than the page's refresh is then still listed, marked so).
 */
function stageHistory() {
  /** @type {Map<string, HistoryEntry[]>} */
  const byDevice = new Map();
  return {
    /** @param {CampaignDevice[]} devices @param {StageInfo[]} stages */
    update(devices, stages) {
      const order = (/** @type {string} */ id) => (stages.find((s) => s.id === id) || { order: 99 }).order;
      for (const d of devices) {
        const list = byDevice.get(d.dev_eui) || [];
        if (!list.some((e) => e.stage === d.stage && e.source === 'seen')) {
          const i = list.findIndex((e) => e.stage === d.stage);
          if (i >= 0) list.splice(i, 1);
          list.push({ stage: d.stage, at: new Date().toISOString(), source: 'seen' });
        }
        for (const [stage, key] of STEP_TIMES) {
          const at = d[key];
          if (at && !list.some((e) => e.stage === stage)) list.push({ stage, at, source: 'server' });
        }
        list.sort((a, b) => order(a.stage) - order(b.stage));
        byDevice.set(d.dev_eui, list);
      }
    },
    /** @param {string} devEui @param {StageInfo[]} stages */
    render(devEui, stages) {
      return h('ol', { class: 'cp-history', testid: 'device-stage-history' }, (byDevice.get(devEui) || []).map((e) => {
        const sw = h('span', { class: 'cp-swatch' });
        sw.style.background = stageColor(stages, e.stage);
        return h('li', { 'data-stage': e.stage, 'data-source': e.source, title: `${e.source === 'seen' ? 'seen here' : 'reported by the server'} ${fmtDateTime(e.at)}` },
          sw, stageLabel(stages, e.stage));
      }));
    },
  };
}

/**
 * @param {Record<string, number>} counts
 * @param {number} total
 * @param {StageInfo[]} stages
 */
function progressBar(counts, total, stages) {
  const bar = h('div', { class: 'cp-bar', role: 'img', testid: 'progress-bar', 'aria-label': countsText(counts, total) });
  for (const s of stages) {
    const n = counts[s.id] || 0;
    if (!n || !total) continue;
    const seg = h('span', { class: 'cp-seg', title: `${s.label}: ${n}` });
    seg.style.width = `${(100 * n) / total}%`;
    seg.style.background = stageColor(stages, s.id);
    bar.append(seg);
  }
  return bar;
}

/**
 * Devices per stage over time, as stacked steps.
 * @param {{ at: string, counts: Record<string, number> }[]} progress
 * @param {number | null} endTime
 * @param {StageInfo[]} stages
 */
function stageChart(progress, endTime, stages) {
  const pts = progress.map((p) => ({ t: new Date(p.at).getTime(), c: p.counts })).filter((p) => Number.isFinite(p.t));
  if (pts.length === 0) return h('p', { class: 'muted' }, 'No progress yet.');
  const t0 = pts[0].t;
  const t1 = Math.max(endTime || Date.now(), pts[pts.length - 1].t, t0 + 1000);
  const total = Math.max(1, ...pts.map((p) => Object.values(p.c).reduce((a, b) => a + b, 0)));
  const W = 640, H = 200, m = { l: 34, r: 10, t: 10, b: 24 };
  /** @param {number} t */
  const x = (t) => m.l + ((t - t0) / (t1 - t0)) * (W - m.l - m.r);
  /** @param {number} v */
  const y = (v) => m.t + (1 - v / total) * (H - m.t - m.b);
  const g = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg cp-chart-wide', role: 'img', 'aria-label': 'Devices per stage over time', testid: 'stage-chart' });
  for (const v of [0, total]) {
    g.append(svg('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), class: 'grid-line' }));
    g.append(svg('text', { x: m.l - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, String(v)));
  }
  // Stack from the final stages up, so completed devices sit at the bottom.
  const order = [...stages].reverse();
  for (let i = 0; i < pts.length; i++) {
    const a = pts[i].t;
    const b = i + 1 < pts.length ? pts[i + 1].t : t1;
    let base = 0;
    for (const s of order) {
      const n = pts[i].c[s.id] || 0;
      if (!n) continue;
      g.append(svg('rect', { x: x(a), width: Math.max(1, x(b) - x(a)), y: y(base + n), height: y(base) - y(base + n), fill: stageColor(stages, s.id) },
        svg('title', null, `${s.label}: ${n}`)));
      base += n;
    }
  }
  g.append(svg('text', { x: m.l, y: H - 6, class: 'tick' }, fmtDateTime(new Date(t0).toISOString())));
  g.append(svg('text', { x: W - m.r, y: H - 6, 'text-anchor': 'end', class: 'tick' }, fmtDateTime(new Date(t1).toISOString())));
  const legend = h('div', { class: 'cp-legend' }, stages.filter((s) => pts.some((p) => p.c[s.id])).map((s) => {
    const sw = h('span', { class: 'cp-swatch' });
    sw.style.background = stageColor(stages, s.id);
    return h('span', { class: 'small' }, sw, s.label);
  }));
  return h('div', null, g, legend);
}

/** @param {Campaign['log']} entries */
function campaignLog(entries) {
  if (entries.length === 0) return h('p', { class: 'muted' }, 'Nothing logged yet.');
  return h('ol', { class: 'events', testid: 'campaign-log', tabindex: '0', 'aria-label': 'Campaign log' }, [...entries].reverse().map((l) =>
    h('li', { class: 'event', 'data-kind': l.level === 'error' ? 'error' : l.level === 'warning' ? 'removed' : l.source === 'service' ? 'status' : 'request', testid: 'campaign-log-row' },
      h('span', { class: 'event-time' }, absTime(l.at)),
      h('span', { class: 'event-kind' }, l.source === 'service' ? 'service' : l.level),
      h('span', { class: 'event-msg' }, l.dev_eui ? [h('span', { class: 'mono' }, l.dev_eui), ' '] : null, l.message))));
}

/**
 * The buttons a campaign in its state offers.
 * @param {Campaign} c
 * @param {import('../types.js').PageCtx} ctx
 * @param {(method: string, path: string, what: string) => void} act
 * @param {(e: unknown) => void} showError
 */
function actionButtons(c, ctx, act, showError) {
  const id = c.id;
  /** @type {HTMLElement[]} */
  const actions = [];
  if (!can('operate')) return actions;
  if (c.state === 'draft') {
    actions.push(h('button', { type: 'button', class: 'btn btn-primary', testid: 'campaign-start', onclick: () => act('POST', `/api/campaigns/${id}/start`, 'Campaign started') }, 'Start'));
    actions.push(h('a', { class: 'btn', href: `#/campaigns/${id}/edit`, testid: 'campaign-edit' }, 'Edit'));
  }
  const resume = resumeButton(c, act);
  if (resume) actions.push(resume);
  if (c.state === 'draft' || c.state === 'scheduled' || c.state === 'running' || c.state === 'paused') {
    const message = c.driver === 'fuota-server-v3' ? 'The v3 FUOTA server cannot cancel a deployment: it runs on there, lorafleet stops following it.' : 'The deployment is deleted on the FUOTA service.';
    actions.push(h('button', {
      type: 'button', class: 'btn btn-danger-outline', testid: 'campaign-cancel',
      onclick: async () => {
        if (await confirmDialog({ title: 'Cancel this campaign?', message, danger: true, confirmLabel: 'Cancel campaign', testid: 'confirm-cancel' })) act('POST', `/api/campaigns/${id}/cancel`, 'Campaign cancelled');
      },
    }, 'Cancel campaign'));
  }
  /** @param {string} what @param {string} testid @param {string} label */
  const copyButton = (what, testid, label) => h('button', {
    type: 'button', class: 'btn', testid,
    onclick: async () => {
      try {
        const made = await api('POST', `/api/campaigns/${id}/${what}`);
        toast(`Draft #${made.id} created`, 'ok');
        ctx.navigate(`/campaigns/${made.id}`);
      } catch (e) { showError(e); }
    },
  }, label);
  const over = c.state === 'completed' || c.state === 'failed' || c.state === 'cancelled';
  if (over && (c.counts.failed || 0) > 0) actions.push(copyButton('retry', 'campaign-retry', 'Retry failed devices'));
  actions.push(copyButton('duplicate', 'campaign-duplicate', 'Duplicate as draft'));
  if (c.state !== 'running' && c.state !== 'scheduled' && c.state !== 'paused') {
    actions.push(h('button', {
      type: 'button', class: 'btn btn-danger-outline', testid: 'campaign-delete',
      onclick: async () => {
        if (!await confirmDialog({ title: 'Delete this campaign?', message: 'Its log and history are deleted too.', danger: true, confirmLabel: 'Delete', testid: 'confirm-delete' })) return;
        try { await api('DELETE', `/api/campaigns/${id}`); ctx.navigate('/campaigns'); } catch (e) { showError(e); }
      },
    }, 'Delete'));
  }
  return actions;
}

/** @param {Campaign} c */
function campaignHead(c) {
  return h('div', null,
    h('div', { class: 'crumbs' }, h('a', { href: '#/campaigns' }, 'Campaigns')),
    h('h1', { testid: 'campaign-title' }, c.name, ' ', stateBadge(c.state, c.state_label)),
    h('div', { class: 'muted small' }, `#${c.id} · ${c.driver} · `,
      c.firmware ? h('a', { href: '#/firmware' }, c.firmware.file_name) : `image #${c.firmware_id}`,
      ' · created ', absTime(c.created_at), c.started_at ? [' · started ', absTime(c.started_at)] : '', c.completed_at ? [' · ended ', absTime(c.completed_at)] : ''));
}

/** @param {Campaign} c */
function campaignNotes(c) {
  const notes = [];
  const paused = pausedNote(c);
  if (paused) notes.push(paused);
  const when = startAtView(c.start_at, c.state);
  if (when) notes.push(when);
  const refused = c.state === 'draft' ? refusedView(c.refused) : null;
  if (refused) notes.push(refused);
  if (c.error) notes.push(h('div', { class: 'alert alert-error', testid: 'campaign-error' }, h('span', null, c.error)));
  if (c.last_poll_error && c.state === 'running') notes.push(h('div', { class: 'alert alert-warn', testid: 'campaign-poll-error' }, h('span', null, `The FUOTA service does not answer: ${c.last_poll_error} — lorafleet keeps trying.`)));
  return notes;
}

/** @param {Campaign} c @param {StageInfo[]} stages */
function progressCard(c, stages) {
  const total = c.devices.length;
  const counts = h('div', { class: 'cp-counts' }, stages.filter((s) => c.counts[s.id]).map((s) =>
    h('span', { class: 'cp-count', testid: `stage-count-${s.id}` }, h('strong', null, String(c.counts[s.id])), ' ', s.label)));
  const done = stages.filter((s) => s.final).reduce((n, s) => n + (c.counts[s.id] || 0), 0);
  return card('Progress',
    progressBar(c.counts, total, stages),
    h('p', { class: 'small muted', testid: 'progress-text' }, `${done} of ${total} devices finished · ${countsText(c.counts, total)}`),
    counts);
}

/**
 * "1.2.0 (3 devices), not reported (1) -> 1.3.0": versions as the campaign's devices write them.
 * @param {any} v  GET /api/campaigns/{id}/versions
 */
function versionsLine(v) {
  const from = v.from.map((/** @type {any} */ f) => `${f.version ? f.version.display : 'not reported'} (${f.devices} device${f.devices === 1 ? '' : 's'})`).join(', ');
  const to = v.to ? v.to.version.display : v.to_version || 'unknown';
  return h('p', { class: 'small' }, h('span', { class: 'muted' }, 'Version: '),
    h('span', { testid: 'campaign-from' }, from || '—'), ' → ',
    h('strong', { testid: 'campaign-to', title: v.to ? `raw ${hex32(v.to.version.raw)}, ${v.to.versioning}` : null }, to));
}

/** @type {import('../types.js').Page} */
export function campaignPage(view, ctx) {
  const id = ctx.params.id;
  const head = h('div', { class: 'page-head' });
  const versions = h('div', { testid: 'campaign-versions' });
  const alerts = h('div');
  const body = h('div', { class: 'loading muted' }, 'Loading…');
  view.append(head, versions, alerts, body);
  /** @type {string | null} the state the versions line was read in; read again when it changes */
  let versionsState = null;
  /** @param {string} state */
  async function loadVersions(state) {
    if (versionsState === state) return;
    versionsState = state;
    try { versions.replaceChildren(versionsLine(await api('GET', `/api/campaigns/${encodeURIComponent(id)}/versions`, undefined, { signal: ctx.signal }))); } catch { versionsState = null; }
  }
  const history = stageHistory();
  const facts = deviceFacts();
  let loaded = false;

  /** @param {unknown} e */
  function showError(e) {
    const fields = bodyOf(e) && bodyOf(e).fields;
    alerts.replaceChildren(h('div', { class: 'alert alert-error', role: 'alert', testid: 'action-error' },
      h('div', null, h('strong', null, messageOf(e)),
        fields && fields.length > 1 ? h('ul', null, fields.map((/** @type {any} */ x) => h('li', null, h('code', null, x.field), ' ', x.error))) : null)));
  }

  /** @param {string} method @param {string} path @param {string} what */
  async function act(method, path, what) {
    alerts.replaceChildren();
    try {
      await api(method, path);
      toast(what, 'ok');
      live.now();
    } catch (e) { showError(e); }
  }

  /** @param {Campaign} c @param {StageInfo[]} stages */
  function render(c, stages) {
    ctx.setTitle(c.name);
    history.update(c.devices, stages);
    head.replaceChildren(campaignHead(c), h('div', { class: 'toolbar' }, actionButtons(c, ctx, act, showError)));
    if (!alerts.querySelector('[data-testid="action-error"]')) alerts.replaceChildren(...campaignNotes(c));
    body.className = '';
    facts.update(c, stages, (devEui) => history.render(devEui, stages));
    body.replaceChildren(
      progressCard(c, stages),
      card('Session and timing', progressPanel(c)),
      wavesCard(c, stages) || '',
      card('Devices per stage over time', stageChart(c.progress || [], c.completed_at ? new Date(c.completed_at).getTime() : null, stages)),
      card('Plan', planView(c.plan, c.settings)),
      card(`Devices (${c.devices.length})`, facts.el),
      card('Log', campaignLog(c.log)));
  }

  async function load() {
    try {
      const [stages, c] = await Promise.all([
        loadStages(),
        api('GET', `/api/campaigns/${encodeURIComponent(id)}`, undefined, { signal: ctx.signal }),
      ]);
      if (ctx.signal.aborted) return;
      render(c, stages);
      loadVersions(c.state);
      loaded = true;
    } catch (e) {
      if (!isAbort(e)) body.replaceChildren(errorBox(messageOf(e), () => live.now()));
    }
  }
  const live = refresher(load);
  live.now();
  return {
    refresh: () => live.now(),
    onEvent(type, data) {
      if (type === 'campaign' && (!loaded || (data && String(data.id) === String(id)))) live.poke();
    },
    destroy() { live.cancel(); },
  };
}
