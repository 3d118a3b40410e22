// Waves (issue 10 item 6) in the console: the real lorafleet binary on the simulated network
// and headless Chromium. The campaign form sets the waves and thresholds; the campaign page
// shows the wave table, pauses when the first wave (a device that never answers) fails, offers
// Resume to an operator only, and Resume runs the next wave to the end.
//
//   cargo build -p lorafleet --bin lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/waves.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN_PASSWORD = crypto.randomBytes(18).toString('base64url');
const VIEWER_PASSWORD = crypto.randomBytes(18).toString('base64url');
const SILENT = '4c4653494d000001';
const SENSORS = [SILENT, '4c4653494d000002', '4c4653494d000003', '4c4653494d000005'];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-waves-'));
const configFile = path.join(tmp, 'lorafleet.toml');
// Every frame to and from the silent device is lost: the first wave fails deterministically.
fs.writeFileSync(configFile, `[network.simulated.overrides."${SILENT}"]\nloss = 1.0\n`);

let server;
let browser;
const basic = (user, pw) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;

/** @returns {Promise<any>} */
async function call(method, p, body) {
  const r = await fetch(server.base + p, {
    method,
    headers: { Authorization: basic('admin', ADMIN_PASSWORD), ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${p} answered ${r.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

before(async () => {
  server = await startLorafleet({
    LORAFLEET_CONFIG: configFile,
    LORAFLEET__SERVER__DATA_DIR: path.join(tmp, 'data'),
    LORAFLEET__FIRMWARE__DIR: path.join(tmp, 'bin'),
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: '6',
    LORAFLEET__NETWORK__SIMULATED__TIME_SCALE: '200',
  }, tmp);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopLorafleet(server);
  if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
});

/** A logged-in page of its own. */
async function login(user, password) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  await page.goto(server.base + '/');
  await page.getByTestId('login-username').fill(user);
  await page.getByTestId('login-password').fill(password);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('current-user').filter({ hasText: user }).waitFor();
  return { context, page };
}

test('waves: the form sets them, the page shows the table, pauses and resumes', { timeout: 180000 }, async () => {
  const { context, page } = await login('admin', ADMIN_PASSWORD);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  let step = 'start';
  try {
    step = 'open the campaign form with the demo image';
    const { images } = await call('GET', '/api/firmware');
    const demo = images.find((i) => i.file_name === 'demo-sensor-1.3.0.bin');
    assert.ok(demo, 'the demo image is in the library');
    await page.goto(`${server.base}/#/campaigns/new?firmware=${demo.id}`);
    for (const eui of SENSORS) await page.locator(`[data-dev-eui="${eui}"] input`).check();
    await page.getByTestId('input-cf-name').fill('sensors in waves');
    assert.equal(await page.getByTestId('input-cf-driver').inputValue(), 'engine');
    await page.getByTestId('input-cf-uc-timeout').fill('60');
    await page.getByTestId('input-cf-attempts').fill('2');

    step = 'a wrong wave list is refused next to its field';
    await page.getByTestId('input-cf-waves').fill('50, 25, 100');
    await page.getByTestId('error-rollout.waves').filter({ hasText: 'cumulative' }).waitFor();

    step = 'the waves and thresholds are set';
    await page.getByTestId('input-cf-waves').fill('25, 100');
    await page.getByTestId('input-cf-success-threshold').fill('0.9');
    await page.getByTestId('input-cf-error-threshold').fill('0.2');
    await page.getByTestId('plan-data-fragments').waitFor();
    assert.equal(await page.getByTestId('error-rollout.waves').textContent(), '');
    await page.getByTestId('campaign-save').click();
    await page.waitForURL(/#\/campaigns\/\d+$/);
    const id = page.url().match(/#\/campaigns\/(\d+)$/)[1];
    const stored = await call('GET', `/api/campaigns/${id}`);
    assert.deepEqual(stored.rollout, { waves: [25, 100], success_threshold: 0.9, error_threshold: 0.2, pause_between_s: 0 });

    step = 'the draft shows its waves';
    await page.getByTestId('campaign-waves').waitFor();
    assert.equal(await page.getByTestId('wave-row').count(), 2);
    assert.match(await page.getByTestId('wave-thresholds').textContent(), /90 %.*20 %/);

    step = 'start: the first wave (the silent device) fails and the campaign pauses';
    await page.getByTestId('campaign-start').click();
    await page.locator('[data-testid="wave-row"][data-wave="1"][data-state="failed"]').waitFor({ timeout: 60000 });
    await page.getByTestId('campaign-paused').filter({ hasText: 'wave 1: 1 of 1 devices failed (100 % > 20 %)' }).waitFor();
    await page.getByTestId('campaign-title').filter({ hasText: 'paused' }).waitFor();
    assert.equal(await page.locator('[data-testid="wave-row"][data-wave="2"]').getAttribute('data-state'), 'pending');
    assert.match(await page.locator('[data-testid="wave-row"][data-wave="2"] [data-testid="wave-devices"]').textContent(), /^3$/);
    // From the start on, each wave shows the multicast session its devices share.
    assert.equal(await page.locator('[data-testid="wave-row"][data-wave="2"] [data-testid="wave-session"]').textContent(), 'TS004 v1, FPort 201');

    step = 'a viewer sees the pause but no Resume';
    await call('POST', '/api/users', { username: 'watcher', password: VIEWER_PASSWORD, role: 'viewer' });
    const viewer = await login('watcher', VIEWER_PASSWORD);
    await viewer.page.goto(`${server.base}/#/campaigns/${id}`);
    await viewer.page.getByTestId('campaign-paused').waitFor();
    assert.equal(await viewer.page.getByTestId('campaign-resume').count(), 0, 'no Resume for a viewer');
    await viewer.context.close();

    step = 'Resume runs the second wave to the end';
    await page.getByTestId('campaign-resume').click();
    await page.locator('[data-testid="wave-row"][data-wave="2"][data-state="running"], [data-testid="wave-row"][data-wave="2"][data-state="succeeded"]').first().waitFor();
    await page.locator('[data-testid="wave-row"][data-wave="2"][data-state="succeeded"]').waitFor({ timeout: 90000 });
    await page.getByTestId('campaign-title').filter({ hasText: 'completed with failures' }).waitFor();
    assert.equal(await page.getByTestId('campaign-resume').count(), 0);
    assert.equal(await page.getByTestId('campaign-paused').count(), 0);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, 'waves-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`step "${step}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    process.exitCode = 1;
    throw e;
  } finally {
    await context.close();
  }
});
