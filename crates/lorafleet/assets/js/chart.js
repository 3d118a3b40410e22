// @ts-check
// The device page's RSSI / SNR chart: inline SVG, two series on two y axes.
import { h, svg } from './dom.js';
import { fmtDateTime, pad, parseTime } from './format.js';

/**
 * Round axis ticks covering min..max.
 * @param {number} min
 * @param {number} max
 * @param {number} count
 */
export function niceTicks(min, max, count) {
  if (!(max > min)) { min -= 1; max += 1; }
  const raw = (max - min) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const n = raw / mag;
  const step = (n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10) * mag;
  const lo = Math.floor(min / step) * step;
  const hi = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = lo; v <= hi + step / 2; v += step) ticks.push(Number(v.toFixed(6)));
  return { lo, hi, ticks };
}

/** @typedef {{ t: Date, rssi: number | null | undefined, snr: number | null | undefined, fcnt: number | null | undefined }} Point */
/** @typedef {{ l: number, r: number, t: number, b: number }} Margin */

/** @param {unknown} v */
const isNum = (v) => v !== null && v !== undefined && Number.isFinite(Number(v));

/** @param {import('./types.js').Uplink[] | null} uplinks @returns {Point[]} */
function points(uplinks) {
  return (uplinks || [])
    .map((u) => ({ t: parseTime(u.received_at), rssi: u.rssi, snr: u.snr, fcnt: u.f_cnt }))
    .filter(/** @returns {p is Point} */ (p) => p.t !== null)
    .sort((a, b) => a.t.getTime() - b.t.getTime());
}

/**
 * The time axis: ticks and labels that do not repeat the same minute or second.
 * @param {SVGElement} g
 * @param {{ t0: number, span: number, iw: number, ih: number, m: Margin, tx: (t: number) => number }} a
 */
