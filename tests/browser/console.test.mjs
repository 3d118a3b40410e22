// End-to-end test of the web console: the real lorafleet binary, a fake ChirpStack v3
// Application Server, and headless Chromium.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/
//
// LORAFLEET_BIN overrides the binary (default <repo>/target/debug/lorafleet); LORAFLEET_ARGS adds
// space-separated arguments; CHROMIUM overrides /usr/bin/chromium. On failure a screenshot and
// the server's log are left in a temp directory (the path is printed).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, sleep, waitFor } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const DEV_EUI = '0102030405060708';
// Markup in a device-supplied string: it must show up as text, never as an element.
const DEVICE_NAME = 'Meter <b>html</b> & "co" <img src=x>';

const secret = () => crypto.randomBytes(18).toString('base64url');
const ADMIN_PASSWORD = secret();
const INTEGRATION_TOKEN = secret();
const AS_TOKEN = secret();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-browser-'));
const dataDir = path.join(tmp, 'data');
fs.mkdirSync(dataDir);

let fakeAs;          // { server, url, requests }
let server;          // { child, base, log(), exited }
let browser;

// --- fake ChirpStack v3 Application Server --------------------------------------------------

function startFakeAs() {
  const requests = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      let json = null;
      try { json = body ? JSON.parse(body) : null; } catch { /* recorded as text */ }
      requests.push({ method: req.method, url: req.url, headers: req.headers, body, json });
      if (req.method === 'POST' && /^\/api\/devices\/[0-9a-fA-F]{16}\/queue$/.test(req.url) && fakeAs.fail) {
        res.writeHead(503, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: 'network server unavailable', code: 14, message: 'network server unavailable', details: [] }));
      } else if (req.method === 'POST' && /^\/api\/devices\/[0-9a-fA-F]{16}\/queue$/.test(req.url)) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ fCnt: 1 }));
      } else {
        res.writeHead(404, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ error: 'not found', code: 5, message: 'not found', details: [] }));
      }
    });
  });
  return new Promise((resolve) => {
    srv.listen(0, '127.0.0.1', () => {
      resolve({ server: srv, url: `http://127.0.0.1:${srv.address().port}`, requests });
    });
  });
}

// --- lorafleet ------------------------------------------------------------------------------


async function startServer(asUrl) {
  return startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__INTEGRATION__TOKEN: INTEGRATION_TOKEN,
    LORAFLEET__NETWORK__KIND: 'chirpstack-v3',
    LORAFLEET__NETWORK__CHIRPSTACK_V3__API_URL: asUrl,
    LORAFLEET__NETWORK__CHIRPSTACK_V3__API_TOKEN: AS_TOKEN,
  }, tmp);
}

// --- ChirpStack v4 integration events -------------------------------------------------------

