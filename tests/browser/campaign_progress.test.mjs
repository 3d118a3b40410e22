// The campaign page says what it is waiting for (issue 10 item 7): the real lorafleet binary
// with a simulated fleet and headless Chromium. An engine campaign over three sensors (one of
// which hears no multicast frame, so that stages and outcomes differ at the end): the progress
// panel shows fragments x of y, the next step with its time, elapsed and expected time on both
// clocks; the per-device table filters by stage and by outcome exactly as the API's
// `progress_summary` says; the stage chart fills its card with one colour per stage; at 390 px
// the page has no horizontal scroll and every time is labelled.
//
//   cargo build -p lorafleet && (cd tests/browser && npm ci) && node --test tests/browser/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, waitFor } from './lorafleet.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SENSORS = ['4c4653494d000001', '4c4653494d000002', '4c4653494d000003'];
// Hears no multicast frame: it answers its setup and then misses every fragment.
const DEAF = SENSORS[1];
const DEMO_IMAGE = 'demo-sensor-1.3.0.bin';
// x5: the campaign lasts long enough (about a minute) for the page to be read while it runs.
const TIME_SCALE = 5;

const secret = () => crypto.randomBytes(18).toString('base64url');
const ADMIN_PASSWORD = secret();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-progress-'));
const dataDir = path.join(tmp, 'data');
const fwDir = path.join(tmp, 'bin');
fs.mkdirSync(dataDir);
fs.mkdirSync(fwDir);

let server;
let browser;

