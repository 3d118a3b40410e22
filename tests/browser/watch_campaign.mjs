// A browser watching one campaign's page, for a Rust test that drives the rest (the
// two-instance test in crates/lorafleet/tests/leases.rs kills the campaign's owner and reads
// what the browser on the survivor saw). Not a test of its own.
//
//   node watch_campaign.mjs BASE_URL CAMPAIGN_ID ADMIN_PASSWORD
//
// Logs in as admin, opens the campaign's page and prints `ready` once the page is live; from
// then on it notes every change the page shows (the title with the state, each device's stage
// and outcome in the progress table, the log), without ever reloading it. When its stdin
// closes it waits (up to 10 s) for the page to show the campaign over, prints one line
// `seen <JSON>`: {"snapshots": [...], "loads": reloads, "errors": [...]} and exits.
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const [base, id, password] = process.argv.slice(2);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
page.setDefaultTimeout(20000);
const errors = [];
page.on('pageerror', (e) => errors.push(e.message));
let loads = 0;
page.on('load', () => { loads += 1; });

await page.goto(base + '/');
await page.getByTestId('login-username').fill('admin');
await page.getByTestId('login-password').fill(password);
await page.getByTestId('login-submit').click();
await page.getByTestId('current-user').filter({ hasText: 'admin' }).waitFor();
await page.goto(`${base}/#/campaigns/${id}`);
await page.getByTestId('campaign-title').waitFor();
await page.locator('[data-testid="live-indicator"][data-state="live"]').waitFor();
// The loads so far were the login and the campaign page; any later one is a reload.
loads = 0;
process.stdout.write('ready\n');

/** What the page shows now, as one comparable value. */
const snapshot = () => page.evaluate(() => ({
  title: document.querySelector('[data-testid="campaign-title"]')?.textContent ?? '',
  devices: [...document.querySelectorAll('[data-testid="campaign-device-row"]')]
    .map((r) => `${r.getAttribute('data-dev-eui')}:${r.getAttribute('data-stage')}:${r.getAttribute('data-outcome')}`)
    .sort(),
  log: [...document.querySelectorAll('[data-testid="campaign-log-row"] .event-msg')].map((e) => e.textContent),
}));

const snapshots = [];
let stopping = false;
process.stdin.on('end', () => { stopping = true; });
process.stdin.on('close', () => { stopping = true; });
process.stdin.resume();
while (!stopping) {
  const s = await snapshot().catch((e) => ({ error: String(e) }));
  const last = snapshots[snapshots.length - 1];
  if (JSON.stringify(s) !== JSON.stringify(last)) snapshots.push(s);
  await new Promise((r) => setTimeout(r, 50));
}
// The test saw the campaign end through the API: give the page up to 10 s to show it too.
await page.waitForFunction(
  () => /completed|failed|cancelled/.test(document.querySelector('[data-testid="campaign-title"]')?.textContent ?? ''),
  null, { timeout: 10000 },
).catch(() => {});
const final = await snapshot().catch((e) => ({ error: String(e) }));
if (JSON.stringify(final) !== JSON.stringify(snapshots[snapshots.length - 1])) snapshots.push(final);
process.stdout.write(`seen ${JSON.stringify({ snapshots, loads, errors })}\n`);
await browser.close();
process.exit(0);
