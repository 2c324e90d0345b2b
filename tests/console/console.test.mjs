// Browser tests of the web console: playwright-core drives Debian's
// Chromium (headless) against the real `tsstore` binary on a loopback
// port. Run with `make test-console` (or `npm test` here once the binary
// is built; TSSTORE_BIN overrides its path).
//
// Screenshots at 390 px and 1280 px wide go to target/console-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(root, 'target');
const BIN = path.resolve(process.env.TSSTORE_BIN || path.join(targetDir, 'debug', 'tsstore'));
const SHOTS = path.join(targetDir, 'console-screenshots');
const ADMIN = 'console-test-admin-key-0123456789';
const XSS_SCRIPT = '<script>alert(1)</script>';
const XSS_IMG = '<img src=x onerror=alert(1)>';

let server, base, browser, dataDir;

function startServer() {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsstore-console-'));
  const env = { ...process.env, TSSTORE_ADMIN_KEY: ADMIN, TSSTORE_LOG: 'info' };
  for (const k of ['TSSTORE_CONFIG', 'TSSTORE_DATA_PATH', 'TSSTORE_HOST', 'TSSTORE_PORT', 'TSSTORE_SOCKET_PATH', 'TSSTORE_TLS_CERT', 'TSSTORE_TLS_KEY']) delete env[k];
  const child = spawn(BIN, ['serve', '--host', '127.0.0.1', '--port', '0', '--no-socket', '--data-path', path.join(dataDir, 'data')],
    { cwd: dataDir, env, stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error('server did not start:\n' + log)), 20000);
    child.stderr.on('data', (chunk) => {
      log += chunk.toString();
      // eslint-disable-next-line no-control-regex
      const m = log.replace(/\x1b\[[0-9;]*m/g, '').match(/Starting tsstore server on (\S+)/);
      if (m && !base) {
        clearTimeout(timer);
        base = 'http://' + m[1];
        resolve(child);
      }
    });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('exit', (code) => { clearTimeout(timer); if (!base) reject(new Error('server exited ' + code + ':\n' + log)); });
  });
}

/** Calls the REST API with a key (not through the browser). */
async function rest(method, p, { key, admin, body, type } = {}) {
  const headers = {};
  if (key) headers['X-API-Key'] = key;
  if (admin) headers['X-Admin-Key'] = ADMIN;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = type || 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  const r = await fetch(base + p, { method, headers, body: payload });
  const text = await r.text();
  return { status: r.status, text };
}

async function createStore(name, extra = {}) {
  const r = await rest('POST', '/api/stores', { admin: true, body: { name, num_blocks: 64, ...extra } });
  assert.equal(r.status, 201, r.text);
  return JSON.parse(r.text).api_key;
}

/** A fresh browser context (its own cookies) and a page in it; dialogs
 * are recorded (an XSS payload that ran would open one). */
async function newPage(width = 1280) {
  const context = await browser.newContext({ viewport: { width, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.dialogs = [];
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  // Script errors and failed requests. The outbound connections API may
  // be missing from this build (the pages say so): its 404s are expected.
  page.consoleErrors = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) page.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => page.consoleErrors.push(String(e)));
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().includes('/ws/connections')) page.consoleErrors.push(r.status() + ' ' + r.url());
  });
  return page;
}

async function signIn(page, key, store = '') {
  await page.goto(base + '/login');
  await page.fill('#key', key);
  if (store) await page.fill('#store', store);
  const posted = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login');
  await page.click('button[type=submit]');
  const r = await posted;
  if (r.status() === 303) await page.waitForURL(base + '/');
  await page.waitForLoadState('load');
}

async function shoot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name + '.png'), fullPage: true });
}

