// Accessibility, users and roles, and one clock (issue 10 items 2, 9, 10, 12): the real
// lorafleet binary with a small simulated fleet at x30, headless Chromium.
// - axe-core (tests/browser's npm dependency) on every page at 1280 and 390 px fails on any
//   serious or critical violation; no page scrolls sideways at 390 px.
// - An admin adds a viewer, creates a read token (shown once, working, unable to change
//   anything), rotates the integration token (the new one accepted by the integration
//   endpoint), changes a password and disables a user, all with styled dialogs; a viewer sees
//   no button it cannot use.
// - On the device page every time is on the network's clock: a request is sent at the
//   network's "now" and answered after it, uplinks and events are in order.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, waitFor as waitUntil } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const AXE = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
const SENSOR = '4c4653494d000001';
const TIME_SCALE = 30;

const secret = () => crypto.randomBytes(18).toString('base64url');
const ADMIN_PASSWORD = secret();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-access-'));
const dataDir = path.join(tmp, 'data');
fs.mkdirSync(dataDir);

let server;
let browser;

const basic = (user, pw) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;
const admin = () => basic('admin', ADMIN_PASSWORD);

async function api(method, p, body, authorization = admin()) {
  const r = await fetch(server.base + p, {
    method,
    headers: { Authorization: authorization, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(5000),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

const waitFor = (what, fn, timeoutMs = 15000) => waitUntil(what, fn, timeoutMs);

async function withPage(name, { user = 'admin', password = ADMIN_PASSWORD, width = 1280 } = {}, fn) {
  // axe is injected as a script; the console's CSP (script-src 'self') would refuse it.
  const context = await browser.newContext({ viewport: { width, height: 900 }, bypassCSP: true });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => { pageErrors.push(`unexpected native dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.setDefaultTimeout(15000);
  const step = { name: 'login' };
  try {
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').waitFor();
    if (user) {
      await page.getByTestId('login-username').fill(user);
      await page.getByTestId('login-password').fill(password);
      await page.getByTestId('login-submit').click();
      await page.getByTestId('current-user').filter({ hasText: user }).waitFor();
    }
    await fn(page, step);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, `${name}-failure.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`[${name}] step "${step.name}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    if (pageErrors.length) console.error('page errors:', pageErrors);
    process.exitCode = 1; // keeps the temp directory
    throw e;
  } finally {
    await context.close();
  }
}

/** Runs axe-core on the page; returns the serious and critical violations, described. */
async function axeProblems(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ path: AXE });
  const result = await page.evaluate(async () => {
    // @ts-ignore injected above
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/** Whether the document is wider than the viewport (a page that scrolls sideways). */
const scrollsSideways = (page) => page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);

before(async () => {
  server = await startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: '6',
    LORAFLEET__NETWORK__SIMULATED__TIME_SCALE: String(TIME_SCALE),
    LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S: '30',
  }, tmp);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  await waitFor('the simulated fleet to be listed', async () => (await api('GET', '/api/devices')).body?.total >= 6, 30000);
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopLorafleet(server);
  if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
});

test('every page passes axe-core (no serious or critical violation) at 1280 and 390 px', async () => {
  const images = (await api('GET', '/api/firmware')).body.images;
  const sensorImage = images.find((i) => i.file_name === 'demo-sensor-1.3.0.bin');
  assert.ok(sensorImage, 'the demo library');
  const draft = await api('POST', '/api/campaigns', { name: 'axe', firmware_id: sensorImage.id, devices: [SENSOR], driver: 'engine' });
  assert.equal(draft.status, 201, JSON.stringify(draft.body));
  const pages = [
    ['devices', '#/devices', 'device-row'],
    ['device', `#/devices/${SENSOR}`, 'device-title'],
    ['firmware', '#/firmware', 'firmware-row'],
    ['campaigns', '#/campaigns', 'campaign-table'],
    ['campaign form', '#/campaigns/new', 'campaign-save'],
    ['campaign', `#/campaigns/${draft.body.id}`, 'campaign-title'],
    ['settings', '#/settings', 'user-row'],
    ['not found', '#/nowhere', null],
  ];
  for (const width of [1280, 390]) {
    await withPage(`axe-${width}`, { user: null, width }, async (page, step) => {
      step.name = `login page at ${width} px`;
      assert.deepEqual(await axeProblems(page), [], 'login page');
      assert.equal(await page.locator('h1').count(), 1, 'the login page has its h1');
      await page.getByTestId('login-username').fill('admin');
      await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
      await page.getByTestId('login-submit').click();
      await page.getByTestId('current-user').waitFor();
      for (const [name, hash, testid] of pages) {
        step.name = `${name} at ${width} px`;
        await page.evaluate((hh) => { location.hash = hh; }, hash);
        if (testid) await page.getByTestId(testid).first().waitFor();
        else await page.getByText('Page not found').waitFor();
        // The new page's heading has the focus (screen readers announce it).
        await waitFor(`focus on the heading of ${name}`, () => page.evaluate(() => document.activeElement?.tagName === 'H1'), 3000);
        assert.deepEqual(await axeProblems(page), [], `${name} at ${width} px`);
        if (width === 390) assert.equal(await scrollsSideways(page), false, `${name} scrolls sideways at 390 px`);
      }
      step.name = 'skip link';
      await page.keyboard.press('Tab'); // from the focused heading, out of the page; reset:
      await page.evaluate(() => /** @type {HTMLElement} */ (document.activeElement)?.blur());
      await page.getByTestId('skip-link').focus();
      await page.keyboard.press('Enter');
      assert.equal(await page.evaluate(() => document.activeElement?.tagName), 'H1');
      assert.equal(await page.locator('#app[aria-live]').count(), 0, 'the whole app is not a live region');
    });
  }
});

test('versions read as the devices write them: the library and the campaign page', async () => {
  // The sensors report major.minor.patch (1.2.0); the demo sensor image must read 1.3.0 too.
  for (const command of ['package_version', 'version_running']) {
    const r = await api('POST', `/api/devices/${SENSOR}/status-requests`, { command });
    assert.ok(r.status < 300, JSON.stringify(r.body));
  }
  await waitFor('a sensor to report its versioning type', async () => {
    const d = (await api('GET', `/api/devices/${SENSOR}`)).body;
    return d.status && d.status.running && /^\d+\.\d+\.\d+$/.test(d.status.running.version.display);
  }, 30000);
  const image = (await api('GET', '/api/firmware')).body.images.find((i) => i.file_name === 'demo-sensor-1.3.0.bin');
  const draft = await api('POST', '/api/campaigns', { name: 'versions', firmware_id: image.id, devices: [SENSOR], driver: 'engine' });
  await withPage('versions', {}, async (page, step) => {
    step.name = 'firmware library';
    await page.getByTestId('nav-firmware').click();
    const row = page.getByTestId('firmware-row').filter({ hasText: 'demo-sensor-1.3.0.bin' });
    await row.getByTestId('fw-version').filter({ hasText: /^1\.3\.0$/ }).waitFor();
    assert.match(await row.getByTestId('fw-version-raw').textContent(), /0x00010300/, 'the raw value stays visible');
    step.name = 'campaign page: from -> to';
    await page.evaluate((cid) => { location.hash = `#/campaigns/${cid}`; }, draft.body.id);
    await page.getByTestId('campaign-to').filter({ hasText: /^1\.3\.0$/ }).waitFor();
    assert.match(await page.getByTestId('campaign-from').textContent(), /^1\.2\.0 \(1 device\)$/);
  });
});

test('an admin manages users, tokens and the integration token; a viewer sees no button it cannot use', async () => {
  await withPage('users', {}, async (page, step) => {
    step.name = 'settings page';
    await page.getByTestId('nav-settings').click();
    await page.getByTestId('user-row').first().waitFor();
    assert.match(await page.getByTestId('my-role').textContent(), /role admin/);

    step.name = 'add a viewer and an operator';
    for (const [name, role] of [['vera', 'viewer'], ['otto', 'operator']]) {
      await page.getByTestId('user-name').fill(name);
      await page.getByTestId('user-password-new').fill(`${name}-password`);
      await page.getByTestId('user-role').selectOption(role);
      await page.getByTestId('user-create').click();
      await page.locator(`[data-testid="user-row"][data-username="${name}"]`).waitFor();
    }
    assert.equal((await api('GET', '/api/session', null, basic('vera', 'vera-password'))).body.scope, 'read');

    step.name = 'a too short password is refused in the dialog';
    const otto = page.locator('[data-testid="user-row"][data-username="otto"]');
    await otto.getByTestId('user-password').click();
    await page.getByTestId('new-password').fill('short');
    await page.getByTestId('password-dialog-confirm').click();
    assert.match(await page.getByTestId('password-dialog-error').textContent(), /8 characters/);
    await page.getByTestId('new-password').fill('otto-new-password');
    await page.getByTestId('password-dialog-confirm').click();
    await page.getByTestId('password-dialog').waitFor({ state: 'detached' });
    await waitFor('the new password', async () => (await api('GET', '/api/session', null, basic('otto', 'otto-new-password'))).status === 200);

    step.name = 'disable a user (styled confirmation)';
    await otto.getByTestId('user-disable').click();
    await page.getByTestId('confirm-disable-confirm').click();
    await otto.getByTestId('user-status').filter({ hasText: 'disabled' }).waitFor();
    assert.equal((await api('GET', '/api/session', null, basic('otto', 'otto-new-password'))).status, 403);

    step.name = 'a read token, shown once, with a copy button';
    await page.getByTestId('token-name').fill('grafana');
    await page.getByTestId('token-scope').selectOption('read');
    await page.getByTestId('token-create').click();
    const shown = page.getByTestId('token-shown-secret');
    await shown.waitFor();
    const token = (await shown.textContent()).trim();
    await page.getByTestId('token-shown-copy').click();
    await page.getByTestId('toast').first().waitFor();
    await page.getByTestId('token-row').filter({ hasText: 'grafana' }).getByTestId('token-scope').filter({ hasText: 'read' }).waitFor();
    assert.equal((await api('GET', '/api/devices', null, `Bearer ${token}`)).status, 200);
    const refused = await api('POST', `/api/devices/${SENSOR}/status-requests`, { command: 'version_running' }, `Bearer ${token}`);
    assert.equal(refused.status, 403);
    assert.equal(refused.body.field, 'scope');

    step.name = 'rotate the integration token';
    await page.getByTestId('integration-rotate').click();
    await page.getByTestId('confirm-rotate-confirm').click();
    const integration = (await page.getByTestId('integration-shown-secret').textContent()).trim();
    const r = await fetch(`${server.base}/api/integrations/chirpstack?event=up`, {
      method: 'POST', headers: { Authorization: `Bearer ${integration}`, 'Content-Type': 'application/json' }, body: '{}',
    });
    assert.notEqual(r.status, 401, 'the new integration token is accepted');
  });

  await withPage('viewer', { user: 'vera', password: 'vera-password' }, async (page, step) => {
    step.name = 'viewer: device page without requests or downlinks';
    await page.evaluate((eui) => { location.hash = `#/devices/${eui}`; }, SENSOR);
    await page.getByTestId('requests-need-operator').waitFor();
    assert.equal(await page.locator('[data-testid^="vs-button-"]').count(), 0);
    assert.equal(await page.getByTestId('downlink-submit').count(), 0);
    assert.equal(await page.getByTestId('remove-device').count(), 0);
    step.name = 'viewer: firmware and campaigns without changes';
    await page.getByTestId('nav-firmware').click();
    await page.getByTestId('firmware-row').first().waitFor();
    assert.equal(await page.getByTestId('firmware-delete').count(), 0);
    assert.equal(await page.getByTestId('firmware-rescan').count(), 0);
    await page.getByTestId('nav-campaigns').click();
    await page.getByRole('heading', { name: 'Campaigns' }).waitFor();
    assert.equal(await page.getByTestId('campaign-new').count(), 0);
    step.name = 'viewer: settings says the role, manages nothing';
    await page.getByTestId('nav-settings').click();
    await page.getByTestId('my-role').filter({ hasText: 'role viewer' }).waitFor();
    assert.equal(await page.getByTestId('user-table').count(), 0);
    assert.equal(await page.getByTestId('token-create').count(), 0);
  });
});

test('device page: every time is on the network clock, consistent and ordered', async () => {
  await withPage('clock', {}, async (page, step) => {
    step.name = 'simulated time is said next to times';
    await page.evaluate((eui) => { location.hash = `#/devices/${eui}`; }, SENSOR);
    await page.getByTestId('uplink-time').first().waitFor();
    await page.locator('.sim-time').first().waitFor();

    step.name = 'a request is sent at the network clock and answered after it';
    const before = Date.parse((await api('GET', '/api/info')).body.network.now);
    await page.getByTestId('vs-button-version_running').click();
    // The newest answered request (earlier tests asked this device too).
    const pair = await waitFor('the request to be answered on the page', () => page.evaluate((since) => {
      for (const row of document.querySelectorAll('[data-testid="request-row"]')) {
        const s = row.querySelector('time[data-testid="request-sent"]');
        const a = row.querySelector('time[data-testid="request-answered"]');
        if (s && a && Date.parse(s.getAttribute('datetime') || '') >= since) return [s.getAttribute('datetime'), a.getAttribute('datetime')];
      }
      return null;
    }, before - 1000), 30000);
    const after = Date.parse((await api('GET', '/api/info')).body.network.now);
    const [sent, answered] = pair.map(Date.parse);
    assert.ok(sent >= before - 1000 && sent <= after, `sent ${new Date(sent).toISOString()} within the network's ${new Date(before).toISOString()}..${new Date(after).toISOString()}`);
    assert.ok(answered >= sent && answered <= after + 1000, `answered ${new Date(answered).toISOString()} after sent ${new Date(sent).toISOString()}`);
    // The device answers with its next uplink: within one uplink interval (30 s simulated)
    // plus the time the console took, never "46 min" apart as with two clocks.
    assert.ok(answered - sent < 120000, `answer ${(answered - sent) / 1000} s after the request`);

    step.name = 'uplinks and events in order, none in the network clock\'s future';
    const times = async (sel) => (await page.locator(sel).evaluateAll((els) => els.map((e) => e.getAttribute('datetime')))).map(Date.parse);
    const ups = await times('[data-testid="uplink-time"]');
    const events = await times('[data-testid="event-log"] time');
    for (const [name, list] of [['uplinks', ups], ['events', events]]) {
      assert.ok(list.length > 0, `${name} shown`);
      for (let i = 1; i < list.length; i++) assert.ok(list[i - 1] >= list[i], `${name} newest first`);
      assert.ok(list[0] <= after + 5000, `${name} not after the network's now`);
    }
    assert.ok(events.some((t) => Math.abs(t - sent) < 120000), "the downlink is in the event log near its time");
    step.name = 'times show their zone, UTC on hover';
    const title = await page.getByTestId('uplink-time').first().getAttribute('title');
    assert.match(title, /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(UTC\)/);
  });
});