function timeAxis(g, { t0, span, iw, ih, m, tx }) {
  g.append(svg('line', { x1: m.l, x2: m.l + iw, y1: m.t + ih, y2: m.t + ih, class: 'axis-line' }));
  const multiDay = span > 20 * 3600 * 1000;
  /** @param {number} ms */
  const fmtT = (ms) => {
    const d = new Date(ms);
    const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    return multiDay ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hm}` : (span < 120000 ? `${hm}:${pad(d.getSeconds())}` : hm);
  };
  const nx = span === 0 ? 1 : Math.max(2, Math.min(6, Math.floor(iw / (multiDay ? 110 : 80))));
  let lastLabel = null;
  for (let i = 0; i < nx; i++) {
    const t = span === 0 ? t0 : t0 + (span * i) / (nx - 1);
    const x = tx(t);
    const label = fmtT(t);
    g.append(svg('line', { x1: x, x2: x, y1: m.t + ih, y2: m.t + ih + 4, class: 'axis-line' }));
    if (label === lastLabel) continue;
    lastLabel = label;
    g.append(svg('text', { x, y: m.t + ih + 17, 'text-anchor': span === 0 ? 'middle' : i === 0 ? 'start' : i === nx - 1 ? 'end' : 'middle', class: 'tick' }, label));
  }
}

/**
 * @param {HTMLElement} box
 * @param {import('./types.js').Uplink[] | null} uplinks
 */
function renderChart(box, uplinks) {
  const pts = points(uplinks);
  const rssiPts = pts.filter((p) => isNum(p.rssi));
  const snrPts = pts.filter((p) => isNum(p.snr));
  if (rssiPts.length === 0 && snrPts.length === 0) {
    box.replaceChildren(h('p', { class: 'muted' }, 'No signal data yet — the chart fills in as uplinks arrive.'));
    return;
  }
  const W = Math.max(280, box.clientWidth || 640);
  const H = W < 500 ? 220 : 260;
  const m = { l: 52, r: 52, t: 14, b: 34 };
  const iw = W - m.l - m.r;
  const ih = H - m.t - m.b;
  const t0 = pts[0].t.getTime();
  const t1 = pts[pts.length - 1].t.getTime();
  const span = t1 - t0;
  /** @param {number} t */
  const tx = (t) => m.l + (span === 0 ? iw / 2 : ((t - t0) / span) * iw);

  const rs = rssiPts.map((p) => Number(p.rssi));
  const ss = snrPts.map((p) => Number(p.snr));
  const ry = niceTicks(rs.length ? Math.min(...rs) : -120, rs.length ? Math.max(...rs) : -40, 4);
  const sy = niceTicks(ss.length ? Math.min(...ss) : -10, ss.length ? Math.max(...ss) : 10, 4);
  /** @param {number} v */
  const yR = (v) => m.t + ih - ((v - ry.lo) / (ry.hi - ry.lo)) * ih;
  /** @param {number} v */
  const yS = (v) => m.t + ih - ((v - sy.lo) / (sy.hi - sy.lo)) * ih;

  const g = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img', 'aria-label': `RSSI and SNR of the last ${pts.length} uplinks` });
  for (const v of ry.ticks) {
    const y = yR(v);
    g.append(svg('line', { x1: m.l, x2: m.l + iw, y1: y, y2: y, class: 'grid-line' }));
    g.append(svg('text', { x: m.l - 6, y: y + 4, 'text-anchor': 'end', class: 'tick tick-rssi' }, String(v)));
  }
  for (const v of sy.ticks) {
    g.append(svg('text', { x: m.l + iw + 6, y: yS(v) + 4, 'text-anchor': 'start', class: 'tick tick-snr' }, String(v)));
  }
  timeAxis(g, { t0, span, iw, ih, m, tx });
  g.append(svg('text', { x: 12, y: m.t + ih / 2, transform: `rotate(-90 12 ${m.t + ih / 2})`, 'text-anchor': 'middle', class: 'axis-title tick-rssi' }, 'RSSI (dBm)'));
  g.append(svg('text', { x: W - 10, y: m.t + ih / 2, transform: `rotate(90 ${W - 10} ${m.t + ih / 2})`, 'text-anchor': 'middle', class: 'axis-title tick-snr' }, 'SNR (dB)'));
  g.append(svg('text', { x: m.l + iw / 2, y: H - 2, 'text-anchor': 'middle', class: 'axis-title' }, 'Time'));

  /**
   * @param {Point[]} list
   * @param {(p: Point) => number} val
   * @param {(v: number) => number} y
   * @param {string} cls
   * @param {string} unit
   */
  const series = (list, val, y, cls, unit) => {
    if (list.length > 1) {
      g.append(svg('polyline', { points: list.map((p) => `${tx(p.t.getTime()).toFixed(1)},${y(val(p)).toFixed(1)}`).join(' '), class: `series ${cls}` }));
    }
    const r = list.length > 60 ? 2 : 3;
    for (const p of list) {
      g.append(svg('circle', { cx: tx(p.t.getTime()).toFixed(1), cy: y(val(p)).toFixed(1), r, class: `dot ${cls}` },
        svg('title', null, `${fmtDateTime(p.t.toISOString())}${p.fcnt != null ? ` · FCnt ${p.fcnt}` : ''} · ${val(p)} ${unit}`)));
    }
  };
  series(snrPts, (p) => Number(p.snr), yS, 'series-snr', 'dB');
  series(rssiPts, (p) => Number(p.rssi), yR, 'series-rssi', 'dBm');

  const legend = h('div', { class: 'legend' },
    h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-rssi' }), 'RSSI (dBm, left axis)'),
    h('span', { class: 'legend-item' }, h('span', { class: 'swatch swatch-snr' }), 'SNR (dB, right axis)'),
    h('span', { class: 'muted small' }, `${pts.length} uplink${pts.length === 1 ? '' : 's'}`));
  box.replaceChildren(legend, g);
}

/**
 * A chart that redraws itself when its box changes width.
 * @param {HTMLElement} box
 */
export function signalChart(box) {
  /** @type {import('./types.js').Uplink[] | null} */
  let data = null;
  let lastW = 0;
  const ro = typeof ResizeObserver === 'undefined' ? null : new ResizeObserver(() => {
    const w = box.clientWidth;
    if (w && Math.abs(w - lastW) > 4) { lastW = w; renderChart(box, data); }
  });
  if (ro) ro.observe(box);
  return {
    /** @param {import('./types.js').Uplink[]} uplinks */
    draw(uplinks) { data = uplinks; renderChart(box, uplinks); },
    destroy() { if (ro) ro.disconnect(); },
  };
}