const fCnts = new Map();
async function injectUplink({ devEui = DEV_EUI, name = DEVICE_NAME, application = 'meters', fPort, bytes, object = null }) {
  const fCnt = fCnts.get(devEui) ?? 10;
  fCnts.set(devEui, fCnt + 1);
  const body = {
    deduplicationId: crypto.randomUUID(),
    time: new Date().toISOString(),
    deviceInfo: {
      tenantId: 't', tenantName: 'T',
      applicationId: '7f4a6a52-6f2c-4d7e-9a47-2f0d8b3f1c11', applicationName: application,
      deviceProfileId: '0a3b1f7e-3c55-4a61-8c1d-9e8f7a6b5c4d', deviceProfileName: 'p',
      deviceName: name, devEui, tags: {},
    },
    devAddr: '01020304', dr: 5, fCnt, fPort, confirmed: false,
    data: Buffer.from(bytes).toString('base64'),
    ...(object ? { object } : {}),
    rxInfo: [{ gatewayId: '0016c001ff10d3f6', rssi: -57 - (fCnt % 5), snr: 9.5 - (fCnt % 3) }],
    txInfo: { frequency: 868100000 },
  };
  const r = await fetch(`${server.base}/api/integrations/chirpstack?event=up`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${INTEGRATION_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `integration endpoint answered ${r.status}: ${text}`);
}

/** Downlinks the fake Application Server received since `from` (an index into its log). */
function queued(from) {
  return fakeAs.requests.slice(from).filter((r) => r.method === 'POST' && r.url.includes('/queue'));
}

async function waitForQueued(from, count = 1) {
  await waitFor(`${count} downlink(s) at the fake Application Server`, () => queued(from).length >= count);
  await sleep(400); // an unexpected extra downlink would show up here
  const got = queued(from);
  assert.equal(got.length, count, `expected ${count} downlink(s), got ${JSON.stringify(got.map((r) => r.body))}`);
  for (const r of got) {
    assert.equal(r.headers['grpc-metadata-authorization'], `Bearer ${AS_TOKEN}`);
    assert.ok(r.json && r.json.deviceQueueItem, `body has deviceQueueItem: ${r.body}`);
  }
  return got.map((r) => ({ url: r.url, ...r.json.deviceQueueItem }));
}

const b64 = (bytes) => Buffer.from(bytes).toString('base64');

// --- browser helpers ------------------------------------------------------------------------

/**
 * Runs `fn(page)` in a fresh browser context; on failure saves a screenshot and the server
 * log to the temp directory and prints where they are.
 */
async function withPage(name, viewport, fn) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => { pageErrors.push(`unexpected native dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.setDefaultTimeout(15000);
  const step = { name: 'start' };
  try {
    await fn(page, step);
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, `${name}-failure.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`[${name}] step "${step.name}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    if (pageErrors.length) console.error('page errors:', pageErrors);
    console.error('requests seen by the fake Application Server:', JSON.stringify(fakeAs.requests.map((r) => [r.method, r.url, r.body])));
    process.exitCode = 1; // keeps the temp directory
    throw e;
  } finally {
    await context.close();
  }
}

async function login(page) {
  await page.goto(server.base + '/');
  await page.getByTestId('login-username').fill('admin');
  await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
  await page.getByTestId('login-submit').click();
  await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();
}

const deviceRow = (page, eui) => page.locator(`[data-testid="device-row"][data-dev-eui="${eui}" i]`);

// --- the tests ------------------------------------------------------------------------------

before(async () => {
  fakeAs = await startFakeAs();
  server = await startServer(fakeAs.url);
  // chromium.launch gives every run a fresh temporary profile (user data dir).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopLorafleet(server);
  if (fakeAs) await new Promise((r) => { fakeAs.server.closeAllConnections(); fakeAs.server.close(r); });
  if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
});

test('console: login, escaped device list, Version & Status request and live answer, logout', { timeout: 120000 }, async () => {
  await withPage('main', { width: 1280, height: 900 }, async (page, step) => {
    step.name = 'inject the first uplink';
    await injectUplink({ fPort: 2, bytes: [0x68, 0x65, 0x6c, 0x6c, 0x6f], object: { temperature: 21.5 } });

    step.name = 'a signed-out console gets plain 401s';
    // A 401 with `WWW-Authenticate: Basic` makes browsers open their own login dialog over the
    // console's form (headless Chromium just waits for credentials forever), so the requests the
    // console makes while signed out must not carry that challenge.
    for (const [url, headers] of [
      // What Chromium sends for the console's fetch() and EventSource.
      ['/api/session', { Accept: 'application/json', 'X-Requested-With': 'XMLHttpRequest', 'Sec-Fetch-Mode': 'cors', 'Sec-Fetch-Site': 'same-origin' }],
      ['/api/stream', { Accept: 'text/event-stream', 'Sec-Fetch-Mode': 'cors', 'Sec-Fetch-Site': 'same-origin' }],
    ]) {
      const r = await fetch(server.base + url, { headers, signal: AbortSignal.timeout(5000) });
      await r.body?.cancel();
      assert.equal(r.status, 401, `GET ${url} without a session`);
      assert.ok(!/basic/i.test(r.headers.get('www-authenticate') || ''),
        `GET ${url} from the console must not answer with a Basic challenge (got WWW-Authenticate: ${r.headers.get('www-authenticate')})`);
    }

    step.name = 'log in';
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill('wrong-' + ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('login-error').filter({ hasText: /\S/ }).waitFor();
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();
    assert.equal(await page.getByTestId('simulated-banner').count(), 0, 'no simulated-network banner with a ChirpStack backend');

    step.name = 'see the device in the list, its name escaped';
    const row = deviceRow(page, DEV_EUI);
    await row.waitFor();
    assert.equal((await row.getByTestId('device-name').textContent()).trim(), DEVICE_NAME);
    assert.equal(await row.locator('b, img').count(), 0, 'device name markup must not be rendered');
    assert.equal(await page.locator('#app b, #app img').count(), 0, 'no injected elements anywhere');
    assert.match(await page.getByTestId('device-count').textContent(), /^\s*1\s*$/);

    step.name = 'open the device page';
    await row.getByTestId('device-name').click();
    await page.waitForURL(new RegExp(`#/devices/${DEV_EUI}$`, 'i'));
    await page.getByTestId('device-title').filter({ hasText: DEVICE_NAME }).waitFor();
    assert.equal(await page.locator('#app b, #app img').count(), 0, 'no injected elements on the device page');
    await page.getByTestId('uplink-row').first().waitFor();
    await page.locator('[data-testid="uplink-chart"] svg').waitFor();
    assert.equal((await page.getByTestId('status-running-version').textContent()).trim(), '', 'no running version before any answer');

    // Anything that reloads the page would drop this marker.
    await page.evaluate(() => { window.__sameDocument = true; });

    step.name = 'press "Running version"';
    const seen = fakeAs.requests.length;
    await page.getByTestId('vs-button-version_running').click();
    const [item] = await waitForQueued(seen, 1);
    assert.equal(item.url.toLowerCase(), `/api/devices/${DEV_EUI}/queue`);
    assert.equal(Number(item.fPort), 111);
    assert.equal(item.data, b64([0x01]));
    assert.equal(String(item.devEUI).toLowerCase(), DEV_EUI);

    step.name = 'see the request pending';
    await page.locator('[data-testid="request-state-version_running"][data-state="pending"]').waitFor();
    await page.getByTestId('request-state-version_running').filter({ hasText: 'pending' }).waitFor();

    step.name = 'receive VersionRunningAns and see it without a reload';
    await injectUplink({ fPort: 111, bytes: [0x01, 0x00, 0x03, 0x02, 0x01, 0x00] });
    await page.getByTestId('status-running-version').filter({ hasText: /\S/ }).waitFor();
    // Before a PackageVersionAns the version can only be shown raw.
    await page.getByTestId('status-running').filter({ hasText: '0x00010203' }).waitFor();
    await page.locator('[data-testid="request-state-version_running"][data-state="answered"]').waitFor();

    step.name = 'press the Firmware Management "Device version" beside them';
    const seenFm = fakeAs.requests.length;
    await page.getByTestId('fm-button-dev_version').click();
    const [fmItem] = await waitForQueued(seenFm, 1);
    assert.equal(Number(fmItem.fPort), 203);
    assert.equal(fmItem.data, b64([0x01]));
    await page.getByTestId('fm-sent').filter({ hasText: 'FPort 203' }).waitFor();

    step.name = 'receive DevVersionAns and see it in the Firmware Management record';
    await injectUplink({ fPort: 203, bytes: [0x01, 0x00, 0x03, 0x01, 0x00, 0x07, 0x00, 0x00, 0x00] });
    await page.getByTestId('fm-firmware').filter({ hasText: '00030100' }).waitFor();

    step.name = 'receive PackageVersionAns: versions now render as major.minor.patch';
    await injectUplink({ fPort: 111, bytes: [0x00, 0x0a, 0x01, 0x13] });
    await page.getByTestId('status-running-version').filter({ hasText: '1.2.3' }).waitFor();
    await waitFor('three uplinks in the history', async () => (await page.getByTestId('uplink-row').count()) >= 3);
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'the page must update without reloading');

    step.name = 'log out';
    await page.getByTestId('logout').click();
    await page.getByTestId('login-username').waitFor();
    await page.reload();
    await page.getByTestId('login-username').waitFor();
    const status = await page.evaluate(async () => (await fetch('/api/session', { credentials: 'same-origin' })).status);
    assert.equal(status, 401, 'the session ends on the server');
  });
});

