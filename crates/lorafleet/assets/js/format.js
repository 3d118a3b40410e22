// @ts-check
// Turning API values into text: times, durations, sizes, versions, numbers.

/** @param {number} n @param {number} [w] */
export const pad = (n, w = 2) => String(n).padStart(w, '0');

/** @param {string | null | undefined} t @returns {Date | null} */
export function parseTime(t) {
  if (!t) return null;
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

/**
 * Local time, compact and sortable: 2024-05-01 13:37:05
 * @param {string | null | undefined} t
 */
export function fmtDateTime(t) {
  const d = parseTime(t);
  if (!d) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** @param {Date} d  the browser's short name of its time zone at d ("CET", "UTC", "GMT+2") */
function zoneName(d) {
  try {
    const part = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' }).formatToParts(d).find((p) => p.type === 'timeZoneName');
    return part ? part.value : '';
  } catch { return ''; }
}

/**
 * Local time with its zone, for times people read: 2024-05-01 13:37:05 CEST
 * @param {string | null | undefined} t
 */
export function fmtZoned(t) {
  const d = parseTime(t);
  if (!d) return '—';
  const zone = zoneName(d);
  return zone ? `${fmtDateTime(t)} ${zone}` : fmtDateTime(t);
}

/**
 * UTC, RFC 3339 to the second (what the hover of a local time shows): 2024-05-01T11:37:05Z
 * @param {string | null | undefined} t
 */
export function fmtUtc(t) {
  const d = parseTime(t);
  return d ? d.toISOString().replace(/\.\d{3}Z$/, 'Z') : '—';
}

/**
 * "3 d 4 h", "4 h 12 min", "12 min 5 s", "45 s"
 * @param {number | null | undefined} totalSeconds
 */
export function fmtDuration(totalSeconds) {
  if (totalSeconds == null || !Number.isFinite(Number(totalSeconds))) return '—';
  let s = Math.max(0, Math.floor(Number(totalSeconds)));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d > 0) return hr > 0 ? `${d} d ${hr} h` : `${d} d`;
  if (hr > 0) return m > 0 ? `${hr} h ${m} min` : `${hr} h`;
  if (m > 0) return s > 0 ? `${m} min ${s} s` : `${m} min`;
  return `${s} s`;
}

/** @param {number | null | undefined} value */
export function fmtBytes(value) {
  if (value == null || !Number.isFinite(Number(value))) return '—';
  let n = Number(value);
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
}

/** @param {number} n */
export const hex32 = (n) => '0x' + (Number(n) >>> 0).toString(16).padStart(8, '0');

/**
 * Versions are {raw: u32, display: string}; tolerate plain values too.
 * @param {import('./types.js').Version} v
 */
export function versionText(v) {
  if (v == null) return '';
  if (typeof v === 'object') return v.display != null && v.display !== '' ? String(v.display) : (v.raw != null ? hex32(v.raw) : '');
  return String(v);
}

/** @param {import('./types.js').Version} v */
export function versionRaw(v) {
  return v && typeof v === 'object' && v.raw != null ? hex32(v.raw) : null;
}

/** @param {unknown} v */
export function compactJson(v) {
  if (v == null) return '';
  try { return JSON.stringify(v); } catch { return String(v); }
}

/**
 * Version & Status VersioningType (a nibble; the server may also send a name).
 * @param {unknown} t
 */
export function versioningName(t) {
  /** @type {Record<number, string>} */
  const names = { 0: 'no versioning scheme', 1: 'major.minor.patch', 2: 'GPS time' };
  if (typeof t === 'number') return names[t] || `versioning type ${t} (reserved)`;
  return `versioning ${typeof t === 'object' ? compactJson(t) : t}`;
}

/** @param {unknown} v */
export function fmtId(v) {
  if (v == null || v === '') return null;
  if (typeof v === 'number') return `${v} (0x${v.toString(16).toUpperCase()})`;
  return String(v);
}

/**
 * @param {unknown} v
 * @param {string} [unit]
 * @param {number} [digits]
 */
export function fmtNum(v, unit, digits) {
  if (v == null || v === '' || !Number.isFinite(Number(v))) return '—';
  const n = Number(v);
  const s = digits != null ? n.toFixed(digits) : String(n);
  return unit ? `${s} ${unit}` : s;
}

/** @param {string | null | undefined} hex */
export function spacedHex(hex) {
  if (!hex) return '';
  return String(hex).replace(/\s+/g, '').replace(/(..)(?=.)/g, '$1 ');
}

/** @param {number | null | undefined} ms */
export const fmtMs = (ms) => (ms == null ? '—' : ms < 1000 ? `${Number(ms).toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`);
/** @param {number | null | undefined} x */
export const fmtPct = (x) => (x == null ? '—' : `${(x * 100).toFixed(x < 0.1 ? 1 : 0)} %`);
/** @param {number | null | undefined} hz */
export const fmtMhz = (hz) => (hz == null ? '—' : `${(hz / 1e6).toFixed(3)} MHz`);

/**
 * A device count as the list gives it: `total`, or "more than" it when a broad search stopped
 * counting there (`total_is_lower_bound`).
 * @param {number} total @param {boolean | undefined} lowerBound
 */
export function countText(total, lowerBound) {
  return lowerBound ? `more than ${total.toLocaleString('en')}` : `${total}`;
}
