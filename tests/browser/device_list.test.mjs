// The device list at fleet scale in headless Chromium against the real binary: search, filters,
// sort and page live in the URL (a shared link and a reload restore them), the column headers
// sort both ways, the page size and "jump to page" page through the server's list, and a device
// that sends shows its new "last seen" within 3 s.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/device_list.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, waitFor as waitUntil } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// More than the campaign form's picker shows (200), so its note and the filter can be seen.
const DEVICES = 220;
const ADMIN_PASSWORD = crypto.randomBytes(18).toString('base64url');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-devlist-'));
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

const waitFor = (what, fn, timeoutMs = 10000) => waitUntil(what, fn, timeoutMs, 50);

const shownRows = (page) => page.getByTestId('device-row').evaluateAll((els) => els.map((el) => el.getAttribute('data-dev-eui')));
const hashParams = async (page) => Object.fromEntries(new URLSearchParams(await page.evaluate(() => location.hash.split('?')[1] || '')));

/** The rows the console shows equal the API's page for the same parameters. */
async function rowsMatchApi(page, query) {
  return waitFor(`the list to show the API's page for ${query}`, async () => {
    const api = (await apiGet(`/api/devices?${query}`)).devices.map((d) => d.dev_eui);
    const shown = await shownRows(page);
    return api.length > 0 && JSON.stringify(api) === JSON.stringify(shown);
  });
}

