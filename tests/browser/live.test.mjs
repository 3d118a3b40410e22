// Live views under load: the real lorafleet binary with a simulated fleet that sends more than
// 20 events a second, and headless Chromium. The device list shows a device's new "last seen"
// within 3 s of the API; a campaign page follows every stage its device goes through, never
// more than 2 s behind the API; the live badge says "reconnecting" once the server is gone.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, sleep, waitFor as waitUntil } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Device 1 of the simulated fleet is a sensor; the demo library has a newer sensor image.
const SENSOR = '4c4653494d000001';
const DEMO_IMAGE = 'demo-sensor-1.3.0.bin';
// 160 devices each sending every 10 simulated seconds at x2: 32 uplinks a real second. The
// slow clock keeps every stage of the campaign at least 0.5 s long (a device answers 1 to 4
// simulated seconds after a command), so a page that follows can see each one.
const DEVICES = 160;
const TIME_SCALE = 2;
const UPLINK_INTERVAL_S = 10;
// Every stage the engine takes a device through on its way to a verified update.
const STAGES = ['check', 'mc_group_setup', 'frag_session_setup', 'mc_session_setup', 'fragments', 'frag_status', 'verify', 'completed'];

const secret = () => crypto.randomBytes(18).toString('base64url');
const ADMIN_PASSWORD = secret();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-live-'));
const dataDir = path.join(tmp, 'data');
const fwDir = path.join(tmp, 'bin');
fs.mkdirSync(dataDir);
fs.mkdirSync(fwDir);

let server;
let browser;

async function startServer() {
  return startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: String(DEVICES),
    LORAFLEET__NETWORK__SIMULATED__TIME_SCALE: String(TIME_SCALE),
    LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S: String(UPLINK_INTERVAL_S),
    LORAFLEET__FIRMWARE__DIR: fwDir,
    // Fragments 1 s apart: the session takes a minute of simulated time instead of five.
    LORAFLEET__FUOTA__CLASS_C_MARGIN_S: '1',
  }, tmp);
}

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

const waitFor = (what, fn, timeoutMs = 10000) => waitUntil(what, fn, timeoutMs, 50);

/** `device` events on the server's stream during `ms`, counted from the raw SSE body. */
async function deviceEventsDuring(ms) {
  const controller = new AbortController();
  const r = await fetch(`${server.base}/api/stream`, { headers: { Authorization: auth() }, signal: controller.signal });
  assert.equal(r.status, 200);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let text = '';
  const stop = Date.now() + ms;
  setTimeout(() => controller.abort(), ms);
  try {
    while (Date.now() < stop) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  }
  return (text.match(/^event: ?device$/gm) || []).length;
}

async function withPage(name, fn) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => { pageErrors.push(`unexpected native dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.setDefaultTimeout(15000);
  const step = { name: 'start' };
  try {
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();
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

before(async () => {
  server = await startServer();
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

/** The "last seen" the list shows for a device (its <time datetime>), or null. */
const shownLastSeen = (page, eui) => page.evaluate((e) => {
  const row = document.querySelector(`[data-testid="device-row"][data-dev-eui="${e}"]`);
  const t = row && row.querySelector('[data-testid="device-last-seen"]');
  return t ? t.getAttribute('datetime') : null;
}, eui);

test('live: under 20+ events/s the device list shows a new "last seen" within 3 s', { timeout: 120000 }, async () => {
  await withPage('device-list', async (page, step) => {
    step.name = 'the fleet sends at least 20 events a second';
    await waitFor('the simulated devices to be listed', async () => (await apiGet('/api/devices?limit=1')).total >= DEVICES, 20000);
    const events = await deviceEventsDuring(3000);
    assert.ok(events >= 60, `expected >= 20 device events/s, got ${events} in 3 s`);

    step.name = 'the list is live';
    // Sorted by DevEUI the rows stay put (by last seen, a device leaves the first page
    // within a second or two as the others send).
    await page.getByTestId('device-sort').selectOption('dev_eui');
    await page.locator('[data-testid="device-table"] th[aria-sort="ascending"]').filter({ hasText: 'DevEUI' }).waitFor();
    await page.getByTestId('device-row').first().waitFor();
    await page.locator('[data-testid="live-indicator"][data-state="live"]').waitFor();

    for (let round = 0; round < 3; round++) {
      step.name = `round ${round}: a device on screen sends`;
      // Devices that have sent (a "last seen" to compare).
      const rows = await page.getByTestId('device-row').evaluateAll((els) => els
        .filter((el) => el.querySelector('[data-testid="device-last-seen"]'))
        .map((el) => el.getAttribute('data-dev-eui')));
      assert.ok(rows.length > 15, `devices with a last-seen time on the page: ${rows.length}`);
      const eui = rows[5 + round * 10];
      const before = await shownLastSeen(page, eui);
      assert.ok(before, `the list shows a last-seen time for ${eui}`);
      const sent = await waitFor(`${eui} to send again`, async () => {
        const d = await apiGet(`/api/devices/${eui}`);
        return Date.parse(d.last_seen) > Date.parse(before) ? d.last_seen : null;
      }, 15000);
      const apiSaw = Date.now();

      step.name = `round ${round}: the list shows ${eui}'s new last seen within 3 s`;
      await waitFor(`the list to show ${eui} seen at ${sent} or later`, async () => {
        const shown = await shownLastSeen(page, eui);
        return shown && Date.parse(shown) >= Date.parse(sent);
      }, 3000);
      assert.ok(Date.now() - apiSaw <= 3000);
    }
    const text = await page.locator('[data-testid="live-indicator"]').getAttribute('data-state');
    assert.equal(text, 'live', 'the badge says live while the list keeps up');
  });
});

