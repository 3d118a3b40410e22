// End-to-end test of the firmware library and campaign pages: the real lorafleet binary and
// headless Chromium. Uploads the signed fixture, creates a campaign, sees a field refused next
// to its input and the plan, saves and starts it, and follows it on its page.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/
//
// The campaign uses the fuota-server-v3 driver pointed at a peer that closes every connection:
// starting works (the campaign runs) and the page shows that the FUOTA service does not answer.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, sleep } from './lorafleet.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const FIXTURE = path.join(REPO, 'crates', 'lorafleet-codec', 'tests', 'fixtures', 'patch_demo_jdiff_v1v2.bin_signed');
const DEV_EUI = '0a0b0c0d0e0f1011';
const CAMPAIGN_NAME = 'Meters <i>to</i> v2 & "more"';

const secret = () => crypto.randomBytes(18).toString('base64url');
const ADMIN_PASSWORD = secret();
const INTEGRATION_TOKEN = secret();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-campaigns-'));
const dataDir = path.join(tmp, 'data');
const fwDir = path.join(tmp, 'bin');
fs.mkdirSync(dataDir);
fs.mkdirSync(fwDir);

let server;
let silentPeer;
let browser;

// The FUOTA service lorafleet is pointed at: a port this test holds (so nothing else can take it,
// as it could a port freed for the purpose) that closes every connection at once.
function startSilentPeer() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((socket) => socket.destroy());
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

async function startServer() {
  silentPeer = await startSilentPeer();
  return startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__INTEGRATION__TOKEN: INTEGRATION_TOKEN,
    LORAFLEET__NETWORK__KIND: 'none',
    LORAFLEET__NETWORK__REQUEST_TIMEOUT_S: '2',
    LORAFLEET__FIRMWARE__DIR: fwDir,
    LORAFLEET__FUOTA__POLL_INTERVAL_S: '1',
    LORAFLEET__FUOTA__SERVER_V3__URL: `http://127.0.0.1:${silentPeer.address().port}`,
  }, tmp);
}

/** A ChirpStack v4 uplink through the integration endpoint, so lorafleet knows the device. */
async function injectUplink() {
  const body = {
    deduplicationId: crypto.randomUUID(),
    time: new Date().toISOString(),
    deviceInfo: {
      tenantId: 't', tenantName: 'T',
      applicationId: '7f4a6a52-6f2c-4d7e-9a47-2f0d8b3f1c11', applicationName: 'meters',
      deviceProfileId: '0a3b1f7e-3c55-4a61-8c1d-9e8f7a6b5c4d', deviceProfileName: 'p',
      deviceName: 'meter 1', devEui: DEV_EUI, tags: {},
    },
    devAddr: '01020304', dr: 5, fCnt: 1, fPort: 2, confirmed: false,
    data: Buffer.from([1, 2, 3]).toString('base64'),
    rxInfo: [{ gatewayId: '0016c001ff10d3f6', rssi: -60, snr: 8 }],
    txInfo: { frequency: 868100000 },
  };
  const r = await fetch(`${server.base}/api/integrations/chirpstack?event=up`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${INTEGRATION_TOKEN}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.ok(r.ok, `integration endpoint answered ${r.status}: ${await r.text()}`);
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
  silentPeer?.close();
  if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
});

