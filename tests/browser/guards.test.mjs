// Rollouts an operator steers (issue 10 item 6), in the console: the real lorafleet binary with
// a small simulated fleet at x30, headless Chromium in Europe/Berlin.
// - A draft of the sensor image for a sensor and a tracker lists the tracker as refused, with
//   the reason, and Start says so instead of starting.
// - A start_at a day ahead is shown in the browser's time zone (UTC on hover); Start makes the
//   campaign `scheduled`, and it can be cancelled while it waits.
// - A campaign whose device failed (one silent device: loss 1.0) offers "Retry failed devices",
//   which opens a new draft with that device.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/guards.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, waitFor as waitUntil } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SENSOR = '4c4653494d000001';
const SENSOR_2 = '4c4653494d000002';
const SILENT = '4c4653494d000003';
const TRACKER = '4c4653494d000004';
const ZONE = 'Europe/Berlin';
const ADMIN_PASSWORD = crypto.randomBytes(18).toString('base64url');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-guards-'));
const dataDir = path.join(tmp, 'data');
fs.mkdirSync(dataDir);
const configFile = path.join(tmp, 'lorafleet.toml');
// One sensor hears nothing, so a campaign to it fails.
fs.writeFileSync(configFile, `[network.simulated.overrides.${SILENT}]\nloss = 1.0\n`);

let server;
let browser;
let sensorImage;

async function api(method, p, body) {
  const r = await fetch(server.base + p, {
    method,
    headers: { Authorization: `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(5000),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

// This file's waits default to 15 s: a campaign on the simulated fleet takes a while to move.
const waitFor = (what, fn, timeoutMs = 15000) => waitUntil(what, fn, timeoutMs, 200);

async function withPage(name, fn) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: ZONE, locale: 'en-GB' });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);
  const step = { name: 'login' };
  try {
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').waitFor();
    await fn(page, step);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, `${name}-failure.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`[${name}] step "${step.name}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    process.exitCode = 1; // keeps the temp directory
    throw e;
  } finally {
    await context.close();
  }
}

const open = (page, id) => page.evaluate((h) => { location.hash = h; }, `#/campaigns/${id}`);

before(async () => {
  server = await startLorafleet({
    LORAFLEET_CONFIG: configFile,
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: '4',
    LORAFLEET__NETWORK__SIMULATED__TIME_SCALE: '30',
    LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S: '30',
  }, tmp);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  await waitFor('the simulated fleet to be listed', async () => (await api('GET', '/api/devices')).body?.total >= 4, 30000);
  sensorImage = await waitFor('the demo library', async () => (await api('GET', '/api/firmware')).body?.images?.find((i) => i.file_name === 'demo-sensor-1.3.0.bin'));
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopLorafleet(server);
  if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
});

test('a draft shows the devices its image must not go to, with the reason, and does not start', async () => {
  const draft = await api('POST', '/api/campaigns', { name: 'sensor image to a tracker', firmware_id: sensorImage.id, devices: [SENSOR, TRACKER], driver: 'engine' });
  assert.equal(draft.status, 201, JSON.stringify(draft.body));
  await withPage('refused', async (page, step) => {
    step.name = 'the refused tracker';
    await open(page, draft.body.id);
    const row = page.getByTestId('refused-device');
    await row.first().waitFor();
    assert.equal(await row.count(), 1, 'only the tracker is refused');
    assert.equal(await row.getAttribute('data-dev-eui'), TRACKER);
    assert.equal(await row.getAttribute('data-code'), 'incompatible');
    const reason = await row.getByTestId('refused-reason').textContent();
    assert.match(reason, /sim-sensor-class/, 'what the image is for');
    assert.match(reason, /tracker/i, 'what the device is');
    step.name = 'start is refused, naming the device';
    await page.getByTestId('campaign-start').click();
    const err = page.getByTestId('action-error');
    await err.waitFor();
    assert.match(await err.textContent(), new RegExp(TRACKER));
    assert.equal((await api('GET', `/api/campaigns/${draft.body.id}`)).body.state, 'draft');
  });
});

test('a scheduled start shows its time in the browser\'s zone and can be cancelled while it waits', async () => {
  const at = new Date(Date.now() + 24 * 3600 * 1000);
  at.setUTCMilliseconds(0);
  // Written in +01:00 (Berlin in December).
  const local = new Date(at.getTime() + 3600 * 1000).toISOString().replace(/\.000Z$/, '+01:00');
  const draft = await api('POST', '/api/campaigns', { name: 'tomorrow', firmware_id: sensorImage.id, devices: [SENSOR_2], driver: 'engine', start_at: local });
  assert.equal(draft.status, 201, JSON.stringify(draft.body));
  const berlin = new Intl.DateTimeFormat('sv-SE', { timeZone: ZONE, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(at);
  await withPage('scheduled', async (page, step) => {
    step.name = 'the draft shows start_at with its zone';
    await open(page, draft.body.id);
    const time = page.getByTestId('campaign-start-at-time');
    await time.waitFor();
    const shown = (await time.textContent()).trim();
    assert.ok(shown.startsWith(berlin), `${shown} starts with the Berlin time ${berlin}`);
    assert.match(shown, /(CET|GMT\+1)$/, `${shown} names its zone`);
    assert.equal(await time.getAttribute('title'), `${at.toISOString().replace(/\.000Z$/, 'Z')} (UTC)`);
    step.name = 'start: scheduled';
    await page.getByTestId('campaign-start').click();
    await page.getByTestId('campaign-state').filter({ hasText: 'scheduled' }).waitFor();
    await page.getByTestId('campaign-start-at').filter({ hasText: 'Scheduled to start' }).waitFor();
    step.name = 'cancel while scheduled';
    await page.getByTestId('campaign-cancel').click();
    await page.getByTestId('confirm-cancel-confirm').click();
    await page.getByTestId('campaign-state').filter({ hasText: 'cancelled' }).waitFor();
  });
});

test('"Retry failed devices" creates a draft of the devices that failed', async () => {
  const c = await api('POST', '/api/campaigns', {
    name: 'to the silent one', firmware_id: sensorImage.id, devices: [SILENT], driver: 'engine',
    unicast: { timeout_s: 30, attempts: 1 }, engine: { check: 'off', verify: false },
  });
  assert.equal(c.status, 201, JSON.stringify(c.body));
  const started = await api('POST', `/api/campaigns/${c.body.id}/start`);
  assert.equal(started.status, 202, JSON.stringify(started.body));
  await waitFor('the campaign to end with its device failed', async () => {
    const b = (await api('GET', `/api/campaigns/${c.body.id}`)).body;
    return ['completed', 'failed', 'cancelled'].includes(b.state) && b.counts.failed === 1;
  }, 120000);
  await withPage('retry', async (page, step) => {
    step.name = 'the retry button';
    await open(page, c.body.id);
    await page.getByTestId('campaign-duplicate').waitFor();
    await page.getByTestId('campaign-retry').click();
    step.name = 'the new draft';
    await page.waitForURL((u) => /#\/campaigns\/\d+$/.test(u.hash) && !u.hash.endsWith(`/${c.body.id}`));
    await page.getByTestId('campaign-title').filter({ hasText: 'Retry of to the silent one' }).waitFor();
    await page.getByTestId('campaign-state').filter({ hasText: 'draft' }).waitFor();
    const rows = page.getByTestId('campaign-device-row');
    assert.equal(await rows.count(), 1);
    assert.equal(await rows.first().getAttribute('data-dev-eui'), SILENT);
  });
});