async function startServer() {
  // A per-device override has no default to take its type from, so it goes in a file.
  const configFile = path.join(tmp, 'lorafleet.toml');
  fs.writeFileSync(configFile, `[network.simulated.overrides.${DEAF}]\nmulticast_loss = 1.0\n`);
  return startLorafleet({
    LORAFLEET_CONFIG: configFile,
    LORAFLEET__SERVER__DATA_DIR: dataDir,
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: ADMIN_PASSWORD,
    LORAFLEET__NETWORK__KIND: 'simulated',
    LORAFLEET__NETWORK__SIMULATED__DEVICES: '8',
    LORAFLEET__NETWORK__SIMULATED__TIME_SCALE: String(TIME_SCALE),
    LORAFLEET__NETWORK__SIMULATED__UPLINK_INTERVAL_S: '10',
    LORAFLEET__FIRMWARE__DIR: fwDir,
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

/** The DevEUIs of the facts table's rows as shown. */
const shownRows = (page) => page.locator('[data-testid="campaign-device-row"]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-dev-eui')).sort());

test('campaign page: what it waits for, devices by stage and outcome, a phone without scroll', { timeout: 420000 }, async () => {
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

    step.name = 'create and start an engine campaign over three sensors';
    await waitFor('the simulated sensors in the inventory', async () => {
      const list = await apiGet('/api/devices?page_size=100');
      return SENSORS.every((e) => list.devices.some((d) => d.dev_eui === e));
    }, 30000);
    const firmware = await apiGet('/api/firmware');
    const image = firmware.images.find((i) => i.file_name === DEMO_IMAGE);
    assert.ok(image, `the demo image is in the library: ${JSON.stringify(firmware.images.map((i) => i.file_name))}`);
    const created = await apiPost('/api/campaigns', {
      name: 'progress', firmware_id: image.id, devices: SENSORS, driver: 'engine',
      unicast: { timeout_s: 20, attempts: 2 },
      request_frag_status: 'after_session',
      engine: { check: 'refuse', verify: true, reboot_delay_s: 20 },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id;
    const started = await apiPost(`/api/campaigns/${id}/start`, {});
    assert.equal(started.status, 202, JSON.stringify(started.body));
    await page.goto(`${server.base}/#/campaigns/${id}`);

    step.name = 'the progress panel while it runs: fragments x of y, the next step and its time, both clocks';
    const total = (await apiGet(`/api/campaigns/${id}`)).plan.total_fragments;
    const fragments = page.getByTestId('progress-fragments');
    // Right after the start the engine may not have stored its first state yet.
    await waitFor('fragments x of the planned total', async () => new RegExp(`^\\d+ of ${total} sent`).test(await fragments.textContent()));
    const next = page.getByTestId('progress-next');
    await waitFor('a next step with its time', async () => {
      const text = await next.textContent();
      return / at .+\((in .+|due now|.+ overdue)\)$/.test(text) && text;
    });
    assert.equal(await next.locator('time').count(), 1, 'the time is a <time> in the local zone');
    for (const id of ['progress-elapsed', 'progress-expected']) {
      const text = await page.getByTestId(id).textContent();
      assert.match(text, /simulated · .+ real$/, `${id} on both clocks: ${text}`);
    }
    await page.getByTestId('progress-session-start').locator('time').waitFor({ timeout: 120000 });
    assert.equal(await page.getByTestId('progress-session-end').locator('time').count(), 1, 'the session end is shown with its start');

    step.name = 'the campaign ends; every fragment is counted sent';
    const done = await waitFor('the campaign to end', async () => {
      const c = await apiGet(`/api/campaigns/${id}`);
      return c.state !== 'running' && c;
    }, 360000);
    assert.equal(done.progress_summary.phase, 'done', JSON.stringify(done.progress_summary));
    await page.locator('[data-testid="progress-summary"][data-phase="done"]').waitFor();
    assert.match(await fragments.textContent(), new RegExp(`^${total} of ${total} sent`));

    step.name = 'the device table: names, from -> to in the devices\' spelling, filters by stage and outcome';
    const facts = done.progress_summary.device_facts;
    await waitFor('the final stages in the table', async () => {
      const shown = await page.locator('[data-testid="campaign-device-row"]').evaluateAll((rows) => rows.map((r) => `${r.getAttribute('data-dev-eui')}:${r.getAttribute('data-stage')}`).sort());
      return JSON.stringify(shown) === JSON.stringify(facts.map((f) => `${f.dev_eui}:${f.stage}`).sort());
    }, 4000);
    const first = page.locator(`[data-testid="campaign-device-row"][data-dev-eui="${SENSORS[0]}"]`);
    assert.match(await first.textContent(), /sim-sensor-01/);
    assert.equal(await first.getByTestId('fact-to').textContent(), '1.3.0');
    assert.match(await first.getByTestId('fact-from').textContent(), /^\d+\.\d+\.\d+$/);
    const stagesSeen = [...new Set(facts.map((f) => f.stage))];
    const outcomesSeen = [...new Set(facts.map((f) => f.outcome || 'none'))];
    assert.ok(stagesSeen.length >= 2 && outcomesSeen.length >= 2, `the deaf sensor ends apart from the others: ${JSON.stringify(facts)}`);
    for (const stage of stagesSeen) {
      await page.getByTestId('facts-filter-stage').selectOption(stage);
      assert.deepEqual(await shownRows(page), facts.filter((f) => f.stage === stage).map((f) => f.dev_eui).sort(), `stage ${stage}`);
    }
    await page.getByTestId('facts-filter-stage').selectOption('');
    for (const outcome of outcomesSeen) {
      await page.getByTestId('facts-filter-outcome').selectOption(outcome);
      assert.deepEqual(await shownRows(page), facts.filter((f) => (f.outcome || 'none') === outcome).map((f) => f.dev_eui).sort(), `outcome ${outcome}`);
      assert.match(await page.getByTestId('facts-count').textContent(), /^\d+ of 3 devices$/);
    }
    await page.getByTestId('facts-filter-outcome').selectOption('');
    assert.equal((await shownRows(page)).length, 3);

    step.name = 'one device table: step times, methods and the status answer in the same rows';
    assert.equal(await page.locator('tr[data-dev-eui]').count(), 3, 'one row per device on the page');
    for (const d of done.devices) {
      const row = page.locator(`[data-testid="campaign-device-row"][data-dev-eui="${d.dev_eui}"]`);
      const times = await row.locator('td.nowrap').evaluateAll((tds) => tds.map((td) => td.textContent));
      assert.equal(times.length, 5, `five step times in the row of ${d.dev_eui}: ${times}`);
      assert.equal(times[4] !== '—', Boolean(d.completed_at), `completed time of ${d.dev_eui}: ${times}`);
      const methods = row.getByTestId('device-methods');
      if (d.check_method_used) assert.match(await methods.textContent(), /checked by (Version & Status|Firmware Management|no version method)/);
      else assert.equal(await methods.count(), 0);
      if (d.frag_status) {
        assert.equal(await row.getByTestId('frag-status-raw').textContent(), d.frag_status.raw_hex);
        assert.match(await row.getByTestId('device-frag-status').textContent(), /\((count|highest-N) reading/);
      }
    }
    assert.ok(done.devices.some((d) => d.check_method_used), `the engine names a check method: ${JSON.stringify(done.devices)}`);

    step.name = 'the stage chart fills its card and tells every stage apart';
    const widths = await page.getByTestId('stage-chart').evaluate((svg) => [svg.getBoundingClientRect().width, svg.parentElement.parentElement.getBoundingClientRect().width]);
    assert.ok(widths[0] >= widths[1] * 0.95, `chart ${widths[0]} px in a card body of ${widths[1]} px`);
    const swatches = await page.locator('.cp-legend .cp-swatch').evaluateAll((els) => els.map((e) => getComputedStyle(e).backgroundColor));
    assert.ok(swatches.length >= 2, `a legend: ${swatches}`);
    assert.equal(new Set(swatches).size, swatches.length, `one colour per stage: ${swatches}`);

    step.name = 'at 390 px: no horizontal scroll, every time labelled';
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByTestId('progress-summary').waitFor();
    await waitFor('the layout at 390 px', async () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 3000)
      .catch(async () => assert.fail(`page ${await page.evaluate(() => document.documentElement.scrollWidth)} px wide at 390 px`));
    const unlabelled = await page.evaluate(() => {
      const out = [];
      // The panel's times sit in a definition list: each has its term.
      for (const t of document.querySelectorAll('[data-testid="progress-summary"] time')) {
        const dd = t.closest('dd');
        const dt = dd && dd.previousElementSibling;
        if (!dt || !dt.textContent.trim()) out.push(`panel: ${t.textContent}`);
      }
      // The step times are table cells: on a phone each shows its column's name before it.
      for (const td of document.querySelectorAll('[data-testid="campaign-devices"] tbody td.nowrap')) {
        const before = getComputedStyle(td, '::before');
        if (before.display === 'none' || !before.content.includes(td.getAttribute('data-label'))) out.push(`steps: ${td.getAttribute('data-label')} = ${td.textContent}`);
      }
      return out;
    });
    assert.deepEqual(unlabelled, [], 'every time has its label');
    assert.deepEqual(pageErrors, [], 'no uncaught errors in the page');
  } catch (e) {
    const shot = path.join(tmp, 'progress-failure.png');
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log());
    console.error(`step "${step.name}" failed; screenshot: ${shot}; server log: ${path.join(tmp, 'lorafleet.log')}`);
    process.exitCode = 1;
    throw e;
  } finally {
    await context.close();
  }
});