before(async () => {
  assert.ok(fs.existsSync(BIN), 'build the binary first: ' + BIN);
  server = await startServer();
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // Playwright gives every launch a fresh temporary user-data-dir.
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test('a wrong key is refused, the admin key signs in', async () => {
  const page = await newPage();
  await signIn(page, 'not-the-admin-key-000000');
  assert.equal(new URL(page.url()).pathname, '/login');
  assert.match(await page.textContent('#login-error'), /Invalid key/);
  await signIn(page, ADMIN);
  assert.equal(new URL(page.url()).pathname, '/');
  assert.equal(await page.textContent('h1'), 'Stores');
  // Nothing of the key is kept by the browser but the session cookie.
  const cookies = await page.context().cookies();
  assert.deepEqual(cookies.map((c) => c.name).sort(), ['tsstore_session']);
  const session = cookies[0];
  assert.equal(session.httpOnly, true);
  assert.equal(session.sameSite, 'Strict');
  const stored = await page.evaluate(() => JSON.stringify(localStorage) + JSON.stringify(sessionStorage));
  assert.ok(!stored.includes(ADMIN));
  await page.context().close();
});

test('the overview lists a store created through the API', async () => {
  const key = await createStore('sensors');
  const page = await newPage();
  await signIn(page, ADMIN);
  const row = page.locator('#stores tbody tr', { hasText: 'sensors' });
  await row.waitFor();
  assert.match(await row.textContent(), /json/);
  assert.match(await page.textContent('#server'), /Version/);
  // The figures follow new data without a reload.
  assert.equal((await row.locator('td.objects').textContent()).trim(), '0');
  await rest('POST', '/api/stores/sensors/data', { key, body: { data: { temp: 1 } } });
  await page.waitForFunction(() => document.querySelector('#stores tr[data-store=sensors] td.objects').textContent === '1', null, { timeout: 7000 });
  await shoot(page, 'overview-1280');
  await page.setViewportSize({ width: 390, height: 844 });
  await shoot(page, 'overview-390');
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

test('inserted data appears in the live tail and the chart within 2 s', async () => {
  const key = await createStore('live');
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/live');
  await page.waitForFunction(() => document.getElementById('live-status').textContent === 'live');
  const blank = await page.evaluate(() => document.getElementById('chart').toDataURL());
  const started = Date.now();
  for (let i = 0; i < 3; i++) {
    const r = await rest('POST', '/api/stores/live/data', { key, body: { data: { temp: 20 + i, hum: 40 - i, note: 'tick ' + i } } });
    assert.ok(r.status < 300, r.text);
  }
  await page.locator('#tail tbody tr', { hasText: 'tick 2' }).waitFor({ timeout: 2000 });
  await page.locator('#chart-fields input[value=temp]').waitFor({ timeout: 2000 });
  assert.ok(Date.now() - started < 2000 + 500, 'shown within 2 s');
  // Newest first.
  assert.match(await page.locator('#tail tbody tr').first().textContent(), /tick 2/);
  assert.equal(await page.isChecked('#chart-fields input[value=temp]'), true);
  await page.waitForFunction((b) => document.getElementById('chart').toDataURL() !== b, blank, { timeout: 2000 });
  // Pause holds new rows back until resumed.
  await page.click('#pause');
  await rest('POST', '/api/stores/live/data', { key, body: { data: { temp: 30, note: 'while paused' } } });
  await page.waitForTimeout(300);
  assert.equal(await page.locator('#tail tbody tr', { hasText: 'while paused' }).count(), 0);
  await page.click('#pause');
  await page.locator('#tail tbody tr', { hasText: 'while paused' }).waitFor({ timeout: 2000 });
  await shoot(page, 'store-1280');
  await page.setViewportSize({ width: 390, height: 844 });
  await shoot(page, 'store-390');
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

test('a range query returns the right rows and the downloads export the whole range', async () => {
  const key = await createStore('hist');
  const t0 = BigInt(Date.now() - 60000) * 1000000n;
  const ts = [];
  for (let i = 0; i < 6; i++) {
    const t = t0 + BigInt(i) * 1000000000n;
    ts.push(t.toString());
    const r = await rest('POST', '/api/stores/hist/data', { key, body: `{"timestamp":${t},"data":{"n":${i},"label":"row, \\"${i}\\""}}` });
    assert.ok(r.status < 300, r.text);
  }
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/hist/query');
  await page.selectOption('#q-mode', 'range');
  await page.fill('#q-start', ts[1]);
  await page.fill('#q-end', ts[4]);
  await page.click('#query button[type=submit]');
  await page.waitForFunction(() => /object\(s\)/.test(document.getElementById('q-status').textContent));
  const shown = await page.$$eval('#results tbody tr', (rows) => rows.map((r) => r.cells[1].textContent));
  assert.deepEqual(shown, ts.slice(1, 5));
  // The downloads are the server's export of the whole range, not the
  // page shown: two rows per page, four in the files.
  await page.fill('#q-limit', '2');
  await page.click('#query button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#results tbody tr').length === 2);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#dl-csv')]);
  assert.equal(download.suggestedFilename(), `hist-${ts[1]}-${ts[4]}.csv`);
  const csv = fs.readFileSync(await download.path(), 'utf8');
  const iso = (t) => new Date(Number(BigInt(t) / 1000000n)).toISOString().replace('Z', '000000Z');
  const rows = [1, 2, 3, 4].map((i) => `${ts[i]},${iso(ts[i])},${i},"row, ""${i}"""`);
  assert.equal(csv, ['timestamp,time,n,label', ...rows].join('\r\n') + '\r\n');
  const [nd] = await Promise.all([page.waitForEvent('download'), page.click('#dl-ndjson')]);
  assert.equal(nd.suggestedFilename(), `hist-${ts[1]}-${ts[4]}.ndjson`);
  const lines = fs.readFileSync(await nd.path(), 'utf8').trim().split('\n');
  assert.equal(lines.length, 4);
  assert.equal(lines[0], `{"timestamp":${ts[1]},"data":{"n":1,"label":"row, \\"1\\""}}`);
  // Paging: two per page.
  await page.fill('#q-limit', '2');
  await page.click('#query button[type=submit]');
  await page.waitForFunction(() => /page 1/.test(document.getElementById('q-status').textContent));
  await page.click('#q-next');
  await page.waitForFunction(() => /page 2/.test(document.getElementById('q-status').textContent));
  const page2 = await page.$$eval('#results tbody tr', (rows) => rows.map((r) => r.cells[1].textContent));
  assert.deepEqual(page2, ts.slice(3, 5));
  await shoot(page, 'query-1280');
  await page.setViewportSize({ width: 390, height: 844 });
  await shoot(page, 'query-390');
  await page.context().close();
});

test('creating and deleting an outbound connection', async () => {
  const key = await createStore('outbound');
  const probe = await rest('GET', '/api/stores/outbound/ws/connections', { key });
  assert.equal(probe.status, 200, probe.text);
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/outbound/connections');
  await page.selectOption('#c-mode', 'push');
  await page.fill('#c-url', 'ws://127.0.0.1:9/api/stores/x/ws/write');
  await page.fill('#c-headers', 'X-API-Key: tsstore_peer');
  await page.click('#conn-create button[type=submit]');
  const row = page.locator('#connections tbody tr', { hasText: 'ws://127.0.0.1:9/' });
  await row.waitFor({ timeout: 3000 });
  await row.locator('button', { hasText: 'Delete' }).click();
  await row.waitFor({ state: 'detached', timeout: 3000 });
  const list = JSON.parse((await rest('GET', '/api/stores/outbound/ws/connections', { key })).text);
  assert.equal(list.connections.length, 0);
  await page.context().close();
});

test('the connections page against the documented API shapes (mocked)', async () => {
  // docs/compatibility.md section 6.3, answered by the test itself: pins
  // exactly what the page sends (headers, filter, nanosecond from).
  await createStore('mocked');
  const list = [];
  const bodies = [];
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.route('**/api/stores/mocked/ws/connections**', async (route) => {
    const req = route.request();
    const json = (status, v) => route.fulfill({ status, contentType: 'application/json', body: typeof v === 'string' ? v : JSON.stringify(v) });
    if (req.method() !== 'GET') assert.ok(req.headers()['x-csrf-token'], 'CSRF header sent');
    if (req.method() === 'GET') return json(200, { connections: list });
    if (req.method() === 'POST') {
      bodies.push(req.postData());
      const b = JSON.parse(req.postData());
      const c = { id: '3f2a9c1b', mode: b.mode, url: b.url, from: b.from, format: b.format, status: 'disconnected',
        created_at: new Date().toISOString(), last_timestamp: 0, messages_sent: 0, errors: 0 };
      list.push(c);
      return json(201, c);
    }
    if (req.method() === 'DELETE') {
      const id = new URL(req.url()).pathname.split('/').pop();
      const i = list.findIndex((c) => c.id === id);
      if (i < 0) return json(404, { error: 'connection not found' });
      list.splice(i, 1);
      return json(200, { message: 'connection deleted' });
    }
    return route.continue();
  });
  await page.goto(base + '/stores/mocked/connections');
  await page.selectOption('#c-mode', 'push');
  await page.fill('#c-url', 'wss://peer.example/api/stores/x/ws/write');
  await page.fill('#c-from', '1795693581488000001');
  await page.fill('#c-headers', 'X-API-Key: tsstore_peer\nX-Site: north');
  await page.fill('#c-filter', 'Building A');
  await page.check('#c-ic');
  await page.click('#conn-create button[type=submit]');
  const row = page.locator('#connections tbody tr', { hasText: '3f2a9c1b' });
  await row.waitFor({ timeout: 3000 });
  const sent = bodies[0];
  assert.ok(sent.includes('"from":1795693581488000001'), 'from sent exactly: ' + sent);
  const b = JSON.parse(sent);
  assert.deepEqual(b.headers, { 'X-API-Key': 'tsstore_peer', 'X-Site': 'north' });
  assert.equal(b.filter, 'Building A');
  assert.equal(b.filter_ignore_case, true);
  assert.equal(b.mode, 'push');
  assert.equal(b.format, 'full');
  // Live status: the page refreshes by itself.
  list[0].status = 'connected';
  list[0].messages_sent = 42;
  await page.locator('#connections tbody tr td.status-connected').waitFor({ timeout: 3000 });
  assert.match(await row.textContent(), /42/);
  await row.locator('button', { hasText: 'Delete' }).click();
  await row.waitFor({ state: 'detached', timeout: 3000 });
  assert.equal(list.length, 0);
  await page.context().close();
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** A real mosquitto on a free loopback port with a generated
 * configuration, as tests/server/mosquitto.rs starts it: only `users`
 * get in (a password file made by mosquitto_passwd). */
async function startMosquitto(users) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsstore-console-mqtt-'));
  const port = await freePort();
  const passwd = path.join(dir, 'passwd');
  fs.writeFileSync(passwd, '');
  for (const [u, p] of users) execFileSync('mosquitto_passwd', ['-b', passwd, u, p]);
  const log = path.join(dir, 'mosquitto.log');
  // Started as root, mosquitto would switch to the user `mosquitto`, who
  // cannot read this directory: `user root` keeps it root.
  const conf = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(conf, ['user root', 'per_listener_settings false', 'persistence false',
    'log_dest file ' + log, 'log_type error', 'log_type warning', 'log_type notice', 'log_type subscribe',
    'listener ' + port + ' 127.0.0.1', 'allow_anonymous false', 'password_file ' + passwd, ''].join('\n'));
  const bin = fs.existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto';
  const child = spawn(bin, ['-c', conf], { stdio: 'ignore' });
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const deadline = Date.now() + 10000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    // Another process could hold the port: this broker's log must say it listens.
    const read = () => { try { return fs.readFileSync(log, 'utf8'); } catch { return ''; } };
    if (up && read().includes('on port ' + port)) break;
    assert.equal(exited, null, 'mosquitto exited: ' + read());
    assert.ok(Date.now() < deadline, 'mosquitto did not listen on ' + port + ': ' + read());
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    url: 'tcp://127.0.0.1:' + port,
    log: () => fs.readFileSync(log, 'utf8'),
    async stop() {
      if (exited === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The text of each cell of the row of `id` in the table `table`. */
async function rowCells(page, table, id) {
  return page.$$eval('#' + table + ' tbody tr[data-id="' + id + '"] td', (tds) => tds.map((td) => td.textContent));
}

/** Waits until cell `i` of the row of `id` reads `want`. */
async function waitCell(page, table, id, i, want, timeout = 10000) {
  await page.waitForFunction(([t, id, i, want]) => {
    const tr = document.querySelector('#' + t + ' tbody tr[data-id="' + id + '"]');
    return tr && tr.cells[i] && tr.cells[i].textContent === want;
  }, [table, id, i, want], { timeout });
}

test('MQTT sink and subscription end to end through the page, against a real mosquitto', async () => {
  const USER = 'gateway';
  const PASS = 'pw-' + Math.random().toString(36).slice(2) + '-not-shown';
  const broker = await startMosquitto([[USER, PASS]]);
  const store = 'mqtt-e2e';
  const mqttArgs = ['-h', '127.0.0.1', '-p', String(broker.port), '-u', USER, '-P', PASS, '-q', '1'];
  let sub = null;
  try {
    const key = await createStore(store);
    const page = await newPage();
    // An admin session may make the server dial loopback (README "Outbound
    // connections and the policy"): the broker runs on 127.0.0.1.
    await signIn(page, ADMIN);
    await page.goto(base + '/stores/' + store + '/connections');
    const sinks = page.getByRole('table', { name: 'MQTT sinks' });
    const subs = page.getByRole('table', { name: 'MQTT subscriptions' });
    await page.waitForFunction(() => /^0 MQTT sink/.test(document.getElementById('sink-status').textContent));

    // The sink, through its form.
    const sinkForm = page.getByRole('form', { name: 'New MQTT sink' });
    await sinkForm.getByLabel('Broker URL').fill(broker.url);
    await sinkForm.getByLabel('Topic').fill('e2e/out');
    await sinkForm.getByLabel(/Include the timestamp/).check();
    await sinkForm.getByLabel(/^Username/).fill(USER);
    await sinkForm.getByLabel(/^Password/).fill(PASS);
    await sinkForm.getByRole('button', { name: 'Create sink' }).click();
    await page.waitForFunction(() => /created/.test(document.getElementById('sink-status').textContent));
    const sinkId = (await page.textContent('#sink-status')).match(/MQTT sink (\S+) created/)[1];
    assert.equal(await page.inputValue('#s-pass'), '', 'the password is cleared from the form');
    const sinkRow = sinks.locator('tbody tr[data-id="' + sinkId + '"]');
    await sinkRow.locator('td.status-connected').waitFor({ timeout: 10000 });
    let cells = await rowCells(page, 'mqtt-sinks', sinkId);
    assert.equal(cells[1], broker.url);
    assert.equal(cells[2], 'e2e/out');

    // The subscription, through its form.
    const subForm = page.getByRole('form', { name: 'New MQTT subscription' });
    await subForm.getByLabel('Broker URL').fill(broker.url);
    await subForm.getByLabel(/Topic filters/).fill('e2e/in/+\n');
    await subForm.getByLabel(/Include the topic/).check();
    await subForm.getByLabel(/^Username/).fill(USER);
    await subForm.getByLabel(/^Password/).fill(PASS);
    await subForm.getByRole('button', { name: 'Create subscription' }).click();
    await page.waitForFunction(() => /created/.test(document.getElementById('sub-status').textContent));
    const subId = (await page.textContent('#sub-status')).match(/MQTT subscription (\S+) created/)[1];
    const subRow = subs.locator('tbody tr[data-id="' + subId + '"]');
    await subRow.locator('td.status-connected').waitFor({ timeout: 10000 });

    // An independent client reads what the sink publishes.
    const got = [];
    sub = spawn('mosquitto_sub', [...mqttArgs, '-i', 'console-test-reader', '-t', 'e2e/out', '-C', '2', '-W', '30']);
    let out = '';
    sub.stdout.on('data', (chunk) => { out += chunk.toString(); });
    const exited = new Promise((resolve) => sub.once('exit', resolve));
    // The broker logs the subscription (log_type subscribe) once it holds.
    for (const deadline = Date.now() + 10000; !/console-test-reader \d e2e\/out/.test(broker.log());) {
      assert.ok(Date.now() < deadline, 'mosquitto_sub did not subscribe: ' + broker.log());
      await new Promise((r) => setTimeout(r, 50));
    }

    // A write to the store goes out through the sink: Sent moves live.
    const w = await rest('POST', '/api/stores/' + store + '/data', { key, body: { data: { n: 1 } } });
    assert.ok(w.status < 300, w.text);
    await waitCell(page, 'mqtt-sinks', sinkId, 5, '1');

    // A message to the broker is stored through the subscription.
    execFileSync('mosquitto_pub', [...mqttArgs, '-t', 'e2e/in/kitchen', '-m', '{"temperature":21.5}']);
    await waitCell(page, 'mqtt-subs', subId, 5, '1');
    cells = await rowCells(page, 'mqtt-subs', subId);
    assert.equal(cells[2], 'e2e/in/+');
    assert.equal(cells[4], '1', 'received');
    assert.equal(cells[6], '0', 'errors');
    const newest = JSON.parse((await rest('GET', '/api/stores/' + store + '/data/newest?limit=1', { key })).text);
    assert.deepEqual(newest.objects[0].data, { topic: 'e2e/in/kitchen', data: { temperature: 21.5 } });
    // ... and, being in the store, is published by the sink in turn.
    await waitCell(page, 'mqtt-sinks', sinkId, 5, '2');
    await exited;
    for (const l of out.split('\n')) if (l) got.push(JSON.parse(l));
    assert.deepEqual(got.map((m) => m.data), [{ n: 1 }, { topic: 'e2e/in/kitchen', data: { temperature: 21.5 } }]);
    assert.ok(got.every((m) => typeof m.timestamp === 'number'), 'include_timestamp sent');

    // The password went to the broker (it let the links in) and nowhere else.
    assert.ok(!(await page.content()).includes(PASS), 'password not in the page');
    for (const p of ['/mqtt/connections', '/mqtt/subscriptions']) {
      const r = await rest('GET', '/api/stores/' + store + p, { key });
      assert.ok(!r.text.includes(PASS), p + ' does not return the password');
    }

    // The overview counts the MQTT links with the WebSocket ones.
    await page.goto(base + '/');
    await page.waitForFunction((s) => document.querySelector('#stores tr[data-store="' + s + '"] td.conns a').textContent === '2 connected',
      store, { timeout: 7000 });
    await page.goto(base + '/stores/' + store + '/connections');
    await sinkRow.locator('td.status-connected').waitFor();
    await subRow.locator('td.status-connected').waitFor();
    await shoot(page, 'connections-1280');
    await page.setViewportSize({ width: 390, height: 844 });
    // On a phone the tables scroll inside their box; the page does not.
    assert.equal(await page.evaluate(() => document.documentElement.scrollWidth), 390);
    await shoot(page, 'connections-390');

    // Both deleted through the page.
    await page.getByRole('button', { name: 'Delete MQTT sink ' + sinkId }).click();
    await sinkRow.waitFor({ state: 'detached', timeout: 3000 });
    await page.getByRole('button', { name: 'Delete MQTT subscription ' + subId }).click();
    await subRow.waitFor({ state: 'detached', timeout: 3000 });
    assert.deepEqual(JSON.parse((await rest('GET', '/api/stores/' + store + '/mqtt/connections', { key })).text), { connections: [] });
    assert.deepEqual(JSON.parse((await rest('GET', '/api/stores/' + store + '/mqtt/subscriptions', { key })).text), { subscriptions: [] });
    assert.deepEqual(page.consoleErrors, []);
    await page.context().close();
  } finally {
    if (sub && sub.exitCode === null) sub.kill();
    await broker.stop();
  }
});

test('the MQTT tables and forms against the documented API shapes (mocked)', async () => {
  // docs/openapi.yaml CreateMqtt*Request and Mqtt*Status, answered by the
  // test itself: pins exactly what the forms send and what the tables show.
  await createStore('mocked-mqtt');
  const lists = { connections: [], subscriptions: [] };
  const bodies = { connections: [], subscriptions: [] };
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.route('**/api/stores/mocked-mqtt/mqtt/**', async (route) => {
    const req = route.request();
    // "@digits" strings go out as JSON numbers, exact (nanoseconds).
    const json = (status, v) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(v).replace(/"@(\d+)"/g, '$1') });
    const parts = new URL(req.url()).pathname.split('/');
    const kind = parts[5];
    const list = lists[kind];
    if (!list) return route.continue();
    if (req.method() !== 'GET') assert.ok(req.headers()['x-csrf-token'], 'CSRF header sent');
    if (req.method() === 'GET') return json(200, { [kind]: list });
    if (req.method() === 'POST') {
      bodies[kind].push(req.postData());
      const b = JSON.parse(req.postData());
      if (kind === 'connections' && b.topic.includes('#')) {
        return json(400, { error: 'invalid topic: wildcards (+ and #) are for subscriptions, not publishing' });
      }
      const common = { broker_url: b.broker_url, status: 'connecting', errors: 0, last_error: '', created_at: new Date().toISOString(), connected_since: null, last_timestamp: 0 };
      const c = kind === 'connections'
        ? { id: '5a1e0c2d', topic: b.topic, messages_sent: 0, ...common }
        : { id: '9b7d3e4f', topics: b.topics, messages_received: 0, messages_stored: 0, ...common };
      list.push(c);
      return json(201, c);
    }
    if (req.method() === 'DELETE') {
      const i = list.findIndex((c) => c.id === parts[6]);
      if (i < 0) return json(404, { error: 'connection not found' });
      list.splice(i, 1);
      return json(200, { message: 'deleted' });
    }
    return route.continue();
  });
  await page.goto(base + '/stores/mocked-mqtt/connections');

  // A refused create: the API's error in the status line, no row.
  await page.fill('#s-broker', 'tcp://broker.example:1883');
  await page.fill('#s-topic', 'site/#');
  await page.click('#sink-create button[type=submit]');
  await page.waitForFunction(() => /Refused: invalid topic: wildcards/.test(document.getElementById('sink-status').textContent));
  assert.equal(await page.getAttribute('#sink-status', 'class'), 'error');
  assert.equal(await page.locator('#mqtt-sinks tbody tr').count(), 0);

  // Every sink field, as the API names it.
  await page.fill('#s-broker', 'ssl://broker.example:8883');
  await page.fill('#s-topic', 'site-1/sensors');
  await page.fill('#s-from', '1795693581488000001');
  await page.selectOption('#s-qos', '2');
  await page.fill('#s-cpi', '5');
  await page.fill('#s-client', 'gw-1');
  await page.fill('#s-user', 'gw');
  await page.fill('#s-pass', 'pw-123');
  await page.fill('#s-ca', 'myca.pem');
  await page.check('#s-ts');
  await page.check('#s-retain');
  await page.click('#sink-create button[type=submit]');
  await page.locator('#mqtt-sinks tbody tr', { hasText: '5a1e0c2d' }).waitFor({ timeout: 3000 });
  const sent = bodies.connections[1];
  assert.ok(sent.includes('"from":1795693581488000001'), 'from sent exactly: ' + sent);
  const sb = JSON.parse(sent);
  delete sb.from;
  assert.deepEqual(sb, { broker_url: 'ssl://broker.example:8883', topic: 'site-1/sensors', include_timestamp: true, qos: 2, retain: true,
    cursor_persist_interval: 5, client_id: 'gw-1', username: 'gw', ca_file: 'myca.pem', password: 'pw-123' });
  assert.match(await page.textContent('#sink-status'), /MQTT sink 5a1e0c2d created/);
  assert.equal(await page.inputValue('#s-pass'), '');

  // Every subscription field; blank lines of the topics dropped.
  assert.equal(await page.isDisabled('#m-tsfield'), true, 'no timestamp field with timestamp now');
  await page.fill('#m-broker', 'tcp://192.168.1.10:1883');
  await page.fill('#m-topics', ' zigbee2mqtt/+ \n\nsite/#\n');
  await page.selectOption('#m-qos', '0');
  await page.selectOption('#m-ts', 'field');
  await page.fill('#m-tsfield', 'time');
  await page.selectOption('#m-tsunit', 'ms');
  await page.fill('#m-client', 'gw-sub');
  await page.fill('#m-user', 'gw');
  await page.fill('#m-pass', 'pw-456');
  await page.check('#m-clean');
  await page.check('#m-topic');
  await page.click('#sub-create button[type=submit]');
  await page.locator('#mqtt-subs tbody tr', { hasText: '9b7d3e4f' }).waitFor({ timeout: 3000 });
  assert.deepEqual(JSON.parse(bodies.subscriptions[0]), { broker_url: 'tcp://192.168.1.10:1883', topics: ['zigbee2mqtt/+', 'site/#'], qos: 0,
    clean_session: true, timestamp: 'field', include_topic: true, client_id: 'gw-sub', username: 'gw', timestamp_field: 'time',
    timestamp_unit: 'ms', password: 'pw-456' });
  assert.equal(await page.isDisabled('#m-tsfield'), true, 'the form is back to timestamp now');

  // A second subscription with the defaults: only what was typed.
  lists.subscriptions[0].id = '9b7d3e4e';
  await page.fill('#m-broker', 'tcp://192.168.1.10:1883');
  await page.fill('#m-topics', 'a/b');
  await page.click('#sub-create button[type=submit]');
  await page.waitForFunction(() => document.querySelectorAll('#mqtt-subs tbody tr').length === 2);
  assert.deepEqual(JSON.parse(bodies.subscriptions[1]), { broker_url: 'tcp://192.168.1.10:1883', topics: ['a/b'], qos: 1,
    clean_session: false, timestamp: 'now', include_topic: false });

  // Live status, counters and last error: the page refreshes by itself.
  Object.assign(lists.connections[0], { status: 'connected', messages_sent: 42, errors: 1, last_error: 'connection lost: reset', last_timestamp: '@1795693581488000009' });
  Object.assign(lists.subscriptions[0], { status: 'error', messages_received: 7, messages_stored: 5, errors: 2, last_error: 'object skipped: ' + XSS_IMG });
  await page.locator('#mqtt-sinks tbody tr td.status-connected').waitFor({ timeout: 3000 });
  await page.locator('#mqtt-subs tbody tr td.status-error').waitFor({ timeout: 3000 });
  assert.deepEqual((await rowCells(page, 'mqtt-sinks', '5a1e0c2d')).slice(0, 8),
    ['5a1e0c2d', 'ssl://broker.example:8883', 'site-1/sensors', 'connected', '1795693581488000009', '42', '1', 'connection lost: reset']);
  assert.deepEqual((await rowCells(page, 'mqtt-subs', '9b7d3e4e')).slice(0, 8),
    ['9b7d3e4e', 'tcp://192.168.1.10:1883', 'zigbee2mqtt/+\nsite/#', 'error', '7', '5', '2', 'object skipped: ' + XSS_IMG]);
  assert.equal(await page.locator('#mqtt-subs img').count(), 0, 'last_error shown as text');
  assert.ok(!(await page.textContent('#connections-page')).includes('pw-'), 'no password shown');

  // Deleted through the buttons.
  await page.getByRole('button', { name: 'Delete MQTT sink 5a1e0c2d' }).click();
  await page.locator('#mqtt-sinks tbody tr').waitFor({ state: 'detached', timeout: 3000 });
  assert.match(await page.textContent('#sink-status'), /MQTT sink 5a1e0c2d deleted/);
  await page.getByRole('button', { name: 'Delete MQTT subscription 9b7d3e4e' }).click();
  await page.getByRole('button', { name: 'Delete MQTT subscription 9b7d3e4f' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#mqtt-subs tbody tr').length === 0, null, { timeout: 3000 });
  assert.deepEqual(lists, { connections: [], subscriptions: [] });
  await page.context().close();
});

test('a store session sees the outbound policy refuse an MQTT broker on loopback', async () => {
  // README "Outbound connections and the policy": a store key may not make
  // the server dial 127.0.0.1; the real API's refusal shows in the page.
  const key = await createStore('mqtt-policy');
  const page = await newPage();
  await signIn(page, key);
  await page.goto(base + '/stores/mqtt-policy/connections');
  await page.fill('#s-broker', 'tcp://127.0.0.1:1883');
  await page.fill('#s-topic', 'out');
  await page.click('#sink-create button[type=submit]');
  await page.waitForFunction(() => /Refused: /.test(document.getElementById('sink-status').textContent));
  assert.match(await page.textContent('#sink-status'), /refused by the outbound policy/);
  assert.equal(await page.getAttribute('#sink-status', 'class'), 'error');
  await page.fill('#m-broker', 'tcp://127.0.0.1:1883');
  await page.fill('#m-topics', 'in/#');
  await page.click('#sub-create button[type=submit]');
  await page.waitForFunction(() => /Refused: /.test(document.getElementById('sub-status').textContent));
  assert.match(await page.textContent('#sub-status'), /refused by the outbound policy/);
  // The refusal stays through the 2 s refreshes, with the count before it.
  await page.waitForTimeout(2500);
  assert.match(await page.textContent('#sub-status'), /^0 MQTT subscription\(s\) · Refused: /);
  for (const [p, list] of [['/mqtt/connections', 'connections'], ['/mqtt/subscriptions', 'subscriptions']]) {
    assert.deepEqual(JSON.parse((await rest('GET', '/api/stores/mqtt-policy' + p, { key })).text), { [list]: [] });
  }
  await page.context().close();
});

test('alert rules: refused with the position, created, fired live, deleted', async () => {
  const key = await createStore('alarms');
  await createStore('alarmtext', { data_type: 'text' });
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/alarms');
  await page.click('nav.tabs a:has-text("Alerts")');
  await page.waitForURL(base + '/stores/alarms/alerts');
  assert.equal(await page.getAttribute('nav.tabs a[aria-current=page]', 'href'), '/stores/alarms/alerts');
  await page.locator('#alerts-status', { hasText: 'No alerts yet.' }).waitFor({ timeout: 3000 });

  // A syntax error: the API's message, with its position, on the page.
  await page.fill('#r-name', 'hot');
  await page.fill('#r-condition', 'temp > AND');
  await page.click('#rule-create button[type=submit]');
  await page.locator('#rules-status.error', { hasText: /Refused: condition: .* at position 8/ }).waitFor({ timeout: 3000 });

  await page.fill('#r-condition', 'temp > 30 AND room == "lab"');
  await page.fill('#r-cooldown', '1h');
  await page.click('#rule-create button[type=submit]');
  const row = page.locator('#rules tbody tr[data-name=hot]');
  await row.waitFor({ timeout: 3000 });
  assert.match(await page.textContent('#rules-status'), /1 rule\(s\) · Rule hot created\./);
  assert.equal(await row.locator('td').nth(2).textContent(), '1h');
  assert.equal(await row.locator('td').nth(4).textContent(), 'never');

  // Two readings through the API: one matches (with markup in it), one not.
  for (const data of [{ temp: 20, room: 'lab' }, { temp: 35, room: 'lab', note: XSS_IMG }]) {
    const r = await rest('POST', '/api/stores/alarms/data', { key, body: { data } });
    assert.equal(r.status, 201, r.text);
  }
  const alert = page.locator('#alerts tbody tr', { hasText: 'hot' });
  await alert.waitFor({ timeout: 4000 });
  assert.equal(await page.locator('#alerts tbody tr').count(), 1);
  const data = await alert.locator('td.data').textContent();
  assert.ok(data.includes('"temp":35') && data.includes(XSS_IMG), data);
  await page.locator('#rules tbody tr[data-name=hot] td.num', { hasText: '1' }).waitFor({ timeout: 3000 });
  assert.match(await row.locator('td').nth(4).textContent(), /^\d{4}-\d\d-\d\dT/);
  assert.equal(await page.locator('#alerts img').count(), 0, 'stored markup must stay text');

  // No sideways scrolling on a phone.
  await page.setViewportSize({ width: 390, height: 900 });
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), 'alerts page scrolls sideways at 390 px');
  await shoot(page, 'alerts-390');
  await page.setViewportSize({ width: 1280, height: 900 });

  await row.locator('button', { hasText: 'Delete' }).click();
  await row.waitFor({ state: 'detached', timeout: 3000 });
  assert.equal(JSON.parse((await rest('GET', '/api/stores/alarms/rules', { key })).text).count, 0);

  // A text store has no rules: no tab, and the page is a 404.
  await page.goto(base + '/stores/alarmtext');
  assert.equal(await page.locator('nav.tabs a:has-text("Alerts")').count(), 0);
  const cookie = (await page.context().cookies()).map((c) => c.name + '=' + c.value).join('; ');
  const r = await fetch(base + '/stores/alarmtext/alerts', { headers: { Cookie: cookie } });
  assert.equal(r.status, 404);
  assert.match(await r.text(), /alert rules are only available for json and schema stores/);
  assert.deepEqual(page.dialogs, []);
  assert.deepEqual(page.consoleErrors.filter((e) => !/\/rules( |$)/.test(e)), []);
  await page.context().close();
});

test('XSS payloads in json and text stores render inert', async () => {
  const jkey = await createStore('xjson');
  const tkey = await createStore('xtext', { data_type: 'text' });
  await rest('POST', '/api/stores/xjson/data', { key: jkey, body: { data: { msg: XSS_SCRIPT, img: XSS_IMG } } });
  await rest('POST', '/api/stores/xtext/data', { key: tkey, body: XSS_SCRIPT, type: 'text/plain' });
  await rest('POST', '/api/stores/xtext/data', { key: tkey, body: XSS_IMG, type: 'text/plain' });
  const page = await newPage();
  await signIn(page, ADMIN);
  for (const store of ['xjson', 'xtext']) {
    await page.goto(base + '/stores/' + store);
    await page.locator('#tail tbody tr').first().waitFor();
    const text = await page.textContent('#tail tbody');
    assert.ok(text.includes(XSS_SCRIPT), store + ': script payload shown as text');
    assert.ok(text.includes(XSS_IMG), store + ': img payload shown as text');
    assert.equal(await page.locator('#tail img, #tail script').count(), 0);
    await page.goto(base + '/stores/' + store + '/query');
    await page.click('#query button[type=submit]');
    await page.locator('#results tbody tr').first().waitFor();
    assert.ok((await page.textContent('#results tbody')).includes(XSS_IMG));
    assert.equal(await page.locator('#results img, #results script').count(), 0);
    assert.ok((await page.textContent('#json')).includes(XSS_SCRIPT));
  }
  await page.waitForTimeout(200);
  assert.deepEqual(page.dialogs, [], 'no payload ran');
  await page.context().close();
});

test('a store session cannot see another store', async () => {
  const key = await createStore('mine');
  await createStore('theirs');
  const page = await newPage();
  await signIn(page, key);
  assert.equal(new URL(page.url()).pathname, '/');
  const names = await page.$$eval('#stores tbody tr td:first-child', (c) => c.map((x) => x.textContent.trim()));
  assert.deepEqual(names, ['mine']);
  const r = await page.goto(base + '/stores/theirs');
  assert.equal(r.status(), 403);
  const api = await page.evaluate(async () => (await fetch('/api/stores/theirs/data/newest')).status);
  assert.equal(api, 403);
  const own = await page.evaluate(async () => (await fetch('/api/stores/mine/data/newest')).status);
  assert.equal(own, 200);
  const create = await page.goto(base + '/create');
  assert.equal(create.status(), 403);
  await page.context().close();
});

test('the schema page appends a field and shows the API refusal', async () => {
  await createStore('typed', { data_type: 'schema' });
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/typed/schema');
  await page.fill('#f-name', 'temperature');
  await page.selectOption('#f-type', 'float32');
  // Appending is permanent: the form asks first, and Cancel sends nothing.
  await page.click('#append button[type=submit]');
  await page.locator('#append-confirm').waitFor({ state: 'visible' });
  assert.match(await page.textContent('#append-question'), /"temperature" \(float32\).*permanent/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'append-yes', 'the confirm button has the focus');
  await page.click('#append-no');
  assert.equal(await page.isHidden('#append-confirm'), true);
  const schema = await rest('GET', '/api/stores/typed/schema', { admin: true });
  assert.equal(schema.status, 404, 'still no schema: ' + schema.text);
  assert.ok(!schema.text.includes('temperature'), 'nothing appended on Cancel: ' + schema.text);
  // Confirmed from the keyboard: Enter on the focused button.
  await page.click('#append button[type=submit]');
  await page.locator('#append-confirm').waitFor({ state: 'visible' });
  await Promise.all([page.waitForEvent('load'), page.keyboard.press('Enter')]);
  await page.locator('#fields tbody tr', { hasText: 'temperature' }).waitFor({ timeout: 3000 });
  await page.fill('#f-name', 'temperature');
  await page.click('#append button[type=submit]');
  await page.click('#append-yes');
  await page.waitForFunction(() => /Refused: /.test(document.getElementById('schema-result').textContent));
  const msg = await page.textContent('#schema-result');
  assert.match(msg, /schema/i, msg);
  await page.context().close();
});

test('the dark theme follows the system setting', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'dark' });
  const page = await context.newPage();
  await signIn(page, ADMIN);
  const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  assert.equal(bg, 'rgb(15, 19, 24)');
  await shoot(page, 'overview-dark-1280');
  await context.close();
});

test('creating a store shows the calc figures and the key once', async () => {
  const page = await newPage(390);
  await signIn(page, ADMIN);
  await page.goto(base + '/create');
  await page.fill('#num_blocks', '1024');
  await page.fill('#rate', '10');
  await page.waitForFunction(() => /capacity 4[,.\s]?0\d\d objects|capacity [\d,.\s]+ objects/.test(document.getElementById('calc').textContent));
  assert.match(await page.textContent('#calc'), /retention/);
  await shoot(page, 'create-390');
  await page.fill('#name', 'made-in-browser');
  await page.click('#create button[type=submit]');
  const keyValue = await page.inputValue('#new-key');
  assert.match(keyValue, /^tsstore_[0-9a-f-]{36}$/);
  const r = await rest('GET', '/api/stores/made-in-browser/stats', { key: keyValue });
  assert.equal(r.status, 200);
  await page.context().close();
});

test('soft delete of an object by its timestamp', async () => {
  const key = await createStore('soft');
  for (const n of [1, 2, 3]) await rest('POST', '/api/stores/soft/data', { key, body: { data: { n } } });
  const newest = await rest('GET', '/api/stores/soft/data/newest?limit=3', { key });
  const ts = newest.text.match(/"timestamp":(\d+)/g).map((m) => m.split(':')[1]);
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/soft');
  await page.locator('#tail tbody tr').nth(2).waitFor();
  await page.fill('#del-ts', ts[1]);
  await page.click('#soft-delete button[type=submit]');
  await page.waitForFunction(() => /deleted/.test(document.getElementById('del-result').textContent));
  assert.equal(await page.locator('#tail tbody tr', { hasText: ts[1] }).count(), 0);
  assert.equal((await rest('GET', '/api/stores/soft/data/time/' + ts[1], { key })).status, 404);
  assert.equal((await rest('GET', '/api/stores/soft/data/time/' + ts[0], { key })).status, 200);
  await page.context().close();
});

test('forms work from the keyboard', async () => {
  const page = await newPage();
  await page.goto(base + '/login');
  // The key field has the focus; Tab reaches the store field, then the button.
  assert.equal(await page.evaluate(() => document.activeElement.id), 'key');
  await page.keyboard.type(ADMIN);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'store');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Sign in');
  await Promise.all([page.waitForURL(base + '/'), page.keyboard.press('Enter')]);
  // Every form control of every page has a label.
  for (const p of ['/create', '/stores/soft', '/stores/soft/query', '/stores/soft/connections']) {
    await page.goto(base + p);
    const unlabelled = await page.$$eval('input:not([type=hidden]), select, textarea', (els) =>
      els.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map((e) => e.id || e.name));
    assert.deepEqual(unlabelled, [], p);
  }
  await page.context().close();
});

test('reset and delete need the store name typed', async () => {
  const key = await createStore('doomed');
  await rest('POST', '/api/stores/doomed/data', { key, body: { data: { a: 1 } } });
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/doomed');
  const button = page.locator('form[action$="/delete"] button');
  assert.equal(await button.isDisabled(), true);
  await page.fill('#delete-confirm', 'doome');
  assert.equal(await button.isDisabled(), true);
  await page.fill('#delete-confirm', 'doomed');
  await Promise.all([page.waitForURL(base + '/'), button.click()]);
  assert.equal((await rest('GET', '/api/stores/doomed/stats', { key })).status, 404);
  await page.context().close();
});

test('the README picture: a store with a minute of readings', async () => {
  const key = await createStore('greenhouse');
  const now = BigInt(Date.now()) * 1000000n;
  const lines = [];
  for (let i = 0; i < 48; i++) {
    const t = now - BigInt(47 - i) * 1250000000n;
    const temp = (21 + 2 * Math.sin(i / 6)).toFixed(2);
    const hum = (55 + 6 * Math.cos(i / 9)).toFixed(1);
    lines.push(`{"timestamp":${t},"data":{"temp":${temp},"humidity":${hum},"site":"north"}}`);
  }
  const r = await rest('POST', '/api/stores/greenhouse/data', { key, body: lines.join('\n'), type: 'application/x-ndjson' });
  assert.ok(r.status < 300, r.text);
  const page = await newPage(1024);
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/greenhouse');
  await page.waitForFunction(() => document.getElementById('live-status').textContent === 'live');
  await page.selectOption('#window', '1');
  await page.waitForTimeout(200);
  await page.setViewportSize({ width: 1024, height: 760 });
  await page.screenshot({ path: path.join(SHOTS, 'readme.png') });
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

/** Bytes of an asset and of every module it imports (each counted once). */
function assetWeight(file, seen) {
  if (seen.has(file)) return 0;
  seen.add(file);
  const p = path.join(root, 'web', 'static', file);
  const text = fs.readFileSync(p, 'utf8');
  let n = fs.statSync(p).size;
  if (file.endsWith('.js')) {
    for (const m of text.matchAll(/from '\.\/([\w-]+\.js)'/g)) n += assetWeight(m[1], seen);
  }
  return n;
}

test('page weights and the embedded asset budget', async (t) => {
  const staticDir = path.join(root, 'web', 'static');
  const assets = fs.readdirSync(staticDir).reduce((n, f) => n + fs.statSync(path.join(staticDir, f)).size, 0);
  assert.ok(assets <= 150 * 1024, 'embedded assets ' + assets + ' bytes, over 150 KB');
  await createStore('weights', { data_type: 'schema' });
  const page = await newPage();
  await signIn(page, ADMIN);
  const cookie = (await page.context().cookies()).map((c) => c.name + '=' + c.value).join('; ');
  await page.context().close();
  const report = ['embedded assets: ' + assets + ' bytes'];
  for (const p of ['/login', '/', '/stores/weights', '/stores/weights/query', '/stores/weights/schema', '/stores/weights/connections', '/stores/weights/alerts', '/create']) {
    const r = await fetch(base + p, { headers: p === '/login' ? {} : { Cookie: cookie }, redirect: 'manual' });
    assert.equal(r.status, 200, p);
    const html = await r.text();
    const seen = new Set();
    let bytes = Buffer.byteLength(html);
    for (const m of html.matchAll(/(?:src|href)="\/static\/([\w.-]+)"/g)) bytes += assetWeight(m[1], seen);
    report.push(p + ': ' + bytes + ' bytes (HTML ' + Buffer.byteLength(html) + ', assets ' + [...seen].join(' ') + ')');
    assert.ok(bytes <= 64 * 1024, p + ' weighs ' + bytes + ' bytes');
  }
  fs.mkdirSync(SHOTS, { recursive: true });
  fs.writeFileSync(path.join(SHOTS, 'page-weights.txt'), report.join('\n') + '\n');
  for (const line of report) t.diagnostic(line);
});

// Issue 16, items 5 and 6: live figures at one request per 5 s, and
// pages that fit a phone.

test('live rates: the overview and the store page show inserts at ~5/s without a reload', async (t) => {
  const key = await createStore('ratelive');
  const overview = await newPage();
  await signIn(overview, ADMIN);
  const store = await overview.context().newPage();
  await store.goto(base + '/stores/ratelive');
  // The store page's figures: at most one request per 5 s, inserts or not.
  const polls = [];
  store.on('request', (r) => { if (new URL(r.url()).pathname === '/api/summary') polls.push(Date.now()); });
  // Both rendered before any insert: 0.00/s.
  assert.equal((await overview.textContent('#stores tr[data-store=ratelive] td.rate')).trim(), '0.00/s');
  assert.equal((await store.textContent('#f-rate')).trim(), '0.00/s');
  // A reload would lose these marks.
  await overview.evaluate(() => { window.notReloaded = true; });
  await store.evaluate(() => { window.notReloaded = true; });
  let stop = false;
  const inserting = (async () => {
    for (let i = 0; !stop && i < 150; i++) {
      await rest('POST', '/api/stores/ratelive/data', { key, body: { data: { n: i } } });
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  try {
    const positive = (sel) => parseFloat(document.querySelector(sel).textContent) > 0;
    await overview.waitForFunction(positive, '#stores tr[data-store=ratelive] td.rate', { timeout: 20000 });
    await store.waitForFunction(positive, '#f-rate', { timeout: 20000 });
  } finally {
    stop = true;
    await inserting;
  }
  const shown = [await overview.textContent('#stores tr[data-store=ratelive] td.rate'), await store.textContent('#f-rate')];
  assert.ok(await overview.evaluate(() => window.notReloaded === true), 'the overview was reloaded');
  assert.ok(await store.evaluate(() => window.notReloaded === true), 'the store page was reloaded');
  // Above 0 and not above the ~5/s inserted (the first reading also spans
  // the quiet time before the inserts began, so it may be well below 5).
  for (const s of shown) assert.ok(parseFloat(s) > 0 && parseFloat(s) <= 10, 'rate shown ' + s);
  t.diagnostic('rates shown while inserting at ~5/s: overview ' + shown[0] + ', store page ' + shown[1]);
  const gaps = polls.slice(1).map((t, i) => t - polls[i]);
  assert.ok(gaps.every((g) => g >= 4500), 'store page summary requests ' + gaps.join(' ') + ' ms apart');
  assert.deepEqual(overview.consoleErrors, []);
  await overview.context().close();
});

test('an open overview makes at most one request per 5 s with 20 stores', async (t) => {
  for (let i = 0; i < 20; i++) await createStore('many' + String(i).padStart(2, '0'));
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/');
  // The page's own load (favicon included) is over before counting.
  await page.waitForLoadState('networkidle');
  const requests = [];
  page.on('request', (r) => requests.push(new URL(r.url()).pathname + new URL(r.url()).search));
  // A store made while the page is open gets its row without a reload.
  await createStore('many20');
  await page.waitForTimeout(11000);
  t.diagnostic('requests in 11 s: ' + requests.length + ' ' + requests.join(' '));
  assert.ok(requests.length <= 3, requests.length + ' requests in 11 s: ' + requests.join(' '));
  assert.ok(requests.length >= 1, 'the overview did not refresh');
  await page.locator('#stores tr[data-store=many20] td.objects').waitFor({ timeout: 1000 });
  const names = await page.$$eval('#stores tr[data-store]', (rows) => rows.map((r) => r.dataset.store));
  assert.deepEqual(names, [...names].sort(), 'rows in name order');
  // A deleted store's row goes.
  assert.equal((await rest('DELETE', '/api/stores/many20', { admin: true })).status, 200);
  await page.locator('#stores tr[data-store=many20]').waitFor({ state: 'detached', timeout: 7000 });
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

test('no page scrolls sideways at 390 px; the tail shows time and values', async () => {
  const key = await createStore('phone');
  await createStore('phoneschema', { data_type: 'schema' });
  for (let i = 0; i < 3; i++) {
    await rest('POST', '/api/stores/phone/data', { key, body: { data: { temperature: 20.5 + i, humidity: 41.25, room: 'greenhouse-north' } } });
  }
  let r = await rest('POST', '/api/stores/phone/ws/connections', { admin: true, body: { mode: 'push', url: 'ws://127.0.0.1:9/api/stores/far-away-store/ws/write' } });
  assert.equal(r.status, 201, r.text);
  r = await rest('POST', '/api/stores/phone/rules', { admin: true, body: { name: 'hot', condition: 'temperature > 30' } });
  assert.equal(r.status, 201, r.text);
  const page = await newPage(390);
  await signIn(page, ADMIN);
  const wide = [];
  for (const p of ['/', '/stores/phone', '/stores/phone/connections', '/stores/phone/alerts', '/stores/phoneschema/schema', '/create']) {
    await page.goto(base + p);
    await page.waitForLoadState('load');
    // Rows the scripts add (tail, connections, rules) are in before measuring.
    if (p === '/stores/phone') await page.locator('#tail tbody tr').first().waitFor({ timeout: 3000 });
    if (p.endsWith('/connections')) await page.locator('#connections tbody tr').first().waitFor({ timeout: 3000 });
    if (p.endsWith('/alerts')) await page.locator('#rules tbody tr').first().waitFor({ timeout: 3000 });
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    if (w > 390) wide.push(p + ': ' + w + ' px');
    if (p === '/stores/phone') {
      // Time and data on screen; the nanosecond timestamp in the time's title.
      const cells = await page.$$eval('#tail tbody tr:first-child td', (tds) => tds.map((td) => {
        const b = td.getBoundingClientRect();
        return { visible: b.width > 0, right: b.right, title: td.title, text: td.textContent };
      }));
      assert.equal(cells[1].visible, false, 'the timestamp column is hidden at 390 px');
      assert.equal(await page.$eval('#tail th.ts', (th) => th.getBoundingClientRect().width), 0, 'the timestamp header is hidden at 390 px');
      assert.equal(cells[0].title, cells[1].text + ' ns');
      assert.ok(cells[0].visible && cells[2].visible && cells[2].right <= 390, JSON.stringify(cells));
    }
  }
  assert.deepEqual(wide, []);
  // At 1280 px the timestamp column is back.
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(base + '/stores/phone');
  await page.locator('#tail tbody tr').first().waitFor({ timeout: 3000 });
  assert.ok(await page.$eval('#tail tbody tr:first-child td.ts', (td) => td.getBoundingClientRect().width > 0));
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

test('Delete buttons stay on one line at 1280 px', async () => {
  await createStore('onelinedel');
  let r = await rest('POST', '/api/stores/onelinedel/ws/connections', { admin: true, body: { mode: 'push', url: 'ws://127.0.0.1:9/api/stores/a-store-with-a-rather-long-name/ws/write?x=' + 'y'.repeat(60) } });
  assert.equal(r.status, 201, r.text);
  r = await rest('POST', '/api/stores/onelinedel/rules', { admin: true, body: { name: 'long', condition: 'temperature > 30 AND humidity < 20 AND room == "a room with a long name"' } });
  assert.equal(r.status, 201, r.text);
  const page = await newPage(1280);
  await signIn(page, ADMIN);
  const oneLine = (b) => {
    const cs = getComputedStyle(b);
    const lh = cs.lineHeight === 'normal' ? 1.2 * parseFloat(cs.fontSize) : parseFloat(cs.lineHeight);
    const frame = ['paddingTop', 'paddingBottom', 'borderTopWidth', 'borderBottomWidth'].reduce((n, k) => n + parseFloat(cs[k]), 0);
    return { height: b.getBoundingClientRect().height, line: lh + frame };
  };
  for (const [p, sel] of [['/stores/onelinedel/connections', '#connections tbody button'], ['/stores/onelinedel/alerts', '#rules tbody button']]) {
    await page.goto(base + p);
    await page.locator(sel, { hasText: 'Delete' }).first().waitFor({ timeout: 3000 });
    const m = await page.$eval(sel, oneLine);
    assert.ok(Math.abs(m.height - m.line) <= 1, p + ': Delete is ' + m.height + ' px high, one line is ' + m.line + ' px');
  }
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

/** Inserts `n` objects 1 ms apart, from an hour ago, in NDJSON batches;
 * returns their timestamps (strings). */
async function insertMany(store, key, n) {
  const t0 = BigInt(Date.now() - 3600000) * 1000000n;
  const ts = [];
  for (let i = 0; i < n; i++) ts.push((t0 + BigInt(i) * 1000000n).toString());
  for (let from = 0; from < n; from += 5000) {
    const body = ts.slice(from, from + 5000).map((t, j) => `{"timestamp":${t},"data":{"i":${from + j},"temp":${20 + ((from + j) % 10)}}}`).join('\n');
    const r = await rest('POST', '/api/stores/' + store + '/data', { key, body, type: 'application/x-ndjson' });
    assert.equal(r.status < 300, true, r.text.slice(0, 200));
  }
  return ts;
}

/** Runs the page action `act` and waits for the query page to show a
 * page; returns its shown timestamps and its render time. */
async function queryPage(page, act) {
  await act();
  await page.waitForFunction(() => /page \d+/.test(document.getElementById('q-status').textContent));
  // The page's own measure, set in the frame after the rows (null if it
  // never comes).
  const ms = await page.evaluate(() => new Promise((resolve) => {
    const d = document.getElementById('results').dataset;
    const t0 = Date.now();
    (function poll() {
      if (d.renderMs !== undefined || Date.now() - t0 > 2000) resolve(d.renderMs === undefined ? null : Number(d.renderMs));
      else setTimeout(poll, 5);
    })();
  }));
  return {
    shown: await page.$$eval('#results tbody tr', (rows) => rows.map((r) => r.cells[1].textContent)),
    ms,
    status: await page.textContent('#q-status'),
  };
}

test('query paging: 10,000 objects, pages of 1,000 by timestamp cursor, forward 3 and back', async (t) => {
  const key = await createStore('paged', { num_blocks: 2048 });
  const ts = await insertMany('paged', key, 10000);
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/paged/query');
  const asked = [];
  page.on('request', (r) => { if (r.url().includes('/api/stores/paged/data/')) asked.push(new URL(r.url())); });
  await page.selectOption('#q-mode', 'oldest');
  await page.fill('#q-limit', '1000');
  const times = [];
  const walk = async (act, want, n) => {
    const before = asked.length;
    const p = await queryPage(page, act);
    assert.equal(asked.length - before, 1, 'one request a page');
    assert.equal(asked[asked.length - 1].searchParams.get('limit'), '1001', 'limit + 1 objects asked for');
    assert.deepEqual(p.shown, want);
    assert.match(p.status, new RegExp('page ' + n + '$'));
    assert.notEqual(p.ms, null, 'the page measured its render');
    times.push(p.ms);
    return asked[asked.length - 1];
  };
  // Oldest first: forward 3 pages, then back to the first.
  await walk(() => page.click('#query button[type=submit]'), ts.slice(0, 1000), 1);
  let u = await walk(() => page.click('#q-next'), ts.slice(1000, 2000), 2);
  assert.equal(u.searchParams.get('start_time'), (BigInt(ts[999]) + 1n).toString(), 'the cursor is the last timestamp + 1');
  await walk(() => page.click('#q-next'), ts.slice(2000, 3000), 3);
  await walk(() => page.click('#q-next'), ts.slice(3000, 4000), 4);
  await walk(() => page.click('#q-prev'), ts.slice(2000, 3000), 3);
  await walk(() => page.click('#q-prev'), ts.slice(1000, 2000), 2);
  await walk(() => page.click('#q-prev'), ts.slice(0, 1000), 1);
  assert.equal(await page.isDisabled('#q-prev'), true);
  assert.equal(await page.isDisabled('#q-next'), false);
  // Newest first: the cursor walks back in time (end_time = oldest - 1).
  const rev = [...ts].reverse();
  await page.selectOption('#q-mode', 'newest');
  await walk(() => page.click('#query button[type=submit]'), rev.slice(0, 1000), 1);
  u = await walk(() => page.click('#q-next'), rev.slice(1000, 2000), 2);
  assert.equal(u.searchParams.get('end_time'), (BigInt(ts[9000]) - 1n).toString());
  await walk(() => page.click('#q-next'), rev.slice(2000, 3000), 3);
  await walk(() => page.click('#q-prev'), rev.slice(1000, 2000), 2);
  // A since window pages forward from its start.
  await page.selectOption('#q-mode', 'since');
  await page.fill('#q-since', '2h');
  await walk(() => page.click('#query button[type=submit]'), ts.slice(0, 1000), 1);
  await walk(() => page.click('#q-next'), ts.slice(1000, 2000), 2);
  assert.equal(await page.locator('#results tbody tr').count(), 1000, 'one page of rows in the DOM');
  times.sort((a, b) => a - b);
  t.diagnostic(`render of a 1,000-row page (rows, layout and paint): median ${times[times.length >> 1].toFixed(1)} ms, max ${times[times.length - 1].toFixed(1)} ms over ${times.length} pages`);
  assert.deepEqual(page.consoleErrors, []);
  await page.context().close();
});

test('query paging: Next page is disabled when exactly limit rows are left', async () => {
  const key = await createStore('exact');
  const ts = await insertMany('exact', key, 4);
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/exact/query');
  for (const m of ['oldest', 'newest']) {
    const want = m === 'oldest' ? ts : [...ts].reverse();
    await page.selectOption('#q-mode', m);
    await page.fill('#q-limit', '2');
    let p = await queryPage(page, () => page.click('#query button[type=submit]'));
    assert.deepEqual(p.shown, want.slice(0, 2));
    assert.equal(await page.isDisabled('#q-next'), false, m + ': two more');
    p = await queryPage(page, () => page.click('#q-next'));
    assert.deepEqual(p.shown, want.slice(2, 4));
    assert.equal(await page.isDisabled('#q-next'), true, m + ': exactly limit came back and nothing is after them');
    // Exactly limit objects in all: one page, no next.
    await page.fill('#q-limit', '4');
    p = await queryPage(page, () => page.click('#query button[type=submit]'));
    assert.equal(p.shown.length, 4);
    assert.equal(await page.isDisabled('#q-next'), true, m + ': limit = all');
  }
  await page.context().close();
});

test('a failed query clears the old rows and downloads; the filter says it matches raw JSON', async () => {
  const key = await createStore('failq');
  const ts = await insertMany('failq', key, 3);
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.goto(base + '/stores/failq/query');
  const hint = await page.evaluate(() => {
    const f = document.getElementById('q-filter');
    return document.getElementById(f.getAttribute('aria-describedby')).textContent;
  });
  assert.match(hint, /raw stored JSON/);
  assert.equal(await page.isVisible('#q-filter-hint'), true);
  await page.selectOption('#q-mode', 'oldest');
  await page.fill('#q-limit', '2');
  await queryPage(page, () => page.click('#query button[type=submit]'));
  assert.equal(await page.locator('#results tbody tr').count(), 2);
  assert.equal(await page.isDisabled('#dl-csv'), false);
  // A range that ends before it starts: the API's 400.
  await page.selectOption('#q-mode', 'range');
  await page.fill('#q-start', ts[2]);
  await page.fill('#q-end', ts[0]);
  await page.click('#query button[type=submit]');
  await page.waitForFunction(() => /^Error: /.test(document.getElementById('q-status').textContent));
  assert.equal(await page.getAttribute('#q-status', 'class'), 'error');
  assert.equal(await page.locator('#results tbody tr').count(), 0, 'no stale rows');
  assert.equal(await page.textContent('#json'), '', 'no stale JSON');
  assert.equal(await page.isDisabled('#dl-csv'), true, 'no stale CSV');
  assert.equal(await page.isDisabled('#dl-ndjson'), true, 'no stale NDJSON');
  assert.equal(await page.isDisabled('#q-next'), true);
  assert.equal(await page.isDisabled('#q-prev'), true);
  await page.context().close();
});

test('the new key is shown whole on the created page, at 1280 and 390 px', async () => {
  for (const width of [1280, 390]) {
    const page = await newPage(width);
    await signIn(page, ADMIN);
    await page.goto(base + '/create');
    await page.fill('#name', 'wide-key-' + width);
    await page.click('#create button[type=submit]');
    await page.locator('#new-key').waitFor();
    const fit = await page.evaluate(() => {
      const e = document.getElementById('new-key');
      return { scroll: e.scrollWidth, client: e.clientWidth, len: e.value.length, page: document.documentElement.scrollWidth };
    });
    assert.equal(fit.len, 44);
    assert.ok(fit.scroll <= fit.client, `${width} px: the key fits: ${fit.scroll} <= ${fit.client}`);
    assert.ok(fit.page <= width, `${width} px: no sideways scroll (${fit.page})`);
    await page.context().close();
  }
});

test('a connection action\'s note stays through the refreshes, a failed one included (mocked)', async () => {
  const list = [];
  let failGets = 0;
  await createStore('notes');
  const page = await newPage();
  await signIn(page, ADMIN);
  await page.route('**/api/stores/notes/ws/connections**', async (route) => {
    const req = route.request();
    const json = (status, v) => route.fulfill({ status, contentType: 'application/json', body: JSON.stringify(v) });
    if (req.method() === 'GET') {
      if (failGets > 0) { failGets -= 1; return json(500, { error: 'internal server error' }); }
      return json(200, { connections: list });
    }
    if (req.method() === 'POST') {
      const c = { id: 'c0ffee01', mode: 'push', url: JSON.parse(req.postData()).url, status: 'connecting', errors: 0, messages_sent: 0, messages_received: 0, last_error: '' };
      list.push(c);
      return json(201, c);
    }
    return route.continue();
  });
  await page.route('**/api/stores/notes/mqtt/**', (route) => route.fulfill({ status: 200, contentType: 'application/json', body: '{"connections":[],"subscriptions":[]}' }));
  await page.goto(base + '/stores/notes/connections');
  await page.selectOption('#c-mode', 'push');
  await page.fill('#c-url', 'ws://127.0.0.1:9/api/stores/x/ws/write');
  await page.click('#conn-create button[type=submit]');
  await page.waitForFunction(() => /Connection c0ffee01 created\./.test(document.getElementById('conn-status').textContent));
  // One refresh fails, the next ones succeed: the note is still there.
  failGets = 1;
  await page.waitForFunction(() => /Error: internal server error/.test(document.getElementById('conn-status').textContent), null, { timeout: 5000 });
  assert.match(await page.textContent('#conn-status'), /Connection c0ffee01 created\./);
  await page.waitForFunction(() => /^1 connection\(s\) · Connection c0ffee01 created\.$/.test(document.getElementById('conn-status').textContent), null, { timeout: 5000 });
  await page.waitForTimeout(2500);
  assert.equal(await page.textContent('#conn-status'), '1 connection(s) · Connection c0ffee01 created.');
  await page.context().close();
});