before(async () => {
  server = await startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: String(DEVICES),
    LORAFLEET__NETWORK__SIMULATED__TIME_SCALE: '5',
    LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S: '30',
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

test('device list: URL state, sortable headers, page size, jump to page, live last seen', { timeout: 120000 }, async () => {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);
  let step = 'log in';
  try {
    await waitFor('the simulated devices to be listed', async () => (await apiGet('/api/devices?limit=1')).total >= DEVICES, 30000);
    await waitFor('most devices to have sent', async () => (await apiGet('/api/devices?status=never_seen&limit=1')).total < DEVICES / 4, 30000);
    await page.goto(server.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();

    step = 'a shared link opens the list it names';
    await page.goto(server.base + '/#/devices?model=sim-tracker&sort=name&order=desc&size=25&page=2');
    await page.locator('[data-testid="device-table"] th[aria-sort="descending"]').filter({ hasText: 'Name' }).waitFor();
    await rowsMatchApi(page, 'model=sim-tracker&sort=name&order=desc&limit=25&offset=25');
    assert.equal(await page.getByTestId('filter-model').inputValue(), 'sim-tracker');
    assert.equal(await page.getByTestId('page-size').inputValue(), '25');
    assert.equal(await page.getByTestId('page-jump').inputValue(), '2');
    const trackers = (await apiGet('/api/devices?model=sim-tracker&limit=1')).total;
    assert.ok(trackers > 25 && trackers < DEVICES, `trackers: ${trackers}`);
    await page.getByTestId('device-count').filter({ hasText: new RegExp(`^\\s*${trackers}\\s*$`) }).waitFor();

    step = 'a column header sorts, clicked again the other way';
    await page.getByTestId('sort-rssi').click();
    await page.locator('[data-testid="device-table"] th[aria-sort="descending"]').filter({ hasText: 'RSSI' }).waitFor();
    assert.deepEqual(await hashParams(page), { model: 'sim-tracker', sort: 'rssi', size: '25' }, 'sorting starts at page 1');
    // Strongest first; devices not heard yet (no RSSI) come after every value.
    const rssi = await page.getByTestId('device-rssi').evaluateAll((els) => els.map((el) => parseFloat(el.textContent || '')));
    const heard = rssi.filter((v) => Number.isFinite(v));
    assert.ok(rssi.length === 25 && heard.length > 0, `RSSI column: ${rssi}`);
    assert.deepEqual(rssi.slice(0, heard.length), heard, `unheard devices last: ${rssi}`);
    assert.deepEqual(heard, [...heard].sort((a, b) => b - a), `descending: ${heard}`);
    await page.getByTestId('sort-rssi').click();
    await page.locator('[data-testid="device-table"] th[aria-sort="ascending"]').filter({ hasText: 'RSSI' }).waitFor();
    assert.equal((await hashParams(page)).order, 'asc');
    await rowsMatchApi(page, 'model=sim-tracker&sort=rssi&order=asc&limit=25');

    step = 'page size and jump to page';
    await page.getByTestId('filter-model').fill('');
    await waitFor('the model filter to leave the URL', async () => !('model' in await hashParams(page)));
    await page.getByTestId('sort-dev_eui').click();
    await page.locator('[data-testid="device-table"] th[aria-sort="ascending"]').filter({ hasText: 'DevEUI' }).waitFor();
    await page.getByTestId('page-size').selectOption('50');
    // The pager is drawn anew after every load: wait for the 50-row page, then set and send the
    // page number on one element (a fill and a change on two renders would send page 1).
    await waitFor('50 rows on a page', async () => (await shownRows(page)).length === 50);
    await page.getByTestId('page-jump').evaluate((el) => {
      /** @type {HTMLInputElement} */ (el).value = '5';
      el.dispatchEvent(new Event('change'));
    });
    await waitFor('page 5 in the URL', async () => (await hashParams(page)).page === '5');
    await rowsMatchApi(page, 'sort=dev_eui&limit=50&offset=200');
    assert.equal(await page.getByTestId('page-next').isDisabled(), true, `${DEVICES} devices: page 5 of 50 is the last`);
    await page.getByTestId('page-prev').click();
    await waitFor('page 4 in the URL', async () => (await hashParams(page)).page === '4');
    await rowsMatchApi(page, 'sort=dev_eui&limit=50&offset=150');

    step = 'a reload restores search, sort and page';
    await page.getByTestId('device-search').fill('sim-');
    await waitFor('the search in the URL', async () => (await hashParams(page)).search === 'sim-');
    const before = await page.evaluate(() => location.hash);
    await page.reload();
    await page.locator('[data-testid="device-table"] th[aria-sort="ascending"]').filter({ hasText: 'DevEUI' }).waitFor();
    assert.equal(await page.evaluate(() => location.hash), before);
    assert.equal(await page.getByTestId('device-search').inputValue(), 'sim-');
    await rowsMatchApi(page, 'search=sim-&sort=dev_eui&limit=50&offset=0');

    step = 'a device that sends shows its new last seen within 3 s';
    const rows = await shownRows(page);
    const eui = rows[3];
    const shown = () => page.evaluate((e) => document.querySelector(`[data-testid="device-row"][data-dev-eui="${e}"] [data-testid="device-last-seen"]`)?.getAttribute('datetime') ?? null, eui);
    const first = await waitFor(`${eui} to show a last-seen time`, shown);
    const sent = await waitFor(`${eui} to send again`, async () => {
      const d = await apiGet(`/api/devices/${eui}`);
      return Date.parse(d.last_seen) > Date.parse(first) ? d.last_seen : null;
    }, 30000);
    await waitFor(`the list to show ${eui} seen at ${sent}`, async () => {
      const s = await shown();
      return s && Date.parse(s) >= Date.parse(sent);
    }, 3000);

    step = "the campaign form's picker says what it does not show and offers the filter";
    await page.goto(server.base + '/#/campaigns/new');
    await page.getByTestId('device-picker-note').filter({ hasText: `Showing 200 of ${DEVICES} matching devices` }).waitFor();
    await page.getByTestId('use-filter').waitFor();
    const option = page.locator('.cf-device').first();
    await option.filter({ hasText: /sim-(tracker|sensor)/ }).filter({ hasText: /seen/ }).waitFor();
    await page.getByTestId('device-filter').fill('sim-tracker');
    const found = (await apiGet('/api/devices?search=sim-tracker&limit=1')).total;
    await page.getByTestId('device-picker-note').filter({ hasText: `${found} matching device` }).waitFor();
    await page.getByTestId('devices-all').click();
    await page.getByTestId('device-selected-count').filter({ hasText: `${found} selected` }).waitFor();
    await page.getByTestId('target-filter').check();
    await page.getByTestId('target-filter-model').fill('sim-tracker');
    await page.getByTestId('target-filter-count').filter({ hasText: `${trackers} devices match now` }).waitFor();

    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, 'device-list-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`[device list] step "${step}" failed; screenshot: ${shot}`);
    process.exitCode = 1;
    throw e;
  } finally {
    await context.close();
  }
});
