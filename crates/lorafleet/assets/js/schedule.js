// @ts-check
// When to run things: a debounce for what the user types, and the throttle live views reload
// through. A debounce must never drive a live view: under a steady stream of events (a fleet
// sends one every few milliseconds) its timer is pushed back forever and the view freezes.

/**
 * Calls `fn` once input has been quiet for `ms`.
 * @template {unknown[]} A
 * @param {(...args: A) => unknown} fn
 * @param {number} ms
 */
export function debounce(fn, ms) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let t;
  /** @param {A} args */
  const d = (...args) => {
    clearTimeout(t);
    t = setTimeout(() => { t = undefined; fn(...args); }, ms);
  };
  d.cancel = () => { clearTimeout(t); t = undefined; };
  return d;
}

/**
 * @typedef {object} Refresher
 * @property {() => void} poke       something changed: reload within `interval`
 * @property {() => Promise<void>} now  reload at once (and wait for it)
 * @property {() => number} lag      ms since the oldest change not yet shown (0: up to date)
 * @property {() => void} cancel
 */

/** Refreshers of the pages on screen, so the live badge can tell when a view lags. */
const active = new Set();

/** @returns {number} the largest lag of any view on screen, in ms */
export function viewLag() {
  let lag = 0;
  for (const r of active) lag = Math.max(lag, r.lag());
  return lag;
}

/**
 * Throttle with a trailing call for a view's `load`: the first change reloads at once, later
 * ones at most every interval, and the last change is always followed by a reload. Loads never
 * overlap; a change during a load is picked up by the next one. The interval is three times
 * the last load's duration within `min`..`max` ms: a small view follows short-lived states
 * closely, a large one does not keep the server busy, and none is more than `max` plus one
 * load behind.
 * @param {() => Promise<void>} load
 * @param {{ min?: number, max?: number }} [opts]
 * @returns {Refresher}
 */
export function refresher(load, { min = 200, max = 1000 } = {}) {
  let interval = min;
  let lastStart = -Infinity;
  let running = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  /** Oldest change the view does not show yet (performance.now()), or null. */
  let dirtySince = /** @type {number | null} */ (null);
  let cancelled = false;

  async function run() {
    timer = undefined;
    if (cancelled) return;
    running = true;
    lastStart = performance.now();
    const covers = dirtySince;
    dirtySince = null;
    try {
      await load();
      interval = Math.min(max, Math.max(min, 3 * (performance.now() - lastStart)));
    } catch (e) {
      // The load shows its own error; the change stays unseen, so try again.
      console.error(e);
      dirtySince = dirtySince ?? covers;
    } finally {
      running = false;
    }
    if (dirtySince != null) schedule();
  }

  function schedule() {
    if (running || timer !== undefined || cancelled) return;
    const wait = Math.max(0, lastStart + interval - performance.now());
    timer = setTimeout(run, wait);
  }

  /** @type {Refresher} */
  const r = {
    poke() {
      dirtySince = dirtySince ?? performance.now();
      schedule();
    },
    async now() {
      clearTimeout(timer);
      timer = undefined;
      dirtySince = dirtySince ?? performance.now();
      if (!running) await run();
    },
    lag: () => (dirtySince == null ? 0 : performance.now() - dirtySince),
    cancel() {
      cancelled = true;
      clearTimeout(timer);
      active.delete(r);
    },
  };
  active.add(r);
  return r;
}
