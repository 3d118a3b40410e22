// The browser tests' one launcher of the real lorafleet binary: started bound to port 0 with
// the caller's settings, the address read from the "listening on" line it prints, stopped with
// SIGTERM (SIGKILL if it does not exit), and never left behind when the runner exits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.LORAFLEET_BIN || path.join(REPO, 'target', 'debug', 'lorafleet');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns something truthy (and returns that), failing after `timeoutMs`. */
export async function waitFor(what, fn, timeoutMs = 10000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

const running = new Set();
process.on('exit', () => { for (const s of running) if (!s.exited) s.child.kill('SIGKILL'); });

/**
 * Starts lorafleet with `env` (LORAFLEET__* settings) in `cwd` and waits until GET /health
 * answers 200. Returns `{ child, base, log(), exited }`.
 */
export async function startLorafleet(env, cwd) {
  assert.ok(fs.existsSync(BIN), `lorafleet binary not found at ${BIN}; build it with \`cargo build -p lorafleet\` or set LORAFLEET_BIN`);
  const args = (process.env.LORAFLEET_ARGS || '').split(/\s+/).filter(Boolean);
  const child = spawn(BIN, args, {
    env: { ...process.env, ...env, LORAFLEET__SERVER__BIND: '127.0.0.1:0' },
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => { log += d; });
  child.stderr.on('data', (d) => { log += d; });
  const s = { child, base: null, log: () => log, exited: null };
  running.add(s);
  child.on('exit', (code, signal) => { s.exited = { code, signal }; });
  child.on('error', (e) => { s.exited = { error: e.message }; });
  const deadline = Date.now() + 30000;
  for (;;) {
    if (s.exited) throw new Error(`lorafleet exited during start-up (${JSON.stringify(s.exited)}):\n${log}`);
    // Bound to port 0, lorafleet says on stdout which port it got.
    s.base ??= log.match(/^listening on (http:\/\/\S+)$/m)?.[1] ?? null;
    if (s.base) {
      try {
        const r = await fetch(`${s.base}/health`, { signal: AbortSignal.timeout(2000) });
        if (r.status === 200) return s;
      } catch { /* not serving yet */ }
    }
    if (Date.now() > deadline) throw new Error(`lorafleet did not answer GET /health with 200 within 30 s:\n${log}`);
    await sleep(200);
  }
}

/** SIGTERM, then SIGKILL after 5 s. */
export async function stopLorafleet(s) {
  if (!s || s.exited) return;
  s.child.kill('SIGTERM');
  for (let i = 0; i < 50 && !s.exited; i++) await sleep(100);
  if (!s.exited) s.child.kill('SIGKILL');
  running.delete(s);
}
