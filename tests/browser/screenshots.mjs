// Regenerates docs/screenshots/: the device list, a device page, the campaign form and a
// running campaign's page, each at 1440 and 390 px wide, from the real lorafleet binary with
// its default simulated fleet (20 devices, x30) and the demo firmware library. Run through
// scripts/screenshots (it builds the binary and installs playwright-core first).
//
//   node tests/browser/screenshots.mjs [out-dir]     (default: docs/screenshots)
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startLorafleet, stopLorafleet, sleep } from './lorafleet.mjs';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const OUT = path.resolve(process.argv[2] || path.join(REPO, 'docs', 'screenshots'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'screenshots-admin-password';
const SENSOR = '4c4653494d000001';
const WIDTHS = [[1440, 900], [390, 844]];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lorafleet-screenshots-'));
fs.mkdirSync(path.join(tmp, 'data'));
fs.mkdirSync(OUT, { recursive: true });

const auth = `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}`;
let server;

async function api(method, p, body) {
  const r = await fetch(server.base + p, {
    method, headers: { Authorization: auth, 'Content-Type': 'application/json' }, body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${await r.text()}`);
  return r.status === 204 ? null : r.json();
}

/** Waits for `fn` to be truthy (a condition with a deadline, never a fixed sleep). */
async function until(what, fn, ms = 60000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** The pages to picture: name, hash, and the element that says the page has loaded. */
function shots(campaignId, imageId) {
  return [
    ['device-list', '#/devices', '[data-testid="device-row"]'],
    ['device', `#/devices/${SENSOR}`, '[data-testid="uplink-time"]'],
    ['campaign-form', `#/campaigns/new?firmware=${imageId}`, '[data-testid="campaign-save"]'],
    ['campaign', `#/campaigns/${campaignId}`, '[data-testid="campaign-device-row"]'],
  ];
}

async function main() {
  server = await startLorafleet({
    LORAFLEET__SERVER__DATA_DIR: path.join(tmp, 'data'),
    LORAFLEET__AUTH__INITIAL_ADMIN_PASSWORD: PASSWORD,
  }, tmp);
  await until('the simulated fleet', async () => (await api('GET', '/api/devices')).total >= 20);
  // A running campaign with a few devices, so its page has stages to show.
  const image = (await api('GET', '/api/firmware')).images.find((i) => i.file_name === 'demo-sensor-1.3.0.bin');
  // Sensors only: the compatibility guard refuses the sensor image for the fleet's trackers.
  const sensors = (await api('GET', '/api/devices?limit=100&model=sim-sensor')).devices.map((d) => d.dev_eui).slice(0, 4);
  const c = await api('POST', '/api/campaigns', { name: 'Sensors to 1.3.0', firmware_id: image.id, devices: sensors, driver: 'engine' });
  await api('POST', `/api/campaigns/${c.id}/start`, {});
  await until('the campaign to get going', async () => (await api('GET', `/api/campaigns/${c.id}`)).devices.some((d) => d.stage !== 'mc_group_setup' && d.stage !== 'pending'), 120000);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  try {
    for (const [width, height] of WIDTHS) {
      const page = await browser.newPage({ viewport: { width, height } });
      await page.goto(server.base + '/');
      await page.getByTestId('login-username').fill('admin');
      await page.getByTestId('login-password').fill(PASSWORD);
      await page.getByTestId('login-submit').click();
      await page.getByTestId('current-user').waitFor();
      for (const [name, hash, ready] of shots(c.id, image.id)) {
        await page.evaluate((hh) => { location.hash = hh; }, hash);
        await page.locator(ready).first().waitFor({ timeout: 30000 });
        // The caret of the focused heading is not part of the picture.
        await page.evaluate(() => /** @type {HTMLElement | null} */ (document.activeElement)?.blur());
        const file = path.join(OUT, `${name}-${width}.png`);
        await page.screenshot({ path: file });
        console.log(`wrote ${path.relative(REPO, file)}`);
      }
      await page.close();
    }
  } finally {
    await browser.close();
  }
}

main()
  .then(async () => { await stopLorafleet(server); fs.rmSync(tmp, { recursive: true, force: true }); })
  .catch(async (e) => {
    console.error(e);
    if (server) { fs.writeFileSync(path.join(tmp, 'lorafleet.log'), server.log()); console.error(`server log: ${tmp}/lorafleet.log`); }
    await stopLorafleet(server);
    process.exit(1);
  });
