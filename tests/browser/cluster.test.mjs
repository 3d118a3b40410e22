// Two lorafleet binaries on one PostgreSQL database: a browser logged in on instance B sees on
// its device list, without reloading, a device whose first uplink was posted to instance A.
// Needs LORAFLEET_TEST_POSTGRES_URL (a cluster's admin URL; scripts/test sets it) and psql;
// without the variable the test is skipped.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/cluster.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, waitFor } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN_URL = process.env.LORAFLEET_TEST_POSTGRES_URL || '';
const ADMIN_PASSWORD = crypto.randomBytes(18).toString('base64url');
const INTEGRATION_TOKEN = crypto.randomBytes(18).toString('base64url');
const DEV_EUI = '70b3d57ed0000c1a';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-cluster-'));
let a;
let b;
let browser;

/** A fresh database on the test cluster, as a URL naming it. */
function freshDatabase() {
  const name = `lorafleet_browser_${process.pid}_${Date.now()}`;
  execFileSync('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-c', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

function instance(name, databaseUrl) {
  const dir = path.join(tmp, name);
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  return startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: path.join(dir, 'data'),
    LORAFLEET__SERVER__DATABASE_URL: databaseUrl,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__INTEGRATION__TOKEN: INTEGRATION_TOKEN,
    LORAFLEET__NETWORK__KIND: 'none',
    LORAFLEET__FIRMWARE__DIR: path.join(dir, 'bin'),
  }, dir);
}


before(async () => {
  if (!ADMIN_URL) return;
  const url = freshDatabase();
  a = await instance('a', url);
  b = await instance('b', url);
  for (const s of [a, b]) {
    await waitFor('the instance to hear the other', async () => {
      const h = await (await fetch(`${s.base}/health`)).json();
      return h.cluster && h.cluster.listening;
    });
  }
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await stopLorafleet(a);
  await stopLorafleet(b);
  if (!process.exitCode) fs.rmSync(tmp, { recursive: true, force: true });
});

test('cluster: a device first heard by instance A appears on B\'s device list without a reload', { timeout: 60000 }, async (t) => {
  if (!ADMIN_URL) {
    t.skip('LORAFLEET_TEST_POSTGRES_URL is not set');
    return;
  }
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.setDefaultTimeout(15000);
  try {
    await page.goto(b.base + '/');
    await page.getByTestId('login-username').fill('admin');
    await page.getByTestId('login-password').fill(ADMIN_PASSWORD);
    await page.getByTestId('login-submit').click();
    await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();
    await page.locator('[data-testid="live-indicator"][data-state="live"]').waitFor();
    assert.equal(await page.locator(`[data-testid="device-row"][data-dev-eui="${DEV_EUI}"]`).count(), 0);

    const uplink = {
      deduplicationId: crypto.randomUUID(),
      time: new Date().toISOString(),
      deviceInfo: { devEui: DEV_EUI, deviceName: 'heard-by-a', applicationId: 'app-1', applicationName: 'meters' },
      fCnt: 1, fPort: 10, data: Buffer.from('hi').toString('base64'), rxInfo: [],
    };
    const r = await fetch(`${a.base}/api/integrations/chirpstack?event=up`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${INTEGRATION_TOKEN}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(uplink),
    });
    assert.equal(r.status, 200, await r.text());

    await page.locator(`[data-testid="device-row"][data-dev-eui="${DEV_EUI}"]`).waitFor({ timeout: 5000 });
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, 'cluster-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'a.log'), a.log());
    fs.writeFileSync(path.join(tmp, 'b.log'), b.log());
    console.error(`cluster test failed; screenshot ${shot}, logs in ${tmp}`);
    process.exitCode = 1;
    throw e;
  } finally {
    await context.close();
  }
});
