// End-to-end test of the shoal dashboard in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core), against real daemons and the
// real Docker engine. Run by tests/tests/ui.rs:
//
//   node tests/ui/dashboard.mjs URL REGISTRY PREFIX NODE OUTDIR
//
// URL is the login URL `shoal ui` printed, REGISTRY the open test registry
// (host:port), PREFIX a deployment prefix of this run, NODE the docker
// node's name, OUTDIR where screenshots go. Exits 0 when every step
// passed; prints each step and, at the end, figures (not asserted).
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const [url, registry, prefix, dockerNode, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: dashboard.mjs URL REGISTRY PREFIX NODE OUTDIR');
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const origin = new URL(url).origin;
const DEPLOY_WAIT = 240_000;
const WAIT = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.SHOAL_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless', '--disable-background-networking', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const pageErrors = [];
page.on('console', (m) => {
  if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push(m.text());
});
page.on('pageerror', (e) => pageErrors.push(String(e)));
page.setDefaultTimeout(WAIT);
// The dashboard's requests still open, and the last ones done, for the report of a failure.
const open = new Map();
const finished = [];
// Every path the page asked for, in order (to count its requests).
const asked = [];
page.on('request', (r) => { open.set(r, Date.now()); asked.push(new URL(r.url()).pathname); });
const askedFor = (re) => asked.filter((p) => re.test(p)).length;
const close = (r, how) => {
  const t = open.get(r);
  open.delete(r);
  finished.push(`${r.method()} ${new URL(r.url()).pathname} ${how} in ${Date.now() - t} ms`);
  if (finished.length > 40) finished.shift();
};
page.on('requestfinished', (r) => close(r, 'done'));
page.on('requestfailed', (r) => close(r, 'failed'));

let step = 0;
function log(what) {
  step += 1;
  console.log(`step ${step}: ${what}`);
}
async function shot(name, p = page) {
  await p.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });
}
function fail(msg) {
  throw new Error(msg);
}
/** The text of the flash (success) region after an action; fails on a refusal. */
async function done() {
  await page.waitForFunction(() => !document.getElementById('flash').hidden || !document.getElementById('problem').hidden);
  const problem = page.locator('#problem');
  if (await problem.isVisible()) fail(`refused: ${await problem.textContent()}`);
  return page.locator('#flash').textContent();
}
async function submit(formLabel, values) {
  const f = page.getByRole('form', { name: formLabel });
  for (const [label, value] of Object.entries(values)) {
    const input = f.getByLabel(label, { exact: true });
    if ((await input.evaluate((el) => el.tagName)) === 'SELECT') await input.selectOption(value);
    else await input.fill(value);
  }
  await f.locator('button[type=submit]').click();
  return done();
}
async function go(hash, heading) {
  await page.goto(`${origin}/${hash}`);
  await page.getByRole('heading', { level: 1, name: heading }).waitFor();
}
async function status() {
  return page.locator('#deployment-status [data-status]').getAttribute('data-status');
}
async function waitStatus(want, timeout = DEPLOY_WAIT) {
  await page.waitForSelector(`#deployment-status [data-status="${want}"]`, { timeout }).catch(async () => {
    fail(`the deployment never showed ${want} (it shows ${await status()}); reason: ${await page.locator('dl.facts').first().textContent()}`);
  });
}
/** Marks the page so a reload (navigation) would be noticed. */
async function markNoReload() {
  await page.evaluate(() => { window.__noReload = true; });
}
async function assertNoReload() {
  if (!(await page.evaluate(() => window.__noReload === true))) fail('the page was reloaded');
}

