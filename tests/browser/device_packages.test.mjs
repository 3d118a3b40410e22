// Issue 8 in the console: the device page shows the app-layer packages in effect for the device
// (versions and FPorts, and where they come from) and the fragment-decoder limits a campaign
// held for it; the campaign page's plan shows the device limits it was given and warns, device
// by device, for those that would refuse the session. The real lorafleet binary with a
// simulated fleet (a device profile per simulated stack) and headless Chromium.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/device_packages.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, waitFor } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SENSORS = ['4c4653494d000001', '4c4653494d000002'];
const DEMO_IMAGE = 'demo-sensor-1.3.0.bin';
const ADMIN_PASSWORD = crypto.randomBytes(18).toString('base64url');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-packages-'));
const dataDir = path.join(tmp, 'data');
const fwDir = path.join(tmp, 'bin');
fs.mkdirSync(dataDir);
fs.mkdirSync(fwDir);

let server;
let browser;
const auth = () => `Basic ${Buffer.from(`admin:${ADMIN_PASSWORD}`).toString('base64')}`;

async function apiGet(p) {
  const r = await fetch(server.base + p, { headers: { Authorization: auth() }, signal: AbortSignal.timeout(5000) });
  assert.ok(r.ok, `GET ${p}: ${r.status} ${await r.clone().text()}`);
  return r.json();
}

async function apiPost(p, body) {
  const r = await fetch(server.base + p, {
    method: 'POST', headers: { Authorization: auth(), 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json().catch(() => null) };
}

before(async () => {
  server = await startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: '4',
    LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S: '10',
    LORAFLEET__FIRMWARE__DIR: fwDir,
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

test('device page: packages and limits; campaign plan: device limits and their warnings', { timeout: 120000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);
  const step = { name: 'log in' };
  try {
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();

    step.name = 'a draft whose first sensor holds 50-byte fragments and 2 parity fragments';
    await waitFor('the simulated sensors in the inventory', async () => {
      const list = await apiGet('/api/devices?limit=100');
      return SENSORS.every((e) => list.devices.some((d) => d.dev_eui === e));
    }, 30000);
    const image = (await apiGet('/api/firmware')).images.find((i) => i.file_name === DEMO_IMAGE);
    assert.ok(image, 'the demo image is in the library');
    const created = await apiPost('/api/campaigns', {
      name: 'limits', firmware_id: image.id, devices: SENSORS, driver: 'engine',
      fragmentation: { redundancy: 10 },
      device_overrides: { [SENSORS[0]]: { device_limits: { max_fragment_size: 50, max_parity: 2 } } },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id;

    step.name = 'the campaign page: the limits given and the device that would refuse';
    await page.goto(`${server.base}/#/campaigns/${id}`);
    const limits = page.getByTestId('plan-limits');
    await limits.waitFor();
    assert.match(await limits.textContent(), new RegExp(`${SENSORS[0]}max_fragment_size 50, max_parity 2`));
    const warned = await page.getByTestId('plan-limit-warning').allTextContents();
    assert.equal(warned.length, 1, `one device would refuse: ${warned}`);
    assert.match(warned[0], new RegExp(`^${SENSORS[0]}: the device would refuse the session .*10 parity fragments exceed its max_parity of 2`));
    assert.equal(await page.getByTestId('plan-fragment-size').textContent(), '50 B (max 242 B) · auto'.replace('242', String(created.body.plan.max_fragment_size)));
    // Limit warnings are shown with the limits, not twice.
    for (const w of await page.getByTestId('plan-warning').allTextContents()) assert.doesNotMatch(w, /would refuse the session/);

    step.name = 'the device page: packages in effect and the limits the campaign holds';
    await page.goto(`${server.base}/#/devices/${SENSORS[0]}`);
    const packages = page.getByTestId('device-packages');
    await packages.waitFor();
    // The simulated network gives each device stack a profile of its own; the page says which.
    const api = (await apiGet(`/api/devices/${SENSORS[0]}`)).packages;
    assert.equal(await packages.getAttribute('data-source'), api.source);
    if (api.source === 'device_profile') assert.match(await packages.textContent(), new RegExp(`From the device profile ${api.device_profile.name}`));
    for (const key of ['fragmentation', 'multicast_setup', 'clock_sync', 'firmware_management']) {
      assert.equal(await page.getByTestId(`package-${key}`).textContent(), `v${api[key].version} · FPort ${api[key].f_port}`, key);
    }
    assert.equal(api.fragmentation.f_port, 201, JSON.stringify(api));
    assert.equal(await page.getByTestId('package-version_status').textContent(), 'FPort 111');
    const held = page.getByTestId('device-limits');
    assert.match(await held.textContent(), /Largest fragment50 BMost parity fragments2/);
    assert.equal(await held.locator(`a[href="#/campaigns/${id}"]`).count(), 1, 'the campaign that holds them is linked');
    // The Firmware Management record has a row for every answer, empty before any.
    for (const t of ['fm-package', 'fm-firmware', 'fm-hardware', 'fm-image', 'fm-reboot']) await page.getByTestId(t).waitFor();

    step.name = 'a device no campaign stated limits for';
    await page.goto(`${server.base}/#/devices/${SENSORS[1]}`);
    await page.getByTestId('device-packages').waitFor();
    assert.match(await page.getByTestId('device-limits').textContent(), /Not known/);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, 'packages-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`step "${step.name}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    process.exitCode = 1;
    throw e;
  } finally {
    await context.close();
  }
});