test('live: a campaign page follows every stage of its device, at most 2 s behind the API', { timeout: 480000 }, async () => {
  await withPage('campaign', async (page, step) => {
    step.name = 'create and start an engine campaign for one sensor';
    const firmware = await apiGet('/api/firmware');
    const image = firmware.images.find((i) => i.file_name === DEMO_IMAGE);
    assert.ok(image, `the demo image is in the library: ${JSON.stringify(firmware.images.map((i) => i.file_name))}`);
    const created = await apiPost('/api/campaigns', {
      name: 'live', firmware_id: image.id, devices: [SENSOR], driver: 'engine',
      // Short unicast timeouts (the uplink interval is 10 s) bring the session start closer.
      unicast: { timeout_s: 20, attempts: 3 },
      request_frag_status: 'after_session',
      engine: { check: 'refuse', verify: true, reboot_delay_s: 20 },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id;
    await page.goto(`${server.base}/#/campaigns/${id}`);
    const row = page.locator(`[data-testid="campaign-device-row"][data-dev-eui="${SENSOR}"]`);
    await row.waitFor();
    const started = await apiPost(`/api/campaigns/${id}/start`, {});
    assert.equal(started.status, 202, JSON.stringify(started.body));

    step.name = 'follow the API: within 2 s of the API showing a stage, the page shows it or a newer one';
    const apiSeen = [];
    let lastApi = null;
    // A safety net for a wedged campaign, not a speed target: a loaded 2-core machine stretches
    // the simulated session's real length.
    const deadline = Date.now() + 400000;
    const apiStage = async () => (await apiGet(`/api/campaigns/${id}`)).devices[0].stage;
    for (;;) {
      const c = await apiGet(`/api/campaigns/${id}`);
      const stage = c.devices[0].stage;
      if (stage !== lastApi) {
        // What the API showed from this moment on: the page may show any of them, not older.
        const since = [stage];
        await waitFor(`the page to show stage ${stage} (or one the API showed after it: ${since.join(', ')})`, async () => {
          const now = await apiStage();
          if (since[since.length - 1] !== now) since.push(now);
          return since.includes(await row.getAttribute('data-stage'));
        }, 2000);
        apiSeen.push(...since.filter((s, i) => i === 0 || s !== since[i - 1]));
        lastApi = since[since.length - 1];
      }
      if (c.state !== 'running' && c.state !== 'draft') {
        assert.equal(c.state, 'completed', JSON.stringify(c.log.slice(-10)));
        assert.equal(c.devices[0].outcome, 'verified', JSON.stringify(c.devices[0]));
        break;
      }
      assert.ok(Date.now() < deadline, `the campaign did not finish; the API showed ${apiSeen.join(' > ')}`);
      await sleep(100);
    }

    step.name = 'the device\'s history on the page lists every stage, verifying included';
    const history = row.getByTestId('device-stage-history');
    await waitFor('completed in the history', async () => (await history.locator('[data-stage="completed"]').count()) === 1, 2000);
    const entries = await history.locator('li').evaluateAll((els) => els.map((el) => [el.getAttribute('data-stage'), el.getAttribute('data-source')]));
    const shown = entries.map(([s]) => s);
    for (const s of STAGES) assert.ok(shown.includes(s), `stage ${s} in the page's history ${JSON.stringify(entries)} (the API showed ${apiSeen.join(' > ')})`);
    // The server stamps no time for these: the page can only know them by following.
    for (const s of ['check', 'fragments', 'verify']) {
      assert.ok(entries.some(([st, src]) => st === s && src === 'seen'), `stage ${s} seen live: ${JSON.stringify(entries)}`);
    }
    assert.match(await history.textContent(), /Verifying the new version/, 'labels come from the API');
  });
});

test('live: the badge says "reconnecting" when the server is gone', { timeout: 60000 }, async () => {
  await withPage('badge', async (page, step) => {
    step.name = 'live while connected';
    const badge = page.getByTestId('live-indicator');
    await page.locator('[data-testid="live-indicator"][data-state="live"]').waitFor();
    step.name = 'reconnecting once the server stops';
    await stopLorafleet(server);
    await page.locator('[data-testid="live-indicator"][data-state="reconnecting"]').waitFor({ timeout: 10000 });
    assert.match(await badge.textContent(), /reconnecting/);
  });
});