test('campaigns: upload an image, plan a campaign, see a field refused, start it and follow it', { timeout: 120000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('dialog', (d) => { pageErrors.push(`unexpected native dialog: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.setDefaultTimeout(15000);
  let step = 'start';
  // SCREENSHOTS=<dir> keeps a full-page picture of each page, for looking at the layout.
  const shot = async (name) => {
    if (process.env.SCREENSHOTS) await page.screenshot({ path: path.join(process.env.SCREENSHOTS, `${name}.png`), fullPage: true });
  };
  try {
    step = 'make the device known';
    await injectUplink();

    step = 'log in';
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();

    step = 'open the firmware library and upload the signed fixture';
    await page.getByTestId('nav-firmware').click();
    await page.waitForURL(/#\/firmware$/);
    await page.getByTestId('firmware-drop').waitFor();
    await page.getByTestId('firmware-file-input').setInputFiles(FIXTURE);
    const row = page.getByTestId('firmware-row').filter({ hasText: 'patch_demo_jdiff_v1v2.bin_signed' });
    await row.waitFor();
    const trailer = await row.getByTestId('firmware-trailer').textContent();
    assert.match(trailer, /JDIFF delta/);
    assert.match(trailer, /0x60bf897e = 1623165310/, "the raw version stays visible");
    // No device here reported a versioning type: the version is not guessed as a Unix time.
    assert.doesNotMatch(trailer, /2021-06-08T15:15:10Z/);
    assert.match(trailer, /254140 B/);
    assert.match(trailer, /ee33927e-e985-577b-ae88-fe98f5a4b587/);
    assert.match(await row.textContent(), /22832 B/);
    await shot('firmware');

    step = 'the same bytes again are refused, naming the existing image';
    await page.getByTestId('firmware-file-input').setInputFiles({ name: 'copy.bin', mimeType: 'application/octet-stream', buffer: fs.readFileSync(FIXTURE) });
    await page.getByTestId('upload-error').filter({ hasText: 'already has this image' }).waitFor();
    assert.equal(await page.getByTestId('firmware-row').count(), 1);

    step = 'start a campaign from the image';
    await row.getByTestId('firmware-campaign').click();
    await page.waitForURL(/#\/campaigns\/new\?firmware=\d+$/);
    await page.locator(`[data-dev-eui="${DEV_EUI}"] input`).waitFor();
    assert.notEqual(await page.getByTestId('input-cf-firmware').inputValue(), '', 'the image is preselected');
    await page.getByTestId('input-cf-name').fill(CAMPAIGN_NAME);
    await page.getByTestId('input-cf-driver').selectOption('fuota-server-v3');
    await page.locator(`[data-dev-eui="${DEV_EUI}"] input`).check();
    // Defaults are filled in.
    assert.equal(await page.getByTestId('input-cf-dr').inputValue(), '5');
    assert.equal(await page.getByTestId('input-cf-frequency').inputValue(), '868.1');
    assert.equal(await page.getByTestId('input-cf-uc-timeout').inputValue(), '150');
    assert.equal(await page.getByTestId('input-cf-attempts').inputValue(), '5');
    assert.equal(await page.getByTestId('input-cf-redundancy').inputValue(), '10');

    step = 'without keys the v3 driver refuses, next to the key field';
    await page.getByTestId('error-keys.gen_app_key').filter({ hasText: 'no key material' }).waitFor();
    await page.getByTestId('input-cf-gen-app-key').fill('0302030405060708090a0b0c0d0e0f10');

    step = "the seed's session timeout 40 is explained next to its field";
    await page.getByTestId('input-cf-timeout-exp').fill('40');
    const timeoutError = page.getByTestId('error-multicast.timeout_exp');
    await timeoutError.filter({ hasText: '0..15' }).waitFor();
    assert.match(await timeoutError.textContent(), /4 bits/);
    await page.getByTestId('plan-invalid').waitFor();

    step = 'with the timeout computed, the plan appears';
    await page.getByTestId('input-cf-timeout-exp').fill('');
    await page.getByTestId('plan-data-fragments').filter({ hasText: '96' }).waitFor();
    assert.equal(await timeoutError.textContent(), '');
    assert.match(await page.getByTestId('plan-fragment-size').textContent(), /239 B/);
    assert.match(await page.getByTestId('plan-airtime').textContent(), /ms per fragment/);
    assert.match(await page.getByTestId('plan-session').textContent(), /timeout 13/);
    await page.locator('[data-testid="advice-chart"]').waitFor();
    await shot('campaign-form');

    step = 'save the draft';
    await page.getByTestId('campaign-save').click();
    await page.waitForURL(/#\/campaigns\/\d+$/);
    const title = page.getByTestId('campaign-title');
    await title.filter({ hasText: 'draft' }).waitFor();
    assert.match(await title.textContent(), /Meters <i>to<\/i> v2 & "more"/);
    assert.equal(await page.locator('#app i').count(), 0, 'the name is shown as text');
    await page.getByTestId('plan-data-fragments').filter({ hasText: '96' }).waitFor();
    await page.locator(`[data-testid="campaign-device-row"][data-dev-eui="${DEV_EUI}"][data-stage="pending"]`).waitFor();

    step = 'start it and see it run, live';
    await page.evaluate(() => { window.__sameDocument = true; });
    await page.getByTestId('campaign-start').click();
    await title.filter({ hasText: 'running' }).waitFor();
    await page.locator(`[data-testid="campaign-device-row"][data-dev-eui="${DEV_EUI}"][data-stage="mc_group_setup"]`).waitFor();
    await page.getByTestId('stage-count-mc_group_setup').waitFor();
    await page.getByTestId('progress-bar').waitFor();
    await page.locator('[data-testid="stage-chart"]').waitFor();
    // The FUOTA server is not there: the page says so without a reload, and keeps the campaign.
    await page.getByTestId('campaign-poll-error').filter({ hasText: 'cannot reach' }).waitFor({ timeout: 20000 });
    await page.getByTestId('campaign-log').filter({ hasText: 'start requested' }).waitFor();
    assert.equal(await page.evaluate(() => window.__sameDocument), true, 'updates arrive without a reload');
    await shot('campaign-page');

    step = 'the campaign list shows it';
    await page.getByTestId('nav-campaigns').click();
    const listRow = page.getByTestId('campaign-row').filter({ hasText: 'Meters' });
    await listRow.waitFor();
    assert.equal(await listRow.getAttribute('data-state'), 'running');

    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, 'campaigns-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`step "${step}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    if (pageErrors.length) console.error('page errors:', pageErrors);
    process.exitCode = 1;
    throw e;
  } finally {
    await context.close();
  }
});