test('console: search, erase-slot dialog, stored versions, manual downlink, network error, remove and reappear, phone layout', { timeout: 120000 }, async () => {
  const EUI = '0a0b0c0d0e0f1011';
  const NAME = 'Pump station 7';
  await withPage('more', { width: 1280, height: 900 }, async (page, step) => {
    step.name = 'inject an uplink of a second device and log in';
    await injectUplink({ devEui: EUI, name: NAME, application: 'pumps', fPort: 3, bytes: [0x10, 0x20] });
    await login(page);
    await deviceRow(page, EUI).waitFor();

    step.name = 'search';
    await page.getByTestId('device-search').fill('pump sta');
    await waitFor('the search to narrow the list', async () => (await page.getByTestId('device-row').count()) === 1);
    await deviceRow(page, EUI).waitFor();
    await page.getByTestId('device-count').filter({ hasText: /^\s*1\s*$/ }).waitFor();
    await page.getByTestId('device-sort').selectOption('name');
    await page.locator('[data-testid="device-table"] th[aria-sort="ascending"]').filter({ hasText: 'Name' }).waitFor();
    await deviceRow(page, EUI).waitFor();
    assert.equal(await page.getByTestId('error').count(), 0, 'sorting by name is accepted');

    step.name = 'open the device';
    await deviceRow(page, EUI).getByTestId('device-name').click();
    await page.getByTestId('device-title').filter({ hasText: NAME }).waitFor();

    step.name = 'erase slot: the dialog checks the slot and asks for confirmation';
    let seen = fakeAs.requests.length;
    await page.getByTestId('vs-button-erase_slot').click();
    await page.getByTestId('erase-dialog').waitFor();
    await page.getByTestId('erase-slot-input').fill('16');
    await page.getByTestId('erase-dialog-confirm').click();
    await page.getByTestId('erase-dialog-error').filter({ hasText: /0.*15/ }).waitFor();
    await page.getByTestId('erase-slot-input').fill('2');
    await page.getByTestId('erase-dialog-confirm').click();
    await page.getByTestId('confirm-erase').filter({ hasText: 'slot 2' }).waitFor();
    await page.getByTestId('confirm-erase-cancel').click();
    await sleep(300);
    assert.equal(queued(seen).length, 0, 'cancelling the confirmation sends nothing');

    step.name = 'erase slot: leaving the page closes the dialog';
    await page.getByTestId('vs-button-erase_slot').click();
    await page.getByTestId('erase-dialog').waitFor();
    await page.evaluate(() => { location.hash = '#/devices'; });
    await page.getByTestId('erase-dialog').waitFor({ state: 'detached' });
    assert.equal(queued(seen).length, 0, 'an abandoned erase sends nothing');
    await page.goBack();
    await page.getByTestId('device-title').filter({ hasText: NAME }).waitFor();
    await page.getByTestId('vs-button-erase_slot').click();
    await page.getByTestId('erase-slot-input').fill('2');
    await page.getByTestId('erase-dialog-confirm').click();
    await page.getByTestId('confirm-erase-confirm').click();
    let [item] = await waitForQueued(seen, 1);
    assert.equal(Number(item.fPort), 111);
    assert.equal(item.data, b64([0x05, 0x02]));
    await page.locator('[data-testid="request-state-erase_slot"]:is([data-state="pending"], [data-state="answered"])').waitFor();

    step.name = 'stored versions with nb_slots';
    seen = fakeAs.requests.length;
    await page.getByTestId('vs-nb-slots').fill('2');
    await page.getByTestId('vs-button-version_stored').click();
    [item] = await waitForQueued(seen, 1);
    assert.equal(item.data, b64([0x02, 0x02]));
    await page.locator('[data-testid="request-state-version_stored"][data-state="pending"]').waitFor();

    step.name = 'manual downlink form';
    seen = fakeAs.requests.length;
    await page.getByTestId('downlink-fport').fill('0');
    await page.getByTestId('downlink-data').fill('de ad be ef');
    await page.getByTestId('downlink-submit').click();
    await page.getByTestId('downlink-result').filter({ hasText: /1 to 223/ }).waitFor();
    await page.getByTestId('downlink-fport').fill('5');
    await page.getByTestId('downlink-confirmed').check();
    await page.getByTestId('downlink-submit').click();
    await page.getByTestId('downlink-result').filter({ hasText: /Queued/ }).waitFor();
    [item] = await waitForQueued(seen, 1);
    assert.equal(Number(item.fPort), 5);
    assert.equal(item.data, b64([0xde, 0xad, 0xbe, 0xef]));
    assert.equal(item.confirmed, true);

    step.name = 'a network error is shown near the buttons';
    fakeAs.fail = true;
    await page.getByTestId('vs-button-uptime').click();
    await page.getByTestId('vs-error').filter({ hasText: /\S/ }).waitFor();
    fakeAs.fail = false;

    step.name = 'remove the device, with confirmation';
    await page.getByTestId('remove-device').click();
    await page.getByTestId('confirm-remove-confirm').click();
    // The list puts its kept search into the address (#/devices?q=...), so match the path only.
    await page.waitForURL(/#\/devices(\?[^/]*)?$/);
    await page.getByTestId('device-list-empty').waitFor(); // the search "pump sta" is kept
    assert.equal(await deviceRow(page, EUI).count(), 0);

    step.name = 'it reappears, marked, when it sends again (live)';
    await injectUplink({ devEui: EUI, name: NAME, application: 'pumps', fPort: 3, bytes: [0x10, 0x21] });
    await deviceRow(page, EUI).getByTestId('badge-reappeared').waitFor();

    step.name = 'phone width: the list collapses to cards';
    await page.setViewportSize({ width: 390, height: 844 });
    await waitFor('card layout', () => page.evaluate(() => {
      const tr = document.querySelector('[data-testid="device-row"]');
      const th = document.querySelector('[data-testid="device-table"] thead');
      return tr && getComputedStyle(tr).display === 'block' && getComputedStyle(th).display === 'none';
    }));
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal scrolling on a phone (overflow ${overflow}px)`);
  });
});