try {
  // 1. Log in with the printed URL.
  log('log in with the printed URL');
  const t0 = Date.now();
  await page.goto(url);
  await page.getByRole('heading', { level: 1, name: 'Overview' }).waitFor();
  if (new URL(page.url()).search !== '') fail(`the token stayed in the address bar: ${page.url()}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'shoal_ui');
  if (!session || !session.httpOnly || session.sameSite !== 'Strict') fail(`bad session cookie: ${JSON.stringify(cookies)}`);
  await page.locator('#main table tbody tr').first().waitFor();
  const paint = await page.evaluate(() => {
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    const res = performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'));
    return { fcp: fcp ? Math.round(fcp.startTime) : null, bytes: res.reduce((n, r) => n + (r.decodedBodySize || 0), 0) };
  });
  const loginMs = Date.now() - t0;
  const nodesText = await page.locator('#main').textContent();
  if (!nodesText.includes(dockerNode) || !nodesText.includes('docker')) fail(`the overview lacks node ${dockerNode}: ${nodesText}`);
  await page.waitForSelector('#main [data-status="connected"]');
  log('see each node\'s load from its heartbeat');
  // Both nodes (this one and the docker node) carry CPU, memory and disk.
  for (const what of ['cpu', 'memory', 'disk']) {
    await page.waitForFunction((w) => {
      const cells = [...document.querySelectorAll(`#main [data-load="${w}"]`)];
      return cells.length >= 2 && cells.every((c) => /\d+% of \d/.test(c.textContent));
    }, what);
  }
  const nodeRow = page.locator('#main table tbody tr', { hasText: dockerNode }).first();
  const rowText = await nodeRow.textContent();
  if (!/\d+% of \d+\.\dG/.test(rowText)) fail(`node ${dockerNode} shows no memory or disk load: ${rowText}`);
  await shot('overview');

  // 2. A registry, then product, version and image.
  log('add the open registry');
  await go('#/registries', 'Registries');
  await submit('Add a registry', { Name: 'open', Kind: 'v2', URL: registry });
  await page.getByRole('cell', { name: 'open', exact: true }).waitFor();
  log('browse the registry\'s tags');
  const tagsForm = page.getByRole('form', { name: 'List an image\'s tags' });
  await tagsForm.getByLabel('Registry', { exact: true }).fill('open');
  await tagsForm.getByLabel('Image', { exact: true }).fill('shoal-test/busybox');
  await tagsForm.locator('button[type=submit]').click();
  await page.locator('li', { hasText: /^1\.1$/ }).waitFor();
  await page.locator('li', { hasText: /^1\.0$/ }).waitFor();
  await shot('registries');

  log('create product, version and image');
  await go('#/products', 'Products');
  await submit('Create a product', { Name: 'shop', Description: 'made in the dashboard' });
  await page.getByRole('link', { name: 'shop', exact: true }).waitFor();
  await shot('products');
  await page.getByRole('link', { name: 'shop', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'Product shop' }).waitFor();
  await submit('Create a version', { Name: '1.0.0' });
  await page.getByRole('link', { name: '1.0.0', exact: true }).waitFor();
  await shot('product');
  await page.getByRole('link', { name: '1.0.0', exact: true }).click();
  await page.getByRole('heading', { level: 1, name: 'shop 1.0.0' }).waitFor();
  await submit('Add an image', { 'Image reference': `${registry}/shoal-test/busybox:1.0`, 'Container name': 'worker' });
  await page.getByRole('cell', { name: 'worker', exact: true }).waitFor();
  const line = 'hello from the shoal dashboard';
  await submit('Edit an image config', {
    Container: 'worker',
    // One line at start, then a numbered tick every 2 s (lines written
    // while a page follows the log).
    'Command (one argument per line; replaces the command)': `sh\n-c\ntrap 'exit 0' TERM; echo ${line} $GREETING; i=0; while true; do sleep 2 & wait $!; i=$((i+1)); echo tick $i; done`,
    'Env (K=V per line)': 'GREETING=v{{version}}',
  });
  await page.getByRole('cell', { name: /hello from the shoal dashboard/ }).waitFor();
  await shot('version');

  // 3. Deploy to the docker node and watch it succeed without a reload.
  log('deploy 1.0.0 and watch it succeed live');
  await submit('Create a deployment', { Node: dockerNode, Prefix: prefix });
  await page.getByRole('heading', { level: 1, name: /Deployment/ }).waitFor();
  const first = decodeURIComponent(page.url().split('#/deployments/')[1]);
  await waitStatus('preparing', WAIT);
  await markNoReload();
  await page.getByRole('button', { name: 'Start', exact: true }).click();
  await done();
  await waitStatus('successful');
  await assertNoReload();
  log('see the container log line');
  await page.waitForFunction((l) => document.getElementById('logs').textContent.includes(l), `${line} v1.0.0`, { timeout: WAIT });
  await page.getByRole('cell', { name: 'running' }).first().waitFor();
  await shot('deployment');

  log('a log line written after the page opened appears without a reload or a new request');
  const ticks = () => page.evaluate(() => {
    const n = [...document.getElementById('logs').textContent.matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
    return n.length ? Math.max(...n) : 0;
  });
  await page.waitForFunction(() => /tick \d+/.test(document.getElementById('logs').textContent), null, { timeout: WAIT });
  const seenTick = await ticks();
  const logRequests = askedFor(/^\/api\/logs\//);
  await markNoReload();
  await page.waitForFunction((n) => document.getElementById('logs').textContent.includes(`tick ${n}`), seenTick + 2, { timeout: WAIT });
  await assertNoReload();
  if (askedFor(/^\/api\/logs\//) !== logRequests) fail('the page asked for the logs again instead of following them');

  log('expected and actual state: ok, then drift after the container is killed outside shoal');
  await page.waitForSelector('[data-container="worker"][data-drift="no"]', { timeout: WAIT });
  execFileSync('docker', ['kill', `${prefix}-worker`]);
  await page.waitForSelector('[data-container="worker"][data-drift="yes"]', { timeout: WAIT });
  await page.waitForSelector('#drift-summary [data-status="drift"]');
  const actual = await page.locator('#main [data-actual]').first().getAttribute('data-actual');
  if (actual !== 'exited') fail(`the killed container shows actual ${actual}, not exited`);
  await assertNoReload();
  await shot('deployment-drift');

  log('restart the container and see it start again');
  await page.getByRole('button', { name: `restart container ${prefix}-worker` }).click();
  const asked = await done();
  if (!asked.includes(`restart ${prefix}-worker`)) fail(`the restart said: ${asked}`);
  await page.waitForFunction((l) => document.getElementById('logs').textContent.split(l).length > 2, `${line} v1.0.0`, { timeout: WAIT });
  log('the drift clears once the container runs again');
  await page.waitForSelector('[data-container="worker"][data-drift="no"]', { timeout: WAIT });
  await page.waitForSelector('#drift-summary [data-status="ok"]');

  // 4. The product's description and a version's changelog, edited.
  log('edit the product description and see it after the save');
  await go('#/products/shop', 'Product shop');
  await page.waitForFunction(() => document.querySelector('textarea[name=description]').value === 'made in the dashboard');
  const description = 'edited in the dashboard';
  await submit('Edit the description', { Description: description });
  await page.locator('#product-description', { hasText: description }).waitFor();
  log('edit the changelog of 1.0.0');
  const notes = 'first release, edited in the dashboard';
  await submit('Edit a version\'s changelog', { Version: '1.0.0', Changelog: notes });
  await go('#/products/shop/versions/1.0.0', 'shop 1.0.0');
  await page.locator('dl.facts dd', { hasText: notes }).waitFor();

  log('an idle page makes no requests; a change made elsewhere still arrives without a reload');
  await go('#/products/shop', 'Product shop');
  await page.locator('#product-description', { hasText: description }).waitFor();
  await page.waitForTimeout(1000);
  // The op count, read outside the page (node's fetch): an op landing in
  // the window (none is expected) would rightly make the page read again.
  const cookieHeader = { cookie: (await context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ') };
  const opsNow = async () => (await (await fetch(`${origin}/api/team`, { headers: cookieHeader })).json()).ops;
  const opsBefore = await opsNow();
  const before = asked.length;
  await page.waitForTimeout(6000);
  const idle = asked.slice(before);
  const idleOps = (await opsNow()) - opsBefore;
  if (idleOps === 0 && idle.length) fail(`an idle product page made requests: ${idle.join(' ')}`);
  console.log(`figures: an idle product page made ${idle.length} requests in 6 s (${idleOps} ops landed meanwhile)`);
  await markNoReload();
  const elsewhere = await context.newPage();
  await elsewhere.goto(`${origin}/#/audit`);
  await elsewhere.getByRole('heading', { level: 1, name: 'Audit log' }).waitFor();
  const fromElsewhere = 'changed from another page';
  const feeds = askedFor(/^\/api\/events$/);
  const otherStatus = await elsewhere.evaluate(async (text) => {
    const { csrf } = await (await fetch('/api/session')).json();
    const r = await fetch('/api/act', {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-shoal-csrf': csrf },
      body: JSON.stringify({ op: 'product.update', name: 'shop', description: text }),
    });
    return r.status;
  }, fromElsewhere);
  if (otherStatus !== 200) fail(`the write from the other page answered ${otherStatus}`);
  await page.locator('#product-description', { hasText: fromElsewhere }).waitFor();
  await assertNoReload();
  if (askedFor(/^\/api\/events$/) !== feeds) fail('the page opened its change feed again');
  await elsewhere.close();
  await submit('Edit the description', { Description: description });
  await page.locator('#product-description', { hasText: description }).waitFor();
  await shot('product-edited');

  // 5. A second version, deployed over the first; then roll back.
  log('increase to 1.1.0 and deploy it over 1.0.0');
  await submit('Increase a version', { 'From version': '1.0.0', 'New name': '1.1.0' });
  await page.getByRole('button', { name: 'Make 1.1.0 the default version' }).click();
  const made = await done();
  if (!made.includes('1.1.0')) fail(`making 1.1.0 the default said: ${made}`);
  await page.locator('dl.facts dd', { hasText: /^1\.1\.0$/ }).waitFor();
  await go('#/products/shop/versions/1.1.0', 'shop 1.1.0');
  await submit('Create a deployment', { Node: dockerNode, Prefix: prefix });
  await page.getByRole('heading', { level: 1, name: /Deployment/ }).waitFor();
  const second = decodeURIComponent(page.url().split('#/deployments/')[1]);
  if (second === first) fail('the second deployment has the first one\'s id');
  await markNoReload();
  await page.getByRole('button', { name: 'Start', exact: true }).click();
  await done();
  await waitStatus('successful');
  await page.waitForFunction((l) => document.getElementById('logs').textContent.includes(l), `${line} v1.1.0`, { timeout: WAIT });

  log('roll back and see the statuses change live');
  await page.getByRole('button', { name: 'Roll back' }).click();
  const rolled = await done();
  if (!rolled.includes('1.0.0')) fail(`the rollback did not name version 1.0.0: ${rolled}`);
  await waitStatus('downgraded');
  await assertNoReload();
  await shot('deployment-rolled-back');
  await go(`#/deployments/${first}`, /Deployment/);
  await waitStatus('successful');
  const tries = await page.locator('#deployment-tries').textContent();
  if (tries !== '2') fail(`the rolled-back deployment shows ${tries} tries, not 2`);

  await go('#/deployments', 'Deployments');
  await page.locator('#main table [data-status="downgraded"]').waitFor();
  await shot('deployments');
  await go(`#/deployments/${first}`, /Deployment/);

  // 6. A refused action shows the rule's message.
  log('a refused action shows the rule\'s message');
  await page.getByRole('button', { name: 'Start', exact: true }).click();
  const refusal = page.locator('#problem');
  await refusal.waitFor({ state: 'visible' });
  const msg = await refusal.textContent();
  if (!msg.includes('preparing, failed or obsolete')) fail(`the refusal does not carry the rule's message: ${msg}`);
  if (await status() !== 'successful') fail('a refused start changed the status');
  await shot('refused');

  log('delete the downgraded deployment');
  page.once('dialog', (d) => d.accept());
  await go(`#/deployments/${second}`, /Deployment/);
  await waitStatus('downgraded', WAIT);
  await page.getByRole('button', { name: 'Delete' }).click();
  const deleted = await done();
  if (!deleted.includes('deleted deployment')) fail(`the delete said: ${deleted}`);
  await page.getByText('This deployment no longer exists').waitFor();

  // 7. Each action is in the audit log, and the log verifies.
  log('see each action in the audit log and verify it');
  await go('#/audit', 'Audit log');
  await page.locator('#main table tbody tr').first().waitFor();
  const audit = await page.locator('#main table').textContent();
  for (const action of ['registry.add', 'product.create', 'product.update', 'version.update', 'version.create', 'image.add', 'image.config', 'container.command',
    'version.increase', 'version.default', 'deployment.create', 'deployment.start', 'deployment.finish', 'deployment.rollback', 'deployment.delete']) {
    if (!audit.includes(action)) fail(`the audit log lacks ${action}`);
  }
  await page.getByRole('button', { name: 'Verify the log' }).click();
  await page.locator('#verify-result').getByText('The chain verifies').waitFor();
  await shot('audit');
  log('filter the audit log');
  const filter = page.getByRole('form', { name: 'Filter the audit log' });
  await filter.getByLabel('Action', { exact: true }).fill('deployment.');
  await filter.locator('button[type=submit]').click();
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('#main table tbody tr td:nth-child(3)')];
    return cells.length > 0 && cells.every((c) => c.textContent.startsWith('deployment.'));
  });

  // 8. Members: an invite's ticket.
  log('create an invite and see its ticket');
  await go('#/members', 'Members and invites');
  await submit('Create an invite', { Role: 'user' });
  const ticket = await page.locator('#ticket').inputValue();
  if (!ticket.startsWith('shoal1')) fail(`no ticket shown: ${ticket}`);
  await page.getByRole('cell', { name: 'open' }).first().waitFor();
  log('change a member\'s role');
  // The other member (an admin: the test team's second machine's person).
  const roleSelect = page.locator('select[aria-label^="Role of "]').first();
  const other = (await roleSelect.getAttribute('aria-label')).slice('Role of '.length);
  await roleSelect.selectOption('user');
  await page.getByRole('button', { name: `Change the role of ${other}` }).click();
  const changed = await done();
  if (!changed.includes(`${other} is now user`)) fail(`the role change said: ${changed}`);
  await page.waitForFunction((name) => {
    const sel = document.querySelector(`select[aria-label="Role of ${name}"]`);
    const chosen = sel && sel.querySelector('option[selected]');
    return chosen && chosen.value === 'user';
  }, other);
  await shot('members');

  // 9. Phone width.
  log('phone width');
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  await phone.goto(`${origin}/#/deployments/${first}`);
  await phone.locator('#deployment-status [data-status="successful"]').waitFor();
  const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 1) fail(`the deployment page is ${overflow}px wider than a phone`);
  await shot('phone-deployment', phone);
  await phone.close();

  // 10. Writes without the cookie, from another origin or without the
  // anti-forgery token are refused, and change nothing.
  log('forged writes are refused');
  const evil = { op: 'product.create', name: 'forged' };
  const post = (headers) => fetch(`${origin}/api/act`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(evil),
  });
  const cookie = `shoal_ui=${session.value}`;
  const csrf = await page.evaluate(async () => (await (await fetch('/api/session')).json()).csrf);
  const cases = [
    ['no cookie', {}, 401],
    ['no cookie, right token', { origin, 'x-shoal-csrf': csrf }, 401],
    ['another origin', { cookie, origin: 'http://evil.example', 'x-shoal-csrf': csrf }, 403],
    ['no origin', { cookie, 'x-shoal-csrf': csrf }, 403],
    ['no anti-forgery token', { cookie, origin }, 403],
    ['a wrong anti-forgery token', { cookie, origin, 'x-shoal-csrf': 'f'.repeat(64) }, 403],
  ];
  for (const [what, headers, want] of cases) {
    const r = await post(headers);
    if (r.status !== want) fail(`a write with ${what} answered ${r.status}, not ${want}`);
  }
  const reread = await fetch(`${url}`, { redirect: 'manual' });
  if (reread.status !== 403) fail(`the login URL worked twice (${reread.status})`);
  const products = await (await fetch(`${origin}/api/team/products`, { headers: { cookie } })).json();
  if (products.some((p) => p.name === 'forged')) fail('a refused write created a product');
  const secret = await fetch(`${origin}/api/team/bootstrap`, { headers: { cookie } });
  if (secret.status !== 404) fail(`the network key is readable through the dashboard (${secret.status})`);
  // The same write with everything right is taken (so the refusals above are the checks, not a broken route).
  const ok = await post({ cookie, origin, 'x-shoal-csrf': csrf, 'sec-fetch-site': 'same-origin' });
  if (ok.status !== 200) fail(`the well-formed write answered ${ok.status}: ${await ok.text()}`);

  if (pageErrors.length) fail(`the page logged errors: ${pageErrors.join('\n')}`);
  console.log(`figures: login to first page painted ${paint.fcp} ms (FCP), overview with data ${loginMs} ms, page weight ${paint.bytes} bytes`);
  console.log(`ui test passed: ${step} steps`);
  await browser.close();
  process.exit(0);
} catch (e) {
  console.error(`ui test failed at step ${step}: ${e.stack || e}`);
  console.error(`page errors:\n  ${pageErrors.join('\n  ')}`);
  console.error(`last requests:\n  ${finished.join('\n  ')}`);
  console.error(`open requests:\n  ${[...open].map(([r, t]) => `${r.method()} ${new URL(r.url()).pathname} for ${Date.now() - t} ms`).join('\n  ')}`);
  try { await shot('failure'); } catch (_) { /* the page may be gone */ }
  await browser.close();
  process.exit(1);
}
